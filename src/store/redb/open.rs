//! Opening the database file — damage is a clean error, never a panic — and reopening it after
//! an I/O error (disk full) broke it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable};

use super::codec;
use super::{
    err, with_table, RedbStore, FILE_NAME, FINALS, HISTORY, MESSAGES, META, STATUS, STREAMS, USERS,
};
use crate::store::{first_message_id, new_epoch, now_ms, StoreError};

/// A broken database: why, and when to try reopening it.
pub(super) struct Broken {
    pub(super) why: String,
    retry_at: Instant,
    wait: Duration,
}

/// The longest wait between two reopen attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl RedbStore {
    /// Opens (or creates) the store in `dir`, creating the directory and its `ringhub.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_at(dir, now_ms())
    }

    /// [`open`](Self::open) at wall-clock time `now_ms` (a new file's first message id).
    ///
    /// A damaged file is an error naming the file and what to do, never a panic: redb panics on
    /// some damage (a zeroed header page), so opening, the integrity check and the first reads
    /// run under `catch_unwind`, and the whole file is checked (`check_integrity`) before use.
    pub(crate) fn open_at(dir: &Path, now_ms: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let was = std::fs::metadata(&path).ok().map(|m| m.len());
        let damaged = |why: String| {
            StoreError::Corrupt(format!(
                "{}: {why}. The store file is damaged: restore it from a backup, or move it \
                 away to start with an empty store (every stream and inbox then starts a new \
                 epoch)",
                path.display()
            ))
        };
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_file(&path, now_ms)
        }));
        let store = match opened {
            Ok(Ok(s)) => s,
            // The log's errors say themselves what to do.
            Ok(Err(StoreError::Corrupt(m))) if m.contains(super::WAL_NAME) => {
                return Err(StoreError::Corrupt(m))
            }
            Ok(Err(StoreError::Corrupt(m))) => return Err(damaged(m)),
            Ok(Err(StoreError::Io(m))) => {
                return Err(StoreError::Io(format!("{}: {m}", path.display())))
            }
            Ok(Err(e)) => return Err(e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(damaged(format!("redb failed reading it ({what})")));
            }
        };
        match was {
            None => tracing::warn!(
                file = %path.display(),
                "store: no database file: created a new one; every stream and inbox starts a new epoch"
            ),
            Some(0) => tracing::warn!(
                file = %path.display(),
                "store: the database file was EMPTY (0 bytes): started a new store; every stream \
                 and inbox starts a new epoch and earlier data is gone (restore a backup if you \
                 expected it)"
            ),
            Some(_) => {}
        }
        Ok(store)
    }

    /// Opens the file, checks it whole, and reads its meta.
    fn open_file(path: &Path, now_ms: u64) -> Result<Self, StoreError> {
        Self::open_file_booted(path, now_ms, super::boot::boot_id().as_deref())
    }

    /// [`open_file`](Self::open_file) in boot `boot` (tests: another boot than this one).
    pub(super) fn open_file_booted(
        path: &Path,
        now_ms: u64,
        boot: Option<&str>,
    ) -> Result<Self, StoreError> {
        let mut db = Database::create(path).map_err(|e| {
            let locked = matches!(e, redb::DatabaseError::DatabaseAlreadyOpen);
            match err(e) {
                // The lock is per file: typically a second server started in the same directory.
                StoreError::Io(m) if locked => StoreError::Io(format!(
                    "{m} Another process (e.g. a second ringhub started in the same directory) \
                     has this store open: give this server its own directory with --store-path \
                     DIR ([store] path), or keep nothing with --store memory"
                )),
                other => other,
            }
        })?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                file = %path.display(),
                "store: the database failed its integrity check and was repaired"
            ),
            Err(e) => return Err(err(e)),
        }
        // Create every table (reads open them in read transactions) and the meta rows.
        let tx = db.begin_write().map_err(err)?;
        let (next_id, store_id, new_db) = {
            tx.open_table(STREAMS).map_err(err)?;
            tx.open_table(HISTORY).map_err(err)?;
            tx.open_table(MESSAGES).map_err(err)?;
            tx.open_table(USERS).map_err(err)?;
            tx.open_table(STATUS).map_err(err)?;
            tx.open_table(FINALS).map_err(err)?;
            tx.open_table(super::outbox::OUTBOX).map_err(err)?;
            let mut meta = tx.open_table(META).map_err(err)?;
            let stored_next = match meta.get("next_id").map_err(err)? {
                Some(v) => Some(codec::Reader::new(v.value(), "meta next_id").u64()?),
                None => None,
            };
            // A new file is written in the current schema; an older one is migrated.
            super::schema::upgrade(&tx, &mut meta, stored_next.is_none())?;
            let next_id = match stored_next {
                Some(n) => n,
                None => {
                    // A new file: the ids of a lost one are never handed out again.
                    let n = first_message_id(now_ms);
                    meta.insert("next_id", &n.to_le_bytes()[..]).map_err(err)?;
                    n
                }
            };
            let stored: Option<Box<str>> = match meta.get("store_id").map_err(err)? {
                Some(v) => Some(
                    codec::Reader::new(v.value(), "meta store_id")
                        .rest_str()?
                        .into(),
                ),
                None => None,
            };
            let store_id = match stored {
                Some(id) => id,
                None => {
                    let id = new_epoch();
                    meta.insert("store_id", id.as_bytes()).map_err(err)?;
                    Box::from(&*id)
                }
            };
            (next_id, store_id, stored_next.is_none())
        };
        tx.commit().map_err(err)?;
        let inboxes = super::schema::load_inboxes(&db)?;
        let outbox = super::outbox::load(&db, now_ms)?;
        let (wal, log) = super::replay::open_log(path, &store_id, new_db)?;
        let mut store = RedbStore {
            outbox,
            db,
            wtx: None,
            failed: false,
            streams: HashMap::default(),
            dirty_streams: Vec::new(),
            trims: Vec::new(),
            inboxes,
            next_id,
            next_id_dirty: false,
            store_id,
            scratch: Vec::with_capacity(256),
            path: path.to_path_buf(),
            broken: None,
            backoff: Duration::from_millis(500),
            wal,
            sio_pruned: 0,
        };
        store.replay(&log)?;
        store.check_unsynced_marker(boot)?;
        Ok(store)
    }

    /// Notes the outcome of any operation: an I/O error breaks the database (redb refuses every
    /// later operation until it is reopened), reported as `Unavailable` (wire `not_available`).
    pub(super) fn note<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        match r {
            Err(StoreError::Io(why)) => {
                if self.broken.is_none() {
                    tracing::error!(
                        file = %self.path.display(),
                        error = %why,
                        "store: an I/O error broke the database (disk full?): operations fail \
                         with not_available and readiness fails until it reopens"
                    );
                    self.broken = Some(Broken {
                        why: why.clone(),
                        retry_at: Instant::now() + self.backoff,
                        wait: self.backoff,
                    });
                }
                Err(StoreError::Unavailable(format!("store I/O failed: {why}")))
            }
            r => r,
        }
    }

    /// Fails while the database is broken, reopening it when the backoff allows.
    pub(super) fn usable(&mut self) -> Result<(), StoreError> {
        let Some(b) = &mut self.broken else {
            return Ok(());
        };
        if Instant::now() < b.retry_at {
            return Err(StoreError::Unavailable(format!(
                "store I/O failed, reopening: {}",
                b.why
            )));
        }
        // Drop the transaction and the handle first: redb locks the file per handle.
        self.wtx = None;
        let placeholder = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err)?;
        drop(std::mem::replace(&mut self.db, placeholder));
        match Self::open_file(&self.path, now_ms()) {
            Ok(fresh) => {
                tracing::warn!(file = %self.path.display(), "store: the database reopened");
                let backoff = self.backoff;
                let every = self.wal.policy.every();
                *self = fresh;
                self.backoff = backoff;
                self.set_sync_interval(every)
            }
            Err(e) => {
                let b = self.broken.get_or_insert(Broken {
                    why: String::new(),
                    retry_at: Instant::now(),
                    wait: self.backoff,
                });
                b.wait = (b.wait * 2).min(MAX_BACKOFF);
                b.retry_at = Instant::now() + b.wait;
                b.why = e.to_string();
                Err(StoreError::Unavailable(format!(
                    "store I/O failed, reopening failed: {e}"
                )))
            }
        }
    }

    /// Tests: [`open`](Self::open) as in boot `boot`.
    #[cfg(test)]
    pub(crate) fn open_in_boot(dir: &Path, boot: Option<&str>) -> Result<Self, StoreError> {
        Self::open_file_booted(&dir.join(FILE_NAME), now_ms(), boot)
    }

    /// Tests: reopen attempts without waiting.
    #[cfg(test)]
    pub(crate) fn set_backoff(&mut self, d: Duration) {
        self.backoff = d;
        if let Some(b) = &mut self.broken {
            b.retry_at = Instant::now() + d;
            b.wait = d;
        }
    }

    /// Forgets everything cached about uncommitted state (after a rollback).
    pub(super) fn reset(&mut self) {
        self.wtx = None;
        self.failed = false;
        self.streams.clear();
        self.dirty_streams.clear();
        self.trims.clear();
        self.next_id_dirty = false;
        if let Ok(next) = self.read_next_id() {
            self.next_id = next;
        }
        // The indexes described the rolled-back batch: back to what the file holds.
        match super::schema::load_inboxes(&self.db) {
            Ok(idx) => self.inboxes = idx,
            Err(e) => {
                tracing::error!(error = %e, "store: reloading the inbox index failed");
                self.inboxes = Default::default();
            }
        }
        match super::outbox::load(&self.db, now_ms()) {
            Ok(idx) => self.outbox = idx,
            Err(e) => tracing::error!(error = %e, "store: reloading the outbox index failed"),
        }
    }

    fn read_next_id(&self) -> Result<u64, StoreError> {
        with_table!(self, META, |t| match t.get("next_id").map_err(err)? {
            Some(v) => codec::Reader::new(v.value(), "meta next_id").u64(),
            None => Ok(self.next_id),
        })
    }
}
