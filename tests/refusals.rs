//! Issue 21, items 9 and 12: what clients and API callers may not do, and the small refusals
//! that must be clear (real server, both shells).

mod common;

use common::*;
use ringhub::{Config, IoMode};
use serde_json::{json, Value};

/// API key "k"; `chat:*` with history, presence and join/leave; `room:*` join/leave without
/// history; `max_recover` 10.
fn server(io: IoMode) -> Option<ringhub::ServerHandle> {
    let mut cfg = Config::default();
    cfg.store.max_recover = 10;
    cfg.max_subscriptions = 2;
    start(
        users(builder_with(io, cfg))
            .api_key("k")
            .topic(ns("chat:*", 100))
            .topic(ns("room:*", 0))
            .pubsub(),
    )
}

/// Item 9: a client cannot publish the server's own events (a forged join on a join_leave
/// topic, a fake reply or error); the other subscribers receive none of them.
async fn server_events_are_reserved(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut watcher = connect(&h, "/ws").await;
    subscribe(&mut watcher, "room:a", 1).await;
    let mut forger = connect(&h, "/ws").await;
    for (i, ev) in ["join", "leave", "reply", "error", "connected", "subscribed"]
        .iter()
        .enumerate()
    {
        let r = request(
            &mut forger,
            json!({"event": ev, "topic": "room:a", "id": 10 + i,
                   "data": {"client": "x.1", "user": "ceo"}}),
        )
        .await;
        assert_eq!(r["event"], "error", "{io:?} {ev}: {r}");
        assert_eq!(r["data"]["code"], "forbidden", "{io:?} {ev}: {r}");
    }
    // An ordinary event still goes through, and it is the first thing the watcher sees.
    let r = request(
        &mut forger,
        json!({"event": "msg", "topic": "room:a", "id": 20, "data": 1}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{io:?}: {r}");
    let m = recv(&mut watcher).await;
    assert_eq!(m["event"], "msg", "{io:?}: the watcher got {m}");
    h.shutdown();
    h.join();
}
per_shell!(async fn server_events_are_reserved);

/// Item 12, WebSocket side: `history` without `limit` when `max_recover` < 50; `info` with a
/// topic over 256 bytes.
async fn ws_small_refusals(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut ws = connect(&h, "/ws").await;
    let r = request(
        &mut ws,
        json!({"event": "history", "topic": "chat:h", "id": 1}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{io:?}: history without limit: {r}");
    let long = "t".repeat(100_000);
    let r = request(&mut ws, json!({"event": "info", "topic": long, "id": 2})).await;
    assert_eq!(r["event"], "error", "{io:?}");
    assert_eq!(r["data"]["code"], "bad_request", "{io:?}");
    assert!(
        r.to_string().len() < 2000,
        "{io:?}: the error echoes the topic"
    );
    let r = request(&mut ws, json!({"event": "info", "id": 3})).await;
    assert_eq!(r["event"], "reply", "{io:?}: {r}");
    h.shutdown();
    h.join();
}
per_shell!(async fn ws_small_refusals);

fn post(h: &ringhub::ServerHandle, path: &str, body: Value) -> (u16, Value) {
    http_json(h.local_addr(), "POST", path, Some("k"), Some(&body))
}

/// Item 12, API side: a `null` batch entry fails alone; `broadcast` refuses a `user:` topic;
/// user names no token can carry are refused; `bearer` in any case is the Bearer scheme.
async fn api_small_refusals(io: IoMode) {
    let Some(h) = server(io) else { return };
    let (st, v) = post(
        &h,
        "/api/v1/batch",
        json!({"commands": [null, {"method": "publish", "params": {"topic": "x", "event": "e"}}]}),
    );
    assert_eq!(st, 200, "{io:?}: {v}");
    let res = &v["data"]["results"];
    assert_eq!(res[0]["success"], false, "{io:?}: {v}");
    assert_eq!(res[1]["success"], true, "{io:?}: {v}");

    let (st, v) = post(
        &h,
        "/api/v1/broadcast",
        json!({"topic": "user:carol", "event": "e", "data": 1}),
    );
    assert_eq!(st, 400, "{io:?}: {v}");

    for bad in ["*", "a\u{0}b", "a\nb", &"u".repeat(300)] {
        for durable in [true, false] {
            let (st, v) = post(
                &h,
                "/api/v1/send",
                json!({"user": bad, "event": "e", "data": 1, "durable": durable}),
            );
            assert_eq!(st, 400, "{io:?} {bad:?} durable={durable}: {v}");
            assert!(v["error"].as_str().unwrap().contains("invalid_user"), "{v}");
        }
    }

    let (st, body) = raw_auth(&h, "bearer k");
    assert_eq!(st, 200, "{io:?}: {body}");
    let (st, _) = raw_auth(&h, "BEARER k");
    assert_eq!(st, 200, "{io:?}");
    let (st, _) = raw_auth(&h, "Basic k");
    assert_eq!(st, 401, "{io:?}");
    h.shutdown();
    h.join();
}
per_shell!(async fn api_small_refusals);

/// `GET /api/v1/stats` with this `Authorization` header value.
fn raw_auth(h: &ringhub::ServerHandle, auth: &str) -> (u16, String) {
    http_exchange(
        h.local_addr(),
        &format!("GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"),
    )
}

/// Item 12: JSON nested deeper than the bound is refused (WebSocket publish and HTTP API), not
/// stored and served.
async fn deep_json_refused(io: IoMode) {
    let Some(h) = server(io) else { return };
    let deep = format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000));
    let mut ws = connect(&h, "/ws").await;
    let frame = format!(r#"{{"event":"m","topic":"chat:d","id":1,"data":{deep}}}"#);
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text(frame),
    )
    .await
    .unwrap();
    let r = recv(&mut ws).await;
    assert_eq!(r["event"], "error", "{io:?}");
    assert_eq!(r["data"]["code"], "bad_request", "{io:?}: {r}");
    // 64 levels are fine.
    let ok = json!({"event": "m", "topic": "chat:d", "id": 2,
                    "data": serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(63), "]".repeat(63))).unwrap()});
    assert_eq!(request(&mut ws, ok).await["event"], "reply", "{io:?}");
    let body = format!(r#"{{"topic":"chat:d","event":"m","data":{deep}}}"#);
    let (st, _) = raw_post(&h, "/api/v1/publish", &body);
    assert_eq!(st, 400, "{io:?}");
    let body = format!(r#"{{"user":"bob","event":"m","durable":true,"data":{deep}}}"#);
    let (st, _) = raw_post(&h, "/api/v1/send", &body);
    assert_eq!(st, 400, "{io:?}");
    let r = request(
        &mut ws,
        json!({"event": "history", "topic": "chat:d", "id": 3}),
    )
    .await;
    assert_eq!(
        r["data"]["publications"].as_array().map(Vec::len),
        Some(1),
        "{io:?}"
    );
    h.shutdown();
    h.join();
}
per_shell!(async fn deep_json_refused);

/// Item 12: `POST /api/v1/subscribe` past a connection's subscription limit says why.
async fn api_subscribe_says_why(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut ws = connect(&h, "/ws?user=dave").await;
    subscribe(&mut ws, "a", 1).await;
    subscribe(&mut ws, "b", 2).await;
    let (st, v) = post(
        &h,
        "/api/v1/subscribe",
        json!({"user": "dave", "topic": "c"}),
    );
    assert_eq!(st, 200, "{io:?}: {v}");
    assert_eq!(v["data"]["subscribed"], 0, "{io:?}: {v}");
    let refused = &v["data"]["refused"][0];
    assert!(refused["client"].is_string(), "{io:?}: {v}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("subscription"),
        "{io:?}: {v}"
    );
    h.shutdown();
    h.join();
}
per_shell!(async fn api_subscribe_says_why);

fn raw_post(h: &ringhub::ServerHandle, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nConnection: close\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(h.local_addr(), &req)
}

/// Item 12: wrong API keys are throttled per address: 401 for the first ten, then 429 (even for
/// the right key, or a guesser would learn it from the difference); probes still answer.
async fn wrong_api_keys_throttled(io: IoMode) {
    let Some(h) = server(io) else { return };
    for i in 0..10 {
        let (st, out) = raw_auth(&h, &format!("Bearer wrong{i}"));
        assert_eq!(st, 401, "{io:?}: try {i}: {out:?}");
    }
    let (st, _) = raw_auth(&h, "Bearer wrong-again");
    assert_eq!(st, 429, "{io:?}");
    let (st, _) = raw_auth(&h, "Bearer k");
    assert_eq!(st, 429, "{io:?}: the right key during the penalty");
    let (st, _) = http_raw(h.local_addr(), "GET", "/healthz", None, None);
    assert_eq!(st, 200, "{io:?}");
    h.shutdown();
    h.join();
}
per_shell!(async fn wrong_api_keys_throttled);
