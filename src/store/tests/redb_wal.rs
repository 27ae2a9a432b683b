//! The redb store's write-ahead log: committed batches survive without a checkpoint, a torn
//! last record is ignored, and a log that does not belong to the database is refused.

use super::*;
use crate::store::redb::{record_ends, FILE_NAME, WAL_NAME};

fn open(dir: &std::path::Path) -> RedbStore {
    let mut s = RedbStore::open(dir).unwrap();
    s.manual_checkpoints();
    s
}

/// The observable state: history of `topics`, the inbox of `u` and every message status.
fn state(s: &mut RedbStore, topics: &[&str], ids: &[u64]) -> String {
    let mut out = String::new();
    for t in topics {
        let r = s.read(t, hl(1000, 0), 0, 1000, T0 + 10).unwrap();
        out += &format!("{t}: {:?} {:?}\n", r.pos, r.publications);
    }
    out += &format!("u: {:?}\n", s.inbox_list("u", T0 + 10).unwrap());
    for id in ids {
        out += &format!("{id}: {:?}\n", s.status(*id).unwrap());
    }
    out
}

/// Batches of every kind of operation, each committed (so answered), none checkpointed.
fn committed_batches(s: &mut RedbStore) -> Vec<u64> {
    let l = hl(3, 0);
    let mut ids = Vec::new();
    for i in 0..5u64 {
        s.append("a", l, "e", Some(format!("{i}").as_bytes()), T0 + i)
            .unwrap();
        s.append("b", hl(100, 0), "f", None, T0 + i).unwrap();
        let (m, _) = s
            .inbox_put("u", msg("n", b"{}"), il(3, 60), T0 + i)
            .unwrap();
        ids.push(m.id);
        s.commit().unwrap();
    }
    s.inbox_delivered("u", 3, 2).unwrap();
    s.inbox_ack("u", 4).unwrap().unwrap();
    s.commit().unwrap();
    // Everything created at T0 expires at T0 + 60 s.
    assert!(!s.expire(il(3, 60), T0 + 60_003).unwrap().is_empty());
    s.commit().unwrap();
    ids
}

#[test]
fn committed_batches_are_replayed_after_a_crash_before_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (before, ids) = {
        let mut s = open(dir.path());
        let ids = committed_batches(&mut s);
        (state(&mut s, &["a", "b"], &ids), ids)
        // Dropped without a checkpoint: as `kill -9` would.
    };
    // The database file alone is still at its checkpoint (nothing of it)…
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(FILE_NAME), alone.path().join(FILE_NAME)).unwrap();
    assert_eq!(open(alone.path()).position("a").unwrap().offset, 0);
    // …and the log brings every committed batch back, as it was.
    let mut s = open(dir.path());
    assert_eq!(state(&mut s, &["a", "b"], &ids), before);
    assert_eq!(s.position("a").unwrap().offset, 5);
    // Replaying checkpointed: the database file alone now has it all.
    drop(s);
    std::fs::remove_file(dir.path().join(WAL_NAME)).unwrap();
    let mut s = open(dir.path());
    assert_eq!(state(&mut s, &["a", "b"], &ids), before);
    let p = s.append("a", hl(3, 0), "e", None, T0).unwrap();
    assert_eq!(p.offset, 6, "offsets continue");
}

#[test]
fn batches_on_both_sides_of_a_checkpoint_survive() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = {
        let mut s = open(dir.path());
        for i in 1..=9u64 {
            if i == 4 {
                s.checkpoint_at_next_commit();
            }
            s.append("t", hl(100, 0), "e", None, T0 + i).unwrap();
            s.commit().unwrap();
        }
        s.position("t").unwrap().epoch
    };
    let mut s = open(dir.path());
    let r = s.read("t", hl(100, 0), 0, 100, T0 + 10).unwrap();
    assert_eq!(r.pos.epoch, epoch);
    assert_eq!(offsets(&r), (1..=9).collect::<Vec<_>>());
}

#[test]
fn a_torn_last_record_is_ignored_and_everything_before_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path());
        for i in 1..=3u64 {
            s.append("t", hl(100, 0), "e", Some(b"\"some data\""), T0 + i)
                .unwrap();
            s.commit().unwrap();
        }
    }
    let wal = dir.path().join(WAL_NAME);
    let bytes = std::fs::read(&wal).unwrap();
    let ends = record_ends(&bytes);
    assert_eq!(ends.len(), 3);
    // Cut inside the third record (a crash while writing it), with or without what followed.
    for (what, torn) in [
        ("truncated file", bytes[..ends[2] as usize - 3].to_vec()),
        ("zeros after the cut", {
            let mut b = bytes.clone();
            b[ends[2] as usize - 3..].fill(0);
            b
        }),
    ] {
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join(FILE_NAME), d.path().join(FILE_NAME)).unwrap();
        std::fs::write(d.path().join(WAL_NAME), &torn).unwrap();
        let mut s = open(d.path());
        let r = s.read("t", hl(100, 0), 0, 100, T0 + 10).unwrap();
        assert_eq!(offsets(&r), vec![1, 2], "{what}");
        assert_eq!(s.append("t", hl(100, 0), "e", None, T0).unwrap().offset, 3);
        s.commit().unwrap();
        drop(s);
        let mut s = open(d.path());
        assert_eq!(
            s.position("t").unwrap().offset,
            3,
            "{what}: after reopening"
        );
    }
}

#[test]
fn a_log_of_another_version_or_store_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path());
        s.append("t", hl(100, 0), "e", None, T0).unwrap();
        s.commit().unwrap();
    }
    let wal = dir.path().join(WAL_NAME);
    let good = std::fs::read(&wal).unwrap();
    let refused = |bytes: &[u8], expect: &str| {
        std::fs::write(&wal, bytes).unwrap();
        let e = RedbStore::open(dir.path()).err().expect("opened");
        let m = e.to_string();
        assert!(m.contains(WAL_NAME) && m.contains(expect), "{m}");
    };
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    refused(
        &newer,
        "newer ringhub (log version 3; this build reads versions 1 to 2)",
    );
    let mut older = good.clone();
    older[8..12].copy_from_slice(&0u32.to_le_bytes());
    refused(&older, "older ringhub (log version 0");
    let mut magic = good.clone();
    magic[0] = b'X';
    refused(&magic, "not a ringhub write-ahead log");
    let mut other = good.clone();
    other[13] ^= 1;
    refused(&other, "belongs to store");
    // Zeros where the header goes (a crash while creating the log): a new log, nothing lost
    // that was answered (no record is written before the header is synced).
    std::fs::write(&wal, vec![0u8; 128 << 10]).unwrap();
    assert_eq!(open(dir.path()).position("t").unwrap().offset, 0);
    // Untouched, it opens with everything.
    std::fs::write(&wal, &good).unwrap();
    assert_eq!(open(dir.path()).position("t").unwrap().offset, 1);
}

#[test]
fn a_log_of_version_1_is_replayed_then_rewritten_in_this_version() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join(WAL_NAME);
    {
        let mut s = open(dir.path());
        s.append("t", hl(100, 0), "e", None, T0).unwrap();
        s.commit().unwrap();
    }
    // Version 1 had the same history and inbox operations: written by the build before the
    // outbox was logged.
    let mut bytes = std::fs::read(&wal).unwrap();
    assert_eq!(bytes[8..12], 2u32.to_le_bytes());
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&wal, &bytes).unwrap();
    let mut s = open(dir.path());
    assert_eq!(s.position("t").unwrap().offset, 1);
    // The header says version 2 before this build writes a record (maybe an outbox one).
    assert_eq!(std::fs::read(&wal).unwrap()[8..12], 2u32.to_le_bytes());
    s.outbox_push(&[bytes::Bytes::from_static(b"{}")], T0)
        .unwrap();
    s.commit().unwrap();
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(s.outbox_stats().unwrap().backlog, 1);
    assert_eq!(s.position("t").unwrap().offset, 1);
}

#[test]
fn a_log_that_does_not_continue_the_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.redb");
    {
        let mut s = open(dir.path());
        for i in 1..=6u64 {
            if i == 2 || i == 4 {
                s.checkpoint_at_next_commit();
            }
            s.append("t", hl(100, 0), "e", None, T0 + i).unwrap();
            s.commit().unwrap();
            if i == 2 {
                std::fs::copy(dir.path().join(FILE_NAME), &backup).unwrap();
            }
        }
    }
    // The database restored from the backup (checkpoint 2) with the log after checkpoint 4.
    std::fs::copy(&backup, dir.path().join(FILE_NAME)).unwrap();
    let m = RedbStore::open(dir.path())
        .err()
        .expect("opened")
        .to_string();
    assert!(m.contains("does not continue the database"), "{m}");
}

/// The outbox's pending events: id, creation time, body (claimed with no lease, so all).
fn outbox(s: &mut RedbStore) -> Vec<(String, u64, bytes::Bytes)> {
    s.outbox_claim(usize::MAX, Duration::ZERO, T0 + 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.created_ms, e.body))
        .collect()
}

#[test]
fn committed_outbox_events_and_their_removal_survive_a_crash_before_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ev = |i: u64| bytes::Bytes::from(format!("{{\"n\":{i}}}"));
    let (before, done) = {
        let mut s = open(dir.path());
        // Pushed, then checkpointed: in the database file.
        s.outbox_push(&[ev(0), ev(1)], T0).unwrap();
        s.checkpoint_at_next_commit();
        s.commit().unwrap();
        // Pushed after the checkpoint, in batches alone (nothing else to log) and with others.
        s.outbox_push(&[ev(2), ev(3), ev(4)], T0 + 1).unwrap();
        s.commit().unwrap();
        s.append("t", hl(10, 0), "e", None, T0 + 2).unwrap();
        s.outbox_push(&[ev(5)], T0 + 2).unwrap();
        s.commit().unwrap();
        let all = outbox(&mut s);
        assert_eq!(all.len(), 6);
        // Delivered: one of the checkpoint's and one of the log's.
        let done = vec![all[1].0.clone(), all[3].0.clone()];
        s.outbox_done(&done).unwrap();
        s.commit().unwrap();
        // A batch not committed is lost, as a crash would lose it.
        s.outbox_push(&[ev(9)], T0 + 3).unwrap();
        (outbox(&mut s), done)
        // Dropped without a checkpoint: as `kill -9` would.
    };
    assert_eq!(before.len(), 5);
    let mut s = open(dir.path());
    let after = outbox(&mut s);
    assert_eq!(
        after,
        before[..4].to_vec(),
        "the committed events come back with their ids, times and bodies"
    );
    assert!(
        after.iter().all(|e| !done.contains(&e.0)),
        "done stays done"
    );
    assert_eq!(s.outbox_stats().unwrap().backlog, 4);
    // Replaying checkpointed: the database file alone has the same outbox now.
    drop(s);
    std::fs::remove_file(dir.path().join(WAL_NAME)).unwrap();
    let mut s = open(dir.path());
    assert_eq!(outbox(&mut s), after);
    // New ids are above every id handed out before.
    s.outbox_push(&[ev(10)], T0 + 4).unwrap();
    s.commit().unwrap();
    let last: u64 = outbox(&mut s).last().unwrap().0.parse().unwrap();
    assert!(before.iter().all(|e| e.0.parse::<u64>().unwrap() < last));
}

/// `sync = "interval"`: a commit writes its record without syncing it (what a process crash
/// keeps), the idle tick syncs nothing before the interval, a clean close syncs, and the
/// batches come back as with a sync per commit.
#[test]
fn interval_sync_leaves_records_unsynced_until_due_or_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (before, ids) = {
        let mut s = open(dir.path());
        s.set_sync_interval(Some(Duration::from_secs(60))).unwrap();
        let ids = committed_batches(&mut s);
        assert_eq!(s.log_syncs(), 0, "answered without a sync");
        let wait = s.sync_due(false).unwrap().expect("records wait for a sync");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60));
        assert_eq!(s.log_syncs(), 0, "not due yet");
        assert_eq!(
            s.sync_due(true).unwrap(),
            None,
            "a clean stop syncs everything"
        );
        assert_eq!(s.log_syncs(), 1);
        assert_eq!(s.sync_due(false).unwrap(), None, "nothing left to sync");
        s.append("a", hl(3, 0), "e", None, T0 + 70_000).unwrap();
        s.commit().unwrap();
        // A checkpoint makes the records durable in the database: nothing waits for a sync.
        s.checkpoint_at_next_commit();
        s.append("a", hl(3, 0), "e", None, T0 + 70_001).unwrap();
        s.commit().unwrap();
        assert_eq!((s.sync_due(false).unwrap(), s.log_syncs()), (None, 1));
        s.append("b", hl(100, 0), "f", None, T0 + 70_002).unwrap();
        s.commit().unwrap();
        (state(&mut s, &["a", "b"], &ids), ids)
        // Dropped (closed) with the last record unsynced: the drop syncs it.
    };
    let mut s = open(dir.path());
    assert_eq!(state(&mut s, &["a", "b"], &ids), before);
    assert_eq!(s.position("a").unwrap().offset, 7);
}

/// The default (`sync = "always"`): one sync per committed record, none left waiting.
#[test]
fn always_sync_syncs_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    committed_batches(&mut s);
    assert_eq!(s.log_syncs(), 7, "one per commit");
    assert_eq!(s.sync_due(false).unwrap(), None);
}

/// `sync = "interval"` leaves `ringhub.unsynced` (this boot's id) while the store is open and
/// a clean close removes it; `always` never writes it.
#[test]
fn the_unsynced_marker_lives_while_an_interval_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(crate::store::redb::MARKER);
    {
        let mut s = open(dir.path());
        s.set_sync_interval(None).unwrap();
        assert!(!marker.exists(), "always: no marker");
        s.set_sync_interval(Some(Duration::from_secs(60))).unwrap();
        let boot = std::fs::read_to_string(&marker).unwrap();
        assert!(!boot.is_empty());
        s.append("a", hl(3, 0), "e", None, T0).unwrap();
        s.commit().unwrap();
    }
    assert!(!marker.exists(), "a clean close syncs and removes it");
}

/// A marker from another boot: the last interval run did not close cleanly and the machine
/// restarted, so answered writes may be lost — every stream and the inbox get new epochs,
/// offsets go on. From the same boot (a process crash) nothing changes.
#[test]
fn a_reboot_after_an_unclean_interval_run_starts_new_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(crate::store::redb::MARKER);
    let (epoch, inbox) = {
        let mut s = open(dir.path());
        s.set_sync_interval(Some(Duration::from_secs(60))).unwrap();
        s.append("a", hl(10, 0), "e", None, T0).unwrap();
        s.append("a", hl(10, 0), "e", None, T0 + 1).unwrap();
        s.commit().unwrap();
        (s.position("a").unwrap().epoch, s.inbox_epoch())
    };
    let unwritten = |s: &mut RedbStore| s.position("never").unwrap().epoch;
    // A process crash in this boot: the page cache kept everything.
    std::fs::write(&marker, "boot-1").unwrap();
    let first_unwritten = {
        let mut s = RedbStore::open_in_boot(dir.path(), Some("boot-1")).unwrap();
        assert_eq!(
            s.position("a").unwrap().epoch,
            epoch,
            "same boot: same epoch"
        );
        assert_eq!(s.inbox_epoch(), inbox);
        assert!(!marker.exists(), "read and removed at open");
        unwritten(&mut s)
    };
    // The same marker, read after a reboot.
    std::fs::write(&marker, "boot-1").unwrap();
    let new_epoch = {
        let mut s = RedbStore::open_in_boot(dir.path(), Some("boot-2")).unwrap();
        let pos = s.position("a").unwrap();
        assert_eq!(pos.offset, 2, "offsets go on from what survived");
        assert_ne!(pos.epoch, epoch, "a new epoch after the reboot");
        assert_ne!(s.inbox_epoch(), inbox, "a new inbox epoch");
        assert_ne!(
            unwritten(&mut s),
            first_unwritten,
            "topics never written too"
        );
        assert!(!marker.exists());
        let next = s.append("a", hl(10, 0), "e", None, T0 + 2).unwrap();
        assert_eq!((next.offset, &next.epoch), (3, &pos.epoch));
        s.commit().unwrap();
        pos.epoch
    };
    // No marker: a clean close; the new epoch is kept, and so is the log (new store id).
    let mut s = open(dir.path());
    let pos = s.position("a").unwrap();
    assert_eq!((pos.offset, &pos.epoch), (3, &new_epoch));
    // A marker when the boot id cannot be read: assume the worst.
    drop(s);
    std::fs::write(&marker, "boot-2").unwrap();
    let mut s = RedbStore::open_in_boot(dir.path(), None).unwrap();
    assert_ne!(s.position("a").unwrap().epoch, new_epoch);
}
