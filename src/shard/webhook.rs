//! Webhook facts: what a shard knows first (its first / last local subscriber of a topic, its
//! first / last connection of a user, a presence change, a client publication), handed to the
//! store thread as a [`StoreJob::Webhook`](super::jobs::StoreJob::Webhook) — never waiting —
//! which counts them across shards (and, in a cluster, nodes), turns the node-wide
//! transitions into events and puts them in the Store's outbox in the same commit as its other
//! work. The sender thread (`runtime::webhook`) reads the outbox. Also the counters the sender
//! and the status endpoint share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::jobs::StoreJob;
pub(crate) use super::jobs::WebhookFact;
use super::ShardState;
use crate::proto::pattern::Pattern;
use crate::proto::webhook::{event_json, json_str, EventKind};

/// What the sender did and what the outbox holds, for `/metrics` and `GET /api/v1/webhooks`.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    /// Events delivered (2xx answers).
    pub sent: AtomicU64,
    /// Requests that failed (error, timeout, non-2xx).
    pub failed: AtomicU64,
    /// Events dropped undelivered after `dead_letter_after`.
    pub dead: AtomicU64,
    /// Requests that succeeded.
    pub requests: AtomicU64,
    /// Sum of successful requests' latencies (µs).
    pub latency_us: AtomicU64,
    /// Events in the outbox (as the store thread last saw it).
    pub backlog: AtomicU64,
    /// When the oldest pending event happened (ms since the epoch; 0: none).
    pub oldest_ms: AtomicU64,
    /// Node-wide topic / user transitions whose cluster-wide check waits for Redis (the
    /// store thread retries them; their events are sent once Redis answers).
    pub unsynced: AtomicU64,
    /// The last failure, and when (ms).
    pub last_error: Mutex<Option<(u64, String)>>,
    /// Wakes the sender when events were committed to the outbox.
    pub wake: tokio::sync::Notify,
    /// The server is stopping: the sender ends (pending events stay in the outbox).
    pub stopping: std::sync::atomic::AtomicBool,
    /// Cuts the sender's waits short when stopping.
    pub stop: tokio::sync::Notify,
}

impl WebhookStats {
    /// `/metrics` lines: name, help, value, counter (else gauge).
    pub(crate) fn list(&self) -> [(&'static str, &'static str, u64, bool); 7] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            (
                "events_sent",
                "Webhook events delivered (the receiver answered 2xx)",
                g(&self.sent),
                true,
            ),
            (
                "requests_failed",
                "Webhook requests that failed (error, timeout, non-2xx)",
                g(&self.failed),
                true,
            ),
            (
                "dead_letters",
                "Webhook events dropped undelivered after webhooks.dead_letter_after",
                g(&self.dead),
                true,
            ),
            (
                "requests",
                "Webhook requests delivered",
                g(&self.requests),
                true,
            ),
            (
                "request_latency_microseconds",
                "Time taken by the delivered webhook requests, summed (divide by requests)",
                g(&self.latency_us),
                true,
            ),
            (
                "backlog",
                "Webhook events waiting in the outbox",
                g(&self.backlog),
                false,
            ),
            (
                "unsynced_transitions",
                "Topic and user transitions waiting for Redis to check them cluster-wide",
                g(&self.unsynced),
                false,
            ),
        ]
    }

    /// The status endpoint's answer (`GET /api/v1/webhooks`).
    pub(crate) fn to_json(&self, enabled: bool, now_ms: u64) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let oldest = g(&self.oldest_ms);
        let backlog = g(&self.backlog);
        let last = self.last_error.lock().ok().and_then(|e| e.clone());
        let requests = g(&self.requests);
        serde_json::json!({
            "enabled": enabled,
            "backlog": backlog,
            "oldest_pending_age_ms": (backlog > 0 && oldest > 0).then(|| now_ms.saturating_sub(oldest)),
            "sent": g(&self.sent),
            "requests": requests,
            "failed_requests": g(&self.failed),
            "dead_letters": g(&self.dead),
            "unsynced_transitions": g(&self.unsynced),
            "mean_latency_ms": (requests > 0).then(|| g(&self.latency_us) as f64 / requests as f64 / 1000.0),
            "last_error": last.as_ref().map(|(_, e)| e.as_str()),
            "last_error_at_ms": last.as_ref().map(|(t, _)| *t),
        })
    }

    /// Records a failure.
    pub(crate) fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((crate::store::now_ms(), why));
        }
    }
}

impl ShardState {
    fn wants(&self, k: EventKind) -> bool {
        self.hub.config.webhooks.wants(k)
    }

    fn send_fact(&self, fact: WebhookFact) {
        // Unbounded: a fact is never refused (the store thread's batches absorb bursts).
        let _ = self.hub.submit_store(StoreJob::Webhook(fact), false);
    }

    /// This shard's first (`on`) or last subscriber of `pattern` came or went.
    pub(super) fn webhook_topic(&self, pattern: &str, on: bool) {
        let kind = if on {
            EventKind::TopicOccupied
        } else {
            EventKind::TopicVacated
        };
        if pattern.ends_with('*') || !self.wants(kind) {
            return;
        }
        self.send_fact(WebhookFact::Topic {
            topic: pattern.into(),
            shard: self.index,
            on,
        });
    }

    /// This shard's first (`on`) or last connection of `user` came or went.
    pub(super) fn webhook_user(&self, user: &Arc<str>, on: bool) {
        let kind = if on {
            EventKind::UserOnline
        } else {
            EventKind::UserOffline
        };
        if !self.wants(kind) {
            return;
        }
        self.send_fact(WebhookFact::User {
            user: user.clone(),
            shard: self.index,
            on,
        });
    }

    /// A connection joined (`on`) or left the presence of `topic`.
    pub(super) fn webhook_presence(&self, id: crate::ConnId, topic: &str, on: bool) {
        let kind = if on {
            EventKind::PresenceAdded
        } else {
            EventKind::PresenceRemoved
        };
        if !self.wants(kind) {
            return;
        }
        let user = self.conn(id).and_then(|c| c.user.as_deref()).unwrap_or("");
        let body = event_json(
            kind,
            crate::store::now_ms(),
            &[
                ("topic", &json_str(topic)),
                ("client", &json_str(&self.hub.client_id(id))),
                ("user", &json_str(user)),
            ],
        );
        self.send_fact(WebhookFact::Event(body.into()));
    }

    /// A client published `data` as `event` on `topic`: an event if `topic` matches
    /// `webhooks.topics`.
    pub(super) fn webhook_publication(
        &self,
        id: crate::ConnId,
        topic: &str,
        event: &str,
        data: Option<&[u8]>,
    ) {
        let w = &self.hub.config.webhooks;
        if w.topics.is_empty() || !w.wants(EventKind::Publication) {
            return;
        }
        let matched = w
            .topics
            .iter()
            .any(|p| Pattern::parse(p).is_ok_and(|p| p.matches(topic)));
        if !matched {
            return;
        }
        let user = self.conn(id).and_then(|c| c.user.as_deref()).unwrap_or("");
        let body = event_json(
            EventKind::Publication,
            crate::store::now_ms(),
            &[
                ("topic", &json_str(topic)),
                ("event", &json_str(event)),
                ("data", data.unwrap_or(b"null")),
                ("client", &json_str(&self.hub.client_id(id))),
                ("user", &json_str(user)),
            ],
        );
        self.send_fact(WebhookFact::Event(body.into()));
    }
}
