//! Who is on a topic: `join`/`leave` announcements (published like any publication, so they
//! reach every node of a cluster), this shard's part of a topic's presence, and, in a cluster,
//! the connection's entry handed to the broker, which keeps the cluster-wide presence in Redis.

use serde_json::value::RawValue;

use super::ShardState;
use crate::proto::envelope;
use crate::proto::pattern::Pattern;
use crate::ConnId;

impl ShardState {
    /// `join` / `leave` to the other subscribers of `topic`.
    fn announce(&mut self, id: ConnId, topic: &str, event: &str) {
        let Some(c) = self.conns.get(id.slot() as usize).filter(|c| c.id == id) else {
            return;
        };
        let user = c.user.as_deref().unwrap_or("");
        let data = serde_json::json!({"client": self.hub.client_id(id), "user": user}).to_string();
        let frame = envelope::publication(topic, event, Some(data.as_bytes()));
        self.publish(topic, frame, Some(id));
    }

    /// `id` left `pattern`: announces `leave` if it is an exact topic of a namespace with
    /// join/leave, and takes the connection out of the cluster's presence if it has presence.
    pub(super) fn announce_leave(&mut self, id: ConnId, pattern: &str) {
        if pattern.ends_with('*') {
            return;
        }
        let Some(ns) = self.hub.namespaces.get(pattern) else {
            return;
        };
        let (join_leave, presence) = (ns.join_leave, ns.presence);
        if presence {
            self.webhook_presence(id, pattern, false);
        }
        if presence && self.hub.cluster.clustered {
            self.hub
                .cluster
                .broker
                .presence_change(pattern, self.hub.client_id(id), None);
        }
        if join_leave {
            self.announce(id, pattern, "leave");
        }
    }

    /// `id` newly subscribed to `topic` (an exact topic): announces `join` if its namespace
    /// has join/leave, and adds the connection to the cluster's presence if it has presence
    /// (a single node reads its shards instead).
    pub(super) fn joined(&mut self, id: ConnId, topic: &str) {
        let Some(ns) = self.hub.namespaces.get(topic) else {
            return;
        };
        let (join_leave, presence) = (ns.join_leave, ns.presence);
        if presence {
            self.webhook_presence(id, topic, true);
        }
        if presence && self.hub.cluster.clustered {
            if let Some(entry) = self.presence_entry(id) {
                self.hub
                    .cluster
                    .broker
                    .presence_change(topic, self.hub.client_id(id), Some(entry));
            }
        }
        if join_leave {
            self.announce(id, topic, "join");
        }
    }

    /// The JSON entry of a live connection in a cluster's presence hash: the fields a presence
    /// reply shows (client, user, `on_connect` metadata).
    fn presence_entry(&self, id: ConnId) -> Option<String> {
        let c = self
            .conns
            .get(id.slot() as usize)
            .filter(|c| c.id == id && c.closing.is_none())?;
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            client: String,
            user: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            meta: Option<&'a RawValue>,
        }
        let meta = self
            .meta
            .get(&id)
            .and_then(|m| serde_json::from_str::<&RawValue>(m).ok());
        let e = Entry {
            client: self.hub.client_id(id),
            user: c.user.as_deref().unwrap_or(""),
            meta,
        };
        serde_json::to_string(&e).ok()
    }

    /// Local connections subscribed to exactly `topic`.
    pub(super) fn presence(&self, topic: &str) -> super::inbox::PresenceList {
        let Ok(p) = Pattern::parse(topic) else {
            return Vec::new();
        };
        let Some(set) = self.registry.subscribers(p) else {
            return Vec::new();
        };
        set.iter()
            .filter_map(|&slot| self.conns.get(slot as usize))
            .filter(|c| c.closing.is_none())
            .map(|c| (c.id, c.user.clone(), self.meta.get(&c.id).cloned()))
            .collect()
    }

    pub(super) fn join_if_announced(&mut self, id: ConnId, topic: &str) {
        if !topic.ends_with('*') {
            self.joined(id, topic);
        }
    }
}
