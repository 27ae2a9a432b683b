//! Committed batches waiting to be durable, in commit order (sans-IO: plain data, no clock).
//!
//! A store with background syncs ([`Store::commit_pipelined`](crate::store::Store::commit_pipelined))
//! gives each batch a ticket; the batch is durable once the store's durable mark reaches it.
//! Batch N+1 may have read what batch N wrote (a subscribe's position, a recovery), so a batch
//! is shown only when it *and every batch before it* are durable: tickets are kept
//! non-decreasing (a batch that wrote nothing waits for the last one that did) and batches leave
//! from the front only.

use std::collections::VecDeque;

/// Batches (`T`: their results) waiting for their tickets, oldest first.
pub(crate) struct Pending<T> {
    queue: VecDeque<(u64, T)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<T> Pending<T> {
    /// Queues a batch durable at `ticket` (raised to the last queued ticket, so it never
    /// overtakes an earlier batch).
    pub(crate) fn push(&mut self, ticket: u64, batch: T) {
        let ticket = self.queue.back().map_or(ticket, |(t, _)| ticket.max(*t));
        self.queue.push_back((ticket, batch));
    }

    /// The oldest batch if it is durable at mark `durable`, removed.
    pub(crate) fn pop_ready(&mut self, durable: u64) -> Option<T> {
        if self.queue.front().is_some_and(|(t, _)| *t <= durable) {
            return self.queue.pop_front().map(|(_, b)| b);
        }
        None
    }

    /// Every batch still waiting, oldest first (a failed sync: none will be durable).
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..).map(|(_, b)| b)
    }

    /// Whether no batch waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many batches wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Pending;

    fn ready(p: &mut Pending<&'static str>, mark: u64) -> Vec<&'static str> {
        std::iter::from_fn(|| p.pop_ready(mark)).collect()
    }

    #[test]
    fn batches_leave_in_order_once_durable() {
        let mut p = Pending::default();
        p.push(1, "a");
        p.push(2, "b");
        p.push(3, "c");
        assert!(ready(&mut p, 0).is_empty());
        assert_eq!(ready(&mut p, 2), ["a", "b"]);
        assert_eq!(p.len(), 1);
        assert_eq!(ready(&mut p, 3), ["c"]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_batch_that_wrote_nothing_waits_for_the_writes_before_it() {
        // A read-only batch gets the last written ticket; one queued after a checkpoint-free
        // write can never get a lower one than the batch before it.
        let mut p = Pending::default();
        p.push(5, "write");
        p.push(4, "read after it");
        assert!(
            ready(&mut p, 4).is_empty(),
            "nothing before the write is durable"
        );
        assert_eq!(ready(&mut p, 5), ["write", "read after it"]);
    }

    #[test]
    fn a_later_durable_batch_never_overtakes_an_earlier_one() {
        // Syncs may return out of order; the mark is a prefix, and the queue only ever
        // releases from the front.
        let mut p = Pending::default();
        p.push(7, "first");
        p.push(9, "second");
        assert!(ready(&mut p, 6).is_empty());
        assert_eq!(ready(&mut p, 8), ["first"]);
        assert_eq!(ready(&mut p, 9), ["second"]);
    }

    #[test]
    fn immediate_stores_pass_through() {
        // Stores durable at commit: ticket 0, mark u64::MAX.
        let mut p = Pending::default();
        p.push(0, "x");
        assert_eq!(ready(&mut p, u64::MAX), ["x"]);
    }

    #[test]
    fn a_failed_sync_takes_everything_waiting() {
        let mut p = Pending::default();
        p.push(1, "a");
        p.push(2, "b");
        let all: Vec<_> = p.take_all().collect();
        assert_eq!(all, ["a", "b"]);
        assert!(p.is_empty());
    }
}
