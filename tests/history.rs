//! Protocol v2 on topics: offsets, recovery, epochs, history, presence, join/leave,
//! exclude_sender, rooms (server-side subscriptions, many-topic publish). Real sockets, both
//! shells.

mod common;

use common::*;
use ringhub::config::Namespace;
use ringhub::IoMode;
use serde_json::{json, Value};

fn server(io: IoMode) -> Option<ringhub::ServerHandle> {
    start(
        users(builder(io))
            .api_key("k")
            .topic(ns("chat:*", 100))
            .topic(ns("small:*", 5))
            .topic(Namespace {
                pattern: "plain:*".into(),
                ..Namespace::default()
            })
            .pubsub(),
    )
}

fn publish_msg(topic: &str, n: u64, id: Option<u64>) -> Value {
    let mut v = json!({"event": "msg", "topic": topic, "data": {"n": n}});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

/// Subscribe on a history topic: the reply carries the position.
async fn sub_pos(ws: &mut Ws, topic: &str, id: u64) -> (String, u64) {
    send(ws, json!({"event": "subscribe", "topic": topic, "id": id})).await;
    let r = recv(ws).await;
    assert_eq!(r["event"], "reply", "{r}");
    assert_eq!(r["id"], id);
    (
        r["data"]["epoch"].as_str().expect("epoch").to_string(),
        r["data"]["offset"].as_u64().expect("offset"),
    )
}

async fn recovery_has_no_gap_or_duplicate(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect(&h, "/ws").await;
    let mut pubr = connect(&h, "/ws").await;
    let (epoch, top) = sub_pos(&mut a, "chat:r", 1).await;
    assert_eq!(top, 0);
    assert_eq!(epoch.len(), 8);
    for n in 1..=3 {
        let r = request(&mut pubr, publish_msg("chat:r", n, Some(100 + n))).await;
        assert_eq!(r["data"], json!({"offset": n}), "{r}");
    }
    for n in 1..=3 {
        let m = recv(&mut a).await;
        assert_eq!(m["offset"], n, "{m}");
        assert_eq!(m["data"]["n"], n);
    }
    drop(a);
    for n in 4..=10 {
        send(&mut pubr, publish_msg("chat:r", n, None)).await;
    }
    // Others keep publishing while the client comes back.
    let mut c = connect(&h, "/ws").await;
    let writer = tokio::spawn(async move {
        for n in 11..=60 {
            send(&mut c, publish_msg("chat:r", n, None)).await;
        }
        c
    });
    let mut a = connect(&h, "/ws").await;
    send(
        &mut a,
        json!({"event": "subscribe", "topic": "chat:r", "id": 2,
               "data": {"since": {"epoch": epoch, "offset": 3}}}),
    )
    .await;
    let r = recv(&mut a).await;
    assert_eq!(r["event"], "reply", "{r}");
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["epoch"], epoch.as_str());
    let pubs = r["data"]["publications"].as_array().unwrap();
    let top = r["data"]["offset"].as_u64().unwrap();
    assert_eq!(
        pubs.len() as u64,
        top - 3,
        "every publication after 3 up to the top"
    );
    // Offsets are gapless; the two publishers interleave, each in its own order.
    let mut next = 4;
    let mut seen = Vec::new();
    for p in pubs {
        assert_eq!(p["offset"], next, "{p}");
        assert_eq!(p["event"], "msg");
        seen.push(p["data"]["n"].as_u64().unwrap());
        next += 1;
    }
    while next <= 60 {
        let m = recv(&mut a).await;
        assert_eq!(m["offset"], next, "live stream continues without gap: {m}");
        seen.push(m["data"]["n"].as_u64().unwrap());
        next += 1;
    }
    let (early, late): (Vec<u64>, Vec<u64>) = seen.iter().partition(|n| **n <= 10);
    assert_eq!(
        early,
        (4..=10).collect::<Vec<_>>(),
        "first publisher, in order"
    );
    assert_eq!(
        late,
        (11..=60).collect::<Vec<_>>(),
        "second publisher, in order"
    );
    let _ = writer.await;
    h.shutdown();
    h.join();
}
per_shell!(async fn recovery_has_no_gap_or_duplicate);

async fn unrecoverable_positions(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect(&h, "/ws").await;
    let (epoch, _) = sub_pos(&mut a, "small:t", 1).await;
    for n in 1..=10 {
        request(&mut a, publish_msg("small:t", n, Some(10 + n))).await;
    }
    let mut b = connect(&h, "/ws").await;
    // Trimmed by size (5 kept): offsets 3..5 are gone.
    let r = request(
        &mut b,
        json!({"event": "subscribe", "topic": "small:t", "id": 1,
               "data": {"since": {"epoch": epoch, "offset": 2}}}),
    )
    .await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_eq!(r["data"]["publications"], json!([]));
    assert_eq!(r["data"]["offset"], 10);
    // Within what is kept: recovered.
    let r = request(
        &mut b,
        json!({"event": "subscribe", "topic": "small:t", "id": 2,
               "data": {"since": {"epoch": epoch, "offset": 7}}}),
    )
    .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["publications"].as_array().unwrap().len(), 3);
    // Another epoch.
    let r = request(
        &mut b,
        json!({"event": "subscribe", "topic": "small:t", "id": 3,
               "data": {"since": {"epoch": "other", "offset": 7}}}),
    )
    .await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_eq!(r["data"]["epoch"], epoch.as_str());
    // Refusals.
    let r = request(
        &mut b,
        json!({"event": "subscribe", "topic": "small:*", "id": 4,
               "data": {"since": {"epoch": epoch, "offset": 1}}}),
    )
    .await;
    assert_eq!(r["data"]["code"], "bad_request", "{r}");
    let r = request(
        &mut b,
        json!({"event": "subscribe", "topic": "plain:x", "id": 5,
               "data": {"since": {"epoch": epoch, "offset": 1}}}),
    )
    .await;
    assert_eq!(r["data"]["code"], "not_available", "{r}");
    let r = request(
        &mut b,
        json!({"event": "subscribe", "topic": "chat:x", "id": 6, "data": {"since": 5}}),
    )
    .await;
    assert_eq!(r["data"]["code"], "bad_request", "{r}");
    h.shutdown();
    h.join();
}
per_shell!(async fn unrecoverable_positions);

async fn history_request(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect(&h, "/ws").await;
    for n in 1..=8 {
        request(&mut a, publish_msg("chat:h", n, Some(n))).await;
    }
    let r = request(
        &mut a,
        json!({"event": "history", "topic": "chat:h", "id": 20, "data": {"limit": 3}}),
    )
    .await;
    let d = &r["data"];
    assert_eq!(d["offset"], 8, "{r}");
    let offs: Vec<u64> = d["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![6, 7, 8]);
    let epoch = d["epoch"].as_str().unwrap().to_string();
    let r = request(
        &mut a,
        json!({"event": "history", "topic": "chat:h", "id": 21,
               "data": {"limit": 50, "since": {"epoch": epoch, "offset": 6}}}),
    )
    .await;
    assert_eq!(
        r["data"]["publications"].as_array().unwrap().len(),
        2,
        "{r}"
    );
    let r = request(
        &mut a,
        json!({"event": "history", "topic": "plain:h", "id": 22}),
    )
    .await;
    assert_eq!(r["data"]["code"], "not_available", "{r}");
    let r = request(
        &mut a,
        json!({"event": "history", "topic": "chat:h", "id": 23, "data": {"limit": 5000}}),
    )
    .await;
    assert_eq!(r["data"]["code"], "too_many", "{r}");
    // The library handle and the HTTP API see the same stream.
    let hist = h.history("chat:h", 2).await.unwrap();
    assert_eq!(hist.pos.offset, 8);
    assert_eq!(hist.publications.len(), 2);
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/history",
        Some("k"),
        Some(&json!({"topic": "chat:h", "limit": 1})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["publications"][0]["offset"], 8);
    h.shutdown();
    h.join();
}
per_shell!(async fn history_request);

async fn presence_and_join_leave(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect(&h, "/ws?user=alice").await;
    let (_, _) = sub_pos(&mut a, "chat:p", 1).await;
    let info = request(&mut a, json!({"event": "info", "id": 2})).await;
    let alice_id = info["data"]["client"].as_str().unwrap().to_string();
    assert_eq!(info["data"]["user"], "alice");
    // Several connections so that both shards hold some.
    let mut others = Vec::new();
    for i in 0..4 {
        let mut b = connect(&h, &format!("/ws?user=u{}", i % 2)).await;
        sub_pos(&mut b, "chat:p", 1).await;
        let j = recv(&mut a).await;
        assert_eq!(j["event"], "join", "{j}");
        assert_eq!(j["data"]["user"], format!("u{}", i % 2));
        others.push(b);
    }
    let r = request(
        &mut a,
        json!({"event": "presence", "topic": "chat:p", "id": 3}),
    )
    .await;
    let clients = r["data"]["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 5, "{r}");
    assert!(clients
        .iter()
        .any(|c| c["client"] == alice_id.as_str() && c["user"] == "alice"));
    let r = request(
        &mut a,
        json!({"event": "presence_stats", "topic": "chat:p", "id": 4}),
    )
    .await;
    assert_eq!(r["data"], json!({"clients": 5, "users": 3}), "{r}");
    // A wildcard subscriber is not present on the topic.
    let r = request(
        &mut a,
        json!({"event": "presence", "topic": "plain:p", "id": 5}),
    )
    .await;
    assert_eq!(r["data"]["code"], "not_available");
    // Leave on unsubscribe and on disconnect.
    let mut b = others.pop().unwrap();
    request(
        &mut b,
        json!({"event": "unsubscribe", "topic": "chat:p", "id": 9}),
    )
    .await;
    let l = recv(&mut a).await;
    assert_eq!(l["event"], "leave", "{l}");
    drop(others.pop());
    let l = recv(&mut a).await;
    assert_eq!(l["event"], "leave", "{l}");
    let r = request(
        &mut a,
        json!({"event": "presence_stats", "topic": "chat:p", "id": 6}),
    )
    .await;
    assert_eq!(r["data"]["clients"], 3, "{r}");
    let list = h.presence("chat:p").await.unwrap();
    assert_eq!(list.len(), 3);
    h.shutdown();
    h.join();
}
per_shell!(async fn presence_and_join_leave);

async fn exclude_sender(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect(&h, "/ws").await;
    let mut b = connect(&h, "/ws").await;
    for (ws, topic) in [(&mut a, "plain:e"), (&mut b, "plain:e")] {
        subscribe(ws, topic, 1).await;
    }
    sub_pos(&mut a, "chat:e", 2).await;
    sub_pos(&mut b, "chat:e", 2).await;
    assert_eq!(recv(&mut a).await["event"], "join", "b's join reaches a");
    for topic in ["plain:e", "chat:e"] {
        send(
            &mut a,
            json!({"event": "typing", "topic": topic, "exclude_sender": true}),
        )
        .await;
        send(&mut a, json!({"event": "said", "topic": topic})).await;
        // b gets both; a only its own "said" (nothing before it).
        assert_eq!(recv(&mut b).await["event"], "typing");
        assert_eq!(recv(&mut b).await["event"], "said");
        let m = recv(&mut a).await;
        assert_eq!(m["event"], "said", "{m}");
    }
    h.shutdown();
    h.join();
}
per_shell!(async fn exclude_sender);

async fn rooms(io: IoMode) {
    let Some(h) = server(io) else { return };
    let a_addr = h.local_addr();
    let mut a1 = connect(&h, "/ws?user=alice").await;
    let mut a2 = connect(&h, "/ws?user=alice").await;
    let mut b = connect(&h, "/ws?user=bob").await;
    let (st, v) = http_json(
        a_addr,
        "POST",
        "/api/v1/subscribe",
        Some("k"),
        Some(&json!({"user": "alice", "topic": "room:1"})),
    );
    assert_eq!((st, &v["data"]), (200, &json!({"subscribed": 2})), "{v}");
    let info = request(&mut b, json!({"event": "info", "id": 1})).await;
    let bob = info["data"]["client"].as_str().unwrap().to_string();
    let (st, v) = http_json(
        a_addr,
        "POST",
        "/api/v1/subscribe",
        Some("k"),
        Some(&json!({"client": bob, "topic": "room:2"})),
    );
    assert_eq!((st, &v["data"]), (200, &json!({"subscribed": 1})), "{v}");
    // alice's connections are in room:1 and room:2 → one copy each.
    assert_eq!(h.subscribe_user("alice", "room:2").await.unwrap(), 2);
    let (st, v) = http_json(
        a_addr,
        "POST",
        "/api/v1/publish",
        Some("k"),
        Some(&json!({"topics": ["room:1", "room:2"], "event": "hi", "exclude_client": bob})),
    );
    assert_eq!((st, &v["data"]["delivered"]), (200, &json!(2)), "{v}");
    send(&mut b, json!({"event": "hi", "topic": "room:2", "data": 2})).await;
    for ws in [&mut a1, &mut a2] {
        let m = recv(ws).await;
        assert_eq!(m["event"], "hi", "{m}");
        assert!(m.get("data").is_none(), "first the API's, once: {m}");
        assert_eq!(recv(ws).await["data"], 2, "then bob's");
    }
    assert_eq!(
        recv(&mut b).await["data"],
        2,
        "bob was excluded from the API's"
    );
    let (st, v) = http_json(
        a_addr,
        "POST",
        "/api/v1/unsubscribe",
        Some("k"),
        Some(&json!({"user": "alice", "topic": "room:1"})),
    );
    assert_eq!((st, &v["data"]), (200, &json!({"unsubscribed": 2})), "{v}");
    let (st, _) = http_json(
        a_addr,
        "POST",
        "/api/v1/subscribe",
        Some("k"),
        Some(&json!({"client": "nope.1", "topic": "room:1"})),
    );
    assert_eq!(st, 400);
    h.shutdown();
    h.join();
}
per_shell!(async fn rooms);

async fn claim_topics_subscribe_at_connect(io: IoMode) {
    const SECRET: &str = "claim-topics-secret-long-enough-for-hs256!";
    let mut s = ringhub::settings::Settings::default();
    s.set("auth.jwt_secret", SECRET, "test").unwrap();
    s.validate().unwrap();
    let guard = ringhub::guard::Guard::from_settings(&s).unwrap();
    let Some(h) = start(builder(io).guard(guard).topic(ns("room:*", 0)).pubsub()) else {
        return;
    };
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "kim", "exp": exp, "topics": ["room:7", "room:8"]}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut a = connect(&h, &format!("/ws?token={token}")).await;
    // Subscribed without asking: presence shows it, and publications arrive.
    let list = h.presence("room:7").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].user.as_deref(), Some("kim"));
    h.publish("room:8", "hello", &1).unwrap();
    let m = recv(&mut a).await;
    assert_eq!(
        (m["topic"].as_str(), m["event"].as_str()),
        (Some("room:8"), Some("hello"))
    );
    h.shutdown();
    h.join();
}
per_shell!(async fn claim_topics_subscribe_at_connect);
