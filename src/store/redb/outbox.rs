//! The webhook outbox of [`RedbStore`]: table `outbox`, id → created time (8 bytes, little
//! endian) then the event's JSON. Pending ids, their times and leases are indexed in memory
//! ([`OutboxIndex`]), loaded when the file opens and after a rollback; leases are not stored, so
//! after a restart every pending event is sent again (at least once).
//!
//! Pushes and removals go through the write-ahead log like the store's other writes: each event
//! pushed is logged with the id it got ([`Op::OutboxPush`]), each removal with the id removed
//! ([`Op::OutboxDone`]), in the batch's record. Replaying calls the same code
//! ([`RedbStore::outbox_insert`], [`RedbStore::outbox_remove`]) with the logged ids, so an event
//! keeps its id across a crash although the id counter is not stored (it restarts above the
//! stored ids and the clock's [`first_message_id`]).

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::wal::Op;
use super::{err, wtx, RedbStore};
use crate::store::outbox::{local_id, OutboxIndex};
use crate::store::{first_message_id, OutboxEntry, OutboxStats, StoreError};

pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// Reads the pending events' ids and times. Ids continue above the highest stored one, and
/// never below [`first_message_id`] of `now_ms`: an emptied or lost file never reuses an id a
/// receiver may have seen.
pub(super) fn load(db: &Database, now_ms: u64) -> Result<OutboxIndex<()>, StoreError> {
    let mut idx = OutboxIndex::new(first_message_id(now_ms));
    let r = db.begin_read().map_err(err)?;
    let t = match r.open_table(OUTBOX) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(idx),
        Err(e) => return Err(err(e)),
    };
    for row in t.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        idx.insert(k.value(), created(v.value())?, ());
    }
    Ok(idx)
}

fn created(v: &[u8]) -> Result<u64, StoreError> {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| StoreError::Corrupt("redb: short outbox row".into()))
}

impl RedbStore {
    /// Puts `events` in the outbox under the next ids, logging each.
    pub(super) fn outbox_push_inner(
        &mut self,
        events: &[Bytes],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let first = self.outbox.next_id();
        self.outbox_insert(now_ms, (first..).zip(events.iter().map(|e| &e[..])), true)
    }

    /// Inserts events under the given ids (a push: the next ones; a replay: the logged ones),
    /// logging them when `log` (not while replaying).
    pub(super) fn outbox_insert<'e>(
        &mut self,
        now_ms: u64,
        rows: impl IntoIterator<Item = (u64, &'e [u8])>,
        log: bool,
    ) -> Result<(), StoreError> {
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(OUTBOX).map_err(err)?;
        for (id, event) in rows {
            self.outbox.insert(id, now_ms, ());
            self.scratch.clear();
            self.scratch.extend_from_slice(&now_ms.to_le_bytes());
            self.scratch.extend_from_slice(event);
            t.insert(id, self.scratch.as_slice()).map_err(err)?;
            if log {
                self.wal.push(&Op::OutboxPush { id, now_ms, event });
            }
        }
        Ok(())
    }

    pub(super) fn outbox_claim_inner(
        &mut self,
        max: usize,
        lease: std::time::Duration,
        now_ms: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let ids: Vec<(u64, u64)> = self
            .outbox
            .claim(max, lease, now_ms)
            .into_iter()
            .map(|(id, created, ())| (id, created))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        super::with_table!(self, OUTBOX, |t| {
            let mut out = Vec::with_capacity(ids.len());
            for (id, created_ms) in ids {
                if let Some(v) = t.get(id).map_err(err)? {
                    let body = Bytes::copy_from_slice(v.value().get(8..).unwrap_or_default());
                    out.push(OutboxEntry {
                        id: id.to_string(),
                        body,
                        created_ms,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Removes the events of `ids` that are pending (ids of this store only), logging each.
    pub(super) fn outbox_done_inner(&mut self, ids: &[String]) -> Result<(), StoreError> {
        self.outbox_remove(ids.iter().filter_map(|i| local_id(i)), true)
    }

    /// Removes those of `ids` that are pending, logging each removal when `log` (not while
    /// replaying). A batch that removes nothing logs nothing (no record, no `fdatasync`).
    pub(super) fn outbox_remove(
        &mut self,
        ids: impl IntoIterator<Item = u64>,
        log: bool,
    ) -> Result<(), StoreError> {
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(OUTBOX).map_err(err)?;
        for id in ids {
            if self.outbox.done(id) {
                t.remove(id).map_err(err)?;
                if log {
                    self.wal.push(&Op::OutboxDone { id });
                }
            }
        }
        Ok(())
    }

    pub(super) fn outbox_stats_inner(&self) -> OutboxStats {
        self.outbox.stats()
    }
}
