//! What a shard does with the backend proxies: start calls (connect, subscribe, publish, RPC,
//! refresh), hold the waiting connection's messages, apply the answers. See `proxy`.

use std::sync::Arc;

use bytes::Bytes;

use super::proxy::{Held, ProxyAnswer, ProxyCall, ProxyFailure, Step, Via, Waiting};
use super::ShardState;
use crate::config::proxy::{OnDown, ProxyEndpoint, ProxyKind};
use crate::proto::envelope;
use crate::proto::error::ErrorCode;
use crate::proto::proxy::{
    self as wire, Answer, CallResult, ConnRequest, ConnectResult, CLOSE_REFUSED, CLOSE_UNAVAILABLE,
};
use crate::ConnId;

/// Close code of a connection whose `expire_at` passed with no refresh proxy to extend it.
pub const CLOSE_EXPIRED: u16 = 4401;

impl ShardState {
    /// Client messages go through here: held while the connection waits for the backend.
    pub(crate) fn dispatch(&mut self, id: ConnId, payload: &[u8]) {
        if !self.hold_while_waiting(id, || Held::Envelope(payload.into())) {
            self.dispatch_now(id, payload);
        }
    }

    /// Holds a message of `id` if it waits for the backend (then `true`). No lookup at all
    /// unless some connection of the shard waits.
    pub(super) fn hold_while_waiting(&mut self, id: ConnId, msg: impl FnOnce() -> Held) -> bool {
        let Some(w) = (!self.proxied.is_empty())
            .then(|| self.proxied.get_mut(&id))
            .flatten()
        else {
            return false;
        };
        let msg = msg();
        w.queued_bytes += msg.len();
        w.queue.push_back(msg);
        if w.queued_bytes > self.hub.config.outbound_queue {
            self.close(id, 1008, "too many messages while waiting for the backend");
        }
        true
    }

    /// The endpoint deciding `kind` for `topic`, if any (the fast path: none configured).
    pub(super) fn proxy_for(&self, kind: ProxyKind, topic: &str) -> Option<Arc<ProxyEndpoint>> {
        let p = &self.hub.config.proxy;
        if !p.any() {
            return None;
        }
        p.for_topic(kind, topic).cloned()
    }

    /// Starts a call for `id`, holding its later messages until the answer.
    pub(super) fn proxy_wait(
        &mut self,
        id: ConnId,
        kind: ProxyKind,
        endpoint: Arc<ProxyEndpoint>,
        step: Step,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) {
        self.proxied.insert(
            id,
            Waiting {
                endpoint: endpoint.clone(),
                step,
                queue: Default::default(),
                queued_bytes: 0,
            },
        );
        self.proxy_send(id, kind, endpoint, body, headers);
    }

    fn proxy_send(
        &mut self,
        id: ConnId,
        kind: ProxyKind,
        endpoint: Arc<ProxyEndpoint>,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) {
        match self.hub.links.proxy.clone() {
            Some(px) => px.call(ProxyCall {
                kind,
                endpoint,
                conn: id,
                body,
                headers,
            }),
            None => self.proxied_answer(
                id,
                ProxyAnswer {
                    kind,
                    result: Err(ProxyFailure::Down("no proxy client runs".into())),
                },
            ),
        }
    }

    /// A body for an established connection's call.
    pub(super) fn conn_request(
        &self,
        id: ConnId,
        topic: Option<&str>,
        event: Option<&str>,
        method: Option<&str>,
        data: Option<&serde_json::value::RawValue>,
    ) -> Vec<u8> {
        let client = self.hub.client_id(id);
        let c = self.conn(id);
        let meta = self
            .meta
            .get(&id)
            .and_then(|m| serde_json::from_str::<&serde_json::value::RawValue>(m).ok());
        ConnRequest {
            client: &client,
            user: c.and_then(|c| c.user.as_deref()),
            topic,
            event,
            method,
            data,
            meta: meta.filter(|_| topic.is_none() && method.is_none()),
        }
        .to_vec()
    }

    /// The backend answered (or failed) a call of `id`.
    pub(super) fn proxied_answer(&mut self, id: ConnId, answer: ProxyAnswer) {
        if answer.kind == ProxyKind::Refresh {
            return self.refreshed(id, answer.result);
        }
        let Some(w) = self.proxied.remove(&id) else {
            return; // removed meanwhile
        };
        if self.conn(id).is_none_or(|c| c.closing.is_some()) {
            return;
        }
        let Waiting {
            endpoint,
            step,
            mut queue,
            ..
        } = w;
        let allow_down = endpoint.on_down == OnDown::Allow;
        match step {
            Step::Connect {
                topics,
                via: Via::Sio(pending),
            } => self.sio_connect_proxied(id, answer.result, topics, *pending, allow_down),
            Step::Connect { topics, via } => {
                let sse = matches!(via, Via::Sse);
                self.connect_answer(id, answer.result, topics, sse, allow_down)
            }
            Step::SseTopics {
                left,
                allowed,
                then,
            } => self.sse_topic_answer(id, answer.result, left, allowed, then, allow_down),
            Step::Subscribe(payload) => {
                let Ok(env) = envelope::parse(&payload) else {
                    return;
                };
                let (topic, req) = (env.topic.to_string(), env.id);
                match outcome::<CallResult>(answer.result, allow_down) {
                    Outcome::Go(r) => {
                        if let Some(d) = r.and_then(|r| r.data) {
                            let frame = envelope::publication(
                                &topic,
                                "subscribed",
                                Some(d.get().as_bytes()),
                            );
                            self.enqueue(id, frame);
                        }
                        self.client_subscribe(id, &topic, req, env.data);
                    }
                    Outcome::Refuse(code, msg) => self.error(id, req, &topic, code, &msg),
                    Outcome::Close(code, reason) => self.close(id, code, &reason),
                }
            }
            Step::Publish(payload) => {
                let Ok(env) = envelope::parse(&payload) else {
                    return;
                };
                let (topic, req) = (env.topic.to_string(), env.id);
                match outcome::<CallResult>(answer.result, allow_down) {
                    Outcome::Go(Some(CallResult { data: Some(d), .. })) => {
                        let replaced = replace_data(&payload, &d);
                        match replaced.as_deref().map(envelope::parse) {
                            Some(Ok(env)) => {
                                self.handle_event(id, &env, replaced.as_deref().unwrap_or_default())
                            }
                            _ => self.error(
                                id,
                                req,
                                &topic,
                                ErrorCode::ProxyError,
                                "the backend's data could not replace the publication's",
                            ),
                        }
                    }
                    Outcome::Go(_) => self.handle_event(id, &env, &payload),
                    Outcome::Refuse(code, msg) => self.error(id, req, &topic, code, &msg),
                    Outcome::Close(code, reason) => self.close(id, code, &reason),
                }
            }
            Step::Rpc { method, req } => match outcome::<CallResult>(answer.result, false) {
                Outcome::Go(r) => {
                    let data = r.and_then(|r| r.data);
                    if let Some(rid) = req {
                        let d = data.as_ref().map(|d| d.get().as_bytes());
                        self.enqueue(id, envelope::reply(rid, &method, d));
                    }
                }
                Outcome::Refuse(code, msg) => self.error(id, req, &method, code, &msg),
                Outcome::Close(code, reason) => self.close(id, code, &reason),
            },
        }
        // The messages that arrived meanwhile, in order, until one waits for the backend again.
        while let Some(msg) = queue.pop_front() {
            if self.conn(id).is_none_or(|c| c.closing.is_some()) {
                return;
            }
            match msg {
                Held::Envelope(m) => self.dispatch_now(id, &m),
                Held::Sio(op, m) => self.sio_input(id, op, &m),
            }
            if let Some(w) = self.proxied.get_mut(&id) {
                w.queued_bytes = queue.iter().map(Held::len).sum();
                w.queue = queue;
                return;
            }
        }
    }

    fn connect_answer(
        &mut self,
        id: ConnId,
        result: Result<Bytes, ProxyFailure>,
        mut topics: Vec<String>,
        sse: bool,
        allow_down: bool,
    ) {
        let mut data = None;
        match outcome::<ConnectResult>(result, allow_down) {
            Outcome::Go(r) => {
                if let Some(r) = r {
                    if let Some(u) = r.user {
                        self.set_user(id, u.into());
                    }
                    if let Some(m) = r.meta {
                        self.meta.insert(id, m.get().into());
                    }
                    if let Some(t) = r.expire_at {
                        self.expiry.insert(id, t);
                    }
                    topics.extend(r.topics);
                    data = r.data;
                }
            }
            Outcome::Refuse(code @ ErrorCode::NotAvailable, msg) => {
                return self.refuse_connect(id, sse, CLOSE_UNAVAILABLE, code, &msg);
            }
            Outcome::Refuse(code @ ErrorCode::ProxyError, msg) => {
                let msg = format!("proxy_error: {msg}");
                return self.refuse_connect(id, sse, CLOSE_UNAVAILABLE, code, &msg);
            }
            Outcome::Refuse(code, msg) => {
                return self.refuse_connect(id, sse, CLOSE_REFUSED, code, &msg)
            }
            Outcome::Close(code, reason) => {
                return self.refuse_connect(id, sse, code, ErrorCode::Forbidden, &reason)
            }
        }
        let frame = self.connected_frame(id, data.as_deref());
        if sse {
            self.sse_open(id, topics, Some(frame));
        } else {
            self.connected(id, &topics);
            self.enqueue(id, frame);
        }
    }

    /// The `connected` frame: the client id, the user, the connect proxy's `data`.
    pub(super) fn connected_frame(
        &self,
        id: ConnId,
        data: Option<&serde_json::value::RawValue>,
    ) -> Bytes {
        let client = self.hub.client_id(id);
        let user = self.conn(id).and_then(|c| c.user.clone());
        let body = serde_json::json!({
            "client": client,
            "user": user.as_deref(),
            "data": data,
        });
        envelope::publication("", "connected", Some(body.to_string().as_bytes()))
    }

    /// Ends a refused connection: a WebSocket with the close code, an SSE stream (which has no
    /// close code) with an `error` event first.
    pub(super) fn refuse_connect(
        &mut self,
        id: ConnId,
        sse: bool,
        close: u16,
        code: ErrorCode,
        msg: &str,
    ) {
        if sse {
            self.hub.stats[self.index].error(code);
            self.enqueue(id, envelope::error(None, "", code, msg));
        }
        self.close(id, close, msg);
    }

    /// Replaces the connection's user (the connect proxy named one).
    pub(super) fn set_user(&mut self, id: ConnId, user: Arc<str>) {
        let Some(c) = self.conn_mut(id) else { return };
        let old = c.user.replace(user.clone());
        if let Some(old) = old {
            if let Some(ids) = self.users.get_mut(&old) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.users.remove(&old);
                }
            }
        }
        self.users.entry(user).or_default().push(id);
    }

    /// The timer: connections whose `expire_at` passed are refreshed (or closed without a
    /// refresh proxy). `unix` is the wall clock in seconds.
    pub(super) fn check_expiry(&mut self, unix: u64) {
        if self.expiry.is_empty() {
            return;
        }
        let due: Vec<ConnId> = self
            .expiry
            .iter()
            .filter(|(id, &t)| t <= unix && !self.refreshing.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            match self.proxy_for(ProxyKind::Refresh, "") {
                Some(ep) => {
                    self.refreshing.insert(id);
                    let body = self.conn_request(id, None, None, None, None);
                    self.proxy_send(id, ProxyKind::Refresh, ep, body, Vec::new());
                }
                None => {
                    self.expiry.remove(&id);
                    self.close(id, CLOSE_EXPIRED, "connection expired");
                }
            }
        }
    }

    fn refreshed(&mut self, id: ConnId, result: Result<Bytes, ProxyFailure>) {
        if !self.refreshing.remove(&id) {
            return;
        }
        let allow_down = self
            .proxy_for(ProxyKind::Refresh, "")
            .is_some_and(|e| e.on_down == OnDown::Allow);
        match outcome::<CallResult>(result, allow_down) {
            Outcome::Go(Some(CallResult {
                expire_at: Some(t), ..
            })) => {
                self.expiry.insert(id, t);
            }
            Outcome::Go(Some(_)) => {
                self.expiry.remove(&id);
            }
            // Backend down and allowed: try again a minute later.
            Outcome::Go(None) => {
                if let Some(t) = self.expiry.get_mut(&id) {
                    *t += 60;
                }
            }
            Outcome::Refuse(ErrorCode::NotAvailable | ErrorCode::ProxyError, msg) => {
                self.close(id, CLOSE_UNAVAILABLE, &msg)
            }
            Outcome::Refuse(_, msg) => self.close(id, CLOSE_EXPIRED, &msg),
            Outcome::Close(code, reason) => self.close(id, code, &reason),
        }
    }

    /// Forgets a removed connection's proxy state.
    pub(super) fn forget_proxied(&mut self, id: ConnId) {
        if !self.proxied.is_empty() {
            self.proxied.remove(&id);
        }
        if !self.expiry.is_empty() {
            self.expiry.remove(&id);
            self.refreshing.remove(&id);
        }
    }
}

/// What an answer means for the connection.
pub(super) enum Outcome<T> {
    /// Go on (with the result; `None`: the backend was down and `on_down = "allow"`).
    Go(Option<T>),
    /// An error envelope (or, for a connect, a close) with this code.
    Refuse(ErrorCode, String),
    /// Close the connection.
    Close(u16, String),
}

/// Reads an answer (or a failure) for a connection; `allow_down`: the endpoint's
/// `on_down = "allow"`.
pub(super) fn outcome<T: for<'de> serde::Deserialize<'de> + Default>(
    result: Result<Bytes, ProxyFailure>,
    allow_down: bool,
) -> Outcome<T> {
    let body = match result {
        Ok(b) => b,
        Err(ProxyFailure::Bad(m)) => return Outcome::Refuse(ErrorCode::ProxyError, m),
        Err(_) if allow_down => return Outcome::Go(None),
        Err(ProxyFailure::Down(m)) => {
            return Outcome::Refuse(
                ErrorCode::NotAvailable,
                format!("backend not available: {m}"),
            )
        }
        Err(ProxyFailure::Timeout) => {
            return Outcome::Refuse(ErrorCode::NotAvailable, "backend timed out".into())
        }
    };
    match wire::parse::<T>(&body) {
        Ok(Answer::Result(r)) => Outcome::Go(Some(r)),
        Ok(Answer::Error(code, msg)) => Outcome::Refuse(code, msg),
        Ok(Answer::Disconnect(code, reason)) => Outcome::Close(code, reason),
        Err(e) => Outcome::Refuse(ErrorCode::ProxyError, e),
    }
}

/// `payload` (a client envelope) with its `data` replaced by `data`.
fn replace_data(payload: &[u8], data: &serde_json::value::RawValue) -> Option<Vec<u8>> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload).ok()?;
    v.insert("data".into(), serde_json::from_str(data.get()).ok()?);
    serde_json::to_vec(&v).ok()
}
