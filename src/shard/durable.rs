//! Durable user messages on a shard: delivery to the user's local connections, acks, retries
//! after `ack_timeout`, and the inbox sync of a new connection.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::jobs::StoreJob;
use super::{ShardState, Stamp};
use crate::proto::error::ErrorCode;
use crate::ConnId;

/// A durable message written to local connections, waiting for an ack.
pub(crate) struct PendingDurable {
    frame: Bytes,
    sent: Stamp,
    attempts: u32,
}

impl PendingDurable {
    pub(super) fn new(frame: Bytes, sent: Stamp, attempts: u32) -> Self {
        PendingDurable {
            frame,
            sent,
            attempts,
        }
    }

    /// Written (again) now: its ack is due an `ack_timeout` from now.
    pub(super) fn written(&mut self, now: Stamp) {
        self.attempts = self.attempts.max(1);
        self.sent = now;
    }

    pub(super) fn frame(&self) -> Bytes {
        self.frame.clone()
    }
}

#[derive(Deserialize)]
pub(super) struct AckData {
    pub(super) offset: u64,
}

/// The held-topic marker for "this connection's user's durable messages".
pub(super) const INBOX: &str = "";

impl ShardState {
    /// `ack` of a durable message, from any connection of its user.
    pub(super) fn client_ack(
        &mut self,
        id: ConnId,
        topic: &str,
        req: Option<u64>,
        data: Option<&RawValue>,
    ) {
        let Some(user) = self.conn_mut(id).and_then(|c| c.user.clone()) else {
            return self.error(
                id,
                req,
                topic,
                ErrorCode::Forbidden,
                "ack needs an authenticated user",
            );
        };
        if topic.strip_prefix(crate::policy::security::PRIVATE_PREFIX) != Some(&*user) {
            return self.error(
                id,
                req,
                topic,
                ErrorCode::Forbidden,
                "ack is for your own user:<id> topic",
            );
        }
        let offset = match data.map(|d| serde_json::from_str::<AckData>(d.get())) {
            Some(Ok(a)) => a.offset,
            _ => {
                let msg = "ack needs data {\"offset\": N}";
                return self.error(id, req, topic, ErrorCode::BadRequest, msg);
            }
        };
        if let Some(m) = self.durable.get_mut(&user) {
            m.remove(&offset);
        }
        let job = StoreJob::Ack {
            user,
            offset,
            conn: id,
            rid: req,
        };
        if let Err(e) = self.hub.submit_store(job, false) {
            self.error(id, req, topic, e.code, &e.message);
        }
    }

    /// A new durable message: written to the user's local connections now.
    pub(super) fn deliver_durable(&mut self, user: &Arc<str>, offset: u64, frame: Bytes) -> usize {
        if self
            .durable
            .get(user)
            .is_some_and(|m| m.contains_key(&offset))
        {
            // A cluster's late copy of a message already listed by an inbox sync.
            return 0;
        }
        let k = self.write_durable(user, &frame);
        // A connection of the user waiting for (or still writing) its inbox sync: keep the
        // message so the sync adds it if the list misses it.
        let waiting = k == 0
            && self
                .users
                .get(user)
                .is_some_and(|ids| ids.iter().any(|&c| self.is_held(c, INBOX)));
        if k > 0 || waiting {
            let now = self.stamp;
            self.durable.entry(user.clone()).or_default().insert(
                offset,
                PendingDurable {
                    frame,
                    sent: now,
                    attempts: u32::from(k > 0),
                },
            );
            if k > 0 {
                self.report_delivered(user, offset, k as u32);
            }
        }
        k
    }

    fn write_durable(&mut self, user: &Arc<str>, frame: &Bytes) -> usize {
        let Some(ids) = self.users.get(user).cloned() else {
            return 0;
        };
        let mut k = 0;
        for id in ids {
            let live = self.conn_mut(id).is_some_and(|c| {
                c.closing.is_none()
                    && match c.phase {
                        super::Phase::Ws(super::ConnKind::PubSub) => true,
                        // Socket.IO: once a namespace is connected (an emit with an ack).
                        // Not a bare Engine.IO one: it has no ack to answer with.
                        super::Phase::Ws(super::ConnKind::SocketIo) => {
                            c.has(super::flag::SIO_NSP) && !c.eio_bare()
                        }
                        _ => false,
                    }
            });
            if live && !self.is_held(id, INBOX) {
                self.enqueue(id, frame.clone());
                k += 1;
            }
        }
        k
    }

    fn report_delivered(&self, user: &Arc<str>, offset: u64, times: u32) {
        self.report_delivered_many(user, vec![offset], times);
    }

    /// Messages that left their inboxes: no more retries.
    pub(super) fn inbox_gone(&mut self, list: &[(Arc<str>, u64)]) {
        for (user, offset) in list {
            if let Some(m) = self.durable.get_mut(user) {
                m.remove(offset);
                if m.is_empty() {
                    self.durable.remove(user);
                }
            }
        }
    }

    /// Writes again, in offset order, the durable messages not acknowledged within
    /// `ack_timeout`, up to `max_attempts`; users gone from this shard are forgotten (their
    /// next connection gets everything from the store).
    pub(super) fn retry_durable(&mut self) {
        let cfg = self.hub.config.inbox;
        let now = self.stamp;
        let mut resend: Vec<(Arc<str>, u64, Bytes)> = Vec::new();
        let users = &self.users;
        self.durable.retain(|user, msgs| {
            if !users.contains_key(user) {
                return false;
            }
            msgs.retain(|offset, p| {
                if now.since(p.sent) < cfg.ack_timeout {
                    return true;
                }
                if p.attempts >= cfg.max_attempts {
                    return false;
                }
                p.attempts += 1;
                p.sent = now;
                resend.push((user.clone(), *offset, p.frame.clone()));
                true
            });
            !msgs.is_empty()
        });
        for (user, offset, frame) in resend {
            let k = self.write_durable(&user, &frame);
            if k > 0 {
                self.report_delivered(&user, offset, k as u32);
            }
        }
    }
}
