//! The durable messages of one commit, sent to every shard as one inbox message by the store
//! thread (see `shard::fastsend`, which delivers and answers them).

use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::Arc;

use bytes::Bytes;

use crate::ConnId;

/// One committed durable message whose send waits for its answer.
pub(crate) struct DurableItem {
    pub(super) user: Arc<str>,
    pub(super) offset: u64,
    pub(super) id: u64,
    pub(super) frame: Bytes,
    /// The connection whose request this answers.
    pub(super) answer: ConnId,
    /// Its command's place in that request's batch (`shard::fastbatch`); `None`: the request
    /// is this one send.
    pub(super) index: Option<u32>,
    /// Connections it was written to, summed over the shards.
    pub(super) delivered: AtomicU32,
}

/// The durable messages of one commit that wait for an answer, shared by every shard
/// ([`ShardMsg::Durables`](super::inbox::ShardMsg::Durables)).
pub(crate) struct DurableRun {
    pub(super) items: Vec<DurableItem>,
    /// Shards that have not delivered the run yet.
    pub(super) left: AtomicUsize,
}

impl DurableRun {
    /// An empty run for `shards` shards.
    pub(crate) fn new(shards: usize) -> Self {
        DurableRun {
            items: Vec::new(),
            left: AtomicUsize::new(shards),
        }
    }

    /// Adds message `id` (`offset` in `user`'s inbox, written as `frame`) answering `answer`
    /// (as command `index` of its batch, if it is one).
    pub(crate) fn push(
        &mut self,
        user: Arc<str>,
        offset: u64,
        id: u64,
        frame: Bytes,
        answer: (ConnId, Option<u32>),
    ) {
        self.items.push(DurableItem {
            user,
            offset,
            id,
            frame,
            answer: answer.0,
            index: answer.1,
            delivered: AtomicU32::new(0),
        });
    }

    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl std::fmt::Debug for DurableRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableRun")
            .field("items", &self.items.len())
            .finish()
    }
}
