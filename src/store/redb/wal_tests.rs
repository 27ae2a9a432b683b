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
