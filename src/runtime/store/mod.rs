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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::cluster::ControlOp;
use crate::proto::envelope;
use crate::shard::answer::{
    history_frame, history_read, reply_budget, subscribe_answer, SubscribeAsk,
};
use crate::shard::inbox::{Action, StoredPub};
use crate::shard::jobs::{Counted, HistoryTo, InboxFrames, PubJob, PubReply, Since, StoreJob};
use crate::shard::shared::HubShared;
use crate::store::{
    AppendReq, HistoryLimits, HistoryRead, InboxMessage, MessageInfo, MessageStatus, NewMessage,
    OutboxEntry, StatusChange, Store, StoreError,
};
use crate::ConnId;

mod check;
mod emit;
mod open;
pub(crate) use open::open_store;
mod retry;
#[cfg(test)]
mod seq_tests;
mod webhooks;
pub(crate) use emit::durable_frame;
use emit::reply_error;

/// Most jobs applied per commit.
const MAX_BATCH: usize = 8_192;

/// Results of one batch, emitted after its commit, in job order.
enum Out {
    Pub(StoredPub, PubReply, u64),
    /// A publication the store delivers itself (a cluster): only its reply is left.
    Replied(Arc<str>, PubReply, u64),
    /// A frame for one connection.
    Conn(ConnId, Action),
    /// A user's unacknowledged messages for a shard's resync (see [`StoreJob::InboxResync`]).
    Resync(usize, Arc<str>, InboxFrames),
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
    /// Webhook events were added to or removed from the outbox: update its figures, wake the
    /// sender.
    OutboxChanged,
    /// The sender's claim, answered after the commit.
    Claimed(
        oneshot::Sender<Result<Vec<OutboxEntry>, StoreError>>,
        Vec<OutboxEntry>,
    ),
    /// The sender's acknowledgement, answered once committed.
    OutboxDone(oneshot::Sender<Result<(), StoreError>>),
    /// A write nobody waits for (a Socket.IO session kept): only makes the batch commit.
    Written,
}

/// The store thread's state.
pub(crate) struct Sequencer {
    store: Box<dyn Store>,
    hub: Arc<HubShared>,
    jobs: crossbeam_channel::Receiver<StoreJob>,
    outs: Vec<Out>,
    last_expire: Instant,
    inbox_epoch: Arc<str>,
    /// The store's health as last published to `hub.store_fault`.
    fault: Option<String>,
    /// Inbox lists read in this batch, per user, shared by every sync of the user in the batch
    /// (a reconnect storm costs one read per batch, not one per connection). Dropped when the
    /// batch changes the user's inbox.
    lists: HashMap<Arc<str>, InboxFrames>,
    /// Deliveries reported in this batch, summed per message: written once, at its end.
    delivered: HashMap<(Arc<str>, u64), u32>,
    /// Acks the store refused for want of an answer (Redis away), retried until it confirms.
    acks: retry::AckRetry,
    /// Webhook facts counted into events (see the `webhooks` module).
    webhooks: webhooks::Aggregator,
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
            lists: HashMap::new(),
            delivered: HashMap::new(),
            acks: retry::AckRetry::default(),
            webhooks: Default::default(),
            fault: None,
        }
    }

    /// Publishes the store's health for `/readyz` when it changed.
    fn publish_health(&mut self) {
        let now = self.store.health().err();
        if now != self.fault {
            if let Ok(mut f) = self.hub.store_fault.lock() {
                f.clone_from(&now);
            }
            self.fault = now;
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
        let mut checks = Vec::new();
        // Before this batch's facts: at the first batch it releases this node's past life.
        self.webhook_reap(now);
        if batch.iter().any(|j| matches!(j, StoreJob::Many(_))) {
            // An API batch's jobs join this batch in their order: one commit for all of them.
            let mut flat = Vec::with_capacity(batch.len());
            for job in batch.drain(..) {
                match job {
                    StoreJob::Many(jobs) => flat.extend(jobs),
                    job => flat.push(job),
                }
            }
            *batch = flat;
        }
        for job in batch.drain(..) {
            match job {
                StoreJob::Publish(p) => {
                    run.push(*p);
                    continue;
                }
                StoreJob::Webhook(f) => {
                    self.webhook_fact(f, now);
                    continue;
                }
                StoreJob::Stop => stop = true,
                StoreJob::Positions { shard, topics } => checks.push((shard, topics)),
                job => {
                    self.publish_run(&mut run, now);
                    // Deliveries are summed over the batch, but a job that reads or changes a
                    // message's status must see the ones reported before it.
                    if matches!(
                        job,
                        StoreJob::Status { .. } | StoreJob::Inbox { .. } | StoreJob::Ack { .. }
                    ) {
                        self.write_delivered();
                    }
                    self.apply(job, now);
                }
            }
        }
        self.publish_run(&mut run, now);
        if !checks.is_empty() {
            self.check_positions(checks);
        }
        self.lists.clear();
        self.write_delivered();
        if self.last_expire.elapsed() >= Duration::from_secs(1) {
            self.last_expire = Instant::now();
            self.retry_acks();
            match self.store.expire(self.hub.config.inbox.limits(), now) {
                Ok(gone) if !gone.is_empty() => self.outs.push(Out::Gone(gone)),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "store: expiring inbox messages failed"),
            }
        }
        self.webhook_flush(now);
        if self.outs.is_empty() {
            self.publish_health();
            return stop;
        }
        match self.store.commit() {
            Ok(()) => {
                self.hub.store_stats.commits.fetch_add(1, Ordering::Relaxed);
                self.emit()
            }
            Err(e) => self.fail(&e),
        }
        self.publish_health();
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
                let read = self.history(&topic, limit, since.as_ref(), until, now);
                match (to, read) {
                    (HistoryTo::Api(tx), Ok(r)) => self.outs.push(Out::History(tx, r)),
                    (HistoryTo::Api(tx), Err(e)) => {
                        let _ = tx.send(Err(e));
                    }
                    (HistoryTo::Conn(conn, rid), r) => {
                        let frame = history_frame(rid, &topic, r, reply_budget(&self.hub));
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
                self.lists.remove(&user);
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
                        let wire = self.hub.cluster.remote_store.then(|| ControlOp::Durable {
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
            StoreJob::InboxSync { user, conn, gone } => {
                let stats = &self.hub.store_stats;
                if gone.load(Ordering::Relaxed) {
                    stats.syncs_skipped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let counter = if self.lists.contains_key(&user) {
                    &stats.syncs_shared
                } else {
                    &stats.syncs_read
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let frames = self.inbox_frames(&user, now);
                self.outs
                    .push(Out::Conn(conn, Action::InboxSync(user, frames)));
            }
            StoreJob::InboxResync { user, shard } => {
                let frames = self.inbox_frames(&user, now);
                self.outs.push(Out::Resync(shard, user, frames));
            }
            StoreJob::Ack {
                user,
                offset,
                conn,
                rid,
            } => {
                self.lists.remove(&user);
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
                    Err(StoreError::Unavailable(why)) => {
                        // The store did not answer (it may even apply the ack later): the ack
                        // is kept and retried until the store confirms it, so it is accepted.
                        tracing::warn!(error = %why, user = &*user, offset, "store: an ack is kept for a retry");
                        self.acks.keep(user, offset, &self.hub.store_stats);
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
                offsets,
                times,
            } => {
                for offset in offsets {
                    *self.delivered.entry((user.clone(), offset)).or_default() += times;
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
            // Flattened by `run_batch` before anything is applied.
            StoreJob::Many(jobs) => {
                for job in jobs {
                    self.apply(job, now);
                }
            }
            StoreJob::Positions { shard, topics } => self.check_positions(vec![(shard, topics)]),
            StoreJob::Webhook(f) => self.webhook_fact(f, now),
            StoreJob::OutboxClaim { max, lease, reply } => {
                match self.store.outbox_claim(max, lease, now) {
                    Ok(list) => self.outs.push(Out::Claimed(reply, list)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            StoreJob::OutboxDone { ids, reply } => match self.store.outbox_done(&ids) {
                Ok(()) => {
                    self.outs.push(Out::OutboxDone(reply));
                    self.outs.push(Out::OutboxChanged);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            StoreJob::SioPut {
                pid,
                session,
                expires_ms,
            } => {
                tracing::debug!(pid = &*pid, "store: Socket.IO session kept");
                match self.store.sio_session_put(&pid, &session, expires_ms) {
                    Ok(()) => self.outs.push(Out::Written),
                    Err(e) => tracing::warn!(error = %e, "store: a Socket.IO session was not kept"),
                }
            }
            StoreJob::SioTake { conn, nsp, resume } => {
                let session = self
                    .store
                    .sio_session_take(&resume.pid, now)
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "store: a Socket.IO session could not be read");
                        None
                    });
                tracing::debug!(
                    pid = &*resume.pid,
                    found = session.is_some(),
                    "store: Socket.IO session taken"
                );
                self.outs.push(Out::Conn(
                    conn,
                    Action::SioSession {
                        nsp,
                        resume,
                        session,
                    },
                ));
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
        until: Option<u64>,
        now: u64,
    ) -> Result<HistoryRead, StoreError> {
        let ns = self
            .hub
            .namespaces
            .history(topic)
            .ok_or_else(|| StoreError::Unavailable("no history on this topic".into()))?;
        let max = self.hub.config.store.max_recover;
        history_read(
            &mut *self.store,
            topic,
            ns.limits(),
            limit,
            since,
            until,
            max,
            now,
        )
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
        let ask = SubscribeAsk {
            topic,
            limits: ns.limits(),
            rid,
            since,
            max_recover: self.hub.config.store.max_recover,
            budget: reply_budget(&self.hub),
            now,
        };
        subscribe_answer(&mut *self.store, &ask)
    }
}
