//! The store thread: the one owner of the [`Store`], and so the sequencer of every topic with
//! history and of every user inbox.
//!
//! Shards, the pool and the API thread send it [`StoreJob`]s; it takes everything queued as one
//! batch, applies the batch in arrival order, commits once (group commit: one fsync for the
//! batch with redb), and only then emits the results — publications to every shard, replies to
//! connections, answers to the API — in the same order. Because one thread emits, in order, into
//! each shard's FIFO inbox, every shard sees a topic's publications in offset order, and a reply
//! computed after publication N reaches a shard after N: the basis of gapless recovery (see
//! `ShardState::recovering`). Nothing here ever runs on a shard's loop, so a slow disk slows
//! history publications, never a shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::proto::envelope;
use crate::proto::error::ErrorCode;
use crate::shard::inbox::{Action, ApiOp, ApiReply, ShardMsg, StoredPub};
use crate::shard::shared::HubShared;
use crate::store::{
    HistoryRead, InboxMessage, MessageInfo, MessageStatus, NewMessage, StatusChange, Store,
    StoreError,
};
use crate::ConnId;

/// Jobs queued beyond this refuse new publications and durable sends with `too_many`.
pub(crate) const MAX_QUEUED: usize = 200_000;

/// Most jobs applied per commit.
const MAX_BATCH: usize = 8_192;

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
    /// (and the missed publications after `since`). The shard skips the topic's publications to
    /// this connection until the answer arrives.
    Subscribe {
        topic: Arc<str>,
        conn: ConnId,
        rid: Option<u64>,
        since: Option<Since>,
    },
    /// A history request, from a client (`conn`, `rid`) or the library/API (`reply`).
    History {
        topic: Arc<str>,
        limit: usize,
        since: Option<Since>,
        to: HistoryTo,
    },
    /// Store a durable message for `user`, then deliver it.
    InboxPut {
        user: Arc<str>,
        event: Box<str>,
        data: Option<Bytes>,
        reply: oneshot::Sender<Result<(u64, Counted), StoreError>>,
    },
    /// A new connection of `user`: send it every unacknowledged message.
    InboxSync { user: Arc<str>, conn: ConnId },
    /// A connection acknowledged a durable message.
    Ack {
        user: Arc<str>,
        offset: u64,
        conn: ConnId,
        rid: Option<u64>,
    },
    /// A shard wrote a durable message to `times` connections.
    Delivered {
        user: Arc<str>,
        offset: u64,
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
    /// Commit and exit.
    Stop,
}

/// Where a history answer goes.
#[derive(Debug)]
pub(crate) enum HistoryTo {
    Conn(ConnId, u64),
    Api(oneshot::Sender<Result<HistoryRead, StoreError>>),
}

/// Results of one batch, emitted after its commit, in job order.
enum Out {
    Pub(StoredPub, PubReply, u64),
    /// A frame (or a recovery answer) for one connection.
    Conn(ConnId, Action),
    History(
        oneshot::Sender<Result<HistoryRead, StoreError>>,
        HistoryRead,
    ),
    Durable {
        user: Arc<str>,
        offset: u64,
        frame: Bytes,
        id: u64,
        reply: oneshot::Sender<Result<(u64, Counted), StoreError>>,
    },
    /// Messages that left inboxes (acked, expired, dropped): shards stop retrying them.
    Gone(Vec<StatusChange>),
    Status(
        oneshot::Sender<Result<Option<MessageInfo>, StoreError>>,
        Option<MessageInfo>,
    ),
    Inbox(
        oneshot::Sender<Result<Vec<(InboxMessage, MessageStatus)>, StoreError>>,
        Vec<(InboxMessage, MessageStatus)>,
    ),
}

/// The store thread's state.
pub(crate) struct Sequencer {
    store: Box<dyn Store>,
    hub: Arc<HubShared>,
    jobs: crossbeam_channel::Receiver<StoreJob>,
    outs: Vec<Out>,
    last_expire: Instant,
    inbox_epoch: Arc<str>,
}

impl Sequencer {
    pub(crate) fn new(
        store: Box<dyn Store>,
        hub: Arc<HubShared>,
        jobs: crossbeam_channel::Receiver<StoreJob>,
    ) -> Self {
        Self {
            inbox_epoch: store.inbox_epoch(),
            store,
            hub,
            jobs,
            outs: Vec::new(),
            last_expire: Instant::now(),
        }
    }

    /// Runs batches until [`StoreJob::Stop`] (or every sender is gone).
    pub(crate) fn run(mut self) {
        tracing::info!(store = self.store.name(), "store thread started");
        let mut batch = Vec::new();
        loop {
            match self.jobs.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => batch.push(job),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let stop = self.run_batch(&mut batch);
            if stop {
                return;
            }
        }
    }

    /// Applies, commits and emits one batch; true after `Stop`.
    pub(crate) fn run_batch(&mut self, batch: &mut Vec<StoreJob>) -> bool {
        let mut stop = false;
        let now = crate::store::now_ms();
        for job in batch.drain(..) {
            if matches!(job, StoreJob::Stop) {
                stop = true;
                continue;
            }
            self.apply(job, now);
        }
        if self.last_expire.elapsed() >= Duration::from_secs(1) {
            self.last_expire = Instant::now();
            match self.store.expire(self.hub.config.inbox.limits(), now) {
                Ok(gone) if !gone.is_empty() => self.outs.push(Out::Gone(gone)),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "store: expiring inbox messages failed"),
            }
        }
        if self.outs.is_empty() {
            return stop;
        }
        match self.store.commit() {
            Ok(()) => self.emit(),
            Err(e) => self.fail(&e),
        }
        stop
    }

    fn apply(&mut self, job: StoreJob, now: u64) {
        match job {
            StoreJob::Publish(p) => self.publish(*p, now),
            StoreJob::Subscribe {
                topic,
                conn,
                rid,
                since,
            } => {
                let frame = self.subscribe_reply(&topic, rid, since.as_ref(), now);
                self.outs
                    .push(Out::Conn(conn, Action::Recovered { topic, frame }));
            }
            StoreJob::History {
                topic,
                limit,
                since,
                to,
            } => {
                let read = self.history(&topic, limit, since.as_ref(), now);
                match (to, read) {
                    (HistoryTo::Api(tx), Ok(r)) => self.outs.push(Out::History(tx, r)),
                    (HistoryTo::Api(tx), Err(e)) => {
                        let _ = tx.send(Err(e));
                    }
                    (HistoryTo::Conn(conn, rid), r) => {
                        let frame = match r {
                            Ok(r) => {
                                let mut body = Vec::with_capacity(64);
                                position_json(&mut body, &r.pos.epoch, r.pos.offset);
                                body.pop();
                                publications_json(&mut body, &r.publications);
                                body.push(b'}');
                                envelope::reply(rid, &topic, Some(&body))
                            }
                            Err(e) => envelope::error(Some(rid), &topic, e.code(), &e.to_string()),
                        };
                        self.outs.push(Out::Conn(conn, Action::Send(frame)));
                    }
                }
            }
            StoreJob::InboxPut {
                user,
                event,
                data,
                reply,
            } => {
                let msg = NewMessage {
                    topic: None,
                    event: &event,
                    data: data.as_deref(),
                };
                match self
                    .store
                    .inbox_put(&user, msg, self.hub.config.inbox.limits(), now)
                {
                    Ok((m, dropped)) => {
                        if !dropped.is_empty() {
                            self.outs.push(Out::Gone(dropped));
                        }
                        let frame = durable_frame(&user, &m, &self.inbox_epoch);
                        self.outs.push(Out::Durable {
                            user,
                            offset: m.offset,
                            frame,
                            id: m.id,
                            reply,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            StoreJob::InboxSync { user, conn } => {
                let frames = match self.store.inbox_list(&user, now) {
                    Ok(list) => list
                        .iter()
                        .map(|m| (m.offset, durable_frame(&user, m, &self.inbox_epoch)))
                        .collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, user = &*user, "store: reading an inbox failed");
                        Vec::new()
                    }
                };
                self.outs
                    .push(Out::Conn(conn, Action::InboxSync(user, frames)));
            }
            StoreJob::Ack {
                user,
                offset,
                conn,
                rid,
            } => {
                let topic = format!("user:{user}");
                match self.store.inbox_ack(&user, offset) {
                    Ok(change) => {
                        if let Some(c) = change {
                            self.outs.push(Out::Gone(vec![c]));
                        }
                        if let Some(rid) = rid {
                            let frame = envelope::reply(rid, &topic, None);
                            self.outs.push(Out::Conn(conn, Action::Send(frame)));
                        }
                    }
                    Err(e) => {
                        let frame = envelope::error(rid, &topic, e.code(), &e.to_string());
                        self.outs.push(Out::Conn(conn, Action::Send(frame)));
                    }
                }
            }
            StoreJob::Delivered {
                user,
                offset,
                times,
            } => {
                if let Err(e) = self.store.inbox_delivered(&user, offset, times) {
                    tracing::warn!(error = %e, "store: recording a delivery failed");
                }
            }
            StoreJob::Status { id, reply } => match self.store.status(id) {
                Ok(info) => self.outs.push(Out::Status(reply, info)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            StoreJob::Inbox { user, reply } => {
                let listed = self.store.inbox_list(&user, now).and_then(|list| {
                    list.into_iter()
                        .map(|m| {
                            let st = self
                                .store
                                .status(m.id)?
                                .map_or(MessageStatus::Pending, |i| i.status);
                            Ok((m, st))
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                });
                match listed {
                    Ok(list) => self.outs.push(Out::Inbox(reply, list)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            StoreJob::Stop => {}
        }
    }

    fn publish(&mut self, p: PubJob, now: u64) {
        let Some(ns) = self.hub.namespaces.history(&p.topic) else {
            // Configuration is fixed at start, so a shard only sends topics with history.
            return;
        };
        match self
            .store
            .append(&p.topic, ns.limits(), &p.event, p.data.as_deref(), now)
        {
            Ok(pos) => {
                let frame =
                    envelope::stored_publication(&p.topic, &p.event, p.data.as_deref(), pos.offset);
                let sp = StoredPub {
                    topic: p.topic,
                    frame,
                    exclude: p.exclude,
                };
                self.outs.push(Out::Pub(sp, p.reply, pos.offset));
            }
            Err(e) => reply_error(&self.hub, &p.topic, p.reply, e),
        }
    }

    fn history(
        &mut self,
        topic: &str,
        limit: usize,
        since: Option<&Since>,
        now: u64,
    ) -> Result<HistoryRead, StoreError> {
        let ns = self
            .hub
            .namespaces
            .history(topic)
            .ok_or_else(|| StoreError::Unavailable("no history on this topic".into()))?;
        let limits = ns.limits();
        let pos = self.store.position(topic)?;
        let after = since
            .filter(|s| *s.epoch == *pos.epoch)
            .map_or(0, |s| s.offset);
        self.store.read(topic, limits, after, limit, now)
    }

    /// The subscribe reply: position, and the recovery when `since` was given.
    fn subscribe_reply(
        &mut self,
        topic: &str,
        rid: Option<u64>,
        since: Option<&Since>,
        now: u64,
    ) -> Option<Bytes> {
        let limits = self.hub.namespaces.history(topic)?.limits();
        let max = self.hub.config.store.max_recover;
        let answer = self.store.position(topic).and_then(|pos| {
            let Some(s) = since else {
                return Ok((pos, None));
            };
            if *s.epoch != *pos.epoch || s.offset > pos.offset {
                return Ok((pos, Some((false, Vec::new()))));
            }
            let r = self.store.read(topic, limits, s.offset, max, now)?;
            Ok(if r.complete {
                (r.pos, Some((true, r.publications)))
            } else {
                (r.pos, Some((false, Vec::new())))
            })
        });
        let rid = rid?;
        Some(match answer {
            Ok((pos, rec)) => {
                let mut body = Vec::with_capacity(64);
                position_json(&mut body, &pos.epoch, pos.offset);
                if let Some((ok, pubs)) = rec {
                    body.pop();
                    body.extend_from_slice(if ok {
                        b",\"recovered\":true"
                    } else {
                        b",\"recovered\":false"
                    });
                    publications_json(&mut body, &pubs);
                    body.push(b'}');
                }
                envelope::reply(rid, topic, Some(&body))
            }
            Err(e) => envelope::error(Some(rid), topic, e.code(), &e.to_string()),
        })
    }

    /// Emits the batch's results in order: runs of publications go to every shard as one
    /// message.
    fn emit(&mut self) {
        let outs = std::mem::take(&mut self.outs);
        let mut run: Vec<StoredPub> = Vec::new();
        let hub = self.hub.clone();
        let flush = |run: &mut Vec<StoredPub>| {
            if run.is_empty() {
                return;
            }
            let batch: Arc<[StoredPub]> = std::mem::take(run).into();
            for inbox in hub.inboxes.iter() {
                inbox.push(ShardMsg::Stored(batch.clone()));
            }
        };
        for out in outs {
            match out {
                Out::Pub(sp, PubReply::None, _) => run.push(sp),
                Out::Pub(sp, PubReply::Conn(conn, rid), offset) => {
                    let frame = envelope::reply(
                        rid,
                        &sp.topic,
                        Some(format!("{{\"offset\":{offset}}}").as_bytes()),
                    );
                    run.push(sp);
                    flush(&mut run);
                    push_conn(&hub, conn, Action::Send(frame));
                }
                Out::Pub(sp, PubReply::Api(tx), offset) => {
                    flush(&mut run);
                    let mut waits = Vec::with_capacity(hub.inboxes.len());
                    for inbox in hub.inboxes.iter() {
                        let (t, r) = oneshot::channel();
                        inbox.push(ShardMsg::Api(ApiOp::Stored(sp.clone()), t));
                        waits.push(r);
                    }
                    let _ = tx.send(Ok((offset, waits)));
                }
                Out::Conn(conn, action) => {
                    flush(&mut run);
                    push_conn(&hub, conn, action);
                }
                Out::History(tx, r) => {
                    let _ = tx.send(Ok(r));
                }
                Out::Durable {
                    user,
                    offset,
                    frame,
                    id,
                    reply,
                } => {
                    flush(&mut run);
                    let mut waits = Vec::with_capacity(hub.inboxes.len());
                    for inbox in hub.inboxes.iter() {
                        let (t, r) = oneshot::channel();
                        let op = ApiOp::Durable {
                            user: user.clone(),
                            offset,
                            frame: frame.clone(),
                        };
                        inbox.push(ShardMsg::Api(op, t));
                        waits.push(r);
                    }
                    let _ = reply.send(Ok((id, (offset, waits))));
                }
                Out::Gone(changes) => {
                    flush(&mut run);
                    if let Some(hook) = &hub.hooks.on_delivery {
                        for c in &changes {
                            let _ =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(c)));
                        }
                    }
                    let gone: Arc<[(Arc<str>, u64)]> = changes
                        .into_iter()
                        .map(|c| (Arc::from(&*c.user), c.offset))
                        .collect();
                    for inbox in hub.inboxes.iter() {
                        inbox.push(ShardMsg::InboxGone(gone.clone()));
                    }
                }
                Out::Status(tx, info) => {
                    let _ = tx.send(Ok(info));
                }
                Out::Inbox(tx, list) => {
                    let _ = tx.send(Ok(list));
                }
            }
        }
        flush(&mut run);
    }

    /// The commit failed: nothing of the batch is shown; everyone waiting gets the error.
    fn fail(&mut self, e: &StoreError) {
        tracing::error!(error = %e, "store commit failed: the batch's publications and durable messages are refused");
        let hub = self.hub.clone();
        for out in std::mem::take(&mut self.outs) {
            match out {
                Out::Pub(sp, reply, _) => reply_error(&hub, &sp.topic, reply, clone_err(e)),
                Out::Durable { reply, .. } => {
                    let _ = reply.send(Err(clone_err(e)));
                }
                Out::Conn(conn, Action::Recovered { topic, .. }) => {
                    // Release the connection's held topic with an error instead of a position.
                    let frame = Some(envelope::error(
                        None,
                        &topic,
                        ErrorCode::Internal,
                        &e.to_string(),
                    ));
                    push_conn(&hub, conn, Action::Recovered { topic, frame });
                }
                Out::Conn(conn, Action::InboxSync(user, _)) => {
                    push_conn(&hub, conn, Action::InboxSync(user, Vec::new()));
                }
                Out::Conn(conn, action) => push_conn(&hub, conn, action),
                Out::History(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Status(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Inbox(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Gone(_) => {}
            }
        }
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io(m) => StoreError::Io(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
    }
}

fn reply_error(hub: &HubShared, topic: &str, reply: PubReply, e: StoreError) {
    match reply {
        PubReply::None => tracing::warn!(error = %e, topic, "store: publication refused"),
        PubReply::Conn(conn, rid) => {
            let frame = envelope::error(Some(rid), topic, e.code(), &e.to_string());
            push_conn(hub, conn, Action::Send(frame));
        }
        PubReply::Api(tx) => {
            let _ = tx.send(Err(e));
        }
    }
}

fn push_conn(hub: &HubShared, conn: ConnId, action: Action) {
    if let Some(inbox) = hub.inboxes.get(conn.shard()) {
        inbox.push(ShardMsg::Conn(conn, action));
    }
}

/// `{"epoch":E,"offset":N}`.
fn position_json(out: &mut Vec<u8>, epoch: &str, offset: u64) {
    out.extend_from_slice(b"{\"epoch\":");
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, epoch);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.push(b'}');
}

/// `,"publications":[{"event":E,"data":D,"offset":O},...]`.
fn publications_json(out: &mut Vec<u8>, pubs: &[crate::store::Publication]) {
    out.extend_from_slice(b",\"publications\":[");
    for (i, p) in pubs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"event\":");
        let _ = serde_json::to_writer(&mut *out, &*p.event);
        if let Some(d) = &p.data {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(d);
        }
        out.extend_from_slice(b",\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(p.offset).as_bytes());
        out.push(b'}');
    }
    out.push(b']');
}

/// The frame of a durable message:
/// `{"topic":"user:U","event":E,"data":D,"offset":O,"epoch":X,"ack":true}`.
pub(crate) fn durable_frame(user: &str, m: &InboxMessage, epoch: &str) -> Bytes {
    let topic = match &m.topic {
        Some(t) => t.to_string(),
        None => format!("user:{user}"),
    };
    envelope::durable(&topic, &m.event, m.data.as_deref(), m.offset, epoch)
}
