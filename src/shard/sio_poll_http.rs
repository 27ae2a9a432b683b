//! A polling session's HTTP requests as they arrive on any shard: the handshake (a session
//! owned here), the CORS preflight, and GETs and POSTs passed to the owner (`PollMsg::Request`;
//! the connection waits in `Phase::Api` for the answer).

use bytes::Bytes;

use super::super::shared::KeepAlive;
use super::super::{flag, ConnEntry, ConnKind, Phase, ShardState};
use super::{poll, random_secret, PollMsg, PollRequest, PollSession, Stage};
use crate::proto::engineio::{self as eio, RequestError};
use crate::proto::handshake::{self as http, HttpError, RequestHead};
use crate::ConnId;

impl ShardState {
    /// `/socket.io/?EIO=4&transport=polling[&sid=..]` on this shard's connection `id`.
    pub(in crate::shard) fn route_poll(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        sid: Option<&str>,
        bare: bool,
    ) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let cfg = &hub.config;
        let origin = head.header("Origin");
        if !cfg.guard.origins.allows(origin) {
            return self.sio_refuse(id, head, RequestError::Forbidden);
        }
        let method = head.method.to_ascii_uppercase();
        if method == "OPTIONS" {
            let extra =
                poll::preflight_headers(origin, head.header("Access-Control-Request-Headers"));
            self.poll_here(id, head, 200, "text/plain", &extra, b"");
            return Ok(());
        }
        let Some(sid) = sid else {
            if method != "GET" {
                return self.sio_refuse(id, head, RequestError::BadHandshakeMethod);
            }
            return self.poll_open(id, head, bare);
        };
        let Some((sid, secret)) = self.parse_sid(sid) else {
            return self.sio_refuse(id, head, RequestError::UnknownSid);
        };
        match method.as_str() {
            "GET" => {
                self.decide_keep_alive(id, head);
                let Some(c) = self.conn_mut(id) else {
                    return Ok(());
                };
                c.phase = Phase::Api;
                self.polls.links.insert(id, sid);
                let keep = self.keep_of(id);
                self.poll_send(PollMsg::Request(PollRequest {
                    sid,
                    secret,
                    from: id,
                    origin: origin.map(Into::into),
                    keep,
                    body: None,
                }));
            }
            "POST" => {
                // Over `maxPayload`: refused before the body is read.
                let need = super::super::request::body_len(head, cfg.max_message_size)?;
                self.decide_keep_alive(id, head);
                let Some(c) = self.conn_mut(id) else {
                    return Ok(());
                };
                if need == 0 {
                    c.phase = Phase::Api;
                    self.poll_post(id, head.clone(), Bytes::new());
                } else {
                    c.phase = Phase::Body(Box::new((head.clone(), need)));
                }
            }
            _ => return self.sio_refuse(id, head, RequestError::BadRequest),
        }
        Ok(())
    }

    /// The body of a POST has arrived (the connection is in [`Phase::Api`]): to the owner.
    pub(in crate::shard) fn poll_post(&mut self, id: ConnId, head: RequestHead, body: Bytes) {
        let sid = eio::parse_query(head.query.as_deref().unwrap_or(""))
            .ok()
            .and_then(|q| q.sid)
            .and_then(|s| self.parse_sid(s));
        let keep = self.keep_of(id);
        let origin = head.header("Origin").map(Into::into);
        let Some((sid, secret)) = sid else {
            return self.poll_error(id, origin.as_deref(), keep, RequestError::UnknownSid);
        };
        self.poll_send(PollMsg::Request(PollRequest {
            sid,
            secret,
            from: id,
            origin,
            keep,
            body: Some(body),
        }));
    }

    /// A session id of this node: the owner's connection id and the secret.
    pub(super) fn parse_sid(&self, sid: &str) -> Option<(ConnId, u64)> {
        let (client, secret) = poll::split_sid(sid)?;
        Some((self.hub.parse_client(client)?, secret))
    }

    /// How the connection `id` continues after the answer to its request in flight (one byte
    /// kept in a parked GET; its `Connection` header line when the answer is built).
    pub(super) fn keep_of(&mut self, id: ConnId) -> KeepAlive {
        let keep = match self
            .conn_mut(id)
            .map(|c| (c.has(flag::KEEP_ALIVE), c.has(flag::HTTP10)))
        {
            Some((true, true)) => KeepAlive::Http10,
            Some((true, false)) => KeepAlive::Http11,
            _ => KeepAlive::Close,
        };
        keep
    }

    /// Answers the request on `id` here and now (its head was just read).
    fn poll_here(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        status: u16,
        ctype: &str,
        extra: &str,
        body: &[u8],
    ) {
        self.decide_keep_alive(id, head);
        let keep = self.keep_of(id);
        let Some(c) = self.conn_mut(id) else { return };
        c.phase = Phase::Api;
        let bytes = http::response_bytes(status, ctype, extra, keep.header(), body);
        self.http_response(id, Bytes::from(bytes));
    }

    /// The handshake over polling: a session owned by this shard, answered with OPEN (`bare`:
    /// of the bare Engine.IO endpoint, admitted now as its WebSocket would be).
    fn poll_open(&mut self, id: ConnId, head: &RequestHead, bare: bool) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let cfg = &hub.config;
        let Some(remote) = self.conn(id).map(|c| c.remote) else {
            return Ok(());
        };
        let sid = self.insert_session(remote);
        let admitted = match bare {
            true => self.eio_bare_admit(sid, head),
            false => Ok(cfg.guard.admit_anonymous()),
        };
        let mut admitted = match admitted.and_then(|a| self.take_permit(sid).map(|()| a)) {
            Ok(a) => a,
            Err(e) => {
                // `on_connect` may have left metadata for it.
                self.meta.remove(&sid);
                self.conns.remove(sid.slot() as usize);
                return Err(e);
            }
        };
        let topics = std::mem::take(&mut admitted.topics);
        self.upgrade(sid, Phase::Ws(ConnKind::SocketIo), admitted);
        if let Some(c) = self.conn_mut(sid) {
            c.set(flag::SIO | flag::POLL);
        }
        let secret = random_secret();
        let mut state = Box::<super::super::sio::SioConn>::default();
        // The handshake's headers, as a WebSocket's upgrade keeps them for the connect proxy.
        if !bare {
            state.headers = self.sio_proxy_headers(head);
        }
        self.sio.insert(sid, state);
        if let Some(c) = self.conn_mut(sid) {
            c.io = super::Io::Poll(PollSession {
                secret,
                get: None,
                ws: super::MaybeConn::NONE,
                stage: Stage::Polling,
                busy: false,
            });
        }
        self.polls.sessions += 1;
        let ping = cfg.ping_interval.as_millis() as u64;
        let mut open = Vec::with_capacity(200);
        eio::Open {
            sid: &poll::make_sid(&hub.client_id(sid), secret),
            upgrade_to_websocket: true,
            ping_interval_ms: ping,
            ping_timeout_ms: (cfg.idle_timeout.as_millis() as u64).saturating_sub(ping),
            max_payload: cfg.max_message_size,
        }
        .encode(&mut open);
        let extra = poll::cors_headers(head.header("Origin"));
        self.poll_here(id, head, 200, poll::TEXT, &extra, &open);
        if bare {
            self.eio_bare_opened(sid, &topics);
        }
        tracing::debug!(conn = %sid, bare, "Engine.IO polling session opened");
        Ok(())
    }

    /// A slab entry with no socket for a polling session from `remote`.
    fn insert_session(&mut self, remote: super::super::entry::Peer) -> ConnId {
        self.generation = self.generation.wrapping_add(1);
        let slot = self.conns.vacant_key() as u32;
        let id = ConnId::new(self.index, slot, self.generation);
        let now = self.stamp;
        let perms = self.hub.config.guard.permissions.clone();
        self.conns
            .insert(ConnEntry::new(id, -1, remote, perms, None, now));
        id
    }
}
