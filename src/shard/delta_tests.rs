//! Delta delivery on one shard: made once per publication, shared, full when it must be.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::proto::delta;
use crate::shard::inbox::{ShardMsg, StoredPub};
use crate::shard::shared::HubShared;
use crate::shard::tests::{frame, shard, upgraded, written};
use crate::shard::ShardState;

/// The payloads of the server frames in `out` (unmasked, unfragmented).
fn payloads(out: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < out.len() {
        let (hl, n) = match out[i + 1] & 0x7f {
            126 => (4, usize::from(u16::from_be_bytes([out[i + 2], out[i + 3]]))),
            127 => (
                10,
                u64::from_be_bytes(out[i + 2..i + 10].try_into().unwrap()) as usize,
            ),
            n => (2, usize::from(n)),
        };
        v.push(out[i + hl..i + hl + n].to_vec());
        i += hl + n;
    }
    v
}

/// A 2 KB-ish JSON state object; `n` changes one field.
fn state(n: u64) -> String {
    let mut s = format!("{{\"version\":{n},\"players\":[");
    for i in 0..30 {
        let score = if i == n % 30 { n * 7 } else { i * 10 };
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"player-{i}\",\"score\":{score}}},"
        ));
    }
    s.push_str("{}]}");
    s
}

fn stored(epoch: &str, offset: u64, data: Option<&str>) -> ShardMsg {
    let sp = StoredPub {
        topic: "t".into(),
        frame: crate::proto::envelope::stored_publication(
            "t",
            "state",
            data.map(str::as_bytes),
            offset,
        ),
        exclude: None,
        epoch: epoch.into(),
        offset,
    };
    ShardMsg::Stored(Arc::new([sp]))
}

/// A shard with `delta` delta subscribers and one plain subscriber of `t` (the last slot).
fn setup(delta: usize, full_every: u32) -> (ShardState, Vec<u32>) {
    let mut hub = HubShared::for_bench(1);
    hub.config.compression.delta_full_every = full_every;
    let mut st = ShardState::new(0, Arc::new(hub));
    let mut slots = Vec::new();
    for i in 0..=delta {
        let slot = upgraded(&mut st);
        st.on_input(
            slot,
            &mut frame(1, br#"{"event":"subscribe","topic":"t","id":1}"#),
        );
        written(&mut st, slot);
        if i < delta {
            let id = st.conns[slot as usize].id;
            st.delta_subscribe(id, "t");
        }
        slots.push(slot);
    }
    (st, slots)
}

/// A client's view: applies what it receives, returns (data, was it a delta) per publication.
struct Client {
    base: Option<Vec<u8>>,
}

impl Client {
    fn take(&mut self, payload: &[u8]) -> (String, bool) {
        let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
        if let Some(d) = v["delta"].as_str() {
            let base = self.base.as_ref().expect("a delta needs a base");
            let out = delta::apply(base, d.as_bytes(), 1 << 20).expect("applies");
            self.base = Some(out.clone());
            (String::from_utf8(out).unwrap(), true)
        } else {
            let raw = serde_json::to_string(&v["data"]).unwrap();
            let parts = delta::split_stored(&crate::proto::envelope::stored_publication(
                "t",
                "state",
                Some(raw.as_bytes()),
                1,
            ))
            .unwrap();
            self.base = Some(parts.data.to_vec());
            (raw, false)
        }
    }
}

#[test]
fn one_delta_per_publication_shared_by_every_delta_subscriber() {
    let (mut st, slots) = setup(100, 0);
    let mut clients: Vec<Client> = slots.iter().map(|_| Client { base: None }).collect();
    for o in 1..=5 {
        // Compact JSON, as serde writes it, so the plain subscriber's re-encoding compares.
        let data =
            serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&state(o)).unwrap())
                .unwrap();
        st.handle_msg(stored("e1", o, Some(&data)));
        let mut delta_frames = std::collections::HashSet::new();
        for (i, &slot) in slots.iter().enumerate() {
            let out = written(&mut st, slot);
            let p = payloads(&out);
            assert_eq!(p.len(), 1);
            let (got, was_delta) = clients[i].take(&p[0]);
            assert_eq!(got, data, "subscriber {i} reconstructs publication {o}");
            let plain = i == slots.len() - 1;
            assert_eq!(was_delta, o > 1 && !plain, "subscriber {i}, offset {o}");
            if was_delta {
                assert!(p[0].len() * 5 < data.len(), "{} bytes", p[0].len());
                delta_frames.insert(p[0].clone());
            }
        }
        assert!(delta_frames.len() <= 1, "one delta frame for everyone");
    }
    let stats = &st.hub.stats[0];
    assert_eq!(
        stats.deltas.load(Relaxed),
        4,
        "one per publication after the first"
    );
    assert_eq!(stats.delta_deliveries.load(Relaxed), 400);
}

#[test]
fn gaps_epochs_missing_data_and_the_period_send_full() {
    let (mut st, slots) = setup(2, 4);
    let s = slots[0];
    let mut kinds = Vec::new();
    let mut publish = |st: &mut ShardState, epoch: &str, o: u64, data: Option<&str>| {
        st.handle_msg(stored(epoch, o, data));
        let p = payloads(&written(st, s));
        written(st, slots[1]);
        let v: serde_json::Value = serde_json::from_slice(&p[0]).unwrap();
        kinds.push(if v.get("delta").is_some() { 'd' } else { 'f' });
    };
    let d = |n| state(n);
    publish(&mut st, "e1", 1, Some(&d(1))); // f: nothing before
    publish(&mut st, "e1", 2, Some(&d(2))); // d
    publish(&mut st, "e1", 4, Some(&d(4))); // f: offset 3 missing
    publish(&mut st, "e1", 5, Some(&d(5))); // f: the 4th since the state was made
    publish(&mut st, "e1", 6, Some(&d(6))); // d
    publish(&mut st, "e2", 7, Some(&d(7))); // f: another epoch
    publish(&mut st, "e2", 8, None); // f: no data
    publish(&mut st, "e2", 9, Some(&d(9))); // f: the 8th (period); the one before had none
    publish(&mut st, "e2", 10, Some("1")); // f: the delta would not be smaller
    publish(&mut st, "e2", 11, Some(&d(11))); // f: delta of "1" to 2 KB is larger too
    publish(&mut st, "e2", 12, Some(&d(12))); // d
    assert_eq!(kinds.iter().collect::<String>(), "fdffdfffffd");
}

#[test]
fn a_subscriber_that_missed_one_gets_full_then_deltas_and_state_goes_with_the_last() {
    let (mut st, slots) = setup(2, 0);
    let (a, b) = (slots[0], slots[1]);
    let ida = st.conns[a as usize].id;
    let idb = st.conns[b as usize].id;
    st.handle_msg(stored("e1", 1, Some(&state(1))));
    written(&mut st, a);
    written(&mut st, b);
    // `b` is excluded from offset 2 (as a sender with exclude_sender would be).
    let sp = StoredPub {
        topic: "t".into(),
        frame: crate::proto::envelope::stored_publication(
            "t",
            "state",
            Some(state(2).as_bytes()),
            2,
        ),
        exclude: Some(idb),
        epoch: "e1".into(),
        offset: 2,
    };
    st.handle_msg(ShardMsg::Stored(Arc::new([sp])));
    assert!(
        payloads(&written(&mut st, a))[0].starts_with(br#"{"topic":"t","event":"state","delta":"#)
    );
    assert!(written(&mut st, b).is_empty());
    st.handle_msg(stored("e1", 3, Some(&state(3))));
    let pa = payloads(&written(&mut st, a));
    let pb = payloads(&written(&mut st, b));
    assert!(String::from_utf8_lossy(&pa[0]).contains("\"delta\":"));
    assert!(
        String::from_utf8_lossy(&pb[0]).contains("\"data\":"),
        "b missed 2: full"
    );
    // A subscribe again (a client recovering after a bad delta) restarts with a full one.
    st.delta_subscribe(ida, "t");
    st.handle_msg(stored("e1", 4, Some(&state(4))));
    assert!(String::from_utf8_lossy(&payloads(&written(&mut st, a))[0]).contains("\"data\":"));
    assert!(String::from_utf8_lossy(&payloads(&written(&mut st, b))[0]).contains("\"delta\":"));
    assert_eq!(st.delta_topics(), 1);
    st.on_input(
        a,
        &mut frame(1, br#"{"event":"unsubscribe","topic":"t","id":2}"#),
    );
    assert_eq!(st.delta_topics(), 1, "b still takes deltas");
    st.on_input(b, &mut frame(8, &1000u16.to_be_bytes()));
    assert_eq!(
        st.delta_topics(),
        0,
        "the last delta subscriber left: state dropped"
    );
}

#[test]
fn subscribe_refuses_delta_where_it_cannot_work() {
    let mut st = shard();
    let slot = upgraded(&mut st);
    for (req, code) in [
        (
            r#"{"event":"subscribe","topic":"t","id":1,"data":{"delta":"fossil"}}"#,
            "not_available",
        ),
        (
            r#"{"event":"subscribe","topic":"t*","id":2,"data":{"delta":"fossil"}}"#,
            "bad_request",
        ),
        (
            r#"{"event":"subscribe","topic":"t","id":3,"data":{"delta":"vcdiff"}}"#,
            "bad_request",
        ),
    ] {
        st.on_input(slot, &mut frame(1, req.as_bytes()));
        let p = payloads(&written(&mut st, slot));
        let v: serde_json::Value = serde_json::from_slice(&p[0]).unwrap();
        assert_eq!(v["event"], "error", "{req}");
        assert_eq!(v["data"]["code"], code, "{req}");
    }
    assert_eq!(st.delta_topics(), 0);
}
