//! Hooks for the criterion benchmarks in `benches/`: build a shard with fake connections (no
//! sockets, no runtime) and drive its real fan-out, subscription and inbox paths. Not a stable
//! API; hidden from the docs.

use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;

use crate::policy::guard::Guard;
use crate::runtime::hub::HubShared;
use crate::shard::inbox::{Inbox, ShardMsg};
use crate::shard::Shard;
use crate::ConnId;

/// A shard of a hub with `shards` shards (default config), outside any runtime.
pub struct BenchShard {
    shard: Shard,
    /// Default guard (everything allowed), built once as the server builds its own.
    guard: Guard,
}

impl BenchShard {
    /// Shard 0 of a hub with `shards` shards.
    pub fn new(shards: usize) -> Self {
        let hub = Arc::new(HubShared::for_bench(shards));
        Self {
            shard: Shard::new(0, hub),
            guard: Guard::default(),
        }
    }

    /// Registers an anonymous connection without a socket (admitted by the default guard as the
    /// connection task does: a clone of the default permissions).
    pub fn register(&self) -> ConnId {
        self.shard.bench_register(self.guard.admit_anonymous())
    }

    /// Removes a connection as its reader and writer tasks would on exit (two `task_done`s).
    pub fn remove(&self, id: ConnId) {
        self.shard.task_done(id);
        self.shard.task_done(id);
    }

    /// Subscribes `id` to `pattern` (exact or `prefix*`); false if refused.
    pub fn subscribe(&self, id: ConnId, pattern: &str) -> bool {
        self.shard.bench_subscribe(id, pattern)
    }

    /// Unsubscribes `id` from `pattern`.
    pub fn unsubscribe(&self, id: ConnId, pattern: &str) {
        self.shard.bench_unsubscribe(id, pattern);
    }

    /// Publishes an encoded frame on `topic` from this shard (interest table, other shards'
    /// inboxes, then local fan-out).
    pub fn publish(&self, topic: &str, frame: Bytes) {
        self.shard.bench_publish(topic, frame);
    }

    /// Delivers an encoded frame to this shard's local subscribers of `topic`.
    pub fn deliver_local(&self, topic: &str, frame: &Bytes) {
        self.shard.bench_deliver_local(topic, frame);
    }

    /// Empties every outbound queue (as the writers would), optionally parking a writer with
    /// `waker` on each connection; returns how many frames were queued.
    pub fn drain(&self, waker: Option<&Waker>) -> usize {
        self.shard.bench_drain(waker)
    }

    /// Pops and drops everything in this hub's inbox of shard `shard`; returns how many.
    pub fn drain_inbox(&self, shard: usize) -> usize {
        let inbox = &self.shard.hub.inboxes[shard];
        let mut n = 0;
        while inbox.pop().is_some() {
            n += 1;
        }
        n
    }
}

/// A shard inbox on its own, for producer/consumer benchmarks.
#[derive(Default)]
pub struct BenchInbox {
    inbox: Inbox,
}

impl BenchInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a publication as a publishing shard does (clones of the shared topic and frame).
    pub fn push_publish(&self, topic: &Arc<str>, frame: &Bytes) {
        self.inbox.push(ShardMsg::Publish {
            topic: topic.clone(),
            frame: frame.clone(),
        });
    }

    /// Takes and drops the next message; false if the inbox was empty.
    pub fn pop(&self) -> bool {
        self.inbox.pop().is_some()
    }

    /// Waits until something may be queued, exactly as a shard's loop does.
    pub async fn ready(&self) {
        self.inbox.ready().await
    }
}
