//! The redb store's history trim: the rows a batch's appends trim are deleted as one range per
//! topic at `commit`; reads never see them meanwhile, and replaying the log trims the same.

use super::*;
use crate::store::redb::WAL_NAME;

fn open(dir: &std::path::Path) -> RedbStore {
    let mut s = RedbStore::open(dir).unwrap();
    s.manual_checkpoints();
    s
}

/// `topic`'s offsets and data as a read after 0 returns them, with its top and completeness.
fn kept(s: &mut RedbStore, topic: &str, size: usize) -> (Vec<u64>, Vec<Vec<u8>>, u64, bool) {
    let r = s.read(topic, hl(size, 0), 0, 1000, T0 + 100).unwrap();
    let data = r
        .publications
        .iter()
        .map(|p| p.data.as_deref().unwrap_or_default().to_vec())
        .collect();
    (offsets(&r), data, r.pos.offset, r.complete)
}

/// Offsets `from..=to` and their data (`"{offset}"`) as [`kept`] reports them.
fn expect(from: u64, to: u64) -> (Vec<u64>, Vec<Vec<u8>>, u64, bool) {
    let offs: Vec<u64> = (from..=to).collect();
    let data = offs.iter().map(|o| format!("{o}").into_bytes()).collect();
    (offs, data, to, false)
}

#[test]
fn a_batch_of_appends_to_one_topic_keeps_exactly_the_last_n() {
    const N: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path());
        // Fills the stream: nothing trimmed yet.
        for o in 1..=N as u64 {
            s.append("t", hl(N, 0), "e", Some(format!("{o}").as_bytes()), T0)
                .unwrap();
        }
        s.commit().unwrap();
        assert_eq!(s.stored_rows("t"), N);
        // One batch of 12 appends (single and batched calls) and another topic between them.
        for o in 6..=10u64 {
            let p = s
                .append("t", hl(N, 0), "e", Some(format!("{o}").as_bytes()), T0)
                .unwrap();
            assert_eq!(p.offset, o);
            s.append("other", hl(N, 0), "e", None, T0).unwrap();
        }
        let data: Vec<String> = (11..=17u64).map(|o| format!("{o}")).collect();
        let reqs: Vec<AppendReq<'_>> = data
            .iter()
            .map(|d| AppendReq::one("t", hl(N, 0), "e", Some(d.as_bytes())))
            .collect();
        let offs: Vec<u64> = s
            .append_batch(&reqs, T0)
            .into_iter()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offs, (11..=17).collect::<Vec<_>>(), "offsets gapless");
        // Read in the batch: the trimmed rows are still stored but never returned.
        assert!(s.stored_rows("t") > N);
        assert_eq!(kept(&mut s, "t", N), expect(13, 17));
        let r = s.read("t", hl(N, 0), 14, 1000, T0 + 100).unwrap();
        assert_eq!(offsets(&r), vec![15, 16, 17]);
        assert!(r.complete);
        let r = s.read("t", hl(N, 0), 3, 1000, T0 + 100).unwrap();
        assert_eq!(offsets(&r), (13..=17).collect::<Vec<_>>());
        assert!(!r.complete, "offsets 4..=12 were trimmed");
        // At commit they are gone, as one range.
        s.commit().unwrap();
        assert_eq!(s.stored_rows("t"), N);
        assert_eq!(s.stored_rows("other"), N);
        assert_eq!(kept(&mut s, "t", N), expect(13, 17));
        // Dropped without a checkpoint: as `kill -9` would.
    }
    // Replayed from the log: the same rows kept, the same offsets.
    let mut s = open(dir.path());
    assert_eq!(kept(&mut s, "t", N), expect(13, 17));
    assert_eq!(s.stored_rows("t"), N);
    assert_eq!(s.stored_rows("other"), N);
    // The replay checkpointed: the database file alone holds the same.
    drop(s);
    std::fs::remove_file(dir.path().join(WAL_NAME)).unwrap();
    let mut s = open(dir.path());
    assert_eq!(kept(&mut s, "t", N), expect(13, 17));
    assert_eq!(s.stored_rows("t"), N);
    let p = s.append("t", hl(N, 0), "e", Some(b"18"), T0).unwrap();
    assert_eq!(p.offset, 18, "offsets continue");
    s.commit().unwrap();
    assert_eq!(kept(&mut s, "t", N), expect(14, 18));
    assert_eq!(s.stored_rows("t"), N);
}

#[test]
fn a_rolled_back_batch_keeps_its_trimmed_rows() {
    const N: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    for o in 1..=4u64 {
        s.append("t", hl(N, 0), "e", Some(format!("{o}").as_bytes()), T0)
            .unwrap();
    }
    s.commit().unwrap();
    assert_eq!(kept(&mut s, "t", N), expect(2, 4));
    // A batch that trims, then fails: rolled back with its trims.
    s.append("t", hl(N, 0), "e", Some(b"5"), T0).unwrap();
    s.append("t", hl(N, 0), "e", Some(b"6"), T0).unwrap();
    s.fail_batch();
    assert!(s.commit().is_err());
    assert_eq!(kept(&mut s, "t", N), expect(2, 4));
    assert_eq!(s.stored_rows("t"), N);
    s.append("t", hl(N, 0), "e", Some(b"5"), T0).unwrap();
    s.commit().unwrap();
    assert_eq!(kept(&mut s, "t", N), expect(3, 5));
    assert_eq!(s.stored_rows("t"), N);
}
