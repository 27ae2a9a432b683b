//! Webhooks (issue 18) against a real receiver: `tests/webhook/receiver.js`, a Node `http`
//! server started by the test, which verifies each request's signature on its own (Node's
//! crypto, not ringhub's code) and logs the accepted bodies. Every wait is on something
//! observable: the receiver's log or the status endpoint.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ringhub::config::{Config, WebhookConfig};
use ringhub::IoMode;
use serde_json::{json, Value};

const SECRET: &str = "test-webhook-secret";
const DEADLINE: Duration = Duration::from_secs(30);

/// What the receiver logged, across its restarts.
#[derive(Default)]
struct Log {
    /// Bodies of accepted requests.
    bodies: Vec<Value>,
    /// Requests it refused for their signature.
    bad: Vec<String>,
}

struct Receiver {
    child: Child,
    port: u16,
    log: Arc<Mutex<Log>>,
}

impl Receiver {
    /// Starts `node receiver.js` on `port` (0: any), logging into `log`.
    fn start(port: u16, log: Arc<Mutex<Log>>) -> Option<Receiver> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook/receiver.js");
        let mut child = match Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .env("SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if !on_ci() => {
                eprintln!("skipping: node is not installed ({e})");
                return None;
            }
            Err(e) => panic!("node: {e}"),
        };
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("receiver exited").expect("read");
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .expect("listening line");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                if let Some(b) = line.strip_prefix("REQ ") {
                    l.bodies
                        .push(serde_json::from_str(b).expect("body is JSON"));
                } else if let Some(b) = line.strip_prefix("BAD ") {
                    l.bad.push(b.to_string());
                }
            }
        });
        Some(Receiver { child, port, log })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Switches the receiver to answering 503 (`true`) or 204.
    fn failing(&self, on: bool) {
        let path = if on { "/fail" } else { "/ok" };
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    }

    /// Every event received so far (across restarts), in arrival order.
    fn events(&self) -> Vec<Value> {
        events_of(&self.log)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events_of(log: &Mutex<Log>) -> Vec<Value> {
    let l = log.lock().unwrap();
    assert!(
        l.bad.is_empty(),
        "the receiver refused requests: {:?}",
        l.bad
    );
    l.bodies
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Waits until `cond` holds, polling (never a fixed sleep as synchronisation).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hooks(url: String) -> WebhookConfig {
    WebhookConfig {
        url: Some(url),
        secret: SECRET.into(),
        topics: vec!["chat:*".into()],
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..WebhookConfig::default()
    }
}

fn count(events: &[Value], kind: &str, field: &str, value: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == kind && e[field] == value)
        .count()
}

fn assert_unique_ids(events: &[Value]) {
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "duplicate ids in {events:?}");
}

fn status(addr: std::net::SocketAddr) -> Value {
    let (st, v) = http_json(addr, "GET", "/api/v1/webhooks", Some("k"), None);
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}

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

/// Two nodes with the Redis store: occupied / vacated and online / offline are sent once per
/// cluster-wide transition (not once per node), and every event once (the outbox is one Redis
/// stream read by both nodes through a consumer group).
#[tokio::test]
async fn cluster_sends_each_transition_once() {
    let Some(redis) = common::redis::Redis::start() else {
        return;
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    let url = rx.url();
    let settings = [
        ("store.backend", "redis"),
        ("webhooks.url", url.as_str()),
        ("webhooks.secret", SECRET),
        ("webhooks.retry_min", "20ms"),
        ("webhooks.retry_max", "200ms"),
        (
            "webhooks.events",
            "topic_occupied,topic_vacated,user_online,user_offline",
        ),
    ];
    let urls = [redis.url()];
    let Some(a) = cluster::node_with(IoMode::Epoll, "a", &urls, &settings) else {
        return;
    };
    let b = cluster::node_with(IoMode::Epoll, "b", &urls, &settings).unwrap();
    for n in [&a, &b] {
        cluster::wait_for(|| cluster::ready(n.local_addr()).0 == 200, "node ready").await;
    }
    let path = format!("/ws?token={}", cluster::token("alice"));
    let mut on_a = connect(&a, &path).await;
    subscribe(&mut on_a, "room:1", 1).await;
    until("alice online", || {
        count(&rx.events(), "user_online", "user", "alice") >= 1
    })
    .await;
    let mut on_b = connect(&b, &path).await;
    subscribe(&mut on_b, "room:1", 1).await;
    // A node reports its changes to Redis after the fact (its subscribe answer does not wait):
    // closing alice on a before b's "have" reached Redis is a real cluster-wide vacated then
    // occupied (see `webhook_transitions_alternate_in_every_order`). One transition each way
    // is asserted, so a leaves only once both nodes are seen holding both keys.
    let mut conn = redis.conn();
    let mut holds = |key: &str, node: &str| -> bool {
        ::redis::cmd("SISMEMBER")
            .arg(format!("ringhub:whn:{key}"))
            .arg(node)
            .query(&mut conn)
            .unwrap()
    };
    until("b's user and topic seen in Redis", || {
        holds("user:alice", "b") && holds("topic:room:1", "b")
    })
    .await;
    for mut ws in [on_a, on_b] {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    }
    until("alice offline", || {
        count(&rx.events(), "user_offline", "user", "alice") >= 1
    })
    .await;
    until("room:1 vacated", || {
        count(&rx.events(), "topic_vacated", "topic", "room:1") >= 1
    })
    .await;
    // Both nodes have processed their last transitions once no node holds either key ...
    let mut conn = redis.conn();
    let mut held = |key: &str| -> u64 {
        ::redis::cmd("SCARD")
            .arg(format!("ringhub:whn:{key}"))
            .query(&mut conn)
            .unwrap()
    };
    until("no node holds the keys", || {
        held("user:alice") == 0 && held("topic:room:1") == 0
    })
    .await;
    // ... and everything they put in the outbox before has been sent once a later event of each
    // node arrived and the stream is empty.
    let ma = connect(&a, &format!("/ws?token={}", cluster::token("marker-a"))).await;
    let mb = connect(&b, &format!("/ws?token={}", cluster::token("marker-b"))).await;
    until("the markers", || {
        let ev = rx.events();
        count(&ev, "user_online", "user", "marker-a") == 1
            && count(&ev, "user_online", "user", "marker-b") == 1
    })
    .await;
    let mut conn = redis.conn();
    until("an empty outbox stream", || {
        ::redis::cmd("XLEN")
            .arg("ringhub:wh")
            .query::<u64>(&mut conn)
            .unwrap()
            == 0
    })
    .await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "user_online", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_occupied", "topic", "room:1"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:1"), 1, "{ev:?}");
    drop((ma, mb));
    cluster::stop(vec![a, b]);
}

/// A node killed with `kill -9` while a user and a topic were its: its next life (same node
/// name) releases what the dead one held, so the offline and vacated events the dead node never
/// sent are sent, once. (A node that never comes back is released by the others once its
/// registration stayed missing — `Store::webhook_orphans`, covered by the store's Redis tests.)
#[tokio::test]
async fn a_killed_nodes_last_transitions_are_sent_by_its_next_life() {
    let Some(redis) = common::redis::Redis::start() else {
        return;
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    let url = rx.url();
    let env = [
        ("RINGHUB_STORE_BACKEND", "redis"),
        ("RINGHUB_WEBHOOKS_URL", url.as_str()),
        ("RINGHUB_WEBHOOKS_SECRET", SECRET),
        ("RINGHUB_WEBHOOKS_RETRY_MIN", "20ms"),
        ("RINGHUB_WEBHOOKS_RETRY_MAX", "200ms"),
        (
            "RINGHUB_WEBHOOKS_EVENTS",
            "topic_occupied,topic_vacated,user_online,user_offline",
        ),
    ];
    let mut first = cluster::BinNode::spawn("phoenix", &redis.url(), &env);
    let path = format!("/ws?token={}", cluster::token("alice"));
    let mut ws = connect_addr(first.addr, &path).await;
    subscribe(&mut ws, "room:9", 1).await;
    until("alice online and room:9 occupied", || {
        let ev = rx.events();
        count(&ev, "user_online", "user", "alice") == 1
            && count(&ev, "topic_occupied", "topic", "room:9") == 1
    })
    .await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(ws);
    assert_eq!(count(&rx.events(), "user_offline", "user", "alice"), 0);
    let second = cluster::BinNode::spawn("phoenix", &redis.url(), &env);
    until("alice offline and room:9 vacated", || {
        let ev = rx.events();
        count(&ev, "user_offline", "user", "alice") == 1
            && count(&ev, "topic_vacated", "topic", "room:9") == 1
    })
    .await;
    // Marked by a later event of the second life: nothing was sent twice meanwhile.
    let _marker = connect_addr(second.addr, &format!("/ws?token={}", cluster::token("m"))).await;
    until("the marker", || {
        count(&rx.events(), "user_online", "user", "m") == 1
    })
    .await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:9"), 1, "{ev:?}");
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
