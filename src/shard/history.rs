//! History on the shards: with the memory store on one node
//! ([`Store::history_in_shards`](crate::store::Store::history_in_shards)), each topic with
//! history has an **owner shard** ([`owner`]: a hash of the topic), which keeps the topic's
//! stream ([`Streams`](crate::store::streams::Streams): ring, epoch, top offset) and is its
//! sequencer. A publication arriving on the owner is appended and delivered at once, in the
//! same loop iteration (no hop to the store thread and back); one arriving on another shard, or
//! from the pool, the API thread or the library, is handed to the owner through its inbox
//! ([`ShardMsg::History`]), as are subscribe answers and `history` reads of the topic.
//!
//! Why the guarantees of the store thread still hold:
//! - **Offsets**: one owner per topic appends, in the order it runs the jobs; per topic a
//!   total order, gapless offsets.
//! - **Every shard sees a topic in offset order**: the owner pushes each publication to the
//!   interested shards' FIFO inboxes as it appends it (and delivers its own subscribers first).
//! - **Recovery without gap or duplicate**: a subscribing shard sends the subscribe to the
//!   owner only after every shard (the owner too) acknowledged its interest, so everything the
//!   owner appends from then on is pushed to it; the answer is pushed behind every publication
//!   the owner pushed before it (same FIFO), so what the subscriber's hold skips is covered
//!   by the answer and what follows has a larger offset — the argument of `shard::hold`. On
//!   the owner itself the answer is computed and applied in one step.
//!
//! Nothing here blocks or takes a lock: the owner's stream is shard-local state, the hand-offs
//! are inbox pushes (one wake per batch, see [`Inbox`](super::inbox::Inbox)).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::answer::{history_frame, history_read, reply_budget, subscribe_answer, SubscribeAsk};
use super::inbox::{Action, ApiOp, ShardMsg, StoredPub};
use super::jobs::{HistoryTo, PubJob, PubReply, StoreJob};
use super::shared::HubShared;
use super::ShardState;
use crate::proto::envelope;
use crate::proto::error::HandlerError;
use crate::proto::handler::Outgoing;
use crate::store::streams::Streams;
use crate::ConnId;

/// The shard that owns `topic`'s stream among `shards`: FNV-1a of the topic, stable for the
/// life of the process (every thread computes the same owner without asking anyone).
pub(crate) fn owner(topic: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

/// What a delivery sends: a frame and, for a stored publication, its (epoch, offset).
#[derive(Clone, Copy)]
pub(super) enum Delivery<'a> {
    /// Held by the caller.
    Given(&'a Bytes, Option<(&'a Arc<str>, u64)>),
    /// The publication at this offset that this shard just appended to the stream at this slot
    /// of its history, which kept its frame
    /// ([`Streams::append_frame_at`](crate::store::streams::Streams::append_frame_at)): frame
    /// and epoch are read from the ring, so neither is cloned for the delivery.
    Appended(usize, u64),
}

impl<'a> Delivery<'a> {
    /// The frame and the (epoch, offset), borrowed from `history` for
    /// [`Appended`](Self::Appended) (`None`: nothing kept there, which an append just made
    /// never leaves).
    #[inline]
    pub(super) fn resolve<'b>(self, history: &'b Streams) -> Option<Resolved<'b>>
    where
        'a: 'b,
    {
        match self {
            Delivery::Given(frame, at) => Some((frame, at)),
            Delivery::Appended(slot, offset) => {
                let (frame, epoch) = history.newest(slot)?;
                Some((frame, Some((epoch, offset))))
            }
        }
    }
}

/// A resolved [`Delivery`]: the frame and the (epoch, offset) of a stored publication.
pub(super) type Resolved<'b> = (&'b Bytes, Option<(&'b Arc<str>, u64)>);

/// The topic a history job is about (`None`: not a job the owner runs).
fn job_topic(job: &StoreJob) -> Option<&str> {
    match job {
        StoreJob::Publish(p) => Some(&p.topic),
        StoreJob::Subscribe { topic, .. } | StoreJob::History { topic, .. } => Some(topic),
        _ => None,
    }
}

impl HubShared {
    /// With history on the shards: hands a publication, subscribe or history job to its
    /// topic's owner shard (an API batch loses those from its store batch); returns what is
    /// left for the store thread. Without: the job unchanged.
    pub(crate) fn route_history(&self, job: StoreJob) -> Option<StoreJob> {
        if self.shard_history.is_none() {
            return Some(job);
        }
        if let StoreJob::Many(jobs) = job {
            let rest: Vec<StoreJob> = jobs
                .into_iter()
                .filter_map(|j| self.route_history(j))
                .collect();
            return (!rest.is_empty()).then_some(StoreJob::Many(rest));
        }
        let Some(topic) = job_topic(&job) else {
            return Some(job);
        };
        let i = owner(topic, self.shards);
        self.inboxes[i].push(ShardMsg::History(job));
        None
    }
}

impl ShardState {
    /// Whether history lives on the shards and this one owns `topic`'s stream.
    pub(super) fn owns_history(&self, topic: &str) -> bool {
        self.hub.shard_history.is_some() && owner(topic, self.hub.shards) == self.index
    }

    /// Runs a history job here when this shard owns its topic; hands it on otherwise (to the
    /// owner, or to the store thread).
    pub(super) fn submit_history(
        &mut self,
        job: StoreJob,
        bounded: bool,
    ) -> Result<(), HandlerError> {
        if job_topic(&job).is_some_and(|t| self.owns_history(t)) {
            self.history_job(job);
            return Ok(());
        }
        self.hub.submit_store(job, bounded)
    }

    /// A publication of a connection of this shard on a topic with history (`None`: the topic
    /// keeps none). `Ok(true)`: the reply (`{"offset":N}`) is sent by whoever stores it.
    pub(super) fn publish_stored(
        &mut self,
        p: &Outgoing<'_>,
        conn: ConnId,
    ) -> Option<Result<bool, HandlerError>> {
        // The topic appended to last (a run from a busy publisher): owned here, with history.
        let (at, limits) = match self.history.last_for(p.topic) {
            Some(hit) => hit,
            None => {
                if !self.owns_history(p.topic) {
                    return self.hub.publish_stored(p, Some(conn));
                }
                let limits = self.hub.namespaces.history(p.topic)?.limits();
                (self.history.slot(p.topic), limits)
            }
        };
        let now = self.wall_ms();
        // The frame is encoded with the new offset and the ring keeps it (its `data` is a range
        // of it): one allocation per stored publication, as for a plain one, and the frame is
        // delivered from the ring.
        let (offset, unkept) = self
            .history
            .append_frame_at(at, limits, p.event, now, |offset| {
                envelope::stored_publication_framed(p.topic, p.event, p.data, offset)
            });
        let exclude = p.exclude_sender.then_some(conn);
        self.fan_appended(p.topic, None, (at, offset), unkept, exclude);
        Some(Ok(match p.reply_id {
            Some(rid) => {
                self.enqueue(conn, envelope::offset_reply(rid, p.topic, offset));
                true
            }
            None => false,
        }))
    }

    /// The owner's part: runs a publication, subscribe or history job of a topic it owns.
    pub(crate) fn history_job(&mut self, job: StoreJob) {
        match job {
            StoreJob::Publish(p) => self.history_publish(*p),
            StoreJob::Subscribe {
                topic,
                conn,
                rid,
                since,
                held,
            } => {
                let Some(ns) = self.hub.namespaces.history(&topic) else {
                    return;
                };
                let ask = SubscribeAsk {
                    topic: &topic,
                    limits: ns.limits(),
                    rid,
                    since: since.as_ref(),
                    max_recover: self.hub.config.store.max_recover,
                    budget: reply_budget(&self.hub),
                    now: self.wall_ms(),
                };
                let (frame, pos) = subscribe_answer(&mut self.history, &ask);
                let action = Action::Recovered {
                    topic,
                    frame,
                    held,
                    pos,
                };
                self.act_on(conn, action);
            }
            StoreJob::History {
                topic,
                limit,
                since,
                until,
                to,
            } => {
                let Some(ns) = self.hub.namespaces.history(&topic) else {
                    return;
                };
                let max = self.hub.config.store.max_recover;
                let (limits, now) = (ns.limits(), self.wall_ms());
                let read = history_read(
                    &mut self.history,
                    &topic,
                    limits,
                    limit,
                    since.as_ref(),
                    until,
                    max,
                    now,
                );
                match to {
                    HistoryTo::Api(tx) => {
                        let _ = tx.send(read);
                    }
                    HistoryTo::Conn(conn, rid) => {
                        let frame = history_frame(rid, &topic, read, reply_budget(&self.hub));
                        self.act_on(conn, Action::Send(frame));
                    }
                }
            }
            other => {
                // Never routed here; the store thread runs it.
                let _ = self.hub.submit_store(other, false);
            }
        }
    }

    /// A publication handed to the owner: appended, delivered, answered.
    fn history_publish(&mut self, p: PubJob) {
        let (at, limits) = match self.history.last_for(&p.topic) {
            Some(hit) => hit,
            None => {
                let Some(ns) = self.hub.namespaces.history(&p.topic) else {
                    return;
                };
                (self.history.slot(&p.topic), ns.limits())
            }
        };
        let now = self.wall_ms();
        let (offset, unkept) = self
            .history
            .append_frame_at(at, limits, &p.event, now, |o| {
                envelope::stored_publication_framed(&p.topic, &p.event, p.data.as_deref(), o)
            });
        match p.reply {
            PubReply::Api(tx) => {
                // The API counts deliveries: every shard delivers and answers its count.
                let Some(sp) = self.appended_pub(p.topic, (at, offset), unkept, p.exclude) else {
                    return;
                };
                let mut waits = Vec::with_capacity(self.hub.shards);
                for i in 0..self.hub.shards {
                    let (t, r) = oneshot::channel();
                    if i == self.index {
                        let _ = t.send(self.api(ApiOp::Stored(sp.clone())));
                    } else {
                        self.hub.inboxes[i].push(ShardMsg::Api(ApiOp::Stored(sp.clone()), t));
                    }
                    waits.push(r);
                }
                let _ = tx.send(Ok((offset, waits)));
            }
            reply => {
                let topic = &p.topic;
                self.fan_appended(topic, Some(topic), (at, offset), unkept, p.exclude);
                if let PubReply::Conn(conn, rid) = reply {
                    let frame = envelope::offset_reply(rid, topic, offset);
                    self.act_on(conn, Action::Send(frame));
                }
            }
        }
    }

    /// The publication just appended at (slot, offset) of this shard's history as a
    /// [`StoredPub`] for other shards (frame and epoch shared); `unkept`: its frame when the
    /// ring did not keep it.
    fn appended_pub(
        &self,
        topic: Arc<str>,
        (at, offset): (usize, u64),
        unkept: Option<Bytes>,
        exclude: Option<ConnId>,
    ) -> Option<StoredPub> {
        let epoch = self.history.epoch_at(at)?.clone();
        let frame = match unkept {
            Some(f) => f,
            None => self.history.newest(at)?.0.clone(),
        };
        Some(StoredPub {
            topic,
            frame,
            exclude,
            epoch,
            offset,
        })
    }

    /// Delivers the publication this shard just appended as its topic's owner, at (slot,
    /// offset) of its history (`unkept`: its frame when the ring did not keep it): pushed to
    /// every other shard interested in the topic, then to this shard's subscribers, with the
    /// hold rules of [`deliver_stored`](Self::deliver_stored). Returns the local count.
    ///
    /// The frame and the epoch are read from the ring where the append left them: no reference
    /// count is touched for this shard's own subscribers but one per delivered frame.
    fn fan_appended(
        &mut self,
        topic: &str,
        arc: Option<&Arc<str>>,
        (at, offset): (usize, u64),
        unkept: Option<Bytes>,
        exclude: Option<ConnId>,
    ) -> usize {
        let mut mask = self.interest.shards_for(topic) & !(1u64 << self.index);
        if mask != 0 {
            let topic = arc.cloned().unwrap_or_else(|| topic.into());
            if let Some(sp) = self.appended_pub(topic, (at, offset), unkept.clone(), exclude) {
                let batch: Arc<[StoredPub]> = Arc::new([sp]);
                while mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    self.hub.inboxes[i].push(ShardMsg::Stored(batch.clone()));
                }
            }
        }
        self.pub_seq += 1;
        let seq = self.pub_seq;
        if !self.sio.is_empty() && self.recovery_window().is_some() {
            if let Some(epoch) = self.history.epoch_at(at) {
                self.sio_seen.saw(topic, epoch, offset);
            }
        }
        let Some(frame) = unkept else {
            let what = Delivery::Appended(at, offset);
            return self.deliver_seq(topic, what, exclude, Some(None), seq);
        };
        let Some(epoch) = self.history.epoch_at(at).cloned() else {
            return 0;
        };
        let what = Delivery::Given(&frame, Some((&epoch, offset)));
        self.deliver_seq(topic, what, exclude, Some(None), seq)
    }

    /// Applies an action for a connection here, or on its shard.
    fn act_on(&mut self, conn: ConnId, action: Action) {
        if conn.shard() == self.index {
            self.conn_action(conn, action);
        } else if let Some(inbox) = self.hub.inboxes.get(conn.shard()) {
            inbox.push(ShardMsg::Conn(conn, action));
        }
    }

    /// Wall-clock milliseconds of the shell's current time (the time of appended
    /// publications, and of TTL cut-offs). The shell's time changes once per loop turn
    /// ([`set_now`](ShardState::set_now)), so it is computed once per turn, not per
    /// publication.
    fn wall_ms(&mut self) -> u64 {
        if let Some(ms) = self.wall_ms {
            return ms;
        }
        let wall = self.wall_epoch + self.now.duration_since(self.epoch);
        let ms = wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.wall_ms = Some(ms);
        ms
    }
}
