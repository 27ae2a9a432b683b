//! Per-shard counters: written only by their shard (relaxed atomics on the shard's own cache
//! lines), read by anyone to aggregate.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// One shard's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub(crate) connections: AtomicI64,
    pub(crate) handshakes: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
}

/// A point-in-time copy of counters (one shard's, or the sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Open WebSocket connections.
    pub connections: i64,
    /// Successful WebSocket handshakes.
    pub handshakes: u64,
    /// Refused or failed HTTP requests and handshakes.
    pub handshake_failures: u64,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Payload bytes received from clients.
    pub bytes_in: u64,
    /// Frames written to clients.
    pub messages_out: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Error envelopes sent and protocol errors.
    pub errors: u64,
    /// Connections closed with 1008 for overflowing their outbound queue.
    pub slow_consumers: u64,
}

impl ShardStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Relaxed),
            handshakes: self.handshakes.load(Relaxed),
            handshake_failures: self.handshake_failures.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            errors: self.errors.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
        }
    }
}

impl std::ops::Add for StatsSnapshot {
    type Output = StatsSnapshot;
    fn add(self, o: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections + o.connections,
            handshakes: self.handshakes + o.handshakes,
            handshake_failures: self.handshake_failures + o.handshake_failures,
            messages_in: self.messages_in + o.messages_in,
            bytes_in: self.bytes_in + o.bytes_in,
            messages_out: self.messages_out + o.messages_out,
            bytes_out: self.bytes_out + o.bytes_out,
            errors: self.errors + o.errors,
            slow_consumers: self.slow_consumers + o.slow_consumers,
        }
    }
}
