//! Topics with history: a run of publications appended in one call and turned into stored
//! publications, history reads, and subscribe replies with their recovery. Kept apart from the
//! per-job dispatch (`apply`) because publications come in runs, not one job at a time.

use std::sync::Arc;

use bytes::Bytes;

use super::emit::reply_error;
use super::{Out, Sequencer};
use crate::shard::answer::{history_read, reply_budget, subscribe_answer, SubscribeAsk};
use crate::shard::inbox::StoredPub;
use crate::shard::jobs::{PubJob, Since};
use crate::store::{AppendReq, HistoryLimits, HistoryRead, StoreError};
use crate::ConnId;

impl Sequencer {
    /// Appends a run of publications in one [`Store::append_batch`] (one round trip for a
    /// remote store) and records their results in order. When the store delivers publications
    /// itself (a cluster), only the replies are left to emit.
    pub(super) fn publish_run(&mut self, run: &mut Vec<PubJob>, now: u64) {
        if run.is_empty() {
            return;
        }
        // Configuration is fixed at start, so a shard only sends topics with history.
        let ns = &self.hub.namespaces;
        let jobs: Vec<(PubJob, HistoryLimits)> = run
            .drain(..)
            .filter_map(|p| {
                let limits = ns.history(&p.topic)?.limits();
                Some((p, limits))
            })
            .collect();
        let results = {
            let reqs: Vec<AppendReq<'_>> = jobs
                .iter()
                .map(|(p, limits)| AppendReq {
                    topic: &p.topic,
                    limits: *limits,
                    event: &p.event,
                    data: p.data.as_deref(),
                    exclude: p.exclude.map_or(0, ConnId::raw),
                })
                .collect();
            self.store.append_batch(&reqs, now)
        };
        let delivers = self.store.delivers();
        for ((p, _), r) in jobs.into_iter().zip(results) {
            match r {
                Ok(pos) if delivers => self.outs.push(Out::Replied(p.topic, p.reply, pos.offset)),
                Ok(pos) => {
                    let offset = pos.offset;
                    let sp =
                        StoredPub::appended(p.topic, &p.event, p.data.as_deref(), p.exclude, pos);
                    self.outs.push(Out::Pub(sp, p.reply, offset));
                }
                Err(e) => reply_error(&self.hub, &p.topic, p.reply, e),
            }
        }
    }

    /// Reads a topic's history (for the HTTP API or a connection), capped by `max_recover`.
    pub(super) fn history(
        &mut self,
        topic: &str,
        limit: usize,
        since: Option<&Since>,
        until: Option<u64>,
        now: u64,
    ) -> Result<HistoryRead, StoreError> {
        let ns = self
            .hub
            .namespaces
            .history(topic)
            .ok_or_else(|| StoreError::Unavailable("no history on this topic".into()))?;
        let max = self.hub.config.store.max_recover;
        history_read(
            &mut *self.store,
            topic,
            ns.limits(),
            limit,
            since,
            until,
            max,
            now,
        )
    }

    /// The subscribe reply (position, and the recovery when `since` was given) and the
    /// position it covers.
    pub(super) fn subscribe_reply(
        &mut self,
        topic: &str,
        rid: Option<u64>,
        since: Option<&Since>,
        now: u64,
    ) -> (Option<Bytes>, Option<(Arc<str>, u64)>) {
        let Some(ns) = self.hub.namespaces.history(topic) else {
            return (None, None);
        };
        let ask = SubscribeAsk {
            topic,
            limits: ns.limits(),
            rid,
            since,
            max_recover: self.hub.config.store.max_recover,
            budget: reply_budget(&self.hub),
            now,
        };
        subscribe_answer(&mut *self.store, &ask)
    }
}
