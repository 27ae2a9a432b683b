//! Version 1 against a real server: subscribe/publish, requests and error codes, timeouts,
//! disconnects, close, connect failures.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use ringhub::{Context, HandlerResult, Message};
use ringhub_client::{Client, ConnectionState, Error, ErrorCode, Event};
use serde_json::json;

#[tokio::test]
async fn subscribe_publish_round_trip() {
    let h = start(builder(any_port()).pubsub());
    let a = connect(&h, "").await;
    let b = connect(&h, "").await;
    let mut exact = guard(a.subscribe("chat:a")).await.unwrap();
    let mut wild = guard(a.subscribe("news:*")).await.unwrap();
    assert_eq!(exact.topic(), "chat:a");

    b.publish("chat:a", "message", &json!({"text": "hi"}))
        .unwrap();
    let p = next_pub(&mut exact).await;
    assert_eq!((p.topic.as_str(), p.event.as_str()), ("chat:a", "message"));
    assert_eq!(p.data.get(), r#"{"text":"hi"}"#);
    assert_eq!(p.offset, None);
    assert_eq!(
        p.data::<serde_json::Value>().unwrap(),
        json!({"text": "hi"})
    );

    // Acknowledged publish (v1: no offset), the sender's own subscription, ordering.
    for n in 0..20 {
        assert_eq!(guard(a.publish_ack("chat:a", "n", &n)).await.unwrap(), None);
    }
    for n in 0..20 {
        assert_eq!(next_pub(&mut exact).await.data::<i32>().unwrap(), n);
    }

    // A wildcard subscription sees each topic's name; a publication without data is `null`.
    guard(b.request_raw("sports", "news:today", None))
        .await
        .unwrap();
    let p = next_pub(&mut wild).await;
    assert_eq!((p.topic.as_str(), p.data.get()), ("news:today", "null"));

    // One subscription per topic; after unsubscribing the topic can be subscribed again.
    assert_eq!(
        guard(a.subscribe("chat:a")).await.unwrap_err(),
        Error::AlreadySubscribed("chat:a".into())
    );
    guard(exact.unsubscribe()).await.unwrap();
    let mut again = guard(a.subscribe("chat:a")).await.unwrap();
    b.publish("chat:a", "after", &1).unwrap();
    assert_eq!(next_pub(&mut again).await.event, "after");
    // Dropping a subscription unsubscribes too.
    drop(again);
    let mut third = guard(a.subscribe("chat:a")).await.unwrap();
    b.publish("chat:a", "third", &1).unwrap();
    assert_eq!(next_pub(&mut third).await.event, "third");
    stop(h).await;
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> Option<ErrorCode> {
    r.unwrap_err().code().cloned()
}

fn sum(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    let v: Vec<i64> = msg.data()?;
    ctx.reply(&v.iter().sum::<i64>())
}

#[tokio::test]
async fn request_reply_and_error_codes() {
    let h = start(
        builder(any_port())
            .handle("rpc:sum", sum)
            .handle("chat:*", ringhub::pubsub),
    );
    let c = connect(&h, "").await;
    let r = guard(c.request("calc", "rpc:sum", &[1, 2, 4]))
        .await
        .unwrap();
    assert_eq!(r.unwrap().get(), "7");

    assert_eq!(
        code(guard(c.request("calc", "rpc:sum", &"not a list")).await),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code(guard(c.request("x", "elsewhere", &1)).await),
        Some(ErrorCode::HandlerNotFound)
    );
    assert_eq!(
        code(guard(c.publish_ack("chat:*", "x", &1)).await),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code(guard(c.subscribe("a*b")).await.map(|_| ())),
        Some(ErrorCode::BadRequest)
    );
    assert_eq!(
        code(guard(c.subscribe("user:bob")).await.map(|_| ())),
        Some(ErrorCode::Forbidden)
    );
    // A refused subscription leaves no trace: the topic can be tried again.
    assert!(guard(c.subscribe("a*b")).await.is_err());
    let e = guard(c.request("calc", "rpc:sum", &"x")).await.unwrap_err();
    assert!(matches!(e, Error::Server { ref message, .. } if !message.is_empty()));
    stop(h).await;
}

/// A blocking handler that answers only when the test says so.
fn gated() -> (mpsc::Sender<()>, impl ringhub::Handler) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let handler = move |ctx: &mut Context<'_>, _msg: &Message<'_>| {
        let _ = rx.lock().unwrap().recv();
        ctx.reply(&"late")
    };
    (tx, handler)
}

#[tokio::test]
async fn request_timeout_then_late_reply_is_ignored() {
    let (open, handler) = gated();
    let h = start(
        builder(any_port())
            .handle_blocking("slow", handler)
            .pubsub(),
    );
    let c = guard(Client::connect(
        url(&h, ""),
        opts().request_timeout(Duration::from_millis(100)),
    ))
    .await
    .unwrap();
    assert_eq!(
        c.request("ask", "slow", &1).await.unwrap_err(),
        Error::Timeout
    );
    open.send(()).unwrap(); // the late reply arrives and is dropped
    open.send(()).unwrap(); // lets the next request through
    let r = guard(c.request("ask", "slow", &2)).await;
    // The second request may still time out on a slow machine; it must not see the first
    // request's reply under its own id either way.
    if let Ok(r) = r {
        assert_eq!(r.unwrap().get(), r#""late""#);
    }
    stop(h).await;
}

#[tokio::test]
async fn in_flight_request_fails_with_disconnected() {
    let (open, handler) = gated();
    let h = start(
        builder(any_port())
            .handle_blocking("slow", handler)
            .pubsub(),
    );
    let c = connect(&h, "").await;
    let pending = {
        let c = c.clone();
        tokio::spawn(async move { c.request("ask", "slow", &1).await })
    };
    // The request is in flight once the handler has it; a round trip on the same connection
    // after it proves it was written.
    guard(c.request_raw("subscribe", "x", None)).await.unwrap();
    h.shutdown();
    assert_eq!(
        guard(pending).await.unwrap().unwrap_err(),
        Error::Disconnected
    );
    wait_state(&c, ConnectionState::Reconnecting).await;
    assert_eq!(c.publish("x", "e", &1).unwrap_err(), Error::Disconnected);
    open.send(()).unwrap();
    tokio::task::spawn_blocking(move || h.join()).await.unwrap();
    c.close().await;
}

#[tokio::test]
async fn close_ends_subscriptions_and_calls() {
    let h = start(builder(any_port()).pubsub());
    let c = connect(&h, "").await;
    let mut sub = guard(c.subscribe("t")).await.unwrap();
    c.close().await;
    assert_eq!(*c.state().borrow(), ConnectionState::Closed);
    assert!(guard(sub.recv()).await.is_none());
    assert_eq!(c.publish("t", "e", &1).unwrap_err(), Error::Closed);
    assert_eq!(
        guard(c.request("e", "t", &1)).await.unwrap_err(),
        Error::Closed
    );
    assert!(matches!(guard(c.subscribe("u")).await, Err(Error::Closed)));
    stop(h).await;
}

#[tokio::test]
async fn first_connect_failure_is_reported() {
    let h = start(builder(any_port()).guard(jwt_guard()).pubsub());
    let e = guard(Client::connect(url(&h, ""), opts()))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Connect(m) if m.contains("401")), "{e}");
    let ok = guard(Client::connect(url(&h, ""), opts().token(jwt("alice")))).await;
    assert!(ok.is_ok());
    let addr = h.local_addr();
    stop(h).await;
    let e = guard(Client::connect(format!("ws://{addr}/ws"), opts()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect(_)), "{e}");
    let e = guard(Client::connect("not a url", opts()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect(_)), "{e}");
}

#[tokio::test]
async fn events_stream_interface() {
    use futures_util::StreamExt;
    let h = start(builder(any_port()).pubsub());
    let c = connect(&h, "").await;
    let mut sub = guard(c.subscribe("s")).await.unwrap();
    c.publish("s", "e", &1).unwrap();
    match guard(sub.next()).await {
        Some(Event::Publication(p)) => assert_eq!(p.event, "e"),
        other => panic!("{other:?}"),
    }
    stop(h).await;
}
