//! The conformance suite every [`Store`] passes (run against `memory`, `redb` and `redis` — each
//! Redis test on its own `redis-server`), the redb-only durability tests, the Redis-only tests
//! (cluster behaviour and faults), and a model-based property test of the memory store's history.

use std::time::Duration;

use super::memory::MemoryStore;
use super::redb::RedbStore;
use super::redis::RedisStore;
use super::*;

const T0: u64 = 1_700_000_000_000;

fn hl(size: usize, ttl_s: u64) -> HistoryLimits {
    HistoryLimits {
        size,
        ttl: Duration::from_secs(ttl_s),
    }
}

fn il(max_messages: usize, ttl_s: u64) -> InboxLimits {
    InboxLimits {
        max_messages,
        ttl: Duration::from_secs(ttl_s),
    }
}

fn msg<'a>(event: &'a str, data: &'a [u8]) -> NewMessage<'a> {
    NewMessage {
        topic: None,
        event,
        data: Some(data),
    }
}

fn offsets(r: &HistoryRead) -> Vec<u64> {
    r.publications.iter().map(|p| p.offset).collect()
}

fn offsets_gapless_per_topic(s: &mut dyn Store) {
    let l = hl(100, 0);
    for i in 1..=5u64 {
        assert_eq!(s.append("a", l, "e", Some(b"1"), T0).unwrap().offset, i);
        if i % 2 == 0 {
            assert_eq!(s.append("b", l, "e", None, T0).unwrap().offset, i / 2);
        }
    }
    assert_eq!(s.position("a").unwrap().offset, 5);
    assert_eq!(s.position("b").unwrap().offset, 2);
    assert_eq!(s.position("c").unwrap().offset, 0);
    s.commit().unwrap();
    assert_eq!(s.append("a", l, "e", None, T0).unwrap().offset, 6);
}

fn epochs(s: &mut dyn Store) {
    let l = hl(2, 0);
    let e = s.position("a").unwrap().epoch;
    for _ in 0..5 {
        assert_eq!(s.append("a", l, "e", None, T0).unwrap().epoch, e);
    }
    let r = s.read("b", l, 0, 10, T0).unwrap();
    assert_eq!(r.pos.offset, 0);
    assert!(r.complete && r.publications.is_empty());
    let b = s.append("b", l, "e", None, T0).unwrap();
    assert_eq!(
        b.epoch, r.pos.epoch,
        "the first append keeps the epoch a read reported"
    );
    assert_ne!(b.epoch, e, "each stream has its own epoch");
    s.commit().unwrap();
    assert_eq!(s.position("a").unwrap().epoch, e);
}

fn read_semantics(s: &mut dyn Store) {
    let l = hl(5, 0);
    for i in 1..=8u64 {
        let data = format!("{{\"i\":{i}}}");
        let d = (i != 8).then_some(data.as_bytes());
        s.append("t", l, &format!("ev{i}"), d, T0 + i).unwrap();
    }
    let r = s.read("t", l, 0, 10, T0 + 9).unwrap();
    assert_eq!(
        (offsets(&r), r.complete),
        (vec![4, 5, 6, 7, 8], false),
        "trimmed"
    );
    assert_eq!(r.pos.offset, 8);
    assert_eq!(&*r.publications[0].event, "ev4");
    assert_eq!(r.publications[0].data.as_deref(), Some(&b"{\"i\":4}"[..]));
    assert_eq!(r.publications[0].time_ms, T0 + 4);
    assert_eq!(r.publications[4].data, None);
    let r = s.read("t", l, 3, 10, T0 + 9).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![4, 5, 6, 7, 8], true));
    let r = s.read("t", l, 5, 2, T0 + 9).unwrap();
    assert_eq!(
        (offsets(&r), r.complete),
        (vec![7, 8], false),
        "more than limit"
    );
    let r = s.read("t", l, 6, 2, T0 + 9).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![7, 8], true));
    let r = s.read("t", l, 6, 0, T0 + 9).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![], false));
    let r = s.read("t", l, 8, 10, T0 + 9).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![], true), "at the top");
    let r = s.read("t", l, 9, 10, T0 + 9).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![], false), "beyond the top");
    assert_eq!(r.pos.offset, 8);

    // TTL: 10 s; publications 1 s apart.
    let l = hl(100, 10);
    for i in 1..=5u64 {
        s.append("ttl", l, "e", None, T0 + i * 1000).unwrap();
    }
    // At T0 + 12.5 s, offsets 1 and 2 are older than 10 s.
    let r = s.read("ttl", l, 0, 10, T0 + 12_500).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![3, 4, 5], false), "ttl");
    let r = s.read("ttl", l, 2, 10, T0 + 12_500).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![3, 4, 5], true));
    let r = s.read("ttl", l, 1, 2, T0 + 12_500).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![4, 5], false));
    // Size and TTL apply to what the latest append kept (shrinking the size trims).
    s.append("ttl", hl(2, 10), "e", None, T0 + 13_000).unwrap();
    let r = s.read("ttl", l, 3, 10, T0 + 13_000).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![5, 6], false));
}

fn inbox_put_offsets_ids(s: &mut dyn Store) {
    let l = il(100, 3600);
    let mut ids = Vec::new();
    for i in 1..=3u64 {
        let (m, dropped) = s.inbox_put("u1", msg("e", b"{}"), l, T0).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(m.offset, i);
        ids.push(m.id);
        if i < 3 {
            let topic = NewMessage {
                topic: Some("room:1"),
                event: "x",
                data: None,
            };
            let (m, _) = s.inbox_put("u2", topic, l, T0 + i).unwrap();
            assert_eq!((m.offset, m.attempts, m.created_ms), (i, 0, T0 + i));
            ids.push(m.id);
        }
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "ids unique");
    assert!(ids.iter().all(|&id| id > 0));
    let list = s.inbox_list("u2", T0 + 10).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].topic.as_deref(), Some("room:1"));
    assert_eq!((&*list[0].event, list[0].data.as_ref()), ("x", None));
    let list = s.inbox_list("u1", T0 + 10).unwrap();
    assert_eq!(list[0].topic, None);
    assert_eq!(list[0].data.as_deref(), Some(&b"{}"[..]));
    let st = s.status(ids[0]).unwrap().unwrap();
    assert_eq!(
        (&*st.user, st.offset, st.status),
        ("u1", 1, MessageStatus::Pending)
    );
    assert!(s.inbox_list("nobody", T0).unwrap().is_empty());
}

fn delivered_and_ack(s: &mut dyn Store) {
    let l = il(100, 3600);
    let (m1, _) = s.inbox_put("u", msg("a", b"1"), l, T0).unwrap();
    let (m2, _) = s.inbox_put("u", msg("b", b"2"), l, T0).unwrap();
    s.inbox_delivered("u", m1.offset, 2).unwrap();
    s.inbox_delivered("u", m1.offset, 1).unwrap();
    s.inbox_delivered("u", 99, 1).unwrap();
    s.inbox_delivered("nobody", 1, 1).unwrap();
    let st = s.status(m1.id).unwrap().unwrap();
    assert_eq!((st.status, st.attempts), (MessageStatus::Delivered, 3));
    let list = s.inbox_list("u", T0).unwrap();
    assert_eq!(list[0].attempts, 3);
    assert_eq!(list[1].attempts, 0);
    let ack = s.inbox_ack("u", m1.offset).unwrap().unwrap();
    assert_eq!(
        (ack.id, ack.offset, ack.status),
        (m1.id, 1, MessageStatus::Acked)
    );
    assert_eq!(&*ack.user, "u");
    assert_eq!(s.inbox_ack("u", m1.offset).unwrap(), None, "second ack");
    assert_eq!(s.inbox_ack("u", 99).unwrap(), None);
    s.inbox_delivered("u", m1.offset, 1).unwrap();
    let st = s.status(m1.id).unwrap().unwrap();
    assert_eq!((st.status, st.attempts), (MessageStatus::Acked, 3));
    let list = s.inbox_list("u", T0).unwrap();
    assert_eq!(list.iter().map(|m| m.id).collect::<Vec<_>>(), vec![m2.id]);
    s.commit().unwrap();
    assert_eq!(
        s.status(m2.id).unwrap().unwrap().status,
        MessageStatus::Pending
    );
}

fn inbox_list_order_and_expiry(s: &mut dyn Store) {
    let l = il(100, 10);
    for i in 0..4u64 {
        s.inbox_put("u", msg("e", b"1"), l, T0 + i * 1000).unwrap();
    }
    let list = s.inbox_list("u", T0 + 4000).unwrap();
    assert_eq!(
        list.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Exactly at the TTL a message is not older than it yet (as `expire` sees it).
    let list = s.inbox_list("u", T0 + 10_000).unwrap();
    assert_eq!(list.len(), 4);
    assert!(s.expire(l, T0 + 10_000).unwrap().is_empty());
    // At T0 + 11.5 s, offsets 1 and 2 are past their TTL even before `expire` ran.
    let list = s.inbox_list("u", T0 + 11_500).unwrap();
    assert_eq!(
        list.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![3, 4]
    );
}

fn max_messages_drops_oldest(s: &mut dyn Store) {
    let l = il(2, 3600);
    let (a, _) = s.inbox_put("u", msg("e", b"1"), l, T0).unwrap();
    let (_, d) = s.inbox_put("u", msg("e", b"2"), l, T0).unwrap();
    assert!(d.is_empty());
    let (c, d) = s.inbox_put("u", msg("e", b"3"), l, T0).unwrap();
    assert_eq!(c.offset, 3);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].id, d[0].offset, d[0].status),
        (a.id, 1, MessageStatus::Dropped)
    );
    assert_eq!(&*d[0].user, "u");
    assert_eq!(
        s.status(a.id).unwrap().unwrap().status,
        MessageStatus::Dropped
    );
    let list = s.inbox_list("u", T0).unwrap();
    assert_eq!(
        list.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![2, 3]
    );
    // An ack frees a place: the next put drops nothing.
    s.inbox_ack("u", 2).unwrap().unwrap();
    let (_, d) = s.inbox_put("u", msg("e", b"4"), l, T0).unwrap();
    assert!(d.is_empty());
    // A smaller limit drops several.
    let (_, d) = s.inbox_put("u", msg("e", b"5"), il(1, 3600), T0).unwrap();
    assert_eq!(d.iter().map(|c| c.offset).collect::<Vec<_>>(), vec![3, 4]);
}

fn expire_and_forget(s: &mut dyn Store) {
    let l = il(100, 10);
    let (m1, _) = s.inbox_put("u", msg("e", b"1"), l, T0).unwrap();
    let (m2, _) = s.inbox_put("v", msg("e", b"2"), l, T0 + 5000).unwrap();
    assert!(s.expire(l, T0 + 10_000).unwrap().is_empty());
    let ch = s.expire(l, T0 + 10_001).unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(
        (ch[0].id, ch[0].offset, ch[0].status),
        (m1.id, 1, MessageStatus::Expired)
    );
    assert_eq!(
        s.status(m1.id).unwrap().unwrap().status,
        MessageStatus::Expired
    );
    assert!(s.inbox_list("u", T0 + 10_001).unwrap().is_empty());
    assert_eq!(s.inbox_ack("u", 1).unwrap(), None);
    s.commit().unwrap();
    // m2 expires at +15 s; m1's final status is forgotten 10 s after it expired.
    let ch = s.expire(l, T0 + 20_002).unwrap();
    assert_eq!(ch.iter().map(|c| c.id).collect::<Vec<_>>(), vec![m2.id]);
    assert_eq!(s.status(m1.id).unwrap(), None, "forgotten");
    assert!(s.status(m2.id).unwrap().is_some());
    s.expire(l, T0 + 40_000).unwrap();
    assert_eq!(s.status(m2.id).unwrap(), None);
    // An acked status (final at the wall clock) is forgotten after the TTL too.
    let now = now_ms();
    let (m3, _) = s.inbox_put("u", msg("e", b"3"), l, now).unwrap();
    s.inbox_ack("u", m3.offset).unwrap().unwrap();
    s.expire(l, now).unwrap();
    assert_eq!(
        s.status(m3.id).unwrap().unwrap().status,
        MessageStatus::Acked
    );
    s.expire(l, now + 60_000).unwrap();
    assert_eq!(s.status(m3.id).unwrap(), None);
    // A zero TTL never expires.
    let (m4, _) = s.inbox_put("w", msg("e", b"4"), il(10, 0), T0).unwrap();
    assert!(s.expire(il(10, 0), u64::MAX).unwrap().is_empty());
    assert_eq!(s.inbox_list("w", u64::MAX - 1).unwrap()[0].id, m4.id);
}

fn status_each_state(s: &mut dyn Store) {
    let l = il(1, 10);
    assert_eq!(s.status(12345).unwrap(), None);
    let (p, _) = s.inbox_put("p", msg("e", b"1"), l, T0).unwrap();
    let (d, _) = s.inbox_put("d", msg("e", b"1"), l, T0).unwrap();
    s.inbox_delivered("d", 1, 1).unwrap();
    let (a, _) = s.inbox_put("a", msg("e", b"1"), l, T0).unwrap();
    s.inbox_ack("a", 1).unwrap();
    let (x, _) = s.inbox_put("x", msg("e", b"1"), l, T0).unwrap();
    s.inbox_put("x", msg("e", b"2"), l, T0 + 20_000).unwrap();
    let (e, _) = s.inbox_put("e", msg("e", b"1"), l, T0).unwrap();
    s.inbox_delivered("e", 1, 1).unwrap();
    // Expire only what is older than +10 s at +10.5 s (not x's second message).
    let ch = s.expire(l, T0 + 10_500).unwrap();
    assert_eq!(ch.len(), 3, "p, d and e expire: {ch:?}");
    let (p2, _) = s.inbox_put("p", msg("e", b"2"), l, T0 + 10_500).unwrap();
    let want = [
        (p2.id, MessageStatus::Pending, 0),
        (d.id, MessageStatus::Expired, 1),
        (a.id, MessageStatus::Acked, 0),
        (x.id, MessageStatus::Dropped, 0),
        (e.id, MessageStatus::Expired, 1),
        (p.id, MessageStatus::Expired, 0),
    ];
    for (id, status, attempts) in want {
        let st = s.status(id).unwrap().unwrap();
        assert_eq!((st.id, st.status, st.attempts), (id, status, attempts));
        assert_eq!(st.created_ms, if id == p2.id { T0 + 10_500 } else { T0 });
    }
    s.inbox_delivered("p", p2.offset, 1).unwrap();
    assert_eq!(
        s.status(p2.id).unwrap().unwrap().status,
        MessageStatus::Delivered
    );
}

fn outbox_at_least_once(s: &mut dyn Store) {
    let ev = |i: u32| Bytes::from(format!("{{\"type\":\"t\",\"i\":{i}}}"));
    assert_eq!(s.outbox_stats().unwrap(), OutboxStats::default());
    s.outbox_push(&[ev(0), ev(1), ev(2)], T0).unwrap();
    s.commit().unwrap();
    let st = s.outbox_stats().unwrap();
    assert_eq!((st.backlog, st.oldest_ms), (3, Some(T0)));
    let lease = Duration::from_secs(60);
    let a = s.outbox_claim(2, lease, T0).unwrap();
    assert_eq!(
        a.iter().map(|e| &e.body).collect::<Vec<_>>(),
        [&ev(0), &ev(1)]
    );
    assert!(a.iter().all(|e| e.created_ms == T0));
    // Leased ones are not handed out again while the lease lasts.
    let b = s.outbox_claim(10, lease, T0 + 1).unwrap();
    assert_eq!(b.iter().map(|e| &e.body).collect::<Vec<_>>(), [&ev(2)]);
    let ids: std::collections::HashSet<&str> = a.iter().chain(&b).map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "ids are unique");
    s.outbox_done(&[a[0].id.clone(), "999999".into()]).unwrap();
    s.commit().unwrap();
    assert_eq!(s.outbox_stats().unwrap().backlog, 2);
    // A lease of zero is over at once: what is not done is handed out again, in order.
    s.outbox_push(&[ev(3)], T0 + 5).unwrap();
    s.commit().unwrap();
    let c = s.outbox_claim(10, Duration::ZERO, T0 + 10).unwrap();
    let bodies: Vec<&Bytes> = c.iter().map(|e| &e.body).collect();
    assert_eq!(bodies, [&ev(1), &ev(2), &ev(3)]);
    assert_eq!(c[0].id, a[1].id, "a re-sent event keeps its id");
    s.outbox_done(&c.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .unwrap();
    s.commit().unwrap();
    assert_eq!(s.outbox_stats().unwrap(), OutboxStats::default());
    assert!(s
        .outbox_claim(10, Duration::ZERO, T0 + 20)
        .unwrap()
        .is_empty());
}

/// Runs each named suite function against a fresh store of each kind.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(#[test]
            fn $name() {
                super::$name(&mut super::MemoryStore::new());
            })*
        }
        mod redb_store {
            use crate::store::Store as _;
            $(#[test]
            fn $name() {
                let dir = tempfile::tempdir().unwrap();
                let mut s = super::RedbStore::open(dir.path()).unwrap();
                super::$name(&mut s);
                s.commit().unwrap();
            })*
        }
        mod redis_store {
            $(#[test]
            fn $name() {
                let Some(r) = super::redis_server::RedisServer::start() else {
                    return;
                };
                let mut s = super::RedisStore::connect(&[r.url()], "rh", "n1").unwrap();
                super::$name(&mut s);
            })*
        }
    };
}

conformance!(
    offsets_gapless_per_topic,
    epochs,
    read_semantics,
    inbox_put_offsets_ids,
    delivered_and_ack,
    inbox_list_order_and_expiry,
    max_messages_drops_oldest,
    expire_and_forget,
    status_each_state,
    outbox_at_least_once,
);

#[test]
fn memory_reads_of_unknown_topics_store_nothing() {
    let mut s = MemoryStore::new();
    for i in 0..1000 {
        let topic = format!("never:{i}");
        s.position(&topic).unwrap();
        s.read(&topic, hl(10, 0), 0, 50, T0).unwrap();
    }
    assert_eq!(s.stream_count(), 0);
}

mod model;
mod redb_only;
mod redb_puts;
mod redb_trim;
mod redb_wal;
mod redis_batch;
mod redis_only;
mod redis_server;
mod sio_sessions;
