//! The inbox schema of a store file (`inbox_schema` in `meta`), the migration of older files,
//! and the in-memory inbox indexes built from the file.
//!
//! - Schema 1 (no `inbox_schema` row; files written before it existed): `inbox` keyed by
//!   (user, offset) with the content, a `status` row for every message, `live` (created, id),
//!   `users` (next offset, count) — four B-tree inserts per put.
//! - Schema 2: `messages` (id → the whole live message), `status` only for final statuses,
//!   `users` (next offset, written when the newest message leaves), `finals` as before.
//! - Schema 3: the tables of schema 2, with the write-ahead log `ringhub.wal` beside the file:
//!   the newest answered batches may be only in the log, so a build that does not replay it
//!   must refuse the file (builds of schema 2 refuse a newer schema) rather than serve an older
//!   state. Schema 2 files need no change (`wal_lsn` missing = no record checkpointed yet).
//!
//! A schema 1 file is migrated in the transaction that opens it (all or nothing); a file of a
//! schema newer than this build knows is refused with an error that says so, never misread.

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::codec::{self, MessageRow};
use super::inbox::Inboxes;
use super::{err, MESSAGES, STATUS, USERS};
use crate::store::{MessageStatus, StoreError};

/// The inbox schema this build writes.
pub(super) const INBOX_SCHEMA: u64 = 3;

/// Schema 1's inbox: (user, offset) → id, created, expiry, topic, event, data.
const INBOX_V1: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
/// Schema 1's live messages by (created, id).
const LIVE_V1: TableDefinition<(u64, u64), ()> = TableDefinition::new("live");

/// Brings the file opened by `tx` to [`INBOX_SCHEMA`]: records it in a new file, migrates an
/// older one, refuses a newer one.
pub(super) fn upgrade(
    tx: &WriteTransaction,
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    new_file: bool,
) -> Result<(), StoreError> {
    let stored = match meta.get("inbox_schema").map_err(err)? {
        Some(v) => Some(codec::Reader::new(v.value(), "meta inbox_schema").u64()?),
        None => None,
    };
    match stored {
        Some(INBOX_SCHEMA) => return Ok(()),
        Some(n) if n > INBOX_SCHEMA => {
            return Err(StoreError::Io(format!(
                "written by a newer ringhub (inbox schema {n}; this build reads up to \
                 {INBOX_SCHEMA}): run that version, or move the file away to start an empty \
                 store"
            )))
        }
        _ => {}
    }
    // Schema 1 had no `inbox_schema` row; schema 2 → 3 changes no table.
    if !new_file && stored.is_none() {
        let moved = migrate_v1(tx)?;
        tracing::warn!(
            messages = moved,
            "store: migrated the inbox tables to schema {INBOX_SCHEMA} (one row per message)"
        );
    }
    meta.insert("inbox_schema", &INBOX_SCHEMA.to_le_bytes()[..])
        .map_err(err)?;
    Ok(())
}

/// Schema 1 → 2: each inbox entry and its status row become one `messages` row; `status` keeps
/// only final statuses; `inbox` and `live` go. `users` keeps its rows (their next offset is
/// what schema 2 reads). Returns the messages moved.
fn migrate_v1(tx: &WriteTransaction) -> Result<usize, StoreError> {
    let mut moved = Vec::new();
    {
        let inbox = tx.open_table(INBOX_V1).map_err(err)?;
        let mut messages = tx.open_table(MESSAGES).map_err(err)?;
        let status = tx.open_table(STATUS).map_err(err)?;
        let mut scratch = Vec::new();
        for item in inbox.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let (user, offset) = k.value();
            let e = codec::decode_inbox(v.value())?;
            let (st, attempts) = match status.get(e.id).map_err(err)? {
                Some(s) => {
                    let s = codec::decode_status(s.value())?;
                    (s.status, s.attempts)
                }
                None => (MessageStatus::Pending, 0),
            };
            let row = MessageRow {
                user,
                offset,
                status: st,
                attempts,
                created_ms: e.created_ms,
                expires_ms: e.expires_ms,
                topic: e.topic,
                event: e.event,
                data: e.data,
            };
            codec::encode_message(&mut scratch, &row);
            messages.insert(e.id, scratch.as_slice()).map_err(err)?;
            moved.push(e.id);
        }
    }
    {
        let mut status = tx.open_table(STATUS).map_err(err)?;
        for id in &moved {
            status.remove(*id).map_err(err)?;
        }
    }
    tx.delete_table(INBOX_V1).map_err(err)?;
    tx.delete_table(LIVE_V1).map_err(err)?;
    Ok(moved.len())
}

/// The in-memory inbox indexes of what `db` holds (committed): every live message, and each
/// user's next offset — past its live messages and what `users` recorded.
pub(super) fn load_inboxes(db: &Database) -> Result<Inboxes, StoreError> {
    let r = db.begin_read().map_err(err)?;
    let messages = r.open_table(MESSAGES).map_err(err)?;
    let users = r.open_table(USERS).map_err(err)?;
    let mut idx = Inboxes::default();
    for item in messages.iter().map_err(err)? {
        let (k, v) = item.map_err(err)?;
        let m = codec::decode_message(v.value())?;
        idx.add(m.user, m.offset, k.value(), m.created_ms);
    }
    for (user, u) in idx.users.iter_mut() {
        if let Some(v) = users.get(&**user).map_err(err)? {
            u.next = u.next.max(v.value().0);
        }
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{codec::InboxEntry, RedbStore, FILE_NAME, META};
    use crate::store::{InboxLimits, NewMessage, Store};

    const T0: u64 = 1_700_000_000_000;

    /// A store file as schema 1 wrote it: user `u` with live messages 7 (offset 1, delivered
    /// twice) and 9 (offset 3), message 8 (offset 2) acked; next offset 4.
    fn schema_1_file(dir: &std::path::Path) {
        let db = Database::create(dir.join(FILE_NAME)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut inbox = tx.open_table(INBOX_V1).unwrap();
            let mut status = tx.open_table(STATUS).unwrap();
            let mut live = tx.open_table(LIVE_V1).unwrap();
            let mut users = tx.open_table(USERS).unwrap();
            let mut meta = tx.open_table(META).unwrap();
            let mut buf = Vec::new();
            for (id, offset, st, attempts) in [
                (7u64, 1u64, MessageStatus::Delivered, 2u32),
                (8, 2, MessageStatus::Acked, 1),
                (9, 3, MessageStatus::Pending, 0),
            ] {
                if !st.is_final() {
                    let e = InboxEntry {
                        id,
                        created_ms: T0,
                        expires_ms: T0 + 3_600_000,
                        topic: None,
                        event: "e",
                        data: Some(b"1"),
                    };
                    codec::encode_inbox(&mut buf, &e);
                    inbox.insert(("u", offset), buf.as_slice()).unwrap();
                    live.insert((T0, id), ()).unwrap();
                }
                let row = codec::StatusRow {
                    user: "u",
                    offset,
                    status: st,
                    attempts,
                    created_ms: T0,
                    final_ms: if st.is_final() { T0 + 1 } else { 0 },
                };
                codec::encode_status(&mut buf, &row);
                status.insert(id, buf.as_slice()).unwrap();
            }
            users.insert("u", (4, 2)).unwrap();
            meta.insert("next_id", &10u64.to_le_bytes()[..]).unwrap();
            meta.insert("store_id", &b"old-store"[..]).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_schema_1_file_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        schema_1_file(dir.path());
        let mut s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.store_id(), "old-store");
        let list = s.inbox_list("u", T0).unwrap();
        let got: Vec<(u64, u64, u32)> = list.iter().map(|m| (m.id, m.offset, m.attempts)).collect();
        assert_eq!(got, [(7, 1, 2), (9, 3, 0)]);
        assert_eq!(list[0].data.as_deref(), Some(&b"1"[..]));
        let st = |s: &mut RedbStore, id| s.status(id).unwrap().map(|i| (i.status, i.offset));
        assert_eq!(st(&mut s, 7), Some((MessageStatus::Delivered, 1)));
        assert_eq!(st(&mut s, 8), Some((MessageStatus::Acked, 2)));
        assert_eq!(st(&mut s, 9), Some((MessageStatus::Pending, 3)));
        let limits = InboxLimits {
            max_messages: 10,
            ttl: std::time::Duration::from_secs(3600),
        };
        let m = NewMessage {
            topic: None,
            event: "n",
            data: None,
        };
        let (new, _) = s.inbox_put("u", m, limits, T0 + 2).unwrap();
        assert_eq!((new.id, new.offset), (10, 4), "ids and offsets continue");
        assert_eq!(s.inbox_ack("u", 1).unwrap().map(|c| c.id), Some(7));
        s.commit().unwrap();
        drop(s);
        // Reopened: schema 2 now, nothing migrated twice.
        let mut s = RedbStore::open(dir.path()).unwrap();
        let offsets: Vec<u64> = s
            .inbox_list("u", T0)
            .unwrap()
            .iter()
            .map(|m| m.offset)
            .collect();
        assert_eq!(offsets, [3, 4]);
        assert_eq!(st(&mut s, 7), Some((MessageStatus::Acked, 1)));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META)
                .unwrap()
                .insert("inbox_schema", &(INBOX_SCHEMA + 1).to_le_bytes()[..])
                .unwrap();
            tx.commit().unwrap();
        }
        let e = RedbStore::open(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("newer ringhub"), "{e}");
    }
}
