//! A shard: the connections one core owns, their subscriptions, and the replicated interest table.
//! All state is single-threaded (`RefCell`, never borrowed across an `.await`); other threads reach
//! a shard only through its [`Inbox`](crate::inbox::Inbox).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;
use tokio::sync::Notify;

use crate::api::{ApiOp, ApiReply};
use crate::envelope;
use crate::error::{ErrorCode, HandlerError, HandlerResult};
use crate::handler::{Context, Effects, Message};
use crate::hub::HubShared;
use crate::inbox::{Action, ShardMsg};
use crate::pattern::Pattern;
use crate::pool::Job;
use crate::registry::{Interest, Registry, Subscribed, Unsubscribed};
use crate::stats::ShardStats;
use crate::ConnId;

/// Interval of SSE heartbeat comments.
const SSE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(15);

/// What a connection does with its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnKind {
    /// Envelope protocol: subscribe, unsubscribe, handlers.
    PubSub,
    /// Echoes every message (conformance route).
    Echo,
}

/// One connection's shard-side state: its outbound queue and its subscriptions.
pub(crate) struct ConnEntry {
    id: ConnId,
    /// Valid while the entry exists: the reader and writer tasks hold the socket open until they
    /// both finish, and the entry is removed only then.
    fd: RawFd,
    remote: SocketAddr,
    user: Option<Arc<str>>,
    /// A Server-Sent Events stream: frames are rendered as `data:` lines by the writer.
    sse: bool,
    out: VecDeque<Bytes>,
    queued: usize,
    writer: Option<Waker>,
    /// When the connection began closing; nothing is queued after its close frame.
    closing: Option<Instant>,
    forced: bool,
    last_seen: Instant,
    ping_sent: bool,
    subs: Vec<Box<str>>,
    /// Last publication delivered, to send each publication once per connection even when
    /// several of its patterns match.
    stamp: u64,
    /// Tasks (reader, writer) still using the entry.
    tasks: u8,
}

/// A batch for the writer.
pub(crate) enum Outbound {
    /// Frames copied into the buffer; `last` when the connection finishes after writing them.
    Batch { frames: u64, last: bool },
    /// Nothing more will ever be written.
    Done,
}

struct PendingInterest {
    remaining: usize,
    waiters: Vec<(ConnId, u64, Box<str>)>,
    wakers: Vec<Waker>,
}

/// The mutable state of a shard.
pub(crate) struct ShardState {
    index: usize,
    hub: Arc<HubShared>,
    conns: Slab<ConnEntry>,
    /// Local connections of each authenticated user.
    users: HashMap<Arc<str>, Vec<ConnId>>,
    registry: Registry,
    interest: Interest,
    pending: HashMap<u64, PendingInterest>,
    pending_by_pattern: HashMap<Box<str>, u64>,
    next_token: u64,
    generation: u32,
    pub_seq: u64,
    now: Instant,
    shutting_down: bool,
}

/// A shard, shared by its tasks through `Rc`.
pub(crate) struct Shard {
    pub index: usize,
    pub hub: Arc<HubShared>,
    pub st: RefCell<ShardState>,
    pub now: Cell<Instant>,
    pub stop_accept: Notify,
    pub drained: Notify,
}

impl Shard {
    pub(crate) fn new(index: usize, hub: Arc<HubShared>) -> Self {
        let now = Instant::now();
        Shard {
            index,
            st: RefCell::new(ShardState {
                index,
                hub: hub.clone(),
                conns: Slab::new(),
                users: HashMap::new(),
                registry: Registry::new(),
                interest: Interest::new(),
                pending: HashMap::new(),
                pending_by_pattern: HashMap::new(),
                next_token: 0,
                generation: 0,
                pub_seq: 0,
                now,
                shutting_down: false,
            }),
            hub,
            now: Cell::new(now),
            stop_accept: Notify::new(),
            drained: Notify::new(),
        }
    }

    pub(crate) fn stats(&self) -> &ShardStats {
        &self.hub.stats[self.index]
    }

    /// Applies one inbox message; returns true on `Shutdown`.
    pub(crate) fn handle_msg(&self, msg: ShardMsg) -> bool {
        let mut st = self.st.borrow_mut();
        match msg {
            ShardMsg::Publish { topic, frame } => {
                st.deliver_local(&topic, &frame);
            }
            ShardMsg::Interest { pattern, shard, add, ack } => {
                if let Ok(p) = Pattern::parse(&pattern) {
                    if add {
                        st.interest.add(p, shard);
                    } else {
                        st.interest.remove(p, shard);
                    }
                }
                if let Some(token) = ack {
                    st.hub.inboxes[shard].push(ShardMsg::InterestAck(token));
                }
            }
            ShardMsg::InterestAck(token) => st.interest_acked(token),
            ShardMsg::Conn(id, action) => st.conn_action(id, action),
            ShardMsg::Api(op, reply) => {
                let _ = reply.send(st.api(op));
            }
            ShardMsg::Shutdown => {
                st.shutting_down = true;
                let ids: Vec<ConnId> = st.conns.iter().map(|(_, c)| c.id).collect();
                for id in ids {
                    st.close(id, 1001, "server shutting down");
                }
                let empty = st.conns.is_empty();
                drop(st);
                self.stop_accept.notify_one();
                if empty {
                    self.drained.notify_one();
                }
                return true;
            }
        }
        false
    }

    /// Updates the coarse clock; pings quiet connections, closes idle ones, cuts stuck closes.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.now.set(now);
        let mut st = self.st.borrow_mut();
        st.now = now;
        let cfg = &st.hub.config;
        let (ping, idle, close_to) = (cfg.ping_interval, cfg.idle_timeout, cfg.close_timeout);
        let mut idle_ids = Vec::new();
        for (_, c) in st.conns.iter_mut() {
            if let Some(since) = c.closing {
                if !c.forced && now.duration_since(since) >= close_to {
                    c.forced = true;
                    crate::transport::shutdown_fd(c.fd, libc::SHUT_RDWR);
                }
                continue;
            }
            let quiet = now.duration_since(c.last_seen);
            if c.sse {
                // SSE clients never send: no idle timeout, a heartbeat comment instead.
                if quiet >= SSE_HEARTBEAT {
                    c.last_seen = now;
                    let frame = envelope::raw_frame(9, b"");
                    c.queued += frame.len();
                    c.out.push_back(frame);
                    if let Some(w) = c.writer.take() {
                        w.wake();
                    }
                }
                continue;
            }
            if quiet >= idle {
                idle_ids.push(c.id);
            } else if quiet >= ping && !c.ping_sent {
                c.ping_sent = true;
                let frame = envelope::raw_frame(9, b"");
                c.queued += frame.len();
                c.out.push_back(frame);
                if let Some(w) = c.writer.take() {
                    w.wake();
                }
            }
        }
        for id in idle_ids {
            tracing::debug!(conn = %id, "idle timeout");
            st.close(id, 1001, "idle timeout");
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.st.borrow().shutting_down
    }

    /// Registers a freshly upgraded connection (or SSE stream) of `user`.
    pub(crate) fn register(&self, fd: RawFd, remote: SocketAddr, user: Option<Arc<str>>, sse: bool) -> ConnId {
        let mut st = self.st.borrow_mut();
        st.generation = st.generation.wrapping_add(1);
        let (gen, now) = (st.generation, st.now);
        let id = ConnId::new(self.index, st.conns.vacant_key() as u32, gen);
        if let Some(u) = &user {
            st.users.entry(u.clone()).or_default().push(id);
        }
        let entry = st.conns.vacant_entry();
        entry.insert(ConnEntry {
            id,
            fd,
            remote,
            user,
            sse,
            out: VecDeque::new(),
            queued: 0,
            writer: None,
            closing: None,
            forced: false,
            last_seen: now,
            ping_sent: false,
            subs: Vec::new(),
            stamp: 0,
            tasks: 2,
        });
        self.stats().connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id
    }

    /// A reader or writer task is done with the connection; the last one removes it.
    pub(crate) fn task_done(&self, id: ConnId) {
        let mut st = self.st.borrow_mut();
        let Some(c) = st.conn_mut(id) else { return };
        c.tasks -= 1;
        if c.tasks > 0 {
            return;
        }
        st.begin_close(id);
        if let Some(c) = st.conn_mut(id) {
            if let Some(w) = c.writer.take() {
                w.wake();
            }
        }
        let entry = st.conns.remove(id.slot() as usize);
        if let Some(u) = entry.user {
            if let Some(ids) = st.users.get_mut(&u) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    st.users.remove(&u);
                }
            }
        }
        self.stats().connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if st.shutting_down && st.conns.is_empty() {
            self.drained.notify_one();
        }
    }

    /// The reader saw traffic: the peer is alive.
    pub(crate) fn touch(&self, id: ConnId) {
        let now = self.now.get();
        if let Some(c) = self.st.borrow_mut().conn_mut(id) {
            c.last_seen = now;
            c.ping_sent = false;
        }
    }

    /// Queues a frame to one connection (pong, echo, reply).
    pub(crate) fn enqueue(&self, id: ConnId, frame: Bytes) {
        self.st.borrow_mut().enqueue(id, frame);
    }

    /// Starts a close handshake with `code`.
    pub(crate) fn close(&self, id: ConnId, code: u16, reason: &str) {
        self.st.borrow_mut().close(id, code, reason);
    }

    /// Queues a close frame the protocol obliges us to send (echo of the peer's close).
    pub(crate) fn close_with_frame(&self, id: ConnId, frame: Bytes) {
        self.st.borrow_mut().close_frame(id, frame);
    }

    /// The reader stopped: no more input will come. The writer drains what is queued and ends.
    pub(crate) fn reader_done(&self, id: ConnId) {
        let mut st = self.st.borrow_mut();
        st.begin_close(id);
        if let Some(c) = st.conn_mut(id) {
            if let Some(w) = c.writer.take() {
                w.wake();
            }
        }
    }

    /// Fills `buf` with queued frames for the writer, or parks it.
    pub(crate) fn poll_outbound(&self, id: ConnId, cx: &mut TaskCx<'_>, buf: &mut Vec<u8>) -> Poll<Outbound> {
        let mut st = self.st.borrow_mut();
        let Some(c) = st.conn_mut(id) else {
            return Poll::Ready(Outbound::Done);
        };
        if c.out.is_empty() {
            if c.closing.is_some() {
                return Poll::Ready(Outbound::Done);
            }
            c.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut frames = 0;
        while let Some(f) = c.out.pop_front() {
            if c.sse {
                crate::sse::render(&f, buf);
            } else {
                buf.extend_from_slice(&f);
            }
            c.queued -= f.len();
            frames += 1;
            if buf.len() >= 256 * 1024 {
                break;
            }
        }
        let last = c.out.is_empty() && c.closing.is_some();
        Poll::Ready(Outbound::Batch { frames, last })
    }

    /// Subscribes a connection from the server side (SSE streams); returns the interest token to
    /// wait for with [`poll_interest_settled`](Self::poll_interest_settled), if any.
    pub(crate) fn subscribe(&self, id: ConnId, pattern: &str) -> Result<Option<u64>, HandlerError> {
        self.st.borrow_mut().subscribe(id, pattern)
    }

    /// Ready once every other shard has acknowledged the interest change `token`.
    pub(crate) fn poll_interest_settled(&self, token: u64, cx: &mut TaskCx<'_>) -> Poll<()> {
        match self.st.borrow_mut().pending.get_mut(&token) {
            Some(p) => {
                p.wakers.push(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(()),
        }
    }

    /// Handles one complete text message on a pub/sub connection.
    pub(crate) fn dispatch(&self, id: ConnId, payload: &[u8]) {
        self.st.borrow_mut().dispatch(id, payload);
    }

    /// Benchmarks only: registers a connection without a socket (fd -1: only used to shut down
    /// stuck closes).
    pub(crate) fn bench_register(&self) -> ConnId {
        self.register(-1, ([127, 0, 0, 1], 0).into(), None, false)
    }

    /// Benchmarks only: subscribes through the real path; false if refused.
    pub(crate) fn bench_subscribe(&self, id: ConnId, pattern: &str) -> bool {
        self.st.borrow_mut().subscribe(id, pattern).is_ok()
    }

    /// Benchmarks only: unsubscribes through the real path.
    pub(crate) fn bench_unsubscribe(&self, id: ConnId, pattern: &str) {
        self.st.borrow_mut().unsubscribe(id, pattern);
    }

    /// Benchmarks only: [`ShardState::publish`] (interest lookup, remote inboxes, local fan-out).
    pub(crate) fn bench_publish(&self, topic: &str, frame: Bytes) {
        self.st.borrow_mut().publish(topic, frame);
    }

    /// Benchmarks only: [`ShardState::deliver_local`].
    pub(crate) fn bench_deliver_local(&self, topic: &str, frame: &Bytes) {
        self.st.borrow_mut().deliver_local(topic, frame);
    }

    /// Benchmarks only: empties every outbound queue as writers would (capacity kept), parks a
    /// writer with `waker` on each connection when given; returns how many frames were queued.
    pub(crate) fn bench_drain(&self, waker: Option<&Waker>) -> usize {
        let mut st = self.st.borrow_mut();
        let mut frames = 0;
        for (_, c) in st.conns.iter_mut() {
            frames += c.out.len();
            c.out.clear();
            c.queued = 0;
            c.writer = waker.cloned();
        }
        frames
    }
}

impl ShardState {
    fn conn_mut(&mut self, id: ConnId) -> Option<&mut ConnEntry> {
        self.conns.get_mut(id.slot() as usize).filter(|c| c.id == id)
    }

    fn wake(c: &mut ConnEntry) {
        if let Some(w) = c.writer.take() {
            w.wake();
        }
    }

    /// Queues to one connection; a queue over its bound makes it a slow consumer.
    fn enqueue(&mut self, id: ConnId, frame: Bytes) {
        let limit = self.hub.config.outbound_queue;
        let Some(c) = self.conn_mut(id) else { return };
        if c.closing.is_some() {
            return;
        }
        if c.queued + frame.len() > limit {
            self.slow_consumer(id);
            return;
        }
        c.queued += frame.len();
        c.out.push_back(frame);
        Self::wake(c);
    }

    fn slow_consumer(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id) else { return };
        tracing::warn!(conn = %id, remote = %c.remote, queued = c.queued, "slow consumer: outbound queue full, closing with 1008");
        c.out.clear();
        c.queued = 0;
        self.hub.stats[self.index].slow_consumers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.close(id, 1008, "slow consumer");
    }

    fn close(&mut self, id: ConnId, code: u16, reason: &str) {
        self.close_frame(id, envelope::close_frame(code, reason));
    }

    fn close_frame(&mut self, id: ConnId, frame: Bytes) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.closing.is_some() {
            return;
        }
        c.queued += frame.len();
        c.out.push_back(frame);
        Self::wake(c);
        self.begin_close(id);
    }

    /// Marks the connection closing and drops its subscriptions so nothing more is delivered.
    fn begin_close(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.conn_mut(id) else { return };
        if c.closing.is_none() {
            c.closing = Some(now);
        }
        let subs = std::mem::take(&mut c.subs);
        for p in subs {
            self.drop_subscription(id, &p);
        }
    }

    fn drop_subscription(&mut self, id: ConnId, pattern: &str) {
        let Ok(p) = Pattern::parse(pattern) else { return };
        if self.registry.unsubscribe(p, id.slot()) == Unsubscribed::Last {
            self.broadcast_interest(pattern, false, None);
        }
    }

    fn broadcast_interest(&self, pattern: &str, add: bool, ack: Option<u64>) {
        if self.hub.shards < 2 {
            return;
        }
        let pattern: Arc<str> = pattern.into();
        for (i, inbox) in self.hub.inboxes.iter().enumerate() {
            if i != self.index {
                inbox.push(ShardMsg::Interest {
                    pattern: pattern.clone(),
                    shard: self.index,
                    add,
                    ack,
                });
            }
        }
    }

    fn interest_acked(&mut self, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else { return };
        p.remaining -= 1;
        if p.remaining > 0 {
            return;
        }
        let Some(p) = self.pending.remove(&token) else { return };
        self.pending_by_pattern.retain(|_, t| *t != token);
        p.wakers.into_iter().for_each(Waker::wake);
        for (conn, rid, topic) in p.waiters {
            self.enqueue(conn, envelope::reply(rid, &topic, None));
        }
    }

    /// Delivers a publication to this shard's subscribers of `topic`, once per connection.
    fn deliver_local(&mut self, topic: &str, frame: &Bytes) -> usize {
        self.pub_seq += 1;
        let mut delivered = 0;
        let seq = self.pub_seq;
        let limit = self.hub.config.outbound_queue;
        let mut slow: Vec<ConnId> = Vec::new();
        let conns = &mut self.conns;
        self.registry.for_each_set(topic, |set| {
            for &slot in set {
                let Some(c) = conns.get_mut(slot as usize) else { continue };
                if c.stamp == seq {
                    continue;
                }
                c.stamp = seq;
                if c.queued + frame.len() > limit {
                    slow.push(c.id);
                    continue;
                }
                c.queued += frame.len();
                c.out.push_back(frame.clone());
                Self::wake(c);
                delivered += 1;
            }
        });
        for id in slow {
            self.slow_consumer(id);
        }
        delivered
    }

    /// Publishes to every shard interested in `topic`, then locally.
    fn publish(&mut self, topic: &str, frame: Bytes) {
        let mut mask = self.interest.shards_for(topic) & !(1u64 << self.index);
        if mask != 0 {
            let t: Arc<str> = topic.into();
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                self.hub.inboxes[i].push(ShardMsg::Publish {
                    topic: t.clone(),
                    frame: frame.clone(),
                });
            }
        }
        self.deliver_local(topic, &frame);
    }

    /// Serves one HTTP API operation for this shard's connections.
    fn api(&mut self, op: ApiOp) -> ApiReply {
        match op {
            ApiOp::Publish { topic, frame } => ApiReply::Count(self.deliver_local(&topic, &frame)),
            ApiOp::Broadcast(frame) => {
                let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
                ids.iter().for_each(|id| self.enqueue(*id, frame.clone()));
                ApiReply::Count(ids.len())
            }
            ApiOp::Send(req) => {
                let mut n = 0;
                for user in &req.users {
                    let Some(ids) = self.users.get(user.as_str()).cloned() else { continue };
                    let topic = req.topic.clone().unwrap_or_else(|| format!("user:{user}"));
                    let frame = envelope::publication(&topic, &req.event, req.data.as_ref().map(|d| d.get().as_bytes()));
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
                    self.close(*id, crate::api::CLOSE_DISCONNECTED, "disconnected by server");
                }
                ApiReply::Count(ids.len())
            }
            ApiOp::Online => {
                let list: Vec<(Arc<str>, usize)> = self.users.iter().map(|(u, ids)| (u.clone(), ids.len())).collect();
                let named: usize = list.iter().map(|(_, n)| n).sum();
                ApiReply::Online(list, self.conns.len() - named)
            }
        }
    }

    /// Subscribes; returns the interest token to wait for when other shards must learn first.
    fn subscribe(&mut self, id: ConnId, pattern: &str) -> Result<Option<u64>, HandlerError> {
        let p = Pattern::parse(pattern).map_err(|e| HandlerError::bad_request(e.to_string()))?;
        let max = self.hub.config.max_subscriptions;
        let Some(c) = self.conn_mut(id) else { return Ok(None) };
        if c.closing.is_some() {
            return Ok(None);
        }
        if c.subs.iter().any(|s| &**s == pattern) {
            return Ok(self.pending_by_pattern.get(pattern).copied());
        }
        if c.subs.len() >= max {
            return Err(HandlerError::new(
                ErrorCode::Forbidden,
                format!("subscription limit reached ({max})"),
            ));
        }
        c.subs.push(pattern.into());
        if self.registry.subscribe(p, id.slot()) == Subscribed::First && self.hub.shards > 1 {
            let token = self.next_token;
            self.next_token += 1;
            self.broadcast_interest(pattern, true, Some(token));
            self.pending.insert(
                token,
                PendingInterest {
                    remaining: self.hub.shards - 1,
                    waiters: Vec::new(),
                    wakers: Vec::new(),
                },
            );
            self.pending_by_pattern.insert(pattern.into(), token);
            return Ok(Some(token));
        }
        Ok(self.pending_by_pattern.get(pattern).copied())
    }

    fn unsubscribe(&mut self, id: ConnId, pattern: &str) {
        let Some(c) = self.conn_mut(id) else { return };
        let before = c.subs.len();
        c.subs.retain(|s| &**s != pattern);
        if c.subs.len() != before {
            self.drop_subscription(id, pattern);
        }
    }

    fn error(&mut self, id: ConnId, req: Option<u64>, topic: &str, code: ErrorCode, msg: &str) {
        self.hub.stats[self.index].error(code);
        self.enqueue(id, envelope::error(req, topic, code, msg));
    }

    fn dispatch(&mut self, id: ConnId, payload: &[u8]) {
        let env = match envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => return self.error(id, e.id, "", ErrorCode::BadRequest, &e.message),
        };
        let (topic, req) = (&*env.topic, env.id);
        match &*env.event {
            "subscribe" => match self.subscribe(id, topic) {
                Err(e) => self.error(id, req, topic, e.code, &e.message),
                Ok(Some(token)) => {
                    if let (Some(rid), Some(p)) = (req, self.pending.get_mut(&token)) {
                        p.waiters.push((id, rid, topic.into()));
                    }
                }
                Ok(None) => {
                    if let Some(rid) = req {
                        self.enqueue(id, envelope::reply(rid, topic, None));
                    }
                }
            },
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
            event => {
                if let Err(e) = crate::pattern::validate_topic(topic) {
                    return self.error(id, req, topic, ErrorCode::BadRequest, &e.to_string());
                }
                let Some((handler, blocking)) = self.hub.router.best_match(topic).map(|r| (r.handler.clone(), r.blocking)) else {
                    let msg = format!("no handler for topic '{topic}'");
                    return self.error(id, req, topic, ErrorCode::HandlerNotFound, &msg);
                };
                let Some(c) = self.conn_mut(id) else { return };
                let (user, remote) = (c.user.clone(), c.remote);
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
                let msg = Message::new(topic, event, env.data, req);
                let mut fx = Inline { st: self, conn: id };
                let mut ctx = Context {
                    conn: id,
                    user,
                    remote,
                    topic,
                    id: req,
                    replied: false,
                    fx: &mut fx,
                };
                // A panicking handler fails its message, not the shard.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.call(&mut ctx, &msg)))
                    .unwrap_or_else(|_| Err(HandlerError::internal("handler panicked")));
                if let Some(code) = ctx.finish(result) {
                    self.hub.stats[self.index].error(code);
                }
            }
        }
    }

    fn conn_action(&mut self, id: ConnId, action: Action) {
        match action {
            Action::Send(frame) => self.enqueue(id, frame),
            Action::Publish { topic, frame } => self.publish(&topic, frame),
            Action::Subscribe(p) => {
                let _ = self.subscribe(id, &p);
            }
            Action::Unsubscribe(p) => self.unsubscribe(id, &p),
            Action::CountError(code) => self.hub.stats[self.index].error(code),
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
    fn publish(&mut self, topic: &str, frame: Bytes) {
        self.st.publish(topic, frame);
    }
    fn subscribe(&mut self, pattern: &str) -> HandlerResult {
        self.st.subscribe(self.conn, pattern).map(drop)
    }
    fn unsubscribe(&mut self, pattern: &str) {
        self.st.unsubscribe(self.conn, pattern);
    }
}

/// Publishes from outside any connection (library handle): every shard delivers locally.
pub(crate) fn publish_external(hub: &HubShared, topic: &str, frame: Bytes) {
    let t: Arc<str> = topic.into();
    for inbox in hub.inboxes.iter() {
        inbox.push(ShardMsg::Publish {
            topic: t.clone(),
            frame: frame.clone(),
        });
    }
}

