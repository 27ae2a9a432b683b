//! Node-wide webhook transitions whose cluster-wide check failed (Redis timed out or was
//! unreachable), kept until Redis answers.
//!
//! In a cluster, the set of nodes holding a key (`topic:<t>`, `user:<u>`) lives in Redis and
//! decides which node sends the occupied / vacated (online / offline) event. A check that
//! failed left that set unchanged (or, if Redis ran the call but its answer was lost, changed);
//! sending the event anyway and never running the check again would leave this node in the set
//! after a removal — every later transition of the key lost cluster-wide — or make a duplicate
//! after an addition. So the key is recorded here instead, and
//! [`Sequencer::webhook_retry`](super::Sequencer) runs the check again, with back-off, until
//! Redis answers; the event (if the answer says this node made the cluster-wide transition) is
//! then sent late, once.
//!
//! While keys wait, a transition of another key joins them without a check of its own (which
//! would cost a failure, up to a 3 s timeout, per transition while Redis is down).
//!
//! Memory: one entry per key whose node-wide state changed while Redis was failing (a key that
//! flips again while recorded updates its entry), gone once Redis answered for it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// First wait after a failed pass; doubled after each failed pass.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two passes while Redis keeps failing.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Most checks one pass runs (one Redis round trip each), so a long outage's backlog does not
/// hold one store batch for long; the rest runs in the next batches, without waiting.
pub(super) const PASS_MAX: usize = 1_000;

/// One key's unchecked change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// Whether this node held the key when Redis last confirmed it (before the first failed
    /// check).
    pub base: bool,
    /// Whether this node holds the key now.
    pub want: bool,
    /// When this node's state last changed to `want` (ms since the epoch): the time of the
    /// event, if one is sent.
    pub at: u64,
}

impl Entry {
    /// What to send once Redis answered the check of `want` with `transition` (this node's
    /// change, or — on a retry that found the change already made — the state it found, was
    /// the cluster-wide one): `Some(want)` for an event. Nothing when the key flipped back to
    /// what Redis had: nothing happened, as far as the cluster can tell.
    pub fn event(&self, transition: bool) -> Option<bool> {
        (self.want != self.base && transition).then_some(self.want)
    }
}

/// The recorded keys (`topic:<t>`, `user:<u>`) and when the next retry may run.
#[derive(Default)]
pub(super) struct Unsynced {
    keys: HashMap<String, Entry>,
    /// No retry before this (`None`: at the next batch).
    next: Option<Instant>,
    /// The wait after the next failed pass.
    backoff: Duration,
}

impl Unsynced {
    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A key flipped to `on` at `at`: `true` when it is recorded (its check must wait for the
    /// retry, so the checks of one key reach Redis in order), and its entry was updated.
    pub fn flip(&mut self, key: &str, on: bool, at: u64) -> bool {
        match self.keys.get_mut(key) {
            Some(e) => {
                e.want = on;
                e.at = at;
                true
            }
            None => false,
        }
    }

    /// The check of `key` turning `on` at `at` failed (or was not tried, others waiting
    /// already): recorded for a retry. Redis had the other state: the key was not recorded.
    pub fn failed(&mut self, key: String, on: bool, at: u64) {
        self.keys.insert(
            key,
            Entry {
                base: !on,
                want: on,
                at,
            },
        );
    }

    /// Whether a retry pass is due at `now` (`force`: whatever the back-off, at shutdown).
    pub fn due(&self, now: Instant, force: bool) -> bool {
        !self.keys.is_empty() && (force || self.next.is_none_or(|t| now >= t))
    }

    /// Up to [`PASS_MAX`] keys for a pass, with their entries.
    pub fn batch(&self) -> Vec<(String, Entry)> {
        self.keys
            .iter()
            .take(PASS_MAX)
            .map(|(k, e)| (k.clone(), *e))
            .collect()
    }

    /// Redis answered for `key` (checked as `entry`): forgotten, unless it flipped meanwhile
    /// (it cannot within one pass: facts are applied between passes).
    pub fn done(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// The end of a pass: `failed` when Redis failed again (the next pass waits, twice as long
    /// each time up to [`BACKOFF_MAX`]); otherwise the next batch goes on with what is left.
    pub fn passed(&mut self, now: Instant, failed: bool) {
        if failed {
            self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            self.next = Some(now + self.backoff);
        } else {
            self.backoff = Duration::ZERO;
            self.next = None;
        }
    }

    /// The first failure of a run of them: the first retry waits [`BACKOFF_MIN`].
    pub fn arm(&mut self, now: Instant) {
        if self.next.is_none() {
            self.backoff = BACKOFF_MIN;
            self.next = Some(now + BACKOFF_MIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_change_is_sent_when_it_was_the_transition() {
        let mut u = Unsynced::default();
        u.failed("topic:a".into(), false, 7);
        let (key, e) = u.batch().pop().unwrap();
        assert_eq!((key.as_str(), e.at), ("topic:a", 7));
        assert_eq!(e.event(true), Some(false));
        assert_eq!(e.event(false), None, "another node still holds it");
    }

    #[test]
    fn a_key_that_flipped_back_sends_nothing() {
        let mut u = Unsynced::default();
        assert!(!u.flip("user:u", true, 1), "not recorded: checked at once");
        u.failed("user:u".into(), true, 1);
        assert!(u.flip("user:u", false, 2));
        let e = u.batch()[0].1;
        assert_eq!((e.base, e.want), (false, false));
        assert_eq!(e.event(true), None);
        assert_eq!(e.event(false), None);
        // On again: the net change is "on", with the time of the last flip.
        assert!(u.flip("user:u", true, 3));
        let e = u.batch()[0].1;
        assert_eq!((e.event(true), e.at), (Some(true), 3));
        u.done("user:u");
        assert!(u.is_empty());
        assert!(!u.flip("user:u", false, 4));
    }

    #[test]
    fn retries_back_off_up_to_the_maximum() {
        let mut u = Unsynced::default();
        let t = Instant::now();
        assert!(!u.due(t, true), "nothing to retry");
        u.failed("topic:a".into(), true, 0);
        u.arm(t);
        assert!(!u.due(t, false));
        assert!(u.due(t, true), "forced at shutdown");
        assert!(u.due(t + BACKOFF_MIN, false));
        let mut waits = Vec::new();
        for _ in 0..6 {
            u.passed(t, true);
            waits.push(u.next.unwrap() - t);
        }
        assert_eq!(waits[0], BACKOFF_MIN * 2);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        u.passed(t, false);
        assert!(u.due(t, false), "Redis answered: the rest goes on at once");
    }
}
