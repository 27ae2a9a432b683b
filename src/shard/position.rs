//! The periodic position check (a cluster on the Redis store; Centrifugo's idea).
//!
//! A shard learns that its node missed a stored publication (the node's subscriber connection
//! to Redis was down while it was published) from the topic's next publication, whose offset
//! leaves a gap (`check_stream`). On a topic that stays quiet after the miss nothing more
//! arrives, so its subscribers would stay silently behind. Every `[cluster] position_check`
//! the shard therefore asks the store thread for the latest position of every topic it tracks
//! ([`StoreJob::Positions`]: one job per shard, read in one script call per Redis instance) and
//! compares the answer with what its subscribers are known to have reached ([`Stream::seen`]).
//!
//! A position the store reports may simply be in flight to this node (published in Redis, not
//! yet read from the subscriber connection), so one behind answer proves nothing. The answer is
//! kept as *due*; when the next check finds the subscribers still not at it, publications
//! written to Redis at least one interval earlier never arrived: they were missed, and the
//! topic's subscribers (but those waiting for a store answer, which will cover them; those
//! answered earlier are behind too: `seen` includes their answers) are closed
//! with [`CLOSE_INSUFFICIENT_STATE`](super::hold::CLOSE_INSUFFICIENT_STATE) to recover with
//! `since`. So a miss is noticed within about two intervals (plus up to one tick), and the
//! cost is one job per shard per interval — nothing per publication beyond updating the
//! topic's entry the gap check reads anyway.

use std::sync::Arc;
use std::time::Instant;

use super::jobs::StoreJob;
use super::ShardState;

/// What a shard knows of one topic with history it has subscribers for (cluster only).
#[derive(Debug, Default)]
pub(crate) struct Stream {
    /// The last stored publication received (epoch, offset): a later one at or below it is a
    /// repeat, one that does not follow it a gap.
    pub(super) last: Option<(Arc<str>, u64)>,
    /// How far the topic's subscribers here are known to be: publications received and
    /// positions answered to their subscribes. `None`: nothing yet (a subscribe without an
    /// answer): the first check's answer is taken as the start.
    seen: Option<(Arc<str>, u64)>,
    /// The store's position at the previous check, which `seen` did not cover then.
    due: Option<(Arc<str>, u64)>,
}

/// Whether `seen` is at or past `(epoch, offset)`.
fn covers(seen: &(Arc<str>, u64), epoch: &str, offset: u64) -> bool {
    *seen.0 == *epoch && seen.1 >= offset
}

impl Stream {
    /// A stream whose first publication here is `(epoch, offset)`.
    pub(super) fn received(epoch: &Arc<str>, offset: u64) -> Stream {
        Stream {
            last: Some((epoch.clone(), offset)),
            seen: Some((epoch.clone(), offset)),
            due: None,
        }
    }

    /// A publication `(epoch, offset)` was delivered (another epoch replaces the old one: the
    /// gap check has closed the subscribers of the old one).
    pub(super) fn saw(&mut self, epoch: &Arc<str>, offset: u64) {
        match &mut self.seen {
            Some((e, o)) if **e == **epoch => *o = (*o).max(offset),
            _ => self.seen = Some((epoch.clone(), offset)),
        }
    }

    /// A subscribe was answered at `(epoch, top)`. An answer of another epoch than the one
    /// the other subscribers follow leaves them be judged against the store.
    fn answered(&mut self, epoch: &Arc<str>, top: u64) {
        match &mut self.seen {
            None => self.seen = Some((epoch.clone(), top)),
            Some((e, o)) if **e == **epoch => *o = (*o).max(top),
            Some(_) => {}
        }
    }

    /// Judges the store's position `(epoch, top)`: true when the previous check's position is
    /// still not reached (publications were missed; the stream then starts again from `top`).
    fn judge(&mut self, epoch: Arc<str>, top: u64) -> bool {
        let Some(seen) = &self.seen else {
            self.seen = Some((epoch, top));
            return false;
        };
        if let Some((e, o)) = self.due.take() {
            if !covers(seen, &e, o) {
                self.last = Some((epoch.clone(), top));
                self.seen = Some((epoch, top));
                return true;
            }
        }
        if !covers(seen, &epoch, top) {
            self.due = Some((epoch, top));
        }
        false
    }
}

/// When the shard last asked, and whether the answer is still awaited.
#[derive(Debug)]
pub(crate) struct Check {
    last: Instant,
    asked: bool,
}

impl Check {
    pub(super) fn new(now: Instant) -> Check {
        Check {
            last: now,
            asked: false,
        }
    }
}

impl ShardState {
    /// From the timer: every `[cluster] position_check`, asks the store for the positions of
    /// the tracked topics (one job; not while the previous answer is awaited).
    pub(super) fn check_positions(&mut self) {
        let every = self.hub.config.cluster.position_check;
        if !self.hub.cluster.remote_store
            || every.is_zero()
            || self.streams.is_empty()
            || self.check.asked
            || self.now.duration_since(self.check.last) < every
        {
            return;
        }
        self.check.last = self.now;
        let topics = self.streams.keys().cloned().collect();
        let job = StoreJob::Positions {
            shard: self.index,
            topics,
        };
        self.check.asked = self.hub.submit_store(job, true).is_ok();
    }

    /// The store's answer to [`check_positions`](Self::check_positions).
    pub(super) fn positions_answered(&mut self, answer: Vec<(Arc<str>, Arc<str>, u64)>) {
        self.check.asked = false;
        let mut missed = Vec::new();
        for (topic, epoch, top) in answer {
            if let Some(s) = self.streams.get_mut(&*topic) {
                if s.judge(epoch, top) {
                    missed.push(topic);
                }
            }
        }
        for topic in missed {
            tracing::info!(
                topic = &*topic,
                "position check: stored publications were missed (Redis subscriber connection lost?): closing the topic's subscribers with 4010"
            );
            // A subscriber answered before is behind too: the answers are in `seen`.
            self.insufficient_state(&topic, false);
        }
    }

    /// A subscribe to `topic` was answered at `pos`: its subscriber is there.
    pub(super) fn answered_position(&mut self, topic: &Arc<str>, pos: &(Arc<str>, u64)) {
        if !self.hub.cluster.remote_store {
            return;
        }
        if let Some(s) = self.streams.get_mut(&**topic) {
            s.answered(&pos.0, pos.1);
        } else if self.tracks(topic) {
            let mut s = Stream::default();
            s.answered(&pos.0, pos.1);
            self.streams.insert(topic.clone(), s);
        }
    }

    /// Starts tracking an exact topic with history a connection subscribed to (cluster): a
    /// quiet one is checked too, from the first check's answer on.
    pub(super) fn watch_stream(&mut self, topic: &str) {
        if self.hub.cluster.remote_store && !self.streams.contains_key(topic) && self.tracks(topic)
        {
            self.streams.insert(topic.into(), Stream::default());
        }
    }

    /// Whether `topic` has subscribers on this shard (an entry for one without would outlive
    /// `forget_streams`).
    fn tracks(&self, topic: &str) -> bool {
        crate::proto::pattern::Pattern::parse(topic)
            .ok()
            .and_then(|p| self.registry.subscribers(p))
            .is_some_and(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::inbox::{Action, ShardMsg};
    use crate::shard::tests::holds::held_subscriber;
    use crate::shard::tests::written;

    fn check(top: u64) -> ShardMsg {
        ShardMsg::Positions(vec![("t".into(), "e1".into(), top)])
    }

    fn closed_4010(out: &[u8]) -> bool {
        out.len() >= 4 && out[0] == 0x88 && u16::from_be_bytes([out[2], out[3]]) == 4010
    }

    /// A shard whose subscriber of `t` got offset 1: a position reported once ahead (in
    /// flight) that then arrives is fine; one still ahead at the next check closes it.
    #[test]
    fn a_subscriber_still_behind_the_store_at_the_next_check_is_closed_with_4010() {
        let (mut st, slot, stored) = held_subscriber();
        st.handle_msg(stored(1));
        st.handle_msg(check(2));
        st.handle_msg(stored(2));
        st.handle_msg(check(2));
        let out = written(&mut st, slot);
        assert!(!closed_4010(&out), "{}", String::from_utf8_lossy(&out));
        assert!(String::from_utf8_lossy(&out).contains("\"offset\":2"));
        st.handle_msg(check(3));
        assert!(written(&mut st, slot).is_empty(), "in flight, maybe");
        st.handle_msg(check(3));
        assert!(closed_4010(&written(&mut st, slot)), "missed");
    }

    /// A subscriber whose subscribe was answered (top 3, nothing received since: an answered
    /// hold) is behind the store too when offset 4 never comes.
    #[test]
    fn an_answered_subscriber_on_a_quiet_topic_is_closed_too() {
        let (mut st, slot, _) = held_subscriber();
        let id = st.conns[slot as usize].id;
        st.hold(id, "t".into());
        let recovered = Action::Recovered {
            topic: "t".into(),
            frame: None,
            held: true,
            pos: Some(("e1".into(), 3)),
        };
        st.handle_msg(ShardMsg::Conn(id, recovered));
        st.handle_msg(check(3));
        st.handle_msg(check(3));
        assert!(written(&mut st, slot).is_empty(), "at the store's position");
        st.handle_msg(check(4));
        st.handle_msg(check(4));
        assert!(closed_4010(&written(&mut st, slot)), "missed offset 4");
    }

    fn pos(e: &str, o: u64) -> (Arc<str>, u64) {
        (e.into(), o)
    }

    #[test]
    fn a_position_in_flight_is_not_a_miss_but_one_still_missing_at_the_next_check_is() {
        let e: Arc<str> = "e".into();
        let mut s = Stream::received(&e, 5);
        // Published in Redis, not yet received: due.
        assert!(!s.judge(e.clone(), 6));
        // It arrived before the next check: fine.
        s.saw(&e, 6);
        assert!(!s.judge(e.clone(), 6));
        // Offset 7 is reported twice without arriving: missed.
        assert!(!s.judge(e.clone(), 7));
        assert!(s.judge(e.clone(), 7));
        // The stream starts again from there: no second alarm for the same miss.
        assert_eq!(s.last, Some(pos("e", 7)));
        assert!(!s.judge(e.clone(), 7));
    }

    #[test]
    fn a_new_epoch_left_unseen_is_a_miss_and_an_unknown_start_is_taken_from_the_store() {
        let mut s = Stream::default();
        assert!(
            !s.judge("e1".into(), 3),
            "nothing known: the answer is the start"
        );
        assert!(!s.judge("e1".into(), 3));
        assert!(!s.judge("e2".into(), 1));
        assert!(
            s.judge("e2".into(), 1),
            "Redis lost its data and nothing came since"
        );
    }

    #[test]
    fn answers_move_the_known_position_up_within_their_epoch() {
        let e: Arc<str> = "e".into();
        let mut s = Stream::default();
        s.answered(&e, 4);
        assert!(!s.judge(e.clone(), 4));
        s.answered(&e, 2);
        s.answered(&"other".into(), 9);
        assert!(!s.judge(e.clone(), 5));
        s.answered(&e, 5);
        assert!(
            !s.judge(e, 5),
            "the subscribe answered at 5 covers what was due"
        );
    }
}
