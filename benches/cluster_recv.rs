//! The cluster thread's receive path per received publication: the bytes a Redis subscriber
//! connection delivers (`message` frames, byte for byte as redis-server writes them — see the
//! `generated_frames_match_redis_server` check in `tests/cluster_recv.rs`) cut into 64 KiB
//! reads at arbitrary frame boundaries, decoded and handed to the shards' inboxes; the shards'
//! side (popping the batches) is inside the measured time too. One iteration is 4,096
//! publications from another node.
//!
//! - `fanin/…`: this branch's path (RESP frames and the wire format decoded in place, one
//!   inbox push per shard per read);
//! - `redis_msg/…`: the path before, in the same process: the `redis` crate's parser builds a
//!   `Value` and a `redis::Msg` per frame, one channel send each, then one `ShardMsg::Publish`
//!   push per message per shard.
//!
//! Cases: shards × topics × payload bytes (each topic wanted by one shard); and `stored/…`:
//! publications on a topic with history as the Redis store's append script publishes them, one
//! cluster message per publication (`b1`, what a script call of one publication sends) or 64
//! per message (`b64`, a call of 64), decoded by this branch's path: 20,480 publications per
//! iteration (320 messages of 64 — more than the de-duplication window of 256 messages, so the
//! next iteration's replay of the same sequence numbers is not taken for repeats).
//!
//! `cargo bench --bench cluster_recv`

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringhub::bench_support::cluster::{resp_publications, resp_stored, RecvBench};

const N: usize = 4096;
const READ: usize = 64 << 10;
/// Stored publications per iteration of the `stored/…` cases.
const STORED: usize = 64 * 320;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cluster_recv");
    g.throughput(Throughput::Elements(N as u64));
    let topics_all = [
        "chat:0", "chat:1", "chat:2", "chat:3", "chat:4", "chat:5", "chat:6", "chat:7",
    ];
    for (shards, topics, payload) in [(1, 1, 64), (4, 8, 64), (1, 1, 1024)] {
        let topics = &topics_all[..topics];
        let stream = resp_publications("n2", 1, N, topics, payload);
        let id = format!("s{shards}_t{}_p{payload}", topics.len());
        let mut rx = RecvBench::new(shards, topics);
        g.bench_function(BenchmarkId::new("fanin", &id), |b| {
            b.iter(|| {
                for chunk in stream.chunks(READ) {
                    rx.read(chunk);
                }
                assert_eq!(rx.drain(), N);
            })
        });
        let mut rx = RecvBench::new(shards, topics);
        g.bench_function(BenchmarkId::new("redis_msg", &id), |b| {
            b.iter(|| {
                for chunk in stream.chunks(READ) {
                    rx.read_via_redis_msg(chunk);
                }
                assert_eq!(rx.drain(), N);
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("cluster_recv");
    g.throughput(Throughput::Elements(STORED as u64));
    for per in [1, 64] {
        let stream = resp_stored("n2~s", STORED, "chat:0", 64, per);
        let mut rx = RecvBench::new(1, &["chat:0"]);
        g.bench_function(
            BenchmarkId::new("stored", format!("s1_t1_p64_b{per}")),
            |b| {
                b.iter(|| {
                    for chunk in stream.chunks(READ) {
                        rx.read(chunk);
                    }
                    assert_eq!(rx.drain(), STORED);
                })
            },
        );
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
