//! Hooks for the criterion benchmarks in `benches/`: build a shard with fake connections (no
//! sockets, no runtime) and drive its real fan-out, subscription and inbox paths. Not a stable
//! API; hidden from the docs.

pub mod cluster;

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use crate::policy::guard::Guard;
use crate::shard::inbox::{Inbox, ShardMsg};
use crate::shard::shared::HubShared;
use crate::shard::ShardState;
use crate::ConnId;

/// A shard of a hub with `shards` shards (default config), outside any runtime.
pub struct BenchShard {
    shard: RefCell<ShardState>,
    /// Default guard (everything allowed), built once as the server builds its own.
    guard: Guard,
}

impl BenchShard {
    /// Shard 0 of a hub with `shards` shards.
    pub fn new(shards: usize) -> Self {
        let hub = Arc::new(HubShared::for_bench(shards));
        Self {
            shard: RefCell::new(ShardState::new(0, hub)),
            guard: Guard::default(),
        }
    }

    /// Registers an anonymous connection without a socket (admitted by the default guard as the
    /// connection task does: a clone of the default permissions).
    pub fn register(&self) -> ConnId {
        self.shard
            .borrow_mut()
            .bench_register(self.guard.admit_anonymous())
    }

    /// Removes a connection as the shell does once its socket is done.
    pub fn remove(&self, id: ConnId) {
        self.shard.borrow_mut().bench_remove(id);
    }

    /// Subscribes `id` to `pattern` (exact or `prefix*`); false if refused.
    pub fn subscribe(&self, id: ConnId, pattern: &str) -> bool {
        self.shard.borrow_mut().bench_subscribe(id, pattern)
    }

    /// Unsubscribes `id` from `pattern`.
    pub fn unsubscribe(&self, id: ConnId, pattern: &str) {
        self.shard.borrow_mut().bench_unsubscribe(id, pattern);
    }

    /// Publishes an encoded frame on `topic` from this shard (interest table, other shards'
    /// inboxes, then local fan-out).
    pub fn publish(&self, topic: &str, frame: Bytes) {
        self.shard.borrow_mut().bench_publish(topic, frame);
    }

    /// Delivers an encoded frame to this shard's local subscribers of `topic`.
    pub fn deliver_local(&self, topic: &str, frame: &Bytes) {
        self.shard.borrow_mut().bench_deliver_local(topic, frame);
    }

    /// Registers an upgraded pub/sub connection with a real router (`.pubsub()`: every topic is
    /// published to its subscribers), so input bytes take the whole path.
    pub fn new_pubsub(shards: usize) -> Self {
        let hub = Arc::new(HubShared::for_bench_pubsub(shards));
        Self {
            shard: RefCell::new(ShardState::new(0, hub)),
            guard: Guard::default(),
        }
    }

    /// [`new_pubsub`](Self::new_pubsub) with history on the shards (the memory store's layout):
    /// topics matching `pattern` keep `size` publications in the owner shard's ring.
    pub fn new_history(shards: usize, pattern: &str, size: usize) -> Self {
        let mut hub = HubShared::for_bench_pubsub(shards);
        hub.namespaces = crate::config::Namespaces::new(&[crate::config::Namespace {
            pattern: pattern.into(),
            history_size: size,
            ..crate::config::Namespace::default()
        }])
        .expect("a valid history pattern");
        hub.shard_history = Some("bench".into());
        Self {
            shard: RefCell::new(ShardState::new(0, Arc::new(hub))),
            guard: Guard::default(),
        }
    }

    /// Feeds bytes received on `id`'s socket (masked client frames), as a shell does from its
    /// ring or read buffer: decode, unmask in place, parse, route, fan out.
    pub fn input(&self, id: ConnId, bytes: &mut [u8]) {
        self.shard.borrow_mut().on_input(id.slot(), bytes);
    }

    /// Builds the next send of `id` (iovecs over its queued frames) and acknowledges it as
    /// fully written, as a shell does around one `sendmsg`; returns the bytes it carried.
    pub fn send_once(&self, id: ConnId, iov: &mut Vec<libc::iovec>) -> usize {
        let mut st = self.shard.borrow_mut();
        if !st.next_send(id.slot(), iov) {
            return 0;
        }
        let n: usize = iov.iter().map(|v| v.iov_len).sum();
        st.on_sent(id.slot(), n);
        n
    }

    /// Empties every outbound queue (as a flush would); returns how many frames were queued.
    pub fn drain(&self) -> usize {
        self.shard.borrow_mut().bench_drain()
    }

    /// Pops and drops everything in this hub's inbox of shard `shard`; returns how many.
    pub fn drain_inbox(&self, shard: usize) -> usize {
        let hub = self.shard.borrow().hub.clone();
        let inbox = &hub.inboxes[shard];
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
            exclude: None,
        });
    }

    /// Takes and drops the next message; false if the inbox was empty.
    pub fn pop(&self) -> bool {
        self.inbox.pop().is_some()
    }

    /// Re-arms the wake-up as a shard's loop does before it sleeps; false if messages are
    /// queued.
    pub fn arm(&self) -> bool {
        self.inbox.arm()
    }

    /// Sleeps until a producer wakes the inbox (its eventfd turns readable) or `timeout_ms`
    /// passes, as a shard's loop does in `epoll_wait`/`io_uring_enter`.
    pub fn wait(&self, timeout_ms: i32) {
        let mut p = libc::pollfd {
            fd: self.inbox.eventfd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one descriptor owned by the inbox.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
        self.inbox.clear_eventfd();
    }
}
