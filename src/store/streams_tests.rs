//! Tests of [`Streams`](super::Streams): offsets, eviction, event runs, kept frames.

use std::time::Duration;

use super::*;

fn lim(size: usize) -> HistoryLimits {
    HistoryLimits {
        size,
        ttl: Duration::ZERO,
    }
}

fn append(s: &mut Streams, topic: &str, size: usize, n: u64, at: u64) -> StreamPos {
    let data = Bytes::from(format!("{n}"));
    s.append(topic, lim(size), "e", at, |_| Some(data))
}

#[test]
fn offsets_are_gapless_per_topic_and_the_epoch_is_the_unwritten_one() {
    let mut s = Streams::new("base".into());
    let before = s.position("a");
    assert_eq!(before.offset, 0);
    for n in 1..=5 {
        let p = append(&mut s, "a", 3, n, 0);
        assert_eq!(p.offset, n);
        assert_eq!(
            p.epoch, before.epoch,
            "the first append keeps the read epoch"
        );
    }
    assert_eq!(append(&mut s, "b", 3, 1, 0).offset, 1, "per topic");
    assert_ne!(s.position("b").epoch, before.epoch);
    assert_ne!(
        Streams::new("other".into()).position("a").epoch,
        before.epoch,
        "another base is another epoch"
    );
}

#[test]
fn the_ring_evicts_the_oldest_and_reads_say_so() {
    let mut s = Streams::new("b".into());
    for n in 1..=10 {
        append(&mut s, "t", 4, n, 0);
        assert!(s.kept("t") <= 4);
    }
    let r = s.read("t", lim(4), 0, 100, 0);
    let offs: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offs, [7, 8, 9, 10]);
    assert_eq!(r.publications[0].data.as_deref(), Some(&b"7"[..]));
    assert!(!r.complete, "1..=6 were evicted");
    let r = s.read("t", lim(4), 6, 100, 0);
    assert!(r.complete);
    assert_eq!(r.publications.len(), 4);
    let r = s.read("t", lim(4), 8, 100, 0);
    assert_eq!(
        r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [9, 10]
    );
    assert!(r.complete);
    // The latest `limit`, oldest first.
    let r = s.read("t", lim(4), 6, 2, 0);
    assert_eq!(
        r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [9, 10]
    );
    assert!(!r.complete);
    // Beyond the top.
    assert!(!s.read("t", lim(4), 11, 100, 0).complete);
    // Size zero keeps nothing but still counts.
    assert_eq!(append(&mut s, "z", 0, 1, 0).offset, 1);
    assert_eq!(append(&mut s, "z", 0, 2, 0).offset, 2);
    assert_eq!(s.kept("z"), 0);
}

#[test]
fn event_names_are_kept_as_runs_through_eviction() {
    let mut s = Streams::new("b".into());
    append(&mut s, "t", 3, 1, 0);
    append(&mut s, "t", 3, 2, 0);
    s.append("t", lim(3), "other", 0, |_| None);
    // A repeated name adds to its run: one name for the first two entries.
    let runs: Vec<(&str, usize)> = s.map["t"].events.iter().map(|(e, n)| (&**e, *n)).collect();
    assert_eq!(runs, [("e", 2), ("other", 1)]);
    let r = s.read("t", lim(3), 0, 10, 0);
    let events: Vec<&str> = r.publications.iter().map(|p| &*p.event).collect();
    assert_eq!(events, ["e", "e", "other"]);
    // Alternating names through many evictions: every read names each offset as appended,
    // and the runs never outnumber the kept entries.
    let names = ["a", "a", "b", "c", "c", "c", "a"];
    let mut s = Streams::new("b".into());
    for n in 0..40u64 {
        let event = names[n as usize % names.len()];
        s.append("t", lim(5), event, 0, |_| None);
        let st = &s.map["t"];
        assert_eq!(
            st.events.iter().map(|(_, k)| k).sum::<usize>(),
            st.ring.len()
        );
        assert!(st.events.len() <= st.ring.len());
        for limit in [1, 3, 10] {
            let r = s.read("t", lim(5), 0, limit, 0);
            for p in &r.publications {
                assert_eq!(&*p.event, names[(p.offset - 1) as usize % names.len()]);
            }
        }
        let r = s.read("t", lim(5), n.saturating_sub(2), 10, 0);
        let offs: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
        let want: Vec<u64> = (n.saturating_sub(2).max(n.saturating_sub(4)) + 1..=n + 1).collect();
        assert_eq!(offs, want);
    }
    // Size zero keeps no run.
    s.append("z", lim(0), "e", 0, |_| None);
    assert!(s.map["z"].events.is_empty());
}

#[test]
fn a_kept_frame_is_delivered_and_read_from_the_ring() {
    let mut s = Streams::new("b".into());
    let at = s.slot("t");
    let frame_of = |o: u64| {
        let f = Bytes::from(format!("[frame {o} data{o}]"));
        let start = f.len() - 1 - format!("data{o}").len();
        let end = f.len() - 1;
        (f, Some(start..end))
    };
    let mut frames = Vec::new();
    for n in 1..=5u64 {
        let (offset, unkept) = s.append_frame_at(at, lim(3), "e", n, frame_of);
        assert_eq!(offset, n);
        assert!(unkept.is_none(), "kept by the ring");
        let (frame, epoch) = s.newest(at).expect("just appended");
        assert_eq!(&frame[..], format!("[frame {n} data{n}]").as_bytes());
        assert_eq!(*epoch, s.position("t").epoch);
        assert!(Arc::ptr_eq(epoch, s.epoch_at(at).expect("a slot")));
        frames.push(frame.clone());
    }
    // Reads give the data, shared with the kept frame (no copy).
    let r = s.read("t", lim(3), 0, 10, 0);
    assert_eq!(
        r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    for p in &r.publications {
        let data = p.data.as_ref().expect("data");
        assert_eq!(&data[..], format!("data{}", p.offset).as_bytes());
        let frame = &frames[(p.offset - 1) as usize];
        assert!(frame.as_ptr_range().contains(&data.as_ptr()), "a slice");
        assert_eq!(p.time_ms, p.offset);
    }
    // Mixed with data appends: one gapless stream.
    let pos = s.append_at(at, lim(3), "e", 0, |_| Some(Bytes::from_static(b"7")));
    assert_eq!(pos.offset, 6);
    let (offset, _) = s.append_frame_at(at, lim(3), "e", 0, |_| (Bytes::from_static(b"x"), None));
    assert_eq!(offset, 7);
    let r = s.read("t", lim(3), 4, 10, 0);
    let data: Vec<Option<&[u8]>> = r.publications.iter().map(|p| p.data.as_deref()).collect();
    assert_eq!(data, [Some(&b"data5"[..]), Some(&b"7"[..]), None]);
    // Size zero keeps nothing: the frame comes back to be delivered by the caller.
    let z = s.slot("z");
    let (offset, unkept) = s.append_frame_at(z, lim(0), "e", 0, frame_of);
    assert_eq!(
        (offset, unkept.as_deref()),
        (1, Some(&b"[frame 1 data1]"[..]))
    );
    assert_eq!(s.kept("z"), 0);
    assert!(s.newest(z).is_none());
    // A range the entry cannot describe: the data is kept on its own, the frame given back.
    let (offset, unkept) = s.append_frame_at(at, lim(3), "e", 0, |_| {
        (Bytes::from_static(b"abc"), Some(1..9))
    });
    assert_eq!(offset, 8);
    assert_eq!(unkept.as_deref(), Some(&b"abc"[..]));
    let r = s.read("t", lim(3), 7, 10, 0);
    assert_eq!(r.publications.len(), 1);
    assert!(r.publications[0].data.is_none());
}

#[test]
fn an_entry_describes_its_data_or_refuses() {
    let f = Bytes::from_static(b"0123456789");
    let e = Entry::of_frame(f.clone(), Some(2..5), 0).expect("fits");
    assert_eq!(e.data().as_deref(), Some(&b"234"[..]));
    let e = Entry::of_frame(f.clone(), Some(3..3), 0).expect("fits");
    assert_eq!(e.data().as_deref(), Some(&b""[..]), "empty data is data");
    assert!(Entry::of_frame(f.clone(), None, 0)
        .expect("fits")
        .data()
        .is_none());
    assert!(
        Entry::of_frame(f.clone(), Some(4..11), 0).is_err(),
        "past the frame"
    );
    assert_eq!(Entry::of_data(Some(f.clone()), 0).data(), Some(f));
    assert!(Entry::of_data(None, 0).data().is_none());
}

#[test]
fn the_last_topic_is_found_without_a_lookup_and_keeps_its_offsets() {
    let mut s = Streams::new("b".into());
    assert_eq!(s.last_for("t"), None, "nothing appended yet");
    append(&mut s, "t", 3, 1, 0);
    let (at, limits) = s.last_for("t").expect("t was appended to last");
    assert_eq!(limits, lim(3));
    assert_eq!(s.last_for("u"), None, "another topic is looked up");
    let p = s.append_at(at, limits, "e", 0, |o| Some(Bytes::from(format!("{o}"))));
    assert_eq!(p.offset, 2);
    // Interleaved topics: each keeps its own gapless offsets, whichever path appends.
    append(&mut s, "u", 3, 1, 0);
    assert_eq!(s.last_for("t"), None);
    let (at_u, _) = s.last_for("u").expect("u now");
    assert_eq!(s.slot("t"), at, "a slot stays where it is");
    assert_ne!(at_u, at);
    assert_eq!(append(&mut s, "t", 3, 3, 0).offset, 3);
    let (at, limits) = s.last_for("t").expect("t again");
    for n in 4..=6 {
        assert_eq!(s.append_at(at, limits, "e", 0, |_| None).offset, n);
    }
    assert_eq!(s.kept("t"), 3, "trimmed to the limit on the fast path too");
    assert_eq!(s.position("u").offset, 1);
}

#[test]
fn ttl_skips_old_publications() {
    let mut s = Streams::new("b".into());
    append(&mut s, "t", 10, 1, 1_000);
    append(&mut s, "t", 10, 2, 5_000);
    let limits = HistoryLimits {
        size: 10,
        ttl: Duration::from_secs(2),
    };
    let r = s.read("t", limits, 0, 10, 6_000);
    assert_eq!(r.publications.len(), 1);
    assert_eq!(r.publications[0].offset, 2);
    assert!(!r.complete);
}

#[test]
fn a_kept_publication_is_small() {
    // The per-publication cost of history: the entry (the frame or data, where the data is in
    // it, the time) plus the frame's own bytes; event names are runs in the stream.
    assert!(
        std::mem::size_of::<Entry>() <= 48,
        "{}",
        std::mem::size_of::<Entry>()
    );
    assert!(
        std::mem::size_of::<Stream>() <= 96,
        "{}",
        std::mem::size_of::<Stream>()
    );
}
