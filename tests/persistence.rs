//! The binary on its default embedded store (redb): what was answered or seen survives
//! `kill -9`, and only a wiped store changes the epoch.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "persistence-test-secret-long-enough-for-hs256";

struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The store's sync policies under test: `always` (the default), and `interval` with an interval
/// longer than any test, so that nothing answered is synced before the `kill -9` (checkpoints
/// still commit the database every second).
const ALWAYS: &str = "always";
const INTERVAL: &str = "interval";

/// Starts the binary with its store in `dir` (sync policy `sync`); `chat:*` keeps history.
fn spawn_with(dir: &std::path::Path, io: &str, sync: &str) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringhub"));
    cmd.args(["--listen", "127.0.0.1:0", "--shards", "2", "--io", io])
        .args(["--stats-interval", "0s", "--store", "redb", "--store-path"])
        .arg(dir)
        .env(
            "RINGHUB_TOPICS",
            r#"[{"pattern": "chat:*", "history_size": 100},
                {"pattern": "load:*", "history_size": 100000}]"#,
        )
        .env("RINGHUB_AUTH_JWT_SECRET", SECRET)
        .env("RINGHUB_AUTH_ANONYMOUS", "true")
        .env("RINGHUB_API_KEY", "k")
        // Thousands of requests from one connection: the message rate limit is not under test.
        .env("RINGHUB_LIMITS_MESSAGES_PER_SECOND", "0")
        // The load test reads its topics' whole history back in one request.
        .env("RINGHUB_STORE_MAX_RECOVER", "100000")
        .env("RINGHUB_LOG_FORMAT", "text")
        .env("RINGHUB_STORE_SYNC", sync)
        .env("RINGHUB_STORE_SYNC_INTERVAL", "60s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn ringhub");
    let addr = wait_listening(&mut child);
    Node { child, addr }
}

/// [`spawn_with`] the default sync policy.
fn spawn(dir: &std::path::Path, io: &str) -> Node {
    spawn_with(dir, io, ALWAYS)
}

fn token(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn ws(addr: &str, query: &str) -> Ws {
    let url = format!("ws://{addr}/ws{query}");
    tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect")
        .0
}

fn kill9(mut n: Node) {
    // SIGKILL: no shutdown, no flush beyond what was committed.
    n.child.kill().expect("kill -9");
    let _ = n.child.wait();
}

async fn survives_kill_9(io: &str, sync: &str) {
    let dir = std::env::temp_dir().join(format!(
        "ringhub-persist-{io}-{sync}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let node = spawn_with(&dir, io, sync);
    let addr: std::net::SocketAddr = node.addr.parse().unwrap();
    // A durable send answered → kill -9 at once.
    let (st, v) = http_json(
        addr,
        "POST",
        "/api/v1/send",
        Some("k"),
        Some(&json!({"user": "zoe", "event": "note", "data": {"n": 1}, "durable": true})),
    );
    assert_eq!(st, 200, "{v}");
    // Publications a client saw.
    let mut a = ws(&node.addr, "").await;
    send(
        &mut a,
        json!({"event": "subscribe", "topic": "chat:k", "id": 1}),
    )
    .await;
    let epoch = recv(&mut a).await["data"]["epoch"].clone();
    for n in 1..=5 {
        send(&mut a, json!({"event": "m", "topic": "chat:k", "data": n})).await;
    }
    for n in 1..=5 {
        assert_eq!(recv(&mut a).await["offset"], n);
    }
    kill9(node);

    let node = spawn_with(&dir, io, sync);
    let mut z = ws(&node.addr, &format!("?token={}", token("zoe"))).await;
    let m = recv(&mut z).await;
    assert_eq!(m["topic"], "user:zoe", "{m}");
    assert_eq!(m["data"], json!({"n": 1}));
    assert_eq!(m["ack"], true);
    let mut b = ws(&node.addr, "").await;
    send(
        &mut b,
        json!({"event": "subscribe", "topic": "chat:k", "id": 2,
               "data": {"since": {"epoch": epoch, "offset": 2}}}),
    )
    .await;
    let r = recv(&mut b).await;
    assert_eq!(r["data"]["epoch"], epoch, "same epoch after kill -9: {r}");
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["publications"].as_array().unwrap().len(), 3);
    kill9(node);

    // A wiped store: a new epoch, and clients learn they cannot recover.
    std::fs::remove_dir_all(&dir).unwrap();
    let node = spawn_with(&dir, io, sync);
    let mut c = ws(&node.addr, "").await;
    send(
        &mut c,
        json!({"event": "subscribe", "topic": "chat:k", "id": 3,
               "data": {"since": {"epoch": epoch, "offset": 5}}}),
    )
    .await;
    let r: Value = recv(&mut c).await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_ne!(r["data"]["epoch"], epoch);
    assert_eq!(r["data"]["offset"], 0);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn survives_kill_9_epoll() {
    survives_kill_9("epoll", ALWAYS).await;
}

/// `[store] sync = "interval"`: what was answered is written, unsynced, and survives `kill -9`.
#[tokio::test]
async fn survives_kill_9_interval_sync() {
    survives_kill_9("epoll", INTERVAL).await;
}

#[tokio::test]
async fn survives_kill_9_uring() {
    if shell_available(ringhub::IoMode::Uring) {
        survives_kill_9("uring", ALWAYS).await;
    }
}

/// Publications answered to the publisher of one connection: (topic, offset, data sent).
type Answered = Vec<(String, u64, Value)>;

/// Publishes on `topic` with up to `depth` requests in flight until the connection breaks
/// (the server is killed), counting answers in `total`; `enough` fires once `total` reaches
/// `goal`. Returns every answered publication.
async fn publish_until_killed(
    addr: String,
    conn: u64,
    topic: String,
    depth: u64,
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
    goal: u64,
    enough: std::sync::Arc<tokio::sync::Notify>,
) -> Answered {
    use futures_util::{SinkExt, StreamExt};
    use std::sync::atomic::Ordering;
    use tokio_tungstenite::tungstenite::Message;
    let (mut tx, mut rx) = ws(&addr, "").await.split();
    let mut answered = Answered::new();
    let mut next = 1u64;
    let request = |n: u64| {
        let data = json!({"c": conn, "n": n});
        Message::Text(json!({"event": "m", "topic": topic, "id": n, "data": data}).to_string())
    };
    for _ in 0..depth {
        if tx.send(request(next)).await.is_err() {
            return answered;
        }
        next += 1;
    }
    // Bounded: the server is killed long before (the goal is a fraction of this).
    while next < 1_000_000 {
        let Some(Ok(Message::Text(t))) = rx.next().await else {
            return answered;
        };
        let v: Value = serde_json::from_str(&t).expect("JSON");
        if v["event"] != "reply" {
            continue;
        }
        let n = v["id"].as_u64().expect("reply id");
        let offset = v["data"]["offset"].as_u64().expect("reply offset");
        answered.push((topic.clone(), offset, json!({"c": conn, "n": n})));
        if total.fetch_add(1, Ordering::Relaxed) + 1 == goal {
            enough.notify_one();
        }
        if tx.send(request(next)).await.is_err() {
            return answered;
        }
        next += 1;
    }
    answered
}

/// Issue 20: `kill -9` while publications are in flight: every publication that was answered
/// (its reply carries the offset) is in the topic's history after the restart, with its data.
async fn answered_publications_survive_kill_9_under_load(io: &str, sync: &str) {
    let dir = temp_store(&format!("load-{io}-{sync}"));
    let node = spawn_with(&dir, io, sync);
    let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let enough = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for c in 0..4 {
        tasks.push(tokio::spawn(publish_until_killed(
            node.addr.clone(),
            c,
            format!("load:{}", c % 2),
            32,
            total.clone(),
            3000,
            enough.clone(),
        )));
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), enough.notified())
        .await
        .expect("3000 publications answered within a minute");
    kill9(node);
    let mut answered = Answered::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(answered.len() >= 3000, "{}", answered.len());

    let node = spawn_with(&dir, io, sync);
    let addr: std::net::SocketAddr = node.addr.parse().unwrap();
    for topic in ["load:0", "load:1"] {
        let (st, v) = http_json(
            addr,
            "POST",
            "/api/v1/history",
            Some("k"),
            Some(&json!({"topic": topic, "limit": 100000})),
        );
        assert_eq!(st, 200, "{v}");
        let stored: std::collections::HashMap<u64, Value> = v["data"]["publications"]
            .as_array()
            .expect("publications")
            .iter()
            .map(|p| (p["offset"].as_u64().unwrap(), p["data"].clone()))
            .collect();
        let mine: Vec<_> = answered.iter().filter(|a| a.0 == topic).collect();
        assert!(!mine.is_empty());
        for (_, offset, sent) in &mine {
            assert_eq!(
                stored.get(offset),
                Some(sent),
                "{topic}: answered offset {offset} lost or different after kill -9"
            );
        }
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn answered_publications_survive_kill_9_under_load_epoll() {
    answered_publications_survive_kill_9_under_load("epoll", ALWAYS).await;
}

/// The same with `[store] sync = "interval"` (no answered record synced before the kill).
#[tokio::test]
async fn answered_publications_survive_kill_9_under_load_interval_sync() {
    answered_publications_survive_kill_9_under_load("epoll", INTERVAL).await;
}

#[tokio::test]
async fn answered_publications_survive_kill_9_under_load_uring() {
    if shell_available(ringhub::IoMode::Uring) {
        answered_publications_survive_kill_9_under_load("uring", ALWAYS).await;
    }
}

fn temp_store(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ringhub-{what}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

/// Bytes of the store file in `dir`.
fn store_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("ringhub.redb")).unwrap().len()
}

/// Issue 21 (7): history requests and subscribe/unsubscribe pairs on never-published topics
/// grew the redb file without bound (20,000 history requests: 74 kB → 3.3 MB).
async fn reads_do_not_grow_the_store(io: &str) {
    let dir = temp_store("reads");
    let node = spawn(&dir, io);
    let mut a = ws(&node.addr, "").await;
    send(
        &mut a,
        json!({"event": "m", "topic": "chat:known", "id": 1, "data": 1}),
    )
    .await;
    assert_eq!(recv(&mut a).await["data"]["offset"], 1);
    let before = store_len(&dir);
    let mut epoch = None;
    for i in 0..1500u64 {
        let topic = format!("chat:never-{i}");
        let id = 10 + 3 * i;
        let r = request(
            &mut a,
            json!({"event": "history", "topic": topic, "id": id}),
        )
        .await;
        assert_eq!(r["data"]["offset"], 0, "{r}");
        if i == 0 {
            epoch = Some(r["data"]["epoch"].clone());
        }
        let r = request(
            &mut a,
            json!({"event": "subscribe", "topic": topic, "id": id + 1}),
        )
        .await;
        assert_eq!(r["data"]["offset"], 0, "{r}");
        request(
            &mut a,
            json!({"event": "unsubscribe", "topic": topic, "id": id + 2}),
        )
        .await;
    }
    assert_eq!(
        store_len(&dir),
        before,
        "read-only requests grew the store file"
    );
    // The first publication keeps the epoch the reads reported: a reader recovers across it.
    let r = request(
        &mut a,
        json!({"event": "m", "topic": "chat:never-0", "id": 9, "data": 2}),
    )
    .await;
    assert_eq!(r["data"]["offset"], 1, "{r}");
    let r = request(
        &mut a,
        json!({"event": "subscribe", "topic": "chat:never-0", "id": 8,
               "data": {"since": {"epoch": epoch.unwrap(), "offset": 0}}}),
    )
    .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn reads_do_not_grow_the_store_epoll() {
    reads_do_not_grow_the_store("epoll").await;
}

#[tokio::test]
async fn reads_do_not_grow_the_store_uring() {
    if shell_available(ringhub::IoMode::Uring) {
        reads_do_not_grow_the_store("uring").await;
    }
}

/// Issue 21 (5): a slightly damaged store file made the binary panic at start (exit 101; here
/// "page 2 filled" did, on the code before the fix).
fn damaged_store_is_a_clean_exit(io: &str) {
    const PAGE: usize = 4096;
    let dir = temp_store("damaged");
    {
        let mut node = spawn(&dir, io);
        let addr: std::net::SocketAddr = node.addr.parse().unwrap();
        let pad = "x".repeat(200);
        for n in 0..200 {
            let body = json!({"user": "zoe", "event": "note", "data": {"n": n, "pad": pad}, "durable": true});
            let (st, v) = http_json(addr, "POST", "/api/v1/send", Some("k"), Some(&body));
            assert_eq!(st, 200, "{v}");
            let topic = format!("chat:t{}", n % 7);
            let body = json!({"topic": topic, "event": "m", "data": {"n": n, "pad": pad}});
            let (st, v) = http_json(addr, "POST", "/api/v1/publish", Some("k"), Some(&body));
            assert_eq!(st, 200, "{v}");
        }
        // A clean stop: redb trusts a cleanly closed file's pages (after kill -9 it repairs
        // them on open, which hid the panic).
        // SAFETY: a plain syscall on our own child's pid.
        unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
        assert!(node.child.wait().unwrap().success(), "clean stop");
    }
    let file = dir.join("ringhub.redb");
    let good = std::fs::read(&file).unwrap();
    let mut refused = 0;
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 3] = [
        ("page 1 zeroed", |b| b[PAGE..2 * PAGE].fill(0)),
        ("page 2 filled", |b| b[2 * PAGE..3 * PAGE].fill(0xff)),
        ("second half zeroed", |b| {
            let n = b.len();
            b[n / 2..].fill(0);
        }),
    ];
    for (what, damage) in cases {
        let mut bytes = good.clone();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringhub"))
            .args(["--listen", "127.0.0.1:0", "--shards", "1", "--io", io])
            .args(["--stats-interval", "0s", "--store", "redb", "--store-path"])
            .arg(&dir)
            .env("RINGHUB_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ringhub");
        // It either exits or starts listening (redb repaired the damage): the log tells which.
        use std::io::{BufRead, Read};
        let log = std::io::BufReader::new(child.stdout.take().unwrap());
        let started = log
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("listening addr="));
        if started {
            eprintln!("{what}: repaired, started");
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        refused += 1;
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let code = child.wait().unwrap().code();
        assert_ne!(code, Some(101), "{what}: panicked: {err}");
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(
            err.contains("ringhub.redb"),
            "{what}: the error names the file: {err}"
        );
    }
    assert!(
        refused > 0,
        "every damage was repaired: the error path went untested"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_store_is_a_clean_exit_epoll() {
    damaged_store_is_a_clean_exit("epoll");
}

#[test]
fn damaged_store_is_a_clean_exit_uring() {
    if shell_available(ringhub::IoMode::Uring) {
        damaged_store_is_a_clean_exit("uring");
    }
}
