//! The Redis [`Store`]: history, inboxes and statuses kept in Redis 7, shared by every node of a
//! cluster, so recovery, history, durable sends and acks behave as on one node whichever node a
//! client reaches.
//!
//! Every operation is one Lua script (or one plain read) on one instance, so it is atomic
//! against every other node's operations; the store thread's connection is blocking with 3 s
//! timeouts (see the `conn` module: a dead Redis fails operations with
//! [`StoreError::Unavailable`] — wire code `not_available` — and is retried lazily).
//!
//! # Key layout (`P` = the cluster prefix, `[cluster] prefix`)
//! On the topic's instance, `cluster::instance_for(topic, n)` — the one whose pub/sub channel
//! the Redis broker uses for the topic:
//! - `P:h:<topic>` — a stream; entry id `<offset>-0`, fields `e` event, `t` append time (ms),
//!   `d` data (absent when none). `XTRIM MAXLEN ~ <size>` (once per append call) trims it
//!   approximately (whole stream nodes: up to ~100 entries more are kept, plus the call's
//!   own; exact trimming on every append cost 1.6× the script's time) and reads serve nothing
//!   older than `l`; with a history TTL it gets `PEXPIRE <ttl>` at each append call (and reads skip entries whose `t` is older than the TTL).
//! - `P:hm:<topic>` — a hash: `e` epoch, `o` top offset, `l` the oldest offset exact trimming
//!   would have kept. Never expires: an idle topic keeps its epoch. When it is missing (never
//!   written, or data lost), reads report an epoch derived from the instance's `P:inbox_epoch`
//!   and the topic without writing anything (read-only clients cannot grow Redis), and the first
//!   append creates it with that epoch and an empty stream.
//! - the channel `P:t:<topic>` — each append call `PUBLISH`es one cluster message per topic in
//!   the same script: wire kind 'B', the header and each publication's part written by the node,
//!   joined behind the first offset's `<epoch>:<offset>` by the script (only the appended ones).
//!
//! On the user's instance, `instance_for("user:<user>", n)`:
//! - `P:io:<user>` — the user's last inbox offset (`INCR`);
//! - `P:ib:<user>` — a sorted set of the user's live messages: member id, score offset;
//! - `P:msg:<id>` — a hash per message: `u` user, `o` offset, `s` status (`p`ending,
//!   `d`elivered, `a`cked, e`x`pired, d`r`opped), `n` attempts, `c` created, `x` expiry, `e`
//!   event, `tp` topic, `d` data (the body fields are deleted when the message becomes final);
//! - `P:mid` — the instance's message counter: id = `INCR P:mid` × n + k (k the instance), unique
//!   cluster-wide, and `id % n` is where [`Store::status`] finds it; when missing (new, or the
//!   instance lost its data) it starts at [`first_message_id`](crate::store::first_message_id)
//!   of the time, so ids are never reused after a loss;
//! - `P:live` — a sorted set of live messages by creation time, and `P:finals` of final ones by
//!   when they became final: `expire` takes what is past the TTL from both in one script, so each
//!   expired message is reported by exactly one node however many run `expire`.
//!
//! On every instance, `P:inbox_epoch` (`SET NX` at connect, read back; also the seed of unwritten
//! streams' epochs): the inbox epoch is these
//! values joined with `.`, the same on every node. When an instance lost its data, the next
//! `inbox_put` or `inbox_list` on it (on any node) sets a fresh value in the same script, and
//! every node's [`Store::inbox_epoch`] changes as soon as one of its own puts or lists sees it —
//! before the first frame with a restarted offset, as long as the caller asks after the put.
//!
//! # Commands per append
//! One `EVALSHA` per batch of the store thread per instance (per 256 publications: a longer
//! batch is several calls in one pipeline — one round trip per instance either way; see
//! `append.rs`), the offsets assigned in the script. Inside it, per publication `XADD`; per
//! topic of the call `HMGET` + `PUBLISH` + `HSET` + `XTRIM` (+ `PEXPIRE` with a TTL; + `DEL`,
//! `HSET` when the stream is new). The answer is one (epoch, first offset) per topic.
//!
//! # Durability
//! [`Store::commit`] does nothing: every operation is applied in Redis when it returns. What
//! survives a Redis crash is Redis's persistence: `appendonly yes` with `appendfsync everysec`
//! loses at most a second, `always` nothing; without persistence a restart loses everything and
//! every stream gets a new epoch (clients learn `recovered: false`).

mod append;
mod conn;
mod history;
mod inbox;
mod outbox;
mod sio;
mod transitions;

use std::sync::Arc;
use std::time::Duration;

use conn::Instance;

use super::{
    AppendReq, HistoryLimits, HistoryRead, InboxLimits, InboxMessage, MessageInfo, NewMessage,
    OutboxEntry, OutboxStats, StatusChange, Store, StoreError, StreamPos,
};
use crate::proto::wire::instance_for;

/// Most publications per call of the append script (tests).
#[cfg(test)]
pub(crate) const APPEND_CHUNK: usize = append::CHUNK;

/// Connect, read and write timeout of a store connection.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The Redis store. See the [module docs](self).
pub struct RedisStore {
    inst: Vec<Instance>,
    /// The cluster prefix (`P`).
    prefix: String,
    /// The origin of the cluster messages this store publishes: `<node>~s`, so the node's own
    /// broker does not take them for its own publications (it delivers them too).
    origin: String,
    /// The sequence number of the last cluster message (random start: a restarted node is not
    /// mistaken for its previous life by the receivers' de-duplication).
    seq: u64,
    /// Per instance, its `P:inbox_epoch` as last seen.
    inbox_parts: Vec<String>,
    /// `inbox_parts` joined with `.`.
    inbox_epoch: Arc<str>,
    /// Buffers of the append path, reused.
    bufs: append::Bufs,
}

impl RedisStore {
    /// Connects to every instance of `urls` (the cluster's, in the same order on every node),
    /// loads the scripts and reads the inbox epoch. Fails with [`StoreError::Unavailable`] when
    /// an instance cannot be reached: a node does not start without its store.
    pub fn connect(urls: &[String], prefix: &str, node: &str) -> Result<RedisStore, StoreError> {
        Self::connect_with(urls, prefix, node, TIMEOUT)
    }

    /// [`connect`](Self::connect) with another timeout (tests).
    pub(crate) fn connect_with(
        urls: &[String],
        prefix: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        if urls.is_empty() {
            return Err(StoreError::Unavailable(
                "the Redis store needs at least one Redis URL".into(),
            ));
        }
        let inst = urls
            .iter()
            .map(|u| Instance::new(u, timeout))
            .collect::<Result<Vec<_>, _>>()?;
        let mut s = RedisStore {
            inst,
            prefix: prefix.to_string(),
            origin: format!("{node}~s"),
            seq: random_u64(),
            inbox_parts: Vec::new(),
            inbox_epoch: "".into(),
            bufs: append::Bufs::default(),
        };
        s.inbox_parts = s.read_inbox_epoch()?;
        s.inbox_epoch = s.inbox_parts.join(".").into();
        s.outbox_group()?;
        Ok(s)
    }

    /// Instance `k`'s part of the inbox epoch as a script just read it.
    fn saw_inbox_epoch(&mut self, k: usize, part: &str) {
        if self.inbox_parts.get(k).is_some_and(|p| p != part) {
            tracing::warn!(
                instance = k,
                "redis store: the inbox epoch changed (Redis lost its data): inbox offsets restart"
            );
            self.inbox_parts[k] = part.to_string();
            self.inbox_epoch = self.inbox_parts.join(".").into();
        }
    }

    /// `SET NX` then `GET` of `P:inbox_epoch` on every instance.
    fn read_inbox_epoch(&mut self) -> Result<Vec<String>, StoreError> {
        let key = format!("{}:inbox_epoch", self.prefix);
        let mut parts = Vec::with_capacity(self.inst.len());
        for i in &mut self.inst {
            let mut set = ::redis::cmd("SET");
            set.arg(&key).arg(&*super::new_epoch()).arg("NX");
            i.query::<::redis::Value>(&set)?;
            let got: Option<String> = i.query(::redis::cmd("GET").arg(&key))?;
            parts.push(got.ok_or_else(|| {
                StoreError::Unavailable(format!("{key} vanished right after it was set"))
            })?);
        }
        Ok(parts)
    }

    fn topic_instance(&self, topic: &str) -> usize {
        instance_for(topic, self.inst.len())
    }

    fn user_instance(&self, user: &str) -> usize {
        if self.inst.len() == 1 {
            return 0;
        }
        instance_for(&format!("user:{user}"), self.inst.len())
    }
}

/// A random u64 from the OS-seeded hasher and the clock.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn inbox_epoch(&self) -> Arc<str> {
        self.inbox_epoch.clone()
    }

    fn append(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError> {
        let req = AppendReq::one(topic, limits, event, data);
        self.append_many(std::slice::from_ref(&req), now_ms)
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("no answer for an append".into())))
    }

    fn append_batch(
        &mut self,
        reqs: &[AppendReq<'_>],
        now_ms: u64,
    ) -> Vec<Result<StreamPos, StoreError>> {
        self.append_many(reqs, now_ms)
    }

    fn delivers(&self) -> bool {
        true
    }

    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError> {
        self.position_of(topic)
    }

    fn positions(&mut self, topics: &[&str]) -> Vec<Result<StreamPos, StoreError>> {
        self.positions_of(topics)
    }

    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError> {
        self.read_history(topic, limits, after, limit, now_ms)
    }

    fn inbox_put(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<(InboxMessage, Vec<StatusChange>), StoreError> {
        self.put(user, msg, limits, now_ms)
    }

    fn inbox_delivered(&mut self, user: &str, offset: u64, times: u32) -> Result<(), StoreError> {
        self.delivered(user, offset, times)
    }

    fn inbox_ack(&mut self, user: &str, offset: u64) -> Result<Option<StatusChange>, StoreError> {
        self.ack(user, offset)
    }

    fn inbox_list(&mut self, user: &str, now_ms: u64) -> Result<Vec<InboxMessage>, StoreError> {
        self.list(user, now_ms)
    }

    fn expire(
        &mut self,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        self.expire_all(limits, now_ms)
    }

    fn status(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError> {
        self.message_status(id)
    }

    fn outbox_push(&mut self, events: &[bytes::Bytes], now_ms: u64) -> Result<(), StoreError> {
        self.outbox_push_inner(events, now_ms)
    }

    fn outbox_claim(
        &mut self,
        max: usize,
        lease: Duration,
        now_ms: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_claim_inner(max, lease, now_ms)
    }

    fn outbox_done(&mut self, ids: &[String]) -> Result<(), StoreError> {
        self.outbox_done_inner(ids)
    }

    fn outbox_stats(&mut self) -> Result<OutboxStats, StoreError> {
        self.outbox_stats_inner()
    }

    fn webhook_transition(&mut self, key: &str, node: &str, on: bool) -> Result<bool, StoreError> {
        self.transition_inner(key, node, on, false)
    }

    fn webhook_transition_retry(
        &mut self,
        key: &str,
        node: &str,
        on: bool,
    ) -> Result<bool, StoreError> {
        self.transition_inner(key, node, on, true)
    }

    fn webhook_orphans(&mut self) -> Result<Vec<(String, bool)>, StoreError> {
        self.orphans_inner()
    }

    fn webhook_reap(&mut self, node: &str) -> Result<Vec<String>, StoreError> {
        self.reap_inner(node)
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
        self.sio_put_inner(pid, session, expires_ms)
    }

    /// Redis expires the key itself; `now_ms` is not needed.
    fn sio_session_take(
        &mut self,
        pid: &str,
        _now_ms: u64,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        self.sio_take_inner(pid)
    }

    /// Nothing to do: every operation was applied in Redis when it returned (durability is
    /// Redis's persistence, see the [module docs](self)).
    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Fuzzing: reads `v` as every Redis answer the store decodes (nothing may panic).
pub(crate) fn fuzz_decode(v: &::redis::Value) {
    history::fuzz_decode(v);
    inbox::fuzz_decode(v);
    outbox::fuzz_decode(v);
}
