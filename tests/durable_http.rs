//! Durable sends served on the shard that read them (`POST /api/v1/send`, `"durable": true`):
//! many pipelined on one kept-alive connection are each answered once stored, in order, with
//! the delivery count summed over the shards; every answered one survives `kill -9`. The same
//! for a `POST /api/v1/batch` of durable sends (one answer, the results in order), and for runs
//! of pipelined sends served together (one store job, each answer as the send's alone).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use ringhub::hooks::{ConnectInfo, ConnectOutcome};
use ringhub::IoMode;
use serde_json::{json, Value};

/// A `POST` of `body` to `path` with API key `k`, kept alive.
fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A durable send to `user` with data `{"n": n}`.
fn send_req(user: &str, n: u64) -> String {
    let body = json!({"user": user, "event": "note", "data": {"n": n}, "durable": true});
    post("/api/v1/send", &body.to_string())
}

/// Writes `reqs` in one write on one connection, then reads one answer each, in order: the
/// whole answer as it came (head and body) and its status and JSON body.
fn pipelined(addr: SocketAddr, reqs: &[String]) -> Vec<(String, u16, Value)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD * 2)).unwrap();
    s.write_all(reqs.concat().as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    reqs.iter()
        .map(|_| {
            let mut raw = String::new();
            r.read_line(&mut raw).unwrap();
            let status = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                raw.push_str(&h);
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            raw.push_str(&String::from_utf8_lossy(&body));
            let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (raw, status, v)
        })
        .collect()
}

/// Writes `n` durable sends to `user` (data `{"n": first + i}`) in one write on one kept-alive
/// connection, then reads the `n` answers in order: (status, JSON body) each.
fn pipelined_sends(addr: SocketAddr, user: &str, first: u64, n: u64) -> Vec<(u16, Value)> {
    let reqs: Vec<String> = (0..n).map(|i| send_req(user, first + i)).collect();
    pipelined(addr, &reqs)
        .into_iter()
        .map(|(_, st, v)| (st, v))
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

/// A fresh store directory for a test named `tag`.
fn store_dir(tag: &str) -> std::path::PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!("ringhub-durable-{tag}-{}-{nanos}", std::process::id());
    std::env::temp_dir().join(name)
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
    let dir = store_dir(&format!("http-{sync}"));
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

/// The store's commits so far (`/metrics`).
fn commits(addr: SocketAddr) -> u64 {
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n".to_string();
    let (raw, st, _) = pipelined(addr, &[get]).remove(0);
    assert_eq!(st, 200, "{raw}");
    raw.lines()
        .find(|l| l.starts_with("ringhub_store_commits"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no store commits in {raw}"))
}

/// `alone` (a whole answer to a durable send) as it reads with message id `id` instead.
fn with_id(alone: &str, alone_id: u64, id: u64) -> String {
    let (head, body) = alone.split_once("\r\n\r\n").expect("head and body");
    let from = format!("\"message_id\":{alone_id},");
    assert!(body.contains(&from), "{body}");
    let body = body.replace(&from, &format!("\"message_id\":{id},"));
    let head: Vec<String> = head
        .split("\r\n")
        .map(
            |h| match h.to_ascii_lowercase().starts_with("content-length:") {
                true => format!("{}: {}", &h[..h.find(':').unwrap_or(0)], body.len()),
                false => h.to_string(),
            },
        )
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n"))
}

/// The offsets in `user`'s inbox.
fn inbox(addr: SocketAddr, user: &str) -> Vec<u64> {
    let path = format!("/api/v1/inbox?user={user}");
    let (st, v) = http_json(addr, "GET", &path, Some("k"), None);
    assert_eq!(st, 200, "{v}");
    let messages = v["data"]["messages"].as_array().expect("messages");
    messages
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect()
}

/// Durable sends pipelined in one write are served together: each answer is, byte for byte,
/// the one a send gets alone, in request order, with fewer commits than sends. A run stops at
/// a request that is not such a send (a publish, a bad body, an invalid user), which is
/// answered in its place, and the sends after it are served as well; every answered send
/// survives `kill -9`.
#[test]
fn pipelined_durable_sends_are_served_together() {
    let dir = store_dir("pipe");
    let node = spawn(&dir, "always");
    let addr = node.1;
    let (alone, st, v) = pipelined(addr, &[send_req("solo", 0)]).remove(0);
    assert_eq!(st, 200, "{alone}");
    let alone_id = v["data"]["message_id"].as_u64().expect("an id");

    // Twenty offline users, one send each: offset 1, delivered 0, like "solo"'s.
    let before = commits(addr);
    let reqs: Vec<String> = (1..=20).map(|i| send_req(&format!("p{i}"), i)).collect();
    let answers = pipelined(addr, &reqs);
    let mut last = alone_id;
    for (raw, st, v) in &answers {
        assert_eq!(*st, 200, "{raw}");
        let id = v["data"]["message_id"].as_u64().expect("an id");
        assert!(id > last, "in request order: {raw}");
        last = id;
        assert_eq!(*raw, with_id(&alone, alone_id, id), "as a send alone");
    }
    let used = commits(addr) - before;
    assert!(used < 20, "{used} commits for 20 pipelined sends");

    // A mix: a run of two, a publish, a bad body, a run of two.
    let publish = json!({"topic": "news", "event": "e", "data": 1}).to_string();
    let bad = json!({"user": "mix", "durable": true}).to_string();
    let reqs = [
        send_req("mix", 1),
        send_req("mix", 2),
        post("/api/v1/publish", &publish),
        post("/api/v1/send", &bad),
        send_req("mix", 3),
        send_req("mix", 4),
    ];
    let answers = pipelined(addr, &reqs);
    let statuses: Vec<u16> = answers.iter().map(|a| a.1).collect();
    assert_eq!(statuses, [200, 200, 200, 400, 200, 200], "{answers:?}");
    assert_eq!(answers[2].2["success"], true, "the publish: {answers:?}");
    assert_eq!(answers[3].2["success"], false, "the bad body: {answers:?}");
    for (i, a) in [0, 1, 4, 5].into_iter().enumerate() {
        assert_eq!(answers[a].2["data"]["offset"], i as u64 + 1, "{answers:?}");
    }

    // An invalid user in a run: its error in its place, the sends around it stored.
    let reqs = [
        send_req("odd", 1),
        send_req("odd", 2),
        send_req("not*valid", 0),
        send_req("odd", 3),
    ];
    let answers = pipelined(addr, &reqs);
    let statuses: Vec<u16> = answers.iter().map(|a| a.1).collect();
    assert_eq!(statuses, [200, 200, 400, 200], "{answers:?}");
    let why = answers[2].2["error"].as_str().unwrap_or_default();
    assert!(why.contains("invalid_user"), "{answers:?}");
    assert_eq!(answers[3].2["data"]["offset"], 3, "{answers:?}");
    drop(node); // SIGKILL: nothing beyond what was committed.

    let node = spawn(&dir, "always");
    for i in 1..=20 {
        assert_eq!(inbox(node.1, &format!("p{i}")), [1], "p{i}");
    }
    assert_eq!(inbox(node.1, "mix"), [1, 2, 3, 4]);
    assert_eq!(inbox(node.1, "odd"), [1, 2, 3]);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
