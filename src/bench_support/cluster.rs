//! The cluster thread's receive path, outside any runtime: bytes of a Redis subscriber
//! connection in, per-shard batches in the shards' inboxes out (`benches/cluster_recv.rs`).

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::redis::recv::Fanin;
use crate::cluster::wire::{self, Decoded, Dedup};
use crate::cluster::ClusterStats;
use crate::proto::pattern::Pattern;
use crate::proto::registry::Interest;
use crate::shard::inbox::{ShardMsg, StoredPub};
use crate::shard::shared::HubShared;

/// `n` publications of `payload` bytes from node `origin` (sequence numbers from `seq`), spread
/// round-robin over `topics`, as a Redis subscriber connection receives them on the topics'
/// channels (`message` frames, RESP2, prefix `rh`): the bytes Redis writes, byte for byte.
pub fn resp_publications(
    origin: &str,
    seq: u64,
    n: usize,
    topics: &[&str],
    payload: usize,
) -> Vec<u8> {
    let frame = crate::proto::envelope::publication("t", "message", Some(&vec![b'7'; payload]));
    let mut out = Vec::new();
    for k in 0..n {
        let topic = topics[k % topics.len()];
        let body = wire::publication(origin, seq + k as u64, &[(topic, &frame)]);
        resp_message(&mut out, &crate::cluster::topic_channel("rh", topic), &body);
    }
    out
}

/// `n` stored publications on `topic` (`payload` bytes of data each, offsets from 1) from node
/// `origin`'s store as the append script publishes them: `per_message` publications per
/// cluster message (wire kind 'B', one message per topic per script call), as a Redis
/// subscriber connection receives them.
pub fn resp_stored(
    origin: &str,
    n: usize,
    topic: &str,
    payload: usize,
    per_message: usize,
) -> Vec<u8> {
    let data = vec![b'7'; payload];
    let channel = crate::cluster::topic_channel("rh", topic);
    let mut out = Vec::new();
    let per = per_message.max(1);
    for (k, first) in (0..n).step_by(per).enumerate() {
        let pubs: Vec<(&str, Option<&[u8]>, u64)> = (first..n.min(first + per))
            .map(|_| ("message", Some(&data[..]), 0))
            .collect();
        let body = wire::stored_batch(origin, k as u64, topic, "0a1b2c3d", first as u64 + 1, &pubs);
        resp_message(&mut out, &channel, &body);
    }
    out
}

/// One `message` frame as Redis writes it to a RESP2 subscriber.
pub fn resp_message(out: &mut Vec<u8>, channel: &str, payload: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
    for b in [channel.as_bytes(), payload] {
        out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }
}

/// A node's receive path with `shards` shards, topic `k` of `topics` wanted by shard
/// `k % shards`.
pub struct RecvBench {
    hub: HubShared,
    interest: Interest,
    stats: ClusterStats,
    fanin: Fanin,
    partial: Vec<u8>,
    dedup: Dedup,
    /// The per-message channel the `redis` crate's `PubSub` stream and the old manager used.
    tx: tokio::sync::mpsc::UnboundedSender<redis::Msg>,
    rx: tokio::sync::mpsc::UnboundedReceiver<redis::Msg>,
}

impl RecvBench {
    /// Node `n1`'s receive path.
    pub fn new(shards: usize, topics: &[&str]) -> Self {
        let mut interest = Interest::new();
        for (k, t) in topics.iter().enumerate() {
            if let Ok(p) = Pattern::parse(t) {
                interest.add(p, k % shards);
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            hub: HubShared::for_bench(shards),
            interest,
            stats: ClusterStats::default(),
            fanin: Fanin::new("n1".into(), shards),
            partial: Vec::new(),
            dedup: Dedup::new(),
            tx,
            rx,
        }
    }

    /// One socket read as the cluster thread handles it: frames decoded in place (a frame cut
    /// at the end waits for the next read, as the manager keeps it), then one inbox push per
    /// shard.
    pub fn read(&mut self, bytes: &[u8]) {
        if self.partial.is_empty() {
            let n = self
                .fanin
                .feed(bytes, &self.interest)
                .unwrap_or(bytes.len());
            self.partial.extend_from_slice(&bytes[n..]);
        } else {
            self.partial.extend_from_slice(bytes);
            let n = self
                .fanin
                .feed(&self.partial, &self.interest)
                .unwrap_or(self.partial.len());
            self.partial.drain(..n);
        }
        self.fanin.flush(&self.hub.inboxes, &self.stats);
    }

    /// The same read on the path before: the `redis` crate's parser builds a `Value` and a
    /// `redis::Msg` per frame, sent through a channel to the manager, which decodes it and
    /// pushes one `ShardMsg::Publish` per message per shard.
    pub fn read_via_redis_msg(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        // The sync `redis::Parser` cannot tell a cut frame from a complete one (the async codec
        // the `PubSub` used can): the complete frames are delimited first.
        let mut end = 0;
        while let Ok(Some((_, n))) = crate::proto::resp::parse(&self.partial[end..]) {
            end += n;
        }
        let mut cur = Cursor::new(&self.partial[..end]);
        let mut parser = redis::Parser::new();
        while (cur.position() as usize) < end {
            match parser.parse_value(&mut cur) {
                Ok(v) => {
                    if let Some(m) = redis::Msg::from_owned_value(v) {
                        let _ = self.tx.send(m);
                    }
                }
                Err(_) => break,
            }
        }
        self.partial.drain(..end);
        while let Ok(msg) = self.rx.try_recv() {
            self.old_message(&msg);
        }
    }

    fn old_message(&mut self, msg: &redis::Msg) {
        let Some(env) = wire::decode(msg.get_payload_bytes()) else {
            return;
        };
        if env.origin == b"n1" || !self.dedup.first(env.origin, env.seq) {
            return;
        }
        ClusterStats::add(&self.stats.publishes_received, 1);
        match env.body {
            Decoded::Publication(frames) => {
                let Some((t, f)) = frames.single() else {
                    return;
                };
                let mask = self.interest.shards_for(t);
                if mask == 0 {
                    return;
                }
                let topic: Arc<str> = t.into();
                let frame = Bytes::copy_from_slice(f);
                self.each_shard(mask, |_| ShardMsg::Publish {
                    topic: topic.clone(),
                    frame: frame.clone(),
                    exclude: None,
                });
            }
            Decoded::Stored(w) => {
                let mask = self.interest.shards_for(w.topic);
                let batch: Arc<[StoredPub]> = Arc::new([old_stored(&w)]);
                self.each_shard(mask, |_| ShardMsg::Stored(batch.clone()));
            }
            Decoded::StoredBatch(b) => {
                let mask = self.interest.shards_for(b.topic);
                let batch: Arc<[StoredPub]> = b.iter().map(|w| old_stored(&w)).collect();
                self.each_shard(mask, |_| ShardMsg::Stored(batch.clone()));
            }
            Decoded::Control(_) => {}
        }
    }

    fn each_shard(&self, mask: u64, mut make: impl FnMut(usize) -> ShardMsg) {
        let mut m = mask;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            if let Some(inbox) = self.hub.inboxes.get(i) {
                inbox.push(make(i));
            }
        }
    }

    /// Takes everything queued to the shards (what their loops would pop) and returns the
    /// number of publications taken.
    pub fn drain(&self) -> usize {
        let mut n = 0;
        for inbox in self.hub.inboxes.iter() {
            while let Some(m) = inbox.pop() {
                n += match m {
                    ShardMsg::Remote(b) => b.len(),
                    ShardMsg::Stored(b) => b.len(),
                    _ => 1,
                };
            }
            inbox.arm();
            inbox.clear_eventfd();
        }
        n
    }
}

/// A stored publication as the path before built it.
fn old_stored(w: &wire::StoredWire<'_>) -> StoredPub {
    StoredPub {
        topic: w.topic.into(),
        frame: crate::proto::envelope::stored_publication(w.topic, w.event, w.data, w.offset),
        exclude: None,
        epoch: w.epoch.into(),
        offset: w.offset,
    }
}
