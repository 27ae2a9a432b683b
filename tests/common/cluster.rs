//! Helpers for tests of in-process nodes joined through Redis (see [`super::redis`] for the
//! test's own `redis-server`): nodes, the API, tokens, and polling with a deadline.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
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

/// Like [`node`], with further settings `(key, value)` (applied last: they may replace the
/// memory store).
pub fn node_with(
    io: IoMode,
    name: &str,
    urls: &[String],
    settings: &[(&str, &str)],
) -> Option<ServerHandle> {
    let mut s = Settings::default();
    s.set("auth.jwt_secret", SECRET, "test").unwrap();
    s.set("auth.anonymous", "true", "test").unwrap();
    s.set("store.backend", "memory", "test").unwrap();
    s.set("cluster.redis", &urls.join(","), "test").unwrap();
    s.set("node", name, "test").unwrap();
    for (k, v) in settings {
        s.set(k, v, "test").unwrap();
    }
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

/// The server binary as a node of the cluster at `url` (one epoll shard), killed on drop; the
/// tests kill it with `kill -9` (`child.kill()`).
pub struct BinNode {
    pub child: Child,
    pub addr: SocketAddr,
}

impl BinNode {
    /// Starts it with further environment `(RINGHUB_KEY, value)` and waits for its listening line.
    pub fn spawn(name: &str, url: &str, env: &[(&str, &str)]) -> BinNode {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringhub"));
        cmd.args(["--listen", "127.0.0.1:0", "--shards", "1", "--io", "epoll"])
            .args(["--stats-interval", "0s", "--node", name])
            .env("RINGHUB_CLUSTER_REDIS", url)
            .env("RINGHUB_AUTH_JWT_SECRET", SECRET)
            .env("RINGHUB_AUTH_ANONYMOUS", "true")
            .env("RINGHUB_API_KEY", KEY)
            .env("RINGHUB_LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn ringhub");
        let addr = super::wait_listening(&mut child)
            .parse()
            .expect("listening address");
        BinNode { child, addr }
    }
}

impl Drop for BinNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
