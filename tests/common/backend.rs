//! The example application backend (`examples/backend/server.js`, Node's `http`) as a child
//! process on a free port: the proxies' tests talk to a real backend, not a mock.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// A running backend; killed on drop.
pub struct Backend {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Lines it printed after `listening` (e.g. `stalled 1`).
    lines: Receiver<String>,
}

impl Backend {
    /// Starts `node examples/backend/server.js --port 0` and waits for its `listening` line.
    pub fn start() -> Backend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backend/server.js");
        let mut child = Command::new("node")
            .args([script, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js 20) must be installed to run the proxy tests");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .expect("backend exited before listening")
            .expect("read backend output");
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected backend output {first:?}"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Backend {
            child,
            port,
            lines: rx,
        }
    }

    /// The URL of one of its routes (`/connect`, `/subscribe`, ...).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for the next line it prints (a guard against a hang, not a timing assertion).
    pub fn next_line(&self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("backend printed nothing"),
            Err(RecvTimeoutError::Disconnected) => panic!("backend exited"),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A URL on which nothing listens (a port bound, then released).
pub fn dead_url(path: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}{path}")
}
