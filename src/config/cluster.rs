//! `[cluster]`: the configuration of how this node reaches the others, read by the cluster layer.

use std::time::Duration;

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
    /// How often a node compares, for each topic with history that it has subscribers for, the
    /// store's latest position with the last one its subscribers got (`[cluster]
    /// position_check`, default 3 s; `0s`: never). A topic that missed a publication while the
    /// node's subscriber connection to Redis was down is noticed within about two of these,
    /// even when nothing more is published on it: its subscribers are closed with 4010 and
    /// recover. One Redis round trip per check per instance, for all such topics at once.
    pub position_check: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: Vec::new(),
            prefix: "ringhub".into(),
            presence_ttl: Duration::from_secs(30),
            position_check: Duration::from_secs(3),
        }
    }
}
