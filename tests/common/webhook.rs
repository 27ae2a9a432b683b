//! Webhook tests' receiver: `tests/webhook/receiver.js`, a Node `http` server started by the
//! test, which verifies each request's signature on its own (Node's crypto, not ringhub's code)
//! and logs the accepted bodies; and the helpers that read what it logged.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringhub::config::WebhookConfig;
use serde_json::Value;

use super::{http_json, on_ci};

/// The webhook secret the receiver checks signatures with.
pub const SECRET: &str = "test-webhook-secret";
/// Deadline of [`until`]'s waits.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// What the receiver logged, across its restarts.
#[derive(Default)]
pub struct Log {
    /// Bodies of accepted requests.
    pub bodies: Vec<Value>,
    /// Requests it refused for their signature.
    pub bad: Vec<String>,
}

/// The running receiver, killed on drop.
pub struct Receiver {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<Log>>,
}

impl Receiver {
    /// Starts `node receiver.js` on `port` (0: any), logging into `log`.
    pub fn start(port: u16, log: Arc<Mutex<Log>>) -> Option<Receiver> {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Switches the receiver to answering 503 (`true`) or 204.
    pub fn failing(&self, on: bool) {
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
    pub fn events(&self) -> Vec<Value> {
        events_of(&self.log)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every event the receiver accepted, in arrival order (no request refused for its signature).
pub fn events_of(log: &Mutex<Log>) -> Vec<Value> {
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
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Webhooks to `url` with short retries (the `chat:*` publications included).
pub fn hooks(url: String) -> WebhookConfig {
    WebhookConfig {
        url: Some(url),
        secret: SECRET.into(),
        topics: vec!["chat:*".into()],
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..WebhookConfig::default()
    }
}

/// How many of `events` are of `kind` with `field` = `value`.
pub fn count(events: &[Value], kind: &str, field: &str, value: &str) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == kind && e[field] == value)
        .count()
}

/// Every event id once.
pub fn assert_unique_ids(events: &[Value]) {
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "duplicate ids in {events:?}");
}

/// `GET /api/v1/webhooks` of the node at `addr`.
pub fn status(addr: std::net::SocketAddr) -> Value {
    let (st, v) = http_json(addr, "GET", "/api/v1/webhooks", Some("k"), None);
    assert_eq!(st, 200, "{v}");
    v["data"].clone()
}
