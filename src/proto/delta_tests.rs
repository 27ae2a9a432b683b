use proptest::prelude::*;

use super::*;

fn roundtrip(a: &[u8], b: &[u8]) -> Vec<u8> {
    let d = encode(a, b);
    assert_eq!(apply(a, &d, usize::MAX).as_deref(), Ok(b), "delta {d:?}");
    d
}

#[test]
fn short_source_is_one_literal() {
    let d = encode(b"", b"abc");
    let mut want = b"3\n3:abc".to_vec();
    put_int(&mut want, u64::from(checksum(b"abc")));
    want.push(b';');
    assert_eq!(d, want);
}

#[test]
fn integers_use_fossils_digits() {
    let mut out = Vec::new();
    for v in [0u64, 9, 10, 63, 64, 4095, 4096, u64::MAX] {
        out.clear();
        put_int(&mut out, v);
        let mut pos = 0;
        assert_eq!(get_int(&out, &mut pos), Ok(v));
        assert_eq!(pos, out.len());
    }
    out.clear();
    put_int(&mut out, 64);
    assert_eq!(out, b"10");
    out.clear();
    put_int(&mut out, 63);
    assert_eq!(out, b"~");
}

#[test]
fn checksum_matches_fossil_on_tails() {
    // Big-endian words, a short tail padded with zeros on the right.
    assert_eq!(checksum(b""), 0);
    assert_eq!(checksum(b"\x01\x02\x03\x04"), 0x0102_0304);
    assert_eq!(checksum(b"\x01\x02\x03\x04\x01"), 0x0202_0304);
    assert_eq!(checksum(b"\x00\x00\x01"), 0x0000_0100);
}

fn state(n: u32, name: &str) -> Vec<u8> {
    let mut s = format!("{{\"seq\":{n},\"name\":\"{name}\",\"items\":[");
    for i in 0..40 {
        s.push_str(&format!(
            "{{\"id\":{i},\"price\":{},\"qty\":{}}},",
            100 + i,
            i * 3
        ));
    }
    s.push_str("{}]}");
    s.into_bytes()
}

#[test]
fn a_small_change_to_a_large_object_is_a_small_delta() {
    let a = state(1, "alpha");
    let b = state(2, "alpha");
    let d = roundtrip(&a, &b);
    assert!(
        d.len() < 40,
        "{} bytes: {:?}",
        d.len(),
        String::from_utf8_lossy(&d)
    );
    assert!(d.contains(&b'@'), "copies from the source");
}

#[test]
fn deltas_of_utf8_text_are_utf8() {
    // Multi-byte characters everywhere: a copy that ended inside one would cut it.
    let a = "مرحبا بالعالم — состояние 状態 🚀🚀🚀 ".repeat(20);
    let mut b = a.clone();
    b.insert(a.len() / 2, 'é');
    b.replace_range(0..2, "ش");
    let d = roundtrip(a.as_bytes(), b.as_bytes());
    assert!(std::str::from_utf8(&d).is_ok(), "{d:?}");
}

#[test]
fn apply_refuses_bad_deltas() {
    let a = state(1, "x");
    let b = state(2, "x");
    let d = encode(&a, &b);
    // Wrong source: the checksum (or a bound) catches it.
    assert!(apply(&b[..b.len() - 20], &d, usize::MAX).is_err());
    // Truncated, or a byte changed.
    for cut in 0..d.len() {
        assert!(apply(&a, &d[..cut], usize::MAX).is_err(), "cut at {cut}");
    }
    let mut bad = d.clone();
    let last = bad.len() - 3;
    bad[last] ^= 1;
    assert!(apply(&a, &bad, usize::MAX).is_err());
    // Over the caller's limit: refused before allocating.
    assert_eq!(
        apply(&a, b"zzzzzzzzzz\n0;", 1 << 20),
        Err(DeltaError::Bounds("target larger than allowed"))
    );
    assert_eq!(
        apply(&a, b"3\n3@99999,", 10).unwrap_err().code(),
        "delta_bounds"
    );
    assert_eq!(
        apply(&a, b"3\n3?", 10).unwrap_err().code(),
        "delta_malformed"
    );
    assert_eq!(
        apply(&a, b"0\n5;", 10).unwrap_err().code(),
        "delta_checksum"
    );
    assert!(apply(&a, b"~~~~~~~~~~~~~~~~~~~~~~~\n", usize::MAX).is_err());
}

#[test]
fn split_stored_finds_the_data() {
    let big = "x".repeat(70_000);
    for data in [r#"{"a":"b\"c,\"offset\":1"}"#, "7", big.as_str()] {
        let data = if data.starts_with('x') {
            format!("\"{data}\"")
        } else {
            data.to_string()
        };
        let f = crate::proto::envelope::stored_publication(
            "t:\"q\"",
            "e\\v",
            Some(data.as_bytes()),
            42,
        );
        let p = split_stored(&f).expect("split");
        assert_eq!(&p.data[..], data.as_bytes());
        assert_eq!(&p.head[..], br#"{"topic":"t:\"q\"","event":"e\\v","#);
        assert_eq!(&p.tail[..], br#","offset":42}"#);
        let df = delta_frame(&p, b"3\n3:a\"b").expect("utf-8");
        let v: serde_json::Value = serde_json::from_slice(&df[2..]).expect("json");
        assert_eq!(v["delta"], "3\n3:a\"b");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["topic"], "t:\"q\"");
        assert!(v.get("data").is_none());
    }
    let none = crate::proto::envelope::stored_publication("t", "e", None, 1);
    assert!(split_stored(&none).is_none());
    assert!(delta_frame(
        &split_stored(&crate::proto::envelope::stored_publication(
            "t",
            "e",
            Some(b"1"),
            1
        ))
        .unwrap(),
        b"\xff"
    )
    .is_none());
}

proptest! {
    #[test]
    fn roundtrip_any_bytes(a in proptest::collection::vec(any::<u8>(), 0..600),
                           b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let d = encode(&a, &b);
        prop_assert_eq!(apply(&a, &d, usize::MAX), Ok(b));
    }

    #[test]
    fn roundtrip_edits(a in "[a-z{}\":,é🚀 ]{0,400}", edits in proptest::collection::vec((any::<u16>(), "[a-zé]{0,5}", 0usize..4), 0..6)) {
        let mut b = a.clone();
        for (at, ins, del) in edits {
            let mut i = usize::from(at) % (b.len() + 1);
            while !b.is_char_boundary(i) { i -= 1; }
            let mut j = (i + del).min(b.len());
            while !b.is_char_boundary(j) { j += 1; }
            b.replace_range(i..j, &ins);
        }
        let d = encode(a.as_bytes(), b.as_bytes());
        prop_assert!(std::str::from_utf8(&d).is_ok());
        prop_assert_eq!(apply(a.as_bytes(), &d, usize::MAX), Ok(b.into_bytes()));
    }

    #[test]
    fn apply_never_panics(a in proptest::collection::vec(any::<u8>(), 0..64),
                          d in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = apply(&a, &d, 1 << 16);
        let mut framed = b"5\n".to_vec();
        framed.extend_from_slice(&d);
        let _ = apply(&a, &framed, 1 << 16);
    }
}

/// The example of docs/PROTOCOL.md ("Delta updates").
#[test]
fn the_protocol_example() {
    let a =
        br#"{"version":42,"score":{"red":3,"blue":5},"clock":"12:04","players":["ana","bo","cy"]}"#;
    let b =
        br#"{"version":43,"score":{"red":3,"blue":6},"clock":"12:05","players":["ana","bo","cy"]}"#;
    let d = encode(a, b);
    assert_eq!(
        String::from_utf8(d.clone()).unwrap(),
        "1L\nC@0,1:3P@D,H:6},\"clock\":\"12:05U@s,3fZ8f5;"
    );
    assert_eq!(apply(a, &d, 1 << 10).as_deref(), Ok(&b[..]));
}
