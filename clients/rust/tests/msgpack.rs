//! MessagePack binary frames (`Format::MessagePack`): the same round trips as JSON — publish,
//! reply, error, history, recovery, durable messages — and bytes in `data` reaching a
//! MessagePack and a JSON subscriber in their documented forms.

mod common;

use common::*;
use ringhub::config::Namespace;
use ringhub::hooks::{MessageStatus, StatusChange};
use ringhub_client::msgpack::{bin, bytes_of};
use ringhub_client::{Client, ErrorCode, Event, Format, StreamPosition};
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn server() -> (ringhub::ServerHandle, mpsc::UnboundedReceiver<StatusChange>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let b = builder(any_port())
        .topic(ns("chat:*", 100))
        .topic(Namespace {
            pattern: "plain:*".into(),
            ..Namespace::default()
        })
        .on_delivery(move |c: &StatusChange| {
            let _ = tx.send(c.clone());
        })
        .pubsub();
    (start(b), rx)
}

/// The server converted frames to MessagePack: the client really spoke it.
fn assert_packed(h: &ringhub::ServerHandle) {
    assert!(
        h.stats().msgpack_encodings > 0,
        "no frame was sent as MessagePack"
    );
}

async fn packed(h: &ringhub::ServerHandle, query: &str) -> Client {
    guard(Client::connect(
        url(h, query),
        opts().format(Format::MessagePack),
    ))
    .await
    .expect("connect")
}

#[tokio::test]
async fn publish_reply_and_bytes_reach_both_formats() {
    let (h, _) = server();
    let m = packed(&h, "").await;
    let j = connect(&h, "").await;
    let mut sm = guard(m.subscribe("plain:b")).await.unwrap();
    let mut sj = guard(j.subscribe("plain:b")).await.unwrap();
    let data =
        json!({"text": "hi", "blob": bin(&[0, 1, 2, 255]), "n": -7, "f": 1.5, "big": u64::MAX});
    assert_eq!(
        guard(m.publish_ack("plain:b", "file", &data))
            .await
            .unwrap(),
        None
    );
    for p in [next_pub(&mut sm).await, next_pub(&mut sj).await] {
        assert_eq!(p.event, "file");
        let got: Value = p.data().unwrap();
        assert_eq!(got, data);
        assert_eq!(bytes_of(&got["blob"]), Some(vec![0, 1, 2, 255]));
    }
    // The same from the JSON side: the object stands for bytes to a MessagePack reader.
    j.publish("plain:b", "again", &json!({"$bin": "/w=="}))
        .unwrap();
    let p = next_pub(&mut sm).await;
    assert_eq!(bytes_of(&p.data::<Value>().unwrap()), Some(vec![255]));
    assert_packed(&h);
    stop(h).await;
}

#[tokio::test]
async fn errors_come_with_their_codes() {
    let (h, _) = server();
    let m = packed(&h, "?user=alice").await;
    let e = guard(m.publish_ack("user:bob", "e", &1)).await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden));
    let e = guard(m.subscribe("a*b*")).await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::BadRequest));
    let e = guard(m.history("plain:x", None, None)).await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::NotAvailable));
    // The connection goes on.
    let info = guard(m.info()).await.unwrap();
    assert_eq!(info.user, "alice");
    assert_packed(&h);
    stop(h).await;
}

#[tokio::test]
async fn history_and_recovery() {
    let (h, _) = server();
    let m = packed(&h, "?user=alice").await;
    for n in 1..=4u64 {
        let data = json!({"n": n, "raw": bin(&[n as u8])});
        assert_eq!(
            guard(m.publish_ack("chat:s", "m", &data)).await.unwrap(),
            Some(n)
        );
    }
    let hist = guard(m.history("chat:s", Some(2), None)).await.unwrap();
    assert_eq!(hist.position.offset, 4);
    let got: Vec<Value> = hist
        .publications
        .iter()
        .map(|p| p.data().unwrap())
        .collect();
    assert_eq!(bytes_of(&got[0]["raw"]), Some(vec![3]));
    assert_eq!(got[1]["n"], 4);
    let since = StreamPosition {
        epoch: hist.position.epoch,
        offset: 2,
    };
    let mut sub = guard(m.subscribe_since("chat:s", since)).await.unwrap();
    for n in 3..=4u64 {
        let p = next_pub(&mut sub).await;
        assert_eq!(p.offset, Some(n));
        assert_eq!(
            bytes_of(&p.data::<Value>().unwrap()["raw"]),
            Some(vec![n as u8])
        );
    }
    assert!(matches!(
        next(&mut sub).await,
        Event::Recovered { publications: 2 }
    ));
    assert_packed(&h);
    stop(h).await;
}

#[tokio::test]
async fn durable_messages_are_acknowledged() {
    let (h, mut statuses) = server();
    let m = packed(&h, "?user=alice").await;
    let messages = m.messages();
    let r = guard(h.send_durable("alice", "notice", &json!({"n": 1})))
        .await
        .unwrap();
    let got = guard(messages.recv()).await.unwrap();
    assert_eq!(got.offset, r.offset);
    assert_eq!(got.data::<Value>().unwrap(), json!({"n": 1}));
    let s = guard(statuses.recv()).await.unwrap();
    assert_eq!((s.id, s.status), (r.message_id, MessageStatus::Acked));
    assert_packed(&h);
    stop(h).await;
}
