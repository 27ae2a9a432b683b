//! The [redb](https://docs.rs/redb) [`Store`]: history and inboxes in one database file,
//! `ringhub.redb`, in the configured directory.
//!
//! # Transactions
//! One write transaction spans a batch: the first mutating call opens it, [`Store::commit`]
//! commits it with [`Durability::Immediate`] (an fsync), so `commit` is the group commit. Reads
//! go through the open write transaction when there is one (they see the batch's writes), else
//! through a read transaction. `commit` with nothing written does nothing. Dropping the store
//! without `commit` loses the batch, as a crash would.
//!
//! If an operation fails part way through a batch, the whole batch is rolled back at the next
//! `commit`, which then reports the failure (the store thread never exposed the batch's results).
//!
//! # Tables
//! | table | key | value |
//! |---|---|---|
//! | `streams` | topic | top offset, epoch |
//! | `history` | (topic, offset) | time, event, data |
//! | `inbox` | (user, offset) | id, created, expiry, topic, event, data |
//! | `users` | user | (next offset, messages in the inbox) |
//! | `status` | id | offset, status, attempts, created, final time, user |
//! | `live` | (created, id) | — (live messages, for `expire`) |
//! | `finals` | (final time, id) | — (final statuses, to forget them) |
//! | `meta` | name | `next_id`, `store_id` |
//!
//! Values are encoded by hand (the `codec` module). Stream metas (epoch, top, oldest kept offset) are
//! cached after first use and written once per batch, at `commit`. Only appends write a stream:
//! reads of a topic never written store and cache nothing (its epoch is
//! [`unwritten_epoch`] of the store id), so read-only clients cannot grow
//! the file.
//!
//! # Time
//! As in the memory store: an ack's final time is the wall clock, an inbox TTL of zero never
//! expires.

mod codec;
mod inbox;

pub(crate) use codec::fuzz_decode_all;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

use super::memory::{Offer, ReadAcc};
use super::{
    first_message_id, new_epoch, now_ms, unwritten_epoch, HistoryLimits, HistoryRead, InboxLimits,
    InboxMessage, MessageInfo, NewMessage, StatusChange, Store, StoreError, StreamPos,
};

const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
const INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
const USERS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("users");
const STATUS: TableDefinition<u64, &[u8]> = TableDefinition::new("status");
const LIVE: TableDefinition<(u64, u64), ()> = TableDefinition::new("live");
const FINALS: TableDefinition<(u64, u64), ()> = TableDefinition::new("finals");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The database file's name inside the store directory.
pub const FILE_NAME: &str = "ringhub.redb";

/// Maps any redb error: corruption (and a file that is not a database) to
/// [`StoreError::Corrupt`], the rest to [`StoreError::Io`].
fn err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(m) => StoreError::Corrupt(format!("redb: {m}")),
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("redb: not a readable database: {io}"))
        }
        other => StoreError::Io(format!("redb: {other}")),
    }
}

/// Runs `$body` with `$t` bound to table `$def`, opened in the batch's write transaction if one
/// is open (so reads see the batch), else in a fresh read transaction.
macro_rules! with_table {
    ($self:ident, $def:expr, |$t:ident| $body:expr) => {
        match &$self.wtx {
            Some(w) => {
                let $t = w.open_table($def).map_err(err)?;
                let out = $body;
                out
            }
            None => {
                let r = redb::ReadableDatabase::begin_read(&$self.db).map_err(err)?;
                let $t = r.open_table($def).map_err(err)?;
                let out = $body;
                out
            }
        }
    };
}
pub(crate) use with_table;

/// A cached stream meta.
struct StreamMeta {
    epoch: Arc<str>,
    top: u64,
    /// The oldest offset still stored (`top + 1` when none is).
    first_kept: u64,
    /// Changed in this batch: written at commit.
    dirty: bool,
}

/// The redb store. See the [module docs](self).
pub struct RedbStore {
    db: Database,
    /// The batch's write transaction.
    wtx: Option<WriteTransaction>,
    /// An operation of this batch failed: the batch is rolled back at commit.
    failed: bool,
    streams: HashMap<Box<str>, StreamMeta, ahash::RandomState>,
    /// Topics whose meta changed in this batch.
    dirty_streams: Vec<Box<str>>,
    /// The id the next message gets.
    next_id: u64,
    next_id_dirty: bool,
    store_id: Box<str>,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
    /// The database file (to reopen it).
    path: std::path::PathBuf,
    /// Why the database is unusable since an I/O error (disk full…), when it is: redb refuses
    /// everything after one until reopened, so operations fail with `Unavailable` and the store
    /// reopens the file (with backoff) until that works.
    broken: Option<Broken>,
    /// The first wait before reopening a broken database (doubles up to [`MAX_BACKOFF`]).
    backoff: Duration,
}

/// A broken database: why, and when to try reopening it.
struct Broken {
    why: String,
    retry_at: Instant,
    wait: Duration,
}

/// The longest wait between two reopen attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Opens the batch's write transaction if needed.
fn wtx<'a>(
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
        let (next_id, store_id) = {
            tx.open_table(STREAMS).map_err(err)?;
            tx.open_table(HISTORY).map_err(err)?;
            tx.open_table(INBOX).map_err(err)?;
            tx.open_table(USERS).map_err(err)?;
            tx.open_table(STATUS).map_err(err)?;
            tx.open_table(LIVE).map_err(err)?;
            tx.open_table(FINALS).map_err(err)?;
            let mut meta = tx.open_table(META).map_err(err)?;
            let stored_next = match meta.get("next_id").map_err(err)? {
                Some(v) => Some(codec::Reader::new(v.value(), "meta next_id").u64()?),
                None => None,
            };
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
            (next_id, store_id)
        };
        tx.commit().map_err(err)?;
        Ok(RedbStore {
            db,
            wtx: None,
            failed: false,
            streams: HashMap::default(),
            dirty_streams: Vec::new(),
            next_id,
            next_id_dirty: false,
            store_id,
            scratch: Vec::with_capacity(256),
            path: path.to_path_buf(),
            broken: None,
            backoff: Duration::from_millis(500),
        })
    }

    /// The id drawn when the database file was created (changes when it is wiped).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Whether a write transaction is open (tests: reads must not open one).
    #[cfg(test)]
    pub(crate) fn in_batch(&self) -> bool {
        self.wtx.is_some()
    }

    /// How many stream metas are cached (tests: reads of unknown topics cache nothing).
    #[cfg(test)]
    pub(crate) fn cached_streams(&self) -> usize {
        self.streams.len()
    }

    /// Notes the outcome of a mutating operation: a failure dooms the batch.
    fn track<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.failed = true;
        }
        self.note(r)
    }

    /// Notes the outcome of any operation: an I/O error breaks the database (redb refuses every
    /// later operation until it is reopened), reported as `Unavailable` (wire `not_available`).
    fn note<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
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
    fn usable(&mut self) -> Result<(), StoreError> {
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
                *self = fresh;
                self.backoff = backoff;
                Ok(())
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
    fn reset(&mut self) {
        self.wtx = None;
        self.failed = false;
        self.streams.clear();
        self.dirty_streams.clear();
        self.next_id_dirty = false;
        if let Ok(next) = self.read_next_id() {
            self.next_id = next;
        }
    }

    fn read_next_id(&self) -> Result<u64, StoreError> {
        with_table!(self, META, |t| match t.get("next_id").map_err(err)? {
            Some(v) => codec::Reader::new(v.value(), "meta next_id").u64(),
            None => Ok(self.next_id),
        })
    }

    /// Makes sure `topic`'s meta is cached when the stream was ever written; false (and nothing
    /// stored or cached) when it never was: reads of unknown topics must not grow the store.
    fn load_stream(&mut self, topic: &str) -> Result<bool, StoreError> {
        if self.streams.contains_key(topic) {
            return Ok(true);
        }
        let stored = with_table!(self, STREAMS, |t| match t.get(topic).map_err(err)? {
            Some(v) => {
                let (top, epoch) = codec::decode_stream(v.value())?;
                Some((top, Arc::<str>::from(epoch)))
            }
            None => None,
        });
        let Some((top, epoch)) = stored else {
            return Ok(false);
        };
        let first = with_table!(self, HISTORY, |t| {
            let mut r = t.range((topic, 0)..=(topic, u64::MAX)).map_err(err)?;
            match r.next() {
                Some(item) => Some(item.map_err(err)?.0.value().1),
                None => None,
            }
        });
        let meta = StreamMeta {
            epoch,
            top,
            first_kept: first.unwrap_or(top + 1),
            dirty: false,
        };
        self.streams.insert(topic.into(), meta);
        Ok(true)
    }

    /// The position of a stream that was never written.
    fn unwritten(&self, topic: &str) -> StreamPos {
        StreamPos {
            epoch: unwritten_epoch(&self.store_id, topic),
            offset: 0,
        }
    }

    fn stream_pos(&self, topic: &str) -> Result<StreamPos, StoreError> {
        let m = self
            .streams
            .get(topic)
            .ok_or_else(|| StoreError::Io("redb: stream meta not cached".into()))?;
        Ok(StreamPos {
            epoch: m.epoch.clone(),
            offset: m.top,
        })
    }

    fn append_inner(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError> {
        if !self.load_stream(topic)? {
            // The first append: the stream keeps the epoch its reads reported.
            let meta = StreamMeta {
                epoch: unwritten_epoch(&self.store_id, topic),
                top: 0,
                first_kept: 1,
                dirty: false,
            };
            self.streams.insert(topic.into(), meta);
        }
        let m = self
            .streams
            .get_mut(topic)
            .ok_or_else(|| StoreError::Io("redb: stream meta not cached".into()))?;
        let tx = wtx(&self.db, &mut self.wtx)?;
        let offset = m.top + 1;
        codec::encode_publication(&mut self.scratch, now_ms, event, data);
        let mut t = tx.open_table(HISTORY).map_err(err)?;
        t.insert((topic, offset), self.scratch.as_slice())
            .map_err(err)?;
        m.top = offset;
        if !m.dirty {
            m.dirty = true;
            self.dirty_streams.push(topic.into());
        }
        let size = u64::try_from(limits.size).unwrap_or(u64::MAX);
        let keep_from = (offset + 1).saturating_sub(size).max(1);
        if m.first_kept < keep_from {
            if keep_from - m.first_kept <= 32 {
                for o in m.first_kept..keep_from {
                    t.remove((topic, o)).map_err(err)?;
                }
            } else {
                t.retain_in((topic, m.first_kept)..(topic, keep_from), |_, _| false)
                    .map_err(err)?;
            }
            m.first_kept = keep_from;
        }
        Ok(StreamPos {
            epoch: m.epoch.clone(),
            offset,
        })
    }

    fn read_inner(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError> {
        if !self.load_stream(topic)? {
            let acc = ReadAcc::new(limits, 0, 1, after, limit, now_ms);
            return Ok(acc.finish(self.unwritten(topic)));
        }
        let pos = self.stream_pos(topic)?;
        let first_kept = self
            .streams
            .get(topic)
            .map_or(pos.offset + 1, |m| m.first_kept);
        let mut acc = ReadAcc::new(limits, pos.offset, first_kept, after, limit, now_ms);
        if after < pos.offset {
            with_table!(self, HISTORY, |t| {
                let range = t
                    .range((topic, after + 1)..=(topic, pos.offset))
                    .map_err(err)?;
                for item in range.rev() {
                    let (k, v) = item.map_err(err)?;
                    let bytes = v.value();
                    match acc.offer(codec::publication_time(bytes)?) {
                        Offer::Take => acc.push(codec::decode_publication(k.value().1, bytes)?),
                        Offer::Skip => continue,
                        Offer::Stop => break,
                    }
                }
            });
        }
        Ok(acc.finish(pos))
    }

    fn commit_inner(&mut self) -> Result<(), StoreError> {
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
}

impl Store for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn inbox_epoch(&self) -> Arc<str> {
        self.store_id.as_ref().into()
    }

    fn append(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError> {
        self.usable()?;
        let r = self.append_inner(topic, limits, event, data, now_ms);
        self.track(r)
    }

    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError> {
        self.usable()?;
        let r = match self.load_stream(topic) {
            Ok(true) => self.stream_pos(topic),
            Ok(false) => Ok(self.unwritten(topic)),
            Err(e) => Err(e),
        };
        self.note(r)
    }

    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError> {
        self.usable()?;
        let r = self.read_inner(topic, limits, after, limit, now_ms);
        self.track(r)
    }

    fn inbox_put(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<(InboxMessage, Vec<StatusChange>), StoreError> {
        self.usable()?;
        let r = self.put_inner(user, msg, limits, now_ms);
        self.track(r)
    }

    fn inbox_delivered(&mut self, user: &str, offset: u64, times: u32) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.delivered_inner(user, offset, times);
        self.track(r)
    }

    fn inbox_ack(&mut self, user: &str, offset: u64) -> Result<Option<StatusChange>, StoreError> {
        self.usable()?;
        let r = self.ack_inner(user, offset);
        self.track(r)
    }

    fn inbox_list(&mut self, user: &str, now_ms: u64) -> Result<Vec<InboxMessage>, StoreError> {
        self.usable()?;
        let r = self.list_inner(user, now_ms);
        self.note(r)
    }

    fn expire(
        &mut self,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        self.usable()?;
        let r = self.expire_inner(limits, now_ms);
        self.track(r)
    }

    fn status(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError> {
        self.usable()?;
        let r = self.status_inner(id);
        self.note(r)
    }

    fn health(&self) -> Result<(), String> {
        match &self.broken {
            None => Ok(()),
            Some(b) => Err(format!("store {}: {}", self.path.display(), b.why)),
        }
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if self.failed {
            if let Some(tx) = self.wtx.take() {
                // Rolling back; the batch's failure is what gets reported.
                let _ = tx.abort();
            }
            self.reset();
            return Err(StoreError::Io(
                "redb: an operation of this batch failed; the batch was rolled back".into(),
            ));
        }
        let r = self.commit_inner();
        if r.is_err() {
            self.reset();
        }
        self.note(r)
    }
}
