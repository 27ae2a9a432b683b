//! Durable state behind the messaging features: per-topic history (epoch + gapless offsets) and
//! per-user inboxes of durable messages with ack state.
//!
//! A [`Store`] is driven by **one** thread, the store thread (`runtime::store`), which owns it:
//! every method takes `&mut self`, nothing is shared, and the thread gives the store its
//! operations in one total order. The thread groups operations: it applies a batch, calls
//! [`Store::commit`] once, and only then lets anyone see the results (subscribers receive the
//! publications, the API answers). So a store needs no locks and gets group commit for free.
//!
//! # Guarantees every implementation gives
//! - **Offsets.** Per topic, [`Store::append`] returns offsets 1, 2, 3, … with no gap and no
//!   repeat for as long as the topic's epoch is unchanged. Per user, [`Store::inbox_put`] does the
//!   same for inbox offsets.
//! - **Epoch.** A stream's epoch is an opaque string that changes exactly when continuity can no
//!   longer be proven: the stream was created (first use, or its data was lost or wiped). Offsets
//!   start again at 1 with a new epoch.
//! - **Durability.** After [`Store::commit`] returns `Ok`, everything applied before it survives
//!   what the implementation promises: `memory` survives nothing (a restart is a new epoch for
//!   every stream); `redb` survives a process kill (`kill -9`) and, with `[store] sync =
//!   "always"` (the default: the log is synced before `commit` returns), a kernel crash or power
//!   loss — with `sync = "interval"` a kernel crash or power loss can lose what was committed
//!   in the last interval (the log is synced by [`Store::sync_due`] within it); `redis`
//!   survives what the Redis server's persistence keeps (AOF) — its data lost, every stream
//!   gets a new epoch. With redb what survives is a prefix of the commits (the log is read up
//!   to its first missing or torn record): a crash never keeps a batch and loses an earlier one.
//! - **Reads see writes.** A read returns everything applied before it, committed or not (the
//!   store thread never exposes uncommitted results outside).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use outbox::{OutboxEntry, OutboxStats};

pub mod memory;
pub mod outbox;
pub mod redb;
pub mod redis;
pub mod streams;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

/// A store that cannot be opened stops the server with its reason.
impl From<StoreError> for crate::proto::error::ServerError {
    fn from(e: StoreError) -> Self {
        crate::proto::error::ServerError::Store(e.to_string())
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing storage failed (disk, database); the operation did not happen.
    #[error("store I/O failed: {0}")]
    Io(String),
    /// Stored data could not be decoded.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The store cannot be reached (a remote store that is down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The stable wire code of the error.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            // The storage failed (disk full, a lost connection): worth retrying later.
            StoreError::Unavailable(_) | StoreError::Io(_) => crate::ErrorCode::NotAvailable,
            StoreError::Corrupt(_) => crate::ErrorCode::Internal,
        }
    }
}

/// Durable history and inboxes. See the [module docs](self) for the guarantees.
pub trait Store: Send + 'static {
    /// A short name for logs (`"memory"`, `"redb"`, `"redis"`).
    fn name(&self) -> &'static str;

    /// The epoch of the store's inboxes: changes exactly when their data was lost (a memory
    /// store at every start, redb when its file is new). Inbox offsets restart with it, so
    /// clients de-duplicating durable messages by offset reset when it changes.
    fn inbox_epoch(&self) -> Arc<str>;

    /// Appends a publication to `topic`'s stream (creating the stream, with a fresh epoch, on
    /// first use), trims it to `limits.size`, and returns the position **of this publication**.
    fn append(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError>;

    /// Appends several publications, in order, as [`append`](Self::append) would one by one
    /// (a remote store sends them in one round trip). One result per request, in order.
    fn append_batch(
        &mut self,
        reqs: &[AppendReq<'_>],
        now_ms: u64,
    ) -> Vec<Result<StreamPos, StoreError>> {
        reqs.iter()
            .map(|r| self.append(r.topic, r.limits, r.event, r.data, now_ms))
            .collect()
    }

    /// Whether the store itself delivers each appended publication to every node, this one
    /// included, in offset order (the Redis store publishes it in the same atomic step as the
    /// append). Then the store thread does not hand publications to the shards; they arrive
    /// through the cluster broker.
    fn delivers(&self) -> bool {
        false
    }

    /// Whether history may live in the shards instead (a store whose history lives only in
    /// this process's memory, read by no one else: `memory`). On a single node the runtime then
    /// keeps each history topic's stream on one owner shard ([`streams::Streams`]), which
    /// sequences the topic's publications where they arrive, and never asks this store for
    /// history (appends, positions, reads).
    fn history_in_shards(&self) -> bool {
        false
    }

    /// The stream's current position (creating the stream, with a fresh epoch, if unknown).
    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError>;

    /// The current positions of several streams, one result per topic in order (the
    /// cluster's periodic position check; a remote store reads them in one round trip per
    /// instance). Unlike [`position`](Self::position) it may leave an unknown stream
    /// unwritten, reporting the epoch its first append will have.
    fn positions(&mut self, topics: &[&str]) -> Vec<Result<StreamPos, StoreError>> {
        topics.iter().map(|t| self.position(t)).collect()
    }

    /// The latest `limit` publications with an offset above `after`, oldest first, skipping
    /// those older than `limits.ttl`. See [`HistoryRead::complete`].
    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError>;

    /// Stores a durable message for `user` (status `pending`); drops the oldest messages beyond
    /// `limits.max_messages` and returns them as `dropped` changes.
    fn inbox_put(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<(InboxMessage, Vec<StatusChange>), StoreError>;

    /// [`inbox_put`](Store::inbox_put) for each of `puts` in order, a result each pushed to
    /// `out`: the same effects and results, with work shared between them where the store can
    /// (redb opens its table once per run). Only for a store whose
    /// [`inbox_epoch`](Store::inbox_epoch) cannot change between the puts of one call (not
    /// Redis, where a put can start a new one).
    fn inbox_put_many(
        &mut self,
        puts: &[(&str, NewMessage<'_>)],
        limits: InboxLimits,
        now_ms: u64,
        out: &mut Vec<Result<(InboxMessage, Vec<StatusChange>), StoreError>>,
    ) {
        for (user, msg) in puts {
            out.push(self.inbox_put(user, msg.clone(), limits, now_ms));
        }
    }

    /// Records that the message at `offset` was written to `times` more connections (status
    /// `delivered`, attempts increased). Unknown or final messages are ignored.
    fn inbox_delivered(&mut self, user: &str, offset: u64, times: u32) -> Result<(), StoreError>;

    /// Acknowledges the message at `offset`: it leaves the inbox with status `acked`. `None` when
    /// there is no such unacknowledged message (already acked, expired, dropped, or never stored).
    fn inbox_ack(&mut self, user: &str, offset: u64) -> Result<Option<StatusChange>, StoreError>;

    /// The user's unacknowledged messages, in offset order (expired ones excluded).
    fn inbox_list(&mut self, user: &str, now_ms: u64) -> Result<Vec<InboxMessage>, StoreError>;

    /// Expires unacknowledged messages older than `limits.ttl` (they leave their inboxes with
    /// status `expired`, returned), and forgets the statuses of messages that reached a final
    /// status more than `limits.ttl` ago.
    fn expire(&mut self, limits: InboxLimits, now_ms: u64)
        -> Result<Vec<StatusChange>, StoreError>;

    /// What is known of message `id` (`None` if unknown or forgotten).
    fn status(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError>;

    /// Appends webhook events (each a JSON object without its id) to the outbox, in order.
    /// See [`outbox`] for the guarantees.
    fn outbox_push(&mut self, events: &[Bytes], now_ms: u64) -> Result<(), StoreError>;

    /// Claims up to `max` pending events, oldest first, that nobody claimed within the last
    /// `lease` (never claimed, or their claimer is still retrying them or died); they are
    /// this caller's until a claim with a `lease` shorter than their age takes them over.
    fn outbox_claim(
        &mut self,
        max: usize,
        lease: Duration,
        now_ms: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Removes events for good (delivered, or dead-lettered). Unknown ids are ignored.
    fn outbox_done(&mut self, ids: &[String]) -> Result<(), StoreError>;

    /// How many events are pending and since when.
    fn outbox_stats(&mut self) -> Result<OutboxStats, StoreError>;

    /// Records that `node` now has (`on`) or no longer has `key` (`topic:<t>`: a subscriber of
    /// topic `t`; `user:<u>`: a connection of user `u`), and answers whether the cluster-wide
    /// state changed with it — the first node to have it, or the last to lose it — so that a
    /// webhook event is sent once per cluster-wide transition. A local store serves one node:
    /// always true.
    fn webhook_transition(&mut self, key: &str, node: &str, on: bool) -> Result<bool, StoreError> {
        let _ = (key, node, on);
        Ok(true)
    }

    /// [`webhook_transition`](Self::webhook_transition) again, after a call for the same change
    /// failed — one that may have been applied without its answer reaching the caller (a read
    /// timeout). When `node` is already as `on` says, the change is taken as applied by that
    /// lost call, and the answer is whether the key's state is what that call would have left
    /// had it been the transition (`node` the only holder; no holder): right unless other nodes
    /// changed the key in between. A local store never fails the first call: the same answer.
    fn webhook_transition_retry(
        &mut self,
        key: &str,
        node: &str,
        on: bool,
    ) -> Result<bool, StoreError> {
        self.webhook_transition(key, node, on)
    }

    /// The nodes that hold webhook keys (see [`webhook_transition`](Self::webhook_transition)),
    /// each with whether it is registered as live. A node that holds keys and is not registered
    /// died without removing them. A local store has no other node: empty.
    fn webhook_orphans(&mut self) -> Result<Vec<(String, bool)>, StoreError> {
        Ok(Vec::new())
    }

    /// Removes `node` from every key it holds — a node found dead, or this node's previous life
    /// at start — and answers the keys it was the last holder of (each is answered to one caller
    /// only, however many nodes reap at once). A local store: empty.
    fn webhook_reap(&mut self, node: &str) -> Result<Vec<String>, StoreError> {
        let _ = node;
        Ok(Vec::new())
    }

    /// Whether the store keeps Socket.IO recovery sessions
    /// ([`sio_session_put`](Self::sio_session_put)); when not (the memory store), the node keeps
    /// them in its own memory.
    fn keeps_sio_sessions(&self) -> bool {
        false
    }

    /// Keeps the Socket.IO recovery session `pid` (an opaque encoding) until `expires_ms` (ms
    /// since the Unix epoch), replacing one under the same id. It survives what the store's
    /// other data survives (see the module docs) and is visible to every node sharing the store.
    fn sio_session_put(
        &mut self,
        pid: &str,
        session: &[u8],
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        let _ = (pid, session, expires_ms);
        Ok(())
    }

    /// Removes and returns the session `pid` if it is kept and not expired at `now_ms`: a
    /// session is taken at most once, however many nodes ask at once.
    fn sio_session_take(&mut self, pid: &str, now_ms: u64) -> Result<Option<Bytes>, StoreError> {
        let _ = (pid, now_ms);
        Ok(None)
    }

    /// Whether the store works: `Err(why)` while it is known to be unusable (a redb file after an
    /// I/O error, until it reopens); `/readyz` answers 503 with the reason.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Makes every operation applied so far durable (as far as the implementation promises);
    /// the store thread calls it once per batch, and answers the batch only after it.
    fn commit(&mut self) -> Result<(), StoreError>;

    /// For a store whose `commit` may leave written data to be synced later (redb with
    /// `[store] sync = "interval"`): syncs it when its deadline has passed, or now when `all`
    /// (a clean stop). Returns how long until the next deadline (`None`: nothing waits); the
    /// store thread calls it after every batch and waits for jobs at most that long, so a quiet
    /// store still syncs within its interval. Default: nothing to do.
    fn sync_due(&mut self, all: bool) -> Result<Option<Duration>, StoreError> {
        let _ = all;
        Ok(None)
    }

    /// Syncs of a write-ahead log made so far (the `store_log_syncs` metric); 0 for a store
    /// without one.
    fn log_syncs(&self) -> u64 {
        0
    }
}

/// A fresh random epoch: 8 hex digits from the OS's random source mixed with the clock.
pub fn new_epoch() -> Arc<str> {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:08x}", h.finish() as u32).into()
}

/// The epoch of a stream that was never written, derived from the store's own epoch (which
/// changes when the store loses its data) and the topic: reads report it without storing
/// anything, and the first append keeps it, so a client that saw the empty stream recovers across
/// that append. A store must never forget one stream while keeping the rest of its data.
pub fn unwritten_epoch(store_epoch: &str, topic: &str) -> Arc<str> {
    // FNV-1a: stable across builds and versions (the epoch is persisted by the first append).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in store_epoch
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(topic.bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h ^ (h >> 32)) as u32).into()
}

/// The first message id of a store that starts without any (new, or its data lost): ids stay
/// unique across such losses — a lost store's ids are never handed out again, so
/// `GET /api/v1/messages/M` never answers for another user's message. Wall-clock milliseconds
/// × 256: a store would have to average more than 256,000 ids a second since its previous start
/// to catch up; ~2^49 today, so still exact as a JavaScript number (2^53) with up to 16 Redis
/// instances multiplying it (see the Redis store).
pub fn first_message_id(now_ms: u64) -> u64 {
    now_ms.saturating_mul(256).max(1)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
