//! The `axum` feature: ringhub's endpoint mounted on an axum application served by its own
//! tokio runtime, talking to the same hub as the native port — on both shells.

mod common;

use std::net::SocketAddr;

use common::*;
use ringhub::hooks::ConnectOutcome;
use ringhub::{Builder, HandlerError, IoMode, ServerHandle};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "test-secret-that-is-long-enough-for-hs256!";

/// Serves `ringhub::axum::router(h)` (plus a route of the application's own) on 127.0.0.1:0.
async fn serve_axum(h: &ServerHandle) -> SocketAddr {
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .merge(ringhub::axum::router(h));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn connect_to(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect through axum");
    ws
}

/// A raw request's answer: the head and the start of the body (async: the axum server runs on
/// this test's runtime).
async fn raw(addr: SocketAddr, req: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // axum keeps the connection open after a refusal: read until some body is in.
    loop {
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .expect("answer timed out")
            .unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        // A 101 has no body: the socket now belongs to a shard, which says nothing first.
        let switched = text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n");
        let body = text
            .split_once("\r\n\r\n")
            .is_some_and(|(_, b)| !b.is_empty());
        if n == 0 || switched || body {
            return text.into_owned();
        }
    }
}

fn upgrade_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
}

fn hub(io: IoMode) -> Builder {
    builder(io).pubsub()
}

/// A client through axum and a client on the native port publish to each other, both ways; the
/// application's own route still answers.
async fn both_ways(io: IoMode) {
    let Some(h) = start(hub(io)) else { return };
    let addr = serve_axum(&h).await;
    let hello = raw(
        addr,
        "GET /hello HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(hello.ends_with("hello"), "{hello}");
    // Several through axum: the shards are picked round-robin, so both shards adopt some.
    let mut via_axum = Vec::new();
    for i in 0..3 {
        let mut ws = connect_to(addr, "/ws").await;
        subscribe(&mut ws, "room", i).await;
        via_axum.push(ws);
    }
    let mut native = connect(&h, "/ws").await;
    subscribe(&mut native, "room", 9).await;
    send(
        &mut native,
        json!({"topic":"room","event":"from-native","data":1}),
    )
    .await;
    let want = json!({"topic":"room","event":"from-native","data":1});
    for ws in via_axum.iter_mut() {
        assert_eq!(recv(ws).await, want);
    }
    assert_eq!(recv(&mut native).await, want);
    send(
        &mut via_axum[0],
        json!({"topic":"room","event":"from-axum","data":{"n":2}}),
    )
    .await;
    let want = json!({"topic":"room","event":"from-axum","data":{"n":2}});
    assert_eq!(recv(&mut native).await, want);
    for ws in via_axum.iter_mut() {
        assert_eq!(recv(ws).await, want);
    }
    assert_eq!(h.stats().connections, 4);
    // An upgrade that is not one: the engine's answer, through axum.
    let bad = raw(
        addr,
        "GET /ws HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 426"), "{bad}");
    drop((via_axum, native));
    h.shutdown();
    h.join();
}
per_shell!(async fn both_ways);

/// The door through axum: a refused token is 401, a good one connects as its user; the
/// connect hook runs (its refusal is 403, its topics are subscribed).
async fn door(io: IoMode) {
    let mut s = ringhub::settings::Settings::default();
    s.set("auth.jwt_secret", SECRET, "test").unwrap();
    s.validate().unwrap();
    let guard = ringhub::guard::Guard::from_settings(&s).unwrap();
    let b = hub(io).guard(guard).on_connect(|info| {
        if info.user == Some("mallory") {
            return Err(HandlerError::forbidden("not you"));
        }
        Ok(ConnectOutcome {
            topics: vec![format!("hello:{}", info.user.unwrap_or("-"))],
            ..Default::default()
        })
    });
    let Some(h) = start(b) else { return };
    let addr = serve_axum(&h).await;
    let refused = raw(addr, &upgrade_req("/ws?token=garbage")).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let missing = raw(addr, &upgrade_req("/ws")).await;
    assert!(missing.starts_with("HTTP/1.1 401"), "{missing}");
    let mallory = raw(
        addr,
        &upgrade_req(&format!("/ws?token={}", token("mallory"))),
    )
    .await;
    assert!(mallory.starts_with("HTTP/1.1 403"), "{mallory}");
    assert!(mallory.contains("not you"), "{mallory}");
    let mut alice = connect_to(addr, &format!("/ws?token={}", token("alice"))).await;
    // Subscribed by the hook: a publication on the native side reaches her.
    let mut bob = connect(&h, &format!("/ws?token={}", token("bob"))).await;
    subscribe(&mut bob, "sync", 1).await;
    send(&mut bob, json!({"topic":"hello:alice","event":"hi"})).await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"topic":"hello:alice","event":"hi"})
    );
    drop((alice, bob));
    h.shutdown();
    h.join();
}
per_shell!(async fn door);

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// SSE through axum receives publications from a native client; a bad request gets the
/// engine's status.
async fn sse(io: IoMode) {
    let Some(h) = start(hub(io)) else { return };
    let addr = serve_axum(&h).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /sse?topics=feed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The head comes once the subscription exists on every shard.
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("SSE head timed out")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let mut p = connect(&h, "/ws").await;
    subscribe(&mut p, "sync", 1).await;
    send(&mut p, json!({"topic":"feed","event":"a","data":1})).await;
    let want = "data: {\"topic\":\"feed\",\"event\":\"a\",\"data\":1}\n\n";
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = tokio::time::timeout(GUARD, stream.read(&mut buf))
            .await
            .expect("SSE event timed out")
            .unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let bad = raw(
        addr,
        "GET /sse?topics=a*b HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let none = raw(
        addr,
        "GET /sse HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    // The stream's end reaches the shard: the connection is counted out.
    drop(stream);
    let t0 = std::time::Instant::now();
    while h.stats().connections != 1 {
        assert!(t0.elapsed() < GUARD, "SSE connection never closed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(p);
    h.shutdown();
    h.join();
}
per_shell!(async fn sse);

/// The connection caps count adopted connections: a client through axum holds its slot (the
/// next upgrade through axum gets 429, as a native one does) until it goes.
async fn caps(io: IoMode) {
    let mut s = ringhub::settings::Settings::default();
    s.set("limits.max_connections_per_ip", "1", "test").unwrap();
    s.validate().unwrap();
    let guard = ringhub::guard::Guard::from_settings(&s).unwrap();
    let Some(h) = start(hub(io).guard(guard)) else {
        return;
    };
    let addr = serve_axum(&h).await;
    let mut first = connect_to(addr, "/ws").await;
    subscribe(&mut first, "t", 1).await;
    let second = raw(addr, &upgrade_req("/ws")).await;
    assert!(second.starts_with("HTTP/1.1 429"), "{second}");
    let sse = raw(addr, "GET /sse?topics=t HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(sse.starts_with("HTTP/1.1 429"), "{sse}");
    drop(first);
    // The slot comes back once the shard has seen the close.
    let t0 = std::time::Instant::now();
    loop {
        let r = raw(addr, &upgrade_req("/ws")).await;
        if r.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(t0.elapsed() < GUARD, "slot never released: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    h.shutdown();
    h.join();
}
per_shell!(async fn caps);
