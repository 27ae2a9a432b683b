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
//! | `messages` | id | a live message: offset, status, attempts, created, expiry, user, topic, event, data |
//! | `users` | user | (next offset once its newest message left the inbox, unused 0) |
//! | `status` | id | a final status: offset, status, attempts, created, final time, user |
//! | `finals` | (final time, id) | — (final statuses, to forget them) |
//! | `meta` | name | `next_id`, `store_id`, `inbox_schema` |
//! | `outbox` | id | a webhook event: created time, JSON (the `outbox` module) |
//!
//! Each user's inbox (offset → id) and the live messages by creation time are indexed in
//! memory, rebuilt from `messages` at open (the `inbox` module): a durable send writes one row.
//! Files of schema 1 (an `inbox` table keyed by (user, offset), a `status` row per live message
//! and a `live` table) are migrated when opened; a file of a newer schema is refused (the
//! `schema` module).
//!
//! Values are encoded by hand (the `codec` module). Stream metas (epoch, top, oldest kept offset) are
//! cached after first use and written once per batch, at `commit`. Only appends write a stream:
//! reads of a topic never written store and cache nothing (its epoch is
//! [`unwritten_epoch`](super::unwritten_epoch) of the store id), so read-only clients cannot grow
//! the file.
//!
//! # Time
//! As in the memory store: an ack's final time is the wall clock, an inbox TTL of zero never
//! expires.

mod codec;
mod history;
mod inbox;
mod open;
mod outbox;
mod schema;

pub(crate) use codec::fuzz_decode_all;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, TableDefinition, WriteTransaction};

use super::{
    HistoryLimits, HistoryRead, InboxLimits, InboxMessage, MessageInfo, NewMessage, OutboxEntry,
    OutboxStats, StatusChange, Store, StoreError, StreamPos,
};

const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("history");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const USERS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("users");
const STATUS: TableDefinition<u64, &[u8]> = TableDefinition::new("status");
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
    /// Live messages per user inbox and by time, in memory (see the `inbox` module).
    inboxes: inbox::Inboxes,
    /// Pending webhook events, in memory (see the `outbox` module).
    outbox: crate::store::outbox::OutboxIndex<()>,
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
    broken: Option<open::Broken>,
    /// The first wait before reopening a broken database (doubles up to `open::MAX_BACKOFF`).
    backoff: Duration,
}

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

    fn outbox_push(&mut self, events: &[bytes::Bytes], now_ms: u64) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.outbox_push_inner(events, now_ms);
        self.track(r)
    }

    fn outbox_claim(
        &mut self,
        max: usize,
        lease: Duration,
        now_ms: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.usable()?;
        let r = self.outbox_claim_inner(max, lease, now_ms);
        self.note(r)
    }

    fn outbox_done(&mut self, ids: &[String]) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.outbox_done_inner(ids);
        self.track(r)
    }

    fn outbox_stats(&mut self) -> Result<OutboxStats, StoreError> {
        self.usable()?;
        Ok(self.outbox_stats_inner())
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
