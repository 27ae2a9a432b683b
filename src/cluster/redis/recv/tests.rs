use super::*;
use crate::proto::pattern::Pattern;
use crate::shard::shared::HubShared;

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// A `message` push as Redis writes it (RESP2 array or RESP3 push).
fn message(head: u8, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![head];
    out.extend_from_slice(b"3\r\n");
    bulk(&mut out, b"message");
    bulk(&mut out, channel.as_bytes());
    bulk(&mut out, payload);
    out
}

fn pmessage(pattern: &str, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = b"*4\r\n".to_vec();
    bulk(&mut out, b"pmessage");
    bulk(&mut out, pattern.as_bytes());
    bulk(&mut out, channel.as_bytes());
    bulk(&mut out, payload);
    out
}

fn plain(origin: &str, seq: u64, topic: &str, frame: &[u8]) -> Vec<u8> {
    wire::publication(origin, seq, &[(topic, frame)])
}

struct Setup {
    hub: HubShared,
    interest: Interest,
    stats: ClusterStats,
    fanin: Fanin,
}

/// Node `me` with 3 shards: shard 0 wants `a`, shard 1 `a` and `b*`, shard 2 nothing.
fn setup() -> Setup {
    let mut interest = Interest::new();
    interest.add(Pattern::parse("a").unwrap(), 0);
    interest.add(Pattern::parse("a").unwrap(), 1);
    interest.add(Pattern::parse("b*").unwrap(), 1);
    Setup {
        hub: HubShared::for_bench(3),
        interest,
        stats: ClusterStats::default(),
        fanin: Fanin::new("me".into(), 3),
    }
}

/// Every message queued to shard `i`, as (kind, topic, frame) strings.
fn drained(hub: &HubShared, i: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    while let Some(m) = hub.inboxes[i].pop() {
        let ShardMsg::Remote(batch) = m else {
            panic!("not a remote batch: {m:?}")
        };
        out.push(
            batch
                .iter()
                .map(|p| match p {
                    RemotePub::One { topic, frame } => {
                        format!("one {topic} {}", String::from_utf8_lossy(frame))
                    }
                    RemotePub::Many(all) => format!("many {}", all.len()),
                    RemotePub::Stored(s) => format!("stored {} {}", s.topic, s.offset),
                })
                .collect(),
        );
    }
    out
}

#[test]
fn one_read_is_one_batch_per_shard_in_order() {
    let mut s = setup();
    let mut buf = Vec::new();
    buf.extend(message(b'*', "rh:t:a", &plain("n2", 1, "a", b"A1")));
    // Own publication, then a repeat (pattern and channel subscription both matched).
    buf.extend(message(b'*', "rh:t:a", &plain("me", 9, "a", b"own")));
    buf.extend(pmessage("rh:t:b*", "rh:t:bc", &plain("n2", 2, "bc", b"B")));
    buf.extend(message(b'>', "rh:t:bc", &plain("n2", 2, "bc", b"B")));
    buf.extend(message(b'*', "rh:t:zz", &plain("n3", 1, "zz", b"nobody")));
    let mut stored = wire::stored("n3~s", 5, "a", "msg", Some(b"{}"), 0);
    stored.extend_from_slice(b"ep:17");
    buf.extend(message(b'*', "rh:t:a", &stored));
    // The append script's batch (wire 'B'): two publications in one message, then its repeat.
    let batch = wire::stored_batch(
        "n3~s",
        6,
        "a",
        "ep",
        18,
        &[("m", Some(b"1"), 0), ("m", None, 0)],
    );
    buf.extend(message(b'*', "rh:t:a", &batch));
    buf.extend(message(b'>', "rh:t:a", &batch));
    let many = wire::publication("n2", 3, &[("a", b"x"), ("bq", b"y")]);
    buf.extend(message(b'*', "rh:t:a", &many));
    buf.extend(message(
        b'*',
        "rh:ctl",
        &wire::control("n2", 7, b"{\"op\":1}"),
    ));
    buf.extend_from_slice(b"*3\r\n$9\r\nsubscribe\r\n$6\r\nrh:t:a\r\n:1\r\n");
    buf.extend(message(b'*', "rh:t:a", b"not a cluster message"));
    buf.extend_from_slice(b"-ERR refused\r\n");
    let n = s.fanin.feed(&buf, &s.interest).unwrap();
    assert_eq!(n, buf.len());
    assert!(s.hub.inboxes[0].pop().is_none(), "nothing before the flush");
    s.fanin.flush(&s.hub.inboxes, &s.stats);
    assert_eq!(
        drained(&s.hub, 0),
        vec![vec![
            "one a A1",
            "stored a 17",
            "stored a 18",
            "stored a 19",
            "many 2"
        ]]
    );
    assert_eq!(
        drained(&s.hub, 1),
        vec![vec![
            "one a A1",
            "one bc B",
            "stored a 17",
            "stored a 18",
            "stored a 19",
            "many 2"
        ]]
    );
    assert!(drained(&s.hub, 2).is_empty());
    assert_eq!(
        s.fanin.notes,
        vec![
            Note::Control(b"{\"op\":1}".to_vec()),
            Note::Confirmed,
            Note::Refused("ERR refused".into())
        ]
    );
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // n2:1, n2:2, n3:1 (no subscriber here, still received), the stored one, the batch's
    // two, n2:3.
    assert_eq!(get(&s.stats.publishes_received), 7);
    assert_eq!(get(&s.stats.duplicates), 2);
    // Nothing new: no push.
    s.fanin.flush(&s.hub.inboxes, &s.stats);
    assert!(drained(&s.hub, 0).is_empty());
}

#[test]
fn the_origin_keeps_its_exclusion_other_nodes_drop_it() {
    let mut s = setup();
    for (origin, want) in [("me~s", Some(42)), ("n2~s", None)] {
        let mut st = wire::stored(origin, 1, "a", "e", None, 42);
        st.extend_from_slice(b"ep:1");
        s.fanin
            .feed(&message(b'*', "rh:t:a", &st), &s.interest)
            .unwrap();
        s.fanin.flush(&s.hub.inboxes, &s.stats);
        let Some(ShardMsg::Remote(b)) = s.hub.inboxes[0].pop() else {
            panic!("no batch")
        };
        let RemotePub::Stored(p) = &b[0] else {
            panic!("not stored")
        };
        assert_eq!(p.exclude.map(|c| c.raw()), want, "{origin}");
    }
}

#[test]
fn a_batch_keeps_each_publication_its_exclusion_and_offset_on_its_origin() {
    let mut s = setup();
    for (origin, want) in [("me~s", [Some(42), None]), ("n2~s", [None, None])] {
        let b = wire::stored_batch(origin, 1, "a", "ep", 5, &[("e", None, 42), ("e", None, 0)]);
        s.fanin
            .feed(&message(b'*', "rh:t:a", &b), &s.interest)
            .unwrap();
        s.fanin.flush(&s.hub.inboxes, &s.stats);
        let Some(ShardMsg::Remote(b)) = s.hub.inboxes[0].pop() else {
            panic!("no batch")
        };
        let got: Vec<(Option<u64>, u64, &str)> = b
            .iter()
            .map(|p| match p {
                RemotePub::Stored(p) => (p.exclude.map(|c| c.raw()), p.offset, &*p.epoch),
                _ => panic!("not stored"),
            })
            .collect();
        assert_eq!(
            got,
            vec![(want[0], 5, "ep"), (want[1], 6, "ep")],
            "{origin}"
        );
    }
}

#[test]
fn frames_split_across_reads_are_decoded_once_complete() {
    let mut stream = Vec::new();
    for seq in 0..20u64 {
        stream.extend(message(
            b'*',
            "rh:t:a",
            &plain("n2", seq, "a", b"0123456789"),
        ));
    }
    for piece in [1, 2, 7, 33, 100, 1000] {
        let mut s = setup();
        // What the manager does: bytes not yet used wait for the next read.
        let mut partial: Vec<u8> = Vec::new();
        for chunk in stream.chunks(piece) {
            partial.extend_from_slice(chunk);
            let n = s.fanin.feed(&partial, &s.interest).unwrap();
            partial.drain(..n);
            s.fanin.flush(&s.hub.inboxes, &s.stats);
        }
        assert!(partial.is_empty());
        let got: usize = drained(&s.hub, 0).iter().map(Vec::len).sum();
        assert_eq!(got, 20, "piece {piece}");
    }
}

#[test]
fn garbage_is_an_error_after_what_came_before() {
    let mut s = setup();
    let mut buf = message(b'*', "rh:t:a", &plain("n2", 1, "a", b"ok"));
    buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let e = s.fanin.feed(&buf, &s.interest).unwrap_err();
    assert_eq!(e.code(), "resp_malformed");
    s.fanin.flush(&s.hub.inboxes, &s.stats);
    assert_eq!(drained(&s.hub, 0), vec![vec!["one a ok"]]);
    let huge = format!("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n${}\r\n", 1u64 << 40);
    let e = s.fanin.feed(huge.as_bytes(), &s.interest).unwrap_err();
    assert_eq!(e.code(), "resp_too_large");
}
