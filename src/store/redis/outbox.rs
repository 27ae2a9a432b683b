//! The webhook outbox of [`RedisStore`]: one stream, `P:wh`, on the first instance, read
//! through the consumer group `senders` with one consumer per node (its name).
//!
//! - push: one `XADD P:wh * b <event> c <created>` per event, in one pipeline (one round trip);
//!   the entry id (`<ms>-<n>`) is the event's id, unique for the stream's life.
//! - claim: `XAUTOCLAIM` first — entries some consumer took more than `lease` ago and did not
//!   acknowledge (that node died or is still retrying; its retries and ours may both arrive:
//!   at least once) — then `XREADGROUP ... >` for new entries, each of which the group hands
//!   to exactly one consumer, so in a cluster every event is sent by one node.
//! - done: `XACK` + `XDEL` (the stream holds only pending events, so `XLEN` is the backlog).
//!
//! The group is created (`XGROUP CREATE ... 0 MKSTREAM`) when the store connects and again
//! whenever Redis says it is missing (its data was lost).

use ::redis::Value;
use bytes::Bytes;

use super::RedisStore;
use crate::store::{OutboxEntry, OutboxStats, StoreError};

const GROUP: &str = "senders";

impl RedisStore {
    fn outbox_key(&self) -> String {
        format!("{}:wh", self.prefix)
    }

    /// Creates the consumer group if it does not exist.
    pub(super) fn outbox_group(&mut self) -> Result<(), StoreError> {
        let key = self.outbox_key();
        let r = self.inst[0].run(|conn, _, _| {
            let r: ::redis::RedisResult<()> = ::redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query(conn);
            match r {
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                r => r,
            }
        });
        r
    }

    pub(super) fn outbox_push_inner(
        &mut self,
        events: &[Bytes],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let key = self.outbox_key();
        self.inst[0].run(|conn, _, _| {
            let mut p = ::redis::pipe();
            for e in events {
                p.cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("b")
                    .arg(e.as_ref())
                    .arg("c")
                    .arg(now_ms)
                    .ignore();
            }
            p.query::<()>(conn)
        })
    }

    pub(super) fn outbox_claim_inner(
        &mut self,
        max: usize,
        lease: std::time::Duration,
        _now_ms: u64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let key = self.outbox_key();
        let consumer = self.origin.clone();
        let lease_ms = lease.as_millis() as u64;
        let run = |s: &mut RedisStore| {
            s.inst[0].run(|conn, _, _| {
                let stale: Value = ::redis::cmd("XAUTOCLAIM")
                    .arg(&key)
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg(lease_ms)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(max)
                    .query(conn)?;
                let mut out = Vec::new();
                if let Value::Array(parts) = &stale {
                    if let Some(list) = parts.get(1) {
                        entries(list, &mut out);
                    }
                }
                if out.len() < max {
                    let fresh: Value = ::redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(GROUP)
                        .arg(&consumer)
                        .arg("COUNT")
                        .arg(max - out.len())
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(">")
                        .query(conn)?;
                    // [[key, [entries]]] (RESP2) or {key: [entries]} (RESP3); nil when none.
                    match &fresh {
                        Value::Array(streams) => {
                            for s in streams {
                                if let Value::Array(kv) = s {
                                    if let Some(list) = kv.get(1) {
                                        entries(list, &mut out);
                                    }
                                }
                            }
                        }
                        Value::Map(m) => {
                            for (_, list) in m {
                                entries(list, &mut out);
                            }
                        }
                        _ => {}
                    }
                }
                Ok(out)
            })
        };
        match run(self) {
            Err(StoreError::Unavailable(m) | StoreError::Io(m)) if m.contains("NOGROUP") => {
                self.outbox_group()?;
                run(self)
            }
            r => r,
        }
    }

    pub(super) fn outbox_done_inner(&mut self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = self.outbox_key();
        self.inst[0].run(|conn, _, _| {
            let mut p = ::redis::pipe();
            p.cmd("XACK").arg(&key).arg(GROUP).arg(ids).ignore();
            p.cmd("XDEL").arg(&key).arg(ids).ignore();
            p.query::<()>(conn)
        })
    }

    pub(super) fn outbox_stats_inner(&mut self) -> Result<OutboxStats, StoreError> {
        let key = self.outbox_key();
        let (len, first): (u64, Value) = self.inst[0].run(|conn, _, _| {
            ::redis::pipe()
                .cmd("XLEN")
                .arg(&key)
                .cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query(conn)
        })?;
        let mut out = Vec::new();
        entries(&first, &mut out);
        Ok(OutboxStats {
            backlog: len,
            oldest_ms: out.first().map(|e| e.created_ms),
        })
    }
}

/// Appends the stream entries of `v` (`[[id, [field, value, ...]], ...]`) to `out`; entries
/// without a body (deleted meanwhile) are skipped.
fn entries(v: &Value, out: &mut Vec<OutboxEntry>) {
    let Value::Array(list) = v else { return };
    for e in list {
        let Value::Array(pair) = e else { continue };
        let (Some(id), Some(Value::Array(fields))) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let id = match id {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        let mut body = None;
        let mut created = None;
        for kv in fields.chunks(2) {
            if let [Value::BulkString(k), Value::BulkString(v)] = kv {
                match k.as_slice() {
                    b"b" => body = Some(Bytes::copy_from_slice(v)),
                    b"c" => created = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
                    _ => {}
                }
            }
        }
        if let Some(body) = body {
            let created_ms = created
                .or_else(|| id.split('-').next()?.parse().ok())
                .unwrap_or(0);
            out.push(OutboxEntry {
                id,
                body,
                created_ms,
            });
        }
    }
}

/// Fuzzing: decodes `v` as stream entries (nothing may panic).
pub(super) fn fuzz_decode(v: &Value) {
    entries(v, &mut Vec::new());
}
