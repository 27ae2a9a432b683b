//! Tests of the log format: every operation round-trips, reading stops at a torn or stale record.

use super::super::codec::Reader;
use super::*;

#[test]
fn every_op_decodes_to_itself() {
    let ops = [
        Op::Append {
            topic: "chat:a",
            size: 100,
            event: "m",
            data: Some(b"{\"x\":1}"),
            now_ms: 7,
        },
        Op::Append {
            topic: "t",
            size: u64::MAX,
            event: "",
            data: None,
            now_ms: 0,
        },
        Op::Put {
            user: "zoe",
            topic: Some("room:1"),
            event: "note",
            data: Some(b"[]"),
            max_messages: 10,
            ttl: Duration::new(3600, 5),
            now_ms: 9,
        },
        Op::Put {
            user: "u",
            topic: None,
            event: "e",
            data: None,
            max_messages: 1,
            ttl: Duration::ZERO,
            now_ms: 1,
        },
        Op::Delivered {
            user: "u",
            offset: 3,
            times: 2,
        },
        Op::Ack {
            user: "u",
            offset: 3,
            now_ms: 11,
        },
        Op::Expire {
            max_messages: 5,
            ttl: Duration::from_millis(1500),
            now_ms: 12,
        },
        Op::OutboxPush {
            id: 446_208_001_234,
            now_ms: 13,
            event: b"{\"type\":\"user_online\",\"user\":\"zoe\"}",
        },
        Op::OutboxPush {
            id: 1,
            now_ms: 0,
            event: b"",
        },
        Op::OutboxDone {
            id: 446_208_001_234,
        },
    ];
    let mut all = Vec::new();
    for op in &ops {
        op.encode(&mut all);
    }
    let mut r = Reader::new(&all, "wal record");
    for op in &ops {
        assert_eq!(&Op::decode(&mut r).unwrap(), op);
    }
    assert!(r.is_empty());
    // Cut anywhere, an operation is an error, never a panic.
    for n in 0..all.len() {
        let mut r = Reader::new(&all[..n], "wal record");
        while !r.is_empty() {
            if Op::decode(&mut r).is_err() {
                break;
            }
        }
    }
}

#[test]
fn records_stop_at_a_torn_or_unrelated_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(WAL_NAME);
    let mut w = Wal::open(&path, 0, true, "store1").unwrap();
    for i in 0..3u64 {
        w.push(&Op::Delivered {
            user: "u",
            offset: i,
            times: 1,
        });
        w.write_batch().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(check_header(&path, &bytes).unwrap(), b"store1");
    let c = parse(&path, &bytes);
    let lsns: Vec<u64> = c.records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1, 2, 3]);
    // A flipped byte in the last record: its checksum fails, the two before stay.
    let mut bad = bytes.clone();
    let end = *record_ends(&bytes).last().unwrap() as usize;
    bad[end - 2] ^= 0x40;
    assert_eq!(parse(&path, &bad).records.len(), 2);
    // After a rewind, records of the old round that are left behind are not read.
    w.rewind().unwrap();
    w.lsn = 10;
    w.push(&Op::Delivered {
        user: "longer user name",
        offset: 0,
        times: 1,
    });
    w.write_batch().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let lsns: Vec<u64> = parse(&path, &bytes).records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![11]);
}

/// Writes records `1..=n` with the sync threads (none awaited) and returns the file's bytes and
/// where each record ends.
fn written_async(n: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(WAL_NAME);
    let mut w = Wal::open(&path, 0, true, "store1").unwrap();
    for i in 0..n {
        w.push(&Op::Delivered {
            user: "u",
            offset: i,
            times: 1,
        });
        assert_eq!(w.write_batch_async().unwrap(), i + 1);
    }
    drop(w);
    let bytes = std::fs::read(&path).unwrap();
    let ends = record_ends(&bytes);
    (dir, path, bytes, ends)
}

#[test]
fn replay_never_passes_a_hole() {
    // Overlapping syncs: a crash can leave record 3 on disk and record 2 not (never answered,
    // nor is 3: it is answered only once every record before it is durable). Reading stops at
    // the hole, whatever follows it.
    let (_d, path, bytes, ends) = written_async(4);
    assert_eq!(ends.len(), 4);
    let start2 = ends[0] as usize;
    let end2 = ends[1] as usize;
    // Record 2 never reached the disk: zeros (a fresh part of the file).
    let mut hole = bytes.clone();
    hole[start2..end2].fill(0);
    let lsns: Vec<u64> = parse(&path, &hole).records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1]);
    // Record 2 half written (its head landed, not its payload): a torn record.
    let mut torn = bytes.clone();
    torn[start2 + REC_HEAD..end2].fill(0);
    let lsns: Vec<u64> = parse(&path, &torn).records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1]);
    // Record 2's place still holds an old round's valid record (a lower number): not followed.
    let mut stale = bytes.clone();
    let mut old = vec![0u8; REC_HEAD];
    Op::Delivered {
        user: "u",
        offset: 1,
        times: 1,
    }
    .encode(&mut old);
    let len = (old.len() - REC_HEAD) as u32;
    old[8..REC_HEAD].copy_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&old[8..]);
    old[..4].copy_from_slice(&len.to_le_bytes());
    old[4..8].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(old.len(), end2 - start2, "same operation, same size");
    stale[start2..end2].copy_from_slice(&old);
    let lsns: Vec<u64> = parse(&path, &stale).records.iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, vec![1]);
}

#[test]
fn a_background_sync_marks_every_record_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(WAL_NAME);
    let mut w = Wal::open(&path, 0, true, "store1").unwrap();
    w.set_lsn(5);
    assert_eq!(w.sync_state().durable(), 5, "the checkpoint is durable");
    let wake = w.sync_wake();
    let mut last = 0;
    for i in 0..20 {
        w.push(&Op::Delivered {
            user: "u",
            offset: i,
            times: 1,
        });
        last = w.write_batch_async().unwrap();
    }
    assert_eq!(last, 25);
    // Each wake follows a sync that returned; the mark only rises, up to the last request.
    let mut seen = 5;
    while seen < last {
        wake.recv().unwrap();
        let now = w.sync_state().durable();
        assert!(now >= seen, "the durable mark went down: {seen} -> {now}");
        seen = now;
    }
    assert_eq!(seen, last);
    assert!(w.sync_state().take_failure().is_none());
}
