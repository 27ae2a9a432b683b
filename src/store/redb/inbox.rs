//! The inbox half of [`RedbStore`]: durable messages, their statuses and expiry.
//!
//! A live message is one row of `messages` (id → user, offset, status, attempts, times,
//! content). Which ids each user's inbox holds, by offset, and the live messages by creation
//! time (for `expire`) are indexes kept in memory ([`Inboxes`]), rebuilt from `messages` when
//! the file opens (`schema`). So a put writes one row, and with ids increasing that row lands
//! on the same B-tree leaf as the batch's other puts: a group commit of N puts writes a few
//! pages, not one per user inbox. A message leaving its inbox (acked, expired, dropped) moves to
//! `status` (its final status, kept until forgotten) and `finals`; a user's next offset is
//! written to `users` only when its newest message leaves (the offsets still live say the rest).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use redb::{ReadableTable, Table, WriteTransaction};

use super::codec::{self, MessageRow, StatusRow};
use super::{err, with_table, wtx, RedbStore, FINALS, MESSAGES, STATUS, USERS};
use crate::store::memory::{expiry, ms};
use crate::store::{
    InboxLimits, InboxMessage, MessageInfo, MessageStatus, NewMessage, StatusChange, StoreError,
};

/// One user's live messages.
#[derive(Debug, Default)]
pub(super) struct UserInbox {
    /// The offset the next message gets.
    pub(super) next: u64,
    /// Live messages: offset → id.
    pub(super) live: BTreeMap<u64, u64>,
}

/// The in-memory indexes of the live messages (see the module docs); they always describe the
/// open write transaction's state, and are rebuilt from the file after a rollback.
#[derive(Debug, Default)]
pub(super) struct Inboxes {
    /// Users with live messages.
    pub(super) users: HashMap<Box<str>, UserInbox, ahash::RandomState>,
    /// Live messages by (created, id).
    pub(super) by_time: BTreeSet<(u64, u64)>,
}

impl Inboxes {
    /// Notes live message `id` at `offset` of `user`, created at `created_ms`.
    pub(super) fn add(&mut self, user: &str, offset: u64, id: u64, created_ms: u64) {
        let u = match self.users.get_mut(user) {
            Some(u) => u,
            None => self.users.entry(user.into()).or_default(),
        };
        u.next = u.next.max(offset + 1);
        u.live.insert(offset, id);
        self.by_time.insert((created_ms, id));
    }
}

/// The tables a message leaving its inbox touches, opened together.
struct Tables<'t> {
    messages: Table<'t, u64, &'static [u8]>,
    users: Table<'t, &'static str, (u64, u64)>,
    status: Table<'t, u64, &'static [u8]>,
    finals: Table<'t, (u64, u64), ()>,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            messages: tx.open_table(MESSAGES).map_err(err)?,
            users: tx.open_table(USERS).map_err(err)?,
            status: tx.open_table(STATUS).map_err(err)?,
            finals: tx.open_table(FINALS).map_err(err)?,
        })
    }

    /// Moves live message `id` to a final status: out of `messages` and its inbox.
    fn finish(
        &mut self,
        idx: &mut Inboxes,
        scratch: &mut Vec<u8>,
        id: u64,
        status: MessageStatus,
        at_ms: u64,
    ) -> Result<Option<StatusChange>, StoreError> {
        let Some(row) = self.messages.remove(id).map_err(err)? else {
            return Ok(None);
        };
        let m = codec::decode_message(row.value())?;
        let (user, offset): (Box<str>, u64) = (m.user.into(), m.offset);
        let final_row = StatusRow {
            user: m.user,
            offset,
            status,
            attempts: m.attempts,
            created_ms: m.created_ms,
            final_ms: at_ms,
        };
        codec::encode_status(scratch, &final_row);
        idx.by_time.remove(&(m.created_ms, id));
        drop(row);
        self.status.insert(id, scratch.as_slice()).map_err(err)?;
        self.finals.insert((at_ms, id), ()).map_err(err)?;
        if let Some(u) = idx.users.get_mut(&*user) {
            u.live.remove(&offset);
            if offset + 1 == u.next {
                // The newest message leaves: its successor's offset must outlive it.
                self.users.insert(&*user, (u.next, 0)).map_err(err)?;
            }
            if u.live.is_empty() {
                idx.users.remove(&*user);
            }
        }
        Ok(Some(StatusChange {
            id,
            offset,
            status,
            user,
        }))
    }

    /// Drops `user`'s `n` oldest live messages (status `dropped`: the inbox is over its size).
    fn drop_oldest(
        &mut self,
        idx: &mut Inboxes,
        scratch: &mut Vec<u8>,
        user: &str,
        n: usize,
        now_ms: u64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let mut dropped = Vec::with_capacity(n);
        for _ in 0..n {
            let oldest = idx.users.get(user).and_then(|u| u.live.first_key_value());
            let Some((_, &old)) = oldest else { break };
            match self.finish(idx, scratch, old, MessageStatus::Dropped, now_ms)? {
                Some(c) => dropped.push(c),
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "message {old} is in {user}'s inbox index but not stored"
                    )))
                }
            }
        }
        Ok(dropped)
    }
}

/// A stored message and the messages it pushed out of a full inbox.
pub(super) type Put = (InboxMessage, Vec<StatusChange>);

/// Writes message `id` of `user` as one row of `messages` and notes it in the indexes (one
/// lookup of the user); returns its offset and how many live messages the user has now.
#[allow(clippy::too_many_arguments)]
fn put_row(
    tx: &WriteTransaction,
    messages: &mut Table<'_, u64, &'static [u8]>,
    idx: &mut Inboxes,
    scratch: &mut Vec<u8>,
    id: u64,
    user: &str,
    msg: &NewMessage<'_>,
    limits: InboxLimits,
    now_ms: u64,
) -> Result<(u64, usize), StoreError> {
    let u = match idx.users.get_mut(user) {
        Some(u) => u,
        None => {
            // No live message: the next offset is the one its last message left, if any.
            let users = tx.open_table(USERS).map_err(err)?;
            let next = users.get(user).map_err(err)?.map_or(1, |v| v.value().0);
            idx.users.entry(user.into()).or_insert(UserInbox {
                next: next.max(1),
                live: BTreeMap::new(),
            })
        }
    };
    let offset = u.next;
    let row = MessageRow {
        user,
        offset,
        status: MessageStatus::Pending,
        attempts: 0,
        created_ms: now_ms,
        expires_ms: expiry(now_ms, limits.ttl),
        topic: msg.topic,
        event: msg.event,
        data: msg.data,
    };
    codec::encode_message(scratch, &row);
    messages.insert(id, scratch.as_slice()).map_err(err)?;
    u.next = offset + 1;
    u.live.insert(offset, id);
    let live = u.live.len();
    idx.by_time.insert((now_ms, id));
    Ok((offset, live))
}

impl RedbStore {
    /// The id of the live message at `offset` in `user`'s inbox.
    pub(super) fn inbox_id(&self, user: &str, offset: u64) -> Option<u64> {
        self.inboxes.users.get(user)?.live.get(&offset).copied()
    }

    /// Stores one durable message (see [`Store::inbox_put`](crate::store::Store::inbox_put)).
    pub(super) fn put_inner(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Put, StoreError> {
        let mut out = Vec::with_capacity(1);
        self.put_run(&[(user, msg)], limits, now_ms, &mut out);
        out.pop()
            .unwrap_or_else(|| Err(StoreError::Io("redb: a put without a result".into())))
    }

    /// Stores `puts` in order, a result each in `out`, as [`put_inner`](Self::put_inner) one
    /// after the other would: `messages` is opened once for the run (reopened after a put that
    /// drops messages, which opens it with the other inbox tables). A failed put dooms the
    /// batch ([`track`](Self::track)); the next ones are still applied, as single puts would be.
    pub(super) fn put_run(
        &mut self,
        puts: &[(&str, NewMessage<'_>)],
        limits: InboxLimits,
        now_ms: u64,
        out: &mut Vec<Result<Put, StoreError>>,
    ) {
        let tx = match wtx(&self.db, &mut self.wtx) {
            Ok(tx) => tx,
            Err(e) => {
                let why = e.to_string();
                out.push(Err(e));
                for _ in 1..puts.len() {
                    out.push(Err(StoreError::Io(why.clone())));
                }
                self.failed = true;
                return;
            }
        };
        let mut messages = None;
        for (user, msg) in puts {
            let r = (|| {
                let t = match &mut messages {
                    Some(t) => t,
                    None => messages.insert(tx.open_table(MESSAGES).map_err(err)?),
                };
                let id = self.next_id;
                let (offset, live) = put_row(
                    tx,
                    t,
                    &mut self.inboxes,
                    &mut self.scratch,
                    id,
                    user,
                    msg,
                    limits,
                    now_ms,
                )?;
                self.next_id = id + 1;
                self.next_id_dirty = true;
                let over = live.saturating_sub(limits.max_messages);
                let dropped = if over > 0 {
                    // `Tables` opens `messages` too: close this handle first.
                    messages = None;
                    let (idx, scratch) = (&mut self.inboxes, &mut self.scratch);
                    Tables::open(tx)?.drop_oldest(idx, scratch, user, over, now_ms)?
                } else {
                    Vec::new()
                };
                let message = InboxMessage::stored(id, offset, msg, now_ms);
                Ok((message, dropped))
            })();
            if r.is_err() {
                // The tables' state after a failed write is redb's to know: reopen.
                messages = None;
                self.failed = true;
            }
            out.push(r);
        }
    }

    pub(super) fn delivered_inner(
        &mut self,
        user: &str,
        offset: u64,
        times: u32,
    ) -> Result<(), StoreError> {
        if times == 0 {
            return Ok(());
        }
        let Some(id) = self.inbox_id(user, offset) else {
            return Ok(());
        };
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut messages = tx.open_table(MESSAGES).map_err(err)?;
        {
            let Some(v) = messages.get(id).map_err(err)? else {
                return Ok(());
            };
            let m = codec::decode_message(v.value())?;
            let m = MessageRow {
                status: MessageStatus::Delivered,
                attempts: m.attempts.saturating_add(times),
                ..m
            };
            codec::encode_message(&mut self.scratch, &m);
        }
        messages.insert(id, self.scratch.as_slice()).map_err(err)?;
        Ok(())
    }

    pub(super) fn ack_inner(
        &mut self,
        user: &str,
        offset: u64,
        now_ms: u64,
    ) -> Result<Option<StatusChange>, StoreError> {
        let Some(id) = self.inbox_id(user, offset) else {
            return Ok(None);
        };
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = Tables::open(tx)?;
        t.finish(
            &mut self.inboxes,
            &mut self.scratch,
            id,
            MessageStatus::Acked,
            now_ms,
        )
    }

    pub(super) fn list_inner(
        &mut self,
        user: &str,
        now_ms: u64,
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let Some(u) = self.inboxes.users.get(user) else {
            return Ok(Vec::new());
        };
        let ids: Vec<(u64, u64)> = u.live.iter().map(|(o, id)| (*o, *id)).collect();
        Ok(with_table!(self, MESSAGES, |t| {
            let mut out = Vec::with_capacity(ids.len());
            for (offset, id) in ids {
                let Some(v) = t.get(id).map_err(err)? else {
                    continue;
                };
                let m = codec::decode_message(v.value())?;
                if m.expires_ms < now_ms {
                    continue;
                }
                out.push(InboxMessage {
                    id,
                    offset,
                    topic: m.topic.map(Into::into),
                    event: m.event.into(),
                    data: m.data.map(Bytes::copy_from_slice),
                    created_ms: m.created_ms,
                    attempts: m.attempts,
                });
            }
            out
        }))
    }

    pub(super) fn expire_inner(
        &mut self,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Option<Vec<StatusChange>>, StoreError> {
        if limits.ttl.is_zero() {
            return Ok(None);
        }
        let cutoff = now_ms.saturating_sub(ms(limits.ttl));
        let old_live: Vec<u64> = self
            .inboxes
            .by_time
            .range(..(cutoff, 0))
            .map(|(_, id)| *id)
            .collect();
        let old_finals: Vec<(u64, u64)> = with_table!(self, FINALS, |t| {
            let mut keys = Vec::new();
            for item in t.range(..(cutoff, 0)).map_err(err)? {
                keys.push(item.map_err(err)?.0.value());
            }
            keys
        });
        if old_live.is_empty() && old_finals.is_empty() {
            return Ok(None);
        }
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = Tables::open(tx)?;
        let mut changes = Vec::with_capacity(old_live.len());
        for id in old_live {
            let gone = t.finish(
                &mut self.inboxes,
                &mut self.scratch,
                id,
                MessageStatus::Expired,
                now_ms,
            )?;
            changes.extend(gone);
        }
        for key in old_finals {
            t.finals.remove(key).map_err(err)?;
            t.status.remove(key.1).map_err(err)?;
        }
        Ok(Some(changes))
    }

    pub(super) fn status_inner(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError> {
        let live = with_table!(self, MESSAGES, |t| match t.get(id).map_err(err)? {
            Some(v) => {
                let m = codec::decode_message(v.value())?;
                Some(MessageInfo {
                    id,
                    user: m.user.into(),
                    offset: m.offset,
                    status: m.status,
                    attempts: m.attempts,
                    created_ms: m.created_ms,
                })
            }
            None => None,
        });
        if live.is_some() {
            return Ok(live);
        }
        with_table!(self, STATUS, |t| match t.get(id).map_err(err)? {
            Some(v) => {
                let row = codec::decode_status(v.value())?;
                Ok(Some(MessageInfo {
                    id,
                    user: row.user.into(),
                    offset: row.offset,
                    status: row.status,
                    attempts: row.attempts,
                    created_ms: row.created_ms,
                }))
            }
            None => Ok(None),
        })
    }
}
