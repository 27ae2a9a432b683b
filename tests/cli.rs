//! The binary as a new user meets it: a second server in the same directory, `ringhub token`,
//! flags after `check-config FILE`, `--port`, and a misspelled environment variable.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::wait_listening;
use jsonwebtoken::{decode, DecodingKey, Validation};
use ringhub::IoMode;
use serde_json::Value;

const SECRET: &str = "cli-test-secret-long-enough-for-hs256-0123";

/// The binary with a clean `RINGHUB_*` environment (the test runner's own may carry some).
fn ringhub() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringhub"));
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("RINGHUB_")) {
            cmd.env_remove(k);
        }
    }
    cmd
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server in `dir` (its default store `./ringhub-data` is then there).
fn serve(dir: &Path, io: &str, env: &[(&str, &str)]) -> (Server, String) {
    let mut cmd = ringhub();
    cmd.current_dir(dir)
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--io", io])
        .args(["--stats-interval", "0s"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn ringhub");
    let addr = wait_listening(&mut child);
    (Server(child), addr)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn io_name(io: IoMode) -> &'static str {
    match io {
        IoMode::Uring => "uring",
        _ => "epoll",
    }
}

fn second_server_in_the_same_directory_names_the_fix(io: IoMode) {
    let io = io_name(io);
    let dir = tempfile::tempdir().unwrap();
    let (_first, _) = serve(dir.path(), io, &[]);
    let out: Output = ringhub()
        .current_dir(dir.path())
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--io", io])
        .args(["--stats-interval", "0s"])
        .stdin(Stdio::null())
        .output()
        .expect("run ringhub");
    assert!(!out.status.success(), "the second server must not start");
    let err = text(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
    assert!(
        err.contains("--store-path DIR") && err.contains("--store memory"),
        "the error names both ways out: {err}"
    );
}

per_shell!(fn second_server_in_the_same_directory_names_the_fix);

/// The status line of an upgrade to `/ws?token=...`.
fn upgrade_status(addr: &str, token: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 256];
    let n = common::read_some(&mut s, &mut buf);
    text(&buf[..n]).lines().next().unwrap_or("").to_string()
}

fn token_is_accepted_by_the_server(io: IoMode) {
    let io = io_name(io);
    // The secret from the environment, as the server reads it.
    let out = ringhub()
        .args(["token", "--sub", "alice", "--ttl", "10m"])
        .args(["--claims", r#"{"subscribe":["chat:*"]}"#])
        .env("RINGHUB_AUTH_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let claims: Value = decode(
        &token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &Validation::default(),
    )
    .expect("an HS256 token signed with the secret")
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["subscribe"][0], "chat:*");
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 600);

    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RINGHUB_AUTH_JWT_SECRET", SECRET),
        ("RINGHUB_STORE_BACKEND", "memory"),
    ];
    let (_server, addr) = serve(dir.path(), io, &env);
    assert!(
        upgrade_status(&addr, &token).contains(" 101 "),
        "the minted token is accepted"
    );
    // Signed with another secret (`--secret` wins over the configuration): refused.
    let out = ringhub()
        .args(["token", "--sub", "alice", "--secret", "another-secret"])
        .env("RINGHUB_AUTH_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let other = text(&out.stdout).trim().to_string();
    assert!(upgrade_status(&addr, &other).contains(" 401 "));
}

per_shell!(fn token_is_accepted_by_the_server);

#[test]
fn token_without_a_secret_says_where_to_put_one() {
    let out = ringhub()
        .args(["token", "--sub", "alice"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("--secret") && err.contains("RINGHUB_AUTH_JWT_SECRET"),
        "{err}"
    );
    let out = ringhub()
        .args(["token", "--secret", "s", "--claims", "[1]"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--claims must be a JSON object"));
}

#[test]
fn check_config_takes_the_flags_after_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringhub.toml");
    std::fs::write(&file, "shards = 2\n").unwrap();
    let out = ringhub()
        .arg("check-config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:9999", "--shards", "3", "--no-pin"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:9999\"\n"), "{shown}");
    assert!(shown.contains("shards = 3\n"), "{shown}");
    assert!(shown.contains("pin_cores = false\n"), "{shown}");
    // And an invalid flag value there is an error, as before the file.
    let out = ringhub()
        .arg("check-config")
        .arg(&file)
        .args(["--shards", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--shards"));
}

#[test]
fn port_flag_points_to_listen() {
    let out = ringhub().args(["--port", "9000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--listen 0.0.0.0:9000"), "{err}");
}

#[test]
fn misspelled_variable_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringhub.toml");
    std::fs::write(&file, "").unwrap();
    let out = ringhub()
        .arg("check-config")
        .arg(&file)
        .env("RINGHUB_API_KYE", "secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "RINGHUB_API_KYE is not a setting and is ignored (did you mean RINGHUB_API_KEY?)"
        ),
        "{err}"
    );
}
