//! Appending publications: one call of the append script (`append.lua`) per batch of
//! publications per instance — the script assigns the offsets, `XADD`s each publication,
//! `PUBLISH`es one cluster message per topic with all of the call's appended publications of
//! it (wire kind 'B') and writes each topic's meta once — written as RESP straight into
//! buffers the store reuses, and answered with one position per topic of the call. Before,
//! every publication was a script call of its own (a `Cmd` of a dozen owned arguments, the
//! script's setup and a meta read and write in Redis, and a decoded answer): ~25 µs of Redis
//! CPU each; then one call per batch with a `PUBLISH` per publication: 7.3 µs. Each run of
//! consecutive publications of one topic is one argument (their cluster message parts joined;
//! the script reads event and data out of them): four arguments per publication, the data
//! sent twice, cost Redis more than the `XADD`s (BENCHMARKS.md, branch `redislua`).

use std::collections::HashMap;
use std::sync::Arc;

use ::redis::Value;

use super::conn::{copy, resp, val, Instance, Script};
use super::RedisStore;
use crate::proto::wire;
use crate::store::memory::ms;
use crate::store::{new_epoch, AppendReq, StoreError, StreamPos};

/// Most publications per script call. A longer run is cut into several calls sent in one
/// pipeline (still one round trip per instance), so that one call does not hold Redis, which
/// runs a script to its end, for more than about a millisecond.
pub(super) const CHUNK: usize = 256;

// A run's header holds its publication count in 10 bits (`append.lua`).
const _: () = assert!(CHUNK < 1024);

/// An event longer than this does not fit a cluster message part (`wire::stored_item_into`
/// cuts it): its publication is a run of its own that carries the whole event for the stream.
const LONG_EVENT: usize = u16::MAX as usize;

/// Buffers of the append path, kept from batch to batch.
#[derive(Default)]
pub(super) struct Bufs {
    /// The commands for one instance.
    cmd: Vec<u8>,
    /// One cluster message header or publication part.
    payload: Vec<u8>,
}

/// One script call: its publications, their distinct topics and their runs.
struct Chunk {
    /// Per publication: its index in the batch and its topic's index in `topics`.
    pubs: Vec<(usize, usize)>,
    /// Per distinct topic, in order of first appearance: a publication of it (its topic and
    /// limits name the stream's keys and arguments).
    topics: Vec<usize>,
    /// The publications as the script reads them: runs of consecutive publications of one
    /// topic, each sent as one argument (their cluster message parts joined) — one argument
    /// per run instead of four per publication, so Redis parses and Lua interns far fewer
    /// strings. A publication with a [`LONG_EVENT`] is a run of its own.
    runs: Vec<Run>,
}

/// Consecutive publications `pubs[start..start + len]` of one topic (see [`Chunk::runs`]).
struct Run {
    /// The first publication's index in [`Chunk::pubs`].
    start: usize,
    /// How many publications.
    len: usize,
    /// Whether its one publication's event is longer than [`LONG_EVENT`] (sent whole apart).
    long: bool,
}

impl Chunk {
    /// The call for the publications `idx` of `reqs`.
    fn new(reqs: &[AppendReq<'_>], idx: &[usize]) -> Chunk {
        let mut pubs = Vec::with_capacity(idx.len());
        let mut topics: Vec<usize> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut last: Option<(&str, usize)> = None;
        for &i in idx {
            let t = reqs[i].topic;
            let j = match last {
                // The common case: a run of one topic.
                Some((lt, j)) if lt == t => j,
                _ => *index.entry(t).or_insert_with(|| {
                    topics.push(i);
                    topics.len() - 1
                }),
            };
            last = Some((t, j));
            pubs.push((i, j));
        }
        let mut runs: Vec<Run> = Vec::new();
        for (x, &(i, j)) in pubs.iter().enumerate() {
            let long = reqs[i].event.len() > LONG_EVENT;
            match runs.last_mut() {
                Some(r) if !long && !r.long && pubs[r.start].1 == j => r.len += 1,
                _ => runs.push(Run {
                    start: x,
                    len: 1,
                    long,
                }),
            }
        }
        Chunk { pubs, topics, runs }
    }

    /// Reports `e` for every publication of the call.
    fn fail(&self, e: &StoreError, out: &mut [Option<Result<StreamPos, StoreError>>]) {
        for &(i, _) in &self.pubs {
            out[i] = Some(Err(copy(e)));
        }
    }
}

/// What one call writes the publications with: the cluster prefix and this node's origin,
/// and the sequence of its cluster messages (one per topic per call).
struct Writer<'s> {
    prefix: &'s str,
    origin: &'s str,
    seq: &'s mut u64,
    payload: &'s mut Vec<u8>,
}

impl Writer<'_> {
    /// Writes the script call for `c` (see `append.lua` for its keys and arguments).
    fn call(
        &mut self,
        buf: &mut Vec<u8>,
        sha: Option<&str>,
        deadline: i64,
        reqs: &[AppendReq<'_>],
        c: &Chunk,
        now_ms: u64,
    ) {
        let t = c.topics.len();
        let keys = 1 + 2 * t;
        let runs: usize = c.runs.iter().map(|r| 2 + usize::from(r.long)).sum();
        resp::script(buf, Script::Append, sha, 1 + keys + 4 + 4 * t + runs);
        resp::num(buf, keys);
        let p = self.prefix.as_bytes();
        // The key layout of `RedisStore::stream_keys`.
        resp::bulk_parts(buf, &[p, b":inbox_epoch"]);
        for &i in &c.topics {
            let topic = reqs[i].topic.as_bytes();
            resp::bulk_parts(buf, &[p, b":h:", topic]);
            resp::bulk_parts(buf, &[p, b":hm:", topic]);
        }
        resp::bulk(buf, new_epoch().as_bytes());
        resp::num(buf, deadline);
        resp::num(buf, now_ms);
        resp::num(buf, t);
        for &i in &c.topics {
            let r = &reqs[i];
            resp::num(buf, r.limits.size as u64);
            resp::num(buf, ms(r.limits.ttl));
            resp::bulk(
                buf,
                crate::proto::wire::topic_channel(self.prefix, r.topic).as_bytes(),
            );
            *self.seq = self.seq.wrapping_add(1);
            self.payload.clear();
            wire::stored_batch_header_into(self.payload, self.origin, *self.seq, r.topic);
            resp::bulk(buf, self.payload);
        }
        for run in &c.runs {
            let pubs = &c.pubs[run.start..run.start + run.len];
            let j = pubs[0].1 + 1;
            resp::num(buf, (j * 1024 + run.len) * 2 + usize::from(run.long));
            if run.long {
                resp::bulk(buf, reqs[pubs[0].0].event.as_bytes());
            }
            self.payload.clear();
            for &(i, _) in pubs {
                let r = &reqs[i];
                wire::stored_item_into(self.payload, r.event, r.data, r.exclude);
            }
            resp::bulk(buf, self.payload);
        }
    }
}

/// What one call of the append script answered: how many publications were applied, why
/// the next one failed (empty when all were), and each topic's epoch and first offset.
pub(super) type Applied<'v> = (usize, &'v str, Vec<(Arc<str>, u64)>);

/// Decodes the append script's answer for `topics` topics.
pub(super) fn decode(v: &Value, topics: usize) -> Result<Applied<'_>, StoreError> {
    let a = val::array(v, "an append")?;
    let done = usize::try_from(val::u64(val::at(a, 0, "applied")?, "applied")?)
        .map_err(|_| StoreError::Corrupt("append count".into()))?;
    let why = val::text(val::at(a, 1, "append error")?, "append error")?;
    if a.len() != 2 + 2 * topics {
        return Err(StoreError::Corrupt(format!(
            "an append of {topics} topics answered {} values",
            a.len()
        )));
    }
    let firsts = a[2..]
        .chunks_exact(2)
        .map(|p| {
            Ok((
                Arc::from(val::text(&p[0], "epoch")?),
                val::u64(&p[1], "first offset")?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((done, why, firsts))
}

/// Records the outcome of call `c` from its answer `a`.
fn settle(
    inst: &mut Instance,
    c: &Chunk,
    a: Value,
    out: &mut [Option<Result<StreamPos, StoreError>>],
) {
    let (done, why, firsts) = match a {
        Value::ServerError(e) => return c.fail(&inst.server_error(e), out),
        ref v => match decode(v, c.topics.len()) {
            Ok(d) => d,
            Err(e) => return c.fail(&e, out),
        },
    };
    let stopped = if why.is_empty() {
        "the append script stopped early"
    } else {
        why
    };
    let mut next: Vec<u64> = firsts.iter().map(|f| f.1).collect();
    for (x, &(i, j)) in c.pubs.iter().enumerate() {
        out[i] = Some(if x < done {
            let offset = next[j];
            next[j] += 1;
            Ok(StreamPos {
                epoch: firsts[j].0.clone(),
                offset,
            })
        } else {
            Err(inst.step_error(stopped))
        });
    }
}

impl RedisStore {
    /// Appends `reqs` in order: per instance, one script call per [`CHUNK`] publications, all
    /// of an instance's calls in one pipeline (one round trip). One result per request.
    pub(super) fn append_many(
        &mut self,
        reqs: &[AppendReq<'_>],
        now_ms: u64,
    ) -> Vec<Result<StreamPos, StoreError>> {
        let mut out: Vec<Option<Result<StreamPos, StoreError>>> =
            reqs.iter().map(|_| None).collect();
        let n = self.inst.len();
        let mut by_inst: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, r) in reqs.iter().enumerate() {
            let k = if n == 1 {
                0
            } else {
                self.topic_instance(r.topic)
            };
            by_inst[k].push(i);
        }
        for (k, idx) in by_inst.iter().enumerate() {
            if !idx.is_empty() {
                let chunks: Vec<Chunk> = idx.chunks(CHUNK).map(|c| Chunk::new(reqs, c)).collect();
                self.append_calls(k, reqs, &chunks, now_ms, &mut out);
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(StoreError::Corrupt("no answer for an append".into())))
            })
            .collect()
    }

    /// [`append_many`](Self::append_many) on instance `k`.
    fn append_calls(
        &mut self,
        k: usize,
        reqs: &[AppendReq<'_>],
        chunks: &[Chunk],
        now_ms: u64,
        out: &mut [Option<Result<StreamPos, StoreError>>],
    ) {
        let RedisStore {
            inst,
            prefix,
            origin,
            seq,
            bufs,
            ..
        } = self;
        let inst = &mut inst[k];
        let Bufs { cmd, payload } = bufs;
        let mut w = Writer {
            prefix,
            origin,
            seq,
            payload,
        };
        let answers = inst.pipeline_raw(cmd, chunks.len(), Script::Append, |buf, sha, clock| {
            for c in chunks {
                w.call(buf, sha, clock.deadline(), reqs, c, now_ms);
            }
        });
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                for c in chunks {
                    c.fail(&e, out);
                }
                return;
            }
        };
        for (c, a) in chunks.iter().zip(answers) {
            let a = match a {
                // The scripts were flushed under a live connection: this call was not run.
                Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                    let again = inst.pipeline_raw(cmd, 1, Script::Append, |buf, _, clock| {
                        w.call(buf, None, clock.deadline(), reqs, c, now_ms);
                    });
                    match again {
                        Ok(mut v) => v.pop().unwrap_or(Value::Nil),
                        Err(e) => {
                            c.fail(&e, out);
                            continue;
                        }
                    }
                }
                a => a,
            };
            settle(inst, c, a, out);
        }
    }
}
