//! Helpers for tests of in-process nodes joined through Redis (see [`super::redis`] for the
//! test's own `redis-server`): nodes, the API, tokens, and polling with a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringhub::config::ClusterConfig;
use ringhub::settings::Settings;
use ringhub::{Config, IoMode, RingHub, ServerHandle};
use serde_json::{json, Value};

use super::{http_json, start};

pub const SECRET: &str = "cluster-test-secret-0123456789abcdef";
pub const KEY: &str = "k";
/// Deadline for conditions polled across nodes (a reconnect included).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A node named `name` with two shards, joined through `urls`.
pub fn node(io: IoMode, name: &str, urls: &[String]) -> Option<ServerHandle> {
    node_with(io, name, urls, &[])
}

/// Like [`node`], with further settings `(key, value)`.
pub fn node_with(
    io: IoMode,
    name: &str,
    urls: &[String],
    settings: &[(&str, &str)],
) -> Option<ServerHandle> {
    let mut s = Settings::default();
    for (k, v) in settings {
        s.set(k, v, "test").unwrap();
    }
    s.set("auth.jwt_secret", SECRET, "test").unwrap();
    s.set("auth.anonymous", "true", "test").unwrap();
    s.set("store.backend", "memory", "test").unwrap();
    s.set("cluster.redis", &urls.join(","), "test").unwrap();
    s.set("node", name, "test").unwrap();
    s.validate().unwrap();
    let guard = ringhub::guard::Guard::from_settings(&s).unwrap();
    let config = Config {
        api_key: Some(KEY.into()),
        ..s.engine_config()
    };
    assert_eq!(config.cluster.redis, urls);
    assert_eq!(config.cluster.prefix, ClusterConfig::default().prefix);
    start(
        RingHub::builder()
            .config(config)
            .listen("127.0.0.1:0".parse().unwrap())
            .shards(2)
            .io(io)
            .handler_threads(2)
            .guard(guard)
            .pubsub(),
    )
}

/// Starts three nodes and waits until each is connected to the cluster.
pub async fn three(io: IoMode, urls: &[String]) -> Option<Vec<ServerHandle>> {
    three_with(io, urls, &[]).await
}

/// Like [`three`], with further settings `(key, value)` on each node.
pub async fn three_with(
    io: IoMode,
    urls: &[String],
    settings: &[(&str, &str)],
) -> Option<Vec<ServerHandle>> {
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node_with(io, name, urls, settings)?);
    }
    for n in &nodes {
        wait_for(|| ready(n.local_addr()).0 == 200, "node ready").await;
    }
    Some(nodes)
}

pub fn stop(nodes: Vec<ServerHandle>) {
    for n in &nodes {
        n.shutdown();
    }
    for n in nodes {
        n.join();
    }
}

pub fn ready(addr: SocketAddr) -> (u16, Value) {
    http_json(addr, "GET", "/readyz", None, None)
}

pub fn api(addr: SocketAddr, path: &str, body: Value) -> Value {
    let (st, v) = http_json(addr, "POST", path, Some(KEY), Some(&body));
    assert_eq!(st, 200, "{path}: {v}");
    v["data"].clone()
}

/// Polls `cond` until it holds (panics with `what` at the deadline).
pub async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let until = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn token(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}
