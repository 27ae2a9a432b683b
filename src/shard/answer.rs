//! The answers to history requests — a subscribe's position (and its recovery after `since`),
//! a `history` read — computed the same way wherever the topic's stream lives: in the
//! [`Store`] (the store thread) or in a shard's own [`Streams`] (memory store, one node: see
//! `shard::history`). Plain functions over a [`HistorySource`]; no I/O.

use std::sync::Arc;

use bytes::Bytes;

use super::jobs::Since;
use crate::proto::envelope;
use crate::store::streams::Streams;
use crate::store::{HistoryLimits, HistoryRead, Publication, Store, StoreError, StreamPos};

/// Where a topic's stream is read from.
pub(crate) trait HistorySource {
    /// The stream's position.
    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError>;
    /// The latest `limit` publications above `after` (see [`Store::read`]).
    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<HistoryRead, StoreError>;
}

impl HistorySource for dyn Store {
    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError> {
        Store::position(self, topic)
    }
    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<HistoryRead, StoreError> {
        Store::read(self, topic, limits, after, limit, now)
    }
}

impl HistorySource for Streams {
    fn position(&mut self, topic: &str) -> Result<StreamPos, StoreError> {
        Ok(Streams::position(self, topic))
    }
    fn read(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now: u64,
    ) -> Result<HistoryRead, StoreError> {
        Ok(Streams::read(self, topic, limits, after, limit, now))
    }
}

/// What a subscribe's answer is read with.
pub(crate) struct SubscribeAsk<'a> {
    pub topic: &'a str,
    pub limits: HistoryLimits,
    /// The request id (`None`: no reply, only the position for the hold).
    pub rid: Option<u64>,
    pub since: Option<&'a Since>,
    /// Most publications a recovery returns (`store.max_recover`).
    pub max_recover: usize,
    /// Bytes of publications the reply may carry (see [`publications_page`]).
    pub budget: usize,
    pub now: u64,
}

/// The subscribe reply (the position, and the recovery when `since` was given) and the
/// position it covers.
pub(crate) fn subscribe_answer<S: HistorySource + ?Sized>(
    src: &mut S,
    ask: &SubscribeAsk<'_>,
) -> (Option<Bytes>, Option<(Arc<str>, u64)>) {
    let topic = ask.topic;
    let answer = src.position(topic).and_then(|pos| {
        let Some(s) = ask.since else {
            return Ok((pos, None));
        };
        if *s.epoch != *pos.epoch || s.offset > pos.offset {
            return Ok((pos, Some((false, Vec::new()))));
        }
        let r = src.read(topic, ask.limits, s.offset, ask.max_recover, ask.now)?;
        Ok(if r.complete {
            (r.pos, Some((true, r.publications)))
        } else {
            (r.pos, Some((false, Vec::new())))
        })
    });
    let covered = answer
        .as_ref()
        .ok()
        .map(|(pos, _)| (pos.epoch.clone(), pos.offset));
    let Some(rid) = ask.rid else {
        return (None, covered);
    };
    let frame = match answer {
        Ok((pos, rec)) => {
            let mut body = Vec::with_capacity(64);
            position_json(&mut body, &pos.epoch, pos.offset);
            if let Some((ok, pubs)) = rec {
                body.pop();
                body.extend_from_slice(if ok {
                    b",\"recovered\":true"
                } else {
                    b",\"recovered\":false"
                });
                publications_page(&mut body, &pubs, ask.budget, &pos.epoch);
                body.push(b'}');
            }
            envelope::reply(rid, topic, Some(&body))
        }
        Err(e) => envelope::error(Some(rid), topic, e.code(), &e.to_string()),
    };
    (Some(frame), covered)
}

/// A `history` read: the latest `limit` publications after `since` (when its epoch is the
/// stream's), or with `until` (the rest of a paged answer) everything after `since` up to
/// `until`, at most `max_recover`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn history_read<S: HistorySource + ?Sized>(
    src: &mut S,
    topic: &str,
    limits: HistoryLimits,
    limit: usize,
    since: Option<&Since>,
    until: Option<u64>,
    max_recover: usize,
    now: u64,
) -> Result<HistoryRead, StoreError> {
    let pos = src.position(topic)?;
    let after = since
        .filter(|s| *s.epoch == *pos.epoch)
        .map_or(0, |s| s.offset);
    match until {
        Some(u) => src
            .read(topic, limits, after, max_recover, now)
            .map(|mut r| {
                r.publications.retain(|p| p.offset <= u);
                r
            }),
        None => src.read(topic, limits, after, limit, now),
    }
}

/// The reply frame of a connection's `history` request.
pub(crate) fn history_frame(
    rid: u64,
    topic: &str,
    read: Result<HistoryRead, StoreError>,
    budget: usize,
) -> Bytes {
    match read {
        Ok(r) => {
            let mut body = Vec::with_capacity(64);
            position_json(&mut body, &r.pos.epoch, r.pos.offset);
            body.pop();
            publications_page(&mut body, &r.publications, budget, &r.pos.epoch);
            body.push(b'}');
            envelope::reply(rid, topic, Some(&body))
        }
        Err(e) => envelope::error(Some(rid), topic, e.code(), &e.to_string()),
    }
}

/// Bytes of publications one reply to a connection carries: half its outbound queue, so a
/// history or recovery reply never cuts the reader as a slow consumer by itself.
pub(crate) fn reply_budget(hub: &super::shared::HubShared) -> usize {
    hub.config.outbound_queue / 2
}

/// `{"epoch":E,"offset":N}`.
pub(crate) fn position_json(out: &mut Vec<u8>, epoch: &str, offset: u64) {
    out.extend_from_slice(b"{\"epoch\":");
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, epoch);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.push(b'}');
}

/// `,"publications":[{"event":E,"data":D,"offset":O},...]`, oldest first, but stops before the publication that would take
/// the array past `budget` bytes (the first one always goes): a reply larger than the client's
/// outbound queue would cut the client as a slow consumer. When some are left out, appends
/// `,"more":true,"next":{"since":{"epoch":E,"offset":LAST},"until":TOP}` — the `data` of the
/// `history` request that fetches the next page.
pub(crate) fn publications_page(
    out: &mut Vec<u8>,
    pubs: &[Publication],
    budget: usize,
    epoch: &str,
) {
    let start = out.len();
    out.extend_from_slice(b",\"publications\":[");
    let mut cut = None;
    for (i, p) in pubs.iter().enumerate() {
        let size = p.event.len() + p.data.as_ref().map_or(0, |d| d.len()) + 48;
        if i > 0 && out.len() - start + size > budget {
            cut = Some(i);
            break;
        }
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"event\":");
        let _ = serde_json::to_writer(&mut *out, &*p.event);
        if let Some(d) = &p.data {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(d);
        }
        out.extend_from_slice(b",\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(p.offset).as_bytes());
        out.push(b'}');
    }
    out.push(b']');
    if let (Some(i), Some(top)) = (cut, pubs.last()) {
        out.extend_from_slice(b",\"more\":true,\"next\":{\"since\":");
        position_json(out, epoch, pubs[i - 1].offset);
        out.extend_from_slice(b",\"until\":");
        out.extend_from_slice(itoa::Buffer::new().format(top.offset).as_bytes());
        out.push(b'}');
    }
}
