//! A run of durable sends pipelined on one kept-alive connection, served together: when a
//! durable send the shard serves itself (`shard::fastsend`) has further complete requests
//! behind it in the input, each one more such send, the whole run goes to the store thread as
//! one job (one commit, gathered as `shard::fastbatch` gathers a batch's sends) and is
//! answered, once every result is in, with one response per request, in order, each byte for
//! byte the response that send gets alone, all in one write.
//!
//! Served one at a time, a pipelined send waited for the commit of the one before it, so a
//! connection's sends were committed one per commit however many it had in flight; now the
//! sends a connection has written together are committed together.
//!
//! The run stops at the first request that is not such a send (another route, a wrong key, a
//! throttled address, a body the shard would hand to the API thread, `Connection: close`, an
//! HTTP version other than the first's), at one that is not complete in the input yet, and at
//! the API's 1,000 commands per batch. That request and the ones after it wait in the input,
//! as any pipelined request does (within the same limit), and are served after the run's
//! answers. A send the store could not take answers its error in its own place.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::fastbatch::MAX_COMMANDS;
use super::fastsend::{durable_send, SEND_PATH};
use super::jobs::DurableReply;
use super::{flag, ShardState};
use crate::proto::handshake::{self as http, RequestHead};
use crate::ConnId;

impl ShardState {
    /// Takes the durable send `head` + `body` (the request in flight on `id`) together with
    /// the durable sends pipelined right behind it in `rest`, as one store job: `Some(bytes of
    /// rest taken)` when there was at least one more and the run was handed to the store.
    /// `None`: nothing was done, the request is served alone as before.
    pub(super) fn local_run(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        body: &[u8],
        rest: &[u8],
    ) -> Option<usize> {
        // The common case, nothing behind the request: not a run, and nothing parsed twice.
        if rest.is_empty() || head.method != "POST" || head.path != SEND_PATH {
            return None;
        }
        let hub = self.hub.clone();
        let c = self.conn_mut(id)?;
        if !c.has(flag::KEEP_ALIVE) || hub.is_stopping() {
            return None;
        }
        let (peer, http10) = (c.remote.ip(), c.has(flag::HTTP10));
        if self.batches.contains_key(&id) {
            return None;
        }
        let limits = (
            hub.config.guard.max_handshake_bytes,
            hub.config.max_message_size,
        );
        // Whether one more send follows, before parsing this one's body.
        next_send(rest, limits, http10)?;
        if !self.api_post_ok(head, SEND_PATH, body, peer) {
            return None;
        }
        let mut jobs = vec![durable_send(body, DurableReply::HttpBatch(id, 0))?];
        let mut used = 0;
        while jobs.len() < MAX_COMMANDS {
            let tail = &rest[used..];
            let Some((h, range)) = next_send(tail, limits, http10) else {
                break;
            };
            let b = &tail[range.clone()];
            if !self.api_post_ok(&h, SEND_PATH, b, peer) {
                break;
            }
            let Some(job) = durable_send(b, DurableReply::HttpBatch(id, jobs.len() as u32)) else {
                break;
            };
            jobs.push(job);
            used += range.end;
        }
        if jobs.len() < 2 {
            return None;
        }
        self.submit_gathered(id, jobs, true).then_some(used)
    }

    /// Answers the run pending on `id` (every result in, in request order): each send's
    /// response as it would be alone, all queued as one, then the input that waited.
    pub(super) fn answer_run(&mut self, id: ConnId, results: impl Iterator<Item = (u16, Bytes)>) {
        let mut out = Vec::new();
        for (status, json) in results {
            let Some(r) = self.json_response(id, status, &json) else {
                return;
            };
            // The first response's status is counted with the connection's answer.
            if status >= 400 && !out.is_empty() {
                self.stats().handshake(status, Duration::ZERO);
            }
            out.extend_from_slice(&r);
        }
        self.http_response(id, Bytes::from(out));
    }
}

/// The request at the start of `rest` when it is a `POST` to the send endpoint, complete
/// (head and `Content-Length` body), kept alive with the same HTTP version as the run: its head
/// and where its body is in `rest` (which ends where the request does). `limits`: the largest
/// head and body.
fn next_send(
    rest: &[u8],
    limits: (usize, usize),
    http10: bool,
) -> Option<(RequestHead, Range<usize>)> {
    let window = &rest[..rest.len().min(limits.0)];
    let (head, n) = http::parse_head(window, limits.0).ok()??;
    if head.method != "POST"
        || head.path != SEND_PATH
        || !head.wants_keep_alive()
        || (head.version == 0) != http10
    {
        return None;
    }
    let need = super::request::body_len(&head, limits.1).ok()?;
    let end = n.checked_add(need)?;
    (need > 0 && rest.len() >= end).then_some((head, n..end))
}
