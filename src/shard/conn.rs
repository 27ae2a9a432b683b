//! One connection's protocol machine, driven by the shells: bytes in (HTTP head, API body,
//! WebSocket frames, TLS records), what to write out (zero-copy slices of the queued frames, or
//! an owned buffer for TLS and SSE), and when the socket is done.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use bytes::Bytes;

use super::entry::Io;
use super::{flag, ConnEntry, Phase, ShardState};
use crate::policy::guard::Admitted;
use crate::proto::frame;
use crate::proto::handshake as http;
use crate::ConnId;

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
        self.conns
            .insert(ConnEntry::new(id, fd, remote, perms, tls, now));
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
            let ids = self.users.entry(u.clone()).or_default();
            ids.push(id);
            if ids.len() == 1 {
                self.webhook_user(u, true);
            }
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
        // A long-polling session reads nothing (a socket it holds is not watched).
        let Some(c) = self
            .conns
            .get_mut(slot as usize)
            .filter(|c| matches!(c.io, Io::Sock(_)))
        else {
            return;
        };
        c.last_seen = now;
        c.clear(flag::PING_SENT);
        if c.has(flag::KEPT) && c.inbuf_empty() && matches!(c.phase, Phase::Head) {
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
        let Some(c) = self
            .conns
            .get_mut(slot as usize)
            .filter(|c| matches!(c.io, Io::Sock(_)))
        else {
            return;
        };
        if c.inbuf_empty() {
            // The common case: whole frames, decoded straight from the shell's buffer.
            let used = self.process(slot, data);
            if used < data.len() {
                if let Some(c) = self.conns.get_mut(slot as usize) {
                    Self::keep_input(c, &data[used..], self.hub.config.max_message_size);
                }
            }
            return;
        }
        let mut buf = c
            .bufs()
            .map(|b| std::mem::take(&mut b.inbuf))
            .unwrap_or_default();
        buf.extend_from_slice(data);
        let used = self.process(slot, &mut buf);
        buf.drain(..used);
        if let Some(c) = self.conns.get_mut(slot as usize) {
            if !buf.is_empty() {
                if let Some(b) = c.bufs() {
                    b.inbuf = buf;
                }
                Self::keep_input(c, &[], self.hub.config.max_message_size);
            }
        }
    }

    /// Keeps `rest` in the connection's input buffer, with room for the whole pending frame
    /// once its header says how long it is.
    fn keep_input(c: &mut ConnEntry, rest: &[u8], max: usize) {
        let (ws, deflate) = (matches!(c.phase, Phase::Ws(_)), c.deflate_bits() != 0);
        let Some(b) = c.bufs() else { return };
        b.inbuf.extend_from_slice(rest);
        if ws {
            if let Ok(Some(h)) = frame::head_ext(&b.inbuf, max, deflate) {
                b.inbuf.reserve(h.total().saturating_sub(b.inbuf.len()));
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
                        if let Io::Sock(b) = &mut c.io {
                            b.inbuf.reserve(need);
                        }
                        return at;
                    }
                    let body = Bytes::copy_from_slice(&buf[at..at + need]);
                    at += need;
                    let Phase::Body(pending) = std::mem::replace(&mut c.phase, Phase::Api) else {
                        unreachable!("matched above")
                    };
                    if self.is_sio_path(&pending.0.path) {
                        self.poll_post(id, pending.0, body);
                    } else if let Some(used) = self.local_run(id, &pending.0, &body, &buf[at..]) {
                        // Durable sends pipelined behind it were taken with it (`pipeline`).
                        at += used;
                    } else {
                        self.submit_api(id, pending.0, body);
                    }
                }
                // Pipelined requests wait (in `inbuf`) for the answer to the one in flight:
                // one request per connection at the API thread keeps the answers in order
                // (a run of durable sends is one request in flight here: `pipeline`).
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

    /// No more input on `slot`: EOF, a read error, or a cut.
    pub(crate) fn on_eof(&mut self, slot: u32) {
        let Some(id) = self.slot_id(slot) else { return };
        if let Some(c) = self.conn_mut(id) {
            c.set(flag::RD_EOF);
            if let Some(b) = c.bufs() {
                b.inbuf = Vec::new();
            }
        }
        self.begin_close(id);
        self.mark_dirty(slot);
        self.release_if_done(slot);
    }

    /// Whether the shell should (re-)arm a receive on `slot`.
    pub(crate) fn wants_input(&self, slot: u32) -> bool {
        self.conns
            .get(slot as usize)
            .is_some_and(|c| !c.has(flag::RD_EOF) && matches!(c.io, Io::Sock(_)))
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
