//! One publication fanned out to 10,000 local subscribers through the shard's real path
//! (`ShardState::deliver_local` / `publish`): registry lookup, per-connection de-duplication
//! stamp, queue bound check, `Bytes` clone into each connection's `VecDeque`, and the entry in
//! the shard's dirty list (the end-of-iteration corked flush).
//! No sockets: connections are registered with fd -1. Queues are emptied between iterations,
//! outside the timed part (capacity is kept, as when writers drain them).
//!
//! `cargo bench --bench fanout`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringhub::bench_support::BenchShard;

const SUBSCRIBERS: usize = 10_000;
const TOPIC: &str = "chat:room:1";

fn frame() -> Bytes {
    let data = br#"{"user":"alice","text":"the quick brown fox jumps over the lazy dog, again and again!"}"#;
    ringhub::envelope::publication(TOPIC, "message", Some(data))
}

/// A shard with `SUBSCRIBERS` connections on `TOPIC` (and, with `overlap`, also on `chat:*`, so
/// every connection is matched twice and de-duplicated).
fn shard(overlap: bool) -> BenchShard {
    let s = BenchShard::new(1);
    for _ in 0..SUBSCRIBERS {
        let id = s.register();
        assert!(s.subscribe(id, TOPIC));
        if overlap {
            assert!(s.subscribe(id, "chat:*"));
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let frame = frame();
    // (name, overlap, via publish)
    let cases: [(&str, bool, bool); 3] = [
        ("deliver_local", false, false),
        ("deliver_local_exact_plus_wildcard", true, false),
        ("publish_1_shard", false, true),
    ];
    for (name, overlap, via_publish) in cases {
        let s = shard(overlap);
        s.drain();
        g.bench_function(BenchmarkId::new(name, SUBSCRIBERS), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    if via_publish {
                        s.publish(black_box(TOPIC), frame.clone());
                    } else {
                        s.deliver_local(black_box(TOPIC), &frame);
                    }
                    spent += t.elapsed();
                    let delivered = s.drain();
                    assert_eq!(delivered, SUBSCRIBERS);
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
