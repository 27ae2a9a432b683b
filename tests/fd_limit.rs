//! At the process's descriptor limit the server answers new clients `503` (through its reserve
//! descriptor) instead of leaving them hanging in the backlog, and recovers once descriptors free
//! up. The server runs as a child process with a small `RLIMIT_NOFILE`, on each shell.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::wait_listening;

/// Descriptors the child may open.
const LIMIT: u64 = 48;

fn spawn(io: &str) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringhub"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--io",
        io,
        "--store",
        "memory",
    ])
    .args(["--stats-interval", "0s"])
    .env("RINGHUB_LIMITS_MAX_CONNECTIONS", "0")
    .env("RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP", "0")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn ringhub");
    let addr = wait_listening(&mut child);
    (child, addr)
}

/// Sends a request and returns what the server answered before closing.
fn ask(addr: &str, req: &str) -> String {
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        // Possible while the server is at its limit and its backlog is full.
        Err(e) => return format!("connect failed: {e}"),
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn at_the_limit(io: &str) {
    let (mut child, addr) = spawn(io);
    // Silent clients hold descriptors until the server runs out.
    let held: Vec<TcpStream> = (0..LIMIT as usize + 16)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let answer = ask(
        &addr,
        "GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("descriptor limit"),
        "{io}: a client past the limit is answered: {answer:?}"
    );
    drop(held);
    // Descriptors free up as the server sees the silent clients go: it serves again. Each try
    // gets an answer (503 while it still sheds), so this loop is bounded by answers, not time.
    let ok = (0..200).any(|_| {
        ask(
            &addr,
            "GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
    });
    assert!(ok, "{io}: serves again after descriptors free up");
    child.kill().ok();
    child.wait().ok();
}

#[test]
fn past_the_fd_limit_clients_get_503_uring() {
    at_the_limit("uring");
}

#[test]
fn past_the_fd_limit_clients_get_503_epoll() {
    at_the_limit("epoll");
}
