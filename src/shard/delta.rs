//! Delta delivery (`delta: "fossil"` on subscribe to a topic with history): a subscriber gets
//! each publication as a Fossil delta against the previous one it received.
//!
//! The shard keeps, per topic that has delta subscribers, the previous publication's data and
//! position, and per delta subscriber the shard-wide sequence number of the last publication of
//! the topic it was given. A publication is then delivered in one pass ([`Round`]): the delta
//! against the previous data is made **once**, at the first subscriber that can take it, and
//! shared by every other such subscriber like the plain frame; a subscriber that did not get
//! the previous publication (just subscribed or recovered, held back, a gap) gets the full
//! frame. Every [`CompressionConfig::delta_full_every`](crate::config::CompressionConfig)-th
//! publication, a publication whose offset does not follow the previous one (a gap, a new
//! epoch), one without data and one whose delta would not be smaller go full to everyone.
//!
//! The state exists only while the topic has delta subscribers: a subscriber's entry is an
//! integer in a map made at subscribe time, so delivery allocates nothing per subscriber.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{flag, Frame, ShardState};
use crate::proto::delta::{self, StoredParts};
use crate::proto::error::ErrorCode;
use crate::proto::stats::ShardStats;
use crate::ConnId;

/// The only delta encoding offered.
pub(super) const FOSSIL: &str = "fossil";

/// One topic's delta state on a shard.
#[derive(Default)]
pub(crate) struct TopicDelta {
    /// Delta subscribers: the sequence number of the last publication of this topic each was
    /// given (0: none since it subscribed).
    subs: HashMap<ConnId, u64>,
    /// The previous publication: (epoch, offset, delivery sequence number, data).
    prev: Option<(Arc<str>, u64, u64, Bytes)>,
    /// Publications since the last forced full one.
    since_full: u32,
}

impl TopicDelta {
    /// Drops `id`; whether any delta subscriber is left.
    pub(super) fn forget(&mut self, id: ConnId) -> bool {
        self.subs.remove(&id);
        !self.subs.is_empty()
    }
}

/// The delta topics of a shard.
pub(crate) type Deltas = HashMap<Arc<str>, TopicDelta>;

/// One publication's delivery pass over a delta topic.
pub(super) struct Round<'a> {
    t: &'a mut TopicDelta,
    seq: u64,
    /// The previous publication's delivery number, when this one may go as a delta.
    base_seq: Option<u64>,
    base: Option<Bytes>,
    parts: Option<StoredParts>,
    /// The delta frame, made at the first subscriber that can take one (`None` inside: the
    /// delta was not worth it, or could not be made).
    frame: Option<Option<Frame>>,
    full_len: usize,
    epoch: Arc<str>,
    offset: u64,
    stats: &'a ShardStats,
}

impl<'a> Round<'a> {
    /// Starts the pass of the stored publication `frame` at (`epoch`, `offset`), delivery
    /// number `seq`; `None` when `topic` has no delta subscriber on this shard.
    pub(super) fn start(
        deltas: &'a mut Deltas,
        topic: &str,
        (epoch, offset): (&Arc<str>, u64),
        frame: &Bytes,
        seq: u64,
        full_every: u32,
        stats: &'a ShardStats,
    ) -> Option<Self> {
        let t = deltas.get_mut(topic)?;
        let parts = delta::split_stored(frame);
        t.since_full += 1;
        let periodic = full_every > 0 && t.since_full >= full_every;
        if periodic {
            t.since_full = 0;
        }
        let (base_seq, base) = match &t.prev {
            Some((e, o, s, d))
                if !periodic && parts.is_some() && **e == **epoch && *o + 1 == offset =>
            {
                (Some(*s), Some(d.clone()))
            }
            _ => (None, None),
        };
        Some(Round {
            t,
            seq,
            base_seq,
            base,
            parts,
            frame: None,
            full_len: frame.len(),
            epoch: epoch.clone(),
            offset,
            stats,
        })
    }

    /// The delta frame for connection `id`, or `None` for the full frame (not a delta
    /// subscriber of the topic, or it did not receive the previous publication). Records that
    /// `id` is given this publication.
    pub(super) fn frame_for(&mut self, id: ConnId) -> Option<&Frame> {
        let last = self.t.subs.get_mut(&id)?;
        let had = std::mem::replace(last, self.seq);
        if Some(had) != self.base_seq {
            return None;
        }
        let made = self.frame.get_or_insert_with(|| {
            let (parts, base) = (self.parts.as_ref()?, self.base.as_ref()?);
            let d = delta::encode(base, &parts.data);
            ShardStats::add(&self.stats.deltas, 1);
            let f = delta::delta_frame(parts, &d).filter(|f| f.len() < self.full_len)?;
            Some(Frame::new(f))
        });
        let f = made.as_ref()?;
        ShardStats::add(&self.stats.delta_deliveries, 1);
        Some(f)
    }

    /// Ends the pass: this publication becomes the base of the next delta.
    pub(super) fn finish(self) {
        self.t.prev = self
            .parts
            .map(|p| (self.epoch, self.offset, self.seq, p.data));
    }
}

/// Why a subscribe asking for `delta` is refused (code, message), if it is.
pub(super) fn refusal(
    delta: Option<&str>,
    exact: bool,
    history: bool,
) -> Option<(ErrorCode, &'static str)> {
    match delta? {
        FOSSIL if !exact => Some((
            ErrorCode::BadRequest,
            "delta needs an exact topic, not a pattern",
        )),
        FOSSIL if !history => Some((
            ErrorCode::NotAvailable,
            "delta needs a topic with history (offsets)",
        )),
        FOSSIL => None,
        _ => Some((
            ErrorCode::BadRequest,
            "unknown delta encoding (only \"fossil\")",
        )),
    }
}

impl ShardState {
    /// Makes `id` a delta subscriber of `topic` (or restarts it: its next publication is full).
    pub(super) fn delta_subscribe(&mut self, id: ConnId, topic: &str) {
        let Some(c) = self.conn_mut(id) else { return };
        c.set(flag::DELTA);
        match self.deltas.get_mut(topic) {
            Some(t) => {
                t.subs.insert(id, 0);
            }
            None => {
                let mut t = TopicDelta::default();
                t.subs.insert(id, 0);
                self.deltas.insert(topic.into(), t);
            }
        }
    }

    /// `id` no longer receives `pattern` (unsubscribed or closing): it leaves the delta
    /// subscribers of that topic, and the topic's state goes with its last one.
    pub(super) fn delta_unsubscribe(&mut self, id: ConnId, pattern: &str) {
        if !self.conn_mut(id).is_some_and(|c| c.has(flag::DELTA)) {
            return;
        }
        let Some(t) = self.deltas.get_mut(pattern) else {
            return;
        };
        t.subs.remove(&id);
        if t.subs.is_empty() {
            self.deltas.remove(pattern);
        }
    }

    /// Delta topics with state on this shard (tests).
    #[cfg(test)]
    pub(super) fn delta_topics(&self) -> usize {
        self.deltas.len()
    }
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
