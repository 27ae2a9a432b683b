//! Socket.IO recovery sessions (`Store::sio_session_put` / `sio_session_take`): kept until
//! their expiry, taken once, and on redb surviving a crash (the write-ahead log) both ways.

use super::redis_server::RedisServer;
use super::*;

#[test]
fn the_memory_store_leaves_sessions_to_the_node() {
    let mut s = MemoryStore::new();
    assert!(!s.keeps_sio_sessions());
    s.sio_session_put("p", b"x", T0 + 1000).unwrap();
    assert_eq!(s.sio_session_take("p", T0).unwrap(), None);
}

#[test]
fn redb_sessions_are_taken_once_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RedbStore::open(dir.path()).unwrap();
        s.manual_checkpoints();
        assert!(s.keeps_sio_sessions());
        s.sio_session_put("p1", b"one", T0 + 1000).unwrap();
        s.sio_session_put("p2", b"two", T0 + 1000).unwrap();
        s.sio_session_put("old", b"x", T0 - 1).unwrap();
        s.commit().unwrap();
        // Dropped without a checkpoint, as `kill -9` would: the log has them.
    }
    {
        let mut s = RedbStore::open(dir.path()).unwrap();
        s.manual_checkpoints();
        assert_eq!(s.sio_session_take("old", T0).unwrap(), None, "expired");
        assert_eq!(
            s.sio_session_take("p1", T0).unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(s.sio_session_take("p1", T0).unwrap(), None, "taken once");
        s.commit().unwrap();
    }
    let mut s = RedbStore::open(dir.path()).unwrap();
    assert_eq!(
        s.sio_session_take("p1", T0).unwrap(),
        None,
        "the take survived too"
    );
    assert_eq!(
        s.sio_session_take("p2", T0 + 999).unwrap().as_deref(),
        Some(&b"two"[..])
    );
}

#[test]
fn redis_sessions_are_taken_once_and_expire() {
    let Some(r) = RedisServer::start() else {
        return;
    };
    let mut s = RedisStore::connect(&[r.url()], "rh", "n1").unwrap();
    assert!(s.keeps_sio_sessions());
    let far = now_ms() + 60_000;
    s.sio_session_put("p1", b"one", far).unwrap();
    s.sio_session_put("gone", b"x", now_ms().saturating_sub(1))
        .unwrap();
    // Another node's store sees it; one of them gets it.
    let mut other = RedisStore::connect(&[r.url()], "rh", "n2").unwrap();
    assert_eq!(
        other.sio_session_take("p1", 0).unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(s.sio_session_take("p1", 0).unwrap(), None);
    assert_eq!(
        s.sio_session_take("gone", 0).unwrap(),
        None,
        "Redis expired it"
    );
}
