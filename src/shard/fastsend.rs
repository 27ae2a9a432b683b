//! `POST /api/v1/send` with `"durable": true` served by the shard that read it, without the API
//! thread: the shard hands the message to the store thread with its connection as the one to
//! answer ([`DurableReply::Http`]); once the batch is committed the store thread sends every
//! shard the batch's durable messages as one [`DurableRun`] (one inbox push and one wake-up per
//! shard per commit, not one per message); each shard delivers them to its connections of the
//! users and adds its counts; the last shard to finish hands the run to the shards whose
//! connections asked, which answer with the summed `delivered` (on one shard: no further hop).
//!
//! Before, the answer went shard → API thread → store thread → API thread, which asked every
//! shard for its count (a oneshot per shard per message) and handed the response back to the
//! shard: five cross-thread hand-offs per send. The answer still comes only after the commit
//! (with redb: the log record's `fdatasync`), so an answered send survives `kill -9`.
//!
//! Every request the shard cannot serve exactly as the API thread would — a wrong key, a
//! throttled address, a body that is not one durable send to one valid user, no store, a full
//! store queue — goes to the API thread, which answers it as before. A batch of such sends
//! (`POST /api/v1/batch`) is served the same way, as one store job: `shard::fastbatch`; so is
//! a run of such sends pipelined on one connection (`shard::pipeline`).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::durable_run::DurableRun;
use super::inbox::ShardMsg;
use super::jobs::{DurableReply, StoreJob, MAX_QUEUED};
use super::ShardState;
use crate::proto::handshake::RequestHead;
use crate::ConnId;

/// The send endpoint's body, borrowed from the request (a string with escapes does not borrow:
/// such a request goes to the API thread).
#[derive(Deserialize)]
struct SendBody<'a> {
    #[serde(borrow, default)]
    user: Option<&'a str>,
    #[serde(default)]
    users: Option<IgnoredAny>,
    #[serde(default)]
    topic: Option<IgnoredAny>,
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    durable: bool,
}

/// The path the shard may answer itself.
pub(super) const SEND_PATH: &str = "/api/v1/send";

/// The store job of `body` when it is one durable send to one valid user (what the shard may
/// serve itself, here and in a batch), answered to `reply`; `None` otherwise.
pub(super) fn durable_send(body: &[u8], reply: DurableReply) -> Option<StoreJob> {
    let b = serde_json::from_slice::<SendBody<'_>>(body).ok()?;
    let (true, Some(user), None, None) = (b.durable, b.user, &b.users, &b.topic) else {
        return None;
    };
    if !crate::policy::auth::valid_user(user) {
        return None;
    }
    Some(StoreJob::InboxPut {
        user: user.into(),
        event: b.event.into(),
        data: b.data.map(|d| Bytes::copy_from_slice(d.get().as_bytes())),
        reply,
    })
}

/// The API thread's answer (status, JSON) to a send the store queue refused: each such send
/// gets it (alone, in a batch, or in a pipelined run).
pub(super) fn refusal(e: crate::HandlerError) -> (u16, String) {
    let body = format!(
        r#"{{"code":"{}","error":{},"success":false}}"#,
        e.code.as_str(),
        serde_json::Value::from(e.message)
    );
    let status = if e.code == crate::ErrorCode::TooMany {
        429
    } else {
        503
    };
    (status, body)
}

impl ShardState {
    /// Takes `head` + `body` here when it is a durable send this shard can hand to the store
    /// itself (see the module docs): true when submitted (the store's batch answers it later).
    /// False: the API thread serves the request, and nothing was done.
    pub(super) fn local_send(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        body: &[u8],
        peer: IpAddr,
    ) -> bool {
        if !self.api_post_ok(head, SEND_PATH, body, peer) {
            return false;
        }
        let Some(job) = durable_send(body, DurableReply::Http(id)) else {
            return false;
        };
        let hub = self.hub.clone();
        // A full or missing queue: the API thread answers with the error it always gave.
        match &hub.links.store {
            Some(tx) if tx.len() < MAX_QUEUED => {}
            _ => return false,
        }
        if let Err(e) = hub.submit_store(job, true) {
            let (status, body) = refusal(e);
            self.answer_json(id, status, body.as_bytes());
        }
        true
    }

    /// A commit's durable messages: written to this shard's connections of their users; the
    /// last shard to get here has every count and sees that the sends are answered.
    pub(super) fn durable_run(&mut self, run: Arc<DurableRun>) {
        for item in &run.items {
            let k = self.deliver_durable(&item.user, item.offset, item.frame.clone());
            if k > 0 {
                item.delivered.fetch_add(k as u32, Ordering::Relaxed);
            }
        }
        // AcqRel: the last shard reads every other shard's counts.
        if run.left.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let hub = self.hub.clone();
        let mut asked = vec![false; hub.inboxes.len()];
        for item in &run.items {
            if let Some(a) = asked.get_mut(item.answer.shard()) {
                *a = true;
            }
        }
        for (shard, _) in asked.iter().enumerate().filter(|(_, a)| **a) {
            if shard == self.index {
                continue;
            }
            hub.inboxes[shard].push(ShardMsg::DurablesCounted(run.clone()));
        }
        if asked.get(self.index).copied().unwrap_or(false) {
            self.durables_counted(&run);
        }
    }

    /// Answers the sends of `run` that this shard's connections made (every shard has counted).
    pub(super) fn durables_counted(&mut self, run: &DurableRun) {
        let here = self.index;
        for item in run.items.iter().filter(|i| i.answer.shard() == here) {
            // The API thread's answer, key order and all (serde_json sorts keys).
            let body = format!(
                r#"{{"data":{{"delivered":{},"message_id":{},"offset":{}}},"success":true}}"#,
                item.delivered.load(Ordering::Relaxed),
                item.id,
                item.offset
            );
            match item.index {
                Some(index) => self.batch_result(item.answer, index, 200, body.as_bytes()),
                None => self.answer_json(item.answer, 200, body.as_bytes()),
            }
        }
    }
}
