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
use tokio::sync::oneshot;

use crate::cluster::ControlOp;
use crate::shard::inbox::{Action, StoredPub};
use crate::shard::jobs::{DurableReply, InboxFrames, PubJob, PubReply, StoreJob};
use crate::shard::shared::HubShared;
use crate::store::{
    HistoryRead, InboxMessage, MessageInfo, MessageStatus, OutboxEntry, StatusChange, Store,
    StoreError,
};
use crate::ConnId;
use apply::PutJob;

mod apply;
mod check;
mod emit;
mod history;
mod open;
pub(crate) use open::open_store;
mod retry;
#[cfg(test)]
mod seq_tests;
mod unsynced;
mod webhooks;
pub(crate) use emit::durable_frame;

/// Every job sender is gone.
struct Gone;

/// The next job, waiting up to `wait` for one (`None`: none came). Blocks without spinning:
/// crossbeam's `recv_timeout` spins and then `sched_yield`s before it parks, CPU taken from the
/// shards when they share the store thread's core; a `Select` tries once, then parks.
fn next_job(
    jobs: &crossbeam_channel::Receiver<StoreJob>,
    wait: Duration,
) -> Result<Option<StoreJob>, Gone> {
    match jobs.try_recv() {
        Ok(job) => return Ok(Some(job)),
        Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(Gone),
        Err(crossbeam_channel::TryRecvError::Empty) => {}
    }
    let mut sel = crossbeam_channel::Select::new_biased();
    sel.recv(jobs);
    match sel.select_timeout(wait) {
        Ok(op) => op.recv(jobs).map(Some).map_err(|_| Gone),
        Err(_) => Ok(None),
    }
}

/// Most jobs applied per commit.
const MAX_BATCH: usize = 8_192;
/// Longest wait for a job: an idle store thread still runs a batch this often (expiry, webhook
/// retries).
const IDLE: Duration = Duration::from_secs(1);

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
        reply: DurableReply,
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
        let sync = &self.hub.config.store;
        if self.store.name() == "redb" {
            tracing::info!(
                store = self.store.name(),
                sync = sync.sync.name(),
                sync_interval = ?sync.sync_every(),
                "store thread started"
            );
        } else {
            tracing::info!(store = self.store.name(), "store thread started");
        }
        let mut batch = Vec::new();
        // How long until the store's next log sync is due (`[store] sync = "interval"`).
        let mut sync_wait = None;
        loop {
            let wait = sync_wait.map_or(IDLE, |w: Duration| w.min(IDLE));
            match next_job(&self.jobs, wait) {
                Ok(Some(job)) => batch.push(job),
                Ok(None) => {}
                Err(Gone) => return,
            }
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let stop = self.run_batch(&mut batch);
            sync_wait = self.sync_due(stop);
            if stop {
                return;
            }
        }
    }

    /// Lets the store sync what its sync policy left unsynced once due (everything when
    /// `all`: a clean stop); returns how long until the next sync is due.
    fn sync_due(&mut self, all: bool) -> Option<Duration> {
        let r = self.store.sync_due(all);
        self.hub
            .store_stats
            .log_syncs
            .store(self.store.log_syncs(), Ordering::Relaxed);
        match r {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "store: syncing the write-ahead log failed");
                self.publish_health();
                None
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
        // Transitions whose cluster-wide check failed, again when their back-off allows (an
        // idle store thread still runs a batch every second).
        self.webhook_retry(false);
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
        // Consecutive durable sends form one run too (local stores: see `put_run`).
        let gather_puts = !self.hub.cluster.remote_store;
        let mut puts: Vec<PutJob> = Vec::new();
        for job in batch.drain(..) {
            match job {
                StoreJob::Publish(p) => {
                    self.put_run(&mut puts, now);
                    run.push(*p);
                    continue;
                }
                StoreJob::InboxPut {
                    user,
                    event,
                    data,
                    reply,
                } if gather_puts => {
                    self.publish_run(&mut run, now);
                    puts.push(PutJob {
                        user,
                        event,
                        data,
                        reply,
                    });
                    continue;
                }
                StoreJob::Webhook(f) => {
                    self.webhook_fact(f, now);
                    continue;
                }
                StoreJob::Stop => {
                    // The last chance to tell Redis (one pass, whatever the back-off).
                    self.webhook_retry(true);
                    stop = true;
                }
                StoreJob::Positions { shard, topics } => checks.push((shard, topics)),
                job => {
                    self.put_run(&mut puts, now);
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
        self.put_run(&mut puts, now);
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
}
