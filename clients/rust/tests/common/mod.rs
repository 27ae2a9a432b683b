//! Test helpers: an in-process ringhub server (epoll, two shards) and a few shortcuts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringhub::config::Namespace;
use ringhub::hooks::{ConnectInfo, ConnectOutcome};
use ringhub::{Builder, IoMode, RingHub, ServerHandle};
use ringhub_client::{Backoff, Client, ConnectionState, Event, Options, Publication, Subscription};

/// Guard against a hung test; never used to assert speed.
pub const GUARD: Duration = Duration::from_secs(10);

pub const SECRET: &str = "client-test-secret-that-is-long-enough";

/// A pub/sub builder on `addr` (port 0 for any) with two shards and the API key `k`. A
/// connection's user is the `user` query parameter (`/ws?user=alice`).
pub fn builder(addr: SocketAddr) -> Builder {
    configure(RingHub::builder(), addr)
}

/// [`builder`]'s settings applied to `b` (which may carry a whole `Config` already).
pub fn configure(b: Builder, addr: SocketAddr) -> Builder {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    b.listen(addr)
        .shards(2)
        .io(IoMode::Epoll)
        .api_key("k")
        .on_connect(|c: &ConnectInfo<'_>| {
            let user = c
                .query
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("user=")))
                .map(str::to_string);
            Ok(ConnectOutcome {
                user,
                ..Default::default()
            })
        })
}

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A namespace with history, presence and join/leave.
pub fn ns(pattern: &str, history: usize) -> Namespace {
    Namespace {
        pattern: pattern.into(),
        history_size: history,
        history_ttl: Duration::ZERO,
        presence: true,
        join_leave: true,
    }
}

pub fn start(b: Builder) -> ServerHandle {
    b.build().expect("build").start().expect("start")
}

/// Shuts the server down and waits for its threads (off the async runtime).
pub async fn stop(h: ServerHandle) {
    h.shutdown();
    tokio::task::spawn_blocking(move || h.join()).await.unwrap();
}

pub fn url(h: &ServerHandle, query: &str) -> String {
    format!("ws://{}/ws{query}", h.local_addr())
}

/// Options for tests: fast reconnects, short timeouts.
pub fn opts() -> Options {
    Options::default()
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            factor: 2.0,
        })
        .request_timeout(GUARD)
}

pub async fn connect(h: &ServerHandle, query: &str) -> Client {
    guard(Client::connect(url(h, query), opts()))
        .await
        .expect("connect")
}

/// Awaits `f` within [`GUARD`] (a hung test fails instead of hanging).
pub async fn guard<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(GUARD, f).await.expect("timed out")
}

/// The next event of `sub`.
pub async fn next(sub: &mut Subscription) -> Event {
    guard(sub.recv()).await.expect("subscription ended")
}

/// The next publication of `sub` (other events are an error).
pub async fn next_pub(sub: &mut Subscription) -> Publication {
    match next(sub).await {
        Event::Publication(p) => p,
        other => panic!("expected a publication, got {other:?}"),
    }
}

pub async fn wait_state(c: &Client, want: ConnectionState) {
    let mut s = c.state();
    guard(s.wait_for(|s| *s == want))
        .await
        .expect("state channel closed");
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub`, valid ten minutes.
pub fn jwt(sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": sub, "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A guard requiring HS256 tokens signed with [`SECRET`].
pub fn jwt_guard() -> ringhub::guard::Guard {
    let mut s = ringhub::settings::Settings::default();
    s.set("auth.jwt_secret", SECRET, "test").unwrap();
    s.validate().unwrap();
    ringhub::guard::Guard::from_settings(&s).unwrap()
}
