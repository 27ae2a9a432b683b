//! The [redb](https://docs.rs/redb) [`Store`]: history and inboxes in one database file,
//! `ringhub.redb`, in the configured directory.
//!
//! # Transactions and the write-ahead log
//! Every mutating call applies to one redb write transaction and adds its arguments to the
//! batch's log record (the `wal` module). [`Store::commit`] is the group commit: it writes the
//! record to `ringhub.wal` with one `fdatasync` and keeps the transaction open for the next
//! batches; every second (or every 32 MiB of log: the `wal` module) it commits the
//! transaction instead, with [`Durability::Immediate`](redb::Durability::Immediate), and the log starts again. Opening the
//! store replays the log's records after the last checkpoint (the `replay` module). Reads go
//! through the open write transaction when there is one, else through a read transaction.
//! `commit` with nothing written does nothing. Dropping the store without `commit` loses the
//! batch, as a crash would; what was committed is in the log.
//!
//! # Sync policy
//! By default (`[store] sync = "always"`) the record is synced before `commit` returns: an
//! answered batch survives a process crash, a kernel crash and a power loss. With
//! [`set_sync_interval`](RedbStore::set_sync_interval) (`sync = "interval"`) `commit` returns
//! once the record is written to the file (the kernel's page cache), and the log is synced when
//! its oldest unsynced record is an interval old — at a later `commit` or at
//! [`Store::sync_due`], which the store thread calls when idle — and when the store is dropped
//! (a clean stop). Then an answered batch survives a process crash (`kill -9`), but a kernel
//! crash or power loss can lose the batches answered in the last interval (the `sync` module).
//!
//! If an operation fails part way through a batch, the batch is rolled back at the next
//! `commit`, which then reports the failure (the store thread never exposed the batch's
//! results): the transaction is aborted and the log's batches since the checkpoint are replayed.
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
//! | `meta` | name | `next_id`, `store_id`, `inbox_schema`, `wal_lsn` (the log's last checkpointed record) |
//! | `outbox` | id | a webhook event: created time, JSON (the `outbox` module) |
//!
//! Each user's inbox (offset → id) and the live messages by creation time are indexed in
//! memory, rebuilt from `messages` at open (the `inbox` module): a durable send writes one row.
//! Files of schema 1 (an `inbox` table keyed by (user, offset), a `status` row per live message
//! and a `live` table) are migrated when opened; a file of a newer schema is refused (the
//! `schema` module).
//!
//! Values are encoded by hand (the `codec` module). Stream metas (epoch, top, oldest kept offset) are
//! cached after first use and written once per batch, at `commit`. An append that trims a stream
//! only moves its oldest kept offset (reads start there); the trimmed rows are deleted at
//! `commit`, one range per topic for the whole batch. Only appends write a stream:
//! reads of a topic never written store and cache nothing (its epoch is
//! [`unwritten_epoch`](super::unwritten_epoch) of the store id), so read-only clients cannot grow
//! the file.
//!
//! # Time
//! As in the memory store: an ack's final time is the wall clock, an inbox TTL of zero never
//! expires.

mod boot;
mod codec;
mod commit;
mod history;
mod inbox;
mod open;
mod outbox;
mod replay;
mod schema;
mod sio;
mod sync;
mod wal;

pub use boot::MARKER;
#[cfg(test)]
pub(crate) use wal::record_ends;
pub use wal::WAL_NAME;

pub(crate) use codec::fuzz_decode_all;
use commit::wtx;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, TableDefinition, WriteTransaction};

use super::{
    AppendReq, HistoryLimits, HistoryRead, InboxLimits, InboxMessage, MessageInfo, NewMessage,
    OutboxEntry, OutboxStats, StatusChange, Store, StoreError, StreamPos,
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
    /// The oldest offset kept (`top + 1` when none is): reads never return older ones.
    first_kept: u64,
    /// The oldest offset that may still have a row: rows from here to `first_kept` were
    /// trimmed by this batch's appends and are deleted as one range at `commit` (the
    /// `history` module), not one `remove` per append.
    stored_from: u64,
    /// In [`RedbStore::trims`].
    trim_queued: bool,
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
    /// Topics with rows below their `first_kept` still stored (deleted at `commit`).
    trims: Vec<Box<str>>,
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
    /// The write-ahead log: what makes a batch durable between checkpoints.
    wal: wal::Wal,
    /// When expired Socket.IO sessions were last removed (ms since the Unix epoch).
    sio_pruned: u64,
}

impl RedbStore {
    /// The id drawn when the database file was created (changes when it is wiped).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Answers batches once their log record is written, and syncs the log within `every` of
    /// a record's write instead of before its answer (`[store] sync = "interval"`); `None`:
    /// every record is synced before `commit` returns (the default). See the
    /// [module docs](self#sync-policy) for what each survives.
    ///
    /// In interval mode the store directory gets the marker `ringhub.unsynced` (this boot's
    /// id, synced) until a clean close: opening after a reboot that may have lost answered
    /// writes then gives every stream a new epoch (the `boot` module). Fails when the marker
    /// cannot be written.
    pub fn set_sync_interval(&mut self, every: Option<Duration>) -> Result<(), StoreError> {
        if every.is_some() {
            let boot = boot::boot_id().unwrap_or_else(|| "unknown".into());
            boot::write_marker(&self.path, &boot)?;
        }
        self.wal.policy = sync::SyncPolicy::new(every);
        Ok(())
    }

    /// Whether the batch has uncommitted operations (tests: reads must add none).
    #[cfg(test)]
    pub(crate) fn in_batch(&self) -> bool {
        self.wal.pending()
    }

    /// Tests: checkpoint only when [`checkpoint_at_next_commit`](Self::checkpoint_at_next_commit)
    /// asks (not by time: a slow test run would move its checkpoints).
    #[cfg(test)]
    pub(crate) fn manual_checkpoints(&mut self) {
        self.wal.manual = true;
    }

    /// Tests: checkpoint at the next commit.
    #[cfg(test)]
    pub(crate) fn checkpoint_at_next_commit(&mut self) {
        self.wal.force_checkpoint();
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
        if r.is_ok() {
            self.wal.push(&wal::Op::Append {
                topic,
                size: u64::try_from(limits.size).unwrap_or(u64::MAX),
                event,
                data,
                now_ms,
            });
        }
        self.track(r)
    }

    fn append_batch(
        &mut self,
        reqs: &[AppendReq<'_>],
        now_ms: u64,
    ) -> Vec<Result<StreamPos, StoreError>> {
        if let Err(e) = self.usable() {
            let why = e.to_string();
            return reqs
                .iter()
                .map(|_| Err(StoreError::Unavailable(why.clone())))
                .collect();
        }
        let mut out = Vec::with_capacity(reqs.len());
        let r = self.append_many(reqs, now_ms, &mut out);
        if r.is_ok() {
            for q in reqs {
                self.wal.push(&wal::Op::Append {
                    topic: q.topic,
                    size: u64::try_from(q.limits.size).unwrap_or(u64::MAX),
                    event: q.event,
                    data: q.data,
                    now_ms,
                });
            }
        }
        match self.track(r) {
            Ok(()) => out.into_iter().map(Ok).collect(),
            Err(e) => {
                let why = e.to_string();
                let done = out.len();
                out.into_iter()
                    .map(Ok)
                    .chain(std::iter::once(Err(e)))
                    .chain(
                        (done + 1..reqs.len()).map(|_| Err(StoreError::Unavailable(why.clone()))),
                    )
                    .collect()
            }
        }
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
        let mut out = Vec::with_capacity(1);
        self.inbox_put_many(&[(user, msg)], limits, now_ms, &mut out);
        out.pop()
            .unwrap_or_else(|| Err(StoreError::Io("redb: a put without a result".into())))
    }

    fn inbox_put_many(
        &mut self,
        puts: &[(&str, NewMessage<'_>)],
        limits: InboxLimits,
        now_ms: u64,
        out: &mut Vec<Result<inbox::Put, StoreError>>,
    ) {
        if let Err(e) = self.usable() {
            let why = e.to_string();
            out.extend(
                puts.iter()
                    .map(|_| Err(StoreError::Unavailable(why.clone()))),
            );
            return;
        }
        let from = out.len();
        self.put_run(puts, limits, now_ms, out);
        for (i, (user, msg)) in puts.iter().enumerate() {
            let Some(r) = out.get_mut(from + i) else {
                break;
            };
            if r.is_ok() {
                self.wal.push(&wal::Op::Put {
                    user,
                    topic: msg.topic,
                    event: msg.event,
                    data: msg.data,
                    max_messages: u64::try_from(limits.max_messages).unwrap_or(u64::MAX),
                    ttl: limits.ttl,
                    now_ms,
                });
            } else {
                // An I/O error breaks the store (`note`), as after a single put.
                let e = std::mem::replace(r, Err(StoreError::Io(String::new())));
                *r = self.note(e);
            }
        }
    }

    fn inbox_delivered(&mut self, user: &str, offset: u64, times: u32) -> Result<(), StoreError> {
        self.usable()?;
        let live = times > 0 && self.inbox_id(user, offset).is_some();
        let r = self.delivered_inner(user, offset, times);
        if r.is_ok() && live {
            self.wal.push(&wal::Op::Delivered {
                user,
                offset,
                times,
            });
        }
        self.track(r)
    }

    fn inbox_ack(&mut self, user: &str, offset: u64) -> Result<Option<StatusChange>, StoreError> {
        self.usable()?;
        // The final time is the wall clock's, logged so that replaying gives the same.
        let now_ms = super::now_ms();
        let r = self.ack_inner(user, offset, now_ms);
        if let Ok(Some(_)) = r {
            self.wal.push(&wal::Op::Ack {
                user,
                offset,
                now_ms,
            });
        }
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
        if let Ok(Some(_)) = r {
            self.wal.push(&wal::Op::Expire {
                max_messages: u64::try_from(limits.max_messages).unwrap_or(u64::MAX),
                ttl: limits.ttl,
                now_ms,
            });
        }
        self.track(r.map(Option::unwrap_or_default))
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

    fn keeps_sio_sessions(&self) -> bool {
        true
    }

    fn sio_session_put(
        &mut self,
        pid: &str,
        session: &[u8],
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.usable()?;
        let r = self.sio_put_inner(pid, session, expires_ms, true);
        self.track(r)
    }

    fn sio_session_take(
        &mut self,
        pid: &str,
        now_ms: u64,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        self.usable()?;
        let r = self.sio_take_inner(pid, now_ms, true);
        self.track(r)
    }

    fn health(&self) -> Result<(), String> {
        match &self.broken {
            None => Ok(()),
            Some(b) => Err(format!("store {}: {}", self.path.display(), b.why)),
        }
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.commit_batch()
    }

    fn sync_due(&mut self, all: bool) -> Result<Option<Duration>, StoreError> {
        if self.broken.is_some() {
            return Ok(None);
        }
        let r = self.wal.sync_due(all);
        self.note(r)
    }

    fn log_syncs(&self) -> u64 {
        self.wal.policy.syncs()
    }
}
