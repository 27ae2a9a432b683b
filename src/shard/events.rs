//! A small bounded ring of recent notable events (error replies, protocol errors, slow-consumer
//! cuts, disconnects by the API) for the admin dashboard (`GET /api/v1/events`). Written only on
//! those paths, never on delivery; a shard never waits for it: when the lock is taken by another
//! thread the event is counted as skipped instead of recorded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Events kept.
pub(crate) const RECENT_EVENTS: usize = 100;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// An `error` envelope was sent to a client.
    Error,
    /// A connection was closed for a protocol violation.
    ProtocolError,
    /// A connection was closed with 1008 for overflowing its outbound queue.
    SlowConsumer,
    /// A connection was closed with 4000 by `POST /api/v1/disconnect`.
    Disconnected,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Error => "error",
            EventKind::ProtocolError => "protocol_error",
            EventKind::SlowConsumer => "slow_consumer",
            EventKind::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug)]
struct Event {
    seq: u64,
    time_ms: u64,
    kind: EventKind,
    client: String,
    user: String,
    detail: String,
}

#[derive(Debug, Default)]
struct Ring {
    seq: u64,
    items: VecDeque<Event>,
}

/// The last [`RECENT_EVENTS`] events.
#[derive(Debug, Default)]
pub(crate) struct RecentEvents {
    ring: Mutex<Ring>,
    skipped: AtomicU64,
}

impl RecentEvents {
    /// Records an event; `detail` is cut to 200 bytes. Never blocks.
    pub(crate) fn record(&self, kind: EventKind, client: String, user: Option<&str>, detail: &str) {
        let mut end = detail.len().min(200);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Ok(mut ring) = self.ring.try_lock() else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        ring.seq += 1;
        let seq = ring.seq;
        if ring.items.len() == RECENT_EVENTS {
            ring.items.pop_front();
        }
        ring.items.push_back(Event {
            seq,
            time_ms,
            kind,
            client,
            user: user.unwrap_or("").to_string(),
            detail: detail[..end].to_string(),
        });
    }

    /// `{"events": [...oldest first], "skipped": N}`.
    pub(crate) fn to_json(&self) -> Value {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let events: Vec<Value> = ring
            .items
            .iter()
            .map(|e| {
                json!({"seq": e.seq, "time_ms": e.time_ms, "kind": e.kind.as_str(),
                       "client": e.client, "user": e.user, "detail": e.detail})
            })
            .collect();
        json!({"events": events, "skipped": self.skipped.load(Ordering::Relaxed)})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_hundred_in_order() {
        let r = RecentEvents::default();
        for i in 0..150 {
            r.record(EventKind::Error, format!("n.{i}"), None, &"é".repeat(150));
        }
        let v = r.to_json();
        let ev = v["events"].as_array().unwrap();
        assert_eq!(ev.len(), RECENT_EVENTS);
        assert_eq!(ev[0]["seq"], 51);
        assert_eq!(ev[99]["client"], "n.149");
        assert_eq!(ev[99]["kind"], "error");
        assert!(ev[0]["detail"].as_str().unwrap().len() <= 200);
        assert_eq!(v["skipped"], 0);
    }
}
