//! Socket.IO clients on the shard (`/socket.io/`, Engine.IO v4 over WebSocket): the upgrade and
//! OPEN packet, Engine.IO heartbeats, namespaces with the CONNECT auth payload, and client
//! events turned into the hub's envelopes, so they are policed, routed and answered exactly as
//! `/ws` messages are (`proto::socketio_map` is the mapping; answers go back through
//! `enqueue`, publications through the shared per-shard encodings).
//!
//! This file holds the endpoint, the Engine.IO packets and the Socket.IO packet decoding;
//! namespace CONNECTs are answered in `sio_connect`, client events become envelopes in
//! `sio_events`.
//!
//! Per connection, the entry holds one flag and the home namespace in seven bits of its flags
//! (the namespace of rooms joined outside events: the first one it connected; see `sio_rooms`);
//! the side map `sio` holds the set of connected namespaces, the recovery sessions
//! (`sio_recover`), rooms of other namespaces and, only while one is incomplete, a binary
//! packet waiting for its attachments.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{flag, ConnKind, Phase, ShardState};
use crate::proto::engineio::{self as eio, Kind as EioKind, RequestError};
use crate::proto::frame::{OP_BINARY, OP_TEXT};
use crate::proto::handshake::{self as http, HttpError, RequestHead};
use crate::proto::socketio::{self as sio, Kind};
use crate::proto::socketio_binary::{self as bin, Pending};
use crate::proto::socketio_map as map;
use crate::ConnId;

/// A Socket.IO connection's state beyond its entry.
#[derive(Default)]
pub(crate) struct SioConn {
    /// Connected namespaces: bit `i` for the `i`-th configured one.
    pub(super) connected: u128,
    /// The token was checked (at the first CONNECT).
    pub(super) authed: bool,
    /// A BINARY_EVENT waiting for its attachments.
    pending: Option<Box<Pending>>,
    /// Private session ids and a resume in progress (`shard::sio_recover`).
    pub(super) recovery: super::sio_recover::ConnRecovery,
    /// Rooms of namespaces other than the home one (`shard::sio_rooms`).
    pub(super) rooms: super::sio_rooms::NspRooms,
    /// The upgrade request's headers the connect proxy forwards (kept until the first CONNECT
    /// only when a connect proxy names some).
    /// A thin pointer (boxed `Vec`, not a boxed slice): 8 bytes in every connection's state.
    #[allow(clippy::box_collection)]
    pub(super) headers: Option<Box<Vec<(String, String)>>>,
}

impl SioConn {
    /// Connected namespaces: bit `i` for the `i`-th configured one.
    pub(super) fn connected(&self) -> u128 {
        self.connected
    }
}

impl ShardState {
    /// Whether `path` is an Engine.IO endpoint: the Socket.IO one (served when namespaces are
    /// configured) or the bare one (`shard::eio_bare`).
    pub(super) fn is_sio_path(&self, path: &str) -> bool {
        (!self.hub.config.socketio_namespaces.is_empty()
            && (path == eio::PATH || path == &eio::PATH[..eio::PATH.len() - 1]))
            || self.is_eio_bare_path(path)
    }

    /// `GET /socket.io/?EIO=4&transport=websocket`: the same origin check and caps as `/ws`
    /// (the token comes later, in the CONNECT packet), then the OPEN packet. On the bare
    /// endpoint the token and `on_connect` are checked here, as there is no CONNECT.
    pub(super) fn route_sio(&mut self, id: ConnId, head: &RequestHead) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let cfg = &hub.config;
        let bare = self.is_eio_bare_path(&head.path);
        match eio::parse_query(head.query.as_deref().unwrap_or("")) {
            Ok(q) if q.transport == eio::Transport::Websocket && q.sid.is_none() => {}
            // Long-polling, and the upgrade of a polling session: `sio_poll`.
            Ok(q) if q.transport == eio::Transport::Polling => {
                return self.route_poll(id, head, q.sid, bare)
            }
            Ok(q) => {
                let sid = q.sid.unwrap_or_default();
                return self.route_sio_upgrade(id, head, sid);
            }
            Err(e) => return self.sio_refuse(id, head, e),
        }
        if !head.method.eq_ignore_ascii_case("GET") {
            return self.sio_refuse(id, head, RequestError::BadHandshakeMethod);
        }
        if !cfg.guard.origins.allows(head.header("Origin")) {
            return self.sio_refuse(id, head, RequestError::Forbidden);
        }
        let response = http::accept_upgrade(head)?;
        let mut admitted = match bare {
            true => self.eio_bare_admit(id, head)?,
            false => cfg.guard.admit_anonymous(),
        };
        self.take_permit(id)?;
        let topics = std::mem::take(&mut admitted.topics);
        self.upgrade(id, Phase::Ws(ConnKind::SocketIo), admitted);
        if let Some(c) = self.conn_mut(id) {
            c.set(flag::SIO);
        }
        let headers = if bare {
            None
        } else {
            self.sio_proxy_headers(head)
        };
        self.sio.insert(
            id,
            Box::new(SioConn {
                headers,
                ..Default::default()
            }),
        );
        self.push_raw(id, Bytes::from(response));
        let sid = hub.client_id(id);
        let ping = cfg.ping_interval.as_millis() as u64;
        let mut open = Vec::with_capacity(160);
        eio::Open {
            sid: &sid,
            upgrade_to_websocket: false,
            ping_interval_ms: ping,
            ping_timeout_ms: (cfg.idle_timeout.as_millis() as u64).saturating_sub(ping),
            max_payload: cfg.max_message_size,
        }
        .encode(&mut open);
        self.enqueue(id, map::engine_frame(&open));
        if bare {
            self.eio_bare_opened(id, &topics);
        }
        tracing::debug!(conn = %id, bare, "Engine.IO connection opened");
        Ok(())
    }

    /// Answers a refused Engine.IO request with its status and `{"code","message"}` body,
    /// readable by a page of an allowed origin (CORS with credentials: the origin echoed).
    pub(super) fn sio_refuse(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        e: RequestError,
    ) -> Result<(), HttpError> {
        let origin = head
            .header("Origin")
            .filter(|o| self.hub.config.guard.origins.allows(Some(o)))
            .filter(|o| !o.contains(['\r', '\n']));
        let extra = match origin {
            Some(o) => format!(
                "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
            ),
            None => String::new(),
        };
        let now = self.stamp;
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let took = now.since(c.accepted);
        c.phase = Phase::Discard;
        self.stats().handshake(e.status(), took);
        let body = e.body();
        let bytes = http::response_bytes(
            e.status(),
            "application/json",
            &extra,
            "Connection: close\r\n",
            body.as_bytes(),
        );
        self.push_raw(id, Bytes::from(bytes));
        self.begin_close(id);
        Ok(())
    }

    /// One WebSocket message of a Socket.IO connection (held in order, like a `/ws` message,
    /// while the connection waits for the backend: see `sio_proxy`).
    pub(super) fn sio_input(&mut self, id: ConnId, op: u8, msg: &[u8]) {
        // Held while a recovery session is fetched from the store, or a backend call is out.
        if self.sio_hold_input(id, op, msg) || self.sio_hold(id, op, msg) {
            return;
        }
        // No Socket.IO layer: each message is the application's (`eio_bare`).
        let bare = self.conn(id).is_some_and(|c| c.eio_bare());
        match op {
            OP_TEXT => match eio::decode_text(msg) {
                Err(e) => self.sio_fail(id, e.code()),
                Ok(p) => {
                    let eio::Data::Text(text) = p.data else {
                        return;
                    };
                    match p.kind {
                        EioKind::Message if bare => self.eio_message(id, eio::Data::Text(text)),
                        EioKind::Message => self.sio_packet(id, text, Vec::new()),
                        // The answer to a probe (during an upgrade from polling).
                        EioKind::Ping => {
                            let mut out = vec![EioKind::Pong.digit()];
                            out.extend_from_slice(text.as_bytes());
                            self.enqueue(id, map::engine_frame(&out));
                        }
                        EioKind::Close => {
                            // The client left on purpose: no session to keep.
                            if let Some(s) = self.sio.get_mut(&id) {
                                s.connected = 0;
                            }
                            self.close(id, 1000, "")
                        }
                        EioKind::Pong | EioKind::Noop | EioKind::Upgrade | EioKind::Open => {}
                    }
                }
            },
            OP_BINARY if bare => self.eio_message(id, eio::decode_binary(msg).data),
            OP_BINARY => {
                let max = self.hub.config.max_message_size;
                let Some(s) = self.sio.get_mut(&id) else {
                    return;
                };
                let Some(p) = s.pending.as_mut() else {
                    return self.sio_fail(id, sio::SocketError::BadAttachment.code());
                };
                // A packet with all its attachments is bounded like one message.
                if p.bytes() + msg.len() > max {
                    return self.sio_fail(id, sio::SocketError::TooLarge.code());
                }
                if p.push(msg) {
                    let p = s.pending.take().map(|b| *b).unwrap_or_default();
                    self.sio_packet(id, &p.packet, p.parts);
                }
            }
            _ => {}
        }
    }

    /// A protocol error: the connection closes (1002) with the error's code as the reason.
    pub(super) fn sio_fail(&mut self, id: ConnId, code: &'static str) {
        tracing::debug!(conn = %id, code, "Socket.IO protocol error");
        self.stats_protocol_error();
        self.close(id, 1002, code);
    }

    fn stats_protocol_error(&self) {
        crate::proto::stats::ShardStats::add(&self.stats().protocol_errors, 1);
    }

    /// A Socket.IO packet (with its attachments, once they are all there).
    fn sio_packet(&mut self, id: ConnId, text: &str, parts: Vec<Vec<u8>>) {
        let p = match sio::decode(text) {
            Ok(p) => p,
            Err(e) => return self.sio_fail(id, e.code()),
        };
        let namespaces = &self.hub.config.socketio_namespaces;
        let Some(nsp) = namespaces.iter().position(|n| n == p.nsp) else {
            if p.kind == Kind::Connect {
                let mut out = vec![b'4'];
                sio::encode_connect_error(p.nsp, "Invalid namespace", None, &mut out);
                self.enqueue(id, map::engine_frame(&out));
            }
            return;
        };
        let Some(s) = self.sio.get_mut(&id) else {
            return;
        };
        let connected = s.connected & (1 << nsp) != 0;
        match p.kind {
            Kind::Connect => self.sio_connect(id, nsp, p.data),
            Kind::Disconnect => {
                s.connected &= !(1 << nsp);
            }
            // Attachments follow: kept until they are all there (then this runs again).
            Kind::BinaryEvent | Kind::BinaryAck if parts.len() < p.attachments => {
                if s.pending.is_some() {
                    return self.sio_fail(id, sio::SocketError::BadAttachment.code());
                }
                s.pending = Some(Box::new(Pending::new(text, p.attachments)));
            }
            // Packets of a namespace the client has not joined are dropped, as the reference
            // server does.
            Kind::Event | Kind::BinaryEvent if !connected => {}
            Kind::Event | Kind::BinaryEvent => {
                let Some(data) = p.data else { return };
                let joined;
                let data = if p.kind == Kind::BinaryEvent {
                    joined = match bin::reconstruct(data, &parts) {
                        Ok(j) => j,
                        Err(e) => return self.sio_fail(id, e.code()),
                    };
                    match serde_json::from_str::<&RawValue>(&joined) {
                        Ok(d) => d,
                        Err(_) => {
                            return self.sio_fail(id, sio::SocketError::InvalidPayload.code())
                        }
                    }
                } else {
                    data
                };
                self.sio_event(id, nsp, p.id, data);
            }
            // The answer to a server emit with an ack: a durable message, whose offset is the
            // ack id, acknowledged as `/ws` clients do.
            Kind::Ack | Kind::BinaryAck if connected => {
                if let Some(offset) = p.id {
                    self.sio_ack(id, offset);
                }
            }
            Kind::Ack | Kind::BinaryAck | Kind::ConnectError => {}
        }
    }
}
