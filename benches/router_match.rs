//! `PatternMap::best_match` (the handler router; the registry and interest table use the same
//! index through `for_each_match`) with 10, 1,000 and 100,000 patterns: half exact
//! (`chat:room:{n}`, `user:{n}:inbox`), half prefix (`tenant:{n}:*`, `org:{n}:team:*`).
//! Each iteration looks up the next of 4,096 pre-built topics, so lookups are not one hot key.
//!
//! `cargo bench --bench router_match`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringhub::pattern::{Pattern, PatternMap};

const TOPICS: usize = 4096;

fn exact(n: usize) -> String {
    if n.is_multiple_of(2) {
        format!("chat:room:{n}")
    } else {
        format!("user:{n}:inbox")
    }
}

fn prefix(n: usize) -> String {
    if n.is_multiple_of(2) {
        format!("tenant:{n}:*")
    } else {
        format!("org:{n}:team:*")
    }
}

/// A topic matched only by `prefix(n)`.
fn under_prefix(n: usize) -> String {
    if n.is_multiple_of(2) {
        format!("tenant:{n}:orders:eu-west")
    } else {
        format!("org:{n}:team:backend")
    }
}

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn build(patterns: usize) -> PatternMap<usize> {
    let mut m = PatternMap::new();
    for n in 0..patterns / 2 {
        m.insert(Pattern::parse(&exact(n)).unwrap(), n);
        m.insert(Pattern::parse(&prefix(n)).unwrap(), n);
    }
    assert_eq!(m.len(), patterns);
    m
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_match");
    g.throughput(Throughput::Elements(1));
    for patterns in [10usize, 1_000, 100_000] {
        let map = build(patterns);
        let half = patterns / 2;
        let mut rng = Lcg(patterns as u64);
        let exact_hits: Vec<String> = (0..TOPICS).map(|_| exact(rng.below(half))).collect();
        let wildcard_hits: Vec<String> =
            (0..TOPICS).map(|_| under_prefix(rng.below(half))).collect();
        // Same shapes, numbers never registered: every prefix length is probed, none matches.
        let misses: Vec<String> = (0..TOPICS)
            .map(|i| match i % 3 {
                0 => exact(half * 2 + rng.below(1 << 20)),
                1 => under_prefix(half * 2 + rng.below(1 << 20)),
                _ => format!("news:sports:{}", rng.below(1 << 20)),
            })
            .collect();
        for t in &exact_hits {
            assert!(map.best_match(t).is_some(), "{t}");
        }
        for t in &wildcard_hits {
            assert!(map.best_match(t).is_some(), "{t}");
        }
        for t in &misses {
            assert!(map.best_match(t).is_none(), "{t}");
        }
        for (case, topics) in [
            ("exact_hit", &exact_hits),
            ("wildcard_hit", &wildcard_hits),
            ("miss", &misses),
        ] {
            g.bench_function(BenchmarkId::new(case, patterns), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (TOPICS - 1);
                    black_box(map.best_match(black_box(&topics[i])))
                })
            });
        }
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
