//! The webhook outbox: events waiting to be sent to the application's backend, kept in the
//! Store so that none is lost to a restart or a backend outage.
//!
//! # Guarantees (every implementation)
//! - **At least once.** An event pushed ([`Store::outbox_push`](super::Store::outbox_push)) and
//!   committed stays until [`outbox_done`](super::Store::outbox_done) names its id, whatever
//!   happens to the process in between (as durable as the store's other data: not across a
//!   restart for `memory`).
//! - **Ids.** Every event gets an id unique in the outbox, also across a loss of the store's
//!   data (the local stores start from [`first_message_id`](super::first_message_id) of the
//!   clock), so receivers de-duplicate by id.
//! - **Order.** [`outbox_claim`](super::Store::outbox_claim) hands out the oldest unleased
//!   events first, in push order: a batch is in push order, and batches follow each other in
//!   push order while nothing fails. A retried batch may overtake nothing (its sender retries it
//!   before claiming more), but after a lease expires an event can arrive after newer ones.
//! - **Leases.** A claimed event is handed out again only to a claim whose `lease` has passed
//!   since it was claimed (its sender is still retrying it, or died): the claimer says how
//!   long a claim is respected, as with Redis's `XAUTOCLAIM` min-idle-time. The local stores keep leases in memory: after a restart
//!   every pending event is claimable at once. The Redis store keeps them in the stream's
//!   consumer group, so in a cluster each event is claimed by one node at a time and taken over
//!   by another only after the lease (a node died).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

/// One event handed out by [`outbox_claim`](super::Store::outbox_claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its id (the event's `id` on the wire).
    pub id: String,
    /// The event's JSON object, without its id.
    pub body: Bytes,
    /// When it was pushed (ms since the Unix epoch).
    pub created_ms: u64,
}

/// How much the outbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Events not yet done (claimed ones included).
    pub backlog: u64,
    /// When the oldest of them was pushed (ms since the Unix epoch), if any.
    pub oldest_ms: Option<u64>,
}

/// A pending event in an [`OutboxIndex`].
#[derive(Debug)]
struct Pending<T> {
    created_ms: u64,
    /// When it was last claimed (`None`: never).
    claimed_ms: Option<u64>,
    value: T,
}

/// The local stores' outbox bookkeeping in memory: pending ids in order with their creation
/// time and lease, and whatever the store keeps with them (`T`: the body for the memory store,
/// nothing for redb, which reads bodies from its table).
#[derive(Debug)]
pub(crate) struct OutboxIndex<T> {
    pending: BTreeMap<u64, Pending<T>>,
    next: u64,
}

impl<T> OutboxIndex<T> {
    /// An empty index whose first id is `first`.
    pub(crate) fn new(first: u64) -> Self {
        Self {
            pending: BTreeMap::new(),
            next: first.max(1),
        }
    }

    /// Adds an event; returns its id.
    pub(crate) fn push(&mut self, created_ms: u64, value: T) -> u64 {
        let id = self.next;
        self.next += 1;
        self.insert(id, created_ms, value);
        id
    }

    /// The id the next [`push`](Self::push) gives.
    pub(crate) fn next_id(&self) -> u64 {
        self.next
    }

    /// Adds an event with a known id (loading a store, replaying a log); later ids are above it.
    pub(crate) fn insert(&mut self, id: u64, created_ms: u64, value: T) {
        self.next = self.next.max(id + 1);
        self.pending.insert(
            id,
            Pending {
                created_ms,
                claimed_ms: None,
                value,
            },
        );
    }

    /// Claims up to `max` events, oldest first, that were never claimed or last claimed at
    /// least `lease` ago.
    pub(crate) fn claim(
        &mut self,
        max: usize,
        lease: Duration,
        now_ms: u64,
    ) -> Vec<(u64, u64, &T)> {
        let lease = lease.as_millis() as u64;
        self.pending
            .iter_mut()
            .filter(|(_, p)| {
                p.claimed_ms
                    .is_none_or(|c| now_ms >= c.saturating_add(lease))
            })
            .take(max)
            .map(|(id, p)| {
                p.claimed_ms = Some(now_ms);
                (*id, p.created_ms, &p.value)
            })
            .collect()
    }

    /// Removes an event; false if it was not pending.
    pub(crate) fn done(&mut self, id: u64) -> bool {
        self.pending.remove(&id).is_some()
    }

    /// Backlog and oldest creation time.
    pub(crate) fn stats(&self) -> OutboxStats {
        OutboxStats {
            backlog: self.pending.len() as u64,
            oldest_ms: self.pending.values().map(|p| p.created_ms).min(),
        }
    }
}

/// Parses a local store's outbox id (decimal); `None` for anything else.
pub(crate) fn local_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_hide_claimed_events_until_they_expire() {
        let mut o = OutboxIndex::new(10);
        for t in 0..5 {
            o.push(t, ());
        }
        let lease = Duration::from_millis(100);
        let a: Vec<u64> = o.claim(3, lease, 1000).iter().map(|e| e.0).collect();
        assert_eq!(a, [10, 11, 12]);
        let b: Vec<u64> = o.claim(3, lease, 1050).iter().map(|e| e.0).collect();
        assert_eq!(b, [13, 14]);
        assert!(o.done(11));
        assert!(!o.done(11));
        let c: Vec<u64> = o.claim(10, lease, 1100).iter().map(|e| e.0).collect();
        assert_eq!(c, [10, 12]);
        assert_eq!(
            o.stats(),
            OutboxStats {
                backlog: 4,
                oldest_ms: Some(0)
            }
        );
        o.insert(3, 0, ());
        assert_eq!(o.push(0, ()), 15);
    }
}
