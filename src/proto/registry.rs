//! The shard-local subscription registry and the replicated cross-shard interest table. Both are
//! plain data: the shard drives them, tests drive them without a runtime.

use indexmap::IndexSet;

use crate::proto::pattern::{FastHash, Pattern, PatternMap};

/// A connection's slot in its shard's connection table.
pub type Slot = u32;

/// The subscriber set of one pattern: dense for fast fan-out, O(1) removal.
pub type Subscribers = IndexSet<Slot, FastHash>;

/// What a subscribe did to this shard's interest in the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// The first local subscriber: other shards must learn that this shard is interested.
    First,
    /// Another subscriber of a pattern the shard already had.
    Added,
    /// The connection was already subscribed to this pattern.
    Already,
}

/// What an unsubscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The last local subscriber left: other shards can stop sending.
    Last,
    /// Removed; others remain.
    Removed,
    /// The connection was not subscribed.
    NotSubscribed,
}

/// Which local connections are subscribed to which patterns.
#[derive(Debug, Default)]
pub struct Registry {
    subs: PatternMap<Subscribers>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `slot` to `pattern`.
    pub fn subscribe(&mut self, pattern: Pattern<'_>, slot: Slot) -> Subscribed {
        let set = self
            .subs
            .entry_or_insert_with(pattern, Subscribers::default);
        if !set.insert(slot) {
            Subscribed::Already
        } else if set.len() == 1 {
            Subscribed::First
        } else {
            Subscribed::Added
        }
    }

    /// Unsubscribes `slot` from `pattern`.
    pub fn unsubscribe(&mut self, pattern: Pattern<'_>, slot: Slot) -> Unsubscribed {
        let Some(set) = self.subs.get_mut(pattern) else {
            return Unsubscribed::NotSubscribed;
        };
        if !set.swap_remove(&slot) {
            return Unsubscribed::NotSubscribed;
        }
        if set.is_empty() {
            self.subs.remove(pattern);
            Unsubscribed::Last
        } else {
            Unsubscribed::Removed
        }
    }

    /// Calls `f` with each subscriber set whose pattern matches `topic`. A connection subscribed
    /// through several matching patterns appears in several sets; callers de-duplicate.
    #[inline]
    pub fn for_each_set(&self, topic: &str, f: impl FnMut(&Subscribers)) {
        self.subs.for_each_match(topic, f);
    }

    /// The local subscribers of exactly this pattern.
    pub fn subscribers(&self, pattern: Pattern<'_>) -> Option<&Subscribers> {
        self.subs.get(pattern)
    }

    /// Number of local subscribers of exactly this pattern.
    pub fn subscriber_count(&self, pattern: Pattern<'_>) -> usize {
        self.subs.get(pattern).map_or(0, IndexSet::len)
    }

    /// Every pattern with local subscribers and their number (for the admin API; not on the
    /// delivery path).
    pub fn iter(&self) -> impl Iterator<Item = (String, usize)> + '_ {
        self.subs.iter().map(|(p, set)| (p, set.len()))
    }

    /// Number of patterns with at least one local subscriber.
    pub fn pattern_count(&self) -> usize {
        self.subs.len()
    }
}

/// Which shards have subscribers for which patterns, as this shard last heard. Each shard keeps
/// its own copy, updated from messages in its inbox, so a publish reads it without any lock.
#[derive(Debug, Default)]
pub struct Interest {
    shards: PatternMap<u64>,
}

impl Interest {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `shard` (< 64) has subscribers for `pattern`.
    pub fn add(&mut self, pattern: Pattern<'_>, shard: usize) {
        *self.shards.entry_or_insert_with(pattern, || 0) |= 1 << shard;
    }

    /// Records that `shard` no longer has subscribers for `pattern`.
    pub fn remove(&mut self, pattern: Pattern<'_>, shard: usize) {
        if let Some(mask) = self.shards.get_mut(pattern) {
            *mask &= !(1 << shard);
            if *mask == 0 {
                self.shards.remove(pattern);
            }
        }
    }

    /// Bit mask of the shards interested in `topic`.
    #[inline]
    pub fn shards_for(&self, topic: &str) -> u64 {
        let mut mask = 0;
        self.shards.for_each_match(topic, |m| mask |= *m);
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern<'_> {
        Pattern::parse(s).unwrap()
    }

    fn subscribers(r: &Registry, topic: &str) -> Vec<Slot> {
        let mut v = vec![];
        r.for_each_set(topic, |s| v.extend(s.iter().copied()));
        v.sort_unstable();
        v
    }

    #[test]
    fn subscribe_transitions() {
        let mut r = Registry::new();
        assert_eq!(r.subscribe(p("a"), 1), Subscribed::First);
        assert_eq!(r.subscribe(p("a"), 2), Subscribed::Added);
        assert_eq!(r.subscribe(p("a"), 2), Subscribed::Already);
        assert_eq!(r.unsubscribe(p("a"), 3), Unsubscribed::NotSubscribed);
        assert_eq!(r.unsubscribe(p("a"), 1), Unsubscribed::Removed);
        assert_eq!(r.unsubscribe(p("a"), 2), Unsubscribed::Last);
        assert_eq!(r.unsubscribe(p("a"), 2), Unsubscribed::NotSubscribed);
        assert_eq!(r.pattern_count(), 0);
    }

    #[test]
    fn wildcard_and_exact_subscribers_both_match() {
        let mut r = Registry::new();
        r.subscribe(p("chat:*"), 1);
        r.subscribe(p("chat:a"), 2);
        r.subscribe(p("chat:a"), 1);
        r.subscribe(p("news"), 3);
        assert_eq!(subscribers(&r, "chat:a"), vec![1, 1, 2]);
        assert_eq!(subscribers(&r, "chat:b"), vec![1]);
        assert_eq!(subscribers(&r, "news"), vec![3]);
        assert_eq!(subscribers(&r, "newsy"), Vec::<Slot>::new());
        assert_eq!(r.subscriber_count(p("chat:a")), 2);
    }

    #[test]
    fn interest_masks() {
        let mut i = Interest::new();
        i.add(p("chat:*"), 0);
        i.add(p("chat:a"), 3);
        i.add(p("chat:a"), 1);
        assert_eq!(i.shards_for("chat:a"), 0b1011);
        assert_eq!(i.shards_for("chat:b"), 0b0001);
        i.remove(p("chat:a"), 3);
        i.remove(p("chat:*"), 0);
        assert_eq!(i.shards_for("chat:a"), 0b0010);
        assert_eq!(i.shards_for("chat:b"), 0);
    }
}
