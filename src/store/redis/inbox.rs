//! User inboxes and message statuses over Redis hashes and sorted sets (see `inbox_lib.lua`).

use std::borrow::Cow;

use ::redis::Value;
use bytes::Bytes;

use super::conn::{val, Arg, Call, Script};
use super::RedisStore;
use crate::store::memory::{expiry, ms};
use crate::store::{
    first_message_id, new_epoch, now_ms, InboxLimits, InboxMessage, MessageInfo, MessageStatus,
    NewMessage, StatusChange, StoreError,
};

/// Most messages one `expire` script call expires (and final statuses it forgets): the script
/// runs again while it finds this many, so Redis is never blocked for long.
const EXPIRE_STEP: u64 = 1000;

fn num(n: u64) -> Arg<'static> {
    Cow::Owned(n.to_string().into_bytes())
}

fn flag(on: bool) -> Arg<'static> {
    Cow::Borrowed(if on { b"1" } else { b"0" })
}

/// `{id, user, offset}` as the scripts return a message that reached a final status.
fn change(v: &Value, status: MessageStatus) -> Result<StatusChange, StoreError> {
    let a = val::array(v, "a status change")?;
    Ok(StatusChange {
        id: val::u64(val::at(a, 0, "id")?, "id")?,
        user: val::text(val::at(a, 1, "user")?, "user")?.into(),
        offset: val::u64(val::at(a, 2, "offset")?, "offset")?,
        status,
    })
}

fn status_of(s: &str) -> Option<MessageStatus> {
    Some(match s {
        "p" => MessageStatus::Pending,
        "d" => MessageStatus::Delivered,
        "a" => MessageStatus::Acked,
        "x" => MessageStatus::Expired,
        "r" => MessageStatus::Dropped,
        _ => return None,
    })
}

/// A row of `inbox_list.lua`: `{id, {offset, created, expiry, attempts, event, topic, data}}`;
/// `None` when the message hash is gone or its expiry is before `now_ms`.
fn listed(v: &Value, now_ms: u64) -> Result<Option<InboxMessage>, StoreError> {
    let row = val::array(v, "an inbox row")?;
    let id = val::u64(val::at(row, 0, "id")?, "id")?;
    let f = val::array(val::at(row, 1, "message")?, "message")?;
    let field = |i: usize| val::at(f, i, "message field");
    if matches!(field(0)?, Value::Nil) {
        return Ok(None);
    }
    if val::u64(field(2)?, "expiry")? < now_ms {
        return Ok(None);
    }
    let attempts = val::u64(field(3)?, "attempts")?;
    Ok(Some(InboxMessage {
        id,
        offset: val::u64(field(0)?, "offset")?,
        topic: val::bytes_opt(field(5)?, "topic")?
            .map(|b| String::from_utf8_lossy(b).into_owned().into_boxed_str()),
        event: val::text(field(4)?, "event")?.into(),
        data: val::bytes_opt(field(6)?, "data")?.map(Bytes::copy_from_slice),
        created_ms: val::u64(field(1)?, "created")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    }))
}

impl RedisStore {
    /// The key prefix the inbox scripts build their keys from (`<prefix>:`).
    fn key_prefix(&self) -> Arg<'static> {
        Cow::Owned(format!("{}:", self.prefix).into_bytes())
    }

    pub(super) fn put(
        &mut self,
        user: &str,
        msg: NewMessage<'_>,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<(InboxMessage, Vec<StatusChange>), StoreError> {
        let k = self.user_instance(user);
        let call = Call {
            script: Script::Put,
            keys: 0,
            args: vec![
                self.key_prefix(),
                Cow::Borrowed(user.as_bytes()),
                num(self.inst.len() as u64),
                num(k as u64),
                num(now_ms),
                num(expiry(now_ms, limits.ttl)),
                num(limits.max_messages as u64),
                Cow::Borrowed(msg.event.as_bytes()),
                flag(msg.topic.is_some()),
                Cow::Borrowed(msg.topic.unwrap_or_default().as_bytes()),
                flag(msg.data.is_some()),
                Cow::Borrowed(msg.data.unwrap_or_default()),
                Cow::Owned(new_epoch().as_bytes().to_vec()),
                num(first_message_id(now_ms)),
            ],
        };
        let v = self.inst[k].eval(&call)?;
        let a = val::array(&v, "an inbox put")?;
        self.saw_inbox_epoch(k, val::text(val::at(a, 2, "inbox epoch")?, "inbox epoch")?);
        let message = InboxMessage {
            id: val::u64(val::at(a, 0, "id")?, "id")?,
            offset: val::u64(val::at(a, 1, "offset")?, "offset")?,
            topic: msg.topic.map(Into::into),
            event: msg.event.into(),
            data: msg.data.map(Bytes::copy_from_slice),
            created_ms: now_ms,
            attempts: 0,
        };
        let dropped = a[3..]
            .iter()
            .map(|c| change(c, MessageStatus::Dropped))
            .collect::<Result<_, _>>()?;
        Ok((message, dropped))
    }

    pub(super) fn delivered(
        &mut self,
        user: &str,
        offset: u64,
        times: u32,
    ) -> Result<(), StoreError> {
        let k = self.user_instance(user);
        let call = Call {
            script: Script::Delivered,
            keys: 0,
            args: vec![
                self.key_prefix(),
                Cow::Borrowed(user.as_bytes()),
                num(offset),
                num(u64::from(times)),
            ],
        };
        self.inst[k].eval(&call).map(drop)
    }

    pub(super) fn ack(
        &mut self,
        user: &str,
        offset: u64,
    ) -> Result<Option<StatusChange>, StoreError> {
        let k = self.user_instance(user);
        let call = Call {
            script: Script::Ack,
            keys: 0,
            args: vec![
                self.key_prefix(),
                Cow::Borrowed(user.as_bytes()),
                num(offset),
                num(now_ms()),
            ],
        };
        match self.inst[k].eval(&call)? {
            Value::Nil => Ok(None),
            v => change(&v, MessageStatus::Acked).map(Some),
        }
    }

    pub(super) fn list(
        &mut self,
        user: &str,
        now_ms: u64,
    ) -> Result<Vec<InboxMessage>, StoreError> {
        let k = self.user_instance(user);
        let call = Call {
            script: Script::List,
            keys: 0,
            args: vec![
                self.key_prefix(),
                Cow::Borrowed(user.as_bytes()),
                Cow::Owned(new_epoch().as_bytes().to_vec()),
            ],
        };
        let v = self.inst[k].eval(&call)?;
        let a = val::array(&v, "an inbox")?;
        self.saw_inbox_epoch(k, val::text(val::at(a, 0, "inbox epoch")?, "inbox epoch")?);
        let mut out = Vec::new();
        for row in val::array(val::at(a, 1, "inbox rows")?, "inbox rows")? {
            out.extend(listed(row, now_ms)?);
        }
        Ok(out)
    }

    /// Runs the expire script on every instance (until each has nothing left to do); an
    /// instance that fails is skipped — the next run, a second later, tries it again.
    pub(super) fn expire_all(
        &mut self,
        limits: InboxLimits,
        now_ms: u64,
    ) -> Result<Vec<StatusChange>, StoreError> {
        if limits.ttl.is_zero() {
            return Ok(Vec::new());
        }
        let cutoff = now_ms.saturating_sub(ms(limits.ttl));
        let mut out = Vec::new();
        let mut failed = None;
        for k in 0..self.inst.len() {
            let call = Call {
                script: Script::Expire,
                keys: 0,
                args: vec![
                    self.key_prefix(),
                    num(cutoff),
                    num(now_ms),
                    num(EXPIRE_STEP),
                ],
            };
            loop {
                let v = match self.inst[k].eval(&call) {
                    Ok(v) => v,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                let a = val::array(&v, "an expire run")?;
                let live = val::u64(val::at(a, 0, "examined")?, "examined")?;
                let finals = val::u64(val::at(a, 1, "forgotten")?, "forgotten")?;
                for c in val::array(val::at(a, 2, "expired")?, "expired")? {
                    out.push(change(c, MessageStatus::Expired)?);
                }
                if live < EXPIRE_STEP && finals < EXPIRE_STEP {
                    break;
                }
            }
        }
        match failed {
            // What expired elsewhere is reported; the failure only when nothing was.
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    pub(super) fn message_status(&mut self, id: u64) -> Result<Option<MessageInfo>, StoreError> {
        let k = (id % self.inst.len() as u64) as usize;
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(format!("{}:msg:{id}", self.prefix))
            .arg(&["u", "o", "s", "n", "c"][..]);
        let f: Vec<Value> = self.inst[k].query(&cmd)?;
        let field = |i: usize| val::at(&f, i, "message status");
        let Some(s) = val::bytes_opt(field(2)?, "status")? else {
            return Ok(None);
        };
        let status = std::str::from_utf8(s)
            .ok()
            .and_then(status_of)
            .ok_or_else(|| StoreError::Corrupt(format!("message {id}: status {s:?}")))?;
        Ok(Some(MessageInfo {
            id,
            user: val::text(field(0)?, "user")?.into(),
            offset: val::u64(field(1)?, "offset")?,
            status,
            attempts: u32::try_from(val::u64(field(3)?, "attempts")?).unwrap_or(u32::MAX),
            created_ms: val::u64(field(4)?, "created")?,
        }))
    }
}

/// Fuzzing: `v` as a status change, an inbox row, and an inbox put's answer.
pub(super) fn fuzz_decode(v: &Value) {
    let _ = change(v, MessageStatus::Acked);
    let _ = listed(v, 0);
    if let Ok(a) = val::array(v, "an inbox put") {
        for x in a.iter().skip(3) {
            let _ = change(x, MessageStatus::Dropped);
        }
        for row in a {
            let _ = listed(row, u64::MAX);
        }
    }
}
