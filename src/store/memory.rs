//! The in-memory [`Store`]: history rings and inboxes in plain maps. It survives nothing: a
//! restart is a new epoch for every stream and empty inboxes.
//!
//! # Layout
//! - **Streams.** A [`Streams`](super::streams::Streams): per topic a ring of publications
//!   (trimmed to `limits.size` on append), the epoch and the top offset. (With this store the
//!   shards keep history themselves, in streams of their own: see
//!   [`Store::history_in_shards`].)
//! - **Inboxes.** Per user a [`BTreeMap`] offset → message and the next offset; a global next
//!   message id (from 1); a status table id → what is known of the message; two ordered indexes,
//!   live messages by creation time (for [`Store::expire`]) and final ones by the time they became
//!   final (to forget them after the TTL).
//!
//! # Time
//! `inbox_ack` has no `now_ms` argument, so an ack's final time is the wall clock ([`now_ms`]).
//! An inbox TTL of zero means messages never expire (like a zero history TTL).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use super::{
    new_epoch, now_ms, HistoryLimits, HistoryRead, InboxLimits, InboxMessage, MessageInfo,
    MessageStatus, NewMessage, OutboxEntry, OutboxStats, StatusChange, Store, StoreError,
    StreamPos,
};

// Here for the other stores' paths (`store::memory::ReadAcc`, `store::memory::ms`).
pub(crate) use super::streams::{ms, Offer, ReadAcc};

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// A stored inbox message (its status and attempts live in the status table).
struct Stored {
    id: u64,
    topic: Option<Box<str>>,
    event: Box<str>,
    data: Option<Bytes>,
    created_ms: u64,
    expires_ms: u64,
}

struct Inbox {
    /// The offset the next message gets (offsets start at 1).
    next: u64,
    msgs: BTreeMap<u64, Stored>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            next: 1,
            msgs: BTreeMap::new(),
        }
    }
}

/// The status table's row.
struct Info {
    user: Arc<str>,
    offset: u64,
    status: MessageStatus,
    attempts: u32,
    created_ms: u64,
    /// When the status became final.
    final_ms: u64,
}

/// When a message stored at `now` with this TTL expires (`u64::MAX` = never).
pub(crate) fn expiry(now: u64, ttl: std::time::Duration) -> u64 {
    if ttl.is_zero() {
        u64::MAX
    } else {
        now.saturating_add(ms(ttl))
    }
}

/// The in-memory store. See the [module docs](self).
pub struct MemoryStore {
    streams: super::streams::Streams,
    inboxes: Map<Arc<str>, Inbox>,
    /// The id the last message got (see [`first_message_id`](super::first_message_id)).
    last_id: u64,
    statuses: Map<u64, Info>,
    /// Live (pending or delivered) messages by (created, id).
    live: BTreeSet<(u64, u64)>,
    /// Final statuses by (final time, id).
    finals: BTreeSet<(u64, u64)>,
    /// Drawn at creation: a memory store's inboxes start empty at every start.
    epoch: Arc<str>,
    /// Webhook events and their bodies.
    outbox: super::outbox::OutboxIndex<Bytes>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let epoch = new_epoch();
        Self {
            streams: super::streams::Streams::new(epoch.clone()),
            inboxes: Map::default(),
            last_id: super::first_message_id(now_ms()) - 1,
            statuses: Map::default(),
            live: BTreeSet::new(),
            finals: BTreeSet::new(),
            epoch,
            outbox: super::outbox::OutboxIndex::new(super::first_message_id(now_ms())),
        }
    }

    /// How many streams are stored (tests).
    #[cfg(test)]
    pub(crate) fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Moves a live message to a final status; returns the change.
    fn finish(&mut self, id: u64, status: MessageStatus, at_ms: u64) -> Option<StatusChange> {
        let info = self.statuses.get_mut(&id)?;
        if info.status.is_final() {
            return None;
        }
        self.live.remove(&(info.created_ms, id));
        info.status = status;
        info.final_ms = at_ms;
        self.finals.insert((at_ms, id));
        if let Some(inbox) = self.inboxes.get_mut(&*info.user) {
            inbox.msgs.remove(&info.offset);
        }
        Some(StatusChange {
            id,
            user: (*info.user).into(),
            offset: info.offset,
            status,
        })
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn history_in_shards(&self) -> bool {
        true
    }

    fn inbox_epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    fn append(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        data: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError> {
        let data = data.map(Bytes::copy_from_slice);
        Ok(self.streams.append(topic, limits, event, now_ms, |_| data))
    }

    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError> {
        Ok(self.streams.position(topic))
    }

    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError> {
        Ok(self.streams.read(topic, limits, after, limit, now_ms))
    }

    fn inbox_put(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<(InboxMessage, Vec<StatusChange>), StoreError> {
        self.last_id += 1;
        let id = self.last_id;
        let (key, inbox) = match self.inboxes.get_key_value(user) {
            Some((k, _)) => {
                let k = k.clone();
                let inbox = self.inboxes.get_mut(user).expect("inbox present");
                (k, inbox)
            }
            None => {
                let k: Arc<str> = user.into();
                (k.clone(), self.inboxes.entry(k).or_default())
            }
        };
        let offset = inbox.next;
        inbox.next += 1;
        let message = InboxMessage::stored(id, offset, &msg, now_ms);
        inbox.msgs.insert(
            offset,
            Stored {
                id,
                topic: message.topic.clone(),
                event: message.event.clone(),
                data: message.data.clone(),
                created_ms: now_ms,
                expires_ms: expiry(now_ms, limits.ttl),
            },
        );
        let excess = inbox.msgs.len().saturating_sub(limits.max_messages);
        let oldest: Vec<u64> = inbox.msgs.values().take(excess).map(|m| m.id).collect();
        self.statuses.insert(
            id,
            Info {
                user: key,
                offset,
                status: MessageStatus::Pending,
                attempts: 0,
                created_ms: now_ms,
                final_ms: 0,
            },
        );
        self.live.insert((now_ms, id));
        let dropped = oldest
            .into_iter()
            .filter_map(|id| self.finish(id, MessageStatus::Dropped, now_ms))
            .collect();
        Ok((message, dropped))
    }

    fn inbox_delivered(&mut self, user: &str, offset: u64, times: u32) -> Result<(), StoreError> {
        let Some(id) = self
            .inboxes
            .get(user)
            .and_then(|i| i.msgs.get(&offset))
            .map(|m| m.id)
        else {
            return Ok(());
        };
        if let Some(info) = self.statuses.get_mut(&id) {
            if !info.status.is_final() && times > 0 {
                info.status = MessageStatus::Delivered;
                info.attempts = info.attempts.saturating_add(times);
            }
        }
        Ok(())
    }

    fn inbox_ack(&mut self, user: &str, offset: u64) -> Result<Option<StatusChange>, StoreError> {
        let Some(id) = self
            .inboxes
            .get(user)
            .and_then(|i| i.msgs.get(&offset))
            .map(|m| m.id)
        else {
            return Ok(None);
        };
        Ok(self.finish(id, MessageStatus::Acked, now_ms()))
    }

    fn inbox_list(&mut self, user: &str, now_ms: u64) -> Result<Vec<InboxMessage>, StoreError> {
        let Some(inbox) = self.inboxes.get(user) else {
            return Ok(Vec::new());
        };
        Ok(inbox
            .msgs
            .iter()
            .filter(|(_, m)| m.expires_ms >= now_ms)
            .map(|(&offset, m)| InboxMessage {
                id: m.id,
                offset,
                topic: m.topic.clone(),
                event: m.event.clone(),
                data: m.data.clone(),
                created_ms: m.created_ms,
                attempts: self.statuses.get(&m.id).map_or(0, |i| i.attempts),
            })
            .collect())
    }

    fn expire(
        &mut self,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        if limits.ttl.is_zero() {
            return Ok(Vec::new());
        }
        let cutoff = now_ms.saturating_sub(ms(limits.ttl));
        let old: Vec<u64> = self.live.range(..(cutoff, 0)).map(|&(_, id)| id).collect();
        let changes = old
            .into_iter()
            .filter_map(|id| self.finish(id, MessageStatus::Expired, now_ms))
            .collect();
        while let Some(&(at, id)) = self.finals.first() {
            if at >= cutoff {
                break;
            }
            self.finals.pop_first();
            self.statuses.remove(&id);
        }
        Ok(changes)
    }

    fn status(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError> {
        Ok(self.statuses.get(&id).map(|i| MessageInfo {
            id,
            user: (*i.user).into(),
            offset: i.offset,
            status: i.status,
            attempts: i.attempts,
            created_ms: i.created_ms,
        }))
    }

    fn outbox_push(&mut self, events: &[Bytes], now_ms: u64) -> Result<(), StoreError> {
        for e in events {
            self.outbox.push(now_ms, e.clone());
        }
        Ok(())
    }

    fn outbox_claim(
        &mut self,
        max: usize,
        lease: std::time::Duration,
        now_ms: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .outbox
            .claim(max, lease, now_ms)
            .into_iter()
            .map(|(id, created_ms, body)| OutboxEntry {
                id: id.to_string(),
                body: body.clone(),
                created_ms,
            })
            .collect())
    }

    fn outbox_done(&mut self, ids: &[String]) -> Result<(), StoreError> {
        for id in ids.iter().filter_map(|i| super::outbox::local_id(i)) {
            self.outbox.done(id);
        }
        Ok(())
    }

    fn outbox_stats(&mut self) -> Result<OutboxStats, StoreError> {
        Ok(self.outbox.stats())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
