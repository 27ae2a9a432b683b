//! Holds: a connection whose subscribe to a topic with history waits for the store's answer
//! must not receive that topic's stored publications yet, and must receive, after the answer,
//! exactly those the answer does not cover.
//!
//! **One node** (the store thread emits publications): the answer reaches the shard behind
//! every publication emitted before it, through the same FIFO inbox, so whatever arrives while
//! the hold lasts is covered by the answer and is skipped; everything after has a larger offset.
//!
//! **A cluster** (a store that [delivers](crate::store::Store::delivers) publications itself,
//! through Redis pub/sub): publications and the answer travel on different Redis connections, so
//! either may overtake the other. What arrives while the hold waits is kept (offset and frame);
//! the answer's position (epoch, top offset) then decides: kept publications above the top (or
//! of another epoch) are queued after the answer, the rest are covered and dropped. If none was
//! above the top, the hold stays *answered*: the stream of one topic reaches a node in offset
//! order, so later arrivals at or below the top are late copies of covered publications
//! (dropped) and the first one above it ends the hold. Above the top, the connection must get
//! `top + 1` next, then each following offset of the same epoch: a kept or arriving publication
//! that skips one (the node's subscriber connection to Redis dropped while the answer was read
//! on the other connection) or belongs to another epoch closes it with
//! [`CLOSE_INSUFFICIENT_STATE`] instead, as it does every other subscriber of the topic.

use std::sync::Arc;

use bytes::Bytes;

use super::{flag, ShardState};
use crate::ConnId;

/// One held topic of one connection.
pub(crate) struct Hold {
    pub(super) topic: Arc<str>,
    /// Cluster only: stored publications that arrived while waiting (epoch, offset, frame).
    kept: Vec<(Arc<str>, u64, Bytes)>,
    /// Cluster only: the answer's position, once it arrived with nothing above it yet.
    answered: Option<(Arc<str>, u64)>,
}

/// What the delivery loop does with a stored publication for a held connection.
pub(super) enum Verdict {
    /// Not held for this topic: deliver.
    Deliver,
    /// Covered by the answer, or kept for later: do not queue now.
    Skip,
    /// Above an answered hold's top: deliver, and the hold is over.
    DeliverAndEnd,
    /// Not the one after an answered hold's top (a gap, or another epoch): the connection
    /// missed publications and is closed with [`CLOSE_INSUFFICIENT_STATE`].
    Missed,
}

/// Checks (and in a cluster, records) a stored publication against a connection's holds.
/// `pos` is the publication's (epoch, offset) when the store delivers (a cluster).
pub(super) fn verdict(
    holds: &mut [Hold],
    topic: &str,
    pos: Option<(&Arc<str>, u64)>,
    frame: &Bytes,
) -> Verdict {
    let Some(h) = holds.iter_mut().find(|h| *h.topic == *topic) else {
        return Verdict::Deliver;
    };
    let Some((epoch, offset)) = pos else {
        return Verdict::Skip;
    };
    match &h.answered {
        None => {
            h.kept.push((epoch.clone(), offset, frame.clone()));
            Verdict::Skip
        }
        Some((e, top)) if **e == **epoch && offset <= *top => Verdict::Skip,
        Some((e, top)) if **e == **epoch && offset == *top + 1 => Verdict::DeliverAndEnd,
        Some(_) => Verdict::Missed,
    }
}

/// Close code for connections that missed stored publications (a gap in a topic's stream after
/// the node lost Redis for a moment, or a new epoch): reconnect and recover with `since`.
pub const CLOSE_INSUFFICIENT_STATE: u16 = 4010;

/// The reason sent with [`CLOSE_INSUFFICIENT_STATE`].
pub(super) const MISSED: &str = "missed publications: reconnect and recover with since";

impl ShardState {
    /// Cluster: checks a stored publication against the last one this shard saw of its topic.
    /// Returns false for a repeat (not to deliver). A gap or another epoch means the shard's
    /// subscribers missed publications (the subscriber connection to Redis was lost for a
    /// moment): those not waiting on a store answer are closed with
    /// [`CLOSE_INSUFFICIENT_STATE`], so their clients recover instead of silently missing them.
    pub(super) fn check_stream(&mut self, topic: &Arc<str>, epoch: &Arc<str>, offset: u64) -> bool {
        let gap = match self.streams.get_mut(&**topic) {
            Some(s) => {
                let gap = match &s.last {
                    Some((e, last)) if **e == **epoch && offset <= *last => return false,
                    Some((e, last)) => **e != **epoch || offset != *last + 1,
                    None => false,
                };
                s.last = Some((epoch.clone(), offset));
                s.saw(epoch, offset);
                gap
            }
            None => {
                let s = super::position::Stream::received(epoch, offset);
                self.streams.insert(topic.clone(), s);
                false
            }
        };
        if gap {
            self.insufficient_state(topic, true);
        }
        true
    }

    /// Closes the subscribers of `topic` with [`CLOSE_INSUFFICIENT_STATE`], except those whose
    /// subscribe waits for the store's answer (it will cover what was missed) and, with
    /// `spare_answered`, those answered at a position the delivery loop judges (see
    /// [`verdict`]).
    pub(super) fn insufficient_state(&mut self, topic: &str, spare_answered: bool) {
        let Ok(p) = crate::proto::pattern::Pattern::parse(topic) else {
            return;
        };
        let Some(set) = self.registry.subscribers(p) else {
            return;
        };
        let ids: Vec<ConnId> = set
            .iter()
            .filter_map(|&slot| self.conns.get(slot as usize))
            .map(|c| c.id)
            .collect();
        for id in ids {
            let waits = self.held.get(&id).is_some_and(|l| {
                l.iter()
                    .any(|h| *h.topic == *topic && (spare_answered || h.answered.is_none()))
            });
            if !waits {
                tracing::debug!(conn = %id, topic, "missed stored publications: closing");
                self.end_answered(id, topic);
                self.close(id, CLOSE_INSUFFICIENT_STATE, MISSED);
            }
        }
    }

    /// Forgets what this shard saw of the topics `pattern` covers (it lost its last subscriber
    /// of it, so it will not receive them any more).
    pub(super) fn forget_streams(&mut self, pattern: &str) {
        if self.streams.is_empty() {
            return;
        }
        match pattern.strip_suffix('*') {
            Some(prefix) => self.streams.retain(|t, _| !t.starts_with(prefix)),
            None => {
                self.streams.remove(pattern);
            }
        }
    }

    /// Holds back stored publications of `topic` from `id` until the store's answer. An
    /// answered hold of the same topic (cluster) is superseded: the new answer will filter.
    pub(super) fn hold(&mut self, id: ConnId, topic: Arc<str>) {
        let Some(c) = self.conn_mut(id) else { return };
        c.set(flag::HELD);
        let list = self.held.entry(id).or_default();
        list.retain(|h| h.answered.is_none() || h.topic != topic);
        list.push(Hold {
            topic,
            kept: Vec::new(),
            answered: None,
        });
    }

    /// Queues a publication a hold kept (empty: one the connection excluded itself from). A
    /// Socket.IO connection with recovery on gets it with its offset argument, as the delivery
    /// loop would have sent it; without, its client's recovery offset would fall behind.
    fn enqueue_kept(&mut self, id: ConnId, epoch: &str, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        let home = self.conn(id).and_then(|c| c.sio_home());
        let frame = match home {
            Some(home) if !self.hub.config.socketio_recovery.is_zero() => {
                let names = &self.hub.config.socketio_namespaces;
                crate::proto::socketio_map::frame_from_envelope_at(&frame, names, home, Some(epoch))
                    .unwrap_or(frame)
            }
            _ => frame,
        };
        self.enqueue(id, frame);
    }

    /// Ends a [`hold`](Self::hold) (the first waiting one of `topic`) without an answer:
    /// whatever it kept is queued as it is.
    pub(super) fn release(&mut self, id: ConnId, topic: &str) {
        if let Some(h) = self.take_hold(id, topic) {
            for (epoch, _, frame) in h.kept {
                self.enqueue_kept(id, &epoch, frame);
            }
        }
    }

    /// Ends a hold with the store's answer: `frame` (the reply) first, then (cluster) the kept
    /// publications the answer's position `pos` does not cover.
    pub(super) fn release_answered(
        &mut self,
        id: ConnId,
        topic: &str,
        frame: Option<Bytes>,
        pos: Option<(Arc<str>, u64)>,
    ) {
        let hold = self.take_hold(id, topic);
        if let Some(f) = frame {
            self.enqueue(id, f);
        }
        let Some(h) = hold else { return };
        let Some((epoch, top)) = pos.filter(|_| self.hub.cluster.remote_store) else {
            for (e, _, f) in h.kept {
                self.enqueue_kept(id, &e, f);
            }
            return;
        };
        // Kept publications above the top must continue it without a gap, in its epoch.
        let mut next = top + 1;
        for (e, offset, f) in h.kept {
            if *e == *epoch && offset < next {
                continue; // covered by the answer
            }
            if *e != *epoch || offset != next {
                self.close(id, CLOSE_INSUFFICIENT_STATE, MISSED);
                return;
            }
            next += 1;
            self.enqueue_kept(id, &e, f);
        }
        if next == top + 1 {
            // A later subscribe of the topic still waiting for its answer keeps what arrives
            // and its answer decides; an older answered hold is superseded by this one.
            if self.conn_mut(id).is_none() {
                return;
            }
            let list = self.held.entry(id).or_default();
            list.retain(|h| h.answered.is_none() || *h.topic != *topic);
            if list.iter().any(|h| *h.topic == *topic) {
                return;
            }
            list.push(Hold {
                topic: topic.into(),
                kept: Vec::new(),
                answered: Some((epoch, top)),
            });
            let Some(c) = self.conn_mut(id) else { return };
            c.set(flag::HELD);
        }
    }

    /// Removes an answered hold the delivery loop found passed.
    pub(super) fn end_answered(&mut self, id: ConnId, topic: &str) {
        let Some(list) = self.held.get_mut(&id) else {
            return;
        };
        list.retain(|h| h.answered.is_none() || *h.topic != *topic);
        self.drop_empty_hold(id);
    }

    fn take_hold(&mut self, id: ConnId, topic: &str) -> Option<Hold> {
        let list = self.held.get_mut(&id)?;
        let i = list
            .iter()
            .position(|h| h.answered.is_none() && *h.topic == *topic)?;
        let h = list.swap_remove(i);
        self.drop_empty_hold(id);
        Some(h)
    }

    fn drop_empty_hold(&mut self, id: ConnId) {
        if self.held.get(&id).is_some_and(Vec::is_empty) {
            self.held.remove(&id);
            if let Some(c) = self.conn_mut(id) {
                c.clear(flag::HELD);
            }
        }
    }

    /// Whether `id` waits for the store's answer on `topic`.
    pub(super) fn is_held(&self, id: ConnId, topic: &str) -> bool {
        self.held
            .get(&id)
            .is_some_and(|l| l.iter().any(|h| h.answered.is_none() && *h.topic == *topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(topic: &str) -> Hold {
        Hold {
            topic: topic.into(),
            kept: Vec::new(),
            answered: None,
        }
    }

    #[test]
    fn one_node_skips_everything_while_waiting() {
        let mut holds = vec![waiting("t")];
        let f = Bytes::from_static(b"x");
        assert!(matches!(verdict(&mut holds, "t", None, &f), Verdict::Skip));
        assert!(matches!(
            verdict(&mut holds, "u", None, &f),
            Verdict::Deliver
        ));
        assert!(holds[0].kept.is_empty(), "one node keeps nothing");
    }

    #[test]
    fn cluster_keeps_while_waiting_then_filters_by_the_answer() {
        let e: Arc<str> = "e1".into();
        let f = Bytes::from_static(b"x");
        let mut holds = vec![waiting("t")];
        for o in [4, 5] {
            assert!(matches!(
                verdict(&mut holds, "t", Some((&e, o)), &f),
                Verdict::Skip
            ));
        }
        assert_eq!(
            holds[0].kept.iter().map(|k| k.1).collect::<Vec<_>>(),
            [4, 5]
        );
        // Answered at top 6: late copies at or below it are covered, the first above ends it.
        holds[0].answered = Some((e.clone(), 6));
        holds[0].kept.clear();
        assert!(matches!(
            verdict(&mut holds, "t", Some((&e, 6)), &f),
            Verdict::Skip
        ));
        assert!(matches!(
            verdict(&mut holds, "t", Some((&e, 7)), &f),
            Verdict::DeliverAndEnd
        ));
        // Past the top with a gap, or another epoch (Redis lost its data): the connection
        // missed publications.
        assert!(matches!(
            verdict(&mut holds, "t", Some((&e, 9)), &f),
            Verdict::Missed
        ));
        let e2: Arc<str> = "e2".into();
        assert!(matches!(
            verdict(&mut holds, "t", Some((&e2, 1)), &f),
            Verdict::Missed
        ));
    }
}
