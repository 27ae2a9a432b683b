//! Topic history over Redis streams: append (and publish to the cluster), position, read.

use std::borrow::Cow;
use std::sync::Arc;

use ::redis::Value;
use bytes::Bytes;

use super::conn::{copy, val, Arg, Call, Script};
use super::RedisStore;
use crate::store::memory::ms;
use crate::store::{
    new_epoch, AppendReq, HistoryLimits, HistoryRead, Publication, StoreError, StreamPos,
};

/// Larger `after` values are read as this: Lua numbers are doubles, exact up to 2^53, and no
/// stream gets near either.
const MAX_AFTER: u64 = 1 << 52;
/// Larger read limits are read as this (the script fetches at most 1000 entries per step).
const MAX_LIMIT: usize = 1 << 30;

fn num(n: u64) -> Arg<'static> {
    Cow::Owned(n.to_string().into_bytes())
}

fn text(s: &str) -> Arg<'_> {
    Cow::Borrowed(s.as_bytes())
}

/// `{epoch, offset}` as the scripts return a position.
fn position(v: &Value) -> Result<StreamPos, StoreError> {
    let a = val::array(v, "a stream position")?;
    Ok(StreamPos {
        epoch: val::text(val::at(a, 0, "epoch")?, "epoch")?.into(),
        offset: val::u64(val::at(a, 1, "offset")?, "offset")?,
    })
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

    /// The append script's call for one publication (its cluster payload numbered here).
    fn append_call<'a>(&mut self, r: &AppendReq<'a>, now_ms: u64) -> Call<'a> {
        self.seq = self.seq.wrapping_add(1);
        let payload =
            crate::proto::wire::stored(&self.origin, self.seq, r.topic, r.event, r.data, r.exclude);
        let [stream, meta, epoch_key] = self.stream_keys(r.topic);
        let channel = crate::proto::wire::topic_channel(&self.prefix, r.topic);
        Call {
            script: Script::Append,
            keys: 3,
            args: vec![
                stream,
                meta,
                epoch_key,
                Cow::Owned(new_epoch().as_bytes().to_vec()),
                num(r.limits.size as u64),
                num(ms(r.limits.ttl)),
                num(now_ms),
                text(r.event),
                Cow::Borrowed(if r.data.is_some() { b"1" } else { b"0" }),
                Cow::Borrowed(r.data.unwrap_or_default()),
                Cow::Owned(payload),
                Cow::Owned(channel.into_bytes()),
            ],
        }
    }

    pub(super) fn append_one(
        &mut self,
        req: &AppendReq<'_>,
        now_ms: u64,
    ) -> Result<StreamPos, StoreError> {
        let call = self.append_call(req, now_ms);
        let k = self.topic_instance(req.topic);
        position(&self.inst[k].eval(&call)?)
    }

    /// Every request's script call, pipelined: one round trip per instance.
    pub(super) fn append_many(
        &mut self,
        reqs: &[AppendReq<'_>],
        now_ms: u64,
    ) -> Vec<Result<StreamPos, StoreError>> {
        let n = self.inst.len();
        // Per instance: the calls and the index of each in `reqs`.
        let mut groups: Vec<(Vec<Call<'_>>, Vec<usize>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, r) in reqs.iter().enumerate() {
            let call = self.append_call(r, now_ms);
            let g = &mut groups[self.topic_instance(r.topic)];
            g.0.push(call);
            g.1.push(i);
        }
        let mut out: Vec<Option<Result<StreamPos, StoreError>>> =
            reqs.iter().map(|_| None).collect();
        for (k, (calls, idx)) in groups.into_iter().enumerate() {
            if calls.is_empty() {
                continue;
            }
            let results = self.inst[k].eval_many(&calls);
            for (i, r) in idx.into_iter().zip(results) {
                out[i] = Some(r.and_then(|v| position(&v)));
            }
        }
        let missing = StoreError::Corrupt("no answer for an append".into());
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(copy(&missing))))
            .collect()
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
    let _ = publication(v);
    if let Ok(a) = val::array(v, "a history read") {
        if let Ok(entries) = val::at(a, 3, "entries").and_then(|e| val::array(e, "entries")) {
            for e in entries {
                let _ = publication(e);
            }
        }
    }
}
