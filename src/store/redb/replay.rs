//! Checkpoints and replaying the write-ahead log (the `wal` module) into the database.

use std::path::Path;

use redb::ReadableTable;

use super::codec::Reader;
use super::wal::{self, Op, Wal, WAL_NAME};
use super::{err, with_table, RedbStore, META};
use crate::store::{HistoryLimits, InboxLimits, NewMessage, StoreError};

/// Opens the log beside the database at `db_path` for store `store_id`: its bytes are returned
/// for [`RedbStore::replay`]. A log of another store is moved aside when the database file is
/// `new_db` (the database was lost: its log cannot be replayed onto a new one), else refused.
pub(super) fn open_log(
    db_path: &Path,
    store_id: &str,
    new_db: bool,
) -> Result<(Wal, Vec<u8>), StoreError> {
    let path = db_path.with_file_name(WAL_NAME);
    let mut bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::Io(format!("reading {}: {e}", path.display()))),
    };
    // Zeros where the header goes: a crash while the log was being created (its header is
    // synced before any record is written), so there is nothing to replay.
    if bytes.iter().take(wal::HEADER as usize).all(|b| *b == 0) {
        if bytes.iter().any(|b| *b != 0) {
            tracing::warn!(
                file = %path.display(),
                "store: the write-ahead log has no header (zeroed): what follows is ignored"
            );
        }
        bytes.clear();
    }
    if !bytes.is_empty() {
        let id = wal::check_header(&path, &bytes)?;
        if id != store_id.as_bytes() {
            let id = String::from_utf8_lossy(id).into_owned();
            if !new_db {
                return Err(StoreError::Corrupt(format!(
                    "{} belongs to store {id}, not to {} (store {store_id}): was the database \
                     file replaced? Move the log away to open the database as it is",
                    path.display(),
                    db_path.display()
                )));
            }
            let aside = path.with_file_name(format!("{WAL_NAME}.{id}.orphan"));
            std::fs::rename(&path, &aside)
                .map_err(|e| StoreError::Io(format!("moving {}: {e}", path.display())))?;
            tracing::warn!(
                file = %aside.display(),
                "store: the write-ahead log of a lost database was moved aside"
            );
            bytes.clear();
        }
    }
    let wal = Wal::open(&path, bytes.len() as u64, bytes.is_empty(), store_id)?;
    Ok((wal, bytes))
}

impl RedbStore {
    /// The last log record the database's checkpoint includes.
    fn checkpoint_lsn(&self) -> Result<u64, StoreError> {
        with_table!(self, META, |t| match t.get("wal_lsn").map_err(err)? {
            Some(v) => Reader::new(v.value(), "meta wal_lsn").u64(),
            None => Ok(0),
        })
    }

    /// Applies the records of `bytes` (the log file) after the database's checkpoint, then
    /// checkpoints them and starts the log again.
    pub(super) fn replay(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let base = self.checkpoint_lsn()?;
        self.wal.lsn = base;
        if bytes.is_empty() {
            return Ok(());
        }
        let path = self.wal.path().to_path_buf();
        wal::check_header(&path, bytes)?;
        let version = wal::version(bytes);
        let contents = wal::parse(&path, bytes);
        let mut applied = 0usize;
        for rec in contents.records.iter().filter(|r| r.lsn > base) {
            if rec.lsn != base + 1 + applied as u64 {
                return Err(StoreError::Corrupt(format!(
                    "{} does not continue the database (its record {} follows checkpoint {base}): \
                     was the database restored from a backup? Move the log away to open the \
                     database as it is",
                    path.display(),
                    rec.lsn
                )));
            }
            let mut r = Reader::new(rec.payload, "wal record");
            while !r.is_empty() {
                let op = Op::decode(&mut r)?;
                self.apply(op)?;
            }
            applied += 1;
        }
        if applied > 0 {
            tracing::info!(
                file = %path.display(),
                records = applied,
                "store: replayed the write-ahead log into the database"
            );
            self.checkpoint(base + applied as u64)?;
        } else {
            self.wal.rewind()?;
        }
        if version != wal::VERSION {
            // An older format: the checkpoint holds its records now, so the log starts again in
            // this build's format before a record of it (maybe of a newer kind) is written.
            tracing::info!(
                file = %path.display(),
                from = version,
                to = wal::VERSION,
                "store: the write-ahead log's format was upgraded"
            );
            self.wal.start(&self.store_id)?;
        }
        Ok(())
    }

    /// Re-reads the log file and replays it (after a rolled-back batch took the answered
    /// batches since the checkpoint with it).
    pub(super) fn replay_file(&mut self) -> Result<(), StoreError> {
        let bytes = std::fs::read(self.wal.path())
            .map_err(|e| StoreError::Io(format!("reading {}: {e}", self.wal.path().display())))?;
        self.replay(&bytes)
    }

    /// One logged operation, applied as it was the first time.
    fn apply(&mut self, op: Op<'_>) -> Result<(), StoreError> {
        match op {
            Op::Append {
                topic,
                size,
                event,
                data,
                now_ms,
            } => {
                let limits = HistoryLimits {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    ttl: std::time::Duration::ZERO,
                };
                self.append_inner(topic, limits, event, data, now_ms)?;
            }
            Op::Put {
                user,
                topic,
                event,
                data,
                max_messages,
                ttl,
                now_ms,
            } => {
                let msg = NewMessage { topic, event, data };
                let limits = InboxLimits {
                    max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX),
                    ttl,
                };
                self.put_inner(user, msg, limits, now_ms)?;
            }
            Op::Delivered {
                user,
                offset,
                times,
            } => self.delivered_inner(user, offset, times)?,
            Op::Ack {
                user,
                offset,
                now_ms,
            } => {
                self.ack_inner(user, offset, now_ms)?;
            }
            Op::Expire {
                max_messages,
                ttl,
                now_ms,
            } => {
                let limits = InboxLimits {
                    max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX),
                    ttl,
                };
                self.expire_inner(limits, now_ms)?;
            }
            Op::OutboxPush { id, now_ms, event } => {
                self.outbox_insert(now_ms, std::iter::once((id, event)), false)?;
            }
            Op::OutboxDone { id } => {
                self.outbox_remove(std::iter::once(id), false)?;
            }
            Op::SioPut {
                pid,
                expires_ms,
                session,
            } => self.sio_put_inner(pid, session, expires_ms, false)?,
            Op::SioTake { pid } => {
                self.sio_take_inner(pid, 0, false)?;
            }
        }
        Ok(())
    }

    /// Commits the open write transaction durably as the checkpoint of log record `lsn`, then
    /// starts the log again.
    pub(super) fn checkpoint(&mut self, lsn: u64) -> Result<(), StoreError> {
        if let Some(tx) = &self.wtx {
            let mut meta = tx.open_table(META).map_err(err)?;
            meta.insert("wal_lsn", &lsn.to_le_bytes()[..])
                .map_err(err)?;
        }
        self.commit_inner()?;
        self.wal.lsn = lsn;
        self.wal.discard();
        self.wal.rewind()
    }
}
