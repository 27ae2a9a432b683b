//! The write-ahead log in front of the redb file: `ringhub.wal`, beside `ringhub.redb`.
//!
//! # Why
//! A redb commit with fsync costs a full B-tree commit plus ~1.3 ms of `fsync` on the disk this
//! was built on (~800 a second), and a batch of the store thread could not be answered before
//! it. The log makes a batch durable with one `fdatasync` of a sequential write into a region of
//! the file that is already written (no metadata to flush): the batch's operations, encoded as
//! one checksummed record. redb is then only *checkpointed*: its write transaction stays open
//! across batches and commits durably every [`CHECKPOINT_EVERY`] (or when the log reaches
//! [`CHECKPOINT_BYTES`]), and the log starts again after its header.
//!
//! With `[store] sync = "interval"` a record is only written (to the kernel's page cache: a
//! process crash loses nothing) before its batch is answered, and synced later by the policy
//! of the `sync` module: once its oldest unsynced record is an interval old (at a batch, or at
//! the store thread's idle tick: [`Wal::sync_due`]), and when the log is dropped (a clean
//! stop). A checkpoint needs no log sync: redb's commit (`Durability::Immediate`) makes every
//! record of the round durable in the database before the log starts again, and the records a
//! kernel crash could then tear or lose are numbered at most the checkpoint's (never read). A
//! kernel crash or power loss before a sync loses the records written since the last one: a
//! torn record or one whose number does not follow ends the log, as after any crash.
//!
//! # Format (version [`VERSION`])
//! - Header, [`HEADER`] bytes: the magic `RHUBWAL\n`, the version (u32 LE), the redb file's
//!   store id (u8 length + bytes), zeros. A file of a version this build does not read is
//!   refused with an error that says so, never misread; a log of another store is refused too
//!   (or, when the database file was just created because it was missing, moved aside).
//! - Versions: 1 has the operation kinds 1–5 (history, inboxes); 2 adds the webhook outbox's
//!   (6, 7: [`Op::OutboxPush`], [`Op::OutboxDone`]), so a build that reads only version 1
//!   refuses a log that may hold them instead of failing on an unknown kind. This build reads
//!   [`OLDEST_VERSION`] to [`VERSION`] and writes [`VERSION`]: an older log is replayed, and its
//!   header rewritten at [`VERSION`] once the checkpoint holds its records, before any record
//!   of this build is written into it.
//! - Records: payload length (u32 LE, never 0), CRC-32 of the rest (u32 LE), sequence number
//!   (u64 LE), payload (the batch's operations, see [`Op`]). Sequence numbers follow each other;
//!   the database's `meta` row `wal_lsn` holds the last one its checkpoint includes.
//! - After the last record: at least 16 zero bytes (written with every record), so a clean end
//!   reads as a zero length. A record cut short or failing its checksum (a crash during the
//!   write) ends the log with a warning: it was never answered.
//!
//! Replaying applies the records numbered above `wal_lsn` in order; the first of them must be
//! `wal_lsn + 1`, else the log does not continue this database (a restored backup) and opening
//! fails with an error saying what to do.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::sync::SyncPolicy;
use crate::store::StoreError;

#[path = "wal_op.rs"]
mod op;
pub(super) use op::Op;

/// The log file's name inside the store directory.
pub const WAL_NAME: &str = "ringhub.wal";
/// The log format this build writes (and the newest it reads).
pub(super) const VERSION: u32 = 2;
/// The oldest log format this build reads (its operation kinds are a subset of [`VERSION`]'s).
pub(super) const OLDEST_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"RHUBWAL\n";
/// Bytes of the header; records start here.
pub(super) const HEADER: u64 = 64;
/// Bytes before each record's payload: length, checksum, sequence number.
const REC_HEAD: usize = 16;
/// Zero bytes written after each record (a clean end).
const END: [u8; REC_HEAD] = [0; REC_HEAD];
/// Longest time between two checkpoints while batches come.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A log this long is checkpointed at the next batch.
pub(super) const CHECKPOINT_BYTES: u64 = 32 << 20;
/// Zeros written ahead of the records, first and at most: a write inside them changes no
/// metadata, so `fdatasync` flushes data only.
const FILL_MIN: u64 = 64 << 10;
const FILL_MAX: u64 = 4 << 20;

/// A record read back: its sequence number and payload.
pub(super) struct Record<'a> {
    pub(super) lsn: u64,
    pub(super) payload: &'a [u8],
}

/// What a log file holds.
pub(super) struct Contents<'a> {
    /// The records, in order, up to the first torn or stale one.
    pub(super) records: Vec<Record<'a>>,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// The header for a log of store `store_id`.
fn header(store_id: &str) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let id = &store_id.as_bytes()[..store_id.len().min(HEADER as usize - 13)];
    h[12] = id.len() as u8;
    h[13..13 + id.len()].copy_from_slice(id);
    h
}

/// The version a header states (check it first with [`check_header`]).
pub(super) fn version(bytes: &[u8]) -> u32 {
    let mut v = [0u8; 4];
    if let Some(b) = bytes.get(8..12) {
        v.copy_from_slice(b);
    }
    u32::from_le_bytes(v)
}

/// The store id of a header; errors for a file that is not a log of a version this build reads.
pub(super) fn check_header<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    if bytes.len() < HEADER as usize || &bytes[..8] != MAGIC {
        return Err(StoreError::Corrupt(format!(
            "{} is not a ringhub write-ahead log (bad header)",
            path.display()
        )));
    }
    let version = version(bytes);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        let who = if version > VERSION {
            "a newer"
        } else {
            "an older"
        };
        return Err(StoreError::Corrupt(format!(
            "{} was written by {who} ringhub (log version {version}; this build reads versions \
             {OLDEST_VERSION} to {VERSION}): open the store with that version once so it checkpoints the log, or \
             move the log away to lose its last publications",
            path.display()
        )));
    }
    let n = usize::from(bytes[12]).min(HEADER as usize - 13);
    Ok(&bytes[13..13 + n])
}

/// Reads the records after the header, stopping at the clean end, a torn record (warned
/// about) or a record that does not follow the one before (left from before a checkpoint).
pub(super) fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Contents<'a> {
    let mut at = HEADER as usize;
    let mut records: Vec<Record<'a>> = Vec::new();
    loop {
        let rest = &bytes[at.min(bytes.len())..];
        if rest.len() < REC_HEAD || rest[..4] == [0; 4] {
            break;
        }
        let mut w = [0u8; 4];
        w.copy_from_slice(&rest[..4]);
        let len = u32::from_le_bytes(w) as usize;
        w.copy_from_slice(&rest[4..8]);
        let crc = u32::from_le_bytes(w);
        let body = rest.get(8..REC_HEAD + len);
        if body.is_none_or(|b| crc32fast::hash(b) != crc) {
            tracing::warn!(
                file = %path.display(),
                offset = at,
                "store: the write-ahead log ends with a torn record (a crash while writing it): \
                 ignored; every record before it is kept"
            );
            break;
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&rest[8..REC_HEAD]);
        let lsn = u64::from_le_bytes(l);
        if records.last().is_some_and(|r| r.lsn + 1 != lsn) {
            break;
        }
        records.push(Record {
            lsn,
            payload: &rest[REC_HEAD..REC_HEAD + len],
        });
        at += REC_HEAD + len;
    }
    Contents { records }
}

/// The open log: where the next record goes and the batch being encoded.
pub(super) struct Wal {
    file: File,
    path: PathBuf,
    pos: u64,
    /// Bytes of the file written (zeros past the records).
    filled: u64,
    /// The batch's record: head placeholder, then its operations.
    buf: Vec<u8>,
    /// The sequence number of the last record written or checkpointed.
    pub(super) lsn: u64,
    /// When the database was last checkpointed.
    checkpointed: Instant,
    /// When records are synced (`[store] sync`).
    pub(super) policy: SyncPolicy,
    /// Tests: checkpoint only when asked to.
    #[cfg(test)]
    pub(super) manual: bool,
    #[cfg(test)]
    forced: bool,
}

impl Wal {
    /// Opens (creating when missing) the log at `path`, `len` bytes long; a `fresh` one (new,
    /// empty, or another store's moved away) gets a header for store `store_id`.
    pub(super) fn open(
        path: &Path,
        len: u64,
        fresh: bool,
        store_id: &str,
    ) -> Result<Wal, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io(path, "opening", e))?;
        let mut wal = Wal {
            file,
            path: path.to_path_buf(),
            pos: HEADER,
            filled: if fresh { 0 } else { len },
            buf: vec![0; REC_HEAD],
            lsn: 0,
            checkpointed: Instant::now(),
            policy: SyncPolicy::new(None),
            #[cfg(test)]
            manual: false,
            #[cfg(test)]
            forced: false,
        };
        if fresh {
            wal.start(store_id)?;
            // The new file's name must survive a crash as much as its records.
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io(dir, "syncing", e))?;
            }
        }
        Ok(wal)
    }

    /// The log's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a fresh header for `store_id` and an empty log after it, durably.
    pub(super) fn start(&mut self, store_id: &str) -> Result<(), StoreError> {
        self.filled = 0;
        self.write_at(&header(store_id), 0)?;
        self.rewind()?;
        self.file
            .sync_all()
            .map_err(|e| io(&self.path, "syncing", e))
    }

    /// The log starts again after its header (the database holds everything in it now).
    /// Nothing to sync: records left behind are numbered at most the checkpoint's.
    pub(super) fn rewind(&mut self) -> Result<(), StoreError> {
        self.pos = HEADER;
        self.checkpointed = Instant::now();
        self.policy.checkpointed();
        #[cfg(test)]
        {
            self.forced = false;
        }
        self.write_at(&END, HEADER)
    }

    /// Whether the batch has operations.
    pub(super) fn pending(&self) -> bool {
        self.buf.len() > REC_HEAD
    }

    /// Adds an operation to the batch's record.
    pub(super) fn push(&mut self, op: &Op<'_>) {
        op.encode(&mut self.buf);
    }

    /// Forgets the batch's operations (rolled back, or made durable by a checkpoint).
    pub(super) fn discard(&mut self) {
        self.buf.truncate(REC_HEAD);
    }

    /// Whether the next commit should checkpoint the database instead of writing a record.
    pub(super) fn checkpoint_due(&self) -> bool {
        #[cfg(test)]
        if self.manual {
            return self.forced;
        }
        self.pos >= CHECKPOINT_BYTES || self.checkpointed.elapsed() >= CHECKPOINT_EVERY
    }

    /// Tests: the next commit checkpoints.
    #[cfg(test)]
    pub(super) fn force_checkpoint(&mut self) {
        self.forced = true;
        self.checkpointed = Instant::now()
            .checked_sub(CHECKPOINT_EVERY)
            .unwrap_or(self.checkpointed);
    }

    /// Writes the batch as record `lsn + 1` and makes it durable (`fdatasync`) when the sync
    /// policy says so (always, by default).
    pub(super) fn write_batch(&mut self) -> Result<(), StoreError> {
        let lsn = self.lsn + 1;
        let len = (self.buf.len() - REC_HEAD) as u32;
        self.buf[8..REC_HEAD].copy_from_slice(&lsn.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let n = self.buf.len() as u64;
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(&END);
        let r = self.write_at(&buf, self.pos);
        buf.truncate(REC_HEAD);
        self.buf = buf;
        r?;
        if self.policy.written(Instant::now()) {
            self.sync()?;
        }
        self.pos += n;
        self.lsn = lsn;
        Ok(())
    }

    /// Makes every record written durable (`fdatasync`).
    fn sync(&mut self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| io(&self.path, "syncing", e))?;
        self.policy.synced();
        Ok(())
    }

    /// Syncs the records written but not yet durable when the policy's deadline has passed
    /// (or now, when `all`); returns how long until the next deadline (`None`: none waits).
    pub(super) fn sync_due(&mut self, all: bool) -> Result<Option<Duration>, StoreError> {
        let now = Instant::now();
        if self.policy.unsynced() && (all || self.policy.due(now)) {
            self.sync()?;
        }
        Ok(self.policy.wait(now))
    }

    /// Writes `bytes` at `at`, first writing zeros ahead when the file is not that long yet.
    fn write_at(&mut self, bytes: &[u8], at: u64) -> Result<(), StoreError> {
        let end = at + bytes.len() as u64;
        if end > self.filled {
            let grow = self.filled.clamp(FILL_MIN, FILL_MAX);
            let to = (end + grow).next_multiple_of(FILL_MIN);
            let zeros = vec![0u8; (to - self.filled) as usize];
            self.file
                .write_all_at(&zeros, self.filled)
                .map_err(|e| io(&self.path, "writing", e))?;
            self.filled = to;
        }
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| io(&self.path, "writing", e))
    }
}

impl Drop for Wal {
    /// A clean stop (or a reopen) syncs what the interval policy left unsynced.
    fn drop(&mut self) {
        if self.policy.unsynced() {
            if let Err(e) = self.sync() {
                tracing::error!(error = %e, "store: syncing the write-ahead log at close failed");
            }
        }
    }
}

/// Tests: where each record of a log file ends.
#[cfg(test)]
pub(crate) fn record_ends(bytes: &[u8]) -> Vec<u64> {
    let c = parse(Path::new("test.wal"), bytes);
    let mut at = HEADER;
    c.records
        .iter()
        .map(|r| {
            at += (REC_HEAD + r.payload.len()) as u64;
            at
        })
        .collect()
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
