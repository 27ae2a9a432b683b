//! Socket.IO connections and the backend proxies (see `proxy`, `proxied`): the first CONNECT
//! asks the connect proxy with the auth payload, `join` and `publish` reach the subscribe and
//! publish proxies as their `/ws` envelopes do, `emit('rpc', {method, data}, ack)` is an RPC
//! answered through the ack. While a call is out, the connection's later Socket.IO packets are
//! held in order (as raw WebSocket messages, before decoding) and replayed after the answer.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::proxied::{outcome, Outcome};
use super::proxy::{Held, ProxyFailure, SioConnect, Step, Via};
use super::ShardState;
use crate::config::proxy::{ProxyEndpoint, ProxyKind};
use crate::policy::guard::Admitted;
use crate::proto::engineio as eio;
use crate::proto::frame::OP_BINARY;
use crate::proto::handshake::RequestHead;
use crate::proto::proxy::{ConnectRequest, ConnectResult};
use crate::proto::socketio as sio;
use crate::proto::socketio_map as map;
use crate::ConnId;

/// The argument of `emit('rpc', {method, data}, ack)`.
#[derive(Deserialize)]
struct Rpc<'a> {
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

impl ShardState {
    /// The upgrade request's headers the connect proxy forwards, kept for the first CONNECT;
    /// `None` (nothing kept) without a connect proxy naming headers.
    /// Boxed `Vec`: a thin pointer in `SioConn` (see there).
    #[allow(clippy::box_collection)]
    pub(super) fn sio_proxy_headers(
        &self,
        head: &RequestHead,
    ) -> Option<Box<Vec<(String, String)>>> {
        let ep = self.proxy_for(ProxyKind::Connect, "")?;
        let kept: Vec<(String, String)> = ep
            .headers
            .iter()
            .filter_map(|n| head.header(n).map(|v| (n.clone(), v.to_string())))
            .collect();
        (!kept.is_empty()).then(|| Box::new(kept))
    }

    /// Holds a Socket.IO `message` packet (text `4...`, or a binary attachment) of a connection
    /// that waits for the backend; Engine.IO pings, pongs and closes go on at once.
    pub(super) fn sio_hold(&mut self, id: ConnId, op: u8, msg: &[u8]) -> bool {
        if self.proxied.is_empty() || !(op == OP_BINARY || msg.first() == Some(&b'4')) {
            return false;
        }
        self.hold_while_waiting(id, || Held::Sio(op, msg.into()))
    }

    /// `emit('rpc', {method, data})` names a method an RPC proxy serves: its method and data.
    /// `None`: an ordinary event named `rpc`.
    pub(super) fn sio_rpc<'a>(
        &self,
        args: &[&'a RawValue],
    ) -> Option<(Cow<'a, str>, Option<&'a RawValue>)> {
        let rpc: Rpc<'a> = serde_json::from_str(args.first()?.get()).ok()?;
        self.proxy_for(ProxyKind::Rpc, &rpc.method)?;
        Some((rpc.method, rpc.data))
    }

    /// The first CONNECT, admitted by the token and `on_connect`: the connect proxy decides,
    /// with the auth payload as the request's `data`.
    pub(super) fn sio_connect_proxy(
        &mut self,
        id: ConnId,
        nsp: usize,
        auth: Option<&RawValue>,
        mut admitted: Admitted,
        ep: Arc<ProxyEndpoint>,
    ) {
        let Some(c) = self.conn(id) else { return };
        let client = self.hub.client_id(id);
        let headers: Vec<(String, String)> = self
            .sio
            .get(&id)
            .and_then(|s| s.headers.as_deref())
            .map(|h| h.to_vec())
            .unwrap_or_default();
        let map = headers
            .iter()
            .map(|(n, v)| (n.clone(), v.as_str().into()))
            .collect();
        let body = ConnectRequest {
            client: &client,
            transport: "socketio",
            remote: c.remote.to_string(),
            path: eio::PATH,
            query: None,
            user: admitted.user.as_deref(),
            headers: map,
            data: auth.and_then(|a| serde_json::from_str(a.get()).ok()),
            namespace: Some(&self.hub.config.socketio_namespaces[nsp]),
        }
        .to_vec();
        let topics = std::mem::take(&mut admitted.topics);
        let auth = auth.map(RawValue::to_owned);
        let via = Via::Sio(Box::new(SioConnect {
            nsp,
            admitted,
            auth,
        }));
        let step = Step::Connect { topics, via };
        self.proxy_wait(id, ProxyKind::Connect, ep, step, body, headers);
    }

    /// The connect proxy answered a first CONNECT: the namespace is connected (then the
    /// `connected` event with the backend's `data`), or a CONNECT_ERROR tells the client's
    /// `connect_error` why — the connection stays, and a later CONNECT asks again.
    pub(super) fn sio_connect_proxied(
        &mut self,
        id: ConnId,
        result: Result<Bytes, ProxyFailure>,
        mut topics: Vec<String>,
        pending: SioConnect,
        allow_down: bool,
    ) {
        let SioConnect {
            nsp,
            mut admitted,
            auth,
        } = pending;
        let mut data = None;
        match outcome::<ConnectResult>(result, allow_down) {
            Outcome::Go(r) => {
                if let Some(r) = r {
                    if let Some(u) = r.user {
                        admitted.user = Some(u.into());
                    }
                    if let Some(m) = r.meta {
                        self.meta.insert(id, m.get().into());
                    }
                    if let Some(t) = r.expire_at {
                        self.expiry.insert(id, t);
                    }
                    admitted.topics = r.topics;
                    data = r.data;
                }
            }
            Outcome::Refuse(code, msg) => {
                return self.sio_proxy_refused(id, nsp, code.as_str(), &msg, None)
            }
            Outcome::Close(close, reason) => {
                let code = if close == 4401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                return self.sio_proxy_refused(id, nsp, code, &reason, Some(close));
            }
        }
        if let Some(s) = self.sio.get_mut(&id) {
            s.headers = None;
        }
        topics.extend(self.sio_admit(id, admitted));
        self.sio_joined(id, nsp, true, &topics, auth.as_deref());
        let frame = self.connected_frame(id, data.as_deref());
        self.enqueue(id, frame);
    }

    /// CONNECT_ERROR `{message, data: {code[, disconnect]}}`: the backend's refusal (or its
    /// absence) as the client's `connect_error`.
    fn sio_proxy_refused(
        &mut self,
        id: ConnId,
        nsp: usize,
        code: &str,
        msg: &str,
        disconnect: Option<u16>,
    ) {
        tracing::info!(conn = %id, code, reason = msg, "Socket.IO connect refused by the backend");
        let name = self.hub.config.socketio_namespaces[nsp].clone();
        let mut data = serde_json::json!({ "code": code });
        if let Some(d) = disconnect {
            data["disconnect"] = d.into();
        }
        let mut out = vec![b'4'];
        sio::encode_connect_error(&name, msg, Some(&data.to_string()), &mut out);
        self.enqueue(id, map::engine_frame(&out));
    }
}
