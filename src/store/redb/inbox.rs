//! The inbox half of [`RedbStore`]: durable messages, their statuses and expiry.

use bytes::Bytes;
use redb::{ReadableTable, Table, WriteTransaction};

use super::codec::{self, InboxEntry, StatusRow};
use super::{err, with_table, wtx, RedbStore, FINALS, INBOX, LIVE, STATUS, USERS};
use crate::store::memory::{expiry, ms};
use crate::store::{
    now_ms, InboxLimits, InboxMessage, MessageInfo, MessageStatus, NewMessage, StatusChange,
    StoreError,
};

/// The inbox tables, opened together in the batch's write transaction.
struct Tables<'t> {
    inbox: Table<'t, (&'static str, u64), &'static [u8]>,
    users: Table<'t, &'static str, (u64, u64)>,
    status: Table<'t, u64, &'static [u8]>,
    live: Table<'t, (u64, u64), ()>,
    finals: Table<'t, (u64, u64), ()>,
}

impl<'t> Tables<'t> {
    fn open(tx: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            inbox: tx.open_table(INBOX).map_err(err)?,
            users: tx.open_table(USERS).map_err(err)?,
            status: tx.open_table(STATUS).map_err(err)?,
            live: tx.open_table(LIVE).map_err(err)?,
            finals: tx.open_table(FINALS).map_err(err)?,
        })
    }

    /// Message `id`'s status row, owned (user, row).
    fn status_row(&self, id: u64) -> Result<Option<(Box<str>, StatusRow<'static>)>, StoreError> {
        let Some(v) = self.status.get(id).map_err(err)? else {
            return Ok(None);
        };
        let row = codec::decode_status(v.value())?;
        Ok(Some((row.user.into(), StatusRow { user: "", ..row })))
    }

    /// Moves live message `id` to a final status (removing it from its inbox).
    fn finish(
        &mut self,
        scratch: &mut Vec<u8>,
        id: u64,
        status: MessageStatus,
        at_ms: u64,
    ) -> Result<Option<StatusChange>, StoreError> {
        let Some((user, row)) = self.status_row(id)? else {
            return Ok(None);
        };
        if row.status.is_final() {
            return Ok(None);
        }
        self.inbox.remove((&*user, row.offset)).map_err(err)?;
        self.live.remove((row.created_ms, id)).map_err(err)?;
        self.finals.insert((at_ms, id), ()).map_err(err)?;
        let counts = self.users.get(&*user).map_err(err)?.map(|v| v.value());
        if let Some((next, count)) = counts {
            self.users
                .insert(&*user, (next, count.saturating_sub(1)))
                .map_err(err)?;
        }
        let row = StatusRow {
            user: &user,
            status,
            final_ms: at_ms,
            ..row
        };
        codec::encode_status(scratch, &row);
        self.status.insert(id, scratch.as_slice()).map_err(err)?;
        Ok(Some(StatusChange {
            id,
            offset: row.offset,
            status,
            user,
        }))
    }
}

impl RedbStore {
    /// The id of the message at `offset` in `user`'s inbox.
    fn inbox_id(&self, user: &str, offset: u64) -> Result<Option<u64>, StoreError> {
        with_table!(self, INBOX, |t| match t.get((user, offset)).map_err(err)? {
            Some(v) => Ok(Some(codec::decode_inbox(v.value())?.id)),
            None => Ok(None),
        })
    }

    pub(super) fn put_inner(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<(InboxMessage, Vec<StatusChange>), StoreError> {
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = Tables::open(tx)?;
        let id = self.next_id;
        let (offset, count) = t
            .users
            .get(user)
            .map_err(err)?
            .map_or((1, 0), |v| v.value());
        let entry = InboxEntry {
            id,
            created_ms: now_ms,
            expires_ms: expiry(now_ms, limits.ttl),
            topic: msg.topic,
            event: msg.event,
            data: msg.data,
        };
        codec::encode_inbox(&mut self.scratch, &entry);
        t.inbox
            .insert((user, offset), self.scratch.as_slice())
            .map_err(err)?;
        let row = StatusRow {
            user,
            offset,
            status: MessageStatus::Pending,
            attempts: 0,
            created_ms: now_ms,
            final_ms: 0,
        };
        codec::encode_status(&mut self.scratch, &row);
        t.status.insert(id, self.scratch.as_slice()).map_err(err)?;
        t.live.insert((now_ms, id), ()).map_err(err)?;
        t.users.insert(user, (offset + 1, count + 1)).map_err(err)?;
        self.next_id = id + 1;
        self.next_id_dirty = true;

        let max = u64::try_from(limits.max_messages).unwrap_or(u64::MAX);
        let mut dropped = Vec::new();
        for _ in 0..(count + 1).saturating_sub(max) {
            let oldest = {
                let mut r = t.inbox.range((user, 0)..=(user, u64::MAX)).map_err(err)?;
                match r.next() {
                    Some(item) => Some(codec::decode_inbox(item.map_err(err)?.1.value())?.id),
                    None => None,
                }
            };
            let Some(old) = oldest else { break };
            if let Some(c) = t.finish(&mut self.scratch, old, MessageStatus::Dropped, now_ms)? {
                dropped.push(c);
            }
        }
        let message = InboxMessage {
            id,
            offset,
            topic: msg.topic.map(Into::into),
            event: msg.event.into(),
            data: msg.data.map(Bytes::copy_from_slice),
            created_ms: now_ms,
            attempts: 0,
        };
        Ok((message, dropped))
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
        let Some(id) = self.inbox_id(user, offset)? else {
            return Ok(());
        };
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = Tables::open(tx)?;
        let Some((user, row)) = t.status_row(id)? else {
            return Ok(());
        };
        if row.status.is_final() {
            return Ok(());
        }
        let row = StatusRow {
            user: &user,
            status: MessageStatus::Delivered,
            attempts: row.attempts.saturating_add(times),
            ..row
        };
        codec::encode_status(&mut self.scratch, &row);
        t.status.insert(id, self.scratch.as_slice()).map_err(err)?;
        Ok(())
    }

    pub(super) fn ack_inner(
        &mut self,
        user: &str,
        offset: u64,
    ) -> Result<Option<StatusChange>, StoreError> {
        let Some(id) = self.inbox_id(user, offset)? else {
            return Ok(None);
        };
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = Tables::open(tx)?;
        t.finish(&mut self.scratch, id, MessageStatus::Acked, now_ms())
    }

    pub(super) fn list_inner(
        &mut self,
        user: &str,
        now_ms: u64,
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let mut out: Vec<InboxMessage> = with_table!(self, INBOX, |t| {
            let mut out = Vec::new();
            for item in t.range((user, 0)..=(user, u64::MAX)).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let e = codec::decode_inbox(v.value())?;
                if e.expires_ms < now_ms {
                    continue;
                }
                out.push(InboxMessage {
                    id: e.id,
                    offset: k.value().1,
                    topic: e.topic.map(Into::into),
                    event: e.event.into(),
                    data: e.data.map(Bytes::copy_from_slice),
                    created_ms: e.created_ms,
                    attempts: 0,
                });
            }
            out
        });
        with_table!(self, STATUS, |t| {
            for m in &mut out {
                if let Some(v) = t.get(m.id).map_err(err)? {
                    m.attempts = codec::decode_status(v.value())?.attempts;
                }
            }
        });
        Ok(out)
    }

    pub(super) fn expire_inner(
        &mut self,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        if limits.ttl.is_zero() {
            return Ok(Vec::new());
        }
        let cutoff = now_ms.saturating_sub(ms(limits.ttl));
        let old_live: Vec<u64> = with_table!(self, LIVE, |t| {
            let mut ids = Vec::new();
            for item in t.range(..(cutoff, 0)).map_err(err)? {
                ids.push(item.map_err(err)?.0.value().1);
            }
            ids
        });
        let old_finals: Vec<(u64, u64)> = with_table!(self, FINALS, |t| {
            let mut keys = Vec::new();
            for item in t.range(..(cutoff, 0)).map_err(err)? {
                keys.push(item.map_err(err)?.0.value());
            }
            keys
        });
        if old_live.is_empty() && old_finals.is_empty() {
            return Ok(Vec::new());
        }
        let tx = wtx(&self.db, &mut self.wtx)?;
        let mut t = Tables::open(tx)?;
        let mut changes = Vec::with_capacity(old_live.len());
        for id in old_live {
            if let Some(c) = t.finish(&mut self.scratch, id, MessageStatus::Expired, now_ms)? {
                changes.push(c);
            }
        }
        for key in old_finals {
            t.finals.remove(key).map_err(err)?;
            t.status.remove(key.1).map_err(err)?;
        }
        Ok(changes)
    }

    pub(super) fn status_inner(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError> {
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
