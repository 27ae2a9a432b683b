//! Engine.IO long-polling sessions and the upgrade from polling to WebSocket.
//!
//! A polling session is a shard-owned entry with no socket of its own (flag `POLL`): the same
//! Socket.IO connection as a WebSocket one (`shard::sio` decodes its packets, `dispatch`
//! routes its events, publications reach it through its subscriptions), whose queued frames
//! leave by whichever carrier the client gives it — a parked GET (answered with the frames as
//! one `\x1e`-separated payload) or, after the upgrade, a WebSocket. The session id names the
//! owner (node, shard, slot: the client id) and carries a secret.
//!
//! The requests of one session land on any shard (`SO_REUSEPORT`) and any HTTP connection.
//! The shard that received one passes it to the owner as a [`PollMsg`] through the owner's
//! inbox (a direct call when it is the owner), and the owner's answer comes back the same
//! way; an upgraded session's WebSocket stays on the shard that accepted it and relays.

use std::collections::HashMap;

use bytes::Bytes;

use super::entry::Io;
use super::inbox::{PollMsg, PollRequest, ShardMsg};
use super::poll_state::{MaybeConn, Parked, PollSession, Stage};
use super::shared::KeepAlive;
use super::{flag, Phase, ShardState};
use crate::proto::engineio::{self as eio, RequestError};
use crate::proto::engineio_poll as poll;
use crate::proto::envelope::close_frame;
use crate::proto::handshake as http;
use crate::ConnId;

#[path = "sio_poll_borrow.rs"]
mod borrow;
#[path = "sio_poll_http.rs"]
mod http_in;
#[path = "sio_upgrade.rs"]
mod upgrade;

/// This shard's connections serving a session (a parked GET, an upgrade's WebSocket), which
/// may be owned by another shard, and how many sessions it owns. A session's own state is in
/// its entry, where a socket's buffers are ([`Io::Poll`]): no map of its own, no allocation
/// (BENCHMARKS.md, "Polling client breakdown").
#[derive(Default)]
pub(crate) struct Polls {
    sessions: usize,
    links: HashMap<ConnId, ConnId>,
    /// Sessions whose GET parked on one of this shard's connections (an idle session's, or one
    /// found still waiting at a tick): it lends its socket before the shell next waits
    /// ([`ShardState::take_rewatch`]).
    lending: Vec<ConnId>,
    /// Ticks so far (wrapping): a GET answered in the tick it parked in marks its session busy.
    pub(super) tick: u8,
}

impl ShardState {
    /// The polling state of session `sid`, if this shard owns it.
    fn session(&mut self, sid: ConnId) -> Option<&mut PollSession> {
        match &mut self.conn_mut(sid)?.io {
            Io::Poll(s) => Some(s),
            Io::Sock(_) => None,
        }
    }

    /// The GET parked for session `sid`, if one is.
    fn parked(&self, sid: ConnId) -> Option<&Parked> {
        match &self.conn(sid)?.io {
            Io::Poll(s) => s.get.as_ref(),
            Io::Sock(_) => None,
        }
    }

    /// Takes session `sid`'s polling state out: it is ending.
    fn take_session(&mut self, sid: ConnId) -> Option<PollSession> {
        let c = self.conn_mut(sid)?;
        if !matches!(c.io, Io::Poll(_)) {
            return None;
        }
        let Io::Poll(s) = std::mem::replace(&mut c.io, Io::Sock(Default::default())) else {
            return None;
        };
        self.polls.sessions -= 1;
        Some(s)
    }
}

impl ShardState {
    /// Hands `msg` to the shard it is for: applied now when that is this one.
    fn poll_send(&mut self, msg: PollMsg) {
        let shard = msg.shard();
        if shard == self.index {
            self.poll_msg(msg);
        } else if let Some(inbox) = self.hub.inboxes.get(shard) {
            inbox.push(ShardMsg::Poll(Box::new(msg)));
        }
    }

    /// Applies one long-polling message (from another shard's inbox, or this shard).
    pub(super) fn poll_msg(&mut self, msg: PollMsg) {
        match msg {
            PollMsg::Request(r) => self.poll_request(r),
            PollMsg::Attach { sid, secret, from } => self.poll_attach(sid, secret, from),
            PollMsg::Frame {
                sid,
                from,
                op,
                data,
            } => self.carried(sid, from, op, &data),
            PollMsg::Gone { sid, from } => self.poll_gone(sid, from),
            PollMsg::Answer { to, bytes } => {
                self.polls.links.remove(&to);
                self.http_response(to, bytes);
            }
            PollMsg::Out { to, frames, close } => {
                for f in frames {
                    self.enqueue(to, f);
                }
                if let Some(f) = close {
                    self.polls.links.remove(&to);
                    self.close_frame(to, f);
                }
            }
        }
    }

    /// Builds the answer to a request on `to` (any shard) and sends it there.
    fn poll_reply(
        &mut self,
        to: ConnId,
        (status, ctype): (u16, &str),
        body: &[u8],
        origin: Option<&str>,
        keep: KeepAlive,
    ) {
        let extra = poll::cors_headers(origin);
        let bytes = http::response_bytes(status, ctype, &extra, keep.header(), body);
        self.poll_send(PollMsg::Answer {
            to,
            bytes: Bytes::from(bytes),
        });
    }

    fn poll_error(&mut self, to: ConnId, origin: Option<&str>, keep: KeepAlive, e: RequestError) {
        let body = e.body();
        let json = (e.status(), "application/json");
        self.poll_reply(to, json, body.as_bytes(), origin, keep);
    }

    /// The owner: a GET or POST of one of its sessions.
    fn poll_request(&mut self, r: PollRequest) {
        let origin = r.origin.as_deref();
        let (now, idle) = (self.stamp, self.hub.config.idle_timeout);
        let live = self.conn(r.sid).is_some_and(|c| c.has(flag::POLL));
        if self
            .conn(r.sid)
            .is_some_and(|c| live && c.closing.is_none() && now.since(c.last_seen) >= idle)
        {
            // Timed out, though the timer has not seen it yet: gone, as the reference server's
            // session is once its ping timeout fires.
            self.poll_end(r.sid);
        }
        let tick = self.polls.tick;
        let pending = self
            .conn(r.sid)
            .is_some_and(|c| !c.out.is_empty() || c.closing.is_some());
        let Some(s) = self.session(r.sid).filter(|s| live && s.secret == r.secret) else {
            return self.poll_error(r.from, origin, r.keep, RequestError::UnknownSid);
        };
        let Some(body) = r.body else {
            if s.stage == Stage::Upgraded {
                return self.poll_error(r.from, origin, r.keep, RequestError::BadRequest);
            }
            if s.get.is_some() {
                // Two GETs at once: the reference server ends the session.
                tracing::debug!(conn = %r.sid, "Socket.IO: overlapping polls");
                self.poll_error(r.from, origin, r.keep, RequestError::BadRequest);
                self.close(r.sid, 1002, "eio_poll_overlap");
                // Gone now, not at the next flush: a request after this answer gets 400.
                return self.poll_end(r.sid);
            }
            if s.stage == Stage::Probing {
                return self.poll_reply(r.from, (200, poll::TEXT), b"6", origin, r.keep);
            }
            if s.stage == Stage::Closed {
                self.poll_reply(r.from, (200, poll::TEXT), b"6", origin, r.keep);
                return self.poll_end(r.sid);
            }
            s.get = Some(Parked {
                conn: r.from,
                origin: r.origin.map(Box::new),
                keep: r.keep,
                port: 0,
                caps: 0,
                tick,
                waited: !pending,
            });
            let busy = s.busy;
            if pending {
                self.mark_dirty(r.sid.slot());
            } else if !busy {
                // It waits: the session takes its socket before the shell waits (once the
                // input at hand is processed: bytes after the GET stay with its connection).
                // A busy session's GET waits on its own entry, taken at a tick if it still
                // waits then (`sio_poll_borrow`).
                self.polls.lending.push(r.sid);
            }
            return;
        };
        if matches!(s.stage, Stage::Upgraded | Stage::Closed) {
            return self.poll_error(r.from, origin, r.keep, RequestError::BadRequest);
        }
        let parts = match poll::split_payload(&body, self.hub.config.max_message_size) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(conn = %r.sid, code = e.code(), "Socket.IO: bad polling payload");
                let status = match e {
                    eio::EngineError::TooLarge => 413,
                    _ => 400,
                };
                let body = RequestError::BadRequest.body();
                let json = (status, "application/json");
                self.poll_reply(r.from, json, body.as_bytes(), origin, r.keep);
                self.close(r.sid, 1002, e.code());
                // Gone now: the answer may reach the client (through another shard) before
                // this shard's next flush, and the client's next request must find no session.
                return self.poll_end(r.sid);
            }
        };
        let now = self.stamp;
        if let Some(c) = self.conn_mut(r.sid) {
            c.last_seen = now;
            c.clear(flag::PING_SENT);
        }
        for p in &parts {
            if self.conn(r.sid).is_none_or(|c| c.closing.is_some()) {
                break;
            }
            self.sio_input(r.sid, p.opcode(), p.bytes());
            if p.bytes() == [eio::Kind::Close.digit()] {
                // The client closed: a waiting poll ends with a noop, the session now (or
                // at that poll, when it is on its way).
                let Some(s) = self.session(r.sid) else {
                    break;
                };
                match s.get.take() {
                    Some(p) => {
                        self.reply_parked(r.sid, p, b"6");
                        self.poll_end(r.sid);
                    }
                    None => s.stage = Stage::Closed,
                }
                break;
            }
        }
        self.poll_reply(r.from, (200, "text/html"), b"ok", origin, r.keep);
    }

    /// Takes the polling sessions out of the dirty list and moves their output to their
    /// carriers (called before the shell flushes: sessions have no socket).
    pub(super) fn flush_polls(&mut self) {
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            let Some(c) = self
                .conns
                .get_mut(slot as usize)
                .filter(|c| c.has(flag::POLL))
            else {
                i += 1;
                continue;
            };
            c.clear(flag::DIRTY);
            self.dirty.swap_remove(i);
            let id = c.id;
            self.poll_flush(id);
        }
    }

    /// Sends a session's queued frames to its parked GET, or to its WebSocket once upgraded.
    fn poll_flush(&mut self, id: ConnId) {
        let closing_now = self.conn(id).is_some_and(|c| c.closing.is_some());
        let Some(s) = self.session(id) else {
            return self.poll_end(id);
        };
        let (stage, ws) = (s.stage, s.ws.get());
        let parked = match stage {
            Stage::Upgraded => None,
            Stage::Probing | Stage::Closed => return,
            Stage::Polling => match s.get.take() {
                Some(p) => Some(p),
                // Closing with no poll to tell: gone now, as in the reference server (the
                // client's next request gets 400 "Session ID unknown" and reconnects).
                None if closing_now => return self.poll_end(id),
                None => return,
            },
        };
        let Some(c) = self.conn_mut(id) else { return };
        let closing = c.closing.is_some();
        // The queue's buffer goes too: an idle session holds none.
        let frames: Vec<Bytes> = std::mem::take(&mut c.out)
            .into_iter()
            .map(|f| (*f).clone())
            .collect();
        c.queued = 0;
        c.head_sent = 0;
        match (parked, ws) {
            (Some(p), _) => {
                let mut body = Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
                let mut closed = false;
                for f in &frames {
                    closed |= poll::push_frame(f, &mut body);
                }
                if body.is_empty() {
                    // Only frames polling does not carry: the GET ends with a noop.
                    body.push(eio::Kind::Noop.digit());
                }
                self.reply_parked(id, p, &body);
                if closing || closed {
                    self.poll_end(id);
                }
            }
            (None, Some(to)) => {
                let mut frames = frames;
                let close = match frames.last().and_then(|f| poll::server_frame(f)) {
                    Some((8, _, _)) => frames.pop(),
                    _ => None,
                };
                let ended = closing || close.is_some();
                let close = close.or_else(|| ended.then(|| close_frame(1000, "")));
                self.poll_send(PollMsg::Out { to, frames, close });
                if ended {
                    self.poll_end(id);
                }
            }
            (None, None) => {}
        }
    }

    /// Ends a session for good: its parked GET is told (`1`), its WebSocket closed, its entry
    /// released as a socket's is once both directions are done.
    pub(super) fn poll_end(&mut self, id: ConnId) {
        if let Some(s) = self.take_session(id) {
            if let Some(p) = s.get {
                self.reply_parked(id, p, b"1");
            }
            // After an upgraded session's flush sent its close, this one is a no-op there.
            if let Some(to) = s.ws.get() {
                let close = Some(close_frame(1000, ""));
                self.poll_send(PollMsg::Out {
                    to,
                    frames: Vec::new(),
                    close,
                });
            }
        }
        let Some(c) = self.conn_mut(id).filter(|c| c.has(flag::POLL)) else {
            return;
        };
        c.out = Default::default();
        c.queued = 0;
        c.phase = Phase::Discard;
        c.set(flag::RD_EOF | flag::WR_SHUT);
        self.begin_close(id);
        self.release_if_done(id.slot());
    }

    /// A connection is gone (see `forget`): a session's bookkeeping, or a link to one.
    pub(super) fn poll_forget(&mut self, id: ConnId) {
        if self.polls.links.is_empty() && self.polls.sessions == 0 {
            return;
        }
        self.take_session(id);
        if let Some(sid) = self.polls.links.remove(&id) {
            self.poll_send(PollMsg::Gone { sid, from: id });
        }
    }

    /// The owner: a parked GET's connection or the session's WebSocket went away.
    fn poll_gone(&mut self, sid: ConnId, from: ConnId) {
        let Some(s) = self.session(sid) else {
            return;
        };
        if s.get.as_ref().is_some_and(|p| p.conn == from) {
            // As the reference server: a poll closed before its answer ends the session.
            s.get = None;
            return self.poll_end(sid);
        }
        if s.ws.get() == Some(from) {
            if s.stage == Stage::Upgraded {
                return self.poll_end(sid);
            }
            // A failed probe: the client goes on polling.
            s.ws = MaybeConn::NONE;
            s.stage = Stage::Polling;
            if self.conn(sid).is_some_and(|c| !c.out.is_empty()) {
                self.mark_dirty(sid.slot());
            }
        }
    }

    /// Tests only: the size of a polling session's state (in its entry, where a socket's
    /// buffers are: it must not make the entry grow).
    #[cfg(test)]
    pub(super) fn poll_session_size() -> usize {
        std::mem::size_of::<PollSession>()
    }
}

/// 64 bits from the system's secure random source (the TLS provider's), for session secrets.
fn random_secret() -> u64 {
    static PROVIDER: std::sync::LazyLock<rustls::crypto::CryptoProvider> =
        std::sync::LazyLock::new(rustls::crypto::ring::default_provider);
    let mut b = [0u8; 8];
    if PROVIDER.secure_random.fill(&mut b).is_err() {
        // Never seen in practice; the process's random hash keys are the fallback.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        return h.finish();
    }
    u64::from_le_bytes(b)
}

impl Polls {
    /// Whether this shard owns any polling session.
    pub(super) fn has_sessions(&self) -> bool {
        self.sessions > 0
    }
}
