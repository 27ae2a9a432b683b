//! The webhook outbox of [`RedbStore`]: table `outbox`, id → created time (8 bytes, little
//! endian) then the event's JSON. Pending ids, their times and leases are indexed in memory
//! ([`OutboxIndex`]), loaded when the file opens and after a rollback; leases are not stored, so
//! after a restart every pending event is sent again (at least once).

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

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
    pub(super) fn outbox_push_inner(
        &mut self,
        events: &[Bytes],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(OUTBOX).map_err(err)?;
        for e in events {
            let id = self.outbox.push(now_ms, ());
            self.scratch.clear();
            self.scratch.extend_from_slice(&now_ms.to_le_bytes());
            self.scratch.extend_from_slice(e);
            t.insert(id, self.scratch.as_slice()).map_err(err)?;
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

    pub(super) fn outbox_done_inner(&mut self, ids: &[String]) -> Result<(), StoreError> {
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = tx.open_table(OUTBOX).map_err(err)?;
        for id in ids.iter().filter_map(|i| local_id(i)) {
            if self.outbox.done(id) {
                t.remove(id).map_err(err)?;
            }
        }
        Ok(())
    }

    pub(super) fn outbox_stats_inner(&self) -> OutboxStats {
        self.outbox.stats()
    }
}
