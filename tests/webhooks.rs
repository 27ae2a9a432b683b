//! Webhooks (issue 18) against a real receiver (`common::webhook`): a Node `http` server
//! started by the test, which verifies each request's signature on its own (Node's crypto, not
//! ringhub's code) and logs the accepted bodies. Every wait is on something observable: the
//! receiver's log or the status endpoint. The cluster's are in `webhooks_cluster.rs`.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::webhook::*;
use common::*;
use ringhub::config::{Config, WebhookConfig};
use ringhub::IoMode;
use serde_json::{json, Value};
/// Every event type a connection's life makes, once per transition of the node (two
/// connections of one user, on whichever shards, make one online and one offline), each signed
/// (the receiver refuses bad signatures) with a unique id.
async fn events_of_a_connection_life(io: IoMode) {
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    let cfg = Config {
        topics: vec![ns("room:*", 0)],
        webhooks: hooks(rx.url()),
        ..Config::default()
    };
    let Some(h) = start(users(builder_with(io, cfg)).api_key("k").pubsub()) else {
        return;
    };
    let mut a = connect(&h, "/ws?user=alice").await;
    let mut b = connect(&h, "/ws?user=alice").await;
    subscribe(&mut a, "room:1", 1).await;
    subscribe(&mut b, "room:1", 1).await;
    let r = request(
        &mut a,
        json!({"topic": "chat:x", "event": "msg", "data": {"n": 1}, "id": 2}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    a.close(None).await.unwrap();
    b.close(None).await.unwrap();
    until("user_offline of alice", || {
        count(&rx.events(), "user_offline", "user", "alice") > 0
    })
    .await;
    until("topic_vacated of room:1", || {
        count(&rx.events(), "topic_vacated", "topic", "room:1") > 0
    })
    .await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "user_online", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_occupied", "topic", "room:1"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:1"), 1, "{ev:?}");
    assert_eq!(count(&ev, "presence_added", "topic", "room:1"), 2, "{ev:?}");
    assert_eq!(
        count(&ev, "presence_removed", "topic", "room:1"),
        2,
        "{ev:?}"
    );
    let p: Vec<&Value> = ev.iter().filter(|e| e["type"] == "publication").collect();
    assert_eq!(p.len(), 1, "{ev:?}");
    assert_eq!(p[0]["topic"], "chat:x");
    assert_eq!(p[0]["event"], "msg");
    assert_eq!(p[0]["data"], json!({"n": 1}));
    assert_eq!(p[0]["user"], "alice");
    for e in &ev {
        assert!(e["time_ms"].as_u64().is_some_and(|t| t > 0), "{e}");
    }
    until("an empty outbox in the status", || {
        status(h.local_addr())["backlog"] == 0
    })
    .await;
    let s = status(h.local_addr());
    assert_eq!(s["enabled"], true);
    assert!(s["sent"].as_u64().unwrap() >= ev.len() as u64, "{s}");
    stop_server(h);
}
per_shell!(async fn events_of_a_connection_life);

/// A Socket.IO connection's user comes online and goes offline as a `/ws` one's does (the
/// Socket.IO CONNECT adds the user to the shard where the `/ws` upgrade does).
async fn socketio_user_online_and_offline(io: IoMode) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMsg;
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    let cfg = Config {
        webhooks: hooks(rx.url()),
        ..Config::default()
    };
    // The user is named by the CONNECT packet's auth payload.
    let b = builder_with(io, cfg).on_connect(|c: &ringhub::hooks::ConnectInfo<'_>| {
        let user = c
            .auth
            .and_then(|a| serde_json::from_str::<Value>(a).ok())
            .and_then(|v| v["user"].as_str().map(str::to_string));
        Ok(ringhub::hooks::ConnectOutcome {
            user,
            ..Default::default()
        })
    });
    let Some(h) = start(b) else {
        return;
    };
    let mut ws = connect(&h, "/socket.io/?EIO=4&transport=websocket").await;
    async fn text(ws: &mut Ws) -> String {
        loop {
            match StreamExt::next(ws).await {
                Some(Ok(WsMsg::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }
    let open = text(&mut ws).await;
    assert!(open.starts_with("0{"), "OPEN: {open}");
    ws.send(WsMsg::Text(r#"40{"user":"sam"}"#.into()))
        .await
        .unwrap();
    let ok = text(&mut ws).await;
    assert!(ok.starts_with("40{\"sid\":"), "CONNECT: {ok}");
    until("user_online of sam", || {
        count(&rx.events(), "user_online", "user", "sam") == 1
    })
    .await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = StreamExt::next(&mut ws).await {}
    until("user_offline of sam", || {
        count(&rx.events(), "user_offline", "user", "sam") == 1
    })
    .await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "user_online", "user", "sam"), 1, "{ev:?}");
    stop_server(h);
}
per_shell!(async fn socketio_user_online_and_offline);

/// Users `u0..n` connect and leave: `2n` events.
async fn churn(addr: std::net::SocketAddr, n: usize) {
    for i in 0..n {
        let mut ws = connect_addr(addr, &format!("/ws?user=u{i}")).await;
        ws.close(None).await.unwrap();
        // The server's close frame ends it: the connection is gone once it arrived.
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    }
}

fn assert_all_users(events: &[Value], n: usize) {
    assert_unique_ids(events);
    for i in 0..n {
        let u = format!("u{i}");
        assert_eq!(count(events, "user_online", "user", &u), 1, "{u}");
        assert_eq!(count(events, "user_offline", "user", &u), 1, "{u}");
    }
}

/// The receiver failing (503), then gone, then back: every event arrives, once, ids unique.
async fn receiver_down_then_up(io: IoMode) {
    const N: usize = 60;
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log.clone()) else {
        return;
    };
    rx.failing(true);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        webhooks: hooks(rx.url()),
        ..Config::default()
    };
    cfg.store.backend = ringhub::config::StoreBackend::Redb;
    cfg.store.path = dir.path().to_path_buf();
    let Some(h) = start(users(builder_with(io, cfg)).api_key("k")) else {
        return;
    };
    let addr = h.local_addr();
    churn(addr, N).await;
    until("every event in the outbox, requests failing", || {
        let s = status(addr);
        s["backlog"] == 2 * N && s["failed_requests"].as_u64() > Some(0)
    })
    .await;
    assert!(status(addr)["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("503")));
    // Gone altogether: connections refused.
    let port = rx.port;
    drop(rx);
    let failed = status(addr)["failed_requests"].as_u64().unwrap();
    until("requests failing against the stopped receiver", || {
        status(addr)["failed_requests"].as_u64() > Some(failed + 1)
    })
    .await;
    assert_eq!(status(addr)["backlog"], 2 * N);
    let rx = Receiver::start(port, log).expect("node");
    until("every event delivered", || rx.events().len() >= 2 * N).await;
    until("an empty outbox", || status(addr)["backlog"] == 0).await;
    let ev = rx.events();
    assert_eq!(ev.len(), 2 * N, "{ev:?}");
    assert_all_users(&ev, N);
    assert!(status(addr)["oldest_pending_age_ms"].is_null());
    stop_server(h);
}
per_shell!(async fn receiver_down_then_up);

/// `kill -9` of the binary (redb store) with undelivered events: the next start delivers them.
#[tokio::test]
async fn undelivered_events_survive_kill_9() {
    events_survive_kill_9("always").await;
}

/// The same with `[store] sync = "interval"` (an interval longer than the test: the outbox's
/// log records are written, not synced, when the server is killed).
#[tokio::test]
async fn undelivered_events_survive_kill_9_interval_sync() {
    events_survive_kill_9("interval").await;
}

async fn events_survive_kill_9(sync: &str) {
    const N: usize = 20;
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    rx.failing(true);
    let dir = tempfile::tempdir().unwrap();
    let spawn = |listen: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringhub"))
            .args([
                "--listen",
                listen,
                "--shards",
                "2",
                "--stats-interval",
                "0s",
            ])
            .env("RINGHUB_STORE_BACKEND", "redb")
            .env("RINGHUB_STORE_PATH", dir.path())
            .env("RINGHUB_API_KEY", "k")
            .env("RINGHUB_AUTH_JWT_SECRET", cluster::SECRET)
            .env("RINGHUB_WEBHOOKS_URL", rx.url())
            .env("RINGHUB_WEBHOOKS_SECRET", SECRET)
            .env("RINGHUB_WEBHOOKS_RETRY_MIN", "20ms")
            .env("RINGHUB_WEBHOOKS_RETRY_MAX", "200ms")
            .env("RINGHUB_STORE_SYNC", sync)
            .env("RINGHUB_STORE_SYNC_INTERVAL", "60s")
            .env("RINGHUB_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringhub");
        let addr: std::net::SocketAddr = wait_listening(&mut child).parse().unwrap();
        (child, addr)
    };
    let (mut first, addr) = spawn("127.0.0.1:0");
    for i in 0..N {
        let t = cluster::token(&format!("u{i}"));
        let mut ws = connect_addr(addr, &format!("/ws?token={t}")).await;
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    }
    until("every event in the outbox", || {
        status(addr)["backlog"] == 2 * N
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(rx.events().is_empty());
    rx.failing(false);
    let (mut second, addr2) = spawn("127.0.0.1:0");
    until("every event delivered after the restart", || {
        rx.events().len() >= 2 * N
    })
    .await;
    until("an empty outbox", || status(addr2)["backlog"] == 0).await;
    let ev = rx.events();
    assert_eq!(ev.len(), 2 * N, "{ev:?}");
    assert_all_users(&ev, N);
    let _ = second.kill();
    let _ = second.wait();
}

/// Events the receiver never takes are dropped after `dead_letter_after` and counted.
#[tokio::test]
async fn old_events_become_dead_letters() {
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    rx.failing(true);
    // Through the builder, as a library user would.
    let hooks = WebhookConfig {
        dead_letter_after: Duration::from_millis(100),
        ..hooks(rx.url())
    };
    let h = start(users(builder(IoMode::Epoll)).webhooks(hooks).api_key("k")).unwrap();
    let addr = h.local_addr();
    churn(addr, 3).await;
    until("six dead letters and an empty outbox", || {
        let s = status(addr);
        s["dead_letters"] == 6 && s["backlog"] == 0
    })
    .await;
    let s = status(addr);
    assert_eq!(s["sent"], 0, "{s}");
    assert!(s["failed_requests"].as_u64() > Some(0), "{s}");
    rx.failing(false);
    assert!(rx.events().is_empty());
    stop_server(h);
}
