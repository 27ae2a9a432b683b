//! Delta subscriptions (`delta: "fossil"`) end to end: the client rebuilds every publication
//! exactly; the wire carries deltas after a first full publication; recovery (`since`) is
//! followed by a full one; a delta is made once per publication per shard.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A 2 KB-ish JSON state object; publication `n` changes a few fields.
fn state(n: u64) -> Value {
    let players: Vec<Value> = (0..30)
        .map(|i| {
            json!({"id": i, "name": format!("player-{i}"), "score": if i == n % 30 { n * 7 } else { i * 10 },
                   "city": "القاهرة"})
        })
        .collect();
    json!({"version": n, "updated": format!("t{n}"), "players": players})
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(h: &ringhub::ServerHandle) -> Ws {
    let (ws, _) = guard(tokio_tungstenite::connect_async(url(h, "")))
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string())).await.unwrap();
}

/// The next text message, as JSON.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match guard(ws.next()).await.expect("open").unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

/// The next message that answers request `id`.
async fn reply(ws: &mut Ws, id: u64) -> Value {
    loop {
        let v = recv(ws).await;
        if v["id"] == id {
            return v;
        }
    }
}

fn metric(h: &ringhub::ServerHandle, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

fn server() -> ringhub::ServerHandle {
    let history = ringhub::config::Namespace {
        pattern: "state:*".into(),
        history_size: 100,
        ..Default::default()
    };
    start(builder(any_port()).topic(history).pubsub())
}

#[tokio::test]
async fn clients_rebuild_every_publication_from_deltas() {
    let h = server();
    let a = connect(&h, "").await;
    let b = connect(&h, "").await;
    let mut sa = guard(a.subscribe_delta("state:1")).await.unwrap();
    let mut sb = guard(b.subscribe_delta("state:1")).await.unwrap();
    let mut w = raw(&h).await;
    send(
        &mut w,
        json!({"event": "subscribe", "topic": "state:1", "id": 1, "data": {"delta": "fossil"}}),
    )
    .await;
    assert_eq!(reply(&mut w, 1).await["event"], "reply");
    for n in 1..=12u64 {
        let data = state(n);
        guard(a.publish_ack("state:1", "state", &data))
            .await
            .unwrap();
        for sub in [&mut sa, &mut sb] {
            let p = next_pub(sub).await;
            assert_eq!(p.offset, Some(n));
            assert_eq!(p.data::<Value>().unwrap(), data, "publication {n}");
        }
        let f = recv(&mut w).await;
        assert_eq!(f["offset"], n);
        if n == 1 {
            assert_eq!(f["data"], data, "the first after subscribing is full");
        } else {
            let d = f["delta"].as_str().expect("a delta");
            assert!(f.get("data").is_none());
            assert!(
                d.len() * 5 < data.to_string().len(),
                "{} bytes of delta for {}",
                d.len(),
                data.to_string().len()
            );
        }
    }
    // Every delta subscriber of a shard shares one delta: at most one per shard per
    // publication after the first, however many subscribers.
    let made = metric(&h, "ringhub_deltas_total");
    let sent = metric(&h, "ringhub_delta_deliveries_total");
    assert!((11..=22).contains(&made), "{made} deltas made");
    assert_eq!(sent, 33, "11 publications as deltas to 3 subscribers");
    stop(h).await;
}

#[tokio::test]
async fn recovery_is_followed_by_a_full_publication() {
    let h = server();
    let a = connect(&h, "").await;
    for n in 1..=3u64 {
        guard(a.publish_ack("state:r", "state", &state(n)))
            .await
            .unwrap();
    }
    let epoch = guard(a.history("state:r", Some(1), None))
        .await
        .unwrap()
        .position
        .epoch;
    let mut w = raw(&h).await;
    send(
        &mut w,
        json!({"event": "subscribe", "topic": "state:r", "id": 1,
               "data": {"delta": "fossil", "since": {"epoch": epoch, "offset": 1}}}),
    )
    .await;
    let r = reply(&mut w, 1).await;
    assert_eq!(r["data"]["recovered"], true);
    let recovered = r["data"]["publications"].as_array().unwrap();
    assert_eq!(recovered.len(), 2);
    assert_eq!(recovered[1]["data"], state(3), "recovered in full");
    for n in 4..=5u64 {
        guard(a.publish_ack("state:r", "state", &state(n)))
            .await
            .unwrap();
    }
    let f = recv(&mut w).await;
    assert_eq!(
        (f["offset"].clone(), f["data"].clone()),
        (json!(4), state(4)),
        "full after the recovery"
    );
    let f = recv(&mut w).await;
    assert_eq!(f["offset"], 5);
    assert!(f["delta"].is_string(), "then deltas: {f}");
    // A delta subscription needs history and an exact topic.
    send(
        &mut w,
        json!({"event": "subscribe", "topic": "other", "id": 2, "data": {"delta": "fossil"}}),
    )
    .await;
    assert_eq!(reply(&mut w, 2).await["data"]["code"], "not_available");
    stop(h).await;
}
