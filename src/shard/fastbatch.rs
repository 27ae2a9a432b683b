//! `POST /api/v1/batch` whose commands are all durable sends, each to one valid user, served by
//! the shard that read it (as `shard::fastsend` serves one): the sends go to the store thread as
//! one job (one commit), each answering this connection as its command's index; the shard
//! gathers the results and answers the request, in the commands' order, once all are in.
//!
//! The answer is the API thread's, byte for byte: `{"data":{"results":[...]},"success":true}`
//! with each send's `{"data":{"delivered":N,"message_id":I,"offset":O},"success":true}` or its
//! error. Any other batch (another method, a send the shard would not serve alone, more than
//! the API's 1,000 commands, a full store queue) goes to the API thread, which answers it as
//! before. One request per connection is served at a time (pipelined ones wait), so a
//! connection has at most one batch pending. The gathering is shared with runs of pipelined
//! durable sends (`shard::pipeline`), which are one store job too.

use std::net::IpAddr;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::fastsend::{durable_send, refusal};
use super::jobs::{DurableReply, StoreJob, MAX_QUEUED};
use super::ShardState;
use crate::proto::handshake::RequestHead;
use crate::ConnId;

/// The batch endpoint.
const BATCH_PATH: &str = "/api/v1/batch";

/// The API thread's limit on commands per batch (`http::api`), kept here: a longer batch goes
/// there for its error.
pub(super) const MAX_COMMANDS: usize = 1000;

/// Sends handed to the store as one job, waiting for their results: a batch's commands, or a
/// run of pipelined sends (`shard::pipeline`), which is answered as that many responses.
pub(super) struct Pending {
    /// Each send's result (status, JSON), once in.
    results: Vec<Option<(u16, Bytes)>>,
    /// Results still to come.
    left: usize,
    /// A pipelined run (one response per send) rather than one batch.
    pipelined: bool,
}

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    commands: Vec<Command<'a>>,
}

#[derive(Deserialize)]
struct Command<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    params: &'a RawValue,
}

impl ShardState {
    /// Takes the request here when it is a batch of durable sends this shard can hand to the
    /// store itself (see the module docs): true when submitted. False: the API thread serves
    /// it, and nothing was done.
    pub(super) fn local_batch(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        body: &[u8],
        peer: IpAddr,
    ) -> bool {
        if !self.api_post_ok(head, BATCH_PATH, body, peer) {
            return false;
        }
        let Ok(batch) = serde_json::from_slice::<Batch<'_>>(body) else {
            return false;
        };
        let n = batch.commands.len();
        if !(2..=MAX_COMMANDS).contains(&n) || self.batches.contains_key(&id) {
            return false;
        }
        let mut jobs = Vec::with_capacity(n);
        for (i, c) in batch.commands.iter().enumerate() {
            let reply = DurableReply::HttpBatch(id, i as u32);
            match (c.method, durable_send(c.params.get().as_bytes(), reply)) {
                ("send", Some(job)) => jobs.push(job),
                _ => return false,
            }
        }
        self.submit_gathered(id, jobs, false)
    }

    /// Hands `jobs` (each answering `id` with its index) to the store as one job (one commit)
    /// and gathers their results for `id` (`pipelined`: as one response per send, else as one
    /// batch). False when the store queue is full or missing: nothing was done. A refused job
    /// answers every send with the error, as the API thread does.
    pub(super) fn submit_gathered(
        &mut self,
        id: ConnId,
        jobs: Vec<StoreJob>,
        pipelined: bool,
    ) -> bool {
        let hub = self.hub.clone();
        match &hub.links.store {
            Some(tx) if tx.len() < MAX_QUEUED => {}
            _ => return false,
        }
        let n = jobs.len();
        let pending = Pending {
            results: vec![None; n],
            left: n,
            pipelined,
        };
        self.batches.insert(id, pending);
        if let Err(e) = hub.submit_store(StoreJob::Many(jobs), true) {
            let (status, body) = refusal(e);
            for i in 0..n {
                self.batch_result(id, i as u32, status, body.as_bytes());
            }
        }
        true
    }

    /// Result `index` (`status`, JSON) of the sends pending on `id`; the answer once it was
    /// the last.
    pub(super) fn batch_result(&mut self, id: ConnId, index: u32, status: u16, json: &[u8]) {
        let Some(p) = self.batches.get_mut(&id) else {
            return;
        };
        let Some(slot) = p.results.get_mut(index as usize) else {
            return;
        };
        if slot.is_none() {
            *slot = Some((status, Bytes::copy_from_slice(json)));
            p.left -= 1;
        }
        if p.left > 0 {
            return;
        }
        let Some(p) = self.batches.remove(&id) else {
            return;
        };
        let results = p.results.into_iter().flatten();
        if p.pipelined {
            self.answer_run(id, results);
            return;
        }
        // As the API thread's batch: the request succeeds, each command has its result.
        let results: Vec<(u16, Bytes)> = results.collect();
        let len: usize = results.iter().map(|r| r.1.len() + 1).sum();
        let mut body = Vec::with_capacity(len + 48);
        body.extend_from_slice(br#"{"data":{"results":["#);
        for (i, (_, r)) in results.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.extend_from_slice(br#"]},"success":true}"#);
        self.answer_json(id, 200, &body);
    }
}
