//! Webhook throughput (issue 18): client publications on a `[webhooks] topics` pattern become
//! `publication` events, stored in the redb outbox (fsync per store batch), signed and posted in
//! batches to `tests/webhook/receiver.js` (Node, verifying every signature). Prints the rate
//! at which events reached the receiver while the clients kept publishing.
//!
//! `cargo run --release --example webhook_bench -- [events] [connections] [batch_size]`
//! (defaults 200000, 4, 100); `scripts/webhook-bench.sh` runs it three times.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use ringhub::config::{Config, StoreBackend, WebhookConfig};
use ringhub::{IoMode, RingHub};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "bench-secret";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let conns: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);

    // The receiver.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook/receiver.js");
    let mut node = Command::new("node")
        .arg(script)
        .env("SECRET", SECRET)
        .env("QUIET", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut lines = std::io::BufReader::new(node.stdout.take().unwrap()).lines();
    let port: u16 = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.strip_prefix("listening ")?.parse().ok())
        .expect("receiver port");
    let received = Arc::new(AtomicU64::new(0));
    let first_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    {
        let (received, first_at) = (received.clone(), first_at.clone());
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if let Some(n) = l.strip_prefix("N ").and_then(|n| n.parse::<u64>().ok()) {
                    first_at.lock().unwrap().get_or_insert_with(Instant::now);
                    received.fetch_add(n, Ordering::Relaxed);
                } else {
                    eprintln!("receiver: {l}");
                }
            }
        });
    }

    // The server: redb outbox in a fresh directory.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        webhooks: WebhookConfig {
            url: Some(format!("http://127.0.0.1:{port}/hook")),
            secret: SECRET.into(),
            topics: vec!["bench:*".into()],
            batch_size: batch,
            ..WebhookConfig::default()
        },
        ..Config::default()
    };
    cfg.store.backend = StoreBackend::Redb;
    cfg.store.path = dir.path().to_path_buf();
    let h = RingHub::builder()
        .config(cfg)
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(2)
        .io(IoMode::Auto)
        .api_key("k")
        .pubsub()
        .build()
        .unwrap()
        .start()
        .expect("server");
    let addr = h.local_addr();

    // The publishers: no request ids (no replies), as fast as the socket takes them.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let n = total / conns + u64::from(c < total % conns);
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .expect("connect");
            for i in 0..n {
                let m = format!(
                    "{{\"topic\":\"bench:{c}\",\"event\":\"m\",\"data\":{{\"i\":{i},\"pad\":\"0123456789abcdef\"}}}}"
                );
                ws.feed(Message::Text(m)).await.expect("send");
                if i % 64 == 63 {
                    ws.flush().await.expect("flush");
                }
            }
            ws.flush().await.expect("flush");
            ws
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.unwrap());
    }
    let produced = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while received.load(Ordering::Relaxed) < total {
        assert!(Instant::now() < deadline, "events missing after 5 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let first = first_at.lock().unwrap().expect("some event");
    let status = status(addr);
    let delivered = done - first;
    let rate = total as f64 / delivered.as_secs_f64();
    let end_to_end = total as f64 / (done - started).as_secs_f64();
    println!(
        "events={total} connections={conns} batch_size={batch} published_in={:.2}s \
         delivered_rate={rate:.0}/s (first to last event at the receiver) \
         end_to_end_rate={end_to_end:.0}/s status={status}",
        produced.as_secs_f64()
    );
    drop(keep);
    h.shutdown();
    h.join();
    let _ = node.kill();
    let _ = node.wait();
}

/// `GET /api/v1/webhooks`'s `data`, compacted.
fn status(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(
        b"GET /api/v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str::<serde_json::Value>(body)
        .map(|v| v["data"].to_string())
        .unwrap_or_default()
}
