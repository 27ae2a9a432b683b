//! The batch's write transaction and its group commit: the log record written, or a checkpoint
//! (the transaction committed), or — after a failed operation — the batch rolled back and the
//! log replayed (see the [module docs](super)).

use redb::{Database, Durability, WriteTransaction};

use super::{codec, err, RedbStore, META, STREAMS};
use crate::store::StoreError;

/// Opens the batch's write transaction if needed.
pub(super) fn wtx<'a>(
    db: &Database,
    slot: &'a mut Option<WriteTransaction>,
) -> Result<&'a WriteTransaction, StoreError> {
    if slot.is_none() {
        let mut tx = db.begin_write().map_err(err)?;
        tx.set_durability(Durability::Immediate).map_err(err)?;
        *slot = Some(tx);
    }
    slot.as_ref()
        .ok_or_else(|| StoreError::Io("redb: no write transaction".into()))
}

impl RedbStore {
    /// Commits the open write transaction durably (a checkpoint: see [`Self::checkpoint`]).
    pub(super) fn commit_inner(&mut self) -> Result<(), StoreError> {
        self.flush_trims()?;
        let Some(tx) = self.wtx.take() else {
            return Ok(());
        };
        {
            let mut t = tx.open_table(STREAMS).map_err(err)?;
            for topic in self.dirty_streams.drain(..) {
                if let Some(m) = self.streams.get_mut(&topic) {
                    m.dirty = false;
                    codec::encode_stream(&mut self.scratch, m.top, &m.epoch);
                    t.insert(&*topic, self.scratch.as_slice()).map_err(err)?;
                }
            }
            if self.next_id_dirty {
                let mut meta = tx.open_table(META).map_err(err)?;
                meta.insert("next_id", &self.next_id.to_le_bytes()[..])
                    .map_err(err)?;
                self.next_id_dirty = false;
            }
        }
        tx.commit().map_err(err)
    }

    /// [`Store::commit`](crate::store::Store::commit): the group commit — the batch's log record
    /// written (one `fdatasync`), or a checkpoint when one is due; a batch with a failed
    /// operation rolled back.
    pub(super) fn commit_batch(&mut self) -> Result<(), StoreError> {
        if !self.failed {
            // The batch's trimmed rows, deleted before the transaction holds it as answered.
            if let Err(e) = self.flush_trims() {
                tracing::error!(error = %e, "store: deleting trimmed history rows failed");
                self.failed = true;
            }
        }
        if self.failed {
            if let Some(tx) = self.wtx.take() {
                // Rolling back; the batch's failure is what gets reported.
                let _ = tx.abort();
            }
            self.wal.discard();
            self.reset();
            // The transaction also held the batches answered since the checkpoint: back from
            // the log. If that fails, the store reopens (and replays) once the backoff allows.
            if let Err(e) = self.replay_file() {
                self.reset();
                let _ = self.note::<()>(Err(StoreError::Io(format!("replaying the log: {e}"))));
            }
            return Err(StoreError::Io(
                "redb: an operation of this batch failed; the batch was rolled back".into(),
            ));
        }
        if !self.wal.pending() {
            return Ok(());
        }
        let r = if self.wal.checkpoint_due() {
            let lsn = self.wal.lsn + 1;
            self.checkpoint(lsn)
        } else {
            self.wal.write_batch()
        };
        if let Err(e) = r {
            // Whatever the transaction held is unknown now: reopening replays what the log
            // and the file hold.
            self.reset();
            self.wal.discard();
            let why = match e {
                StoreError::Io(m) | StoreError::Corrupt(m) | StoreError::Unavailable(m) => m,
            };
            return self.note(Err(StoreError::Io(why)));
        }
        Ok(())
    }

    /// Tests: dooms the batch as a failed operation would (rolled back at the next commit).
    #[cfg(test)]
    pub(crate) fn fail_batch(&mut self) {
        self.failed = true;
    }
}
