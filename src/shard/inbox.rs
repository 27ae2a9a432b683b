//! A shard's inbox: a lock-free MPMC queue plus a wake-up flag, so producers on other threads wake
//! the shard's event loop at most once per batch (one `eventfd` write) and the loop drains
//! everything queued in one go.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use serde_json::value::RawValue;

use super::jobs::StoreJob;
use crate::ConnId;

pub(crate) use super::jobs::{ApiReply, InboxFrames, PresenceList};

/// What a connection's owner shard is asked to do on behalf of a handler on the pool.
#[derive(Debug)]
pub(crate) enum Action {
    /// Queue this frame to the connection.
    Send(Bytes),
    /// Queue this frame, a pool handler's send or reply, to the connection (a Socket.IO one
    /// emits it on the namespace of its latest event, as an inline handler's goes).
    HandlerSend(Bytes),
    /// Publish this frame (fan out from the connection's shard), skipping `exclude`.
    Publish {
        topic: Arc<str>,
        frame: Bytes,
        exclude: Option<ConnId>,
    },
    /// The store answered a subscribe to a topic with history: queue the reply (if any) and,
    /// if that subscribe `held` the topic's publications back, end its hold.
    Recovered {
        topic: Arc<str>,
        frame: Option<Bytes>,
        held: bool,
        /// The stream's position the answer covers (epoch, top offset), when known.
        pos: Option<(Arc<str>, u64)>,
    },
    /// The unacknowledged durable messages of the connection's user, in offset order: queue
    /// them and resume live durable deliveries to the connection.
    InboxSync(Arc<str>, InboxFrames),
    /// Subscribe the connection.
    Subscribe(Box<str>),
    /// Unsubscribe the connection.
    Unsubscribe(Box<str>),
    /// Count a handler error on the connection's shard.
    CountError(crate::ErrorCode),
    /// The backend answered a proxy call of the connection (see `shard::proxy`).
    Proxied(Box<super::proxy::ProxyAnswer>),
    /// The store's answer to a Socket.IO resume (`StoreJob::SioTake`): the session, if kept.
    SioSession {
        nsp: usize,
        resume: Box<crate::proto::socketio_recover::Resume>,
        session: Option<Bytes>,
    },
}

/// A cross-shard operation requested through the HTTP API.
#[derive(Debug)]
pub(crate) enum ApiOp {
    /// Deliver a publication (one frame per topic) to local subscribers, each once, but not
    /// to `exclude`; reply with the count.
    Publish {
        frames: Arc<[(Arc<str>, Bytes)]>,
        exclude: Option<ConnId>,
    },
    /// Send `{topic, event, data}` to these users' connections (topic defaults to `user:<id>`).
    Send(Arc<SendReq>),
    /// Send a frame to every connection.
    Broadcast(Bytes),
    /// Close every connection of a user with 4000.
    Disconnect(Arc<str>),
    /// List local users and their connection counts.
    Online,
    /// List the patterns with local subscribers and their counts.
    Topics,
    /// Deliver a stored publication (topic with history) and reply with the count.
    Stored(StoredPub),
    /// Write a durable message to the user's local connections; reply with the count.
    Durable {
        user: Arc<str>,
        offset: u64,
        frame: Bytes,
    },
    /// Subscribe (`add`) or unsubscribe the matching connections, silently.
    Subscription {
        target: Target,
        topic: Arc<str>,
        add: bool,
    },
    /// List the local connections subscribed to exactly this topic.
    Presence(Arc<str>),
    /// Nothing: answered after every earlier message of the inbox was applied.
    Barrier,
}

/// Which connections a server-side operation applies to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Every connection of the user.
    User(Arc<str>),
    /// One connection.
    Client(ConnId),
}

/// A publication on a topic with history, as the store thread hands it to the shards.
#[derive(Debug, Clone)]
pub(crate) struct StoredPub {
    pub topic: Arc<str>,
    pub frame: Bytes,
    pub exclude: Option<ConnId>,
    /// Its stream's epoch and its offset.
    pub epoch: Arc<str>,
    pub offset: u64,
}

impl StoredPub {
    /// A publication just appended at `pos`, its frame encoded once (with the offset) for
    /// every subscriber.
    pub(crate) fn appended(
        topic: Arc<str>,
        event: &str,
        data: Option<&[u8]>,
        exclude: Option<ConnId>,
        pos: crate::store::StreamPos,
    ) -> Self {
        let frame = crate::proto::envelope::stored_publication(&topic, event, data, pos.offset);
        StoredPub {
            topic,
            frame,
            exclude,
            epoch: pos.epoch,
            offset: pos.offset,
        }
    }
}

/// A publication received from another node, in the batch the cluster thread hands a shard
/// once per read of a Redis subscriber connection ([`ShardMsg::Remote`]).
#[derive(Debug, Clone)]
pub(crate) enum RemotePub {
    /// One topic, its frame as the origin encoded it.
    One { topic: Arc<str>, frame: Bytes },
    /// One publication on several topics: delivered once per connection.
    Many(Arc<[(Arc<str>, Bytes)]>),
    /// A publication on a topic with history.
    Stored(StoredPub),
}

/// Close code for connections ended by `/api/v1/disconnect` (4000-4999 are application codes).
pub const CLOSE_DISCONNECTED: u16 = 4000;

/// A validated `send` request.
#[derive(Debug)]
pub(crate) struct SendReq {
    pub users: Vec<String>,
    pub topic: Option<String>,
    pub event: String,
    pub data: Option<Box<RawValue>>,
}

/// Messages between shards, and from the pool, the API thread and the outside to a shard.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// A publication to deliver to this shard's local subscribers (but `exclude`).
    Publish {
        topic: Arc<str>,
        frame: Bytes,
        exclude: Option<ConnId>,
    },
    /// Publications on topics with history, in offset order, from the store thread (or from
    /// the topic's owner shard: see `shard::history`).
    Stored(Arc<[StoredPub]>),
    /// Memory store, one node: a publication, subscribe answer or history read for a topic
    /// this shard owns (see `shard::history`); always a `Publish`, `Subscribe` or `History`.
    History(StoreJob),
    /// Publications from other nodes, in the order Redis delivered them: one message per shard
    /// per read of a subscriber connection, so a burst costs one push and one wake-up.
    Remote(Vec<RemotePub>),
    /// Durable messages that left their inboxes (acked, expired, dropped): stop retrying them.
    InboxGone(Arc<[(Arc<str>, u64)]>),
    /// The cluster's control channel came back: ask the store for the inboxes of every local
    /// user (durable messages sent meanwhile may not have reached this node).
    ResyncInboxes,
    /// The unacknowledged messages of a local user, for [`ResyncInboxes`](Self::ResyncInboxes):
    /// those this shard does not know yet are delivered.
    InboxResync(Arc<str>, InboxFrames),
    /// The store's latest (epoch, offset) of topics this shard asked about (the position
    /// check: see `shard::position`); topics the store could not read are left out.
    Positions(Vec<(Arc<str>, Arc<str>, u64)>),
    /// Shard `shard` gained (`add`) or lost its first/last subscriber to `pattern`. With `ack`,
    /// the receiver answers `InterestAck(ack)` to `shard` once the table is updated.
    Interest {
        pattern: Arc<str>,
        shard: usize,
        add: bool,
        ack: Option<u64>,
    },
    /// Another shard applied the interest change with this token.
    InterestAck(u64),
    /// Act on one of this shard's connections.
    Conn(ConnId, Action),
    /// An HTTP API operation; the shard answers on the channel.
    Api(ApiOp, tokio::sync::oneshot::Sender<ApiReply>),
    /// The response to an HTTP request of this connection, served by the API thread.
    HttpResponse(ConnId, Bytes),
    /// Durable messages of one commit sent through `shard::fastsend`: deliver them, add the
    /// counts; the last shard has the sends answered.
    Durables(Arc<super::durable_run::DurableRun>),
    /// Every shard has counted these durable messages: answer the sends of this shard's
    /// connections.
    DurablesCounted(Arc<super::durable_run::DurableRun>),
    /// The JSON answer (status, body) to this connection's HTTP request, from the store thread
    /// (a durable send it could not store).
    ApiAnswer(ConnId, u16, Bytes),
    /// The result (status, JSON) of send `u32` of the durable-send batch this connection's
    /// request is (`shard::fastbatch`), or of its run of pipelined sends (`shard::pipeline`),
    /// from the store thread: a send it could not store.
    BatchResult(ConnId, u32, u16, Bytes),
    /// Socket.IO long-polling: a request for a session this shard owns, or its answer.
    Poll(Box<PollMsg>),
    /// A socket (or a reservation for one) from an embedding server (the `axum` feature).
    #[cfg(feature = "axum")]
    Adopt(Box<crate::shard::Adoption>),
    /// Begin the graceful shutdown: answer 503 to new clients for the drain delay, then stop
    /// accepting, close every connection with 1001, drain, exit.
    Shutdown,
}

/// One shard's inbox.
pub(crate) struct Inbox {
    queue: SegQueue<ShardMsg>,
    scheduled: AtomicBool,
    /// Readable when a wake-up is pending. Owned by the inbox (closed on drop, when no producer
    /// can be left), so a producer never writes to a descriptor the loop already closed.
    eventfd: RawFd,
}

impl Default for Inbox {
    fn default() -> Self {
        // SAFETY: plain syscall; the descriptor is owned by the inbox from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        Self {
            queue: SegQueue::new(),
            scheduled: AtomicBool::new(false),
            eventfd: fd,
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if self.eventfd >= 0 {
            // SAFETY: the inbox owns the descriptor and nothing else can use it any more.
            unsafe { libc::close(self.eventfd) };
        }
    }
}

impl Inbox {
    /// Queues a message and wakes the shard unless a wake-up is already pending.
    pub(crate) fn push(&self, msg: ShardMsg) {
        self.queue.push(msg);
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            let fd = self.eventfd;
            if fd >= 0 {
                let one: u64 = 1;
                // SAFETY: writes 8 bytes from a live u64 to the loop's eventfd, which stays open
                // while the hub (and so this inbox) lives; a failed write (counter full) still
                // leaves the eventfd readable, which is all a wake-up needs.
                unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            }
        }
    }

    /// Takes the next message, if any.
    pub(crate) fn pop(&self) -> Option<ShardMsg> {
        self.queue.pop()
    }

    /// The descriptor the shard's loop waits on (readable after a wake-up; the loop reads it
    /// to reset it).
    pub(crate) fn eventfd(&self) -> RawFd {
        self.eventfd
    }

    /// Resets the eventfd after it was seen readable.
    pub(crate) fn clear_eventfd(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from the inbox's own non-blocking eventfd.
        unsafe { libc::read(self.eventfd, (&mut v as *mut u64).cast(), 8) };
    }

    /// Called by the loop before it sleeps: re-arms the wake-up; false if messages are already
    /// queued (then it must not sleep).
    pub(crate) fn arm(&self) -> bool {
        self.scheduled.store(false, Ordering::SeqCst);
        self.queue.is_empty()
    }
}

/// A GET or POST of a session, passed to the shard that owns it.
#[derive(Debug)]
pub(crate) struct PollRequest {
    pub(crate) sid: ConnId,
    pub(crate) secret: u64,
    pub(crate) from: ConnId,
    /// The request's allowed `Origin`, echoed in the answer.
    pub(crate) origin: Option<Box<str>>,
    /// How the connection continues after the answer (its `Connection` header line).
    pub(crate) keep: KeepAlive,
    /// The POST body; `None` for a GET.
    pub(crate) body: Option<Bytes>,
}

/// Socket.IO long-polling work between shards (`shard::sio_poll`): a session's requests go to
/// the shard that owns it, answers and output back to the connections that carry them.
#[derive(Debug)]
pub(crate) enum PollMsg {
    /// To the owner: a GET or POST of one of its sessions.
    Request(PollRequest),
    /// To the owner: a WebSocket on `from` asks to carry session `sid` (the upgrade).
    Attach {
        sid: ConnId,
        secret: u64,
        from: ConnId,
    },
    /// To the owner: a message the WebSocket `from` received for session `sid`.
    Frame {
        sid: ConnId,
        from: ConnId,
        op: u8,
        data: Bytes,
    },
    /// To the owner: the connection `from` serving session `sid` is gone.
    Gone { sid: ConnId, from: ConnId },
    /// To the request's shard: the HTTP answer to the request on `to`.
    Answer { to: ConnId, bytes: Bytes },
    /// To the WebSocket's shard: frames for it, then a close frame when the session ended.
    Out {
        to: ConnId,
        frames: Vec<Bytes>,
        close: Option<Bytes>,
    },
}

impl PollMsg {
    /// The shard the message is for.
    pub(crate) fn shard(&self) -> usize {
        match self {
            PollMsg::Request(r) => r.sid.shard(),
            PollMsg::Attach { sid, .. }
            | PollMsg::Frame { sid, .. }
            | PollMsg::Gone { sid, .. } => sid.shard(),
            PollMsg::Answer { to, .. } | PollMsg::Out { to, .. } => to.shard(),
        }
    }
}

/// How a connection continues after an HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepAlive {
    /// Closed once the response is written.
    Close,
    /// Kept open for an HTTP/1.0 client that asked (`Connection: keep-alive` in the answer).
    Http10,
    /// Kept open for an HTTP/1.1 client (the default; no header needed).
    Http11,
}

impl KeepAlive {
    /// The `Connection` header line a response carries for this (empty for HTTP/1.1 kept open).
    pub(crate) fn header(self) -> &'static str {
        match self {
            KeepAlive::Close => "Connection: close\r\n",
            KeepAlive::Http10 => "Connection: keep-alive\r\n",
            KeepAlive::Http11 => "",
        }
    }
}
