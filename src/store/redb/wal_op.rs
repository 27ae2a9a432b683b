//! The write-ahead log's operations: one per mutating call of a batch, encoded into its record.
//! Kinds 1–5 are those of log version 1; the outbox's (6, 7) came with version 2, Socket.IO
//! sessions' (8, 9) later within it (an older build refuses a log holding them: unknown op).

use std::time::Duration;

use super::super::codec::{self, Reader};
use crate::store::StoreError;

/// One logged operation: what replaying it calls (the store's own code, with the logged
/// arguments, so the result is the same).
#[derive(Debug, PartialEq, Eq)]
pub(in crate::store::redb) enum Op<'a> {
    Append {
        topic: &'a str,
        size: u64,
        event: &'a str,
        data: Option<&'a [u8]>,
        now_ms: u64,
    },
    Put {
        user: &'a str,
        topic: Option<&'a str>,
        event: &'a str,
        data: Option<&'a [u8]>,
        max_messages: u64,
        ttl: Duration,
        now_ms: u64,
    },
    Delivered {
        user: &'a str,
        offset: u64,
        times: u32,
    },
    Ack {
        user: &'a str,
        offset: u64,
        now_ms: u64,
    },
    Expire {
        max_messages: u64,
        ttl: Duration,
        now_ms: u64,
    },
    /// A webhook event put in the outbox. Its id is logged: replaying inserts it under the same
    /// id whatever the counter says then (a reopened store's counter starts from the clock).
    OutboxPush {
        id: u64,
        now_ms: u64,
        event: &'a [u8],
    },
    /// A pending outbox event removed (sent, or dropped as a dead letter).
    OutboxDone { id: u64 },
    /// A Socket.IO recovery session kept.
    SioPut {
        pid: &'a str,
        expires_ms: u64,
        session: &'a [u8],
    },
    /// A Socket.IO recovery session taken.
    SioTake { pid: &'a str },
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_ttl(out: &mut Vec<u8>, d: Duration) {
    put_u64(out, d.as_secs());
    out.extend_from_slice(&d.subsec_nanos().to_le_bytes());
}

impl Op<'_> {
    /// Appends the encoding to `out`.
    pub(in crate::store::redb) fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Op::Append {
                topic,
                size,
                event,
                data,
                now_ms,
            } => {
                out.push(1);
                codec::put_str(out, topic);
                put_u64(out, size);
                codec::put_str(out, event);
                codec::put_opt_bytes(out, data);
                put_u64(out, now_ms);
            }
            Op::Put {
                user,
                topic,
                event,
                data,
                max_messages,
                ttl,
                now_ms,
            } => {
                out.push(2);
                codec::put_str(out, user);
                codec::put_opt_bytes(out, topic.map(str::as_bytes));
                codec::put_str(out, event);
                codec::put_opt_bytes(out, data);
                put_u64(out, max_messages);
                put_ttl(out, ttl);
                put_u64(out, now_ms);
            }
            Op::Delivered {
                user,
                offset,
                times,
            } => {
                out.push(3);
                codec::put_str(out, user);
                put_u64(out, offset);
                out.extend_from_slice(&times.to_le_bytes());
            }
            Op::Ack {
                user,
                offset,
                now_ms,
            } => {
                out.push(4);
                codec::put_str(out, user);
                put_u64(out, offset);
                put_u64(out, now_ms);
            }
            Op::Expire {
                max_messages,
                ttl,
                now_ms,
            } => {
                out.push(5);
                put_u64(out, max_messages);
                put_ttl(out, ttl);
                put_u64(out, now_ms);
            }
            Op::OutboxPush { id, now_ms, event } => {
                out.push(6);
                put_u64(out, id);
                put_u64(out, now_ms);
                put_bytes(out, event);
            }
            Op::OutboxDone { id } => {
                out.push(7);
                put_u64(out, id);
            }
            Op::SioPut {
                pid,
                expires_ms,
                session,
            } => {
                out.push(8);
                codec::put_str(out, pid);
                put_u64(out, expires_ms);
                put_bytes(out, session);
            }
            Op::SioTake { pid } => {
                out.push(9);
                codec::put_str(out, pid);
            }
        }
    }

    /// Decodes the next operation of a record's payload.
    pub(in crate::store::redb) fn decode<'a>(r: &mut Reader<'a>) -> Result<Op<'a>, StoreError> {
        let ttl = |r: &mut Reader<'_>| -> Result<Duration, StoreError> {
            let secs = r.u64()?;
            let nanos = r.u32()?;
            Ok(Duration::new(secs, nanos.min(999_999_999)))
        };
        Ok(match r.u8()? {
            1 => Op::Append {
                topic: r.str()?,
                size: r.u64()?,
                event: r.str()?,
                data: r.opt_bytes()?,
                now_ms: r.u64()?,
            },
            2 => Op::Put {
                user: r.str()?,
                topic: match r.opt_bytes()? {
                    Some(b) => Some(std::str::from_utf8(b).map_err(|_| {
                        StoreError::Corrupt("wal record: invalid UTF-8 topic".into())
                    })?),
                    None => None,
                },
                event: r.str()?,
                data: r.opt_bytes()?,
                max_messages: r.u64()?,
                ttl: ttl(r)?,
                now_ms: r.u64()?,
            },
            3 => Op::Delivered {
                user: r.str()?,
                offset: r.u64()?,
                times: r.u32()?,
            },
            4 => Op::Ack {
                user: r.str()?,
                offset: r.u64()?,
                now_ms: r.u64()?,
            },
            5 => Op::Expire {
                max_messages: r.u64()?,
                ttl: ttl(r)?,
                now_ms: r.u64()?,
            },
            6 => Op::OutboxPush {
                id: r.u64()?,
                now_ms: r.u64()?,
                event: r.bytes()?,
            },
            7 => Op::OutboxDone { id: r.u64()? },
            8 => Op::SioPut {
                pid: r.str()?,
                expires_ms: r.u64()?,
                session: r.bytes()?,
            },
            9 => Op::SioTake { pid: r.str()? },
            t => return Err(StoreError::Corrupt(format!("wal record: unknown op {t}"))),
        })
    }
}
