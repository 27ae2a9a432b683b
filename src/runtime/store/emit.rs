//! The second half of a batch: showing its results once committed (`emit`), or refusing them
//! when the commit failed (`fail`); and the JSON the store thread writes.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{Out, PubReply, Sequencer};
use crate::cluster::ControlOp;
use crate::http::response::ApiError;
use crate::proto::envelope;
use crate::proto::error::ErrorCode;
use crate::shard::durable_run::DurableRun;
use crate::shard::inbox::{Action, ApiOp, ShardMsg, StoredPub};
use crate::shard::jobs::DurableReply;
use crate::shard::shared::HubShared;
use crate::store::{InboxMessage, StoreError};
use crate::ConnId;

impl Sequencer {
    /// Emits the batch's results in order: runs of publications go to every shard as one
    /// message.
    pub(super) fn emit(&mut self) {
        let outs = std::mem::take(&mut self.outs);
        let mut changed = false;
        let mut run: Vec<StoredPub> = Vec::new();
        let hub = self.hub.clone();
        // Durable sends answered on their shards, gathered like `run`: one push per shard.
        let mut sends = DurableRun::new(hub.inboxes.len());
        let flush_sends = |sends: &mut DurableRun| {
            if sends.is_empty() {
                return;
            }
            let batch = Arc::new(std::mem::replace(sends, DurableRun::new(hub.inboxes.len())));
            for inbox in hub.inboxes.iter() {
                inbox.push(ShardMsg::Durables(batch.clone()));
            }
        };
        let flush_pubs = |run: &mut Vec<StoredPub>| {
            if run.is_empty() {
                return;
            }
            let batch: Arc<[StoredPub]> = std::mem::take(run).into();
            for inbox in hub.inboxes.iter() {
                inbox.push(ShardMsg::Stored(batch.clone()));
            }
        };
        // Everything gathered goes out before the next result, which keeps the batch's order.
        let flush = |run: &mut Vec<StoredPub>, sends: &mut DurableRun| {
            flush_pubs(run);
            flush_sends(sends);
        };
        for out in outs {
            if !matches!(
                out,
                Out::Durable {
                    reply: DurableReply::Http(_) | DurableReply::HttpBatch(..),
                    ..
                }
            ) {
                flush_sends(&mut sends);
            }
            match out {
                Out::Pub(sp, PubReply::None, _) => run.push(sp),
                Out::Replied(_, PubReply::None, _) => {}
                Out::Replied(topic, PubReply::Conn(conn, rid), offset) => {
                    flush_pubs(&mut run);
                    let frame = envelope::offset_reply(rid, &topic, offset);
                    push_conn(&hub, conn, Action::Send(frame));
                }
                Out::Replied(_, PubReply::Api(tx), offset) => {
                    // Delivered through the broker on every node: nothing to count here.
                    let _ = tx.send(Ok((offset, Vec::new())));
                }
                Out::Pub(sp, PubReply::Conn(conn, rid), offset) => {
                    let frame = envelope::offset_reply(rid, &sp.topic, offset);
                    run.push(sp);
                    flush_pubs(&mut run);
                    push_conn(&hub, conn, Action::Send(frame));
                }
                Out::Pub(sp, PubReply::Api(tx), offset) => {
                    flush_pubs(&mut run);
                    let mut waits = Vec::with_capacity(hub.inboxes.len());
                    for inbox in hub.inboxes.iter() {
                        let (t, r) = oneshot::channel();
                        inbox.push(ShardMsg::Api(ApiOp::Stored(sp.clone()), t));
                        waits.push(r);
                    }
                    let _ = tx.send(Ok((offset, waits)));
                }
                Out::Conn(conn, action) | Out::Subscribed(conn, _, action) => {
                    flush_pubs(&mut run);
                    push_conn(&hub, conn, action);
                }
                Out::History(tx, r) => {
                    let _ = tx.send(Ok(r));
                }
                Out::Resync(shard, user, frames) => {
                    flush_pubs(&mut run);
                    if let Some(inbox) = hub.inboxes.get(shard) {
                        inbox.push(ShardMsg::InboxResync(user, frames));
                    }
                }
                Out::Durable {
                    user,
                    offset,
                    frame,
                    id,
                    reply: reply @ (DurableReply::Http(_) | DurableReply::HttpBatch(..)),
                    wire,
                } => {
                    flush_pubs(&mut run);
                    if let Some(op) = wire {
                        hub.cluster.broker.control(op);
                    }
                    let answer = match reply {
                        DurableReply::HttpBatch(conn, index) => (conn, Some(index)),
                        DurableReply::Http(conn) => (conn, None),
                        DurableReply::Api(_) => unreachable!("not in this arm's pattern"),
                    };
                    sends.push(user, offset, id, frame, answer);
                }
                Out::Durable {
                    user,
                    offset,
                    frame,
                    id,
                    reply,
                    wire,
                } => {
                    flush_pubs(&mut run);
                    if let Some(op) = wire {
                        hub.cluster.broker.control(op);
                    }
                    let mut waits = Vec::with_capacity(hub.inboxes.len());
                    for inbox in hub.inboxes.iter() {
                        let (t, r) = oneshot::channel();
                        let op = ApiOp::Durable {
                            user: user.clone(),
                            offset,
                            frame: frame.clone(),
                        };
                        inbox.push(ShardMsg::Api(op, t));
                        waits.push(r);
                    }
                    if let DurableReply::Api(tx) = reply {
                        let _ = tx.send(Ok((id, (offset, waits))));
                    }
                }
                Out::Gone(changes) => {
                    flush_pubs(&mut run);
                    if let Some(hook) = &hub.hooks.on_delivery {
                        for c in &changes {
                            let _ =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(c)));
                        }
                    }
                    if hub.cluster.remote_store {
                        let gone = changes
                            .iter()
                            .map(|c| (c.user.to_string(), c.offset))
                            .collect();
                        hub.cluster.broker.control(ControlOp::InboxGone { gone });
                    }
                    let gone: Arc<[(Arc<str>, u64)]> = changes
                        .into_iter()
                        .map(|c| (Arc::from(&*c.user), c.offset))
                        .collect();
                    for inbox in hub.inboxes.iter() {
                        inbox.push(ShardMsg::InboxGone(gone.clone()));
                    }
                }
                Out::Status(tx, info) => {
                    let _ = tx.send(Ok(info));
                }
                Out::Inbox(tx, list) => {
                    let _ = tx.send(Ok(list));
                }
                Out::OutboxChanged => changed = true,
                Out::Written => {}
                Out::Claimed(tx, list) => {
                    let _ = tx.send(Ok(list));
                }
                Out::OutboxDone(tx) => {
                    let _ = tx.send(Ok(()));
                }
            }
        }
        flush(&mut run, &mut sends);
        if changed {
            self.webhook_committed();
        }
    }

    /// The commit failed: nothing of the batch is shown; everyone waiting gets the error.
    pub(super) fn fail(&mut self, e: &StoreError) {
        tracing::error!(error = %e, "store commit failed: the batch's publications and durable messages are refused");
        let hub = self.hub.clone();
        for out in std::mem::take(&mut self.outs) {
            match out {
                Out::Pub(sp, reply, _) => reply_error(&hub, &sp.topic, reply, clone_err(e)),
                Out::Replied(topic, reply, _) => reply_error(&hub, &topic, reply, clone_err(e)),
                Out::Durable { reply, .. } => durable_error(&hub, reply, clone_err(e)),
                Out::Subscribed(conn, rid, Action::Recovered { topic, held, .. }) => {
                    // Release the connection's held topic with an error instead of a position.
                    let frame = Some(envelope::error(
                        rid,
                        &topic,
                        ErrorCode::Internal,
                        &e.to_string(),
                    ));
                    let action = Action::Recovered {
                        topic,
                        frame,
                        held,
                        pos: None,
                    };
                    push_conn(&hub, conn, action);
                }
                Out::Subscribed(conn, _, action) => push_conn(&hub, conn, action),
                Out::Conn(conn, Action::InboxSync(user, _)) => {
                    push_conn(&hub, conn, Action::InboxSync(user, Arc::from([])));
                }
                Out::Resync(..) => {}
                Out::Conn(conn, action) => push_conn(&hub, conn, action),
                Out::History(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Status(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Inbox(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Claimed(tx, _) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::OutboxDone(tx) => {
                    let _ = tx.send(Err(clone_err(e)));
                }
                Out::Gone(_) | Out::OutboxChanged | Out::Written => {}
            }
        }
    }
}

pub(super) fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io(m) => StoreError::Io(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
    }
}

pub(super) fn reply_error(hub: &HubShared, topic: &str, reply: PubReply, e: StoreError) {
    match reply {
        PubReply::None => tracing::warn!(error = %e, topic, "store: publication refused"),
        PubReply::Conn(conn, rid) => {
            let frame = envelope::error(Some(rid), topic, e.code(), &e.to_string());
            push_conn(hub, conn, Action::Send(frame));
        }
        PubReply::Api(tx) => {
            let _ = tx.send(Err(e));
        }
    }
}

/// A durable send that was not stored: its waiter gets the error, as the API answers it.
pub(super) fn durable_error(hub: &HubShared, reply: DurableReply, e: StoreError) {
    match reply {
        DurableReply::Api(tx) => {
            let _ = tx.send(Err(e));
        }
        DurableReply::Http(conn) => {
            let e = ApiError::from_store(e);
            let body = serde_json::json!({"success": false, "code": e.code, "error": e.message});
            if let Some(inbox) = hub.inboxes.get(conn.shard()) {
                let body = Bytes::from(body.to_string());
                inbox.push(ShardMsg::ApiAnswer(conn, e.status, body));
            }
        }
        DurableReply::HttpBatch(conn, index) => {
            // The batch's result for this command, as the API thread's batch gives it.
            let e = ApiError::from_store(e);
            let body = serde_json::json!({"success": false, "code": e.code, "error": e.message});
            if let Some(inbox) = hub.inboxes.get(conn.shard()) {
                let body = Bytes::from(body.to_string());
                inbox.push(ShardMsg::BatchResult(conn, index, e.status, body));
            }
        }
    }
}

pub(super) fn push_conn(hub: &HubShared, conn: ConnId, action: Action) {
    if let Some(inbox) = hub.inboxes.get(conn.shard()) {
        inbox.push(ShardMsg::Conn(conn, action));
    }
}

/// The frame of a durable message:
/// `{"topic":"user:U","event":E,"data":D,"offset":O,"epoch":X,"ack":true}`.
pub(crate) fn durable_frame(user: &str, m: &InboxMessage, epoch: &str) -> Bytes {
    let topic = match &m.topic {
        Some(t) => t.to_string(),
        None => format!("user:{user}"),
    };
    envelope::durable(&topic, &m.event, m.data.as_deref(), m.offset, epoch)
}
