//! Per-shard counters: written only by their shard (relaxed atomics on the shard's own cache
//! lines), read by anyone to aggregate — at `/metrics` scrape time, never per message.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::proto::error::ErrorCode;

/// Upper bounds (seconds) of the handshake latency histogram buckets.
pub const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// HTTP statuses counted per handshake result (101 = upgraded).
pub const HANDSHAKE_RESULTS: [u16; 13] = [
    101, 400, 401, 403, 404, 405, 408, 413, 426, 429, 431, 503, 0,
];

/// One shard's counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    pub(crate) connections: AtomicI64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) errors: [AtomicU64; ErrorCode::ALL.len()],
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    /// Frames converted to MessagePack: once per publication per shard on fan-out, once per
    /// frame sent to one MessagePack connection (replies, errors, history, durable messages).
    pub(crate) msgpack_encodings: AtomicU64,
    /// Publications converted to Socket.IO packets: once per publication per shard and home
    /// namespace on fan-out (answers to one connection are not counted).
    pub(crate) socketio_encodings: AtomicU64,
    pub(crate) handshake_results: [AtomicU64; HANDSHAKE_RESULTS.len()],
    pub(crate) handshake_buckets: [AtomicU64; HANDSHAKE_BUCKETS.len()],
    pub(crate) handshake_micros: AtomicU64,
    /// Fossil deltas made (once per publication per shard, whatever the subscribers).
    pub(crate) deltas: AtomicU64,
    /// Publications delivered as a delta rather than in full.
    pub(crate) delta_deliveries: AtomicU64,
}

/// A point-in-time copy of counters (one shard's, or the sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Open WebSocket and SSE connections.
    pub connections: i64,
    /// Successful WebSocket and SSE handshakes.
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
    /// Error envelopes sent (all codes).
    pub errors: u64,
    /// Connections closed for protocol violations.
    pub protocol_errors: u64,
    /// Connections closed with 1008 for overflowing their outbound queue.
    pub slow_consumers: u64,
    /// `rate_limited` errors sent.
    pub rate_limited: u64,
    /// Frames converted to MessagePack (see `ringhub_encodings_total{format="msgpack"}`).
    pub msgpack_encodings: u64,
    /// Publications converted to Socket.IO (see `ringhub_encodings_total{format="socketio"}`).
    pub socketio_encodings: u64,
}

impl ShardStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// Counts an error envelope with `code`.
    pub(crate) fn error(&self, code: ErrorCode) {
        Self::add(&self.errors[code as usize], 1);
    }

    /// Counts the outcome of an HTTP request: 101 for an upgrade, else the refusal's status.
    pub(crate) fn handshake(&self, status: u16, took: std::time::Duration) {
        let i = HANDSHAKE_RESULTS
            .iter()
            .position(|s| *s == status)
            .unwrap_or(HANDSHAKE_RESULTS.len() - 1);
        Self::add(&self.handshake_results[i], 1);
        if status == 101 {
            let secs = took.as_secs_f64();
            if let Some(b) = HANDSHAKE_BUCKETS.iter().position(|le| secs <= *le) {
                Self::add(&self.handshake_buckets[b], 1);
            }
            Self::add(&self.handshake_micros, took.as_micros() as u64);
        }
    }

    /// Handshake count per result status (0 = other).
    pub fn handshake_counts(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        HANDSHAKE_RESULTS
            .iter()
            .zip(&self.handshake_results)
            .map(|(s, c)| (*s, c.load(Relaxed)))
    }

    /// Handshake latency: per-bucket (non-cumulative) counts and the sum in seconds.
    pub fn handshake_latency(&self) -> ([u64; HANDSHAKE_BUCKETS.len()], f64) {
        let counts = std::array::from_fn(|i| self.handshake_buckets[i].load(Relaxed));
        (counts, self.handshake_micros.load(Relaxed) as f64 / 1e6)
    }

    /// Deltas made, and publications delivered as deltas (`delta: "fossil"` subscribers).
    pub fn delta_counts(&self) -> (u64, u64) {
        (
            self.deltas.load(Relaxed),
            self.delta_deliveries.load(Relaxed),
        )
    }

    /// Error envelopes sent per code.
    pub fn error_counts(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL
            .iter()
            .map(|c| (*c, self.errors[*c as usize].load(Relaxed)))
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let ok = self.handshake_results[0].load(Relaxed);
        let all: u64 = self.handshake_results.iter().map(|c| c.load(Relaxed)).sum();
        StatsSnapshot {
            connections: self.connections.load(Relaxed),
            handshakes: ok,
            handshake_failures: all - ok,
            messages_in: self.messages_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            errors: self.errors.iter().map(|c| c.load(Relaxed)).sum(),
            protocol_errors: self.protocol_errors.load(Relaxed),
            slow_consumers: self.slow_consumers.load(Relaxed),
            rate_limited: self.errors[ErrorCode::RateLimited as usize].load(Relaxed),
            msgpack_encodings: self.msgpack_encodings.load(Relaxed),
            socketio_encodings: self.socketio_encodings.load(Relaxed),
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
            protocol_errors: self.protocol_errors + o.protocol_errors,
            slow_consumers: self.slow_consumers + o.slow_consumers,
            rate_limited: self.rate_limited + o.rate_limited,
            msgpack_encodings: self.msgpack_encodings + o.msgpack_encodings,
            socketio_encodings: self.socketio_encodings + o.socketio_encodings,
        }
    }
}
