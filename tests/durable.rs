//! Durable user messages (at-least-once with acks), batch, hooks. Real sockets, both shells.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ringhub::config::InboxConfig;
use ringhub::hooks::{ConnectInfo, ConnectOutcome, MessageStatus, SubscribeInfo};
use ringhub::{Builder, HandlerError, IoMode, ServerHandle};
use serde_json::{json, Value};

fn users(b: Builder) -> Builder {
    b.on_connect(|c: &ConnectInfo<'_>| {
        let q = c.query.unwrap_or("");
        if q.contains("deny=1") {
            return Err(HandlerError::forbidden("not today"));
        }
        let user = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("user="))
            .map(str::to_string);
        Ok(ConnectOutcome {
            user,
            topics: vec!["lobby".into()],
            meta: Some(json!({"plan": "pro"})),
        })
    })
}

fn inbox(ack_timeout: Duration, max_messages: usize, ttl: Duration) -> InboxConfig {
    InboxConfig {
        ack_timeout,
        max_attempts: 5,
        max_messages,
        ttl,
    }
}

type Deliveries = std::sync::mpsc::Receiver<(u64, MessageStatus)>;

/// A server whose `on_delivery` hook reports (message id, final status) on the channel.
fn server_with(io: IoMode, cfg: InboxConfig) -> Option<(ServerHandle, Deliveries)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let mut b = users(builder(io))
        .api_key("k")
        .on_delivery(move |c: &ringhub::hooks::StatusChange| {
            let _ = tx.lock().unwrap().send((c.id, c.status));
        })
        .pubsub();
    let c = ringhub::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        io,
        api_key: Some("k".into()),
        inbox: cfg,
        ..ringhub::Config::default()
    };
    b = b.config(c);
    start(b).map(|h| (h, rx))
}

/// Waits for the `on_delivery` report of message `id`.
fn final_status(rx: &Deliveries, id: &Value) -> MessageStatus {
    let id = id.as_u64().expect("message id");
    loop {
        let (got, st) = rx.recv_timeout(GUARD * 2).expect("no delivery report");
        if got == id {
            return st;
        }
    }
}

fn send_durable(h: &ServerHandle, user: &str, n: u64) -> Value {
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/send",
        Some("k"),
        Some(&json!({"user": user, "event": "note", "data": {"n": n}, "durable": true})),
    );
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

fn status(h: &ServerHandle, id: &Value) -> Value {
    let (st, v) = http_json(
        h.local_addr(),
        "GET",
        &format!("/api/v1/messages/{id}"),
        Some("k"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

async fn ack(ws: &mut Ws, user: &str, offset: u64, id: u64) {
    let r = request(
        ws,
        json!({"event": "ack", "topic": format!("user:{user}"), "id": id, "data": {"offset": offset}}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
}

async fn offline_then_delivered_then_acked(io: IoMode) {
    let Some((h, _)) = server_with(
        io,
        inbox(Duration::from_secs(60), 1000, Duration::from_secs(3600)),
    ) else {
        return;
    };
    let r1 = send_durable(&h, "carol", 1);
    assert_eq!(r1["delivered"], 0, "offline: {r1}");
    assert_eq!(r1["offset"], 1);
    let r2 = send_durable(&h, "carol", 2);
    assert_eq!(r2["offset"], 2);
    assert_eq!(status(&h, &r1["message_id"])["status"], "pending");
    let (st, v) = http_json(
        h.local_addr(),
        "GET",
        "/api/v1/inbox?user=carol",
        Some("k"),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 2, "{v}");

    let mut c = connect(&h, "/ws?user=carol").await;
    for n in 1..=2 {
        let m = recv(&mut c).await;
        assert_eq!(m["topic"], "user:carol", "{m}");
        assert_eq!(m["ack"], true);
        assert_eq!(m["offset"], n);
        assert_eq!(m["data"]["n"], n);
    }
    // The shard reports the write to the store before the frame reaches the socket.
    assert_eq!(status(&h, &r1["message_id"])["status"], "delivered");
    // Live while connected.
    let r3 = send_durable(&h, "carol", 3);
    assert_eq!(r3["delivered"], 1, "{r3}");
    assert_eq!(recv(&mut c).await["offset"], 3);
    for off in 1..=3 {
        ack(&mut c, "carol", off, 10 + off).await;
    }
    assert_eq!(status(&h, &r1["message_id"])["status"], "acked");
    assert_eq!(status(&h, &r3["message_id"])["status"], "acked");
    // Never again: a new connection gets nothing but what comes next.
    drop(c);
    let mut c = connect(&h, "/ws?user=carol").await;
    let r4 = send_durable(&h, "carol", 4);
    let m = recv(&mut c).await;
    assert_eq!(m["offset"], 4, "only the new one: {m} ({r4})");
    // Someone else's ack is refused.
    let mut d = connect(&h, "/ws?user=dave").await;
    let r = request(
        &mut d,
        json!({"event": "ack", "topic": "user:carol", "id": 1, "data": {"offset": 4}}),
    )
    .await;
    assert_eq!(r["data"]["code"], "forbidden", "{r}");
    let (st, _) = http_json(
        h.local_addr(),
        "GET",
        "/api/v1/messages/999999",
        Some("k"),
        None,
    );
    assert_eq!(st, 404);
    h.shutdown();
    h.join();
}
per_shell!(async fn offline_then_delivered_then_acked);

async fn unacked_is_redelivered(io: IoMode) {
    let Some((h, _)) = server_with(
        io,
        inbox(Duration::from_millis(200), 1000, Duration::from_secs(3600)),
    ) else {
        return;
    };
    let mut c = connect(&h, "/ws?user=erin").await;
    let r = send_durable(&h, "erin", 1);
    assert_eq!(r["delivered"], 1);
    let first = recv(&mut c).await;
    assert_eq!(first["offset"], 1);
    // Not acknowledged: written again after the ack timeout.
    let again = recv(&mut c).await;
    assert_eq!(again, first, "the same message again");
    let id = r["message_id"].clone();
    assert_eq!(status(&h, &id)["attempts"], 2);
    // And on every new connection of the user.
    let mut c2 = connect(&h, "/ws?user=erin").await;
    assert_eq!(recv(&mut c2).await["offset"], 1);
    ack(&mut c2, "erin", 1, 7).await;
    assert_eq!(status(&h, &id)["status"], "acked");
    drop((c, c2));
    let mut c3 = connect(&h, "/ws?user=erin").await;
    let r2 = send_durable(&h, "erin", 2);
    assert_eq!(
        recv(&mut c3).await["offset"],
        2,
        "acked ones never again ({r2})"
    );
    h.shutdown();
    h.join();
}
per_shell!(async fn unacked_is_redelivered);

async fn eviction_by_size_and_ttl(io: IoMode) {
    let Some((h, reports)) = server_with(
        io,
        inbox(Duration::from_secs(60), 2, Duration::from_millis(1500)),
    ) else {
        return;
    };
    let a = send_durable(&h, "fred", 1);
    let b = send_durable(&h, "fred", 2);
    let c = send_durable(&h, "fred", 3);
    assert_eq!(status(&h, &a["message_id"])["status"], "dropped");
    assert_eq!(status(&h, &b["message_id"])["status"], "pending");
    let (_, v) = http_json(
        h.local_addr(),
        "GET",
        "/api/v1/inbox?user=fred",
        Some("k"),
        None,
    );
    let offs: Vec<u64> = v["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offs, vec![2, 3]);
    assert_eq!(
        final_status(&reports, &a["message_id"]),
        MessageStatus::Dropped
    );
    // The TTL passes (the store expires once a second): both remaining ones expire.
    assert_eq!(
        final_status(&reports, &b["message_id"]),
        MessageStatus::Expired
    );
    assert_eq!(
        final_status(&reports, &c["message_id"]),
        MessageStatus::Expired
    );
    assert_eq!(status(&h, &c["message_id"])["status"], "expired");
    let mut ws = connect(&h, "/ws?user=fred").await;
    let d = send_durable(&h, "fred", 4);
    assert_eq!(
        recv(&mut ws).await["offset"],
        d["offset"],
        "expired ones are not delivered"
    );
    h.shutdown();
    h.join();
}
per_shell!(async fn eviction_by_size_and_ttl);

async fn batch_keeps_going(io: IoMode) {
    let Some((h, _)) = server_with(io, InboxConfig::default()) else {
        return;
    };
    let mut s = connect(&h, "/ws?user=gina").await;
    subscribe(&mut s, "news", 1).await;
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/batch",
        Some("k"),
        Some(&json!({"commands": [
            {"method": "publish", "params": {"topic": "news", "event": "a"}},
            {"method": "publish", "params": {"topic": "bad*topic", "event": "b"}},
            {"method": "nope", "params": {}},
            {"method": "send", "params": {"user": "gina", "event": "c", "durable": true}},
        ]})),
    );
    assert_eq!(st, 200, "{v}");
    let results = v["data"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[0],
        json!({"success": true, "data": {"delivered": 1}})
    );
    assert_eq!(results[1]["success"], false);
    assert_eq!(results[2]["success"], false);
    assert_eq!(results[3]["success"], true, "{v}");
    assert_eq!(recv(&mut s).await["event"], "a");
    assert_eq!(recv(&mut s).await["event"], "c");
    // The library's batch sender: callbacks around each recipient, a result each.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let report = h
        .batch()
        .before(|u| u != "skipme")
        .after(move |u, r| log.lock().unwrap().push((u.to_string(), r.is_ok())))
        .send(&["gina", "skipme", "hank"], "d", &json!(1))
        .await;
    assert_eq!(report.len(), 3);
    assert_eq!(report[0].result.as_ref().unwrap().delivered, 1);
    assert!(report[1].result.is_err());
    assert_eq!(report[2].result.as_ref().unwrap().delivered, 0);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("gina".to_string(), true), ("hank".to_string(), true)]
    );
    assert_eq!(recv(&mut s).await["event"], "d");
    h.shutdown();
    h.join();
}
per_shell!(async fn batch_keeps_going);

async fn hooks(io: IoMode) {
    let (gone_tx, gone) = std::sync::mpsc::channel::<String>();
    let gone_tx = Mutex::new(gone_tx);
    let delivered = Arc::new(Mutex::new(Vec::<(String, MessageStatus)>::new()));
    let d = delivered.clone();
    let b = users(builder(io))
        .api_key("k")
        .on_subscribe(|s: &SubscribeInfo<'_>| {
            if s.topic.starts_with("secret") {
                return Err(HandlerError::forbidden("no secrets"));
            }
            Ok(())
        })
        .on_disconnect(move |i: &ringhub::hooks::DisconnectInfo<'_>| {
            let _ = gone_tx
                .lock()
                .unwrap()
                .send(i.user.unwrap_or("").to_string());
        })
        .on_delivery(move |c: &ringhub::hooks::StatusChange| {
            d.lock().unwrap().push((c.user.to_string(), c.status));
        })
        .pubsub();
    let Some(h) = start(b) else { return };
    // on_connect: refusal is a 403; topics and metadata are applied.
    let url = format!("ws://{}/ws?deny=1", h.local_addr());
    let refused = tokio_tungstenite::connect_async(url).await;
    assert!(
        format!("{:?}", refused.err()).contains("403"),
        "on_connect refusal"
    );
    let mut a = connect(&h, "/ws?user=ivy").await;
    let list = h.presence("lobby").await.unwrap();
    assert_eq!(list.len(), 1, "subscribed to lobby by on_connect");
    assert_eq!(list[0].meta.as_deref(), Some(r#"{"plan":"pro"}"#));
    let r = request(
        &mut a,
        json!({"event": "subscribe", "topic": "secret:x", "id": 1}),
    )
    .await;
    assert_eq!(r["data"]["code"], "forbidden", "{r}");
    let receipt = h.send_durable("ivy", "hello", &json!({})).await.unwrap();
    assert_eq!(receipt.delivered, 1);
    let m = recv(&mut a).await;
    assert_eq!(m["offset"], receipt.offset);
    ack(&mut a, "ivy", receipt.offset, 2).await;
    // The hook runs before the ack's reply is sent.
    assert!(delivered
        .lock()
        .unwrap()
        .contains(&("ivy".to_string(), MessageStatus::Acked)));
    drop(a);
    assert_eq!(gone.recv_timeout(GUARD).expect("on_disconnect"), "ivy");
    h.shutdown();
    h.join();
}
per_shell!(async fn hooks);
