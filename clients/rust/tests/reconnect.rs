//! Reconnecting after the server went away and a new one came up on the same port: the token
//! provider is asked again, subscriptions come back, and on topics with history what was
//! published meanwhile is recovered in order without duplicates (or the failure is reported).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use ringhub::Builder;
use ringhub_client::{Client, ConnectionState, Event, Options};
use tokio::sync::Semaphore;

/// A token provider that hands out one token per permit of `gate` (so the test decides when the
/// client may reconnect) and counts its calls.
fn gated_tokens(
    options: Options,
    user: &'static str,
) -> (Options, Arc<Semaphore>, Arc<AtomicUsize>) {
    let gate = Arc::new(Semaphore::new(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (gate.clone(), calls.clone());
    let options = options.token_provider(move || {
        let (g, c) = (g.clone(), c.clone());
        async move {
            g.acquire().await.map_err(|e| e.to_string())?.forget();
            c.fetch_add(1, Ordering::SeqCst);
            Ok(jwt(user))
        }
    });
    (options, gate, calls)
}

#[tokio::test]
async fn reconnects_and_resubscribes_with_a_fresh_token() {
    let server = |addr| start(builder(addr).guard(jwt_guard()).pubsub());
    let a = server(any_port());
    let addr = a.local_addr();
    let (options, gate, calls) = gated_tokens(opts(), "alice");
    let c = guard(Client::connect(url(&a, ""), options)).await.unwrap();
    let mut room = guard(c.subscribe("room")).await.unwrap();
    let mut wild = guard(c.subscribe("lobby:*")).await.unwrap();
    a.publish("room", "before", &1).unwrap();
    assert_eq!(next_pub(&mut room).await.event, "before");

    stop(a).await;
    wait_state(&c, ConnectionState::Reconnecting).await;
    let b = server(addr);
    gate.add_permits(1);
    // Connected means every subscription is active again on the new server.
    wait_state(&c, ConnectionState::Connected).await;
    b.publish("room", "after", &2).unwrap();
    b.publish("lobby:1", "hello", &3).unwrap();
    assert_eq!(next_pub(&mut room).await.event, "after");
    assert_eq!(next_pub(&mut wild).await.topic, "lobby:1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(guard(c.info()).await.unwrap().user, "alice");
    c.close().await;
    stop(b).await;
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringhub-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn history_server(addr: std::net::SocketAddr, store: Option<&PathBuf>) -> ringhub::ServerHandle {
    let b: Builder = builder(addr).guard(jwt_guard()).topic(ns("chat:*", 100));
    let b = match store {
        Some(dir) => b.store_path(dir),
        None => b,
    };
    start(b.pubsub())
}

#[tokio::test]
async fn recovers_publications_made_while_away() {
    let dir = temp_dir("recover");
    let a = history_server(any_port(), Some(&dir));
    let addr = a.local_addr();
    let (options, gate, _) = gated_tokens(opts(), "alice");
    let c = guard(Client::connect(url(&a, ""), options)).await.unwrap();
    let mut sub = guard(c.subscribe("chat:r")).await.unwrap();
    for n in 1..=3u64 {
        assert_eq!(
            guard(c.publish_ack("chat:r", "m", &n)).await.unwrap(),
            Some(n)
        );
    }
    for n in 1..=3u64 {
        assert_eq!(next_pub(&mut sub).await.offset, Some(n));
    }

    stop(a).await;
    wait_state(&c, ConnectionState::Reconnecting).await;
    // The same store: the epoch survives, so the position the client remembers is valid.
    let b = history_server(addr, Some(&dir));
    let p = guard(Client::connect(url(&b, ""), opts().token(jwt("bob"))))
        .await
        .unwrap();
    for n in 4..=6u64 {
        assert_eq!(
            guard(p.publish_ack("chat:r", "m", &n)).await.unwrap(),
            Some(n)
        );
    }
    gate.add_permits(1);
    for n in 4..=6u64 {
        let pb = next_pub(&mut sub).await;
        assert_eq!((pb.offset, pb.data::<u64>().unwrap()), (Some(n), n));
    }
    match next(&mut sub).await {
        Event::Recovered { publications } => assert_eq!(publications, 3),
        other => panic!("expected Recovered, got {other:?}"),
    }
    wait_state(&c, ConnectionState::Connected).await;
    assert_eq!(
        guard(p.publish_ack("chat:r", "m", &7)).await.unwrap(),
        Some(7)
    );
    assert_eq!(next_pub(&mut sub).await.offset, Some(7));
    c.close().await;
    p.close().await;
    stop(b).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn reports_recovery_failure_on_a_new_epoch() {
    // The memory store forgets everything on restart: a new epoch, offsets from 1 again.
    let a = history_server(any_port(), None);
    let addr = a.local_addr();
    let (options, gate, _) = gated_tokens(opts(), "alice");
    let c = guard(Client::connect(url(&a, ""), options)).await.unwrap();
    let mut sub = guard(c.subscribe("chat:f")).await.unwrap();
    for n in 1..=3u64 {
        guard(c.publish_ack("chat:f", "m", &n)).await.unwrap();
        next_pub(&mut sub).await;
    }
    stop(a).await;
    wait_state(&c, ConnectionState::Reconnecting).await;
    let b = history_server(addr, None);
    let p = guard(Client::connect(url(&b, ""), opts().token(jwt("bob"))))
        .await
        .unwrap();
    assert_eq!(
        guard(p.publish_ack("chat:f", "m", &1)).await.unwrap(),
        Some(1)
    );
    gate.add_permits(1);
    match next(&mut sub).await {
        Event::RecoveryFailed { epoch, offset } => {
            assert!(epoch.is_some());
            assert_eq!(offset, Some(1));
        }
        other => panic!("expected RecoveryFailed, got {other:?}"),
    }
    wait_state(&c, ConnectionState::Connected).await;
    // The stream continues from the new position: offset 2 is delivered, not dropped as a
    // duplicate of the old epoch's 2.
    assert_eq!(
        guard(p.publish_ack("chat:f", "m", &2)).await.unwrap(),
        Some(2)
    );
    assert_eq!(next_pub(&mut sub).await.offset, Some(2));
    c.close().await;
    stop(b).await;
}
