//! Store throughput, per publication or message:
//! - `memory/append_batch_1000`: 1,000 appends of 64-byte data spread over 10 topics (history
//!   size 1,000, so the rings trim in steady state);
//! - `redb/append_batch_1000_commit`: the same 1,000 appends, then one group commit (fsync);
//! - `redb/append_1_commit`: one append and its commit, the cost of an fsync per publication;
//! - `redb/inbox_put_batch_100_commit`: 100 `inbox_put`s over 100 users (inboxes capped at 100,
//!   so older messages are dropped in steady state), then one commit.
//!
//! `cargo bench --bench store` (redb writes under the system temp directory).

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringhub::store::memory::MemoryStore;
use ringhub::store::redb::RedbStore;
use ringhub::store::{HistoryLimits, InboxLimits, NewMessage, Store};

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
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
