//! The HTTP side of the port: API endpoints and their refusals, probes, metrics, SSE.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

fn json_body(r: (u16, String)) -> (u16, Value) {
    (r.0, serde_json::from_str(&r.1).unwrap_or(Value::Null))
}

async fn api(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).api_key("k3y").pubsub()) else {
        return;
    };
    let a = h.local_addr();
    let mut sub = connect(&h, "/ws").await;
    subscribe(&mut sub, "news", 1).await;

    // Refusals: no key, wrong key, wrong method, unknown endpoint, bad JSON, bad topic, no length.
    assert_eq!(
        json_body(http_raw(
            a,
            "POST",
            "/api/v1/publish",
            None,
            Some(&json!({}))
        ))
        .0,
        401
    );
    let (st, v) = json_body(http_raw(
        a,
        "POST",
        "/api/v1/publish",
        Some("nope"),
        Some(&json!({})),
    ));
    assert_eq!((st, v["success"].clone()), (401, json!(false)));
    assert_eq!(
        v["code"], "unauthorized",
        "a stable code beside the message: {v}"
    );
    assert_eq!(
        http_raw(a, "GET", "/api/v1/publish", Some("k3y"), None).0,
        405
    );
    assert_eq!(
        http_raw(a, "GET", "/api/v1/nothing", Some("k3y"), None).0,
        404
    );
    let (st, v) = json_body(http_raw(
        a,
        "POST",
        "/api/v1/publish",
        Some("k3y"),
        Some(&json!({"topic": 5})),
    ));
    assert_eq!(st, 400);
    assert_eq!(v["code"], "bad_request", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("invalid request"),
        "{v}"
    );
    let bad_topic = json!({"topic": "a*", "event": "e"});
    assert_eq!(
        http_raw(a, "POST", "/api/v1/publish", Some("k3y"), Some(&bad_topic)).0,
        400
    );

    // Publish reaches the subscriber and reports deliveries.
    let p = json!({"topic": "news", "event": "flash", "data": {"x": [1, 2]}});
    let (st, v) = json_body(http_raw(
        a,
        "POST",
        "/api/v1/publish",
        Some("k3y"),
        Some(&p),
    ));
    assert_eq!(
        (st, v),
        (200, json!({"success": true, "data": {"delivered": 1}}))
    );
    assert_eq!(
        recv(&mut sub).await,
        json!({"topic":"news","event":"flash","data":{"x":[1,2]}})
    );

    // Broadcast reaches every connection.
    let mut other = connect(&h, "/ws").await;
    let b = json!({"event": "notice", "data": "hi"});
    let (st, v) = json_body(http_raw(
        a,
        "POST",
        "/api/v1/broadcast",
        Some("k3y"),
        Some(&b),
    ));
    assert_eq!((st, v["data"]["delivered"].clone()), (200, json!(2)));
    assert_eq!(
        recv(&mut sub).await,
        json!({"topic":"broadcast","event":"notice","data":"hi"})
    );
    assert_eq!(
        recv(&mut other).await,
        json!({"topic":"broadcast","event":"notice","data":"hi"})
    );

    // Anonymous connections: online lists none by name; send/disconnect to unknown users reach 0.
    let (st, v) = json_body(http_raw(a, "GET", "/api/v1/online", Some("k3y"), None));
    assert_eq!(st, 200);
    assert_eq!(
        v["data"],
        json!({"users": [], "anonymous": 2, "connections": 2})
    );
    let s = json!({"users": ["ghost"], "event": "e"});
    assert_eq!(
        json_body(http_raw(a, "POST", "/api/v1/send", Some("k3y"), Some(&s))).1["data"]
            ["delivered"],
        0
    );
    let d = json!({"user": "ghost"});
    assert_eq!(
        json_body(http_raw(
            a,
            "POST",
            "/api/v1/disconnect",
            Some("k3y"),
            Some(&d)
        ))
        .1["data"]["disconnected"],
        0
    );

    // Stats and metrics after traffic.
    let (st, v) = json_body(http_raw(a, "GET", "/api/v1/stats", Some("k3y"), None));
    assert_eq!(st, 200);
    assert_eq!(v["data"]["shards"].as_array().unwrap().len(), 2);
    assert!(
        v["data"]["total"]["messages_out"].as_u64().unwrap() >= 4,
        "{v}"
    );
    let (st, text) = http_raw(a, "GET", "/metrics", None, None);
    assert_eq!(st, 200);
    assert!(text.contains("ringhub_connections{shard=\"0\"}"), "{text}");
    assert!(
        text.contains("ringhub_handshakes_total{result=\"upgraded\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("ringhub_handshakes_total{result=\"401\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("ringhub_handshake_duration_seconds_count 2"),
        "{text}"
    );
    assert!(text.contains("ringhub_messages_in_total 1"), "{text}");

    // Probes.
    assert_eq!(
        json_body(http_raw(a, "GET", "/healthz", None, None)),
        (200, json!({"success": true, "data": "ok"}))
    );
    assert_eq!(
        json_body(http_raw(a, "GET", "/readyz", None, None)),
        (200, json!({"success": true, "data": "ready"}))
    );
    drop((sub, other));
    h.shutdown();
    h.join();
}

per_shell!(async fn api);

#[test]
fn api_is_off_without_a_key() {
    let h = start(builder(ringhub::IoMode::Epoll).pubsub()).unwrap();
    let (st, v) = json_body(http_raw(
        h.local_addr(),
        "POST",
        "/api/v1/publish",
        Some("x"),
        Some(&json!({})),
    ));
    assert_eq!(st, 403);
    assert!(v["error"].as_str().unwrap().contains("disabled"));
    h.shutdown();
    h.join();
}

async fn sse(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let a = h.local_addr();
    let mut s = std::net::TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(b"GET /sse?topics=feed,alerts%3A* HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // Read the response head before publishing: it is sent after the subscriptions exist.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = read_some(&mut s, &mut buf);
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let mut p = connect(&h, "/ws").await;
    // A publisher on another connection; subscribe-reply round trip proves its shard is ready.
    subscribe(&mut p, "sync", 1).await;
    send(&mut p, json!({"topic":"feed","event":"a","data":1})).await;
    send(
        &mut p,
        json!({"topic":"alerts:fire","event":"b","data":{"hot":true}}),
    )
    .await;
    send(&mut p, json!({"topic":"other","event":"c"})).await;
    let want = "data: {\"topic\":\"feed\",\"event\":\"a\",\"data\":1}\n\ndata: {\"topic\":\"alerts:fire\",\"event\":\"b\",\"data\":{\"hot\":true}}\n\n";
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = read_some(&mut s, &mut buf);
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"),
        "{text}"
    );
    assert!(!text.contains("other"), "{text}");
    let mut bad = std::net::TcpStream::connect(a).unwrap();
    bad.write_all(b"GET /sse?topics=a*b HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = bad.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    drop((s, p));
    h.shutdown();
    h.join();
}

per_shell!(async fn sse);

/// More SSE topics than a connection may subscribe to is refused, naming the limit.
fn sse_topic_cap(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let topics: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(
        format!(
            "GET /sse?topics={} HTTP/1.1\r\nHost: x\r\n\r\n",
            topics.join(",")
        )
        .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("at most 1000"), "{out}");
    h.shutdown();
    h.join();
}

per_shell!(fn sse_topic_cap);

/// The whole response (head and body) to one GET with extra header lines.
fn get_raw(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let req =
        format!("GET {path} HTTP/1.1\r\nConnection: close\r\nHost: 127.0.0.1:9\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The built-in pages: embedded, with types, caching and a same-origin policy; the admin
/// endpoints behind them (`topics`, `events`); `[ui] enabled = false` turns them into 404s.
async fn ui_pages(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).api_key("k3y").pubsub()) else {
        return;
    };
    let a = h.local_addr();
    let page = get_raw(a, "/", "");
    assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(page.contains("Cache-Control: no-cache\r\n"));
    assert!(page.contains(
        "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'"
    ));
    assert!(page.contains("connect-src 'self' ws://127.0.0.1:9 wss://127.0.0.1:9;"));
    assert!(page.contains("/assets/chat.js"));
    let admin = get_raw(a, "/admin", "");
    assert!(admin.starts_with("HTTP/1.1 200 ") && admin.contains("/assets/admin.js"));
    let js = get_raw(a, "/assets/ringhub-client.js", "");
    assert!(js.contains("Content-Type: text/javascript; charset=utf-8\r\n"));
    let body = js.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, include_str!("../clients/js/src/index.js"));
    let etag = js
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("an ETag")
        .to_string();
    let again = get_raw(
        a,
        "/assets/ringhub-client.js",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert!(again.starts_with("HTTP/1.1 304 "), "{again}");
    // Every module the client imports is served beside it (the delta applier).
    let fossil = get_raw(a, "/assets/fossil.js", "");
    assert!(fossil.starts_with("HTTP/1.1 200 "), "{fossil}");
    assert_eq!(
        fossil.split_once("\r\n\r\n").unwrap().1,
        include_str!("../clients/js/src/fossil.js")
    );
    assert!(get_raw(a, "/assets/uPlot.iife.min.js", "").starts_with("HTTP/1.1 200 "));
    assert!(get_raw(a, "/assets/nope.js", "").starts_with("HTTP/1.1 404 "));
    assert_eq!(http_raw(a, "POST", "/", None, None).0, 405);

    // Topics with their subscriber counts, summed over shards; recent events.
    let mut s1 = connect(&h, "/ws").await;
    let mut s2 = connect(&h, "/ws").await;
    subscribe(&mut s1, "room:1", 1).await;
    subscribe(&mut s2, "room:1", 1).await;
    subscribe(&mut s2, "room:*", 2).await;
    let (st, v) = json_body(http_raw(a, "GET", "/api/v1/topics", Some("k3y"), None));
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["data"]["topics"],
        json!([{"topic": "room:*", "subscribers": 1}, {"topic": "room:1", "subscribers": 2}])
    );
    assert_eq!(http_raw(a, "GET", "/api/v1/topics", None, None).0, 401);
    send(&mut s1, json!({"event": "x", "topic": "a*b", "id": 9})).await;
    assert_eq!(recv(&mut s1).await["event"], "error");
    let (st, v) = json_body(http_raw(a, "GET", "/api/v1/events", Some("k3y"), None));
    assert_eq!(st, 200, "{v}");
    let events = v["data"]["events"].as_array().unwrap();
    let last = events.last().expect("the error is recorded");
    assert_eq!(last["kind"], "error");
    assert!(last["detail"]
        .as_str()
        .unwrap()
        .starts_with("bad_request: "));
    assert!(last["client"].as_str().unwrap().contains('.'));
    drop((s1, s2));
    h.shutdown();
    h.join();

    let Some(h) = start(builder(io).ui(false).pubsub()) else {
        return;
    };
    for path in ["/", "/admin", "/assets/ringhub-client.js"] {
        let r = get_raw(h.local_addr(), path, "");
        assert!(r.starts_with("HTTP/1.1 404 "), "{path}: {r}");
    }
    h.shutdown();
    h.join();
}

per_shell!(async fn ui_pages);
