//! `envelope::publication`: one publication encoded once (JSON envelope + WebSocket header in
//! one allocation) for 64 B and 4 KiB of `data`. Throughput is the encoded frame's bytes.
//!
//! `cargo bench --bench frame_encode`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A JSON object of exactly `len` bytes.
fn data(len: usize) -> Vec<u8> {
    let fixed = r#"{"text":""}"#.len();
    let body: String = "lorem ipsum dolor sit amet "
        .chars()
        .cycle()
        .take(len - fixed)
        .collect();
    let d = format!(r#"{{"text":"{body}"}}"#);
    assert_eq!(d.len(), len);
    d.into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    for (name, len) in [("64B", 64usize), ("4KiB", 4096)] {
        let d = data(len);
        let frame_len = ringhub::envelope::publication("chat:room:42", "message", Some(&d)).len();
        g.throughput(Throughput::Bytes(frame_len as u64));
        g.bench_function(BenchmarkId::new("publication", name), |b| {
            b.iter(|| {
                ringhub::envelope::publication(
                    black_box("chat:room:42"),
                    black_box("message"),
                    Some(black_box(&d)),
                )
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
