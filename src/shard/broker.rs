//! How a node's publications, interest and API operations reach other nodes: the [`Broker`]
//! interface the shards call, defined here so the dependency points at the shard; the cluster
//! layer implements it over Redis (`cluster::redis::RedisBroker`). [`local::LocalBroker`] is
//! the single node.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Carries a node's publications, interest and API operations to the other nodes. The cluster
/// layer starts an implementation's threads with the hub (`cluster::broker_for`): the shard
/// layer only calls it.
///
/// Guarantees of an implementation that reaches other nodes (`cluster::redis::RedisBroker`):
///
/// - **Never blocks the caller.** Shards hand work over and go on; a full hand-over queue or a
///   broker without its backend (Redis down) drops the publication and counts it
///   (`ringhub_cluster_publishes_dropped_total`).
/// - **At most once across nodes.** A publication reaches each other node once or, while the
///   backend is unreachable, not at all. It is never delivered twice to a connection, even when
///   several of the node's subscriptions match it (de-duplicated by origin and sequence).
/// - **Per-publisher order.** Publications one node hands over for one topic reach every other
///   node in that order (one connection per backend instance, one instance per topic).
/// - **Subscribe confirmation.** After the broker acknowledged an interest change made with an
///   `ack` token, every publication any node hands over later on a matching topic reaches this
///   node (while the backend is up): a client's subscribe reply waits for that acknowledgement.
/// - **Own publications are not returned**: the local shards delivered them already.
///
/// Remote publications reach the shards through their inboxes (`ShardMsg::Publish` to the
/// shards whose interest matches); control operations are applied on every shard like local
/// API operations.
pub(crate) trait Broker: Send + Sync {
    /// Whether publications leave the node at all (false: the shards skip the broker).
    fn clustered(&self) -> bool;
    /// Hands over one publication (one frame per topic; a connection gets it once).
    fn publish(&self, frames: &[(Arc<str>, Bytes)]);
    /// Shard `shard` gained (`add`) its first or lost its last local subscriber of `pattern`.
    /// Returns whether the broker will answer `ShardMsg::InterestAck(ack)` to that shard.
    fn interest(&self, pattern: &Arc<str>, shard: usize, add: bool, ack: Option<u64>) -> bool;
    /// An API operation to apply on every other node.
    fn control(&self, op: ControlOp);
    /// `Err(reason)` while the node cannot reach the cluster (`/readyz` answers 503).
    fn health(&self) -> Result<(), String>;
    /// The live nodes of the cluster (`None`: only this one).
    fn nodes(&self) -> Option<tokio::sync::oneshot::Receiver<Result<Vec<Value>, String>>>;
    /// Counters for `/metrics` (`None`: nothing to report).
    fn stats(&self) -> Option<&ClusterStats>;
    /// A local connection (`client` id) entered (`entry`: its presence JSON) or left (`None`)
    /// the presence of `topic`, a topic with `presence = true`. Called on the shards: queued
    /// to the broker's thread, never waited for.
    fn presence_change(&self, topic: &str, client: String, entry: Option<String>);
    /// The cluster-wide presence entries (JSON texts) of `topic` (`None`: only this node's
    /// shards know it — the caller gathers them).
    fn presence(&self, topic: &str) -> Option<Reply<Vec<String>>>;
    /// Asks every other live node for its part of `kind` (`None`: there are no others).
    fn query(&self, kind: QueryKind) -> Option<Reply<Gathered>>;
    /// Stops the broker's threads (after the shards stopped).
    fn stop(&self);
}

/// An answer the broker's thread sends back later, or the reason it cannot.
pub(crate) type Reply<T> = tokio::sync::oneshot::Receiver<Result<T, String>>;

/// What a scatter-gather [`Broker::query`] asks every node for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum QueryKind {
    /// `GET /api/v1/online`: connections by user.
    Online,
    /// `GET /api/v1/stats`: the node's counters.
    Stats,
    /// `GET /api/v1/topics`: subscribed patterns with their connections.
    Topics,
}

/// The other nodes' answers to a query: the node's own part is computed by the caller.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// `(node, its part)` of every node that answered in time.
    pub answers: Vec<(String, Value)>,
    /// Live nodes (registered in Redis) that did not answer in time.
    pub missing: Vec<String>,
}

/// A cluster-wide API operation, as it travels on the control channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
// Externally tagged (`{"send": {...}}`): an internally tagged enum cannot hold a `RawValue`.
#[serde(rename_all = "snake_case")]
pub(crate) enum ControlOp {
    /// `send` (not durable) to users' connections.
    Send {
        users: Vec<String>,
        #[serde(default)]
        topic: Option<String>,
        event: String,
        #[serde(default)]
        data: Option<Box<RawValue>>,
    },
    /// `broadcast` to every connection.
    Broadcast {
        topic: String,
        event: String,
        #[serde(default)]
        data: Option<Box<RawValue>>,
    },
    /// `disconnect` every connection of a user.
    Disconnect { user: String },
    /// Server-side `subscribe` (`add`) / `unsubscribe` of a user's connections or of one
    /// client (by client id: only its node applies it).
    Subscription {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        client: Option<String>,
        topic: String,
        add: bool,
    },
    /// A durable message stored (in the shared Redis store) for `user`: written to the user's
    /// connections on every node, which retry it until it is acknowledged.
    Durable {
        user: String,
        offset: u64,
        #[serde(default)]
        topic: Option<String>,
        event: String,
        #[serde(default)]
        data: Option<Box<RawValue>>,
        /// The inbox store's epoch.
        epoch: String,
    },
    /// Durable messages that left their inboxes (acked, expired, dropped): no more retries.
    InboxGone { gone: Vec<(String, u64)> },
    /// A node's control channel came back: durable messages it stored meanwhile may not have
    /// reached the other nodes, so every node resyncs its connected users' inboxes.
    InboxResync {},
    /// A scatter-gather request: every node answers its part on `<prefix>:reply:<from>`.
    Query {
        id: u64,
        from: String,
        kind: QueryKind,
    },
    /// A node's part of query `id`.
    Answer { id: u64, node: String, data: Value },
}

/// The `ringhub_cluster_*` counters.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Publications handed to Redis (`PUBLISH` commands sent, one per topic channel).
    pub publishes_sent: AtomicU64,
    /// Publications received from other nodes and handed to the shards.
    pub publishes_received: AtomicU64,
    /// Publications not sent: Redis unreachable or the hand-over queue full.
    pub publishes_dropped: AtomicU64,
    /// Duplicates skipped (a publication matched several of this node's subscriptions).
    pub duplicates: AtomicU64,
    /// Control operations sent and received.
    pub control_sent: AtomicU64,
    /// Control operations received from other nodes.
    pub control_received: AtomicU64,
    /// Redis errors (failed commands, lost connections, failed connects).
    pub redis_errors: AtomicU64,
    /// Successful reconnects after a lost connection.
    pub reconnects: AtomicU64,
    /// Pipelines written (one per publisher wake-up with queued commands).
    pub pipelines: AtomicU64,
    /// Commands written in those pipelines.
    pub pipelined_commands: AtomicU64,
    /// 1 while every Redis instance is connected.
    pub connected: AtomicU64,
    /// Registration refreshes that found another live process under this node's name.
    pub duplicate_names: AtomicU64,
    /// Presence writes not sent (Redis unreachable or the queue full): an add is written again
    /// by the next refresh, a removal expires with the presence TTL.
    pub presence_dropped: AtomicU64,
}

impl ClusterStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// `(name, help, value, is_counter)` of every counter, for `/metrics`.
    pub(crate) fn list(&self) -> Vec<(&'static str, &'static str, u64, bool)> {
        let g = |c: &AtomicU64| c.load(Relaxed);
        vec![
            (
                "publishes_sent",
                "PUBLISH commands sent to Redis",
                g(&self.publishes_sent),
                true,
            ),
            (
                "publishes_received",
                "Publications received from other nodes",
                g(&self.publishes_received),
                true,
            ),
            (
                "publishes_dropped",
                "Publications not sent to the cluster (Redis unreachable or queue full)",
                g(&self.publishes_dropped),
                true,
            ),
            (
                "duplicates",
                "Publications received again through another matching subscription, skipped",
                g(&self.duplicates),
                true,
            ),
            (
                "control_sent",
                "Cluster-wide API operations sent",
                g(&self.control_sent),
                true,
            ),
            (
                "control_received",
                "Cluster-wide API operations received from other nodes",
                g(&self.control_received),
                true,
            ),
            (
                "redis_errors",
                "Redis errors: failed commands, lost connections, failed connects",
                g(&self.redis_errors),
                true,
            ),
            (
                "reconnects",
                "Reconnects to Redis after a lost connection",
                g(&self.reconnects),
                true,
            ),
            (
                "pipelines",
                "Pipelines written to Redis",
                g(&self.pipelines),
                true,
            ),
            (
                "pipelined_commands",
                "Commands written in pipelines",
                g(&self.pipelined_commands),
                true,
            ),
            (
                "connected",
                "1 while every Redis instance is connected",
                g(&self.connected),
                false,
            ),
            (
                "duplicate_names",
                "Registration refreshes that found another live node with this node's name",
                g(&self.duplicate_names),
                true,
            ),
            (
                "presence_dropped",
                "Presence writes not sent to Redis (unreachable or queue full)",
                g(&self.presence_dropped),
                true,
            ),
        ]
    }
}

/// The single node.
pub mod local {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::Value;

    use super::{Broker, ClusterStats, ControlOp, Gathered, QueryKind, Reply};

    /// One node alone: today's behaviour. Every method is a no-op, and the shards do not even call
    /// them (`clustered()` is false).
    #[derive(Debug, Default, Clone, Copy)]
    pub struct LocalBroker;

    impl Broker for LocalBroker {
        fn clustered(&self) -> bool {
            false
        }
        fn publish(&self, _frames: &[(Arc<str>, Bytes)]) {}
        fn interest(&self, _p: &Arc<str>, _shard: usize, _add: bool, _ack: Option<u64>) -> bool {
            false
        }
        fn control(&self, _op: ControlOp) {}
        fn health(&self) -> Result<(), String> {
            Ok(())
        }
        fn nodes(&self) -> Option<tokio::sync::oneshot::Receiver<Result<Vec<Value>, String>>> {
            None
        }
        fn stats(&self) -> Option<&ClusterStats> {
            None
        }
        fn presence_change(&self, _topic: &str, _client: String, _entry: Option<String>) {}
        fn presence(&self, _topic: &str) -> Option<Reply<Vec<String>>> {
            None
        }
        fn query(&self, _kind: QueryKind) -> Option<Reply<Gathered>> {
            None
        }
        fn stop(&self) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ops_round_trip_with_raw_data() {
        let op = ControlOp::Send {
            users: vec!["ann".into()],
            topic: None,
            event: "dm".into(),
            data: Some(RawValue::from_string(r#"{"a": [1, "x"]}"#.into()).unwrap()),
        };
        let json = serde_json::to_vec(&op).unwrap();
        let ControlOp::Send { users, data, .. } = serde_json::from_slice(&json).unwrap() else {
            panic!("not a send");
        };
        assert_eq!(users, ["ann"]);
        assert_eq!(data.unwrap().get(), r#"{"a": [1, "x"]}"#);
        let back: ControlOp =
            serde_json::from_str(r#"{"subscription":{"client":"b.1f","topic":"t","add":true}}"#)
                .unwrap();
        assert!(matches!(back, ControlOp::Subscription { add: true, .. }));
        assert!(serde_json::from_str::<ControlOp>(r#"{"nope":{}}"#).is_err());
    }
}
