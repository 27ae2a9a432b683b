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

/// Starts the binary with its store in `dir`; `chat:*` keeps history.
fn spawn(dir: &std::path::Path, io: &str) -> Node {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringhub"));
    cmd.args(["--listen", "127.0.0.1:0", "--shards", "2", "--io", io])
        .args(["--stats-interval", "0s", "--store", "redb", "--store-path"])
        .arg(dir)
        .env(
            "RINGHUB_TOPICS",
            r#"[{"pattern": "chat:*", "history_size": 100}]"#,
        )
        .env("RINGHUB_AUTH_JWT_SECRET", SECRET)
        .env("RINGHUB_AUTH_ANONYMOUS", "true")
        .env("RINGHUB_API_KEY", "k")
        .env("RINGHUB_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn ringhub");
    let addr = wait_listening(&mut child);
    Node { child, addr }
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

async fn survives_kill_9(io: &str) {
    let dir = std::env::temp_dir().join(format!(
        "ringhub-persist-{io}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let node = spawn(&dir, io);
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

    let node = spawn(&dir, io);
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
    let node = spawn(&dir, io);
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
    survives_kill_9("epoll").await;
}

#[tokio::test]
async fn survives_kill_9_uring() {
    if shell_available(ringhub::IoMode::Uring) {
        survives_kill_9("uring").await;
    }
}
