//! Durable sends served on the shard that read them (`POST /api/v1/send`, `"durable": true`):
//! many pipelined on one kept-alive connection are each answered once stored, in order, with
//! the delivery count summed over the shards; every answered one survives `kill -9`. The same
//! for a `POST /api/v1/batch` of durable sends (one answer, the results in order).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use ringhub::hooks::{ConnectInfo, ConnectOutcome};
use ringhub::IoMode;
use serde_json::{json, Value};

/// Writes `n` durable sends to `user` (data `{"n": first + i}`) in one write on one kept-alive
/// connection, then reads the `n` answers in order: (status, JSON body) each.
fn pipelined_sends(addr: SocketAddr, user: &str, first: u64, n: u64) -> Vec<(u16, Value)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD * 2)).unwrap();
    let mut reqs = String::new();
    for i in 0..n {
        let body =
            json!({"user": user, "event": "note", "data": {"n": first + i}, "durable": true})
                .to_string();
        reqs.push_str(&format!(
            "POST /api/v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    s.write_all(reqs.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    (0..n)
        .map(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let status = line.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
        })
        .collect()
}

/// A server with API key `k` whose WebSocket clients are the user named by `?user=`.
fn users_by_query(io: IoMode) -> ringhub::Builder {
    builder(io)
        .api_key("k")
        .on_connect(|c: &ConnectInfo<'_>| {
            let user = c
                .query
                .and_then(|q| q.strip_prefix("user="))
                .map(str::to_string);
            Ok(ConnectOutcome {
                user,
                ..Default::default()
            })
        })
        .pubsub()
}

/// Six connections of `erin` (on whichever shards), then 40 sends pipelined on one connection:
/// answered in order, consecutive offsets, each delivered to every connection.
async fn pipelined_sends_count_every_shard(io: IoMode) {
    let Some(h) = start(users_by_query(io)) else {
        return;
    };
    // Six connections: both shards have some, but for a 1-in-32 draw of `SO_REUSEPORT`.
    let mut conns = Vec::new();
    for _ in 0..6 {
        conns.push(connect(&h, "/ws?user=erin").await);
    }
    // The first message reaches them all once their inbox syncs are done (live or listed).
    let first = pipelined_sends(h.local_addr(), "erin", 1, 1);
    assert_eq!(first[0].0, 200, "{:?}", first[0]);
    for ws in &mut conns {
        assert_eq!(recv(ws).await["offset"], 1);
    }
    let answers = pipelined_sends(h.local_addr(), "erin", 2, 40);
    let mut ids = std::collections::HashSet::new();
    for (i, (status, v)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(v["success"], true, "{v}");
        assert_eq!(v["data"]["offset"], i as u64 + 2, "in order: {v}");
        assert_eq!(v["data"]["delivered"], 6, "every connection: {v}");
        assert!(ids.insert(v["data"]["message_id"].as_u64().unwrap()), "{v}");
    }
    for ws in &mut conns {
        for off in 2..=41u64 {
            let m = recv(ws).await;
            assert_eq!(m["offset"], off, "{m}");
            assert_eq!(m["data"]["n"], off, "{m}");
        }
    }
    // A send the shard does not serve (wrong key) is still answered, by the API thread.
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/send",
        Some("wrong"),
        Some(&json!({"user": "erin", "event": "e", "durable": true})),
    );
    assert_eq!(st, 401, "{v}");
    h.shutdown();
    h.join();
}
per_shell!(async fn pipelined_sends_count_every_shard);

/// A batch of `users.len()` durable sends (data `{"n": i}`), as one request.
fn batch_of_sends(addr: SocketAddr, users: &[&str]) -> (u16, Value) {
    let cmds: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, u)| json!({"method": "send", "params": {"user": u, "event": "note", "data": {"n": i}, "durable": true}}))
        .collect();
    http_json(
        addr,
        "POST",
        "/api/v1/batch",
        Some("k"),
        Some(&json!({ "commands": cmds })),
    )
}

/// A batch of durable sends to a connected user (three connections) and an offline one,
/// interleaved: one answer whose results keep the commands' order, each user's offsets
/// consecutive in that order, the connected user's counted on every connection and received in
/// order; a batch the shard does not serve (a bad user among the sends) is answered alike by
/// the API thread.
async fn batch_of_durable_sends(io: IoMode) {
    let Some(h) = start(users_by_query(io)) else {
        return;
    };
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(connect(&h, "/ws?user=gus").await);
    }
    // The inbox syncs are done once a first message reaches every connection.
    let first = pipelined_sends(h.local_addr(), "gus", 0, 1);
    assert_eq!(first[0].0, 200, "{:?}", first[0]);
    for ws in &mut conns {
        assert_eq!(recv(ws).await["offset"], 1);
    }
    let users: Vec<&str> = (0..30)
        .map(|i| if i % 3 == 2 { "hal" } else { "gus" })
        .collect();
    let (st, v) = batch_of_sends(h.local_addr(), &users);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    let results = v["data"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 30, "{v}");
    let (mut gus, mut hal, mut last_id) = (1u64, 0u64, 0u64);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["success"], true, "{r}");
        let keys: Vec<&String> = r["data"].as_object().expect("data").keys().collect();
        assert_eq!(keys, ["delivered", "message_id", "offset"], "{r}");
        let id = r["data"]["message_id"].as_u64().expect("an id");
        assert!(id > last_id, "ids in command order: {v}");
        last_id = id;
        let (offset, delivered) = if users[i] == "gus" {
            gus += 1;
            (gus, 3)
        } else {
            hal += 1;
            (hal, 0)
        };
        assert_eq!(r["data"]["offset"], offset, "{r}");
        assert_eq!(r["data"]["delivered"], delivered, "{r}");
    }
    for ws in &mut conns {
        for (off, n) in (2..=gus).zip((0..30).filter(|i| i % 3 != 2)) {
            let m = recv(ws).await;
            assert_eq!(m["offset"], off, "{m}");
            assert_eq!(m["data"]["n"], n, "{m}");
        }
    }
    // Not served here (an invalid user): the API thread answers, the other sends succeed.
    let (st, v) = batch_of_sends(h.local_addr(), &["hal", "not*valid", "hal"]);
    assert_eq!(st, 200, "{v}");
    let results = v["data"]["results"].as_array().expect("results");
    assert_eq!(results[0]["data"]["offset"], hal + 1, "{v}");
    assert_eq!(results[1]["success"], false, "{v}");
    assert_eq!(results[2]["data"]["offset"], hal + 2, "{v}");
    h.shutdown();
    h.join();
}
per_shell!(async fn batch_of_durable_sends);

struct Node(Child, SocketAddr);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a redb store in `dir` with the sync policy `sync` (`interval`: an
/// interval longer than the test, so nothing answered is synced before the `kill -9`).
fn spawn(dir: &std::path::Path, sync: &str) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--stats-interval",
            "0s",
        ])
        .args(["--store", "redb", "--store-path"])
        .arg(dir)
        .env("RINGHUB_API_KEY", "k")
        .env("RINGHUB_AUTH_ANONYMOUS", "true")
        .env("RINGHUB_LIMITS_MESSAGES_PER_SECOND", "0")
        .env("RINGHUB_LOG_FORMAT", "text")
        .env("RINGHUB_STORE_SYNC", sync)
        .env("RINGHUB_STORE_SYNC_INTERVAL", "60s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ringhub");
    let addr = wait_listening(&mut child).parse().unwrap();
    Node(child, addr)
}

/// Every pipelined durable send that was answered is in the inbox after `kill -9`.
#[test]
fn answered_pipelined_sends_survive_kill_9() {
    pipelined_sends_survive_kill_9("always");
}

/// The same with `[store] sync = "interval"`: answered once written, before any sync.
#[test]
fn answered_pipelined_sends_survive_kill_9_interval_sync() {
    pipelined_sends_survive_kill_9("interval");
}

fn pipelined_sends_survive_kill_9(sync: &str) {
    let dir = std::env::temp_dir().join(format!(
        "ringhub-durable-http-{sync}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let node = spawn(&dir, sync);
    let answers = pipelined_sends(node.1, "finn", 1, 50);
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let (st, v) = batch_of_sends(node.1, &["gwen"; 30]);
    assert_eq!(st, 200, "{v}");
    let batch = v["data"]["results"].as_array().expect("results");
    assert!(batch.iter().all(|r| r["success"] == true), "{v}");
    drop(node); // SIGKILL: nothing beyond what was committed.

    let node = spawn(&dir, sync);
    let (st, v) = http_json(node.1, "GET", "/api/v1/inbox?user=finn", Some("k"), None);
    assert_eq!(st, 200, "{v}");
    let offsets: Vec<u64> = v["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=50).collect::<Vec<_>>(), "{v}");
    let (st, v) = http_json(node.1, "GET", "/api/v1/inbox?user=gwen", Some("k"), None);
    assert_eq!(st, 200, "{v}");
    let count = v["data"]["messages"].as_array().expect("messages").len();
    assert_eq!(count, 30, "every answered send of the batch: {v}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
