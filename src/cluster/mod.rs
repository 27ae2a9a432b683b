//! The cluster layer: how publications, subscription interest and API operations cross nodes.
//!
//! A node talks to the others through one [`Broker`]. [`local::LocalBroker`] (the default) is a
//! single node: nothing leaves the process and the shards skip every cluster step (one `bool`
//! test per publication). [`redis::RedisBroker`] joins N nodes through one or more Redis
//! instances (`[cluster] redis = [...]`): every publication on a topic without history is one
//! Redis `PUBLISH`, a node subscribes in Redis only to the patterns its connections want, and
//! API operations (`send`, `broadcast`, `disconnect`, server-side `subscribe`/`unsubscribe`,
//! durable messages and their removals) go to every node on a control channel. Publications on
//! topics with history do not pass through [`Broker::publish`]: the Redis store's append script
//! publishes them (wire kind `'S'`), and the broker delivers them to every node, the origin
//! included, in offset order.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::proto::error::ServerError;
use crate::shard::shared::HubShared;

pub mod local;
pub(crate) mod query;
pub mod redis;
pub(crate) mod wire;

/// `[cluster]`: how this node reaches the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Redis URLs (`redis://host:port[/db]`). Empty: a single node (the local broker).
    /// With several, exact topics are spread over them by consistent hashing (the same list,
    /// in the same order, on every node) and wildcard patterns are subscribed on every one.
    pub redis: Vec<String>,
    /// Prefix of every Redis channel and key (`<prefix>:t:<topic>`, `<prefix>:ctl`,
    /// `<prefix>:node:<name>`): nodes with the same prefix form one cluster.
    pub prefix: String,
    /// How long a presence entry outlives its node's last refresh (`[cluster] presence_ttl`,
    /// default 30 s). Each node refreshes its entries every third of it, so a node that dies
    /// without unsubscribing (`kill -9`) leaves every presence list within this time.
    pub presence_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: Vec::new(),
            prefix: "ringhub".into(),
            presence_ttl: Duration::from_secs(30),
        }
    }
}

/// Carries a node's publications, interest and API operations to the other nodes.
///
/// Guarantees of an implementation that reaches other nodes ([`redis::RedisBroker`]):
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
    /// Starts the broker's threads; remote publications go to `hub`'s shards.
    fn start(&self, hub: Arc<HubShared>) -> Result<(), ServerError>;
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

/// The broker for `config`: Redis when URLs are given, else the single-node one.
pub(crate) fn broker_for(
    config: &ClusterConfig,
    node: &Arc<str>,
) -> Result<Arc<dyn Broker>, ServerError> {
    if config.redis.is_empty() {
        return Ok(Arc::new(local::LocalBroker));
    }
    Ok(Arc::new(redis::RedisBroker::new(config, node.clone())?))
}

/// The instance of `n` that owns `key`: jump consistent hashing (Lamping & Veach) over a stable
/// FNV-1a hash, so every node maps a topic to the same instance, and adding an instance moves
/// only about 1/n of the topics.
pub(crate) fn instance_for(key: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n as i64 {
        b = j;
        h = h.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((h >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The Redis channel of a topic's publications: the broker subscribes it and publishes plain
/// publications on it; the Redis store's append script publishes stored ones on it.
pub(crate) fn topic_channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// A random starting point for a sequence number a node stamps on what it sends. Receivers
/// de-duplicate by (origin, sequence) over a short window, so a node restarted under the same
/// name must not start where its previous life did, and its publication and control sequences
/// must not overlap: publications take the lower half of the range (`control == false`),
/// control operations the upper half.
pub(crate) fn random_seq(control: bool) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    // Room for 2^61 messages before either half wraps into the other.
    let base = h.finish() >> 2;
    if control {
        base | (1 << 63)
    } else {
        base
    }
}

/// Escapes Redis glob metacharacters (`*?[]\`) so `s` matches itself in a `PSUBSCRIBE`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

    #[test]
    fn sequences_start_apart() {
        let (p, c) = (random_seq(false), random_seq(true));
        assert_eq!(p >> 62, 0, "publications in the lower half, with room");
        assert_eq!(c >> 63, 1, "control operations in the upper half");
        // A restart starts elsewhere (equal only with probability 2^-62).
        assert_ne!(random_seq(false), random_seq(false));
    }

    #[test]
    fn glob_escape_escapes_metacharacters() {
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        assert_eq!(glob_escape("chat:"), "chat:");
    }

    #[test]
    fn instance_for_is_stable_and_spreads() {
        assert_eq!(instance_for("anything", 1), 0);
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let t = format!("topic:{i}");
            let k = instance_for(&t, 3);
            assert_eq!(k, instance_for(&t, 3));
            counts[k] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
        // Going from 3 to 4 instances moves about a quarter of the topics, all to the new one.
        let moved = (0..3000)
            .map(|i| format!("topic:{i}"))
            .filter(|t| instance_for(t, 3) != instance_for(t, 4))
            .inspect(|t| assert_eq!(instance_for(t, 4), 3))
            .count();
        assert!((500..1000).contains(&moved), "{moved}");
    }
}
