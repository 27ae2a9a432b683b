//! The store thread's webhook half: shards' facts counted into node-wide transitions (a
//! topic's first subscriber on any shard, a user's first connection on any shard, and their
//! last), durable messages' final statuses, and the sender's claims and acknowledgements of
//! outbox events. Events go into the outbox at the end of the batch, in the batch's commit.
//!
//! Each shard's facts about one topic (or user) alternate on / off and arrive in order (one
//! FIFO queue per shard into this thread), so a bit per shard is an exact count. In a cluster,
//! the node-wide transition is then checked against the other nodes through the Store
//! ([`Store::webhook_transition`](crate::store::Store::webhook_transition)): the event is produced
//! only by the node that made the cluster-wide transition. A check that fails for want of Redis
//! is kept and run again until Redis answers ([`super::unsynced`]): the event comes late, once.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::unsynced::Unsynced;
use super::{Out, Sequencer};
use crate::proto::webhook::{event_json, json_str, EventKind};
use crate::shard::webhook::WebhookFact;
use crate::store::{MessageStatus, StatusChange, StoreError};

/// Which shards hold what, and the events of the running batch.
#[derive(Default)]
pub(super) struct Aggregator {
    topics: HashMap<Arc<str>, u64>,
    users: HashMap<Arc<str>, u64>,
    /// Events of this batch, put in the outbox before its commit.
    pending: Vec<Bytes>,
    /// When dead nodes were last looked for (`None`: not yet, not even this node's past life).
    reaped: Option<Instant>,
    /// Nodes found holding keys without a registration, and in how many looks in a row.
    unregistered: HashMap<String, u32>,
    /// Transitions whose cluster-wide check failed, until Redis answers.
    unsynced: Unsynced,
}

/// How often a node looks for dead nodes' webhook keys: a registration's lifetime, so a node
/// is taken for dead after its registration expired and stayed missing for two looks (a live
/// node refreshes it every third of that).
const REAP_EVERY: std::time::Duration = crate::cluster::redis::NODE_TTL;

/// Sets or clears `shard`'s bit of `key`; `Some(on)` when the node-wide state changed.
fn flip(map: &mut HashMap<Arc<str>, u64>, key: Arc<str>, shard: usize, on: bool) -> Option<bool> {
    let bit = 1u64 << (shard % 64);
    let before = map.get(&key).copied().unwrap_or(0);
    let after = if on { before | bit } else { before & !bit };
    if after == 0 {
        map.remove(&key);
    } else {
        map.insert(key, after);
    }
    match (before == 0, after == 0) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

impl Sequencer {
    /// Applies one shard fact.
    pub(super) fn webhook_fact(&mut self, fact: WebhookFact, now: u64) {
        let (kind, field, key, on) = match fact {
            WebhookFact::Event(body) => {
                self.webhooks.pending.push(body);
                return;
            }
            WebhookFact::Topic { topic, shard, on } => {
                let Some(on) = flip(&mut self.webhooks.topics, topic.clone(), shard, on) else {
                    return;
                };
                let kind = if on {
                    EventKind::TopicOccupied
                } else {
                    EventKind::TopicVacated
                };
                (kind, "topic", topic, on)
            }
            WebhookFact::User { user, shard, on } => {
                let Some(on) = flip(&mut self.webhooks.users, user.clone(), shard, on) else {
                    return;
                };
                let kind = if on {
                    EventKind::UserOnline
                } else {
                    EventKind::UserOffline
                };
                (kind, "user", user, on)
            }
        };
        // In a cluster: only the node whose change was the cluster-wide one sends the event.
        let scoped = format!("{field}:{key}");
        if self.webhooks.unsynced.flip(&scoped, on, now) {
            // An earlier change of the key still waits for Redis: this one joins it, so the
            // key's checks reach Redis in order.
            return;
        }
        if !self.webhooks.unsynced.is_empty() {
            // Redis failed and has not answered the retries yet: this one waits for them too,
            // instead of paying a failure (up to a 3 s timeout) of its own.
            self.webhooks.unsynced.failed(scoped, on, now);
            self.unsynced_changed();
            return;
        }
        match self
            .store
            .webhook_transition(&scoped, &self.hub.cluster.node, on)
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(StoreError::Unavailable(e)) => {
                // Redis may come back: checked again until it answers (see `unsynced`). Logged
                // once per outage: later transitions join the record without a check.
                tracing::warn!(
                    error = %e,
                    "webhooks: the cluster-wide check failed; retried until Redis answers"
                );
                self.webhooks.unsynced.failed(scoped, on, now);
                self.webhooks.unsynced.arm(Instant::now());
                self.unsynced_changed();
                return;
            }
            Err(e) => {
                // Refused (not "not now"): asking again would be refused again. Sending it
                // (possibly twice) beats losing it.
                tracing::warn!(error = %e, "webhooks: the cluster-wide check was refused; sending");
            }
        }
        let body = event_json(kind, now, &[(field, &json_str(&key))]);
        self.webhooks.pending.push(body.into());
    }

    /// Runs the cluster-wide checks that failed again (see [`unsynced`](super::unsynced)),
    /// when their back-off allows (`force`: now, at shutdown), until Redis fails again; each
    /// that Redis answers as the cluster-wide transition becomes its event, late, with the
    /// time this node's state changed.
    pub(super) fn webhook_retry(&mut self, force: bool) {
        // Every batch comes here: nothing kept (always, without Redis) costs one length test.
        if self.webhooks.unsynced.is_empty() || !self.webhooks.unsynced.due(Instant::now(), force) {
            return;
        }
        let node = self.hub.cluster.node.clone();
        let mut failed = false;
        let mut sent = 0usize;
        for (key, entry) in self.webhooks.unsynced.batch() {
            let transition = match self.store.webhook_transition_retry(&key, &node, entry.want) {
                Ok(t) => t,
                Err(StoreError::Unavailable(e)) => {
                    tracing::debug!(error = %e, "webhooks: the cluster-wide check failed again");
                    failed = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, key, "webhooks: the cluster-wide check was refused; sending");
                    true
                }
            };
            self.webhooks.unsynced.done(&key);
            let Some(on) = entry.event(transition) else {
                continue;
            };
            let (kind, field, name) = match (key.split_once(':'), on) {
                (Some(("topic", t)), true) => (EventKind::TopicOccupied, "topic", t),
                (Some(("topic", t)), false) => (EventKind::TopicVacated, "topic", t),
                (Some(("user", u)), true) => (EventKind::UserOnline, "user", u),
                (Some(("user", u)), false) => (EventKind::UserOffline, "user", u),
                _ => continue,
            };
            if self.hub.config.webhooks.wants(kind) {
                let body = event_json(kind, entry.at, &[(field, &json_str(name))]);
                self.webhooks.pending.push(body.into());
                sent += 1;
            }
        }
        self.webhooks.unsynced.passed(Instant::now(), failed);
        self.unsynced_changed();
        if !failed {
            tracing::info!(
                sent,
                left = self.webhooks.unsynced.len(),
                "webhooks: transitions checked with the cluster after Redis failed"
            );
        }
        if force && !self.webhooks.unsynced.is_empty() {
            tracing::warn!(
                left = self.webhooks.unsynced.len(),
                "webhooks: stopping with transitions Redis did not confirm; what Redis still \
                 holds for this node is released by its next start, or by the other nodes once \
                 its registration expired"
            );
        }
    }

    /// Publishes how many transitions wait for Redis (`GET /api/v1/webhooks`, `/metrics`).
    fn unsynced_changed(&self) {
        let n = self.webhooks.unsynced.len() as u64;
        self.hub.webhooks.unsynced.store(n, Ordering::Relaxed);
    }

    /// Removes what dead nodes held (see
    /// [`Store::webhook_reap`](crate::store::Store::webhook_reap)) and sends the vacated /
    /// offline events they never sent: this node's own past life at the first call (a restart
    /// after `kill -9`: nothing it held then is held now), then every [`REAP_EVERY`] the nodes
    /// that hold keys and were unregistered at two looks in a row.
    pub(super) fn webhook_reap(&mut self, now: u64) {
        let w = &self.hub.config.webhooks;
        if !w.wants(EventKind::TopicVacated) && !w.wants(EventKind::UserOffline) {
            return;
        }
        let me = self.hub.cluster.node.to_string();
        let mut dead = Vec::new();
        match self.webhooks.reaped {
            None => dead.push(me.clone()),
            Some(t) if t.elapsed() < REAP_EVERY => return,
            Some(_) => match self.store.webhook_orphans() {
                Ok(nodes) => {
                    let seen = &mut self.webhooks.unregistered;
                    let before = std::mem::take(seen);
                    for (node, registered) in nodes {
                        if registered || node == me {
                            continue;
                        }
                        let looks = before.get(&node).copied().unwrap_or(0) + 1;
                        if looks >= 2 {
                            dead.push(node);
                        } else {
                            seen.insert(node, looks);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "webhooks: looking for dead nodes failed"),
            },
        }
        self.webhooks.reaped = Some(Instant::now());
        for node in dead {
            let keys = match self.store.webhook_reap(&node) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, node, "webhooks: removing a dead node's keys failed");
                    continue;
                }
            };
            if !keys.is_empty() {
                tracing::info!(
                    node,
                    keys = keys.len(),
                    "webhooks: a dead node's topics and users released"
                );
            }
            for key in keys {
                let (kind, field, name) = if let Some(t) = key.strip_prefix("topic:") {
                    (EventKind::TopicVacated, "topic", t)
                } else if let Some(u) = key.strip_prefix("user:") {
                    (EventKind::UserOffline, "user", u)
                } else {
                    continue;
                };
                if self.hub.config.webhooks.wants(kind) {
                    let body = event_json(kind, now, &[(field, &json_str(name))]);
                    self.webhooks.pending.push(body.into());
                }
            }
        }
    }

    /// Before the commit: this batch's events (and those of durable messages that reached a
    /// final status in it) go into the outbox.
    pub(super) fn webhook_flush(&mut self, now: u64) {
        let w = &self.hub.config.webhooks;
        if w.url.is_none() {
            return;
        }
        for out in &self.outs {
            if let Out::Gone(changes) = out {
                for c in changes {
                    if let Some(body) = durable_event(w, c, now) {
                        self.webhooks.pending.push(body);
                    }
                }
            }
        }
        if self.webhooks.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.webhooks.pending);
        match self.store.outbox_push(&events, now) {
            Ok(()) => self.outs.push(Out::OutboxChanged),
            Err(e) => {
                tracing::error!(error = %e, lost = events.len(), "webhooks: storing events failed");
                self.hub
                    .webhooks
                    .fail(format!("storing {} events failed: {e}", events.len()));
            }
        }
    }

    /// After a commit that changed the outbox: its size for the status endpoint, and the
    /// sender woken.
    pub(super) fn webhook_committed(&mut self) {
        let s = &self.hub.webhooks;
        if let Ok(st) = self.store.outbox_stats() {
            s.backlog.store(st.backlog, Ordering::Relaxed);
            s.oldest_ms
                .store(st.oldest_ms.unwrap_or(0), Ordering::Relaxed);
        }
        s.wake.notify_one();
    }
}

/// The event of a durable message's final status, if the configuration wants it.
fn durable_event(w: &crate::config::WebhookConfig, c: &StatusChange, now: u64) -> Option<Bytes> {
    let kind = match c.status {
        MessageStatus::Acked => EventKind::MessageAcked,
        MessageStatus::Expired => EventKind::MessageExpired,
        MessageStatus::Dropped => EventKind::MessageDropped,
        _ => return None,
    };
    if !w.wants(kind) {
        return None;
    }
    let id = itoa::Buffer::new().format(c.id).to_string();
    let offset = itoa::Buffer::new().format(c.offset).to_string();
    Some(
        event_json(
            kind,
            now,
            &[
                ("message_id", id.as_bytes()),
                ("user", &json_str(&c.user)),
                ("offset", offset.as_bytes()),
            ],
        )
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_transitions_need_every_shard() {
        let mut m = HashMap::new();
        let t: Arc<str> = "a".into();
        assert_eq!(flip(&mut m, t.clone(), 0, true), Some(true));
        assert_eq!(flip(&mut m, t.clone(), 1, true), None);
        assert_eq!(flip(&mut m, t.clone(), 0, false), None);
        assert_eq!(flip(&mut m, t.clone(), 1, false), Some(false));
        assert!(m.is_empty());
    }
}
