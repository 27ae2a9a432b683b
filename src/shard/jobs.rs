//! The store thread's interface: the jobs shards, the pool and the API thread queue to it.
//! Defined here, below the runtime that runs the sequencer, so the shard and HTTP layers name
//! what they ask for without depending on who answers it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::store::{HistoryRead, InboxMessage, MessageInfo, MessageStatus, StoreError};
use crate::ConnId;

/// A user's unacknowledged messages as frames, in offset order.
pub(crate) type InboxFrames = Arc<[(u64, Bytes)]>;

/// What one shard answers.
#[derive(Debug)]
pub(crate) enum ApiReply {
    /// Connections reached.
    Count(usize),
    /// Connections subscribed, and the ones refused: (client id, why), e.g. the subscription
    /// limit.
    Subscribed(usize, Vec<(String, String)>),
    /// Users with their connection counts, and anonymous connections.
    Online(Vec<(Arc<str>, usize)>, usize),
    /// Presence entries: connection, user (`None` if anonymous), metadata JSON from `on_connect`.
    Presence(PresenceList),
    /// Patterns (topics or `prefix*`) with their local subscriber counts.
    Topics(Vec<(String, usize)>),
}

/// Presence entries of one shard: connection, user (`None` if anonymous), `on_connect`
/// metadata (JSON).
pub(crate) type PresenceList = Vec<(ConnId, Option<Arc<str>>, Option<Arc<str>>)>;

/// Jobs queued beyond this refuse new publications and durable sends with `too_many`.
pub(crate) const MAX_QUEUED: usize = 200_000;

/// A recovery position sent by a client.
#[derive(Debug, Clone)]
pub(crate) struct Since {
    pub epoch: Box<str>,
    pub offset: u64,
}

/// Who waits for the outcome of a publication.
#[derive(Debug)]
pub(crate) enum PubReply {
    /// Nobody.
    None,
    /// A client request: `reply` with `{"offset": O}` or an `error`.
    Conn(ConnId, u64),
    /// The HTTP API: the offset and one receiver per shard for the delivery counts.
    Api(oneshot::Sender<Result<Counted, StoreError>>),
}

/// Who waits for the outcome of a durable send.
#[derive(Debug)]
pub(crate) enum DurableReply {
    /// The API thread (or the library): the message id, its offset and one receiver per shard
    /// for the delivery counts.
    Api(oneshot::Sender<Result<(u64, Counted), StoreError>>),
    /// A `POST /api/v1/send` read by this connection's shard (`shard::fastsend`): the shards
    /// deliver the message and the connection's shard answers the request with the summed count.
    Http(ConnId),
    /// Command `index` of a `POST /api/v1/batch` of durable sends read by this connection's
    /// shard (`shard::fastbatch`), or send `index` of a run of pipelined durable sends
    /// (`shard::pipeline`): answered, with the others' results, once all are in.
    HttpBatch(ConnId, u32),
}

/// A stored item and the per-shard delivery counts to await.
pub(crate) type Counted = (u64, Vec<oneshot::Receiver<ApiReply>>);

/// A publication for a topic with history.
#[derive(Debug)]
pub(crate) struct PubJob {
    pub topic: Arc<str>,
    pub event: Box<str>,
    pub data: Option<Bytes>,
    pub exclude: Option<ConnId>,
    pub reply: PubReply,
}

/// Work for the store thread.
#[derive(Debug)]
pub(crate) enum StoreJob {
    /// Append and deliver a publication.
    Publish(Box<PubJob>),
    /// A connection subscribed to a topic with history: answer its subscribe with the position
    /// (and the missed publications after `since`). When `held`, the shard skips the topic's
    /// publications to this connection until the answer arrives (and the answer ends that hold,
    /// no other).
    Subscribe {
        topic: Arc<str>,
        conn: ConnId,
        rid: Option<u64>,
        since: Option<Since>,
        held: bool,
    },
    /// A history request, from a client (`conn`, `rid`) or the library/API (`reply`).
    History {
        topic: Arc<str>,
        limit: usize,
        since: Option<Since>,
        /// A page of a longer answer: only publications up to this offset.
        until: Option<u64>,
        to: HistoryTo,
    },
    /// Store a durable message for `user`, then deliver it.
    InboxPut {
        user: Arc<str>,
        event: Box<str>,
        data: Option<Bytes>,
        reply: DurableReply,
    },
    /// A new connection of `user`: send it every unacknowledged message. Skipped when `gone`
    /// (the connection closed before the store got to it).
    InboxSync {
        user: Arc<str>,
        conn: ConnId,
        gone: Arc<AtomicBool>,
    },
    /// The cluster's control channel came back (messages sent meanwhile may not have reached
    /// this node): send `shard` the unacknowledged messages of `user`, who has connections there.
    InboxResync { user: Arc<str>, shard: usize },
    /// A connection acknowledged a durable message.
    Ack {
        user: Arc<str>,
        offset: u64,
        conn: ConnId,
        rid: Option<u64>,
    },
    /// A shard wrote these durable messages to `times` connections each.
    Delivered {
        user: Arc<str>,
        offsets: Vec<u64>,
        times: u32,
    },
    /// What is known of a message.
    Status {
        id: u64,
        reply: oneshot::Sender<Result<Option<MessageInfo>, StoreError>>,
    },
    /// A user's unacknowledged messages with their statuses.
    Inbox {
        user: Arc<str>,
        reply: oneshot::Sender<Result<Vec<(InboxMessage, MessageStatus)>, StoreError>>,
    },
    /// The position check (cluster, `[cluster] position_check`): answer `shard` with the
    /// store's latest position of each of `topics` ([`ShardMsg::Positions`]). The checks of one
    /// batch are read together: one round trip per Redis instance.
    ///
    /// [`ShardMsg::Positions`]: crate::shard::inbox::ShardMsg::Positions
    Positions { shard: usize, topics: Vec<Arc<str>> },
    /// Several jobs that go into one batch, so one commit (the API's `batch` endpoint).
    Many(Vec<StoreJob>),
    /// A webhook fact from a shard: counted, and put in the outbox as events when it makes one.
    Webhook(WebhookFact),
    /// The webhook sender leases up to `max` outbox events for `lease`.
    OutboxClaim {
        max: usize,
        lease: std::time::Duration,
        reply: oneshot::Sender<Result<Vec<crate::store::OutboxEntry>, StoreError>>,
    },
    /// The webhook sender is done with these events (delivered, or dead letters).
    OutboxDone {
        ids: Vec<String>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Keep a dropped Socket.IO connection's recovery session (a store that
    /// [keeps them](crate::store::Store::keeps_sio_sessions)).
    SioPut {
        pid: Box<str>,
        session: Bytes,
        expires_ms: u64,
    },
    /// A Socket.IO CONNECT asks to resume session `resume.pid` on namespace `nsp`: take it and
    /// answer the connection with [`Action::SioSession`](crate::shard::inbox::Action::SioSession).
    SioTake {
        conn: ConnId,
        nsp: usize,
        resume: Box<crate::proto::socketio_recover::Resume>,
    },
    /// Commit and exit.
    Stop,
}

/// Where a history answer goes.
#[derive(Debug)]
pub(crate) enum HistoryTo {
    Conn(ConnId, u64),
    Api(oneshot::Sender<Result<HistoryRead, StoreError>>),
}

/// What the store thread did, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    /// Inbox syncs answered with a list read for them.
    pub syncs_read: AtomicU64,
    /// Inbox syncs answered with a list another sync of the same batch read.
    pub syncs_shared: AtomicU64,
    /// Inbox syncs skipped: the connection was gone.
    pub syncs_skipped: AtomicU64,
    /// Connections refused because the store's queue was full.
    pub refused: AtomicU64,
    /// Acks kept for a retry (the store did not answer).
    pub acks_retried: AtomicU64,
    /// Batches committed (one commit each).
    pub commits: AtomicU64,
    /// Syncs of the store's write-ahead log (redb): one per commit with `[store] sync =
    /// "always"` except checkpoints; with `"interval"`, at most one per interval, and none
    /// while a checkpoint (each second under load) comes first and makes the records durable.
    pub log_syncs: AtomicU64,
}

impl StoreStats {
    /// `(name, help, value, is_counter)` for `/metrics`, given the store queue's length.
    pub(crate) fn list(&self, queued: usize) -> [(&'static str, &'static str, u64, bool); 8] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("queue", "Jobs waiting for the store thread", queued as u64, false),
            ("inbox_syncs_read", "Inbox syncs answered with a list read for them", g(&self.syncs_read), true),
            ("inbox_syncs_shared", "Inbox syncs answered with the list of another sync of the same batch", g(&self.syncs_shared), true),
            ("inbox_syncs_skipped", "Inbox syncs skipped: the connection had closed", g(&self.syncs_skipped), true),
            ("refused_connections", "Inbox syncs refused because the store queue was full (connection closed with 1013)", g(&self.refused), true),
            ("acks_retried", "Acks kept and retried because the store did not answer", g(&self.acks_retried), true),
            ("commits", "Batches of store jobs committed (one commit each; with redb and sync = always, one fdatasync each)", g(&self.commits), true),
            ("log_syncs", "fdatasyncs of the redb write-ahead log (with sync = interval at most one per interval; none while the checkpoints, each second under load, come first)", g(&self.log_syncs), true),
        ]
    }
}

/// A fact for the store thread's webhook aggregator (made by `shard::webhook`).
#[derive(Debug)]
pub(crate) enum WebhookFact {
    /// Shard `shard` got its first (`on`) or lost its last (`!on`) subscriber of `topic`.
    Topic {
        topic: Arc<str>,
        shard: usize,
        on: bool,
    },
    /// Shard `shard` got its first (`on`) or lost its last connection of `user`.
    User {
        user: Arc<str>,
        shard: usize,
        on: bool,
    },
    /// A finished event (its JSON without id): presence changes and publications, which need
    /// no counting.
    Event(Bytes),
}
