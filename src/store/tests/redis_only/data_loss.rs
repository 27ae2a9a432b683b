//! Redis losing its data (`FLUSHALL`): streams and inboxes get new epochs on every node, and
//! message ids are never reused; reads of unknown topics write nothing, so they lose nothing.

use super::*;

#[test]
fn flushall_gives_new_epochs() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r, "n1");
    let l = hl(10, 0);
    s.append("t", l, "e", None, T0).unwrap();
    let before = s.append("t", l, "e", None, T0).unwrap();
    assert_eq!(before.offset, 2);
    ::redis::cmd("FLUSHALL").exec(&mut r.conn()).unwrap();
    let after = s.position("t").unwrap();
    assert_eq!(after.offset, 0);
    assert_ne!(after.epoch, before.epoch, "lost data is a new epoch");
    let p = s.append("t", l, "e", None, T0).unwrap();
    assert_eq!((p.epoch, p.offset), (after.epoch.clone(), 1));
    let read = s.read("t", l, 0, 10, T0).unwrap();
    assert_eq!((offsets(&read), read.complete), (vec![1], true));
    // Scripts flushed under the open connection: EVALSHA falls back to EVAL.
    ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec(&mut r.conn())
        .unwrap();
    assert_eq!(s.append("t", l, "e", None, T0).unwrap().offset, 2);
    let req = AppendReq {
        topic: "t",
        limits: l,
        event: "e",
        data: None,
        exclude: 0,
    };
    ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .exec(&mut r.conn())
        .unwrap();
    let got: Vec<u64> = s
        .append_batch(&[req, req], T0)
        .into_iter()
        .map(|p| p.unwrap().offset)
        .collect();
    assert_eq!(got, vec![3, 4]);
}

#[test]
fn flushall_never_reuses_message_ids() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&r, "a"), store(&r, "b"));
    let l = il(10, 60);
    let old: Vec<u64> = (0..3)
        .map(|_| a.inbox_put("alice", msg("e", b"1"), l, T0).unwrap().0.id)
        .collect();
    assert_eq!(
        b.status(old[0]).unwrap().map(|i| i.user),
        Some("alice".into())
    );
    ::redis::cmd("FLUSHALL").exec(&mut r.conn()).unwrap();
    // A millisecond later: ids restart above every id handed out before.
    let (m, _) = b.inbox_put("bob", msg("e", b"2"), l, T0 + 1).unwrap();
    assert!(
        old.iter().all(|&id| id < m.id),
        "ids reused after FLUSHALL: {old:?} then {}",
        m.id
    );
    for id in old {
        assert_eq!(a.status(id).unwrap(), None, "id {id} answers bob's message");
    }
}

#[test]
fn reads_of_unknown_topics_write_nothing() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r, "n1");
    s.append("known", hl(10, 0), "e", None, T0).unwrap();
    let dbsize = |r: &RedisServer| -> u64 { ::redis::cmd("DBSIZE").query(&mut r.conn()).unwrap() };
    let before = dbsize(&r);
    let mut epoch = None;
    for i in 0..500 {
        let topic = format!("never:{i}");
        let pos = s.position(&topic).unwrap();
        let read = s.read(&topic, hl(10, 0), 0, 50, T0).unwrap();
        assert_eq!((read.pos.clone(), read.complete), (pos.clone(), true));
        assert_eq!(pos.offset, 0);
        if i == 0 {
            epoch = Some(pos.epoch);
        }
    }
    assert_eq!(dbsize(&r), before, "reads created keys");
    // Another node reports the same epoch, and the first append keeps it.
    let mut other = store(&r, "n2");
    let epoch = epoch.unwrap();
    assert_eq!(other.position("never:0").unwrap().epoch, epoch);
    let p = other.append("never:0", hl(10, 0), "e", None, T0).unwrap();
    assert_eq!((p.epoch, p.offset), (epoch, 1));
}

#[test]
fn flushall_gives_a_new_inbox_epoch_on_every_node() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let (mut a, mut b) = (store(&r, "a"), store(&r, "b"));
    let before = a.inbox_epoch();
    assert_eq!(b.inbox_epoch(), before);
    let l = il(10, 60);
    a.inbox_put("u", msg("e", b"1"), l, T0).unwrap();
    assert_eq!(a.inbox_put("u", msg("e", b"2"), l, T0).unwrap().0.offset, 2);
    assert_eq!(a.inbox_epoch(), before, "unchanged while the data is there");
    ::redis::cmd("FLUSHALL").exec(&mut r.conn()).unwrap();
    // The put that restarts the offsets also sees (and sets) the new epoch.
    let (m, _) = a.inbox_put("u", msg("e", b"3"), l, T0).unwrap();
    assert_eq!(m.offset, 1);
    let after = a.inbox_epoch();
    assert_ne!(after, before);
    // The other node learns it from its next list, before it writes any frame from it.
    let listed = b.inbox_list("u", T0).unwrap();
    assert_eq!(listed.iter().map(|m| m.offset).collect::<Vec<_>>(), [1]);
    assert_eq!(b.inbox_epoch(), after);
    assert_eq!(store(&r, "c").inbox_epoch(), after, "a new node reads it");
}
