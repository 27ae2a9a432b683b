//! Store throughput, per publication or message:
//! - `memory/append_batch_1000`: 1,000 appends of 64-byte data spread over 10 topics (history
//!   size 1,000, so the rings trim in steady state);
//! - `redb/append_batch_1000_commit`: the same 1,000 appends, then one group commit (fsync);
//! - `redb/append_1_commit`: one append and its commit, the cost of an fsync per publication;
//! - `redb/inbox_put_batch_100_commit`: 100 `inbox_put`s over 100 users (inboxes capped at 100,
//!   so older messages are dropped in steady state), then one commit;
//! - `redis/append_64_one_by_one` and `redis/append_batch_64`: 64 appends over the 10 topics to
//!   a local `redis-server` (started by the bench on a free port, no persistence), one round
//!   trip each vs one pipelined `append_batch` (skipped with a note without `redis-server`).
//!
//! `cargo bench --bench store` (redb writes under the system temp directory).

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringhub::store::memory::MemoryStore;
use ringhub::store::redb::RedbStore;
use ringhub::store::redis::RedisStore;
use ringhub::store::{AppendReq, HistoryLimits, InboxLimits, NewMessage, Store};

const DATA: [u8; 64] = [b'7'; 64];

fn topics() -> Vec<String> {
    (0..10).map(|n| format!("chat:room:{n}")).collect()
}

fn limits() -> HistoryLimits {
    HistoryLimits {
        size: 1000,
        ttl: Duration::ZERO,
    }
}

fn append_batch(s: &mut dyn Store, topics: &[String], now: &mut u64) {
    for i in 0..1000 {
        *now += 1;
        let t = &topics[i % topics.len()];
        black_box(
            s.append(t, limits(), "message", Some(&DATA), *now)
                .expect("append"),
        );
    }
}

fn bench(c: &mut Criterion) {
    let topics = topics();
    let mut now = 1_700_000_000_000u64;

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1000));
    let mut mem = MemoryStore::new();
    g.bench_function("memory/append_batch_1000", |b| {
        b.iter(|| append_batch(&mut mem, &topics, &mut now))
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let mut redb = RedbStore::open(dir.path()).expect("open redb");
    g.bench_function("redb/append_batch_1000_commit", |b| {
        b.iter(|| {
            append_batch(&mut redb, &topics, &mut now);
            redb.commit().expect("commit");
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("redb/append_1_commit", |b| {
        b.iter(|| {
            now += 1;
            black_box(
                redb.append(&topics[0], limits(), "message", Some(&DATA), now)
                    .expect("append"),
            );
            redb.commit().expect("commit");
        })
    });

    let users: Vec<String> = (0..100).map(|n| format!("user-{n}")).collect();
    let inbox = InboxLimits {
        max_messages: 100,
        ttl: Duration::from_secs(3600),
    };
    g.throughput(Throughput::Elements(100));
    g.bench_function("redb/inbox_put_batch_100_commit", |b| {
        b.iter(|| {
            for u in &users {
                now += 1;
                let msg = NewMessage {
                    topic: None,
                    event: "notice",
                    data: Some(&DATA),
                };
                black_box(redb.inbox_put(u, msg, inbox, now).expect("put"));
            }
            redb.commit().expect("commit");
        })
    });
    redis(&mut g, &topics, &mut now);
    g.finish();
}

/// A `redis-server` of the bench, killed on drop.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A store on a fresh local `redis-server`, or `None` (after a note) without one.
fn redis_store() -> Option<(Server, RedisStore)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("note: redis-server not installed: the redis store benches are skipped");
        return None;
    };
    let server = Server(child);
    let urls = [format!("redis://127.0.0.1:{port}/")];
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RedisStore::connect(&urls, "bench", "b1") {
            Ok(s) => return Some((server, s)),
            Err(e) if std::time::Instant::now() > until => panic!("redis-server: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn redis(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    topics: &[String],
    now: &mut u64,
) {
    let Some((_server, mut s)) = redis_store() else {
        return;
    };
    g.throughput(Throughput::Elements(64));
    g.bench_function("redis/append_64_one_by_one", |b| {
        b.iter(|| {
            for i in 0..64 {
                *now += 1;
                let t = &topics[i % topics.len()];
                black_box(
                    s.append(t, limits(), "message", Some(&DATA), *now)
                        .expect("append"),
                );
            }
        })
    });
    let reqs: Vec<AppendReq<'_>> = (0..64)
        .map(|i| AppendReq {
            topic: &topics[i % topics.len()],
            limits: limits(),
            event: "message",
            data: Some(&DATA),
            exclude: 0,
        })
        .collect();
    g.bench_function("redis/append_batch_64", |b| {
        b.iter(|| {
            *now += 1;
            for r in s.append_batch(&reqs, *now) {
                black_box(r.expect("append"));
            }
        })
    });
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
