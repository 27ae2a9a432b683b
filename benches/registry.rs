//! Connection and subscription bookkeeping, ns per operation:
//! - `Registry::subscribe` + `unsubscribe` of one connection to one pattern (a new pattern, so
//!   the pattern entry is created and removed; and a pattern that already has 100 subscribers),
//!   with 10,000 other patterns registered;
//! - the shard-level lifecycle: a connection registered in the shard's slab and removed as the
//!   shell removes it once its socket is done, alone and
//!   with one subscription taken through the shard's real `subscribe` path and dropped on close.
//!
//! `cargo bench --bench registry`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringhub::bench_support::BenchShard;
use ringhub::pattern::Pattern;
use ringhub::registry::Registry;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(1));

    let mut reg = Registry::new();
    let names: Vec<String> = (0..10_000).map(|n| format!("chat:room:{n}")).collect();
    for (slot, name) in names.iter().enumerate() {
        reg.subscribe(Pattern::parse(name).unwrap(), slot as u32);
    }
    for slot in 0..100 {
        reg.subscribe(Pattern::parse("chat:lobby").unwrap(), 20_000 + slot);
    }
    let fresh = Pattern::parse("tenant:42:*").unwrap();
    let busy = Pattern::parse("chat:lobby").unwrap();
    g.bench_function("subscribe_unsubscribe_new_pattern", |b| {
        b.iter(|| {
            black_box(reg.subscribe(black_box(fresh), 7));
            black_box(reg.unsubscribe(black_box(fresh), 7));
        })
    });
    g.bench_function("subscribe_unsubscribe_shared_pattern", |b| {
        b.iter(|| {
            black_box(reg.subscribe(black_box(busy), 7));
            black_box(reg.unsubscribe(black_box(busy), 7));
        })
    });

    // Shard with 10,000 live connections, so the slab is realistically populated.
    let shard = BenchShard::new(1);
    for _ in 0..10_000 {
        shard.register();
    }
    g.bench_function("shard_register_remove", |b| {
        b.iter(|| {
            let id = shard.register();
            shard.remove(black_box(id));
        })
    });
    g.bench_function("shard_register_subscribe_remove", |b| {
        b.iter(|| {
            let id = shard.register();
            shard.subscribe(id, black_box("chat:room:7"));
            shard.remove(black_box(id));
        })
    });
    let id = shard.register();
    g.bench_function("shard_subscribe_unsubscribe", |b| {
        b.iter(|| {
            shard.subscribe(id, black_box("chat:room:7"));
            shard.unsubscribe(id, black_box("chat:room:7"));
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
