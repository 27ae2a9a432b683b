//! History on the shards (memory store, one node): two sans-IO shards, their inboxes pumped by
//! hand. Offsets, order, epochs, ring eviction and recovery, on the owner and across shards.

use serde_json::Value;

use super::*;
use crate::config::{Namespace, Namespaces};
use crate::shard::history::owner;

/// Two shards with history on the shards (`h:*` keeps 3 publications), base epoch `base`.
fn pair() -> Vec<ShardState> {
    let mut hub = HubShared::for_bench_pubsub(2);
    hub.namespaces = Namespaces::new(&[Namespace {
        pattern: "h:*".into(),
        history_size: 3,
        ..Namespace::default()
    }])
    .expect("namespaces");
    hub.shard_history = Some("base".into());
    let hub = Arc::new(hub);
    (0..2).map(|i| ShardState::new(i, hub.clone())).collect()
}

/// A topic `h:<n>` that shard `shard` owns.
fn owned_by(shard: usize) -> String {
    (0..)
        .map(|n| format!("h:{n}"))
        .find(|t| owner(t, 2) == shard)
        .expect("some topic")
}

/// Applies every queued inbox message until all are empty.
fn pump(shards: &mut [ShardState]) {
    loop {
        let mut any = false;
        for st in shards.iter_mut() {
            let hub = st.hub.clone();
            while let Some(m) = hub.inboxes[st.index].pop() {
                st.handle_msg(m);
                any = true;
            }
        }
        if !any {
            return;
        }
    }
}

/// The JSON text frames written to `slot` since the last call.
fn texts(st: &mut ShardState, slot: u32) -> Vec<Value> {
    let out = written(st, slot);
    let mut v = Vec::new();
    let mut i = 0;
    while i + 2 <= out.len() {
        let (len, at) = match out[i + 1] {
            126 => (u16::from_be_bytes([out[i + 2], out[i + 3]]) as usize, i + 4),
            n => (n as usize, i + 2),
        };
        v.push(serde_json::from_slice(&out[at..at + len]).expect("JSON frame"));
        i = at + len;
    }
    v
}

fn send(shards: &mut [ShardState], at: (usize, u32), json: &str) {
    shards[at.0].on_input(at.1, &mut frame(1, json.as_bytes()));
    pump(shards);
}

fn conn(shards: &mut [ShardState], shard: usize) -> (usize, u32) {
    (shard, upgraded(&mut shards[shard]))
}

fn publish(shards: &mut [ShardState], at: (usize, u32), topic: &str, n: u64) {
    let msg = format!(
        r#"{{"event":"m","topic":"{topic}","data":{n},"id":{}}}"#,
        100 + n
    );
    send(shards, at, &msg);
}

fn offsets(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["event"] == "m")
        .map(|f| f["offset"].as_u64().expect("offset"))
        .collect()
}

fn replies(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["event"] == "reply" && f["id"].as_u64().is_some_and(|i| i > 100))
        .map(|f| f["data"]["offset"].as_u64().expect("offset"))
        .collect()
}

/// Publishers on the owner and on the other shard, subscribers on both: one gapless order,
/// every subscriber sees it, every publisher gets its offset; the epoch is the one the store
/// would have given the topic.
#[test]
fn publications_are_sequenced_by_the_owner_wherever_they_arrive() {
    for own in [0, 1] {
        let mut s = pair();
        let t = owned_by(own);
        let subs = [conn(&mut s, 0), conn(&mut s, 1)];
        for (i, &c) in subs.iter().enumerate() {
            let msg = format!(r#"{{"event":"subscribe","topic":"{t}","id":{}}}"#, i + 1);
            send(&mut s, c, &msg);
            let r = texts(&mut s[c.0], c.1);
            assert_eq!(r[0]["data"]["offset"], 0, "{r:?}");
            let epoch = crate::store::unwritten_epoch("base", &t);
            assert_eq!(r[0]["data"]["epoch"], &*epoch);
        }
        let pubs = [conn(&mut s, own), conn(&mut s, 1 - own)];
        for n in 1..=6 {
            publish(&mut s, pubs[(n % 2) as usize], &t, n);
        }
        for &c in &subs {
            assert_eq!(offsets(&texts(&mut s[c.0], c.1)), [1, 2, 3, 4, 5, 6]);
        }
        let mut got: Vec<u64> = pubs
            .iter()
            .flat_map(|&c| replies(&texts(&mut s[c.0], c.1)))
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3, 4, 5, 6], "each publisher got its offsets");
        assert_eq!(s[own].history.kept(&t), 3, "the owner keeps the ring");
        assert_eq!(s[1 - own].history.len(), 0, "the other shard keeps nothing");
    }
}

/// Recovery after `since`, on the owner and on the other shard: the missed publications still
/// in the ring come in the reply, then the live ones, without gap or duplicate; once the ring
/// evicted some, `recovered` is false.
#[test]
fn recovery_reads_go_to_the_owner() {
    for sub_shard in [0, 1] {
        let mut s = pair();
        let t = owned_by(0);
        let p = conn(&mut s, 1);
        for n in 1..=4 {
            publish(&mut s, p, &t, n);
        }
        let epoch = crate::store::unwritten_epoch("base", &t);
        let c = conn(&mut s, sub_shard);
        let msg = format!(
            r#"{{"event":"subscribe","topic":"{t}","id":1,"data":{{"since":{{"epoch":"{epoch}","offset":2}}}}}}"#
        );
        send(&mut s, c, &msg);
        let r = texts(&mut s[c.0], c.1);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0]["data"]["recovered"], true, "{r:?}");
        let pubs: Vec<u64> = r[0]["data"]["publications"]
            .as_array()
            .expect("publications")
            .iter()
            .map(|p| p["offset"].as_u64().expect("offset"))
            .collect();
        assert_eq!(pubs, [3, 4]);
        publish(&mut s, p, &t, 5);
        assert_eq!(offsets(&texts(&mut s[c.0], c.1)), [5]);

        // Offset 1 is evicted (the ring keeps 3..=5): not recoverable from 0.
        let c2 = conn(&mut s, sub_shard);
        let msg = format!(
            r#"{{"event":"subscribe","topic":"{t}","id":1,"data":{{"since":{{"epoch":"{epoch}","offset":0}}}}}}"#
        );
        send(&mut s, c2, &msg);
        let r = texts(&mut s[c2.0], c2.1);
        assert_eq!(r[0]["data"]["recovered"], false, "{r:?}");
        assert_eq!(r[0]["data"]["offset"], 5);

        // Another epoch: not recoverable either.
        let c3 = conn(&mut s, sub_shard);
        let msg = format!(
            r#"{{"event":"subscribe","topic":"{t}","id":1,"data":{{"since":{{"epoch":"x","offset":4}}}}}}"#
        );
        send(&mut s, c3, &msg);
        let r = texts(&mut s[c3.0], c3.1);
        assert_eq!(r[0]["data"]["recovered"], false, "{r:?}");
    }
}

/// A `history` request from either shard reads the owner's ring: the newest `limit`, oldest
/// first, with the position.
#[test]
fn history_requests_read_the_owners_ring() {
    let mut s = pair();
    let t = owned_by(1);
    let p = conn(&mut s, 0);
    for n in 1..=5 {
        publish(&mut s, p, &t, n);
    }
    for shard in [0, 1] {
        let c = conn(&mut s, shard);
        let msg = format!(r#"{{"event":"history","topic":"{t}","id":7,"data":{{"limit":2}}}}"#);
        send(&mut s, c, &msg);
        let r = texts(&mut s[c.0], c.1);
        assert_eq!(r[0]["data"]["offset"], 5, "{r:?}");
        let pubs: Vec<u64> = r[0]["data"]["publications"]
            .as_array()
            .expect("publications")
            .iter()
            .map(|p| p["offset"].as_u64().expect("offset"))
            .collect();
        assert_eq!(pubs, [4, 5]);
        // The ring keeps the owner's frames: event and data read back from them.
        for p in r[0]["data"]["publications"]
            .as_array()
            .expect("publications")
        {
            assert_eq!(p["event"], "m", "{p}");
            assert_eq!(p["data"], p["offset"], "{p}");
        }
    }
}

/// A subscriber on the other shard whose subscribe waits for the owner's answer while
/// publications go on: it gets the answer's position, then exactly the publications after it.
#[test]
fn a_held_subscribe_across_shards_has_no_gap_or_duplicate() {
    let mut s = pair();
    let t = owned_by(0);
    let p = conn(&mut s, 0);
    publish(&mut s, p, &t, 1);
    let c = conn(&mut s, 1);
    // Subscribe, and publish on the owner before the subscriber's shard runs its inbox.
    let msg = format!(r#"{{"event":"subscribe","topic":"{t}","id":1}}"#);
    s[1].on_input(c.1, &mut frame(1, msg.as_bytes()));
    for n in 2..=4 {
        let m = format!(r#"{{"event":"m","topic":"{t}","data":{n}}}"#);
        s[0].on_input(p.1, &mut frame(1, m.as_bytes()));
        pump(&mut s);
    }
    publish(&mut s, p, &t, 5);
    let r = texts(&mut s[1], c.1);
    let top = r[0]["data"]["offset"].as_u64().expect("answer first");
    let after = offsets(&r[1..]);
    let want: Vec<u64> = (top + 1..=5).collect();
    assert_eq!(after, want, "{r:?}");
}

/// Many publications in one read, interleaving two topics the owner keeps history for, one
/// without history, and the same topics handed over from the other shard: the owner finds the
/// topic it appended to last without a lookup (`Streams::last_for`), and every topic still
/// gets its own gapless offsets, in order, with the plain topic left without any.
#[test]
fn interleaved_topics_in_one_read_keep_their_own_offsets() {
    let mut s = pair();
    let t = owned_by(0);
    let u = (0..)
        .map(|n| format!("h:u{n}"))
        .find(|x| owner(x, 2) == 0)
        .expect("another topic");
    let subs: Vec<(usize, u32)> = (0..3).map(|_| conn(&mut s, 0)).collect();
    for (c, topic) in subs.iter().zip([&t, &u, &"plain".to_string()]) {
        let msg = format!(r#"{{"event":"subscribe","topic":"{topic}","id":1}}"#);
        send(&mut s, *c, &msg);
        texts(&mut s[c.0], c.1);
    }
    let (p, far) = (conn(&mut s, 0), conn(&mut s, 1));
    let order = [&t, &t, &u, &t, &"plain".to_string(), &t, &u, &u, &t];
    let mut read = Vec::new();
    for (n, topic) in order.iter().enumerate() {
        let m = format!(r#"{{"event":"m","topic":"{topic}","data":{n}}}"#);
        read.extend(frame(1, m.as_bytes()));
    }
    s[0].on_input(p.1, &mut read);
    // The other shard's publications reach the owner through its inbox, between runs.
    publish(&mut s, far, &u, 100);
    publish(&mut s, far, &t, 101);
    s[0].on_input(
        p.1,
        &mut frame(1, format!(r#"{{"event":"m","topic":"{t}"}}"#).as_bytes()),
    );
    pump(&mut s);
    assert_eq!(offsets(&texts(&mut s[0], subs[0].1)), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(offsets(&texts(&mut s[0], subs[1].1)), [1, 2, 3, 4]);
    let plain = texts(&mut s[0], subs[2].1);
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(plain[0].get("offset").is_none(), "{plain:?}");
    assert_eq!(s[0].history.kept(&t), 3, "trimmed to the limit");
}
