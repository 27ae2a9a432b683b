//! Topic history over Redis streams: append (and publish to the cluster), position, read.

use std::borrow::Cow;
use std::sync::Arc;

use ::redis::Value;
use bytes::Bytes;

use super::conn::{copy, resp, val, Arg, Call, Script};
use super::RedisStore;
use crate::store::memory::ms;
use crate::store::{new_epoch, HistoryLimits, HistoryRead, Publication, StoreError, StreamPos};

/// Larger `after` values are read as this: Lua numbers are doubles, exact up to 2^53, and no
/// stream gets near either.
const MAX_AFTER: u64 = 1 << 52;
/// Larger read limits are read as this (the script fetches at most 1000 entries per step).
const MAX_LIMIT: usize = 1 << 30;

fn num(n: u64) -> Arg<'static> {
    Cow::Owned(n.to_string().into_bytes())
}

/// `{epoch, offset}` as the scripts return a position.
fn position(v: &Value) -> Result<StreamPos, StoreError> {
    let a = val::array(v, "a stream position")?;
    Ok(StreamPos {
        epoch: val::text(val::at(a, 0, "epoch")?, "epoch")?.into(),
        offset: val::u64(val::at(a, 1, "offset")?, "offset")?,
    })
}

/// `{epoch_1, top_1, ...}` as the positions script returns `n` positions.
fn positions(v: &Value, n: usize) -> Result<Vec<StreamPos>, StoreError> {
    let a = val::array(v, "stream positions")?;
    if a.len() != 2 * n {
        return Err(StoreError::Corrupt(format!(
            "{} values for {n} stream positions",
            a.len()
        )));
    }
    a.chunks_exact(2)
        .map(|p| {
            Ok(StreamPos {
                epoch: val::text(&p[0], "epoch")?.into(),
                offset: val::u64(&p[1], "offset")?,
            })
        })
        .collect()
}

/// A stream entry `[id, [field, value, ...]]` (id `<offset>-0`).
fn publication(v: &Value) -> Result<Publication, StoreError> {
    let e = val::array(v, "a stream entry")?;
    let id = val::text(val::at(e, 0, "entry id")?, "entry id")?;
    let offset = id
        .split_once('-')
        .and_then(|(o, _)| o.parse().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("stream entry id {id:?}")))?;
    let fields = val::array(val::at(e, 1, "entry fields")?, "entry fields")?;
    let (mut event, mut data, mut time_ms) = (None, None, 0);
    for pair in fields.chunks_exact(2) {
        match val::bytes_opt(&pair[0], "field name")? {
            Some(b"e") => event = Some(val::text(&pair[1], "event")?),
            Some(b"d") => {
                data = val::bytes_opt(&pair[1], "data")?.map(Bytes::copy_from_slice);
            }
            Some(b"t") => time_ms = val::u64(&pair[1], "time")?,
            _ => {}
        }
    }
    Ok(Publication {
        offset,
        event: event
            .ok_or_else(|| StoreError::Corrupt(format!("stream entry {offset} has no event")))?
            .into(),
        data,
        time_ms,
    })
}

impl RedisStore {
    /// The keys of the history scripts: the topic's stream and meta, and the instance's epoch
    /// (see `meta.lua`).
    fn stream_keys(&self, topic: &str) -> [Arg<'static>; 3] {
        [
            Cow::Owned(format!("{}:h:{topic}", self.prefix).into_bytes()),
            Cow::Owned(format!("{}:hm:{topic}", self.prefix).into_bytes()),
            Cow::Owned(format!("{}:inbox_epoch", self.prefix).into_bytes()),
        ]
    }

    pub(super) fn position_of(&mut self, topic: &str) -> Result<StreamPos, StoreError> {
        let [stream, meta, epoch_key] = self.stream_keys(topic);
        let call = Call {
            script: Script::Position,
            keys: 3,
            args: vec![
                stream,
                meta,
                epoch_key,
                Cow::Owned(new_epoch().as_bytes().to_vec()),
            ],
        };
        let k = self.topic_instance(topic);
        position(&self.inst[k].eval(&call)?)
    }

    /// The positions of `topics` (the position check): per instance, one script call for all
    /// of its topics. One result per topic, in order.
    pub(super) fn positions_of(&mut self, topics: &[&str]) -> Vec<Result<StreamPos, StoreError>> {
        let n = self.inst.len();
        let mut by_inst: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, t) in topics.iter().enumerate() {
            by_inst[if n == 1 { 0 } else { self.topic_instance(t) }].push(i);
        }
        let mut out: Vec<Option<Result<StreamPos, StoreError>>> =
            topics.iter().map(|_| None).collect();
        let mut buf = Vec::new();
        for (k, idx) in by_inst.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let p = self.prefix.as_bytes();
            let answer =
                self.inst[k].pipeline_raw(&mut buf, 1, Script::Positions, |buf, sha, _| {
                    resp::script(buf, Script::Positions, sha, 3 + idx.len());
                    resp::num(buf, 1 + idx.len());
                    resp::bulk_parts(buf, &[p, b":inbox_epoch"]);
                    for &i in idx {
                        resp::bulk_parts(buf, &[p, b":hm:", topics[i].as_bytes()]);
                    }
                    resp::bulk(buf, new_epoch().as_bytes());
                });
            let decoded = answer.and_then(|mut v| match v.pop() {
                Some(Value::ServerError(e)) => Err(self.inst[k].server_error(e)),
                Some(v) => positions(&v, idx.len()),
                None => Err(StoreError::Corrupt("no answer for positions".into())),
            });
            match decoded {
                Ok(pos) => {
                    for (&i, p) in idx.iter().zip(pos) {
                        out[i] = Some(Ok(p));
                    }
                }
                Err(e) => {
                    for &i in idx {
                        out[i] = Some(Err(copy(&e)));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Corrupt("no position".into()))))
            .collect()
    }

    pub(super) fn read_history(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, StoreError> {
        let cutoff = if limits.ttl.is_zero() {
            0
        } else {
            now_ms.saturating_sub(ms(limits.ttl))
        };
        let [stream, meta, epoch_key] = self.stream_keys(topic);
        let call = Call {
            script: Script::Read,
            keys: 3,
            args: vec![
                stream,
                meta,
                epoch_key,
                Cow::Owned(new_epoch().as_bytes().to_vec()),
                num(after.min(MAX_AFTER)),
                num(limit.min(MAX_LIMIT) as u64),
                num(cutoff),
            ],
        };
        let k = self.topic_instance(topic);
        let v = self.inst[k].eval(&call)?;
        let a = val::array(&v, "a history read")?;
        let pos = StreamPos {
            epoch: Arc::from(val::text(val::at(a, 0, "epoch")?, "epoch")?),
            offset: val::u64(val::at(a, 1, "top")?, "top")?,
        };
        let complete = val::u64(val::at(a, 2, "complete")?, "complete")? == 1;
        let entries = val::array(val::at(a, 3, "entries")?, "entries")?;
        // Newest first from the script; oldest first in the answer.
        let publications = entries
            .iter()
            .rev()
            .map(publication)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryRead {
            pos,
            publications,
            complete,
        })
    }
}

/// Fuzzing: `v` as a position, a stream entry, and a history read's answer.
pub(super) fn fuzz_decode(v: &Value) {
    let _ = position(v);
    let _ = positions(v, 1);
    let _ = super::append::decode(v, 1);
    let _ = publication(v);
    if let Ok(a) = val::array(v, "a history read") {
        if let Ok(entries) = val::at(a, 3, "entries").and_then(|e| val::array(e, "entries")) {
            for e in entries {
                let _ = publication(e);
            }
        }
    }
}
