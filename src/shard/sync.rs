//! The inbox sync of a new connection, written page by page, and the resync of every local
//! user's inbox after the cluster's control channel came back.
//!
//! A user's unacknowledged messages can outweigh the connection's outbound queue (1,000 × 1 KiB
//! against 256 KiB): the list is written in pages of half the queue, the next page when writes
//! drained the queue below that, so a long inbox never cuts its reader as a slow consumer. Until
//! the last page the connection stays held for durable messages (`INBOX`): new ones wait in the
//! shard's pending map and follow the list, in order. The list itself is shared: every
//! connection of the user synced from the same store batch points at one copy.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::durable::PendingDurable;
use super::durable::INBOX;
use super::jobs::{InboxFrames, StoreJob};
use super::ShardState;
use crate::ConnId;

/// A connection's inbox sync in progress.
pub(crate) struct InboxCursor {
    /// Set when the connection closes: the store skips a sync nobody waits for.
    gone: Arc<AtomicBool>,
    /// The store's answer and how much of it is written.
    list: Option<(Arc<str>, InboxFrames, usize)>,
}

impl ShardState {
    /// Asks the store for `user`'s unacknowledged messages for the new connection `id`, which
    /// is held for durable messages until the last of them is written. A store whose queue is
    /// full refuses: the connection is closed with 1013 (try again later) rather than left
    /// without its messages or queuing without bound.
    pub(super) fn start_sync(&mut self, id: ConnId, user: Arc<str>) {
        self.hold(id, INBOX.into());
        let gone = Arc::new(AtomicBool::new(false));
        let job = StoreJob::InboxSync {
            user,
            conn: id,
            gone: gone.clone(),
        };
        if let Err(e) = self.hub.submit_store(job, true) {
            self.release(id, INBOX);
            self.hub.store_stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(conn = %id, error = %e.message, "inbox sync refused: closing with 1013");
            self.close(id, 1013, "the store is busy: reconnect later");
            return;
        }
        self.syncs.insert(id, InboxCursor { gone, list: None });
    }

    /// The connection closed: its sync, if any, is abandoned.
    pub(super) fn cancel_sync(&mut self, id: ConnId) {
        if let Some(c) = self.syncs.remove(&id) {
            c.gone.store(true, Ordering::Relaxed);
        }
    }

    /// The store's list of unacknowledged messages for a new connection.
    pub(super) fn inbox_sync(&mut self, id: ConnId, user: &Arc<str>, frames: InboxFrames) {
        if self.conn_mut(id).is_none_or(|c| c.closing.is_some()) {
            self.cancel_sync(id);
            self.release(id, INBOX);
            return;
        }
        let gone = match self.syncs.remove(&id) {
            Some(c) => c.gone,
            None => Arc::new(AtomicBool::new(false)),
        };
        let list = Some((user.clone(), frames, 0));
        self.syncs.insert(id, InboxCursor { gone, list });
        self.sync_page(id);
    }

    /// Writes were made on `id`: the next page of its sync, if one is due.
    pub(super) fn sync_resume(&mut self, id: ConnId) {
        if self.syncs.get(&id).is_some_and(|c| c.list.is_some()) {
            self.sync_page(id);
        }
    }

    /// Writes the next page of `id`'s sync (what fits in half the outbound queue, at least
    /// one message); after the last, ends the hold and writes what arrived meanwhile.
    fn sync_page(&mut self, id: ConnId) {
        let budget = self.hub.config.outbound_queue / 2;
        let Some(queued) = self
            .conn_mut(id)
            .filter(|c| c.closing.is_none())
            .map(|c| c.queued)
        else {
            return self.cancel_sync(id);
        };
        let Some((user, frames, mut pos)) = self.syncs.get(&id).and_then(|c| c.list.clone()) else {
            return;
        };
        let now = self.stamp;
        let mut room = budget.saturating_sub(queued);
        let mut offsets = Vec::new();
        while let Some((offset, frame)) = frames.get(pos) {
            if frame.len() > room && (queued > 0 || !offsets.is_empty()) {
                break;
            }
            room = room.saturating_sub(frame.len());
            self.enqueue(id, frame.clone());
            let p = self
                .durable
                .entry(user.clone())
                .or_default()
                .entry(*offset)
                .or_insert_with(|| PendingDurable::new(frame.clone(), now, 0));
            p.written(now);
            offsets.push(*offset);
            pos += 1;
        }
        self.report_delivered_many(&user, offsets, 1);
        if self.conn_mut(id).is_none_or(|c| c.closing.is_some()) {
            return self.cancel_sync(id);
        }
        if pos < frames.len() {
            if let Some(c) = self.syncs.get_mut(&id) {
                c.list = Some((user, frames, pos));
            }
            return;
        }
        self.syncs.remove(&id);
        self.release(id, INBOX);
        // Messages that reached the shard while the connection was held (the list may not
        // have them: stored later, or, in a cluster, travelling apart from it).
        let listed: HashSet<u64> = frames.iter().map(|(o, _)| *o).collect();
        let later: Vec<(u64, bytes::Bytes)> = self
            .durable
            .get(&user)
            .map(|m| {
                m.iter()
                    .filter(|(o, _)| !listed.contains(o))
                    .map(|(o, p)| (*o, p.frame()))
                    .collect()
            })
            .unwrap_or_default();
        let mut offsets = Vec::new();
        for (offset, frame) in later {
            self.enqueue(id, frame);
            if let Some(p) = self.durable.get_mut(&user).and_then(|m| m.get_mut(&offset)) {
                p.written(now);
            }
            offsets.push(offset);
        }
        self.report_delivered_many(&user, offsets, 1);
    }

    /// Asks the store for the inbox of every local user (see [`ShardMsg::ResyncInboxes`]).
    ///
    /// [`ShardMsg::ResyncInboxes`]: super::inbox::ShardMsg::ResyncInboxes
    pub(super) fn resync_inboxes(&mut self) {
        if self.hub.links.store.is_none() {
            return;
        }
        let users: Vec<Arc<str>> = self.users.keys().cloned().collect();
        for user in users {
            let job = StoreJob::InboxResync {
                user,
                shard: self.index,
            };
            if self.hub.submit_store(job, true).is_err() {
                tracing::warn!("inbox resync: the store queue is full; resync abandoned");
                return;
            }
        }
    }

    /// A user's unacknowledged messages: those this shard does not track yet (sent while the
    /// cluster could not tell it) are written to the user's live connections now.
    pub(super) fn inbox_resync(&mut self, user: &Arc<str>, frames: &InboxFrames) {
        if !self.users.contains_key(user) {
            return;
        }
        for (offset, frame) in frames.iter() {
            let known = self
                .durable
                .get(user)
                .is_some_and(|m| m.contains_key(offset));
            if !known {
                self.deliver_durable(user, *offset, frame.clone());
            }
        }
    }

    pub(super) fn report_delivered_many(&self, user: &Arc<str>, offsets: Vec<u64>, times: u32) {
        if offsets.is_empty() {
            return;
        }
        let job = StoreJob::Delivered {
            user: user.clone(),
            offsets,
            times,
        };
        let _ = self.hub.submit_store(job, false);
    }
}
