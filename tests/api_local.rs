//! `POST /api/v1/publish` answered on the connection's shard (no API thread) when it can be:
//! the answer is the API thread's — `delivered` exact whether the subscribers sit on the
//! request's shard or another, `exclude_client` honoured, history topics still stored with an
//! offset, a wrong key still 401 and a throttled address still 429 with a correct key.

mod common;

use common::*;
use serde_json::{json, Value};

fn publish(addr: std::net::SocketAddr, key: &str, body: Value) -> (u16, Value) {
    http_json(addr, "POST", "/api/v1/publish", Some(key), Some(&body))
}

/// One shard: every publish can be answered there.
async fn one_shard(io: ringhub::IoMode) {
    let Some(h) = start(
        builder(io)
            .shards(1)
            .api_key("k")
            .pubsub()
            .topic(ns("hist:*", 10)),
    ) else {
        return;
    };
    let a = h.local_addr();
    let mut s1 = connect(&h, "/ws").await;
    let mut s2 = connect(&h, "/ws").await;
    subscribe(&mut s1, "news", 1).await;
    subscribe(&mut s2, "news", 1).await;
    let info = request(&mut s2, json!({"event": "info", "id": 2})).await;
    let c2 = info["data"]["client"].as_str().unwrap().to_string();

    let (st, v) = publish(
        a,
        "k",
        json!({"topic": "news", "event": "e", "data": {"n": 1}}),
    );
    assert_eq!(
        (st, v),
        (200, json!({"success": true, "data": {"delivered": 2}}))
    );
    for ws in [&mut s1, &mut s2] {
        let m = recv(ws).await;
        assert_eq!(
            (&m["event"], &m["data"]["n"]),
            (&json!("e"), &json!(1)),
            "{m}"
        );
    }
    let (st, v) = publish(
        a,
        "k",
        json!({"topics": ["news", "other"], "event": "x", "exclude_client": c2}),
    );
    assert_eq!((st, &v["data"]), (200, &json!({"delivered": 1})), "{v}");
    assert_eq!(recv(&mut s1).await["event"], "x");
    // A history topic goes through the store: its offset is in the answer.
    let (st, v) = publish(a, "k", json!({"topic": "hist:a", "event": "h"}));
    assert_eq!(
        (st, &v["data"]),
        (200, &json!({"delivered": 0, "offset": 1})),
        "{v}"
    );
    // What the API refuses is still refused, with its code.
    let (st, v) = publish(a, "k", json!({"topic": "bad*topic", "event": "e"}));
    assert_eq!((st, &v["code"]), (400, &json!("bad_request")), "{v}");
    let (st, v) = publish(
        a,
        "k",
        json!({"topic": "news", "event": "e", "exclude_client": "x.1"}),
    );
    assert_eq!((st, &v["code"]), (400, &json!("bad_request")), "{v}");
    // Wrong keys: 401 each, then the address is throttled — the right key included.
    for _ in 0..10 {
        let (st, v) = publish(a, "nope", json!({"topic": "news", "event": "e"}));
        assert_eq!((st, &v["code"]), (401, &json!("unauthorized")), "{v}");
    }
    let (st, v) = publish(a, "k", json!({"topic": "news", "event": "e"}));
    assert_eq!((st, &v["code"]), (429, &json!("rate_limited")), "{v}");
    stop_server(h);
}

per_shell!(async fn one_shard);

/// Two shards, subscribers on both: whichever shard reads a publish, `delivered` counts every
/// subscriber once (the shard answers itself only when no other shard has subscribers).
async fn two_shards(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).api_key("k").pubsub()) else {
        return;
    };
    let a = h.local_addr();
    let mut subs = Vec::new();
    for _ in 0..4 {
        let mut ws = connect(&h, "/ws").await;
        subscribe(&mut ws, "news", 1).await;
        subs.push(ws);
    }
    for i in 0..6 {
        let (st, v) = publish(a, "k", json!({"topic": "news", "event": "e", "data": i}));
        assert_eq!((st, &v["data"]), (200, &json!({"delivered": 4})), "{v}");
        // A topic nobody follows: 0, whichever shard answers.
        let (st, v) = publish(a, "k", json!({"topic": "quiet", "event": "e"}));
        assert_eq!((st, &v["data"]), (200, &json!({"delivered": 0})), "{v}");
    }
    for ws in &mut subs {
        for i in 0..6 {
            assert_eq!(recv(ws).await["data"], i);
        }
    }
    stop_server(h);
}

per_shell!(async fn two_shards);
