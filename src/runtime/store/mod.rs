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
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::cluster::ControlOp;
use crate::proto::envelope;
use crate::shard::inbox::{Action, ApiReply, StoredPub};
use crate::shard::shared::HubShared;
use crate::store::{
    AppendReq, HistoryLimits, HistoryRead, InboxMessage, MessageInfo, MessageStatus, NewMessage,
    StatusChange, Store, StoreError,
};
use crate::ConnId;

mod emit;
pub(crate) use emit::durable_frame;
use emit::{position_json, publications_page, reply_error};

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
    /// A publication the store delivers itself (a cluster): only its reply is left.
    Replied(Arc<str>, PubReply, u64),
    /// A frame for one connection.
    Conn(ConnId, Action),
    /// The answer to a subscribe (request id kept for an error when the commit fails).
    Subscribed(ConnId, Option<u64>, Action),
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
        /// In a cluster: the same message for the other nodes.
        wire: Option<ControlOp>,
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

    /// Tests only: takes at most `max` queued jobs as one batch and runs it, as [`run`](Self::run)
    /// does with whatever is queued; returns how many jobs it took.
    #[cfg(test)]
    pub(crate) fn run_queued(&mut self, max: usize) -> usize {
        let mut batch: Vec<StoreJob> = self.jobs.try_iter().take(max).collect();
        let n = batch.len();
        if n > 0 {
            self.run_batch(&mut batch);
        }
        n
    }

    /// Tests only: a topic's epoch, as a client may learn it out of band (HTTP history).
    #[cfg(test)]
    pub(crate) fn epoch(&mut self, topic: &str) -> Arc<str> {
        self.store.position(topic).expect("memory store").epoch
    }

    /// Applies, commits and emits one batch; true after `Stop`.
    pub(crate) fn run_batch(&mut self, batch: &mut Vec<StoreJob>) -> bool {
        let mut stop = false;
        let now = crate::store::now_ms();
        let mut run: Vec<PubJob> = Vec::new();
        for job in batch.drain(..) {
            match job {
                StoreJob::Publish(p) => {
                    run.push(*p);
                    continue;
                }
                StoreJob::Stop => stop = true,
                job => {
                    self.publish_run(&mut run, now);
                    self.apply(job, now);
                }
            }
        }
        self.publish_run(&mut run, now);
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
            StoreJob::Publish(p) => self.publish_run(&mut vec![*p], now),
            StoreJob::Subscribe {
                topic,
                conn,
                rid,
                since,
                held,
            } => {
                let (frame, pos) = self.subscribe_reply(&topic, rid, since.as_ref(), now);
                let action = Action::Recovered {
                    topic,
                    frame,
                    held,
                    pos,
                };
                self.outs.push(Out::Subscribed(conn, rid, action));
            }
            StoreJob::History {
                topic,
                limit,
                since,
                until,
                to,
            } => {
                let read = match until {
                    // The rest of a paged answer: everything after `since` up to `until`.
                    Some(u) => {
                        let max = self.hub.config.store.max_recover;
                        self.history(&topic, max, since.as_ref(), now).map(|mut r| {
                            r.publications.retain(|p| p.offset <= u);
                            r
                        })
                    }
                    None => self.history(&topic, limit, since.as_ref(), now),
                };
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
                                let budget = reply_budget(&self.hub);
                                publications_page(&mut body, &r.publications, budget, &r.pos.epoch);
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
                        // A remote store's inbox epoch changes when Redis lost its data, seen by
                        // the very put that restarted the offsets.
                        self.inbox_epoch = self.store.inbox_epoch();
                        if !dropped.is_empty() {
                            self.outs.push(Out::Gone(dropped));
                        }
                        let frame = durable_frame(&user, &m, &self.inbox_epoch);
                        let wire = self.hub.remote_store.then(|| ControlOp::Durable {
                            user: user.to_string(),
                            offset: m.offset,
                            topic: m.topic.as_deref().map(str::to_string),
                            event: m.event.to_string(),
                            data: m.data.as_deref().and_then(|d| {
                                RawValue::from_string(String::from_utf8_lossy(d).into_owned()).ok()
                            }),
                            epoch: self.inbox_epoch.to_string(),
                        });
                        self.outs.push(Out::Durable {
                            user,
                            offset: m.offset,
                            frame,
                            id: m.id,
                            reply,
                            wire,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            StoreJob::InboxSync { user, conn } => {
                let listed = self.store.inbox_list(&user, now);
                self.inbox_epoch = self.store.inbox_epoch();
                let frames = match listed {
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

    /// Appends a run of publications in one [`Store::append_batch`] (one round trip for a
    /// remote store) and records their results in order. When the store delivers publications
    /// itself (a cluster), only the replies are left to emit.
    fn publish_run(&mut self, run: &mut Vec<PubJob>, now: u64) {
        if run.is_empty() {
            return;
        }
        // Configuration is fixed at start, so a shard only sends topics with history.
        let ns = &self.hub.namespaces;
        let jobs: Vec<(PubJob, HistoryLimits)> = run
            .drain(..)
            .filter_map(|p| {
                let limits = ns.history(&p.topic)?.limits();
                Some((p, limits))
            })
            .collect();
        let results = {
            let reqs: Vec<AppendReq<'_>> = jobs
                .iter()
                .map(|(p, limits)| AppendReq {
                    topic: &p.topic,
                    limits: *limits,
                    event: &p.event,
                    data: p.data.as_deref(),
                    exclude: p.exclude.map_or(0, ConnId::raw),
                })
                .collect();
            self.store.append_batch(&reqs, now)
        };
        let delivers = self.store.delivers();
        for ((p, _), r) in jobs.into_iter().zip(results) {
            match r {
                Ok(pos) if delivers => self.outs.push(Out::Replied(p.topic, p.reply, pos.offset)),
                Ok(pos) => {
                    let frame = envelope::stored_publication(
                        &p.topic,
                        &p.event,
                        p.data.as_deref(),
                        pos.offset,
                    );
                    let sp = StoredPub {
                        topic: p.topic,
                        frame,
                        exclude: p.exclude,
                        epoch: pos.epoch,
                        offset: pos.offset,
                    };
                    self.outs.push(Out::Pub(sp, p.reply, pos.offset));
                }
                Err(e) => reply_error(&self.hub, &p.topic, p.reply, e),
            }
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

    /// The subscribe reply (position, and the recovery when `since` was given) and the
    /// position it covers.
    fn subscribe_reply(
        &mut self,
        topic: &str,
        rid: Option<u64>,
        since: Option<&Since>,
        now: u64,
    ) -> (Option<Bytes>, Option<(Arc<str>, u64)>) {
        let Some(ns) = self.hub.namespaces.history(topic) else {
            return (None, None);
        };
        let limits = ns.limits();
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
        let covered = answer
            .as_ref()
            .ok()
            .map(|(pos, _)| (pos.epoch.clone(), pos.offset));
        let Some(rid) = rid else {
            return (None, covered);
        };
        let frame = match answer {
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
                    let budget = reply_budget(&self.hub);
                    publications_page(&mut body, &pubs, budget, &pos.epoch);
                    body.push(b'}');
                }
                envelope::reply(rid, topic, Some(&body))
            }
            Err(e) => envelope::error(Some(rid), topic, e.code(), &e.to_string()),
        };
        (Some(frame), covered)
    }
}

/// Bytes of publications one reply to a connection carries: half its outbound queue, so a
/// history or recovery reply never cuts the reader as a slow consumer by itself.
fn reply_budget(hub: &HubShared) -> usize {
    hub.config.outbound_queue / 2
}
