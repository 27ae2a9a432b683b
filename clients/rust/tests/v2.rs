//! Protocol v2 features other than recovery: acknowledged publish offsets, history, presence,
//! join/leave, info, and durable user messages (automatic and manual acknowledgement,
//! de-duplication of redeliveries).

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use ringhub::config::{InboxConfig, Namespace};
use ringhub::hooks::{MessageStatus, StatusChange};
use ringhub::{Builder, Config};
use ringhub_client::{Client, ClientInfo, ErrorCode, Event, PresenceStats, StreamPosition};
use serde_json::json;
use tokio::sync::mpsc;

fn server() -> ringhub::ServerHandle {
    start(
        builder(any_port())
            .topic(ns("chat:*", 100))
            .topic(Namespace {
                pattern: "plain:*".into(),
                ..Namespace::default()
            })
            .pubsub(),
    )
}

#[tokio::test]
async fn history_presence_and_info() {
    let h = server();
    let a = connect(&h, "?user=alice").await;
    let b = connect(&h, "?user=bob").await;
    let _sa = guard(a.subscribe("chat:p")).await.unwrap();
    let _sb = guard(b.subscribe("chat:p")).await.unwrap();
    for n in 1..=5u64 {
        assert_eq!(
            guard(a.publish_ack("chat:p", "m", &n)).await.unwrap(),
            Some(n)
        );
    }
    let hist = guard(a.history("chat:p", Some(2), None)).await.unwrap();
    assert_eq!(hist.position.offset, 5);
    let offsets: Vec<_> = hist.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [Some(4), Some(5)]);
    assert_eq!(hist.publications[0].data::<u64>().unwrap(), 4);
    let since = StreamPosition {
        epoch: hist.position.epoch.clone(),
        offset: 3,
    };
    let hist = guard(a.history("chat:p", None, Some(&since)))
        .await
        .unwrap();
    assert_eq!(hist.publications.len(), 2);

    let info = guard(a.info()).await.unwrap();
    assert_eq!(info.user, "alice");
    assert!(!info.client.is_empty());
    let mut who = guard(a.presence("chat:p")).await.unwrap();
    who.sort_by(|x, y| x.user.cmp(&y.user));
    assert_eq!(
        who.iter().map(|c| c.user.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert!(who.contains(&ClientInfo {
        client: info.client.clone(),
        user: "alice".into()
    }));
    assert_eq!(
        guard(b.presence_stats("chat:p")).await.unwrap(),
        PresenceStats {
            clients: 2,
            users: 2
        }
    );
    let e = guard(a.history("plain:x", None, None)).await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::NotAvailable));
    let e = guard(a.presence("plain:x")).await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::NotAvailable));
    stop(h).await;
}

#[tokio::test]
async fn subscribe_since_recovers_and_join_leave_arrive() {
    let h = server();
    let a = connect(&h, "?user=alice").await;
    for n in 1..=4u64 {
        guard(a.publish_ack("chat:s", "m", &n)).await.unwrap();
    }
    let epoch = guard(a.history("chat:s", Some(1), None))
        .await
        .unwrap()
        .position
        .epoch;
    let mut sub = guard(a.subscribe_since("chat:s", StreamPosition { epoch, offset: 2 }))
        .await
        .unwrap();
    assert_eq!(next_pub(&mut sub).await.offset, Some(3));
    assert_eq!(next_pub(&mut sub).await.offset, Some(4));
    assert!(matches!(
        next(&mut sub).await,
        Event::Recovered { publications: 2 }
    ));

    let b = connect(&h, "?user=bob").await;
    let sb = guard(b.subscribe("chat:s")).await.unwrap();
    match next(&mut sub).await {
        Event::Join(c) => assert_eq!(c.user, "bob"),
        other => panic!("expected Join, got {other:?}"),
    }
    guard(sb.unsubscribe()).await.unwrap();
    match next(&mut sub).await {
        Event::Leave(c) => assert_eq!(c.user, "bob"),
        other => panic!("expected Leave, got {other:?}"),
    }
    stop(h).await;
}

#[tokio::test]
async fn publish_to_others_skips_the_sender() {
    let h = server();
    let a = connect(&h, "").await;
    let b = connect(&h, "").await;
    let mut sa = guard(a.subscribe("chat:x")).await.unwrap();
    let mut sb = guard(b.subscribe("chat:x")).await.unwrap();
    a.publish_to_others("chat:x", "typing", &1).unwrap();
    assert_eq!(next_pub(&mut sb).await.offset, Some(1));
    guard(b.publish_ack("chat:x", "m", &2)).await.unwrap();
    // Offsets are one total order: a's first publication is the second one (b's join first).
    let p = guard(sa.next_publication()).await.unwrap();
    assert_eq!((p.event.as_str(), p.offset), ("m", Some(2)));
    stop(h).await;
}

/// A server whose durable-message final statuses go to the returned channel.
fn inbox_server(config: Config) -> (ringhub::ServerHandle, mpsc::UnboundedReceiver<StatusChange>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let b: Builder = ringhub::RingHub::builder().config(config);
    let b = common::configure(b, any_port())
        .on_delivery(move |c: &StatusChange| {
            let _ = tx.send(c.clone());
        })
        .pubsub();
    (start(b), rx)
}

#[tokio::test]
async fn durable_messages_are_acknowledged_automatically() {
    let (h, mut statuses) = inbox_server(Config::default());
    let c = connect(&h, "?user=alice").await;
    let messages = c.messages();
    let r = guard(h.send_durable("alice", "notice", &json!({"n": 1})))
        .await
        .unwrap();
    let m = guard(messages.recv()).await.unwrap();
    assert_eq!(
        (m.topic.as_str(), m.event.as_str()),
        ("user:alice", "notice")
    );
    assert_eq!(m.offset, r.offset);
    assert_eq!(m.data::<serde_json::Value>().unwrap(), json!({"n": 1}));
    let s = guard(statuses.recv()).await.unwrap();
    assert_eq!((s.id, s.status), (r.message_id, MessageStatus::Acked));

    // Sent while the user is offline: delivered (and acknowledged) on the next connection.
    c.close().await;
    let r2 = guard(h.send_durable("alice", "notice", &2)).await.unwrap();
    assert_eq!(r2.delivered, 0);
    let c = connect(&h, "?user=alice").await;
    let m = guard(c.messages().recv()).await.unwrap();
    assert_eq!(m.offset, r2.offset);
    let s = guard(statuses.recv()).await.unwrap();
    assert_eq!((s.id, s.status), (r2.message_id, MessageStatus::Acked));
    stop(h).await;
}

#[tokio::test]
async fn durable_redeliveries_are_deduplicated_and_acked_by_hand() {
    let config = Config {
        inbox: InboxConfig {
            ack_timeout: Duration::from_millis(50),
            ..InboxConfig::default()
        },
        ..Config::default()
    };
    let (h, mut statuses) = inbox_server(config);
    let c = guard(Client::connect(
        url(&h, "?user=alice"),
        opts().manual_ack(true),
    ))
    .await
    .unwrap();
    let messages = c.messages();
    // A raw connection of the same user sees every write of the message, so it tells when the
    // server has written it again (to the client's connection too, in the same order).
    let (mut raw, _) = guard(tokio_tungstenite::connect_async(url(&h, "?user=alice")))
        .await
        .unwrap();
    let r1 = guard(h.send_durable("alice", "first", &1)).await.unwrap();
    let m1 = guard(messages.recv()).await.unwrap();
    assert_eq!(m1.offset, r1.offset);
    let mut writes = 0;
    while writes < 2 {
        let frame = guard(raw.next()).await.unwrap().unwrap();
        if let Ok(text) = frame.to_text() {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            if v["offset"] == json!(r1.offset) && v["ack"] == json!(true) {
                writes += 1;
            }
        }
    }
    let r2 = guard(h.send_durable("alice", "second", &2)).await.unwrap();
    // The redelivery of the first message was dropped: the next one is the second.
    let m2 = guard(messages.recv()).await.unwrap();
    assert_eq!((m2.event.as_str(), m2.offset), ("second", r2.offset));
    guard(m1.ack()).await.unwrap();
    guard(m2.ack()).await.unwrap();
    let mut acked = vec![];
    while acked.len() < 2 {
        let s = guard(statuses.recv()).await.unwrap();
        assert_eq!(s.status, MessageStatus::Acked);
        acked.push(s.id);
    }
    acked.sort();
    assert_eq!(acked, [r1.message_id, r2.message_id]);
    drop(raw);
    c.close().await;
    stop(h).await;
}
