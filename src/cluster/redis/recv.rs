//! The receiving half of the cluster thread: bytes of a Redis subscriber connection to the
//! shards, decoded in place.
//!
//! Each read of a subscriber connection is parsed with [`resp::parse`] (fields borrowed from
//! the read buffer), every publication decoded with [`wire::decode`] (again borrowed),
//! stripped of the node's own and of repeats, and queued per shard; [`Fanin::flush`] then hands
//! each shard its batch as one [`ShardMsg::Remote`] — one inbox push and at most one wake-up per
//! shard per read, whatever the number of publications in it. The only allocations per
//! publication are the ones the shard keeps: the frame's bytes and, for a new topic, its name.

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::wire::{self, Decoded, Dedup, StoredWire};
use crate::cluster::ClusterStats;
use crate::proto::envelope;
use crate::proto::registry::Interest;
use crate::proto::resp::{self, Push, RespError};
use crate::shard::inbox::{Inbox, RemotePub, ShardMsg, StoredPub};
use crate::ConnId;

/// What a read held besides publications, for the cluster thread to act on in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Note {
    /// A (p)subscribe or (p)unsubscribe was confirmed.
    Confirmed,
    /// A command was refused (Redis's error text).
    Refused(String),
    /// A control operation from another node (its JSON).
    Control(Vec<u8>),
}

/// Decoding state of the node's subscriber connections (shared by all of them: a publication
/// to topics on several instances arrives on each, and the de-duplication spans them).
pub(crate) struct Fanin {
    node: Arc<str>,
    dedup: Dedup,
    /// Per shard: publications queued since the last flush.
    batches: Vec<Vec<RemotePub>>,
    /// Shards with a non-empty batch.
    pending: u64,
    /// The last topic name made, reused while publications keep to one topic.
    last_topic: Option<Arc<str>>,
    received: u64,
    duplicates: u64,
    malformed: u64,
    /// Confirmations, refusals and control operations, in stream order.
    pub notes: Vec<Note>,
}

impl Fanin {
    /// Decoding for node `node` with `shards` shards.
    pub(crate) fn new(node: Arc<str>, shards: usize) -> Self {
        Self {
            node,
            dedup: Dedup::new(),
            batches: (0..shards.clamp(1, 64)).map(|_| Vec::new()).collect(),
            pending: 0,
            last_topic: None,
            received: 0,
            duplicates: 0,
            malformed: 0,
            notes: Vec::new(),
        }
    }

    /// Decodes every complete frame at the start of `buf` and returns how many bytes they
    /// took; the rest is an incomplete frame, to be fed again with the bytes that follow it.
    /// Publications are queued for [`flush`](Self::flush); other frames go to `notes`. An
    /// error means the stream cannot be trusted any more: the connection must be dropped
    /// (what was decoded before it is queued all the same).
    pub(crate) fn feed(&mut self, buf: &[u8], interest: &Interest) -> Result<usize, RespError> {
        let mut at = 0;
        while let Some((push, n)) = resp::parse(&buf[at..])? {
            at += n;
            match push {
                Push::Message { payload, .. } => self.message(payload, interest),
                Push::Confirm { .. } => self.notes.push(Note::Confirmed),
                Push::Error(e) => self
                    .notes
                    .push(Note::Refused(String::from_utf8_lossy(e).into_owned())),
                Push::Other => {}
            }
        }
        Ok(at)
    }

    fn message(&mut self, payload: &[u8], interest: &Interest) {
        let Some(env) = wire::decode(payload) else {
            self.malformed += 1;
            return;
        };
        if env.origin == self.node.as_bytes() {
            return;
        }
        if !self.dedup.first(env.origin, env.seq) {
            self.duplicates += 1;
            return;
        }
        match env.body {
            Decoded::Publication(frames) => {
                self.received += 1;
                if let Some((t, f)) = frames.single() {
                    let mask = interest.shards_for(t);
                    if mask == 0 {
                        return;
                    }
                    let topic = self.topic(t);
                    let frame = Bytes::copy_from_slice(f);
                    self.queue(mask, |_| RemotePub::One {
                        topic: topic.clone(),
                        frame: frame.clone(),
                    });
                } else {
                    let mask = frames
                        .iter()
                        .fold(0, |m, (t, _)| m | interest.shards_for(t));
                    if mask == 0 {
                        return;
                    }
                    let all: Arc<[(Arc<str>, Bytes)]> = frames
                        .iter()
                        .map(|(t, f)| (Arc::from(t), Bytes::copy_from_slice(f)))
                        .collect();
                    self.queue(mask, |_| RemotePub::Many(all.clone()));
                }
            }
            Decoded::Stored(w) => {
                self.received += 1;
                let mask = interest.shards_for(w.topic);
                if mask != 0 {
                    let own = Self::own(&self.node, env.origin);
                    let sp = self.stored(&w, own, w.epoch.into());
                    self.queue(mask, |_| RemotePub::Stored(sp.clone()));
                }
            }
            Decoded::StoredBatch(b) => {
                self.received += b.count as u64;
                let mask = interest.shards_for(b.topic);
                if mask != 0 {
                    let own = Self::own(&self.node, env.origin);
                    let epoch: Arc<str> = b.epoch.into();
                    for w in b.iter() {
                        let sp = self.stored(&w, own, epoch.clone());
                        self.queue(mask, |_| RemotePub::Stored(sp.clone()));
                    }
                }
            }
            Decoded::Control(json) => self.notes.push(Note::Control(json.to_vec())),
        }
    }

    /// Whether a stored publication from `origin` was appended by this node (its store's
    /// origin is the node's name and `~s`).
    fn own(node: &str, origin: &[u8]) -> bool {
        origin.strip_suffix(b"~s") == Some(node.as_bytes())
    }

    /// The shards' copy of a stored publication. The exclusion is a connection of the origin
    /// node: it means nothing elsewhere.
    fn stored(&mut self, w: &StoredWire<'_>, own: bool, epoch: Arc<str>) -> StoredPub {
        StoredPub {
            topic: self.topic(w.topic),
            frame: envelope::stored_publication(w.topic, w.event, w.data, w.offset),
            exclude: (own && w.exclude != 0).then(|| ConnId::from_raw(w.exclude)),
            epoch,
            offset: w.offset,
        }
    }

    /// The topic's shared name: the previous one when it is the same topic.
    fn topic(&mut self, t: &str) -> Arc<str> {
        match &self.last_topic {
            Some(last) if &**last == t => last.clone(),
            _ => {
                let a: Arc<str> = t.into();
                self.last_topic = Some(a.clone());
                a
            }
        }
    }

    fn queue(&mut self, mask: u64, mut make: impl FnMut(usize) -> RemotePub) {
        let mut m = mask;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            if let Some(b) = self.batches.get_mut(i) {
                b.push(make(i));
                self.pending |= 1 << i;
            }
        }
    }

    /// Hands every shard its queued publications (one push each) and adds the counts to
    /// `stats`.
    pub(crate) fn flush(&mut self, inboxes: &[Inbox], stats: &ClusterStats) {
        let mut m = self.pending;
        self.pending = 0;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let batch = std::mem::take(&mut self.batches[i]);
            if let Some(inbox) = inboxes.get(i) {
                inbox.push(ShardMsg::Remote(batch));
            }
        }
        if self.received != 0 {
            ClusterStats::add(
                &stats.publishes_received,
                std::mem::take(&mut self.received),
            );
        }
        if self.duplicates != 0 {
            ClusterStats::add(&stats.duplicates, std::mem::take(&mut self.duplicates));
        }
        if self.malformed != 0 {
            let n = std::mem::take(&mut self.malformed);
            tracing::debug!(n, "cluster: malformed messages ignored");
        }
    }
}

#[cfg(test)]
mod tests;
