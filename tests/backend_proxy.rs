//! The backend proxies against a real backend process (`examples/backend/server.js`, Node's
//! `http`), on both shells: connect accepted and refused, a join refused by the backend's rule,
//! a publication replaced, an RPC answered, the backend down, the backend too slow; the refresh
//! proxy and `on_down = "allow"` (`lifecycle`); Socket.IO clients through every proxy (`sio`).

mod common;
#[path = "backend_proxy/lifecycle.rs"]
mod lifecycle;
#[path = "backend_proxy/sio.rs"]
mod sio;

use std::sync::Arc;
use std::time::Duration;

use common::backend::{dead_url, Backend};
use common::*;
use futures_util::FutureExt;
use ringhub::config::proxy::{ProxyConfig, ProxyEndpoint, TopicProxies};
use ringhub::{Config, IoMode, ServerHandle};
use serde_json::{json, Value};

fn ep(url: String) -> Option<Arc<ProxyEndpoint>> {
    Some(Arc::new(ProxyEndpoint::new(url)))
}

/// The example backend's rules: connect, refresh, `project:*` subscribe and publish, RPC.
fn proxies(b: &Backend) -> ProxyConfig {
    ProxyConfig {
        connect: ep(b.url("/connect")),
        refresh: ep(b.url("/refresh")),
        rpc: ep(b.url("/rpc")),
        topics: vec![TopicProxies {
            pattern: "project:*".into(),
            subscribe: ep(b.url("/subscribe")),
            publish: ep(b.url("/publish")),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn server(io: IoMode, proxy: ProxyConfig) -> Option<ServerHandle> {
    let cfg = Config {
        proxy,
        ..Config::default()
    };
    start(builder_with(io, cfg).api_key("k").pubsub())
}

/// `?data=` with the session token, as a browser would put it on the WebSocket URL.
fn as_user(token: &str) -> String {
    let data = json!({ "token": token }).to_string();
    let enc: String = data
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    format!("/ws?data={enc}")
}

/// Connects as the token's user and reads the `connected` frame.
async fn login(h: &ServerHandle, token: &str) -> (Ws, Value) {
    let mut ws = connect(h, &as_user(token)).await;
    let hello = recv(&mut ws).await;
    assert_eq!(hello["event"], "connected", "{hello}");
    (ws, hello)
}

async fn connect_accepted_and_refused(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = server(io, proxies(&backend)) else {
        return;
    };
    let (mut alice, hello) = login(&h, "tok-alice").await;
    assert_eq!(hello["data"]["user"], "alice");
    assert_eq!(hello["data"]["data"], json!({"welcome": "hello alice"}));
    let info = request(&mut alice, json!({"event":"info","topic":"","id":1})).await;
    assert_eq!(info["data"]["user"], "alice");
    // The backend subscribed her to `announcements`: a publication there reaches her.
    let (mut bob, _) = login(&h, "tok-bob").await;
    let r = request(
        &mut bob,
        json!({"event":"news","topic":"announcements","data":"v2 is out","id":2}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    let got = recv(&mut alice).await;
    assert_eq!(
        got,
        json!({"topic":"announcements","event":"news","data":"v2 is out"})
    );
    // Refused by the backend's rules: banned (4403), no session (4401).
    let mut mallory = connect(&h, &as_user("tok-mallory")).await;
    assert_eq!(u16::from(expect_close(&mut mallory).await), 4403);
    let mut nobody = connect(&h, "/ws").await;
    assert_eq!(u16::from(expect_close(&mut nobody).await), 4401);
    drop((alice, bob));
    stop_server(h);
}
per_shell!(async fn connect_accepted_and_refused);

async fn join_refused_by_the_backends_rule(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = server(io, proxies(&backend)) else {
        return;
    };
    let (mut alice, _) = login(&h, "tok-alice").await;
    // project:join of a project she is not a member of.
    let r = request(
        &mut alice,
        json!({"event":"subscribe","topic":"project:2","id":1}),
    )
    .await;
    assert_eq!(r["event"], "error", "{r}");
    assert_eq!(r["data"]["code"], "forbidden");
    assert_eq!(r["data"]["message"], "not a member of project 2");
    // A member: the backend's data first, then the reply.
    send(
        &mut alice,
        json!({"event":"subscribe","topic":"project:1","id":2}),
    )
    .await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"topic":"project:1","event":"subscribed","data":{"project":"Apollo"}})
    );
    assert_eq!(
        recv(&mut alice).await,
        json!({"event":"reply","id":2,"topic":"project:1"})
    );
    drop(alice);
    stop_server(h);
}
per_shell!(async fn join_refused_by_the_backends_rule);

async fn publish_replaced_by_the_backend(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = server(io, proxies(&backend)) else {
        return;
    };
    let (mut alice, _) = login(&h, "tok-alice").await;
    let (mut bob, _) = login(&h, "tok-bob").await;
    for (ws, id) in [(&mut alice, 1), (&mut bob, 1)] {
        send(ws, json!({"event":"subscribe","topic":"project:1","id":id})).await;
        assert_eq!(recv(ws).await["event"], "subscribed");
        assert_eq!(recv(ws).await["event"], "reply");
    }
    let r = request(
        &mut alice,
        json!({"event":"comment","topic":"project:1","data":{"text":"ship it"},"id":5}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    let got = recv(&mut bob).await;
    assert_eq!(got["event"], "comment");
    assert_eq!(got["data"]["text"], "ship it");
    assert_eq!(
        got["data"]["author"], "alice",
        "the backend stamps the author"
    );
    assert!(got["data"]["at"].is_u64());
    // Alice is not in project 2: her publication there is refused, nobody receives it.
    let r = request(
        &mut alice,
        json!({"event":"comment","topic":"project:2","data":{"text":"hi"},"id":6}),
    )
    .await;
    assert_eq!(r["data"]["code"], "forbidden", "{r}");
    drop((alice, bob));
    stop_server(h);
}
per_shell!(async fn publish_replaced_by_the_backend);

async fn rpc_answered(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = server(io, proxies(&backend)) else {
        return;
    };
    let (mut bob, _) = login(&h, "tok-bob").await;
    let r = request(
        &mut bob,
        json!({"event":"rpc","topic":"projects.mine","id":7}),
    )
    .await;
    assert_eq!(
        r,
        json!({"event":"reply","id":7,"topic":"projects.mine","data":[1,2]})
    );
    let r = request(&mut bob, json!({"event":"rpc","topic":"nope","id":8})).await;
    assert_eq!(r["event"], "error");
    assert_eq!(r["data"]["code"], "bad_request");
    assert_eq!(r["data"]["message"], "no method nope");
    drop(bob);
    stop_server(h);
}
per_shell!(async fn rpc_answered);

async fn backend_down(io: IoMode) {
    let proxy = ProxyConfig {
        topics: vec![TopicProxies {
            pattern: "down:*".into(),
            subscribe: ep(dead_url("/subscribe")),
            ..Default::default()
        }],
        ..Default::default()
    };
    let Some(h) = server(io, proxy) else {
        return;
    };
    let mut a = connect(&h, "/ws").await;
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(connect(&h, "/ws").await);
    }
    // The refused subscribe, then a message sent behind it: answered in order.
    send(&mut a, json!({"event":"subscribe","topic":"down:1","id":1})).await;
    send(&mut a, json!({"event":"subscribe","topic":"chat:1","id":2})).await;
    let e = recv(&mut a).await;
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(e["id"], 1);
    assert_eq!(e["data"]["code"], "not_available");
    assert!(
        e["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("backend not available"),
        "{e}"
    );
    assert_eq!(
        recv(&mut a).await,
        json!({"event":"reply","id":2,"topic":"chat:1"})
    );
    // Other clients are unaffected.
    for (i, ws) in others.iter_mut().enumerate() {
        subscribe(ws, "chat:1", i as u64).await;
    }
    let (status, metrics) = http_exchange(
        h.local_addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"ringhub_proxy_errors_total{proxy="subscribe",kind="unavailable"} 1"#),
        "{metrics}"
    );
    drop((a, others));
    stop_server(h);
}
per_shell!(async fn backend_down);

async fn backend_slower_than_the_timeout(io: IoMode) {
    let backend = Backend::start();
    let mut rpc = ProxyEndpoint::new(backend.url("/rpc"));
    // Long enough that the round trips below happen while the call waits (the backend never
    // answers `stall`; what is asserted is the order of what arrives, not durations).
    rpc.timeout = Duration::from_secs(3);
    let proxy = ProxyConfig {
        rpc: Some(Arc::new(rpc)),
        ..Default::default()
    };
    let Some(h) = server(io, proxy) else {
        return;
    };
    let mut a = connect(&h, "/ws").await;
    send(&mut a, json!({"event":"rpc","topic":"stall","id":1})).await;
    send(&mut a, json!({"event":"subscribe","topic":"chat:a","id":2})).await;
    assert_eq!(backend.next_line(), "stalled 1");
    // While A's call waits, connections on every shard complete round trips.
    let mut others = Vec::new();
    for i in 0..8 {
        let mut ws = connect(&h, "/ws").await;
        subscribe(&mut ws, "chat:b", i).await;
        let r = request(&mut ws, json!({"event":"m","topic":"chat:b","id":100 + i})).await;
        assert_eq!(r["event"], "reply");
        others.push(ws);
    }
    assert!(
        futures_util::StreamExt::next(&mut a)
            .now_or_never()
            .is_none(),
        "A got an answer before the others' round trips"
    );
    // Then the timeout, and A's held subscribe right after it.
    let e = recv(&mut a).await;
    assert_eq!(e["id"], 1, "{e}");
    assert_eq!(e["data"]["code"], "not_available");
    assert_eq!(e["data"]["message"], "backend timed out");
    assert_eq!(
        recv(&mut a).await,
        json!({"event":"reply","id":2,"topic":"chat:a"})
    );
    drop((a, others));
    stop_server(h);
}
per_shell!(async fn backend_slower_than_the_timeout);

/// The binary, configured by a file: `[proxy]` and a `[[topics]]` entry's `proxy` table.
async fn binary_through_configuration(io: IoMode) {
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringhub.toml");
    let toml = format!(
        "[proxy]\nconnect = {{ url = \"{}\", headers = [\"cookie\"] }}\n\n\
         [[topics]]\npattern = \"project:*\"\nproxy = {{ subscribe = \"{}\" }}\n",
        backend.url("/connect"),
        backend.url("/subscribe"),
    );
    std::fs::write(&config, toml).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringhub"));
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("RINGHUB_")) {
            cmd.env_remove(k);
        }
    }
    let io_name = if io == IoMode::Uring {
        "uring"
    } else {
        "epoll"
    };
    let mut child = cmd
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--io", io_name])
        .args(["--stats-interval", "0s", "--store", "memory"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ringhub");
    let addr: std::net::SocketAddr = wait_listening(&mut child).parse().unwrap();
    // The session comes as a cookie this time (the allowlisted header).
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("Cookie", "theme=dark; session=tok-bob".parse().unwrap());
    let (mut bob, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = recv(&mut bob).await;
    assert_eq!(hello["data"]["user"], "bob", "{hello}");
    let r = request(
        &mut bob,
        json!({"event":"subscribe","topic":"project:1","id":1}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    let r = request(
        &mut bob,
        json!({"event":"subscribe","topic":"project:3","id":2}),
    )
    .await;
    assert_eq!(r["data"]["code"], "forbidden", "{r}");
    drop(bob);
    let _ = child.kill();
    let _ = child.wait();
}
per_shell!(async fn binary_through_configuration);

/// An SSE stream passes the same connect proxy: accepted with the backend's user and topics,
/// or refused with an `error` event and the end of the stream.
async fn sse_clients_pass_the_connect_proxy(io: IoMode) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start();
    let Some(h) = server(io, proxies(&backend)) else {
        return;
    };
    let query = as_user("tok-alice").replace("/ws?", "");
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let req = format!("GET /sse?topics=chat:x&{query} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The `connected` event comes once the backend accepted and the subscriptions are active.
    while !String::from_utf8_lossy(&got).contains("\"event\":\"connected\"") {
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .expect("SSE read timed out")
            .unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&got).contains("\"user\":\"alice\""),
        "{}",
        String::from_utf8_lossy(&got)
    );
    got.clear();
    // Subscribed to the token's topic and to the backend's.
    h.publish("chat:x", "a", &json!(1)).unwrap();
    h.publish("announcements", "b", &json!(2)).unwrap();
    while !String::from_utf8_lossy(&got).contains("\"event\":\"b\"") {
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .expect("SSE read timed out")
            .unwrap();
        assert!(n > 0, "stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("\"event\":\"a\""));
    drop(s);
    // Refused: an error event, then the end of the stream.
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    s.write_all(b"GET /sse?topics=chat:x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut all))
        .await
        .expect("stream did not end")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains(
            r#""event":"error","topic":"","data":{"code":"forbidden","message":"login required"}"#
        ),
        "{text}"
    );
    stop_server(h);
}
per_shell!(async fn sse_clients_pass_the_connect_proxy);
