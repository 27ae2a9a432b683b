//! The engine-v2 hot path without sockets, through the real shard code:
//!
//! - `ring_to_queues`: one publish frame as a shell hands it over (masked bytes in a receive
//!   buffer) → unmask in place, envelope parse, route, encode once, fan out to N local
//!   subscribers' queues and the dirty list. Queues are emptied outside the timed part.
//! - `stored_to_queues`: the same with `id` set (the publisher is answered), on a topic without
//!   history and on one with history on the owner shard (`history`, `hist:room`: append to the
//!   ring, frame with its offset, the offset reply). `nohist` publishes to `nohi:room`, a topic
//!   of the same length without history, so `history` ÷ `nohist` is the price of history alone;
//!   `plain` keeps the older baseline `room` (four bytes shorter: part of `history` ÷ `plain` is
//!   the longer topic's parse, escaping and comparisons, not history). `*_noid` publish without
//!   `id` (no reply), as the load generator does.
//! - `corked_send`: building one connection's send — iovecs over K queued shared frames — and
//!   acknowledging it (queue advance, counters), as a shell does around one `sendmsg`.
//!
//! `cargo bench --bench hot_path`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringhub::bench_support::BenchShard;

/// A masked client text frame.
fn masked(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x81];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Feeds `publish` to the shard `iters` times, timing only the input (unmask, parse, route,
/// fan out); every round must queue `queued` frames, emptied outside the timed part.
fn timed_input(
    s: &BenchShard,
    publisher: ringhub::ConnId,
    publish: &[u8],
    iters: u64,
    queued: usize,
) -> Duration {
    let mut buf = publish.to_vec();
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        buf.copy_from_slice(publish);
        let t = Instant::now();
        s.input(publisher, black_box(&mut buf));
        spent += t.elapsed();
        assert_eq!(s.drain(), queued);
    }
    spent
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_path");
    let publish = masked(br#"{"topic":"room","event":"m","data":"0123456789012345678901234567890123456789012345678901234567890123"}"#);
    for subs in [1usize, 100, 1000] {
        let s = BenchShard::new_pubsub(1);
        let publisher = s.register();
        for _ in 0..subs {
            let id = s.register();
            assert!(s.subscribe(id, "room"));
        }
        s.drain();
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(BenchmarkId::new("ring_to_queues", subs), |b| {
            b.iter_custom(|iters| timed_input(&s, publisher, &publish, iters, subs))
        });
    }
    // `plain`/`nohist`/`history`: with `id` (the reply is queued too); `*_noid`: without, as
    // the load generator publishes (`ringhub-loadtest fanout`). `nohi:room` and `hist:room` are
    // the same length (`plain`'s `room`, the older baseline, is shorter).
    for (name, topic, id) in [
        ("plain", "room", true),
        ("nohist", "nohi:room", true),
        ("history", "hist:room", true),
        ("plain_noid", "room", false),
        ("nohist_noid", "nohi:room", false),
        ("history_noid", "hist:room", false),
    ] {
        let s = BenchShard::new_history(1, "hist:*", 100);
        let publisher = s.register();
        let subscriber = s.register();
        assert!(s.subscribe(subscriber, topic));
        s.drain();
        let id_field = if id { r#""id":1,"# } else { "" };
        let publish = masked(
            format!(r#"{{"topic":"{topic}","event":"m",{id_field}"data":"0123456789012345678901234567890123456789012345678901234567890123"}}"#)
                .as_bytes(),
        );
        g.throughput(Throughput::Elements(1));
        // The delivery, and the reply when there is an `id`.
        let queued = if id { 2 } else { 1 };
        g.bench_function(BenchmarkId::new("stored_to_queues", name), |b| {
            b.iter_custom(|iters| timed_input(&s, publisher, &publish, iters, queued))
        });
    }
    for frames in [1usize, 16, 128] {
        let s = BenchShard::new_pubsub(1);
        let id = s.register();
        assert!(s.subscribe(id, "room"));
        s.drain();
        let frame = ringhub::envelope::publication("room", "m", Some(b"\"0123456789\""));
        let mut iov = Vec::with_capacity(1024);
        g.throughput(Throughput::Elements(frames as u64));
        g.bench_function(BenchmarkId::new("corked_send", frames), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..frames {
                        s.deliver_local("room", &frame);
                    }
                    let t = Instant::now();
                    let n = s.send_once(id, black_box(&mut iov));
                    spent += t.elapsed();
                    assert_eq!(n, frame.len() * frames);
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
