//! Issue 21, item 6, at the server: the binary's redb store on a small real filesystem that
//! fills up. Writes are answered `not_available` (503), `/readyz` fails naming the store, and
//! once space returns the server recovers by itself — readiness 200 and publishes stored again,
//! no restart. Needs root to mount a tmpfs; skipped with a note elsewhere.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ringhub::IoMode;
use serde_json::{json, Value};

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The binary, killed on drop.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(store: &Path, io: IoMode) -> (Node, SocketAddr) {
    let io = match io {
        IoMode::Uring => "uring",
        _ => "epoll",
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .args(["--listen", "127.0.0.1:0", "--shards", "2", "--io", io])
        .args(["--stats-interval", "0s", "--store", "redb", "--store-path"])
        .arg(store)
        .env(
            "RINGHUB_TOPICS",
            r#"[{"pattern": "chat:*", "history_size": 100000}]"#,
        )
        .env("RINGHUB_AUTH_ANONYMOUS", "true")
        .env("RINGHUB_API_KEY", "k")
        // Hundreds of publications from one connection: the message rate limit is not under test.
        .env("RINGHUB_LIMITS_MESSAGES_PER_SECOND", "0")
        .env("RINGHUB_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ringhub");
    let addr = wait_listening(&mut child).parse().unwrap();
    (Node(child), addr)
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    http_json(addr, "POST", path, Some("k"), Some(&body))
}

/// Writes `body` to `path` until one is refused: each answer is 200 or `not_available` (503),
/// never an `internal` 500. Returns the refusal.
fn until_refused(addr: SocketAddr, path: &str, body: &Value) -> Value {
    for _ in 0..400 {
        let (st, v) = post(addr, path, body.clone());
        if st == 200 {
            continue;
        }
        assert_eq!(st, 503, "{path} on a full disk: {v}");
        assert_eq!(v["code"], "not_available", "{path} on a full disk: {v}");
        return v;
    }
    panic!("{path}: the disk never filled");
}

/// Polls until `cond` holds (a reopen is retried with backoff: 0.5 s doubling).
fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

async fn a_full_disk_fails_readiness_and_the_server_recovers_when_space_returns(io: IoMode) {
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = SmallDisk::mount(dir.path(), "4m") else {
        eprintln!("note: SKIPPED a_full_disk_…: cannot mount a tmpfs (not root?)");
        return;
    };
    let store = dir.path().join("store");
    let (_node, addr) = spawn(&store, io);
    let publish = |data: Value| json!({"topic": "chat:full", "event": "m", "data": data});
    let (st, v) = post(addr, "/api/v1/publish", publish(json!(1)));
    assert_eq!((st, &v["data"]["offset"]), (200, &json!(1)), "{v}");
    assert_eq!(http_json(addr, "GET", "/readyz", None, None).0, 200);

    // Fill what is left of the filesystem with a file the test can delete later.
    let filler = dir.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 16 * 1024]).is_ok() {}
    }
    let big = json!("7".repeat(48 * 1024));
    let v = until_refused(addr, "/api/v1/publish", &publish(big.clone()));
    assert!(v["error"].to_string().contains("store unavailable"), "{v}");
    let durable = json!({"user": "zoe", "event": "note", "data": big, "durable": true});
    let v = until_refused(addr, "/api/v1/send", &durable);
    assert!(v["error"].to_string().contains("store unavailable"), "{v}");
    // A WebSocket publish is refused with the documented code.
    let mut ws = connect_addr(addr, "/ws").await;
    let mut refused = None;
    for id in 1..400 {
        let r = request(
            &mut ws,
            json!({"event": "m", "topic": "chat:full", "data": big, "id": id}),
        )
        .await;
        if r["event"] == "error" {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the disk never filled");
    assert_eq!(r["data"]["code"], "not_available", "{r}");
    let (st, v) = http_json(addr, "GET", "/readyz", None, None);
    assert_eq!(st, 503, "{v}");
    let why = v["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("store") && why.contains(&store.display().to_string()),
        "readiness names the store fault: {v}"
    );

    // Space returns: no restart, the store reopens by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        || http_json(addr, "GET", "/readyz", None, None).0 == 200,
        "ready again",
    );
    let (st, v) = post(addr, "/api/v1/publish", publish(json!(2)));
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        addr,
        "/api/v1/send",
        json!({"user": "zoe", "event": "note", "data": 2, "durable": true}),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = post(
        addr,
        "/api/v1/history",
        json!({"topic": "chat:full", "limit": 1}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["publications"][0]["data"], 2, "{v}");
}
per_shell!(async fn a_full_disk_fails_readiness_and_the_server_recovers_when_space_returns);
