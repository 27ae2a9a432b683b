//! The Redis store's batched appends: one script call per chunk of publications per instance,
//! offsets assigned in the script. Interleaved topics keep their own sequences, a run longer
//! than a call is cut into calls of one pipeline, a failing publication fails it and the rest
//! of its call without consuming an offset, and every publication reaches the topic's channel
//! with its position, in order. Also the position check's read of many streams at once.

use std::time::{Duration, Instant};

use super::redis_server::RedisServer;
use super::*;
use crate::proto::wire::{self, Decoded};

const PREFIX: &str = "rh";

/// Topic `topic` gets a stream, whose key then turns into a string: its next `XADD` is refused
/// (WRONGTYPE).
fn break_stream(r: &RedisServer, s: &mut RedisStore, topic: &str) {
    s.append(topic, hl(1000, 0), "e", None, T0).unwrap();
    ::redis::cmd("SET")
        .arg(format!("{PREFIX}:h:{topic}"))
        .arg("x")
        .exec(&mut r.conn())
        .unwrap();
}

fn store(r: &RedisServer) -> RedisStore {
    RedisStore::connect(&[r.url()], PREFIX, "n1").unwrap()
}

/// A received stored publication: topic, event, offset, data.
type Pub = (String, String, u64, Option<Vec<u8>>);

/// The next `n` cluster messages of `ps`, each as its publications (every one from this
/// store: wire kind 'B').
fn received(ps: &mut ::redis::PubSub<'_>, n: usize) -> Vec<Vec<Pub>> {
    let until = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < until, "messages not received: {out:?}");
        if let Ok(m) = ps.get_message() {
            let e = wire::decode(m.get_payload_bytes()).expect("a cluster message");
            assert_eq!(e.origin, b"n1~s");
            let Decoded::StoredBatch(b) = e.body else {
                panic!("not a stored batch: {:?}", e.body)
            };
            assert_eq!(m.get_channel_name(), wire::topic_channel(PREFIX, b.topic));
            out.push(
                b.iter()
                    .map(|w| {
                        (
                            w.topic.to_string(),
                            w.event.to_string(),
                            w.offset,
                            w.data.map(<[u8]>::to_vec),
                        )
                    })
                    .collect(),
            );
        }
    }
    out
}

fn req<'a>(topic: &'a str, event: &'a str, data: Option<&'a [u8]>) -> AppendReq<'a> {
    AppendReq {
        topic,
        limits: hl(1000, 0),
        event,
        data,
        exclude: 0,
    }
}

#[test]
fn interleaved_topics_keep_their_own_sequences_in_one_call() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r);
    s.append("b", hl(1000, 0), "e", None, T0).unwrap();
    let mut sub = r.conn();
    let mut ps = sub.as_pubsub();
    for t in ["a", "b"] {
        ps.subscribe(wire::topic_channel(PREFIX, t)).unwrap();
    }
    ps.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let reqs = [
        req("a", "a1", Some(b"1")),
        req("b", "b2", None),
        req("a", "a2", None),
        req("a", "a3", Some(b"3")),
        req("b", "b3", Some(b"[]")),
    ];
    let got: Vec<(String, u64)> = s
        .append_batch(&reqs, T0)
        .into_iter()
        .zip(&reqs)
        .map(|(p, r)| (r.event.to_string(), p.unwrap().offset))
        .collect();
    let want = [("a1", 1), ("b2", 2), ("a2", 2), ("a3", 3), ("b3", 3)];
    assert_eq!(
        got,
        want.map(|(e, o)| (e.to_string(), o)).to_vec(),
        "offsets per topic, in request order"
    );
    // What the cluster receives: one message per topic of the call (the topics in order of
    // first appearance), each with that topic's publications in offset order.
    let got = received(&mut ps, 2);
    let expect = |pick: &[usize]| -> Vec<Pub> {
        pick.iter()
            .map(|&k| {
                let r = &reqs[k];
                let (e, o) = want[k];
                (
                    r.topic.to_string(),
                    e.to_string(),
                    o,
                    r.data.map(<[u8]>::to_vec),
                )
            })
            .collect()
    };
    assert_eq!(got, vec![expect(&[0, 2, 3]), expect(&[1, 4])]);
    let read = s.read("a", hl(1000, 0), 0, 10, T0).unwrap();
    let events: Vec<&str> = read.publications.iter().map(|p| &*p.event).collect();
    assert_eq!(
        (offsets(&read), events),
        (vec![1, 2, 3], vec!["a1", "a2", "a3"])
    );
    assert_eq!(read.publications[0].data.as_deref(), Some(&b"1"[..]));
    assert_eq!(read.publications[1].data, None);
}

#[test]
fn a_run_longer_than_one_call_is_cut_and_stays_gapless() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r);
    let n = crate::store::redis::APPEND_CHUNK * 2 + 7;
    let reqs: Vec<AppendReq<'_>> = (0..n)
        .map(|i| req(if i % 3 == 0 { "x" } else { "y" }, "e", None))
        .collect();
    let mut next = [1u64, 1];
    for (p, r) in s.append_batch(&reqs, T0).into_iter().zip(&reqs) {
        let k = usize::from(r.topic == "y");
        assert_eq!(p.unwrap().offset, next[k], "{}", r.topic);
        next[k] += 1;
    }
    // Trimmed to the history size (approximately in Redis, exactly in what is served).
    let small = hl(10, 0);
    // Whole stream nodes (100 entries) go: 250 appends leave fewer.
    let reqs: Vec<AppendReq<'_>> = (0..250)
        .map(|_| AppendReq {
            limits: small,
            ..req("z", "e", None)
        })
        .collect();
    assert!(s.append_batch(&reqs, T0).into_iter().all(|p| p.is_ok()));
    let read = s.read("z", small, 0, 100, T0).unwrap();
    assert_eq!(offsets(&read), (241..=250).collect::<Vec<_>>());
    let len: u64 = ::redis::cmd("XLEN")
        .arg("rh:h:z")
        .query(&mut r.conn())
        .unwrap();
    assert!(len < 250, "the stream was trimmed: {len} entries");
}

#[test]
fn a_failing_publication_fails_the_rest_of_its_call_without_consuming_an_offset() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r);
    break_stream(&r, &mut s, "bad");
    let mut sub = r.conn();
    let mut ps = sub.as_pubsub();
    for t in ["ok", "bad"] {
        ps.subscribe(wire::topic_channel(PREFIX, t)).unwrap();
    }
    ps.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let reqs = [
        req("ok", "e", None),
        req("bad", "e", None),
        req("ok", "e", None),
    ];
    let got = s.append_batch(&reqs, T0);
    assert_eq!(got[0].as_ref().map(|p| p.offset).ok(), Some(1));
    for g in &got[1..] {
        let e = g.as_ref().expect_err("not applied");
        assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    }
    assert_eq!(
        s.position("ok").unwrap().offset,
        1,
        "the third was not tried"
    );
    assert_eq!(s.position("bad").unwrap().offset, 1, "no offset consumed");
    ::redis::cmd("DEL")
        .arg("rh:h:bad")
        .exec(&mut r.conn())
        .unwrap();
    assert_eq!(
        s.append("bad", hl(1000, 0), "e", None, T0).unwrap().offset,
        2
    );
    // Published: the one applied publication, then (one connection keeps the order) the next
    // call's — nothing of the two that were not appended.
    let pubs = |t: &str, o: u64| vec![(t.to_string(), "e".to_string(), o, None)];
    assert_eq!(received(&mut ps, 2), vec![pubs("ok", 1), pubs("bad", 2)]);
}

#[test]
fn positions_of_many_streams_in_one_read_write_nothing() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r);
    s.append("p", hl(10, 0), "e", None, T0).unwrap();
    s.append("p", hl(10, 0), "e", None, T0).unwrap();
    let known = s.position("p").unwrap();
    let unknown = s.position("q").unwrap();
    let got: Vec<(Arc<str>, u64)> = s
        .positions(&["q", "p", "q"])
        .into_iter()
        .map(|p| p.map(|p| (p.epoch, p.offset)).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            (unknown.epoch.clone(), 0),
            (known.epoch, 2),
            (unknown.epoch, 0)
        ]
    );
    let exists: u64 = ::redis::cmd("EXISTS")
        .arg("rh:hm:q")
        .query(&mut r.conn())
        .unwrap();
    assert_eq!(exists, 0, "an unknown stream is not written");
}

/// The stream entries of `key`: id, then field and value pairs.
fn entries(r: &RedisServer, key: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    ::redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut r.conn())
        .unwrap()
}

#[test]
fn a_failing_run_leaves_the_runs_before_it_applied_and_published_whole() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r);
    break_stream(&r, &mut s, "bad");
    let mut sub = r.conn();
    let mut ps = sub.as_pubsub();
    for t in ["ok", "bad", "u"] {
        ps.subscribe(wire::topic_channel(PREFIX, t)).unwrap();
    }
    ps.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Runs: ok × 3, bad (refused: WRONGTYPE), ok (not tried).
    let reqs = [
        req("ok", "e", Some(b"a")),
        req("ok", "e", None),
        req("ok", "e", Some(b"")),
        req("bad", "e", Some(b"b")),
        req("ok", "e", Some(b"c")),
    ];
    let got = s.append_batch(&reqs, T0);
    let applied: Vec<u64> = got[..3]
        .iter()
        .map(|g| g.as_ref().unwrap().offset)
        .collect();
    assert_eq!(applied, [1, 2, 3]);
    for g in &got[3..] {
        let e = g.as_ref().expect_err("not applied");
        assert!(e.to_string().contains("WRONGTYPE"), "{e}");
    }
    assert_eq!(
        s.position("ok").unwrap().offset,
        3,
        "the last was not tried"
    );
    s.append("u", hl(1000, 0), "e", None, T0).unwrap();
    // Published: the applied run whole, then (one connection keeps the order) the next call's.
    let p = |t: &str, o: u64, d: Option<&[u8]>| {
        (t.to_string(), "e".to_string(), o, d.map(<[u8]>::to_vec))
    };
    assert_eq!(
        received(&mut ps, 2),
        vec![
            vec![
                p("ok", 1, Some(b"a")),
                p("ok", 2, None),
                p("ok", 3, Some(b""))
            ],
            vec![p("u", 1, None)]
        ]
    );
}

#[test]
fn entry_ids_and_fields_are_exact_across_runs_digits_and_long_events() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r);
    // Offsets that cross 10^14 (where Lua's own number formatting turns to `1e+14`).
    let top = 99_999_999_999_995u64;
    ::redis::cmd("HSET")
        .arg("rh:hm:big")
        .arg("e")
        .arg("ep")
        .arg("o")
        .arg(top)
        .exec(&mut r.conn())
        .unwrap();
    let mut sub = r.conn();
    let mut ps = sub.as_pubsub();
    ps.subscribe(wire::topic_channel(PREFIX, "small")).unwrap();
    ps.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let long = "x".repeat(70_000);
    let datas: Vec<Vec<u8>> = (0..25).map(|i| format!("[{i}]").into_bytes()).collect();
    // Per publication: topic, event, data (none every third, empty every fifth); the long
    // event sits between two runs of "small".
    let mut reqs: Vec<AppendReq<'_>> = Vec::new();
    for (i, d) in datas.iter().enumerate() {
        let data = match i {
            _ if i % 3 == 0 => None,
            _ if i % 5 == 0 => Some(&b""[..]),
            _ => Some(&d[..]),
        };
        let topic = if i % 2 == 0 { "small" } else { "big" };
        let event = if i == 12 { &long[..] } else { "e" };
        reqs.push(req(topic, event, data));
    }
    let got = s.append_batch(&reqs, T0);
    let (mut small, mut big) = (0u64, top);
    let mut want: Vec<(String, u64, &AppendReq<'_>)> = Vec::new();
    for (g, q) in got.iter().zip(&reqs) {
        let n = if q.topic == "small" {
            small += 1;
            small
        } else {
            big += 1;
            big
        };
        assert_eq!(g.as_ref().unwrap().offset, n);
        want.push((q.topic.to_string(), n, q));
    }
    for topic in ["small", "big"] {
        let mine: Vec<&(String, u64, &AppendReq<'_>)> =
            want.iter().filter(|w| w.0 == topic).collect();
        let stored = entries(&r, &format!("rh:h:{topic}"));
        assert_eq!(stored.len(), mine.len(), "{topic}");
        for ((id, fields), (_, n, q)) in stored.iter().zip(mine) {
            assert_eq!(id, &format!("{n}-0"));
            let mut expect = vec![
                b"e".to_vec(),
                q.event.as_bytes().to_vec(),
                b"t".to_vec(),
                T0.to_string().into_bytes(),
            ];
            if let Some(d) = q.data {
                expect.extend([b"d".to_vec(), d.to_vec()]);
            }
            assert_eq!(fields, &expect, "{topic} {n}");
        }
    }
    assert!(
        s.read("big", hl(1000, 0), top, 100, T0)
            .unwrap()
            .publications
            .len()
            == 12
    );
    // The cluster message cuts the long event (its part holds 65,535 bytes); the stream has it
    // whole (above).
    let msg = &received(&mut ps, 1)[0];
    assert_eq!(msg.len(), 13);
    for (m, (_, n, q)) in msg.iter().zip(want.iter().filter(|w| w.0 == "small")) {
        let event = &q.event[..q.event.len().min(65_535)];
        let data = q.data.map(<[u8]>::to_vec);
        assert_eq!((&*m.1, m.2, &m.3), (event, *n, &data), "small {n}");
    }
}
