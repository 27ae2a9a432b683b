//! Envelope parsing: ringhub's serde_json parser (borrowed strings, `data` kept as a `RawValue`
//! slice) against simd-json, which parses in place and so needs a copy of every frame to keep the
//! original bytes (the copy is inside the timed loop).
//!
//! `cargo bench --bench envelope_parse`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use simd_json::prelude::*;

/// A ~100-byte publish envelope.
fn small() -> Vec<u8> {
    br#"{"topic":"chat:room:42","event":"message","id":7,"data":{"user":"alice","text":"hi there!"}}"#
        .to_vec()
}

/// A ~4 KiB envelope: nested object, strings with escapes (quotes, backslashes, \n, \u00e9).
fn large() -> Vec<u8> {
    let mut items = String::new();
    let mut i = 0;
    loop {
        let item = format!(
            r#"{{"id":{i},"name":"item \"{i}\" of the list","path":"C:\\data\\{i}.json","note":"line one\nline two caf\u00e9","tags":["a","bb","ccc"],"meta":{{"score":{}.5,"ok":true,"ref":null}}}}"#,
            i * 3
        );
        if items.len() + item.len() > 3950 {
            break;
        }
        if !items.is_empty() {
            items.push(',');
        }
        items.push_str(&item);
        i += 1;
    }
    let env = |pad: &str| {
        format!(
            r#"{{"topic":"tenant:17:orders","event":"update","id":123456,"data":{{"batch":{{"count":{i},"items":[{items}],"pad":"{pad}"}}}}}}"#
        )
    };
    // Pad to exactly 4 KiB.
    let short = 4096 - env("").len();
    let env = env(&"x".repeat(short));
    assert_eq!(env.len(), 4096);
    env.into_bytes()
}

/// ringhub's parser: what the shard runs for every text frame.
fn serde_json_parse(input: &[u8]) -> usize {
    let env = ringhub::envelope::parse(input).expect("valid envelope");
    black_box((&env.topic, &env.event, env.id));
    env.data.map_or(0, |d| d.get().len())
}

/// simd-json tape: copy, parse in place, read topic/event/id and look `data` up (as a tape node,
/// not as forwardable bytes).
fn simd_tape(input: &[u8], scratch: &mut Vec<u8>, buffers: &mut simd_json::Buffers) -> usize {
    scratch.clear();
    scratch.extend_from_slice(input);
    let tape = simd_json::to_tape_with_buffers(scratch, buffers).expect("valid envelope");
    let v = tape.as_value();
    let topic = v.get_str("topic").unwrap_or("");
    let event = v.get_str("event").unwrap_or("");
    let id = v.get_u64("id");
    let data = v.get("data");
    black_box((topic, event, id, &data));
    topic.len() + event.len() + data.is_some() as usize
}

/// simd-json tape + re-encoding `data` to JSON text: what forwarding `data` raw would cost, since
/// the in-place parse has rewritten the escapes in the copied buffer.
fn simd_tape_reencode(
    input: &[u8],
    scratch: &mut Vec<u8>,
    buffers: &mut simd_json::Buffers,
    out: &mut Vec<u8>,
) -> usize {
    scratch.clear();
    scratch.extend_from_slice(input);
    let tape = simd_json::to_tape_with_buffers(scratch, buffers).expect("valid envelope");
    let v = tape.as_value();
    let topic = v.get_str("topic").unwrap_or("");
    let event = v.get_str("event").unwrap_or("");
    let id = v.get_u64("id");
    out.clear();
    if let Some(d) = v.get("data") {
        d.write(out).expect("write to Vec");
    }
    black_box((topic, event, id));
    out.len()
}

/// simd-json borrowed value (a tree of `Cow<str>` and halfbrown maps), `data` re-encoded.
fn simd_borrowed_reencode(
    input: &[u8],
    scratch: &mut Vec<u8>,
    buffers: &mut simd_json::Buffers,
    out: &mut Vec<u8>,
) -> usize {
    scratch.clear();
    scratch.extend_from_slice(input);
    let v = simd_json::to_borrowed_value_with_buffers(scratch, buffers).expect("valid envelope");
    let topic = v.get_str("topic").unwrap_or("");
    let event = v.get_str("event").unwrap_or("");
    let id = v.get_u64("id");
    out.clear();
    if let Some(d) = v.get("data") {
        d.write(out).expect("write to Vec");
    }
    black_box((topic, event, id));
    out.len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope_parse");
    for (name, input) in [("100B", small()), ("4KiB", large())] {
        // Sanity: every variant extracts the same fields.
        let mut scratch = Vec::with_capacity(input.len() + 64);
        let mut out = Vec::with_capacity(input.len());
        let mut buffers = simd_json::Buffers::new(input.len());
        serde_json_parse(&input);
        simd_tape(&input, &mut scratch, &mut buffers);
        let raw_len = serde_json_parse(&input);
        let re_len = simd_tape_reencode(&input, &mut scratch, &mut buffers, &mut out);
        assert!(re_len > 0 && raw_len > 0);

        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("serde_json_rawvalue", name),
            &input,
            |b, input| b.iter(|| serde_json_parse(black_box(input))),
        );
        g.bench_with_input(
            BenchmarkId::new("simd_json_copy_tape", name),
            &input,
            |b, input| b.iter(|| simd_tape(black_box(input), &mut scratch, &mut buffers)),
        );
        g.bench_with_input(
            BenchmarkId::new("simd_json_copy_tape_reencode_data", name),
            &input,
            |b, input| {
                b.iter(|| {
                    simd_tape_reencode(black_box(input), &mut scratch, &mut buffers, &mut out)
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("simd_json_copy_borrowed_reencode_data", name),
            &input,
            |b, input| {
                b.iter(|| {
                    simd_borrowed_reencode(black_box(input), &mut scratch, &mut buffers, &mut out)
                })
            },
        );
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = bench }
criterion_main!(benches);
