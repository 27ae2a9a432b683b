//! The upgrade of a long-polling session to WebSocket: the WebSocket that asks for a session
//! (accepted on any shard), the probe (`2probe` / `3probe`, the waiting poll ended with a
//! noop), the switch (`5`), then the WebSocket relaying the session's packets to the owner and
//! its output back (`PollMsg::Frame` / `PollMsg::Out`).

use bytes::Bytes;

use super::super::{flag, ConnKind, Phase, ShardState};
use super::{PollMsg, Stage};
use crate::proto::engineio::RequestError;
use crate::proto::envelope::close_frame;
use crate::proto::frame::OP_TEXT;
use crate::proto::handshake::{self as http, HttpError, RequestHead};
use crate::proto::socketio_map::engine_frame;
use crate::ConnId;

impl ShardState {
    /// `/socket.io/?EIO=4&transport=websocket&sid=..`: a WebSocket to carry a polling session.
    /// Checked here when this shard owns the session, else by the owner (which closes it when
    /// the session is unknown: the client then goes on polling).
    pub(in crate::shard) fn route_sio_upgrade(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        sid: &str,
    ) -> Result<(), HttpError> {
        let Some((sid, secret)) = self.parse_sid(sid) else {
            return self.sio_refuse(id, head, RequestError::UnknownSid);
        };
        // A session that has upgraded already gets its WebSocket, closed at once by the owner
        // (as the reference server does).
        let known = |st: &mut ShardState| st.session(sid).is_some_and(|s| s.secret == secret);
        if sid.shard() == self.index && !known(self) {
            return self.sio_refuse(id, head, RequestError::UnknownSid);
        }
        if !self.hub.config.guard.origins.allows(head.header("Origin")) {
            return self.sio_refuse(id, head, RequestError::Forbidden);
        }
        let response = http::accept_upgrade(head)?;
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        // Not counted as a connection: the session is (and holds the cap's slot).
        c.phase = Phase::Ws(ConnKind::SioCarrier);
        c.set(flag::FRESH);
        self.push_raw(id, Bytes::from(response));
        self.polls.links.insert(id, sid);
        self.poll_send(PollMsg::Attach {
            sid,
            secret,
            from: id,
        });
        Ok(())
    }

    /// The owner: a WebSocket asks to carry a session.
    pub(super) fn poll_attach(&mut self, sid: ConnId, secret: u64, from: ConnId) {
        let ok = self.session(sid).is_some_and(|s| {
            s.secret == secret && matches!(s.stage, Stage::Polling | Stage::Probing)
        });
        if !ok {
            let close = Some(close_frame(1008, "Session ID unknown"));
            return self.poll_send(PollMsg::Out {
                to: from,
                frames: Vec::new(),
                close,
            });
        }
        if let Some(old) = self
            .session(sid)
            .and_then(|s| s.ws.replace(from))
            .filter(|o| *o != from)
        {
            let close = Some(close_frame(1000, ""));
            self.poll_send(PollMsg::Out {
                to: old,
                frames: Vec::new(),
                close,
            });
        }
    }

    /// A message on a WebSocket that carries (or probes for) a session: to the owner.
    pub(in crate::shard) fn carrier_input(&mut self, id: ConnId, op: u8, msg: &[u8]) {
        let Some(&sid) = self.polls.links.get(&id) else {
            return self.close(id, 1008, "Session ID unknown");
        };
        if sid.shard() == self.index {
            self.carried(sid, id, op, msg);
        } else {
            let data = Bytes::copy_from_slice(msg);
            self.poll_send(PollMsg::Frame {
                sid,
                from: id,
                op,
                data,
            });
        }
    }

    /// The owner: a message from the session's WebSocket: the probe, the upgrade, then the
    /// session's packets.
    pub(super) fn carried(&mut self, sid: ConnId, from: ConnId, op: u8, msg: &[u8]) {
        let Some(s) = self.session(sid).filter(|s| s.ws.get() == Some(from)) else {
            return;
        };
        match (s.stage, op, msg) {
            (Stage::Upgraded, ..) => {
                let now = self.stamp;
                if let Some(c) = self.conn_mut(sid) {
                    c.last_seen = now;
                    c.clear(flag::PING_SENT);
                }
                self.sio_input(sid, op, msg);
            }
            (_, OP_TEXT, b"2probe") => {
                s.stage = Stage::Probing;
                let parked = s.get.take();
                self.poll_send(PollMsg::Out {
                    to: from,
                    frames: vec![engine_frame(b"3probe")],
                    close: None,
                });
                // The pending poll ends with a noop, so the client can pause polling.
                if let Some(p) = parked {
                    self.reply_parked(sid, p, b"6");
                }
            }
            (Stage::Probing, OP_TEXT, b"5") => {
                s.stage = Stage::Upgraded;
                if let Some(p) = s.get.take() {
                    self.reply_parked(sid, p, b"6");
                }
                tracing::debug!(conn = %sid, "Socket.IO session upgraded to WebSocket");
                // What waited during the probe goes out on the WebSocket, in order.
                self.mark_dirty(sid.slot());
            }
            _ => {}
        }
    }
}
