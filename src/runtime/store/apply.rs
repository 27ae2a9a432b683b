//! Applying one job of a batch: each [`StoreJob`] other than a publication or a webhook fact
//! (those are gathered into runs, see `run_batch`) is carried out against the store here, and
//! its result queued as an [`Out`] to be emitted once the batch has committed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use serde_json::value::RawValue;

use super::emit::durable_error;
use super::{durable_frame, Out, Sequencer};
use crate::cluster::ControlOp;
use crate::proto::envelope;
use crate::shard::answer::{history_frame, reply_budget};
use crate::shard::inbox::Action;
use crate::shard::jobs::{DurableReply, HistoryTo, StoreJob};
use crate::store::{InboxMessage, MessageStatus, NewMessage, StatusChange, StoreError};

impl Sequencer {
    /// Applies one job, queueing what it answers in `outs` (emitted after the commit).
    pub(super) fn apply(&mut self, job: StoreJob, now: u64) {
        match job {
            StoreJob::Publish(p) => self.publish_run(&mut vec![*p], now),
            StoreJob::Subscribe {
                topic,
                conn,
                rid,
                since,
                held,
            } => {
                let (frame, pos) = self.subscribe_reply(&topic, rid, since.as_ref(), now);
                let action = Action::Recovered {
                    topic,
                    frame,
                    held,
                    pos,
                };
                self.outs.push(Out::Subscribed(conn, rid, action));
            }
            StoreJob::History {
                topic,
                limit,
                since,
                until,
                to,
            } => {
                let read = self.history(&topic, limit, since.as_ref(), until, now);
                match (to, read) {
                    (HistoryTo::Api(tx), Ok(r)) => self.outs.push(Out::History(tx, r)),
                    (HistoryTo::Api(tx), Err(e)) => {
                        let _ = tx.send(Err(e));
                    }
                    (HistoryTo::Conn(conn, rid), r) => {
                        let frame = history_frame(rid, &topic, r, reply_budget(&self.hub));
                        self.outs.push(Out::Conn(conn, Action::Send(frame)));
                    }
                }
            }
            StoreJob::InboxPut {
                user,
                event,
                data,
                reply,
            } => {
                let msg = NewMessage {
                    topic: None,
                    event: &event,
                    data: data.as_deref(),
                };
                self.lists.remove(&user);
                let r = self
                    .store
                    .inbox_put(&user, msg, self.hub.config.inbox.limits(), now);
                // A remote store's inbox epoch changes when Redis lost its data, seen by the
                // very put that restarted the offsets.
                if r.is_ok() {
                    self.inbox_epoch = self.store.inbox_epoch();
                }
                self.put_done(user, r, reply);
            }
            StoreJob::InboxSync { user, conn, gone } => {
                let stats = &self.hub.store_stats;
                if gone.load(Ordering::Relaxed) {
                    stats.syncs_skipped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let counter = if self.lists.contains_key(&user) {
                    &stats.syncs_shared
                } else {
                    &stats.syncs_read
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let frames = self.inbox_frames(&user, now);
                self.outs
                    .push(Out::Conn(conn, Action::InboxSync(user, frames)));
            }
            StoreJob::InboxResync { user, shard } => {
                let frames = self.inbox_frames(&user, now);
                self.outs.push(Out::Resync(shard, user, frames));
            }
            StoreJob::Ack {
                user,
                offset,
                conn,
                rid,
            } => {
                self.lists.remove(&user);
                let topic = format!("user:{user}");
                match self.store.inbox_ack(&user, offset) {
                    Ok(change) => {
                        if let Some(c) = change {
                            self.outs.push(Out::Gone(vec![c]));
                        }
                        if let Some(rid) = rid {
                            let frame = envelope::reply(rid, &topic, None);
                            self.outs.push(Out::Conn(conn, Action::Send(frame)));
                        }
                    }
                    Err(StoreError::Unavailable(why)) => {
                        // The store did not answer (it may even apply the ack later): the ack
                        // is kept and retried until the store confirms it, so it is accepted.
                        tracing::warn!(error = %why, user = &*user, offset, "store: an ack is kept for a retry");
                        self.acks.keep(user, offset, &self.hub.store_stats);
                        if let Some(rid) = rid {
                            let frame = envelope::reply(rid, &topic, None);
                            self.outs.push(Out::Conn(conn, Action::Send(frame)));
                        }
                    }
                    Err(e) => {
                        let frame = envelope::error(rid, &topic, e.code(), &e.to_string());
                        self.outs.push(Out::Conn(conn, Action::Send(frame)));
                    }
                }
            }
            StoreJob::Delivered {
                user,
                offsets,
                times,
            } => {
                for offset in offsets {
                    *self.delivered.entry((user.clone(), offset)).or_default() += times;
                }
            }
            StoreJob::Status { id, reply } => match self.store.status(id) {
                Ok(info) => self.outs.push(Out::Status(reply, info)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            StoreJob::Inbox { user, reply } => {
                let listed = self.store.inbox_list(&user, now).and_then(|list| {
                    list.into_iter()
                        .map(|m| {
                            let st = self
                                .store
                                .status(m.id)?
                                .map_or(MessageStatus::Pending, |i| i.status);
                            Ok((m, st))
                        })
                        .collect::<Result<Vec<_>, StoreError>>()
                });
                match listed {
                    Ok(list) => self.outs.push(Out::Inbox(reply, list)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            // Flattened by `run_batch` before anything is applied.
            StoreJob::Many(jobs) => {
                for job in jobs {
                    self.apply(job, now);
                }
            }
            StoreJob::Positions { shard, topics } => self.check_positions(vec![(shard, topics)]),
            StoreJob::Webhook(f) => self.webhook_fact(f, now),
            StoreJob::OutboxClaim { max, lease, reply } => {
                match self.store.outbox_claim(max, lease, now) {
                    Ok(list) => self.outs.push(Out::Claimed(reply, list)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            StoreJob::OutboxDone { ids, reply } => match self.store.outbox_done(&ids) {
                Ok(()) => {
                    self.outs.push(Out::OutboxDone(reply));
                    self.outs.push(Out::OutboxChanged);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            StoreJob::SioPut {
                pid,
                session,
                expires_ms,
            } => {
                tracing::debug!(pid = &*pid, "store: Socket.IO session kept");
                match self.store.sio_session_put(&pid, &session, expires_ms) {
                    Ok(()) => self.outs.push(Out::Written),
                    Err(e) => tracing::warn!(error = %e, "store: a Socket.IO session was not kept"),
                }
            }
            StoreJob::SioTake { conn, nsp, resume } => {
                let session = self
                    .store
                    .sio_session_take(&resume.pid, now)
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "store: a Socket.IO session could not be read");
                        None
                    });
                tracing::debug!(
                    pid = &*resume.pid,
                    found = session.is_some(),
                    "store: Socket.IO session taken"
                );
                self.outs.push(Out::Conn(
                    conn,
                    Action::SioSession {
                        nsp,
                        resume,
                        session,
                    },
                ));
            }
            StoreJob::Stop => {}
        }
    }
}

/// A durable send gathered into a run of puts (see [`Sequencer::put_run`]).
pub(super) struct PutJob {
    pub(super) user: Arc<str>,
    pub(super) event: Box<str>,
    pub(super) data: Option<Bytes>,
    pub(super) reply: DurableReply,
}

impl Sequencer {
    /// Stores a run of consecutive durable sends with one call to the store (redb opens its
    /// table once for them), then answers each as [`apply`](Self::apply) would. Runs are
    /// gathered only for a local store, whose inbox epoch cannot change within the call (a
    /// Redis put can start a new one).
    pub(super) fn put_run(&mut self, run: &mut Vec<PutJob>, now: u64) {
        if run.is_empty() {
            return;
        }
        let mut results = Vec::with_capacity(run.len());
        {
            let puts: Vec<(&str, NewMessage<'_>)> = run
                .iter()
                .map(|p| {
                    let msg = NewMessage {
                        topic: None,
                        event: &p.event,
                        data: p.data.as_deref(),
                    };
                    (&*p.user, msg)
                })
                .collect();
            for (user, _) in &puts {
                self.lists.remove(*user);
            }
            let limits = self.hub.config.inbox.limits();
            self.store.inbox_put_many(&puts, limits, now, &mut results);
        }
        // The epoch is fixed within the call, but the call may have reopened the store.
        if results.iter().any(Result::is_ok) {
            self.inbox_epoch = self.store.inbox_epoch();
        }
        for (p, r) in run.drain(..).zip(results) {
            self.put_done(p.user, r, p.reply);
        }
    }

    /// Queues what a stored (or failed) durable send answers: its delivery, its reply, the
    /// messages it pushed out of a full inbox.
    fn put_done(
        &mut self,
        user: Arc<str>,
        r: Result<(InboxMessage, Vec<StatusChange>), StoreError>,
        reply: DurableReply,
    ) {
        let (m, dropped) = match r {
            Ok(ok) => ok,
            Err(e) => return durable_error(&self.hub, reply, e),
        };
        if !dropped.is_empty() {
            self.outs.push(Out::Gone(dropped));
        }
        let frame = durable_frame(&user, &m, &self.inbox_epoch);
        let wire = self.hub.cluster.remote_store.then(|| ControlOp::Durable {
            user: user.to_string(),
            offset: m.offset,
            topic: m.topic.as_deref().map(str::to_string),
            event: m.event.to_string(),
            data: m
                .data
                .as_deref()
                .and_then(|d| RawValue::from_string(String::from_utf8_lossy(d).into_owned()).ok()),
            epoch: self.inbox_epoch.to_string(),
        });
        self.outs.push(Out::Durable {
            user,
            offset: m.offset,
            frame,
            id: m.id,
            reply,
            wire,
        });
    }
}
