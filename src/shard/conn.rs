//! One connection's protocol machine, driven by the shells: bytes in (HTTP head, API body,
//! WebSocket frames, TLS records), what to write out (zero-copy slices of the queued frames, or
//! an owned buffer for TLS and SSE), and when the socket is done.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use bytes::Bytes;

use super::events::EventKind;
use super::{flag, ConnEntry, ConnKind, Phase, ShardState};
use crate::policy::guard::Admitted;
use crate::proto::envelope;
use crate::proto::frame::{self, Assembler, Fail, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::proto::handshake::{self as http, HttpError, RequestHead};
use crate::proto::stats::ShardStats;
use crate::ConnId;

/// The paths served by the API thread.
pub(crate) fn is_api_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/api/")
}

impl ShardState {
    pub(super) fn conn_mut(&mut self, id: ConnId) -> Option<&mut ConnEntry> {
        self.conns
            .get_mut(id.slot() as usize)
            .filter(|c| c.id == id)
    }

    pub(super) fn slot_id(&self, slot: u32) -> Option<ConnId> {
        self.conns.get(slot as usize).map(|c| c.id)
    }

    /// A new TCP connection. Returns its slot; a refused address gets its response queued and
    /// is closed through the usual path.
    pub(crate) fn accept(&mut self, fd: RawFd, remote: SocketAddr) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        let (gen, now) = (self.generation, self.stamp);
        let slot = self.conns.vacant_key() as u32;
        let id = ConnId::new(self.index, slot, gen);
        let guard = &self.hub.config.guard;
        let tls = guard.tls.as_ref().and_then(|cfg| {
            rustls::ServerConnection::new(cfg.clone())
                .map(|mut t| {
                    // The connection's queue bound applies before frames reach rustls, and a
                    // flush hands it everything queued: its own 64 KiB cap would cut the stream.
                    t.set_buffer_limit(None);
                    Box::new(t)
                })
                .map_err(|e| tracing::warn!(error = %e, "TLS session could not be created"))
                .ok()
        });
        let refused = guard.admit_address(remote.ip()).err();
        let perms = guard.permissions.clone();
        self.conns.insert(ConnEntry {
            id,
            fd,
            remote,
            phase: Phase::Head,
            user: None,
            perms,
            limiter: None,
            tls,
            out: Default::default(),
            queued: 0,
            head_sent: 0,
            in_flight: 0,
            wbuf: Vec::new(),
            wsent: 0,
            inbuf: Vec::new(),
            asm: None,
            closing: None,
            last_seen: now,
            accepted: now,
            subs: Vec::new(),
            stamp: 0,
            hold: 0,
            ops: 0,
            flags: 0,
        });
        if let Some(e) = refused {
            tracing::info!(peer = %remote, status = e.status, reason = %e.message, "connection refused");
            self.http_error(id, &e);
        }
        slot
    }

    /// An upgraded connection (WebSocket or SSE) joins the shard's users and counters.
    pub(super) fn upgrade(&mut self, id: ConnId, phase: Phase, admitted: Admitted) {
        let Admitted {
            user, permissions, ..
        } = admitted;
        if let Some(u) = &user {
            self.users.entry(u.clone()).or_default().push(id);
        }
        let took = self.stamp;
        let Some(c) = self.conn_mut(id) else { return };
        c.phase = phase;
        c.user = user;
        c.perms = permissions;
        c.set(flag::COUNTED | flag::FRESH);
        let took = took.since(c.accepted);
        let stats = self.stats();
        stats.handshake(101, took);
        stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes received on `slot` (unmasked in place).
    pub(crate) fn on_input(&mut self, slot: u32, data: &mut [u8]) {
        let now = self.stamp;
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        c.last_seen = now;
        c.clear(flag::PING_SENT);
        if c.has(flag::KEPT) && c.inbuf.is_empty() && matches!(c.phase, Phase::Head) {
            // The next request on a kept-alive connection: its head timeout starts now.
            c.accepted = now;
        }
        if c.tls.is_some() {
            self.tls_input(slot, data);
        } else {
            self.plain_input(slot, data);
        }
    }

    fn plain_input(&mut self, slot: u32, data: &mut [u8]) {
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        if c.inbuf.is_empty() {
            // The common case: whole frames, decoded straight from the shell's buffer.
            let used = self.process(slot, data);
            if used < data.len() {
                if let Some(c) = self.conns.get_mut(slot as usize) {
                    c.inbuf.extend_from_slice(&data[used..]);
                    Self::reserve_frame(c, self.hub.config.max_message_size);
                }
            }
            return;
        }
        let mut buf = std::mem::take(&mut c.inbuf);
        buf.extend_from_slice(data);
        let used = self.process(slot, &mut buf);
        buf.drain(..used);
        if let Some(c) = self.conns.get_mut(slot as usize) {
            if !buf.is_empty() {
                c.inbuf = buf;
                Self::reserve_frame(c, self.hub.config.max_message_size);
            }
        }
    }

    /// Room for the whole pending frame once its header says how long it is.
    fn reserve_frame(c: &mut ConnEntry, max: usize) {
        if matches!(c.phase, Phase::Ws(_)) {
            if let Ok(Some(h)) = frame::head(&c.inbuf, max) {
                c.inbuf.reserve(h.total().saturating_sub(c.inbuf.len()));
            }
        }
    }

    fn tls_input(&mut self, slot: u32, data: &[u8]) {
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let Some(mut tls) = c.tls.take() else { return };
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let mut rd = data;
        let mut failed = false;
        while !rd.is_empty() {
            match tls.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            if let Err(e) = tls.process_new_packets() {
                tracing::debug!(slot, error = %e, "TLS error");
                failed = true;
                break;
            }
            // Appends what is there, then stops at WouldBlock (or a clean close_notify).
            let _ = tls.reader().read_to_end(&mut plain);
        }
        let wants_write = tls.wants_write();
        let c = &mut self.conns[slot as usize];
        c.tls = Some(tls);
        let id = c.id;
        if wants_write {
            self.mark_dirty(slot);
        }
        if failed {
            self.stats().handshake(400, std::time::Duration::ZERO);
            if let Some(c) = self.conn_mut(id) {
                c.phase = Phase::Discard;
            }
            self.begin_close(id);
            self.mark_dirty(slot);
        } else if !plain.is_empty() {
            self.plain_input(slot, &mut plain);
        }
        self.plain = plain;
    }

    /// Consumes what it can of `buf` for the connection's phase; returns the bytes used.
    pub(super) fn process(&mut self, slot: u32, buf: &mut [u8]) -> usize {
        let mut at = 0;
        loop {
            let Some(c) = self.conns.get_mut(slot as usize) else {
                return buf.len();
            };
            let id = c.id;
            match &mut c.phase {
                Phase::Head => {
                    let max = self.hub.config.guard.max_handshake_bytes;
                    // A whole oversized head can arrive in one read: bound it either way.
                    let window = &buf[at..buf.len().min(at + max)];
                    match http::parse_head(window, max) {
                        Ok(Some((head, n))) => {
                            at += n;
                            self.route(id, head);
                        }
                        Ok(None) => return at,
                        Err(e) => {
                            self.http_error(id, &e);
                            return buf.len();
                        }
                    }
                }
                Phase::Body(pending) => {
                    let need = pending.1;
                    if buf.len() - at < need {
                        c.inbuf.reserve(need);
                        return at;
                    }
                    let body = Bytes::copy_from_slice(&buf[at..at + need]);
                    at += need;
                    let Phase::Body(pending) = std::mem::replace(&mut c.phase, Phase::Api) else {
                        unreachable!("matched above")
                    };
                    self.submit_api(id, pending.0, body);
                }
                // Pipelined requests wait (in `inbuf`) for the answer to the one in flight:
                // one request per connection at the API thread keeps the answers in order.
                // Up to one request's worth (the largest head and body) is kept; a client that
                // sends more without reading its answers is cut.
                Phase::Api => {
                    let cfg = &self.hub.config;
                    if buf.len() - at <= cfg.guard.max_handshake_bytes + cfg.max_message_size {
                        return at;
                    }
                    tracing::debug!(conn = %id, "pipelined past one request's worth: closed");
                    c.phase = Phase::Discard;
                    self.begin_close(id);
                    self.mark_dirty(slot);
                    return buf.len();
                }
                Phase::Sse | Phase::Discard => return buf.len(),
                Phase::Ws(kind) => {
                    let kind = *kind;
                    return at + self.frames(id, kind, &mut buf[at..]);
                }
            }
        }
    }

    /// Handles every complete frame at the start of `buf`; returns the bytes used.
    fn frames(&mut self, id: ConnId, kind: ConnKind, buf: &mut [u8]) -> usize {
        let max = self.hub.config.max_message_size;
        let mut at = 0;
        loop {
            let h = match frame::head(&buf[at..], max) {
                Ok(Some(h)) if h.total() <= buf.len() - at => h,
                Ok(_) => return at,
                Err(f) => return self.fail(id, f, buf.len()),
            };
            let payload = h.unmask(&mut buf[at..at + h.total()]);
            at += h.total();
            match h.opcode {
                OP_PING => self.enqueue(id, envelope::raw_frame(OP_PONG, payload)),
                OP_PONG => {}
                OP_CLOSE => {
                    return match frame::close_code(payload) {
                        // Echo the code (RFC 6455 §5.5.1); then the write side is shut down.
                        Ok(code) => {
                            let echo = code.map_or_else(Vec::new, |c| c.to_be_bytes().to_vec());
                            self.close_frame(id, envelope::raw_frame(OP_CLOSE, &echo));
                            if let Some(c) = self.conn_mut(id) {
                                c.phase = Phase::Discard;
                            }
                            buf.len()
                        }
                        Err(f) => self.fail(id, f, buf.len()),
                    };
                }
                op => {
                    let Some(c) = self.conn_mut(id) else {
                        return buf.len();
                    };
                    if h.fin && c.asm.is_none() {
                        // The common case, a whole message in one frame: no reassembly state.
                        match frame::complete(op, payload) {
                            Ok(()) => self.deliver(id, kind, op, payload),
                            Err(f) => return self.fail(id, f, buf.len()),
                        }
                    } else {
                        // The assembler borrows the connection; take it out while the message
                        // is delivered (delivery needs the whole shard).
                        let mut asm = c
                            .asm
                            .take()
                            .unwrap_or_else(|| Box::new(Assembler::new(max)));
                        match asm.push(op, h.fin, payload) {
                            Err(f) => return self.fail(id, f, buf.len()),
                            Ok(None) => match self.conn_mut(id) {
                                Some(c) => c.asm = Some(asm),
                                None => return buf.len(),
                            },
                            // Delivered: the assembler (and its buffer) is dropped.
                            Ok(Some((op, msg))) => self.deliver(id, kind, op, msg),
                        }
                    }
                    // Closed by what it sent (rate limit, slow consumer): the rest is dropped,
                    // not answered message by message.
                    if let Some(c) = self.conn_mut(id).filter(|c| c.closing.is_some()) {
                        c.phase = Phase::Discard;
                        return buf.len();
                    }
                }
            }
        }
    }

    /// A protocol error: close with its code and discard further input.
    fn fail(&mut self, id: ConnId, (code, reason): Fail, used: usize) -> usize {
        ShardStats::add(&self.stats().protocol_errors, 1);
        tracing::debug!(conn = %id, code, reason, "protocol error");
        self.note(
            id,
            EventKind::ProtocolError,
            &format!("closed with {code}: {reason}"),
        );
        self.close(id, code, reason);
        if let Some(c) = self.conn_mut(id) {
            c.phase = Phase::Discard;
        }
        used
    }

    fn deliver(&mut self, id: ConnId, kind: ConnKind, op: u8, msg: &[u8]) {
        let stats = self.stats();
        ShardStats::add(&stats.messages_in, 1);
        ShardStats::add(&stats.bytes_in, msg.len() as u64);
        match (kind, op) {
            (ConnKind::Echo, op) => self.enqueue(id, envelope::raw_frame(op, msg)),
            (ConnKind::PubSub, OP_TEXT) => self.dispatch(id, msg),
            (ConnKind::PubSub, OP_BINARY | _) => {
                let msg = "binary frames are not supported: send JSON envelopes as text";
                self.error(id, None, "", crate::ErrorCode::BadRequest, msg);
            }
        }
    }

    /// Routes a complete request head.
    fn route(&mut self, id: ConnId, head: RequestHead) {
        if let Err(e) = self.try_route(id, head) {
            if matches!(e.status, 401 | 403) {
                let peer = self.conn_mut(id).map(|c| c.remote);
                tracing::info!(?peer, status = e.status, reason = %e.message, "upgrade refused");
            }
            self.http_error(id, &e);
        }
    }

    fn try_route(&mut self, id: ConnId, head: RequestHead) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let cfg = &hub.config;
        if is_api_path(&head.path) || cfg.serves_ui(&head.path) {
            let need = super::request::body_len(&head, cfg.max_message_size)?;
            self.decide_keep_alive(id, &head);
            let Some(c) = self.conn_mut(id) else {
                return Ok(());
            };
            if need == 0 {
                c.phase = Phase::Api;
                self.submit_api(id, head, Bytes::new());
            } else {
                c.phase = Phase::Body(Box::new((head, need)));
            }
            return Ok(());
        }
        if hub.is_stopping() {
            return Err(HttpError::new(503, "server is shutting down"));
        }
        let kind = if head.path == cfg.ws_path {
            ConnKind::PubSub
        } else if cfg.echo_path.as_deref() == Some(head.path.as_str()) {
            ConnKind::Echo
        } else if head.path == "/sse" {
            return self.route_sse(id, &head);
        } else {
            return Err(HttpError::new(404, format!("no route for {}", head.path)));
        };
        let response = http::accept_upgrade(&head)?;
        let mut admitted = cfg.guard.admit(&head)?;
        if kind == ConnKind::PubSub {
            self.connect_hook(id, &head, &mut admitted)?;
        }
        self.take_permit(id)?;
        let topics = std::mem::take(&mut admitted.topics);
        self.upgrade(id, Phase::Ws(kind), admitted);
        self.push_raw(id, Bytes::from(response));
        if kind == ConnKind::PubSub {
            self.connected(id, &topics);
        }
        if let Some(c) = self.conn_mut(id) {
            let user = c.user.as_deref().unwrap_or("-");
            tracing::debug!(conn = %id, peer = %c.remote, user, "connected");
        }
        Ok(())
    }

    fn route_sse(&mut self, id: ConnId, head: &RequestHead) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let topics = http::sse_topics(head, hub.config.max_subscriptions)?;
        let admitted = hub.config.guard.admit(head)?;
        for t in &topics {
            admitted
                .permissions
                .can_subscribe(admitted.user.as_deref(), t)
                .map_err(|e| HttpError::new(403, format!("topic '{t}': {e}")))?;
        }
        self.take_permit(id)?;
        self.upgrade(id, Phase::Sse, admitted);
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n";
        self.push_raw(id, Bytes::from_static(head.as_bytes()));
        let mut tokens = Vec::new();
        for t in &topics {
            match self.subscribe(id, t) {
                Ok(token) => tokens.extend(token),
                Err(e) => tracing::debug!(conn = %id, error = %e, "SSE subscription refused"),
            }
        }
        // As with a WebSocket subscribe reply: the stream starts once every shard knows.
        let mut held = 0;
        for token in tokens {
            if let Some(p) = self.pending.get_mut(&token) {
                p.held.push(id);
                held += 1;
            }
        }
        if let Some(c) = self.conn_mut(id) {
            c.hold = held;
            tracing::debug!(conn = %id, peer = %c.remote, ?topics, "SSE stream opened");
        }
        Ok(())
    }

    /// The connection caps apply to WebSocket and SSE clients only: health, metrics and the
    /// API keep answering at the cap.
    /// Runs `on_connect`: a refusal is a 403 with the hook's message; an outcome may replace
    /// the user, add topics and attach metadata.
    pub(super) fn connect_hook(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        admitted: &mut Admitted,
    ) -> Result<(), HttpError> {
        let Some(hook) = self.hub.hooks.on_connect.clone() else {
            return Ok(());
        };
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let remote = c.remote;
        let client = self.hub.client_id(id);
        let info = super::hooks::ConnectInfo {
            client: &client,
            user: admitted.user.as_deref(),
            remote,
            path: &head.path,
            query: head.query.as_deref(),
        };
        let outcome = super::hooks::guarded(|| hook(&info))
            .map_err(|e| HttpError::new(403, format!("refused: {}", e.message)))?;
        if let Some(u) = outcome.user {
            admitted.user = Some(u.into());
        }
        admitted.topics.extend(outcome.topics);
        if let Some(meta) = outcome.meta {
            self.meta.insert(id, meta.to_string().into());
        }
        Ok(())
    }

    pub(super) fn take_permit(&mut self, id: ConnId) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let Some(limits) = &hub.config.guard.conn_limits else {
            return Ok(());
        };
        if c.has(flag::CAPPED) {
            // Taken already, by a kept-alive request before this upgrade.
            return Ok(());
        }
        use crate::policy::ratelimit::Counted;
        // Counted as a permit would be, kept as two bits (released in `release_if_done`).
        match limits.count(c.remote.ip()) {
            Ok(Counted::Total) => c.set(flag::CAPPED),
            Ok(Counted::TotalAndIp) => c.set(flag::CAPPED | flag::CAPPED_IP),
            Err(e) => return Err(HttpError::new(e.http_status(), e.to_string())),
        }
        Ok(())
    }

    /// No more input on `slot`: EOF, a read error, or a cut.
    pub(crate) fn on_eof(&mut self, slot: u32) {
        let Some(id) = self.slot_id(slot) else { return };
        if let Some(c) = self.conn_mut(id) {
            c.set(flag::RD_EOF);
            c.inbuf = Vec::new();
        }
        self.begin_close(id);
        self.mark_dirty(slot);
        self.release_if_done(slot);
    }

    /// Whether the shell should (re-)arm a receive on `slot`.
    pub(crate) fn wants_input(&self, slot: u32) -> bool {
        self.conns
            .get(slot as usize)
            .is_some_and(|c| !c.has(flag::RD_EOF))
    }
}

#[cfg(test)]
impl ShardState {
    /// Tests only: takes the frames queued to `id` (not yet written).
    pub(crate) fn take_queued(&mut self, id: ConnId) -> Vec<bytes::Bytes> {
        let Some(c) = self.conn_mut(id) else {
            return Vec::new();
        };
        c.queued = 0;
        c.out.drain(..).map(|f| (*f).clone()).collect()
    }

    /// Tests only: how many frames wait in `id`'s queue.
    pub(crate) fn queued_frames(&mut self, id: ConnId) -> usize {
        self.conn_mut(id).map_or(0, |c| c.out.len())
    }
}
