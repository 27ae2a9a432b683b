//! The store thread's bounded bookkeeping: inbox lists shared within a batch, deliveries
//! summed per batch, and acks kept until the store confirms them.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{durable_frame, Out, Sequencer};
use crate::shard::jobs::{InboxFrames, StoreStats};
use crate::store::StoreError;

/// Acks kept for a retry at most; beyond, an ack the store did not answer is dropped (its
/// message is delivered again, which at-least-once delivery allows).
const MAX_KEPT_ACKS: usize = 100_000;

/// Acks the store did not answer, oldest first, each once.
#[derive(Default)]
pub(super) struct AckRetry {
    queue: VecDeque<(Arc<str>, u64)>,
    kept: HashSet<(Arc<str>, u64)>,
}

impl AckRetry {
    pub(super) fn keep(&mut self, user: Arc<str>, offset: u64, stats: &StoreStats) {
        if self.kept.len() >= MAX_KEPT_ACKS {
            tracing::warn!(
                user = &*user,
                offset,
                "store: too many acks waiting for the store; this one is dropped"
            );
            return;
        }
        if self.kept.insert((user.clone(), offset)) {
            self.queue.push_back((user, offset));
            stats.acks_retried.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Sequencer {
    /// The unacknowledged messages of `user` as frames: read once per batch.
    pub(super) fn inbox_frames(&mut self, user: &Arc<str>, now: u64) -> InboxFrames {
        if let Some(f) = self.lists.get(user) {
            return f.clone();
        }
        let listed = self.store.inbox_list(user, now);
        self.inbox_epoch = self.store.inbox_epoch();
        let frames: InboxFrames = match listed {
            Ok(list) => list
                .iter()
                .map(|m| (m.offset, durable_frame(user, m, &self.inbox_epoch)))
                .collect(),
            Err(e) => {
                // Not cached: the next sync tries again.
                tracing::warn!(error = %e, user = &**user, "store: reading an inbox failed");
                return Arc::from([]);
            }
        };
        self.lists.insert(user.clone(), frames.clone());
        frames
    }

    /// Records the batch's deliveries, one write per message.
    pub(super) fn write_delivered(&mut self) {
        for ((user, offset), times) in std::mem::take(&mut self.delivered) {
            if let Err(e) = self.store.inbox_delivered(&user, offset, times) {
                tracing::warn!(error = %e, "store: recording a delivery failed");
            }
        }
    }

    /// Tries the kept acks again, oldest first, until the store fails to answer one.
    pub(super) fn retry_acks(&mut self) {
        while let Some((user, offset)) = self.acks.queue.front().cloned() {
            match self.store.inbox_ack(&user, offset) {
                Ok(change) => {
                    tracing::info!(user = &*user, offset, "store: a kept ack is now recorded");
                    if let Some(c) = change {
                        self.outs.push(Out::Gone(vec![c]));
                    }
                }
                Err(StoreError::Unavailable(_)) => return,
                Err(e) => {
                    tracing::warn!(error = %e, user = &*user, offset, "store: a kept ack was refused; dropped");
                }
            }
            self.acks.queue.pop_front();
            self.acks.kept.remove(&(user, offset));
        }
    }
}
