//! The inbox schema of a store file (`inbox_schema` in `meta`), the migration of older files,
//! and the in-memory inbox indexes built from the file.
//!
//! - Schema 1 (no `inbox_schema` row; files written before it existed): `inbox` keyed by
//!   (user, offset) with the content, a `status` row for every message, `live` (created, id),
//!   `users` (next offset, count) — four B-tree inserts per put.
//! - Schema 2: `messages` (id → the whole live message), `status` only for final statuses,
//!   `users` (next offset, written when the newest message leaves), `finals` as before.
//!
//! A schema 1 file is migrated in the transaction that opens it (all or nothing); a file of a
//! schema newer than this build knows is refused with an error that says so, never misread.

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::codec::{self, MessageRow};
use super::inbox::Inboxes;
use super::{err, MESSAGES, STATUS, USERS};
use crate::store::{MessageStatus, StoreError};

/// The inbox schema this build writes.
pub(super) const INBOX_SCHEMA: u64 = 2;

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
    if !new_file {
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
