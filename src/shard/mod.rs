//! A shard: the connections one core owns, their subscriptions, and the replicated interest table.
//! All state is single-threaded (`RefCell`, never borrowed across an `.await`); other threads reach
//! a shard only through its [`Inbox`](crate::shard::inbox::Inbox).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;
use tokio::sync::Notify;

use crate::proto::envelope;
use crate::proto::error::HandlerError;
use crate::proto::pattern::Pattern;
use crate::proto::registry::{Interest, Registry};
use crate::proto::stats::ShardStats;
use crate::runtime::hub::HubShared;
use crate::shard::inbox::ShardMsg;
use crate::ConnId;

mod dispatch;
pub(crate) mod inbox;
mod state;

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
    /// What the connection may subscribe and publish to.
    perms: crate::policy::security::Permissions,
    /// Its message rate limiter, when limits are on.
    limiter: Option<crate::policy::ratelimit::ConnLimiter>,
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
            ShardMsg::Interest {
                pattern,
                shard,
                add,
                ack,
            } => {
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
    pub(crate) fn register(
        &self,
        fd: RawFd,
        remote: SocketAddr,
        admitted: crate::policy::guard::Admitted,
        sse: bool,
    ) -> ConnId {
        let crate::policy::guard::Admitted {
            user,
            permissions,
            limiter,
        } = admitted;
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
            perms: permissions,
            limiter,
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
        self.stats()
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
        self.stats()
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if st.shutting_down && st.conns.is_empty() {
            self.drained.notify_one();
        }
    }

    /// The reader saw traffic: the peer is alive.
    pub(crate) fn touch(&self, id: ConnId) {
        let mut st = self.st.borrow_mut();
        let now = st.now;
        if let Some(c) = st.conn_mut(id) {
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
    pub(crate) fn poll_outbound(
        &self,
        id: ConnId,
        cx: &mut TaskCx<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<Outbound> {
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
                crate::proto::sse::render(&f, buf);
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

    /// Whether frames are queued for the connection.
    pub(crate) fn has_outbound(&self, id: ConnId) -> bool {
        self.st
            .borrow_mut()
            .conn_mut(id)
            .is_some_and(|c| !c.out.is_empty())
    }

    /// Handles one complete text message on a pub/sub connection.
    pub(crate) fn dispatch(&self, id: ConnId, payload: &[u8]) {
        self.st.borrow_mut().dispatch(id, payload);
    }

    /// Benchmarks only: registers a connection without a socket (fd -1: only used to shut down
    /// stuck closes).
    pub(crate) fn bench_register(&self, admitted: crate::policy::guard::Admitted) -> ConnId {
        self.register(-1, ([127, 0, 0, 1], 0).into(), admitted, false)
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
