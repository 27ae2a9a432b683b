//! The shard's state machine: queues, closing, fan-out, subscriptions and cross-shard interest.

use std::sync::Arc;

use bytes::Bytes;

use super::events::EventKind;
use super::history::Delivery;
use super::hold::Verdict;
use super::inbox::{ShardMsg, StoredPub};
use super::{flag, ConnEntry, Frame, PendingInterest, ShardState};
use crate::proto::envelope;
use crate::proto::error::{ErrorCode, HandlerError};
use crate::proto::pattern::Pattern;
use crate::proto::registry::{Subscribed, Unsubscribed};
use crate::ConnId;

impl ShardState {
    /// Queues to one connection; a queue over its bound makes it a slow consumer.
    pub(super) fn enqueue(&mut self, id: ConnId, frame: Bytes) {
        let limit = self.hub.config.outbound_queue;
        let Some(c) = self.conn_mut(id) else { return };
        if c.closing.is_some() {
            return;
        }
        let frame = self.packed_for(id, frame);
        let Some(c) = self.conn_mut(id) else { return };
        // A reply or error to one connection: compressed for it alone, over the threshold
        // (with context takeover, by its own stream).
        let frame = match c.deflate() {
            (0, _) => frame,
            (bits, false) => self.deflater.frame(&frame, bits).unwrap_or(frame),
            (bits, true) => match self.deflater.frame_kept(id.raw(), &frame, bits, false) {
                Ok(f) => f.unwrap_or(frame),
                Err((code, reason)) => return self.close(id, code, reason),
            },
        };
        let Some(c) = self.conn_mut(id) else { return };
        if c.queued + frame.len() > limit {
            self.slow_consumer(id);
            return;
        }
        c.queued += frame.len();
        c.out.push_back(Frame::new(frame));
        self.mark_dirty(id.slot());
    }

    /// Drops the queued frames that are not being written: a frame partly written (or in a
    /// send the kernel still holds) is finished, so the close frame that follows stays readable.
    pub(super) fn drop_queue(c: &mut ConnEntry) {
        let keep = (c.in_flight as usize).max(usize::from(c.head_sent > 0));
        while c.out.len() > keep {
            if let Some(f) = c.out.pop_back() {
                c.queued -= f.len();
            }
        }
    }

    pub(super) fn slow_consumer(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id) else { return };
        let user = c.user.as_deref().unwrap_or("-");
        tracing::warn!(conn = %id, remote = %c.remote, user, queued = c.queued, "slow consumer: outbound queue full, closing with 1008");
        Self::drop_queue(c);
        self.hub.stats[self.index]
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.close(id, 1008, "slow consumer");
        self.note(
            id,
            EventKind::SlowConsumer,
            "outbound queue full: closed with 1008",
        );
    }

    /// Records a notable event about `id` for the admin dashboard (never on delivery).
    pub(super) fn note(&mut self, id: ConnId, kind: EventKind, detail: &str) {
        let user = self.conn_mut(id).and_then(|c| c.user.clone());
        let client = self.hub.client_id(id);
        self.hub
            .events
            .record(kind, client, user.as_deref(), detail);
    }

    pub(super) fn close(&mut self, id: ConnId, code: u16, reason: &str) {
        self.close_frame(id, envelope::close_frame(code, reason));
    }

    pub(super) fn close_frame(&mut self, id: ConnId, frame: Bytes) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.closing.is_some() {
            return;
        }
        c.queued += frame.len();
        c.out.push_back(Frame::new(frame));
        self.mark_dirty(id.slot());
        self.begin_close(id);
    }

    /// Marks the connection closing and drops its subscriptions so nothing more is delivered.
    pub(super) fn begin_close(&mut self, id: ConnId) {
        if self
            .conn(id)
            .is_some_and(|c| c.closing.is_none() && c.has(flag::SIO))
        {
            self.sio_keep_sessions(id);
        }
        let now = self.stamp;
        let Some(c) = self.conn_mut(id) else { return };
        if c.closing.is_none() {
            c.closing = Some(now);
        }
        let subs = std::mem::take(&mut c.subs);
        // Nothing compressed goes out any more (a close frame is a control frame).
        self.deflater.forget(id.raw());
        self.cancel_sync(id);
        for p in subs {
            self.drop_subscription(id, &p);
            self.announce_leave(id, &p);
        }
    }

    pub(super) fn drop_subscription(&mut self, id: ConnId, pattern: &str) {
        self.delta_unsubscribe(id, pattern);
        let Ok(p) = Pattern::parse(pattern) else {
            return;
        };
        if self.registry.unsubscribe(p, id.slot()) == Unsubscribed::Last {
            self.webhook_topic(pattern, false);
            self.broadcast_interest(pattern, false, None);
            self.forget_streams(pattern);
        }
    }

    /// Tells the other shards and the cluster broker that this shard gained (`add`) its first
    /// or lost its last subscriber of `pattern`; returns how many acknowledgements of `ack`
    /// will come back.
    pub(super) fn broadcast_interest(&self, pattern: &str, add: bool, ack: Option<u64>) -> usize {
        if self.hub.shards < 2 && !self.hub.cluster.clustered {
            return 0;
        }
        let pattern: Arc<str> = pattern.into();
        let mut acks = 0;
        for (i, inbox) in self.hub.inboxes.iter().enumerate() {
            if i != self.index {
                inbox.push(ShardMsg::Interest {
                    pattern: pattern.clone(),
                    shard: self.index,
                    add,
                    ack,
                });
                acks += usize::from(ack.is_some());
            }
        }
        // The broker answers once the node's subscription in the cluster is confirmed, so a
        // subscribe reply means "later publications reach me" on every node.
        if self.hub.cluster.clustered
            && self
                .hub
                .cluster
                .broker
                .interest(&pattern, self.index, add, ack)
        {
            acks += 1;
        }
        acks
    }

    pub(super) fn interest_acked(&mut self, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        p.remaining -= 1;
        if p.remaining > 0 {
            return;
        }
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        self.pending_by_pattern.retain(|_, t| *t != token);
        for id in p.held {
            if let Some(c) = self.conn_mut(id) {
                c.hold = c.hold.saturating_sub(1);
                if c.hold == 0 {
                    self.mark_dirty(id.slot());
                }
            }
        }
        for (conn, rid, topic) in p.waiters {
            self.enqueue(conn, envelope::reply(rid, &topic, None));
        }
        for job in p.then {
            self.submit_held(job);
        }
    }

    /// Delivers a publication to this shard's subscribers of `topic`, once per connection, but
    /// not to `exclude`.
    pub(super) fn deliver_local(
        &mut self,
        topic: &str,
        frame: &Bytes,
        exclude: Option<ConnId>,
    ) -> usize {
        self.pub_seq += 1;
        let what = Delivery::Given(frame, None);
        self.deliver_seq(topic, what, exclude, None, self.pub_seq)
    }

    /// Delivers a publication the store sequenced: connections whose subscribe to its topic
    /// waits for the store's answer are skipped or, in a cluster, judged by offset (see `hold`).
    pub(super) fn deliver_stored(&mut self, p: &StoredPub) -> usize {
        if self.hub.cluster.remote_store && !self.check_stream(&p.topic, &p.epoch, p.offset) {
            return 0;
        }
        self.pub_seq += 1;
        self.sio_saw(&p.topic, &p.epoch, p.offset);
        let pos = self
            .hub
            .cluster
            .remote_store
            .then_some((&p.epoch, p.offset));
        let what = Delivery::Given(&p.frame, Some((&p.epoch, p.offset)));
        self.deliver_seq(&p.topic, what, p.exclude, Some(pos), self.pub_seq)
    }

    /// Delivers one publication to several topics: each connection receives it once, through
    /// the first of the topics it is subscribed to.
    pub(super) fn deliver_many(
        &mut self,
        frames: &[(Arc<str>, Bytes)],
        exclude: Option<ConnId>,
    ) -> usize {
        self.pub_seq += 1;
        let seq = self.pub_seq;
        frames
            .iter()
            .map(|(t, f)| self.deliver_seq(t, Delivery::Given(f, None), exclude, None, seq))
            .sum()
    }

    /// `stored`: `Some` for a stored publication, with its (epoch, offset) in a cluster;
    /// `what`: the frame and, for a stored publication, its (epoch, offset) wherever it was
    /// stored (for delta subscribers and Socket.IO recovery).
    pub(super) fn deliver_seq(
        &mut self,
        topic: &str,
        what: Delivery<'_>,
        exclude: Option<ConnId>,
        stored: Option<Option<(&Arc<str>, u64)>>,
        seq: u64,
    ) -> usize {
        // Borrows this shard's history (another field than those the delivery changes) when the
        // publication is the one just appended here.
        let Some((frame, at)) = what.resolve(&self.history) else {
            return 0;
        };
        let mut delivered = 0;
        let limit = self.hub.config.outbound_queue;
        let mut slow: Vec<ConnId> = Vec::new();
        let conns = &mut self.conns;
        let dirty = &mut self.dirty;
        let held = &mut self.held;
        let check_held = stored.is_some() && !held.is_empty();
        let pos = stored.flatten();
        let mut ended: Vec<ConnId> = Vec::new();
        let mut missed: Vec<ConnId> = Vec::new();
        let mut failed: Vec<(ConnId, crate::proto::frame::Fail)> = Vec::new();
        // The compressed and MessagePack frames, each made at the first subscriber that needs
        // it and shared by the others.
        let mut encodings = super::formats::Encodings::new(frame);
        let no_frame = Bytes::new();
        let deflater = &mut self.deflater;
        let stats = &self.hub.stats[self.index];
        let namespaces = &self.hub.config.socketio_namespaces;
        let sio = &self.sio;
        // Connection state recovery: stored publications carry their offset to Socket.IO.
        let sio_at = at
            .filter(|_| !self.hub.config.socketio_recovery.is_zero())
            .map(|(e, _)| &**e);
        // Delta subscribers of a topic with history: the delta is made once (see `delta`).
        let every = self.hub.config.compression.delta_full_every;
        let mut round = at.and_then(|at| {
            super::delta::Round::start(&mut self.deltas, topic, at, frame, seq, every, stats)
        });
        // `user:<id>` topics reach only that user's connections, whatever pattern matched.
        let owner = topic.strip_prefix(crate::policy::security::PRIVATE_PREFIX);
        self.registry.for_each_set(topic, |set| {
            for &slot in set {
                let Some(c) = conns.get_mut(slot as usize) else {
                    continue;
                };
                if c.stamp == seq {
                    continue;
                }
                c.stamp = seq;
                if owner.is_some() && c.user.as_deref() != owner {
                    continue;
                }
                // The excluded publisher's holds still see the offset (an empty frame if kept),
                // so the stream it is owed stays gapless.
                let excluded = exclude == Some(c.id);
                if check_held && c.flags & flag::HELD != 0 {
                    if let Some(holds) = held.get_mut(&c.id) {
                        let kept = if excluded { &no_frame } else { frame };
                        match super::hold::verdict(holds, topic, pos, kept) {
                            Verdict::Deliver => {}
                            Verdict::Skip => continue,
                            Verdict::DeliverAndEnd => ended.push(c.id),
                            Verdict::Missed => {
                                missed.push(c.id);
                                continue;
                            }
                        }
                    }
                }
                if excluded {
                    continue;
                }
                let own;
                let f = if c.eio_bare() {
                    // Bare Engine.IO: the data as one message, made once per shard.
                    match encodings.pick_eio() {
                        Some(f) => f,
                        None => continue,
                    }
                } else if let Some(home) = c.sio_home() {
                    // Socket.IO: its own encoding per namespace, never compressed or a delta.
                    // The namespaces holding a matching room (the home one, usually).
                    let mask = if c.flags & flag::SIO_ROOMS != 0 {
                        sio.get(&c.id).map_or(1 << home, |s| {
                            super::sio_rooms::topic_mask(&s.rooms, c, home, topic)
                        })
                    } else {
                        1 << home
                    };
                    match encodings.pick_sio(stats, namespaces, mask, sio_at) {
                        Some(f) => f,
                        None => continue,
                    }
                } else {
                    let (bits, kept) = c.deflate();
                    let packed = c.msgpack();
                    // Deltas are JSON: MessagePack connections get full publications.
                    let delta = match &mut round {
                        Some(r) if c.flags & flag::DELTA != 0 && !packed => r.frame_for(c.id),
                        _ => None,
                    };
                    match delta {
                        // Deltas go uncompressed (small; see PROTOCOL.md "Delta updates").
                        Some(d) => d,
                        // Context takeover: compressed for this connection alone, by its stream.
                        None if kept && bits != 0 => {
                            let base = encodings.pick(deflater, stats, 0, packed).clone();
                            match deflater.frame_kept(c.id.raw(), &base, bits, false) {
                                Ok(Some(b)) => {
                                    own = Frame::new(b);
                                    &own
                                }
                                Ok(None) => encodings.pick(deflater, stats, 0, packed),
                                Err(fail) => {
                                    failed.push((c.id, fail));
                                    continue;
                                }
                            }
                        }
                        None => encodings.pick(deflater, stats, bits, packed),
                    }
                };
                if c.queued + f.len() > limit {
                    slow.push(c.id);
                    continue;
                }
                c.queued += f.len();
                c.out.push_back(f.clone());
                if c.flags & flag::DIRTY == 0 {
                    c.flags |= flag::DIRTY;
                    dirty.push(slot);
                }
                delivered += 1;
            }
        });
        if let Some(r) = round {
            r.finish();
        }
        for id in slow {
            self.slow_consumer(id);
        }
        for (id, (code, reason)) in failed {
            self.close(id, code, reason);
        }
        for id in ended {
            self.end_answered(id, topic);
        }
        for id in missed {
            self.end_answered(id, topic);
            self.close(
                id,
                super::hold::CLOSE_INSUFFICIENT_STATE,
                super::hold::MISSED,
            );
        }
        delivered
    }

    /// Publishes to the cluster (other nodes), every shard interested in `topic`, then locally.
    pub(super) fn publish(&mut self, topic: &str, frame: Bytes, exclude: Option<ConnId>) {
        let mut mask = self.interest.shards_for(topic) & !(1u64 << self.index);
        if self.hub.cluster.clustered {
            self.hub
                .cluster
                .broker
                .publish(&[(topic.into(), frame.clone())]);
        }
        if mask != 0 {
            let t: Arc<str> = topic.into();
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                self.hub.inboxes[i].push(ShardMsg::Publish {
                    topic: t.clone(),
                    frame: frame.clone(),
                    exclude,
                });
            }
        }
        self.deliver_local(topic, &frame, exclude);
    }

    /// Subscribes; returns the interest token to wait for when other shards must learn first.
    pub(super) fn subscribe(
        &mut self,
        id: ConnId,
        pattern: &str,
    ) -> Result<Option<u64>, HandlerError> {
        let p = Pattern::parse(pattern).map_err(|e| HandlerError::bad_request(e.to_string()))?;
        let max = self.hub.config.max_subscriptions;
        let Some(c) = self.conn_mut(id) else {
            return Ok(None);
        };
        if c.closing.is_some() {
            return Ok(None);
        }
        if c.subs.iter().any(|s| &**s == pattern) {
            self.sio_room_added(id, pattern, true);
            return Ok(self.pending_by_pattern.get(pattern).copied());
        }
        if c.subs.len() >= max {
            return Err(HandlerError::new(
                ErrorCode::Forbidden,
                format!("subscription limit reached ({max})"),
            ));
        }
        c.subs.push(pattern.into());
        self.sio_room_added(id, pattern, false);
        let first = self.registry.subscribe(p, id.slot()) == Subscribed::First;
        if first {
            self.webhook_topic(pattern, true);
        }
        if first && (self.hub.shards > 1 || self.hub.cluster.clustered) {
            let token = self.next_token;
            self.next_token += 1;
            let remaining = self.broadcast_interest(pattern, true, Some(token));
            if remaining == 0 {
                return Ok(None);
            }
            self.pending.insert(
                token,
                PendingInterest {
                    remaining,
                    waiters: Vec::new(),
                    held: Vec::new(),
                    then: Vec::new(),
                },
            );
            self.pending_by_pattern.insert(pattern.into(), token);
            return Ok(Some(token));
        }
        Ok(self.pending_by_pattern.get(pattern).copied())
    }

    pub(super) fn unsubscribe(&mut self, id: ConnId, pattern: &str) {
        // A Socket.IO room another namespace still holds stays subscribed.
        if self.sio_room_kept(id, pattern) {
            return;
        }
        let Some(c) = self.conn_mut(id) else { return };
        let before = c.subs.len();
        c.subs.retain(|s| &**s != pattern);
        if c.subs.len() != before {
            self.drop_subscription(id, pattern);
            self.announce_leave(id, pattern);
        }
    }
}
