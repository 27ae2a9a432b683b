//! Tests of the wire format (round trips, malformed input).

use super::*;

#[test]
fn publication_round_trip() {
    let frames: Vec<(&str, &[u8])> = vec![("a", b"\x81\x02hi"), ("chat:b", b"")];
    let p = publication("node-1", 42, &frames);
    let e = decode(&p).unwrap();
    assert_eq!(e.origin, b"node-1");
    assert_eq!(e.seq, 42);
    let Decoded::Publication(got) = e.body else {
        panic!("not a publication")
    };
    assert_eq!(got.iter().count(), 2);
    assert_eq!(got.single(), None);
    assert_eq!(got.iter().collect::<Vec<_>>(), frames);
    let one = publication("n", 1, &frames[..1]);
    let Decoded::Publication(got) = decode(&one).unwrap().body else {
        panic!("not a publication")
    };
    assert_eq!(got.single(), Some(frames[0]));
    let c = control("n", 7, br#"{"op":"disconnect","user":"u"}"#);
    let e = decode(&c).unwrap();
    assert_eq!(
        e.body,
        Decoded::Control(br#"{"op":"disconnect","user":"u"}"#)
    );
}

#[test]
fn stored_round_trip_with_the_offset_appended() {
    let mut p = stored("n1", 9, "chat:a", "msg", Some(br#"{"x":1}"#), 77);
    assert!(decode(&p).is_none(), "no offset yet");
    p.extend_from_slice(b"e1f2:1234");
    let e = decode(&p).unwrap();
    assert_eq!((e.origin, e.seq), (&b"n1"[..], 9));
    assert_eq!(
        e.body,
        Decoded::Stored(StoredWire {
            topic: "chat:a",
            event: "msg",
            data: Some(br#"{"x":1}"#),
            exclude: 77,
            epoch: "e1f2",
            offset: 1234,
        })
    );
    let mut q = stored("n1", 10, "t", "e", None, 0);
    q.extend_from_slice(b"ab:1");
    let Decoded::Stored(w) = decode(&q).unwrap().body else {
        panic!("not stored")
    };
    assert_eq!((w.data, w.offset), (None, 1));
    let mut bad = stored("n1", 10, "t", "e", None, 0);
    bad.extend_from_slice(b"ab:1x");
    assert!(decode(&bad).is_none());
    let mut no_epoch = stored("n1", 10, "t", "e", None, 0);
    no_epoch.extend_from_slice(b"12");
    assert!(decode(&no_epoch).is_none());
}

#[test]
fn stored_batch_round_trip_with_consecutive_offsets() {
    let pubs: [(&str, Option<&[u8]>, u64); 3] = [
        ("msg", Some(b"{\"x\":1}"), 77),
        ("e", None, 0),
        ("", Some(b""), 1),
    ];
    let p = stored_batch("n1~s", 9, "chat:a", "e1f2", 1234, &pubs);
    let e = decode(&p).unwrap();
    assert_eq!((e.origin, e.seq), (&b"n1~s"[..], 9));
    let Decoded::StoredBatch(b) = e.body else {
        panic!("not a batch: {:?}", e.body)
    };
    assert_eq!(
        (b.topic, b.epoch, b.first, b.count),
        ("chat:a", "e1f2", 1234, 3)
    );
    let got: Vec<StoredWire<'_>> = b.iter().collect();
    let want: Vec<StoredWire<'_>> = pubs
        .iter()
        .zip(1234..)
        .map(|(&(event, data, exclude), offset)| StoredWire {
            topic: "chat:a",
            event,
            data,
            exclude,
            epoch: "e1f2",
            offset,
        })
        .collect();
    assert_eq!(got, want);
    // What the script writes, byte for byte: header, position length, position, parts.
    let mut by_parts = Vec::new();
    stored_batch_header_into(&mut by_parts, "n1~s", 9, "chat:a");
    by_parts.extend_from_slice(b"\x09e1f2:1234");
    for (event, data, exclude) in pubs {
        stored_item_into(&mut by_parts, event, data, exclude);
    }
    assert_eq!(by_parts, p);
}

#[test]
fn a_malformed_stored_batch_is_refused() {
    let pubs: [(&str, Option<&[u8]>, u64); 2] = [("a", Some(b"xy"), 0), ("b", None, 5)];
    let p = stored_batch("n", 1, "t", "ep", 7, &pubs);
    // A cut between two publications is a batch of the first (the message has no count:
    // Redis delivers messages whole); anywhere else it is refused.
    let one = stored_batch("n", 1, "t", "ep", 7, &pubs[..1]).len();
    for cut in 0..p.len() {
        assert_eq!(decode(&p[..cut]).is_some(), cut == one, "cut at {cut}");
    }
    let mut extra = p.clone();
    extra.push(0);
    assert!(
        decode(&extra).is_none(),
        "a trailing byte is not a publication"
    );
    assert!(
        decode(&stored_batch("n", 1, "t", "ep", 7, &[])).is_none(),
        "empty"
    );
    for pos in ["ep:", ":7", "ep:7x", "ep7"] {
        let mut q = Vec::new();
        stored_batch_header_into(&mut q, "n", 1, "t");
        q.push(pos.len() as u8);
        q.extend_from_slice(pos.as_bytes());
        stored_item_into(&mut q, "a", None, 0);
        assert!(decode(&q).is_none(), "position {pos:?}");
    }
    // The last offset must fit.
    assert!(decode(&stored_batch("n", 1, "t", "ep", u64::MAX, &pubs)).is_none());
}

#[test]
fn malformed_input_is_refused_not_panicked_on() {
    let frames: Vec<(&str, &[u8])> = vec![("t", b"xyz")];
    let p = publication("n", 1, &frames);
    for cut in 0..p.len() {
        assert!(decode(&p[..cut]).is_none(), "cut at {cut}");
    }
    let mut extra = p.clone();
    extra.push(0);
    assert!(decode(&extra).is_none());
    assert!(decode(b"hello").is_none());
    assert!(decode(b"").is_none());
    // Arbitrary bytes never panic.
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let len = (x % 40) as usize;
        let v: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let _ = decode(&v);
    }
}

#[test]
fn dedup_window() {
    let mut d = Dedup::new();
    assert!(d.first(b"a", 1));
    assert!(!d.first(b"a", 1));
    assert!(d.first(b"b", 1));
    assert!(d.first(b"a", 2));
    assert!(!d.first(b"a", 1));
    for s in 10..(10 + WINDOW as u64) {
        assert!(d.first(b"c", s));
    }
    // Pushed out of the window.
    assert!(d.first(b"a", 1));
}

#[test]
fn instance_for_is_stable_and_spreads() {
    assert_eq!(instance_for("anything", 1), 0);
    let mut counts = [0usize; 3];
    for i in 0..3000 {
        let t = format!("topic:{i}");
        let k = instance_for(&t, 3);
        assert_eq!(k, instance_for(&t, 3));
        counts[k] += 1;
    }
    assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    // Going from 3 to 4 instances moves about a quarter of the topics, all to the new one.
    let moved = (0..3000)
        .map(|i| format!("topic:{i}"))
        .filter(|t| instance_for(t, 3) != instance_for(t, 4))
        .inspect(|t| assert_eq!(instance_for(t, 4), 3))
        .count();
    assert!((500..1000).contains(&moved), "{moved}");
}
