//! Cross-shard delivery: one producer thread publishes to N shard inboxes (N = 1, 2, 4), each
//! drained by its own consumer thread that waits exactly as a shard's loop does (`pop` until
//! empty, re-arm the wake-up, sleep on the inbox's eventfd, which a producer writes at most once
//! per batch). One iteration is one publication pushed to every one of the N inboxes (a
//! `ShardMsg::Publish` with clones of the shared topic and frame); the clock stops once every
//! consumer has popped everything.
//!
//! `cargo bench --bench cross_shard`

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringhub::bench_support::BenchInbox;

struct Rig {
    inboxes: Vec<Arc<BenchInbox>>,
    consumed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Rig {
    fn new(n: usize) -> Self {
        let consumed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut inboxes = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let inbox = Arc::new(BenchInbox::new());
            inboxes.push(inbox.clone());
            let (consumed, stop) = (consumed.clone(), stop.clone());
            let t = thread::Builder::new()
                .name(format!("bench-shard-{i}"))
                .spawn(move || loop {
                    let mut n = 0;
                    while inbox.pop() {
                        n += 1;
                    }
                    if n > 0 {
                        consumed.fetch_add(n, Ordering::Release);
                    }
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    if inbox.arm() {
                        inbox.wait(10);
                    }
                })
                .expect("spawn consumer");
            threads.push(t);
        }
        Rig {
            inboxes,
            consumed,
            stop,
            threads,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().expect("consumer");
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_shard");
    let topic: Arc<str> = "chat:room:1".into();
    let frame: Bytes =
        ringhub::envelope::publication(&topic, "message", Some(br#"{"text":"hello"}"#));
    for n in [1usize, 2, 4] {
        let rig = Rig::new(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("publish_to_inboxes", n), |b| {
            b.iter_custom(|iters| {
                let target = rig.consumed.load(Ordering::Acquire) + iters * n as u64;
                let start = Instant::now();
                for _ in 0..iters {
                    for inbox in &rig.inboxes {
                        inbox.push_publish(&topic, &frame);
                    }
                }
                while rig.consumed.load(Ordering::Acquire) < target {
                    thread::yield_now();
                }
                start.elapsed()
            })
        });
        rig.stop();
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
