//! Several nodes on one Redis: appends reach the cluster channel with their position, topics
//! share one gapless sequence, expiry is reported once cluster-wide, and inboxes, the webhook
//! outbox and webhook key transitions are shared.

use std::collections::BTreeSet;
use std::time::Instant;

use super::*;
use crate::proto::wire::{self, Decoded};

#[test]
fn append_publishes_with_its_position() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r, "n1");
    let mut sub = r.conn();
    let mut ps = sub.as_pubsub();
    ps.subscribe(crate::proto::wire::topic_channel(PREFIX, "chat:a"))
        .unwrap();
    ps.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let l = hl(10, 0);
    let first = s
        .append("chat:a", l, "msg", Some(br#"{"x":1}"#), T0)
        .unwrap();
    let req = AppendReq {
        topic: "chat:a",
        limits: l,
        event: "ev2",
        data: None,
        exclude: 77,
    };
    let second = s.append_batch(&[req], T0).pop().unwrap().unwrap();
    let until = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(Instant::now() < until, "publications not received: {got:?}");
        if let Ok(m) = ps.get_message() {
            got.push(m.get_payload_bytes().to_vec());
        }
    }
    let mut seqs = Vec::new();
    for (payload, pos, event, data, exclude) in [
        (&got[0], &first, "msg", Some(&br#"{"x":1}"#[..]), 0),
        (&got[1], &second, "ev2", None, 77),
    ] {
        let e = wire::decode(payload).expect("a valid cluster message");
        assert_eq!(e.origin, b"n1~s");
        seqs.push(e.seq);
        let Decoded::StoredBatch(b) = e.body else {
            panic!("not a stored batch: {:?}", e.body)
        };
        assert_eq!(b.count, 1, "one publication per call");
        let w = b.iter().next().expect("a publication");
        assert_eq!(
            (w.topic, w.event, w.data, w.exclude),
            ("chat:a", event, data, exclude)
        );
        assert_eq!((w.epoch, w.offset), (&*pos.epoch, pos.offset));
    }
    assert_eq!(seqs[1], seqs[0].wrapping_add(1));
    assert_eq!((first.offset, second.offset), (1, 2));
}

#[test]
fn two_nodes_share_gapless_offsets() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let urls = [r.url()];
    let run = |node: &'static str| {
        let urls = urls.clone();
        std::thread::spawn(move || {
            let mut s = RedisStore::connect(&urls, PREFIX, node).unwrap();
            let mut got = Vec::new();
            for i in 0..100 {
                if i % 2 == 0 {
                    got.push(s.append("t", hl(1000, 0), "e", None, T0).unwrap());
                } else {
                    let req = AppendReq {
                        topic: "t",
                        limits: hl(1000, 0),
                        event: "e",
                        data: None,
                        exclude: 0,
                    };
                    for p in s.append_batch(&[req, req, req], T0) {
                        got.push(p.unwrap());
                    }
                }
            }
            got
        })
    };
    let (a, b) = (run("a"), run("b"));
    let mut all = a.join().unwrap();
    all.extend(b.join().unwrap());
    let epochs: BTreeSet<_> = all.iter().map(|p| p.epoch.clone()).collect();
    assert_eq!(epochs.len(), 1, "one epoch for every node");
    let seen: BTreeSet<u64> = all.iter().map(|p| p.offset).collect();
    assert_eq!(seen.len(), all.len(), "no offset twice");
    assert_eq!(seen, (1..=all.len() as u64).collect(), "no gap");
    let read = store(&r, "c").read("t", hl(1000, 0), 0, 1000, T0).unwrap();
    assert_eq!(offsets(&read), (1..=all.len() as u64).collect::<Vec<_>>());
}

#[test]
fn expire_on_two_nodes_reports_each_message_once() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let l = il(1000, 10);
    let mut s = store(&r, "a");
    let mut ids = BTreeSet::new();
    for i in 0..300 {
        let (m, _) = s
            .inbox_put(&format!("u{}", i % 7), msg("e", b"1"), l, T0)
            .unwrap();
        ids.insert(m.id);
    }
    let run = |node: &'static str| {
        let urls = [r.url()];
        std::thread::spawn(move || {
            let mut s = RedisStore::connect(&urls, PREFIX, node).unwrap();
            let mut got = Vec::new();
            for step in 0..20 {
                got.extend(s.expire(l, T0 + 10_001 + step).unwrap());
            }
            got
        })
    };
    let (a, b) = (run("a"), run("b"));
    let mut all = a.join().unwrap();
    all.extend(b.join().unwrap());
    assert!(all.iter().all(|c| c.status == MessageStatus::Expired));
    let reported: Vec<u64> = all.iter().map(|c| c.id).collect();
    let once: BTreeSet<u64> = reported.iter().copied().collect();
    assert_eq!(once.len(), reported.len(), "a message reported twice");
    assert_eq!(once, ids, "every message reported");
    assert_eq!(
        s.status(*ids.first().unwrap()).unwrap().unwrap().status,
        MessageStatus::Expired
    );
}

#[test]
fn inbox_is_shared_by_nodes() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&r, "a"), store(&r, "b"));
    let l = il(10, 60);
    let (m1, _) = a.inbox_put("u", msg("e", b"1"), l, T0).unwrap();
    let (m2, _) = b.inbox_put("u", msg("e", b"2"), l, T0).unwrap();
    assert_eq!((m1.offset, m2.offset), (1, 2));
    b.inbox_delivered("u", 1, 1).unwrap();
    let ack = b.inbox_ack("u", 1).unwrap().unwrap();
    assert_eq!(ack.id, m1.id);
    assert_eq!(
        a.inbox_ack("u", 1).unwrap(),
        None,
        "acked on the other node"
    );
    let list = a.inbox_list("u", T0).unwrap();
    assert_eq!(list.iter().map(|m| m.id).collect::<Vec<_>>(), vec![m2.id]);
    assert_eq!(a.status(m1.id).unwrap().unwrap().attempts, 1);
}

/// Two nodes read one outbox: each event goes to exactly one of them; a lease that ended lets
/// the other take over what one claimed and never finished.
#[test]
fn outbox_events_go_to_one_node_each() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&r, "n1"), store(&r, "n2"));
    let events: Vec<Bytes> = (0..10)
        .map(|i| Bytes::from(format!("{{\"i\":{i}}}")))
        .collect();
    a.outbox_push(&events[..5], T0).unwrap();
    b.outbox_push(&events[5..], T0).unwrap();
    let lease = Duration::from_secs(600);
    let got_a = a.outbox_claim(4, lease, T0).unwrap();
    let got_b = b.outbox_claim(100, lease, T0).unwrap();
    assert_eq!((got_a.len(), got_b.len()), (4, 6));
    let mut bodies: Vec<Bytes> = got_a.iter().chain(&got_b).map(|e| e.body.clone()).collect();
    bodies.sort();
    let mut want = events.clone();
    want.sort();
    assert_eq!(bodies, want, "every event once");
    assert!(a.outbox_claim(100, lease, T0).unwrap().is_empty());
    a.outbox_done(&got_a.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(b.outbox_stats().unwrap().backlog, 6);
    // b "dies" holding its six: with the lease over (zero), a takes them over.
    let taken = a.outbox_claim(100, Duration::ZERO, T0).unwrap();
    assert_eq!(
        taken.iter().map(|e| &e.id).collect::<Vec<_>>(),
        got_b.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    a.outbox_done(&taken.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(a.outbox_stats().unwrap(), OutboxStats::default());
    // Redis lost its data: the group is created again on the next claim.
    ::redis::cmd("FLUSHALL").exec(&mut r.conn()).unwrap();
    a.outbox_push(&events[..1], T0).unwrap();
    assert_eq!(a.outbox_claim(10, lease, T0).unwrap().len(), 1);
}

/// Cluster-wide transitions: the first node to have a key and the last to lose it are told so.
#[test]
fn webhook_transitions_are_cluster_wide() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&r, "n1"), store(&r, "n2"));
    assert!(a.webhook_transition("topic:x", "n1", true).unwrap());
    assert!(!b.webhook_transition("topic:x", "n2", true).unwrap());
    assert!(
        !a.webhook_transition("topic:x", "n1", true).unwrap(),
        "no change"
    );
    assert!(!a.webhook_transition("topic:x", "n1", false).unwrap());
    assert!(b.webhook_transition("topic:x", "n2", false).unwrap());
    assert!(
        !b.webhook_transition("topic:x", "n2", false).unwrap(),
        "no change"
    );
    assert!(
        a.webhook_transition("user:x", "n1", true).unwrap(),
        "keys are apart"
    );
}

/// A retry after a failed call: a change not made yet is made and answered as the first call
/// would be; a change the lost call already made is answered from the set as found (the node
/// alone / nobody: the lost call was the transition), where a first call would say "no change".
#[test]
fn webhook_transition_retries_answer_for_a_lost_call() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&r, "n1"), store(&r, "n2"));
    assert!(a.webhook_transition_retry("topic:x", "n1", true).unwrap());
    assert!(
        a.webhook_transition_retry("topic:x", "n1", true).unwrap(),
        "applied by the lost call, n1 alone: it was the transition"
    );
    assert!(!a.webhook_transition("topic:x", "n1", true).unwrap());
    assert!(!b.webhook_transition("topic:x", "n2", true).unwrap());
    assert!(
        !a.webhook_transition_retry("topic:x", "n1", true).unwrap(),
        "n2 holds it too"
    );
    assert!(!b.webhook_transition_retry("topic:x", "n2", false).unwrap());
    assert!(a.webhook_transition_retry("topic:x", "n1", false).unwrap());
    assert!(
        a.webhook_transition_retry("topic:x", "n1", false).unwrap(),
        "applied by the lost call, nobody left: it was the transition"
    );
    assert!(!a.webhook_transition("topic:x", "n1", false).unwrap());
    assert!(
        b.webhook_transition("topic:x", "n2", true).unwrap(),
        "empty again"
    );
}

/// A node that died holding keys: found unregistered by the others, and its keys released
/// through the transition script — a key another node still has is not vacated, and each
/// vacated key is answered to one reaper only.
#[test]
fn dead_nodes_keys_are_reaped_once() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b, mut c) = (store(&r, "n1"), store(&r, "n2"), store(&r, "n3"));
    assert!(a.webhook_transition("topic:x", "n1", true).unwrap());
    assert!(a.webhook_transition("user:u", "n1", true).unwrap());
    assert!(!b.webhook_transition("topic:x", "n2", true).unwrap());
    // n2 is registered (alive), n1 is not.
    ::redis::cmd("SET")
        .arg(format!("{PREFIX}:node:n2"))
        .arg("{}")
        .exec(&mut r.conn())
        .unwrap();
    let mut orphans = c.webhook_orphans().unwrap();
    orphans.sort();
    assert_eq!(
        orphans,
        vec![("n1".to_string(), false), ("n2".to_string(), true)]
    );
    assert_eq!(b.webhook_reap("n1").unwrap(), vec!["user:u".to_string()]);
    assert!(c.webhook_reap("n1").unwrap().is_empty(), "released once");
    assert_eq!(
        c.webhook_orphans().unwrap(),
        vec![("n2".to_string(), true)],
        "n1 holds nothing now"
    );
    // The last holder of topic:x leaving is the transition, as before.
    assert!(b.webhook_transition("topic:x", "n2", false).unwrap());
}

/// Two nodes each having then losing a key, their reports reaching Redis in every order a
/// node keeps (its own in order, one store thread): the transitions alternate, start with
/// occupied and end with vacated — nothing lost, nothing doubled. Reports that overlap are one
/// transition each way; a node's "have" reaching Redis after the other's "lost" (a slow node,
/// however early the subscribe) is a second occupied / vacated pair, not a lost event.
#[test]
fn webhook_transitions_alternate_in_every_order() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut nodes = [store(&r, "n1"), store(&r, "n2")];
    // Which node reports next: every interleaving of [on, off] of n1 with [on, off] of n2.
    let orders = [
        [0, 0, 1, 1],
        [0, 1, 0, 1],
        [0, 1, 1, 0],
        [1, 0, 0, 1],
        [1, 0, 1, 0],
        [1, 1, 0, 0],
    ];
    for (i, order) in orders.iter().enumerate() {
        let key = format!("topic:t{i}");
        let mut next_on = [true, true];
        let mut events = Vec::new();
        for &n in order {
            let on = next_on[n];
            next_on[n] = false;
            let name = ["n1", "n2"][n];
            if nodes[n].webhook_transition(&key, name, on).unwrap() {
                events.push(on);
            }
        }
        let overlapped = !matches!(order, [0, 0, 1, 1] | [1, 1, 0, 0]);
        let want: &[bool] = if overlapped {
            &[true, false]
        } else {
            &[true, false, true, false]
        };
        assert_eq!(events, want, "order {order:?}");
        let held: u64 = ::redis::cmd("SCARD")
            .arg(format!("{PREFIX}:whn:{key}"))
            .query(&mut r.conn())
            .unwrap();
        assert_eq!(held, 0, "order {order:?}");
    }
}
