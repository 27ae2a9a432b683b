//! Client messages on a shard: parse, police (rate limit, permissions), route to handlers; and
//! the actions that arrive for the shard's connections from the pool and the HTTP API.

use std::sync::Arc;

use bytes::Bytes;

use super::events::EventKind;
use super::inbox::{Action, ApiOp, ApiReply, CLOSE_DISCONNECTED};
use super::proxy::Step;
use super::shared::Job;
use super::ShardState;
use crate::config::proxy::ProxyKind;
use crate::policy::ratelimit::Verdict;
use crate::policy::security::SecurityError;
use crate::proto::envelope;
use crate::proto::error::{ErrorCode, HandlerError, HandlerResult};
use crate::proto::handler::{Context, Effects, Message, Outgoing};
use crate::proto::pattern::Pattern;
use crate::ConnId;

/// Why a message is not processed.
enum Refusal {
    /// Answer with an error envelope.
    Error(ErrorCode, String),
    /// Close the connection (1008).
    Close,
}

/// Events only the server sends: a client publishing them could impersonate a join, a leave, a
/// reply, an error, or the connect and subscribe proxies' `connected` / `subscribed` frames to
/// the other subscribers.
pub(crate) const RESERVED_EVENTS: [&str; 6] =
    ["reply", "error", "join", "leave", "connected", "subscribed"];

impl ShardState {
    /// Serves one HTTP API operation for this shard's connections.
    pub(super) fn api(&mut self, op: ApiOp) -> ApiReply {
        match op {
            ApiOp::Publish { frames, exclude } => {
                ApiReply::Count(self.deliver_many(&frames, exclude))
            }
            ApiOp::Stored(p) => ApiReply::Count(self.deliver_stored(&p)),
            ApiOp::Durable {
                user,
                offset,
                frame,
            } => ApiReply::Count(self.deliver_durable(&user, offset, frame)),
            ApiOp::Subscription { target, topic, add } => {
                let (n, refused) = self.server_subscription(&target, &topic, add);
                ApiReply::Subscribed(n, refused)
            }
            ApiOp::Presence(topic) => ApiReply::Presence(self.presence(&topic)),
            ApiOp::Barrier => ApiReply::Count(0),
            ApiOp::Broadcast(frame) => {
                let ids: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.has(super::flag::COUNTED))
                    .map(|(_, c)| c.id)
                    .collect();
                ids.iter().for_each(|id| self.enqueue(*id, frame.clone()));
                ApiReply::Count(ids.len())
            }
            ApiOp::Send(req) => {
                let mut n = 0;
                for user in &req.users {
                    let Some(ids) = self.users.get(user.as_str()).cloned() else {
                        continue;
                    };
                    let topic = req.topic.clone().unwrap_or_else(|| format!("user:{user}"));
                    let frame = envelope::publication(
                        &topic,
                        &req.event,
                        req.data.as_ref().map(|d| d.get().as_bytes()),
                    );
                    for id in ids {
                        self.enqueue(id, frame.clone());
                        n += 1;
                    }
                }
                ApiReply::Count(n)
            }
            ApiOp::Disconnect(user) => {
                let ids = self.users.get(&user).cloned().unwrap_or_default();
                for id in &ids {
                    self.close(*id, CLOSE_DISCONNECTED, "disconnected by server");
                    self.note(*id, EventKind::Disconnected, "closed with 4000 by the API");
                }
                ApiReply::Count(ids.len())
            }
            ApiOp::Online => {
                let list: Vec<(Arc<str>, usize)> = self
                    .users
                    .iter()
                    .map(|(u, ids)| (u.clone(), ids.len()))
                    .collect();
                let named: usize = list.iter().map(|(_, n)| n).sum();
                let counted = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.has(super::flag::COUNTED))
                    .count();
                ApiReply::Online(list, counted - named)
            }
            ApiOp::Topics => ApiReply::Topics(self.registry.iter().collect()),
        }
    }

    pub(super) fn error(
        &mut self,
        id: ConnId,
        req: Option<u64>,
        topic: &str,
        code: ErrorCode,
        msg: &str,
    ) {
        self.hub.stats[self.index].error(code);
        tracing::debug!(conn = %id, ?code, msg, "error reply");
        self.note(id, EventKind::Error, &format!("{}: {msg}", code.as_str()));
        self.enqueue(id, envelope::error(req, topic, code, msg));
    }

    /// Applies the connection's rate limit and permissions to one message.
    fn police(&mut self, id: ConnId, event: &str, topic: &str) -> Result<(), Refusal> {
        let ShardState { conns, hub, .. } = self;
        let Some(c) = conns.get_mut(id.slot() as usize).filter(|c| c.id == id) else {
            return Ok(());
        };
        if c.limiter.is_none() {
            // Built at the first message, not at the upgrade: an idle connection holds none. A
            // new limiter's bucket is full, as one built at the upgrade would be by now.
            c.limiter = hub.config.guard.rate.and_then(|(rate, burst)| {
                crate::policy::ratelimit::ConnLimiter::new(rate, burst)
                    .ok()
                    .map(Box::new)
            });
        }
        if let Some(limiter) = c.limiter.as_mut() {
            let verdict = match (&hub.config.guard.user_rate, &c.user) {
                (Some(users), Some(user)) => limiter.check_user(users, user),
                _ => limiter.check(),
            };
            match verdict {
                Verdict::Allow => {}
                Verdict::Reject => {
                    return Err(Refusal::Error(
                        ErrorCode::RateLimited,
                        "too many messages: slow down".into(),
                    ))
                }
                Verdict::Close => return Err(Refusal::Close),
            }
        }
        let user = c.user.as_deref();
        let checked = match event {
            "subscribe" | "history" | "presence" | "presence_stats" => {
                c.perms.can_subscribe(user, topic)
            }
            // `ack` is checked against the connection's own user topic where it is served.
            "unsubscribe" | "" | "ack" | "info" => Ok(()),
            // An RPC's topic is its method: the backend decides (see `proxied`).
            "rpc"
                if hub.config.proxy.any()
                    && hub.config.proxy.for_topic(ProxyKind::Rpc, topic).is_some() =>
            {
                Ok(())
            }
            _ => c.perms.can_publish(user, topic),
        };
        checked.map_err(|e| match e {
            SecurityError::InvalidPattern { .. } => {
                Refusal::Error(ErrorCode::BadRequest, e.to_string())
            }
            e => Refusal::Error(ErrorCode::Forbidden, e.to_string()),
        })
    }

    /// Dispatches one client message now (not held: see [`dispatch`](Self::dispatch)).
    pub(super) fn dispatch_now(&mut self, id: ConnId, payload: &[u8]) {
        let env = match envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => return self.error(id, e.id, "", ErrorCode::BadRequest, &e.message),
        };
        let (topic, req) = (&*env.topic, env.id);
        match self.police(id, &env.event, topic) {
            Ok(()) => {}
            Err(Refusal::Error(code, msg)) => return self.error(id, req, topic, code, &msg),
            Err(Refusal::Close) => {
                tracing::info!(conn = %id, "rate limit exceeded repeatedly: closing with 1008");
                self.hub.stats[self.index].error(ErrorCode::RateLimited);
                return self.close(id, 1008, "rate limit exceeded");
            }
        }
        match &*env.event {
            "subscribe" => match self.proxy_for(ProxyKind::Subscribe, topic) {
                Some(ep) if Pattern::parse(topic).is_ok() => {
                    let body = self.conn_request(id, Some(topic), None, None, env.data);
                    let step = Step::Subscribe(payload.into());
                    self.proxy_wait(id, ProxyKind::Subscribe, ep, step, body, Vec::new());
                }
                _ => self.client_subscribe(id, topic, req, env.data),
            },
            "rpc" if self.proxy_for(ProxyKind::Rpc, topic).is_some() => self.client_rpc(id, &env),
            "history" => self.client_history(id, topic, req, env.data),
            "presence" => self.client_presence(id, topic, req, false),
            "presence_stats" => self.client_presence(id, topic, req, true),
            "ack" => self.client_ack(id, topic, req, env.data),
            "info" => self.client_info(id, topic, req),
            "unsubscribe" => {
                if let Err(e) = Pattern::parse(topic) {
                    return self.error(id, req, topic, ErrorCode::BadRequest, &e.to_string());
                }
                self.unsubscribe(id, topic);
                if let Some(rid) = req {
                    self.enqueue(id, envelope::reply(rid, topic, None));
                }
            }
            "" => self.error(id, req, topic, ErrorCode::BadRequest, "event is empty"),
            event if RESERVED_EVENTS.contains(&event) => {
                let msg = format!("event {event:?} is reserved for the server");
                self.error(id, req, topic, ErrorCode::Forbidden, &msg)
            }
            event => {
                if let Err(e) = crate::proto::pattern::validate_topic(topic) {
                    return self.error(id, req, topic, ErrorCode::BadRequest, &e.to_string());
                }
                if let Some(ep) = self.proxy_for(ProxyKind::Publish, topic) {
                    let body = self.conn_request(id, Some(topic), Some(event), None, env.data);
                    let step = Step::Publish(payload.into());
                    return self.proxy_wait(id, ProxyKind::Publish, ep, step, body, Vec::new());
                }
                self.handle_event(id, &env, payload);
            }
        }
    }

    /// An RPC (`{"event":"rpc","topic":METHOD,"data":..,"id":N}`): the backend's answer is the
    /// reply.
    fn client_rpc(&mut self, id: ConnId, env: &envelope::Envelope<'_>) {
        let (method, req) = (&*env.topic, env.id);
        if let Err(e) = crate::proto::pattern::validate_topic(method) {
            return self.error(id, req, method, ErrorCode::BadRequest, &e.to_string());
        }
        if req.is_none() {
            let msg = "rpc needs a request id (the reply carries the answer)";
            return self.error(id, req, method, ErrorCode::BadRequest, msg);
        }
        let Some(ep) = self.proxy_for(ProxyKind::Rpc, method) else {
            return;
        };
        let body = self.conn_request(id, None, None, Some(method), env.data);
        let step = Step::Rpc {
            method: method.into(),
            req,
        };
        self.proxy_wait(id, ProxyKind::Rpc, ep, step, body, Vec::new());
    }

    /// A client event for a handler (the publish path): run it inline or queue it to the pool.
    pub(super) fn handle_event(
        &mut self,
        id: ConnId,
        env: &envelope::Envelope<'_>,
        payload: &[u8],
    ) {
        let (topic, req, event) = (&*env.topic, env.id, &*env.event);
        let Some((handler, blocking)) = self
            .hub
            .router
            .best_match(topic)
            .map(|r| (r.handler.clone(), r.blocking))
        else {
            let msg = format!("no handler for topic {}", crate::proto::error::quote(topic));
            return self.error(id, req, topic, ErrorCode::HandlerNotFound, &msg);
        };
        let Some(c) = self.conn_mut(id) else { return };
        let (user, remote) = (c.user.clone(), c.remote.addr());
        if blocking {
            let job = Job {
                handler,
                payload: Bytes::copy_from_slice(payload),
                conn: id,
                user,
                remote,
            };
            if let Err(e) = self.hub.submit(job) {
                self.error(id, req, topic, ErrorCode::Internal, &e);
            }
            return;
        }
        let msg = Message::new(topic, event, env.data, req)
            .with_exclude_sender(env.exclude_sender)
            .with_spread(env.spread);
        self.run_inline(id, &*handler, &msg, (user, remote));
    }

    /// Runs `handler` on the shard for connection `id` (its user and address given), then sends
    /// the automatic answer (`Context::finish`).
    pub(super) fn run_inline(
        &mut self,
        id: ConnId,
        handler: &dyn crate::proto::handler::Handler,
        msg: &Message<'_>,
        (user, remote): (Option<Arc<str>>, std::net::SocketAddr),
    ) {
        // A shard-local copy: no shared (atomic) count touched per message.
        let node = self.node.clone();
        let mut fx = Inline { st: self, conn: id };
        let mut ctx = Context {
            conn: id,
            node: &node,
            user,
            remote,
            topic: msg.topic(),
            id: msg.id(),
            replied: false,
            fx: &mut fx,
        };
        // A panicking handler fails its message, not the shard.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.call(&mut ctx, msg)))
                .unwrap_or_else(|_| Err(HandlerError::internal("handler panicked")));
        if let Some(code) = ctx.finish(result) {
            self.hub.stats[self.index].error(code);
        }
    }

    pub(super) fn conn_action(&mut self, id: ConnId, action: Action) {
        match action {
            Action::Send(frame) => self.enqueue(id, frame),
            Action::HandlerSend(frame) => {
                let nsp = self.sio_last_nsp(id);
                self.sio_in_nsp(id, nsp, |st| st.enqueue(id, frame));
            }
            Action::Publish {
                topic,
                frame,
                exclude,
            } => self.publish(&topic, frame, exclude),
            Action::Recovered {
                topic,
                frame,
                held,
                pos,
            } => {
                if let Some(p) = &pos {
                    self.answered_position(&topic, p);
                }
                let (frame, resumed) = self.sio_replay(id, &topic, frame, pos.as_ref());
                if held {
                    self.release_answered(id, &topic, frame, pos);
                } else if let Some(f) = frame {
                    self.enqueue(id, f);
                }
                if let Some(complete) = resumed {
                    self.sio_room_recovered(id, complete);
                }
            }
            Action::InboxSync(user, frames) => self.inbox_sync(id, &user, frames),
            // A handler on the pool: a Socket.IO connection's join counts for the namespace of
            // its latest event (`sio_rooms`).
            Action::Subscribe(p) => {
                let nsp = self.sio_last_nsp(id);
                let _ = self.sio_in_nsp(id, nsp, |st| st.subscribe(id, &p));
            }
            Action::Unsubscribe(p) => {
                let nsp = self.sio_last_nsp(id);
                self.sio_in_nsp(id, nsp, |st| st.unsubscribe(id, &p));
            }
            Action::CountError(code) => self.hub.stats[self.index].error(code),
            Action::Proxied(answer) => self.proxied_answer(id, *answer),
            Action::SioSession {
                nsp,
                resume,
                session,
            } => self.sio_session_answer(id, nsp, *resume, session),
        }
    }
}

/// Effects of an inline handler: applied to the shard at once.
struct Inline<'a> {
    st: &'a mut ShardState,
    conn: ConnId,
}

impl Effects for Inline<'_> {
    fn to_conn(&mut self, frame: Bytes) {
        self.st.enqueue(self.conn, frame);
    }
    fn publish(&mut self, p: Outgoing<'_>) -> Result<bool, HandlerError> {
        if let Some(r) = self.st.publish_stored(&p, self.conn) {
            if r.is_ok() {
                self.st
                    .webhook_publication(self.conn, p.topic, p.event, p.data);
            }
            return r;
        }
        self.st
            .webhook_publication(self.conn, p.topic, p.event, p.data);
        let frame = envelope::publication(p.topic, p.event, p.data);
        let exclude = p.exclude_sender.then_some(self.conn);
        self.st.publish(p.topic, frame, exclude);
        self.st.hub.cluster_down().map_or(Ok(false), Err)
    }
    fn subscribe(&mut self, pattern: &str) -> HandlerResult {
        self.st.subscribe(self.conn, pattern).map(drop)
    }
    fn unsubscribe(&mut self, pattern: &str) {
        self.st.unsubscribe(self.conn, pattern);
    }
}
