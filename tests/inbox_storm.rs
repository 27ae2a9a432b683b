//! Issue 21, item 1: a user with many unacknowledged durable messages and a storm of
//! connections that upgrade and abort at once. The store must not do the inbox work of
//! connections already gone, a long inbox is written in pages instead of cutting its reader,
//! and the store keeps answering. Real sockets, both shells; assertions on counts, no timing.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringhub::config::InboxConfig;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};

/// Inbox messages of the tests (about 1 KiB of data each).
const PENDING: usize = 200;

fn config(io: IoMode, outbound_queue: usize) -> ringhub::Config {
    ringhub::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 2,
        io,
        api_key: Some("k".into()),
        outbound_queue,
        inbox: InboxConfig {
            ack_timeout: Duration::from_secs(60),
            max_attempts: 5,
            max_messages: 10_000,
            ttl: Duration::from_secs(3600),
        },
        ..ringhub::Config::default()
    }
}

fn send_durable(h: &ServerHandle, user: &str, n: usize) -> Value {
    let body = json!({"user": user, "event": "note", "data": {"n": n, "pad": "x".repeat(1000)}, "durable": true});
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/send",
        Some("k"),
        Some(&body),
    );
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

/// `ringhub_store_<name>` from `/metrics`.
fn store_metric(h: &ServerHandle, name: &str) -> u64 {
    let (st, text) = http_raw(h.local_addr(), "GET", "/metrics", None, None);
    assert_eq!(st, 200, "{text}");
    let prefix = format!("ringhub_store_{name}");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == prefix || k == format!("{prefix}_total")).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

fn ws_connections(h: &ServerHandle) -> i64 {
    h.stats().connections
}

/// Polls `cond` until it holds (panics with `what` after a generous guard).
async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upgrades as `user`, reads the 101, and aborts (RST).
async fn connect_abort(addr: std::net::SocketAddr, user: &str) {
    let url = format!("ws://{addr}/ws?user={user}");
    let (ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    if let tokio_tungstenite::MaybeTlsStream::Plain(s) = ws.get_ref() {
        // A zero linger never blocks: the drop sends a RST at once (the storm's abort).
        #[allow(deprecated)]
        let _ = s.set_linger(Some(Duration::ZERO));
    }
    drop(ws);
}

/// Reads `n` durable messages: their offsets, in arrival order (no ack).
async fn read_durable(ws: &mut Ws, n: usize) -> Vec<u64> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = recv(ws).await;
        assert_eq!(m["ack"], true, "{m}");
        got.push(m["offset"].as_u64().expect("offset"));
    }
    got
}

/// A user whose unacknowledged messages (200 KiB) outweigh the outbound queue (32 KiB) gets
/// every one on connecting, in order: the inbox is written page by page as the queue drains.
/// Before: the whole list was queued at once and the reader cut with 1008 (slow consumer).
async fn a_long_inbox_is_paged_not_cut(io: IoMode) {
    let Some(h) = start(users(builder(io)).config(config(io, 32 * 1024)).pubsub()) else {
        return;
    };
    for n in 0..PENDING {
        send_durable(&h, "victim", n);
    }
    let mut ws = connect(&h, "/ws?user=victim").await;
    let got = read_durable(&mut ws, PENDING).await;
    assert_eq!(got, (1..=PENDING as u64).collect::<Vec<_>>());
    // A message sent now follows the list.
    send_durable(&h, "victim", PENDING);
    assert_eq!(read_durable(&mut ws, 1).await, vec![PENDING as u64 + 1]);
    assert_eq!(h.stats().slow_consumers, 0);
    h.shutdown();
    h.join();
}
per_shell!(async fn a_long_inbox_is_paged_not_cut);

/// The store thread is held (an `on_delivery` hook that waits) while a storm of connections
/// upgrades and aborts; once every one of them is gone, the store is let go: it skips each
/// of their inbox syncs instead of reading and sending the user's 200 messages for nobody.
/// Before: every queued sync read the whole inbox and built its frames.
async fn syncs_of_closed_connections_are_skipped(io: IoMode) {
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let hook = Mutex::new((entered_tx, release_rx));
    let b = users(builder(io))
        .config(config(io, 256 * 1024))
        .on_delivery(move |_c: &ringhub::hooks::StatusChange| {
            let g = hook.lock().unwrap();
            let _ = g.0.send(());
            let _ = g.1.recv_timeout(Duration::from_secs(60));
        })
        .pubsub();
    let Some(h) = start(b) else { return };
    let ids: Vec<Value> = (0..PENDING)
        .map(|n| send_durable(&h, "victim", n))
        .collect();
    // Block the store thread: an ack's `on_delivery` runs there.
    send_durable(&h, "blocker", 0);
    let mut blocker = connect(&h, "/ws?user=blocker").await;
    let m = recv(&mut blocker).await;
    send(
        &mut blocker,
        json!({"event": "ack", "topic": "user:blocker", "data": {"offset": m["offset"]}}),
    )
    .await;
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("hook entered");
    const STORM: u64 = 120;
    let addr = h.local_addr();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..STORM / 4 {
                    connect_abort(addr, "victim").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    wait_until(|| ws_connections(&h) == 1, "the storm's connections closed").await;
    release.send(()).unwrap();
    // The blocker's own sync was read before; every storm sync is accounted for.
    let read_before = 1;
    wait_until(
        || {
            store_metric(&h, "inbox_syncs_read")
                + store_metric(&h, "inbox_syncs_shared")
                + store_metric(&h, "inbox_syncs_skipped")
                == STORM + read_before
        },
        "every sync handled",
    )
    .await;
    assert_eq!(store_metric(&h, "inbox_syncs_skipped"), STORM);
    assert_eq!(store_metric(&h, "inbox_syncs_read"), read_before);
    wait_until(|| store_metric(&h, "queue") == 0, "store queue empty").await;
    // The store answers, and nothing was counted as delivered to the aborted connections.
    let (st, v) = http_json(
        addr,
        "GET",
        &format!("/api/v1/messages/{}", ids[0]["message_id"]),
        Some("k"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["status"], "pending", "{v}");
    assert_eq!(v["data"]["attempts"], 0, "{v}");
    drop(blocker);
    h.shutdown();
    h.join();
}
per_shell!(async fn syncs_of_closed_connections_are_skipped);

/// A storm of parallel connect/abort cycles against a user with 200 pending messages: the store
/// keeps answering, its queue drains to 0, every sync is accounted for (read, shared or
/// skipped), and a connection afterwards still gets the whole inbox.
async fn a_reconnect_storm_leaves_the_store_answering(io: IoMode) {
    let Some(h) = start(
        users(builder(io))
            .config(config(io, 4 * 1024 * 1024))
            .pubsub(),
    ) else {
        return;
    };
    let ids: Vec<Value> = (0..PENDING)
        .map(|n| send_durable(&h, "victim", n))
        .collect();
    const LOOPS: u64 = 4;
    const CYCLES: u64 = 60;
    let addr = h.local_addr();
    let tasks: Vec<_> = (0..LOOPS)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..CYCLES {
                    connect_abort(addr, "victim").await;
                }
            })
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The store answers during the storm.
    let probe = {
        let (done, id) = (done.clone(), ids[PENDING - 1]["message_id"].clone());
        tokio::task::spawn_blocking(move || {
            let mut probes = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || probes == 0 {
                let path = format!("/api/v1/messages/{id}");
                let (st, v) = http_json(addr, "GET", &path, Some("k"), None);
                assert_eq!(st, 200, "store call during the storm: {v}");
                probes += 1;
                // Paced: a probe, not a load of its own.
                std::thread::sleep(Duration::from_millis(20));
            }
            probes
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(probe.await.unwrap() > 0);
    let total = LOOPS * CYCLES;
    wait_until(
        || {
            store_metric(&h, "inbox_syncs_read")
                + store_metric(&h, "inbox_syncs_shared")
                + store_metric(&h, "inbox_syncs_skipped")
                == total
        },
        "every sync handled",
    )
    .await;
    wait_until(|| store_metric(&h, "queue") == 0, "store queue empty").await;
    wait_until(|| ws_connections(&h) == 0, "storm connections closed").await;
    let mut ws = connect(&h, "/ws?user=victim").await;
    let got = read_durable(&mut ws, PENDING).await;
    assert_eq!(got, (1..=PENDING as u64).collect::<Vec<_>>());
    h.shutdown();
    h.join();
}
per_shell!(async fn a_reconnect_storm_leaves_the_store_answering);
