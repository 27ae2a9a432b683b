//! The manager's half of cluster-wide presence (see `cluster::redis::presence`): the node's own
//! entries, their refresh, and reads through the instance's publisher queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Manager;
use crate::cluster::redis::presence::{now_ms, Entries, Write, CHUNK};
use crate::cluster::redis::Out;
use crate::cluster::{instance_for, ClusterStats};

impl Manager {
    fn presence_ttl(&self) -> Duration {
        self.setup.presence_ttl
    }

    /// How often the node rewrites its entries: a third of the TTL.
    pub(super) fn presence_period(ttl: Duration) -> Duration {
        (ttl / 3).max(Duration::from_millis(100))
    }

    /// Queues `out` for instance `i`; dropped while it is down or its queue is full (the next
    /// refresh rewrites adds; a lost removal expires with the TTL, as the entry is no longer
    /// refreshed).
    fn presence_out(&self, i: usize, out: Out) {
        if !self.shared.up[i].load(Ordering::Relaxed) || self.out[i].try_send(out).is_err() {
            ClusterStats::add(&self.shared.stats.presence_dropped, 1);
        }
    }

    /// A local connection entered or left a topic's presence.
    pub(super) fn presence_change(
        &mut self,
        topic: Arc<str>,
        client: String,
        entry: Option<String>,
    ) {
        let i = instance_for(&topic, self.insts.len());
        let write = match entry {
            Some(e) => {
                self.presence
                    .entries
                    .entry(topic.clone())
                    .or_default()
                    .insert(client.clone(), e.clone());
                let ttl_ms = self.presence_ttl().as_millis() as u64;
                Write::Add {
                    topic,
                    entries: vec![(client, e)],
                    expire_at: now_ms() + ttl_ms,
                    ttl_ms,
                }
            }
            None => {
                if let Some(m) = self.presence.entries.get_mut(&topic) {
                    m.remove(&client);
                    if m.is_empty() {
                        self.presence.entries.remove(&topic);
                    }
                }
                Write::Remove {
                    topic,
                    clients: vec![client],
                }
            }
        };
        self.presence_out(i, Out::Presence(write));
    }

    /// Rewrites every entry of this node with a new expiry.
    pub(super) fn presence_refresh(&self) {
        self.presence_refresh_on(None);
    }

    /// Rewrites this node's entries of the topics instance `only` owns (all: `None`).
    pub(super) fn presence_refresh_on(&self, only: Option<usize>) {
        let n = self.insts.len();
        let ttl_ms = self.presence_ttl().as_millis() as u64;
        let expire_at = now_ms() + ttl_ms;
        for (topic, clients) in &self.presence.entries {
            let i = instance_for(topic, n);
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let all: Vec<(String, String)> = clients
                .iter()
                .map(|(c, e)| (c.clone(), e.clone()))
                .collect();
            for chunk in all.chunks(CHUNK) {
                let w = Write::Add {
                    topic: topic.clone(),
                    entries: chunk.to_vec(),
                    expire_at,
                    ttl_ms,
                };
                self.presence_out(i, Out::Presence(w));
            }
        }
    }

    /// Reads a topic's presence through its instance's queue (behind the writes before it).
    pub(super) fn presence_read(&self, topic: Arc<str>, tx: oneshot::Sender<Entries>) {
        let i = instance_for(&topic, self.insts.len());
        if !self.shared.up[i].load(Ordering::Relaxed) {
            let _ = tx.send(Err("Redis unreachable".into()));
            return;
        }
        if let Err(e) = self.out[i].try_send(Out::PresenceRead(topic, tx)) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "cluster queue full",
                mpsc::error::TrySendError::Closed(_) => "cluster stopped",
            };
            if let Out::PresenceRead(_, tx) = e.into_inner() {
                let _ = tx.send(Err(why.into()));
            }
        }
    }

    /// On stop: removes the entries still held (normally none: the shards closed their
    /// connections) and waits, briefly, until every queue has been written.
    pub(super) async fn presence_stop(&mut self) {
        let n = self.insts.len();
        let held = std::mem::take(&mut self.presence.entries);
        for (topic, clients) in held {
            let w = Write::Remove {
                topic: topic.clone(),
                clients: clients.into_keys().collect(),
            };
            self.presence_out(instance_for(&topic, n), Out::Presence(w));
        }
        let mut waits = Vec::new();
        for (i, q) in self.out.iter().enumerate() {
            if self.shared.up[i].load(Ordering::Relaxed) {
                let (tx, rx) = oneshot::channel();
                if q.try_send(Out::Flush(tx)).is_ok() {
                    waits.push(rx);
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            for rx in waits {
                let _ = rx.await;
            }
        })
        .await;
    }
}
