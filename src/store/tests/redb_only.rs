//! What only a durable store promises: reopen, rollback of an uncommitted batch, a wiped
//! directory, a corrupt file.

use super::*;

fn open(dir: &std::path::Path) -> RedbStore {
    RedbStore::open(dir).unwrap()
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let l = hl(3, 0);
    let (epoch, ids, store_id) = {
        let mut s = open(dir.path());
        for i in 1..=5u64 {
            s.append("t", l, "e", Some(b"{}"), T0 + i).unwrap();
        }
        let epoch = s.position("t").unwrap().epoch;
        let (a, _) = s.inbox_put("u", msg("a", b"1"), il(10, 3600), T0).unwrap();
        let (b, _) = s.inbox_put("u", msg("b", b"2"), il(10, 3600), T0).unwrap();
        s.inbox_delivered("u", a.offset, 2).unwrap();
        s.inbox_ack("u", b.offset).unwrap().unwrap();
        s.commit().unwrap();
        (epoch, [a.id, b.id], s.store_id().to_owned())
    };
    let mut s = open(dir.path());
    assert_eq!(s.store_id(), store_id);
    let pos = s.position("t").unwrap();
    assert_eq!((pos.epoch.clone(), pos.offset), (epoch.clone(), 5));
    let r = s.read("t", l, 0, 10, T0 + 10).unwrap();
    assert_eq!((offsets(&r), r.complete), (vec![3, 4, 5], false));
    let p = s.append("t", l, "e", None, T0 + 6).unwrap();
    assert_eq!((p.epoch, p.offset), (epoch, 6));
    let r = s.read("t", l, 3, 10, T0 + 10).unwrap();
    assert_eq!(
        (offsets(&r), r.complete),
        (vec![4, 5, 6], true),
        "trim after reopen"
    );
    let list = s.inbox_list("u", T0).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].id, list[0].attempts, &*list[0].event),
        (ids[0], 2, "a")
    );
    let st = s.status(ids[0]).unwrap().unwrap();
    assert_eq!((st.status, st.attempts), (MessageStatus::Delivered, 2));
    assert_eq!(
        s.status(ids[1]).unwrap().unwrap().status,
        MessageStatus::Acked
    );
    let (c, _) = s.inbox_put("u", msg("c", b"3"), il(10, 3600), T0).unwrap();
    assert_eq!(
        (c.id, c.offset),
        (ids[1] + 1, 3),
        "ids and offsets continue"
    );
}

#[test]
fn uncommitted_batch_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let l = hl(100, 0);
    let (epoch, id) = {
        let mut s = open(dir.path());
        s.append("t", l, "e", None, T0).unwrap();
        s.append("t", l, "e", None, T0).unwrap();
        let (m, _) = s.inbox_put("u", msg("a", b"1"), il(10, 3600), T0).unwrap();
        s.commit().unwrap();
        for _ in 0..3 {
            s.append("t", l, "e", None, T0).unwrap();
        }
        s.append("other", l, "e", None, T0).unwrap();
        s.inbox_put("u", msg("b", b"2"), il(10, 3600), T0).unwrap();
        s.inbox_ack("u", m.offset).unwrap().unwrap();
        assert_eq!(s.position("t").unwrap().offset, 5, "reads see the batch");
        assert_eq!(s.inbox_list("u", T0).unwrap().len(), 1);
        (s.position("t").unwrap().epoch, m.id)
        // Dropped without commit.
    };
    let mut s = open(dir.path());
    assert_eq!(
        s.position("t").unwrap(),
        StreamPos {
            epoch: epoch.clone(),
            offset: 2
        }
    );
    assert_eq!(s.position("other").unwrap().offset, 0);
    let list = s.inbox_list("u", T0).unwrap();
    assert_eq!(list.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(
        s.status(id).unwrap().unwrap().status,
        MessageStatus::Pending
    );
    assert_eq!(s.append("t", l, "e", None, T0).unwrap().offset, 3);
    let (m, _) = s.inbox_put("u", msg("c", b"3"), il(10, 3600), T0).unwrap();
    assert_eq!((m.id, m.offset), (id + 1, 2));
}

#[test]
fn commit_without_writes_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append("t", hl(10, 0), "e", None, T0).unwrap();
    assert!(s.in_batch());
    s.commit().unwrap();
    assert!(!s.in_batch());
    s.position("t").unwrap();
    s.read("t", hl(10, 0), 0, 10, T0).unwrap();
    s.inbox_list("u", T0).unwrap();
    s.status(1).unwrap();
    s.inbox_ack("u", 1).unwrap();
    s.inbox_delivered("u", 1, 1).unwrap();
    s.expire(il(10, 10), T0).unwrap();
    assert!(!s.in_batch(), "reads and no-ops open no write transaction");
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        s.commit().unwrap();
    }
    assert!(start.elapsed() < std::time::Duration::from_millis(500));
}

#[test]
fn wiped_directory_gives_new_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (epoch, store_id) = {
        let mut s = open(&path);
        s.append("t", hl(10, 0), "e", None, T0).unwrap();
        s.commit().unwrap();
        (s.position("t").unwrap().epoch, s.store_id().to_owned())
    };
    std::fs::remove_dir_all(&path).unwrap();
    let mut s = open(&path);
    assert!(path.join(super::super::redb::FILE_NAME).exists());
    let pos = s.position("t").unwrap();
    assert_eq!(pos.offset, 0);
    assert_ne!(pos.epoch, epoch);
    assert_ne!(s.store_id(), store_id);
}

#[test]
fn corrupt_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(super::super::redb::FILE_NAME);
    std::fs::write(&file, vec![0x5a; 64 * 1024]).unwrap();
    match RedbStore::open(dir.path()) {
        Err(StoreError::Corrupt(m)) | Err(StoreError::Io(m)) => {
            assert!(m.contains("ringhub.redb"), "{m}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a garbage file opened"),
    }
    // A directory where the file should be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(super::super::redb::FILE_NAME)).unwrap();
    assert!(RedbStore::open(dir.path()).is_err());
}

#[test]
fn a_wiped_file_never_reuses_message_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let old = {
        let mut s = RedbStore::open_at(&path, T0).unwrap();
        let ids: Vec<u64> = (0..3)
            .map(|_| {
                s.inbox_put("alice", msg("e", b"1"), il(10, 60), T0)
                    .unwrap()
                    .0
                    .id
            })
            .collect();
        s.commit().unwrap();
        ids
    };
    std::fs::remove_dir_all(&path).unwrap();
    // A millisecond later (any restart takes longer).
    let mut s = RedbStore::open_at(&path, T0 + 1).unwrap();
    let (m, _) = s
        .inbox_put("bob", msg("e", b"2"), il(10, 60), T0 + 1)
        .unwrap();
    assert!(
        old.iter().all(|&id| id < m.id),
        "a new file reuses an id: {old:?} then {}",
        m.id
    );
    for id in old {
        assert_eq!(
            s.status(id).unwrap(),
            None,
            "id {id} answers another message"
        );
    }
}

/// Bytes of the store's file.
fn file_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join(super::super::redb::FILE_NAME))
        .unwrap()
        .len()
}

#[test]
fn reads_of_unknown_topics_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append("known", hl(10, 0), "e", None, T0).unwrap();
    s.commit().unwrap();
    let before = file_len(dir.path());
    let mut epochs = Vec::new();
    for i in 0..3000 {
        let topic = format!("never:{i}");
        let pos = s.position(&topic).unwrap();
        let r = s.read(&topic, hl(10, 0), 0, 50, T0).unwrap();
        assert_eq!((r.pos.offset, r.complete), (0, true));
        assert_eq!(r.pos.epoch, pos.epoch, "reads agree on the epoch");
        s.read("known", hl(10, 0), 0, 50, T0).unwrap();
        assert!(!s.in_batch(), "a read opened a write transaction");
        s.commit().unwrap();
        if i < 3 {
            epochs.push(pos.epoch);
        }
    }
    assert_eq!(file_len(dir.path()), before, "reads grew the file");
    assert_eq!(s.cached_streams(), 1, "reads grew the stream cache");
    // The first append keeps the epoch the reads reported, also after a reopen.
    let p = s.append("never:0", hl(10, 0), "e", None, T0).unwrap();
    assert_eq!((p.epoch.clone(), p.offset), (epochs[0].clone(), 1));
    s.commit().unwrap();
    drop(s);
    let mut s = open(dir.path());
    assert_eq!(s.position("never:0").unwrap().epoch, epochs[0]);
    assert_eq!(s.position("never:1").unwrap().epoch, epochs[1]);
    assert_ne!(epochs[0], epochs[1], "each stream has its own epoch");
}

/// A store file with history and inbox messages, closed.
fn written_store(dir: &std::path::Path) -> std::path::PathBuf {
    let mut s = open(dir);
    for i in 0..200u64 {
        let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(200));
        s.append(
            &format!("t{}", i % 7),
            hl(100, 0),
            "e",
            Some(data.as_bytes()),
            T0,
        )
        .unwrap();
        s.inbox_put("u", msg("e", data.as_bytes()), il(1000, 3600), T0)
            .unwrap();
    }
    s.commit().unwrap();
    dir.join(super::super::redb::FILE_NAME)
}

#[test]
fn damaged_files_are_clean_errors_not_panics() {
    const PAGE: usize = 4096;
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage); 5] = [
        ("page 1 zeroed", |b| b[PAGE..2 * PAGE].fill(0)),
        ("page 1 filled", |b| b[PAGE..2 * PAGE].fill(0xff)),
        ("page 2 zeroed", |b| b[2 * PAGE..3 * PAGE].fill(0)),
        ("page 2 filled", |b| b[2 * PAGE..3 * PAGE].fill(0xff)),
        ("second half zeroed", |b| {
            let n = b.len();
            b[n / 2..].fill(0);
        }),
    ];
    for (what, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = written_store(dir.path());
        let mut bytes = std::fs::read(&file).unwrap();
        assert!(bytes.len() > 4 * PAGE, "{what}: file too small");
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let opened = std::panic::catch_unwind(|| RedbStore::open(dir.path()));
        match opened {
            Err(_) => panic!("{what}: opening panicked"),
            Ok(Err(e)) => {
                let m = e.to_string();
                assert!(
                    m.contains("ringhub.redb") && m.contains("backup"),
                    "{what}: {m}"
                );
            }
            // Repaired (or the damage missed live data): it must then work.
            Ok(Ok(mut s)) => {
                s.position("t1").unwrap();
                s.inbox_list("u", T0).unwrap();
            }
        }
    }
}

#[test]
fn an_empty_file_starts_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = written_store(dir.path());
    std::fs::write(&file, b"").unwrap();
    let mut s = open(dir.path());
    assert_eq!(s.position("t1").unwrap().offset, 0);
}

/// A tmpfs of `size` mounted on `dir`, unmounted on drop (needs root: `None` elsewhere).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_is_not_available_and_the_store_reopens_when_space_returns() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let Some(_disk) = SmallDisk::mount(dir.path(), "4m") else {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    };
    let mut s = open(&dir.path().join("store"));
    s.set_backoff(std::time::Duration::ZERO);
    let l = hl(10_000, 0);
    s.append("t", l, "e", Some(b"1"), T0).unwrap();
    s.commit().unwrap();
    // Fill what is left with a file we can delete later.
    let filler = dir.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[0u8; 16 * 1024]).is_ok() {}
    }
    let big = vec![b'7'; 64 * 1024];
    let mut failure = None;
    for _ in 0..200 {
        let r = s
            .append("t", l, "e", Some(&big), T0)
            .and_then(|_| s.commit());
        if let Err(e) = r {
            failure = Some(e);
            break;
        }
    }
    let e = failure.expect("the disk never filled");
    assert_eq!(e.code(), crate::ErrorCode::NotAvailable, "{e}");
    assert!(s.health().is_err(), "a broken store reports itself");
    // Space returns: the store reopens by itself and works again.
    std::fs::remove_file(&filler).unwrap();
    let before = s.position("t").unwrap().offset;
    let p = s.append("t", l, "e", Some(b"2"), T0).unwrap();
    s.commit().unwrap();
    assert_eq!(p.offset, before + 1);
    assert!(s.health().is_ok());
    assert_eq!(s.position("t").unwrap().offset, before + 1);
}

#[test]
fn outbox_survives_a_reopen_and_forgets_leases() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = {
        let mut s = RedbStore::open(dir.path()).unwrap();
        s.outbox_push(
            &[
                Bytes::from_static(b"{\"a\":1}"),
                Bytes::from_static(b"{\"a\":2}"),
            ],
            T0,
        )
        .unwrap();
        s.commit().unwrap();
        // Leased by a sender that then dies: no `done`.
        let c = s.outbox_claim(10, Duration::from_secs(600), T0).unwrap();
        assert_eq!(c.len(), 2);
        c.into_iter().map(|e| e.id).collect()
    };
    let mut s = RedbStore::open(dir.path()).unwrap();
    let st = s.outbox_stats().unwrap();
    assert_eq!((st.backlog, st.oldest_ms), (2, Some(T0)));
    let c = s.outbox_claim(10, Duration::from_secs(600), T0).unwrap();
    assert_eq!(c.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(c[1].body, Bytes::from_static(b"{\"a\":2}"));
    s.outbox_done(&ids[..1]).unwrap();
    s.commit().unwrap();
    drop(s);
    let mut s = RedbStore::open(dir.path()).unwrap();
    assert_eq!(s.outbox_stats().unwrap().backlog, 1);
    // New ids continue above every stored one.
    s.outbox_push(&[Bytes::from_static(b"{}")], T0).unwrap();
    let c = s.outbox_claim(10, Duration::ZERO, T0).unwrap();
    let n: Vec<u64> = c.iter().map(|e| e.id.parse().unwrap()).collect();
    assert_eq!(n.len(), 2);
    assert!(n[1] > n[0] && n[0] == ids[1].parse::<u64>().unwrap());
}
