//! History kept in memory: per topic a ring of publications, its epoch and its top offset.
//! Plain data (no clock, no thread): the [`MemoryStore`](super::memory::MemoryStore) keeps its
//! streams in one, and with the memory store each shard keeps the streams of the topics it owns
//! in one of its own (`shard::history`), so a publication is sequenced where it arrives.
//!
//! Guarantees (those of [`Store`](super::Store) for history): per topic, offsets 1, 2, 3, …
//! without gap or repeat; the epoch of a stream is derived from the owner's base epoch and the
//! topic ([`unwritten_epoch`]), so a read before the first append reports the epoch the first
//! append keeps; a ring never holds more than its topic's `limits.size` publications.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::{unwritten_epoch, HistoryLimits, HistoryRead, Publication, StreamPos};

/// By topic, in insertion order: a stream is also reachable by its index, which is how the
/// last appended one is found again without hashing (see [`Streams::last_for`]).
type Map<K, V> = indexmap::IndexMap<K, V, ahash::RandomState>;

/// Ms of a duration, saturating.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Shared by every store: builds a history read from candidates offered newest first (every
/// publication with an offset above `after`, from the top down).
pub(crate) struct ReadAcc {
    cutoff: u64,
    limit: usize,
    complete: bool,
    publications: Vec<Publication>,
}

/// What to do with a candidate offered to a [`ReadAcc`].
#[derive(PartialEq, Eq)]
pub(crate) enum Offer {
    /// Decode it and [`ReadAcc::push`] it.
    Take,
    /// Older than the TTL: go on with the next one.
    Skip,
    /// `limit` reached: stop.
    Stop,
}

impl ReadAcc {
    /// Starts a read of the stream at `top` whose oldest kept offset is `first_kept`.
    pub(crate) fn new(
        limits: HistoryLimits,
        top: u64,
        first_kept: u64,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Self {
        ReadAcc {
            cutoff: if limits.ttl.is_zero() {
                0
            } else {
                now_ms.saturating_sub(ms(limits.ttl))
            },
            limit,
            complete: after <= top && after.saturating_add(1) >= first_kept,
            publications: Vec::new(),
        }
    }

    /// Judges the next (older) candidate, appended at `time_ms`.
    pub(crate) fn offer(&mut self, time_ms: u64) -> Offer {
        if time_ms < self.cutoff {
            self.complete = false;
            Offer::Skip
        } else if self.publications.len() >= self.limit {
            self.complete = false;
            Offer::Stop
        } else {
            Offer::Take
        }
    }

    /// Keeps a taken candidate.
    pub(crate) fn push(&mut self, p: Publication) {
        self.publications.push(p);
    }

    /// The answer, oldest first.
    pub(crate) fn finish(mut self, pos: StreamPos) -> HistoryRead {
        self.publications.reverse();
        HistoryRead {
            pos,
            publications: self.publications,
            complete: self.complete,
        }
    }
}

/// One kept publication: its offset is implied by its place in the ring (offsets in a ring are
/// contiguous), so an entry is the event, the shared data and the time. The event is shared
/// with the previous entry when they are equal (a topic's publications mostly repeat one
/// event name), so appending one costs no allocation.
struct Entry {
    event: Arc<str>,
    data: Option<Bytes>,
    time_ms: u64,
}

/// One topic's stream.
struct Stream {
    epoch: Arc<str>,
    top: u64,
    ring: VecDeque<Entry>,
}

impl Stream {
    fn pos(&self) -> StreamPos {
        StreamPos {
            epoch: self.epoch.clone(),
            offset: self.top,
        }
    }

    /// The offset of the oldest kept publication (`top + 1` when none is kept).
    fn first_kept(&self) -> u64 {
        self.top + 1 - self.ring.len() as u64
    }

    /// Appends the publication at the next offset and trims the ring to `limits.size`.
    #[inline]
    fn push(
        &mut self,
        limits: HistoryLimits,
        event: &str,
        now_ms: u64,
        data: impl FnOnce(u64) -> Option<Bytes>,
    ) -> StreamPos {
        self.top += 1;
        let data = data(self.top);
        if limits.size == 0 {
            self.ring.clear();
        } else {
            let event = match self.ring.back() {
                Some(last) if *last.event == *event => last.event.clone(),
                _ => Arc::from(event),
            };
            // Full: the oldest go first, so the ring never grows past the limit (one at a
            // time: cheaper than a drain for the usual single eviction).
            while self.ring.len() >= limits.size {
                self.ring.pop_front();
            }
            self.ring.push_back(Entry {
                event,
                data,
                time_ms: now_ms,
            });
        }
        self.pos()
    }
}

/// Streams of topics, by topic. See the [module docs](self).
pub struct Streams {
    map: Map<Box<str>, Stream>,
    /// The index in `map` of the stream appended to last, with the limits that append used
    /// (`None`: no append yet). A topic's limits come from the configuration, fixed at start,
    /// so they hold for the next append to the same topic.
    last: Option<(usize, HistoryLimits)>,
    /// The epoch unwritten streams' epochs are derived from (the owner's, drawn at its start).
    base: Arc<str>,
}

impl Streams {
    /// No streams; epochs derive from `base`.
    pub fn new(base: Arc<str>) -> Self {
        Streams {
            map: Map::default(),
            last: None,
            base,
        }
    }

    /// How many streams exist.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no stream exists.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Publications kept for `topic` (tests, metrics).
    pub fn kept(&self, topic: &str) -> usize {
        self.map.get(topic).map_or(0, |s| s.ring.len())
    }

    /// Appends a publication to `topic` (creating its stream on first use), trims the ring to
    /// `limits.size`, and returns the publication's position. `data` is called with the new
    /// offset and returns the data to keep (shared, not copied): the caller may encode the
    /// publication's frame there and hand back a slice of it.
    pub fn append(
        &mut self,
        topic: &str,
        limits: HistoryLimits,
        event: &str,
        now_ms: u64,
        data: impl FnOnce(u64) -> Option<Bytes>,
    ) -> StreamPos {
        let at = self.slot(topic);
        self.append_at(at, limits, event, now_ms, data)
    }

    /// Where `topic`'s stream is (created on first use): one hash, a known topic looked up by
    /// `&str`. Valid for the life of these streams (none is ever removed).
    pub fn slot(&mut self, topic: &str) -> usize {
        if let Some(i) = self.map.get_index_of(topic) {
            return i;
        }
        let entry = self.map.entry(topic.into());
        let i = entry.index();
        entry.or_insert_with(|| Stream {
            epoch: unwritten_epoch(&self.base, topic),
            top: 0,
            ring: VecDeque::new(),
        });
        i
    }

    /// When `topic` is the topic appended to last: its [`slot`](Self::slot) and the limits
    /// that append used — found by one comparison, without hashing. A run of publications to
    /// one topic (many per read from a busy publisher) needs neither the hash nor, as a topic's
    /// limits come from the configuration (fixed at start), the namespaces again.
    #[inline]
    pub fn last_for(&self, topic: &str) -> Option<(usize, HistoryLimits)> {
        let (i, limits) = self.last?;
        let (t, _) = self.map.get_index(i)?;
        (**t == *topic).then_some((i, limits))
    }

    /// [`append`](Self::append) to the stream at `at` (from [`slot`](Self::slot) or
    /// [`last_for`](Self::last_for)).
    ///
    /// # Panics
    /// If `at` is not a slot of these streams (a caller's bug, never input).
    pub fn append_at(
        &mut self,
        at: usize,
        limits: HistoryLimits,
        event: &str,
        now_ms: u64,
        data: impl FnOnce(u64) -> Option<Bytes>,
    ) -> StreamPos {
        self.last = Some((at, limits));
        let (_, s) = self.map.get_index_mut(at).expect("a slot of these streams");
        s.push(limits, event, now_ms, data)
    }

    /// The stream's position (an unknown topic: offset 0 in the epoch its first append keeps).
    pub fn position(&self, topic: &str) -> StreamPos {
        match self.map.get(topic) {
            Some(s) => s.pos(),
            None => StreamPos {
                epoch: unwritten_epoch(&self.base, topic),
                offset: 0,
            },
        }
    }

    /// The latest `limit` publications above `after`, oldest first, skipping those older than
    /// `limits.ttl` (see [`HistoryRead::complete`]).
    pub fn read(
        &self,
        topic: &str,
        limits: HistoryLimits,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> HistoryRead {
        let Some(s) = self.map.get(topic) else {
            let acc = ReadAcc::new(limits, 0, 1, after, limit, now_ms);
            return acc.finish(self.position(topic));
        };
        let first_kept = s.first_kept();
        let skip = usize::try_from(after.saturating_add(1).saturating_sub(first_kept))
            .unwrap_or(usize::MAX);
        let mut acc = ReadAcc::new(limits, s.top, first_kept, after, limit, now_ms);
        let newest = first_kept + s.ring.len() as u64 - 1;
        for (i, e) in s.ring.iter().skip(skip).rev().enumerate() {
            match acc.offer(e.time_ms) {
                Offer::Take => acc.push(Publication {
                    offset: newest - i as u64,
                    event: Box::from(&*e.event),
                    data: e.data.clone(),
                    time_ms: e.time_ms,
                }),
                Offer::Skip => continue,
                Offer::Stop => break,
            }
        }
        acc.finish(s.pos())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lim(size: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: Duration::ZERO,
        }
    }

    fn append(s: &mut Streams, topic: &str, size: usize, n: u64, at: u64) -> StreamPos {
        let data = Bytes::from(format!("{n}"));
        s.append(topic, lim(size), "e", at, |_| Some(data))
    }

    #[test]
    fn offsets_are_gapless_per_topic_and_the_epoch_is_the_unwritten_one() {
        let mut s = Streams::new("base".into());
        let before = s.position("a");
        assert_eq!(before.offset, 0);
        for n in 1..=5 {
            let p = append(&mut s, "a", 3, n, 0);
            assert_eq!(p.offset, n);
            assert_eq!(
                p.epoch, before.epoch,
                "the first append keeps the read epoch"
            );
        }
        assert_eq!(append(&mut s, "b", 3, 1, 0).offset, 1, "per topic");
        assert_ne!(s.position("b").epoch, before.epoch);
        assert_ne!(
            Streams::new("other".into()).position("a").epoch,
            before.epoch,
            "another base is another epoch"
        );
    }

    #[test]
    fn the_ring_evicts_the_oldest_and_reads_say_so() {
        let mut s = Streams::new("b".into());
        for n in 1..=10 {
            append(&mut s, "t", 4, n, 0);
            assert!(s.kept("t") <= 4);
        }
        let r = s.read("t", lim(4), 0, 100, 0);
        let offs: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offs, [7, 8, 9, 10]);
        assert_eq!(r.publications[0].data.as_deref(), Some(&b"7"[..]));
        assert!(!r.complete, "1..=6 were evicted");
        let r = s.read("t", lim(4), 6, 100, 0);
        assert!(r.complete);
        assert_eq!(r.publications.len(), 4);
        let r = s.read("t", lim(4), 8, 100, 0);
        assert_eq!(
            r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [9, 10]
        );
        assert!(r.complete);
        // The latest `limit`, oldest first.
        let r = s.read("t", lim(4), 6, 2, 0);
        assert_eq!(
            r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [9, 10]
        );
        assert!(!r.complete);
        // Beyond the top.
        assert!(!s.read("t", lim(4), 11, 100, 0).complete);
        // Size zero keeps nothing but still counts.
        assert_eq!(append(&mut s, "z", 0, 1, 0).offset, 1);
        assert_eq!(append(&mut s, "z", 0, 2, 0).offset, 2);
        assert_eq!(s.kept("z"), 0);
    }

    #[test]
    fn a_repeated_event_name_is_shared_not_allocated_again() {
        let mut s = Streams::new("b".into());
        append(&mut s, "t", 3, 1, 0);
        append(&mut s, "t", 3, 2, 0);
        s.append("t", lim(3), "other", 0, |_| None);
        let ring = &s.map["t"].ring;
        assert!(Arc::ptr_eq(&ring[0].event, &ring[1].event));
        assert_eq!(&*ring[2].event, "other");
        let r = s.read("t", lim(3), 0, 10, 0);
        let events: Vec<&str> = r.publications.iter().map(|p| &*p.event).collect();
        assert_eq!(events, ["e", "e", "other"]);
    }

    #[test]
    fn the_last_topic_is_found_without_a_lookup_and_keeps_its_offsets() {
        let mut s = Streams::new("b".into());
        assert_eq!(s.last_for("t"), None, "nothing appended yet");
        append(&mut s, "t", 3, 1, 0);
        let (at, limits) = s.last_for("t").expect("t was appended to last");
        assert_eq!(limits, lim(3));
        assert_eq!(s.last_for("u"), None, "another topic is looked up");
        let p = s.append_at(at, limits, "e", 0, |o| Some(Bytes::from(format!("{o}"))));
        assert_eq!(p.offset, 2);
        // Interleaved topics: each keeps its own gapless offsets, whichever path appends.
        append(&mut s, "u", 3, 1, 0);
        assert_eq!(s.last_for("t"), None);
        let (at_u, _) = s.last_for("u").expect("u now");
        assert_eq!(s.slot("t"), at, "a slot stays where it is");
        assert_ne!(at_u, at);
        assert_eq!(append(&mut s, "t", 3, 3, 0).offset, 3);
        let (at, limits) = s.last_for("t").expect("t again");
        for n in 4..=6 {
            assert_eq!(s.append_at(at, limits, "e", 0, |_| None).offset, n);
        }
        assert_eq!(s.kept("t"), 3, "trimmed to the limit on the fast path too");
        assert_eq!(s.position("u").offset, 1);
    }

    #[test]
    fn ttl_skips_old_publications() {
        let mut s = Streams::new("b".into());
        append(&mut s, "t", 10, 1, 1_000);
        append(&mut s, "t", 10, 2, 5_000);
        let limits = HistoryLimits {
            size: 10,
            ttl: Duration::from_secs(2),
        };
        let r = s.read("t", limits, 0, 10, 6_000);
        assert_eq!(r.publications.len(), 1);
        assert_eq!(r.publications[0].offset, 2);
        assert!(!r.complete);
    }

    #[test]
    fn a_kept_publication_is_small() {
        // The per-publication cost of history: the entry (event, shared data, time) plus the
        // event's and the data's own bytes (the data shared with the frame's source).
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert!(
            std::mem::size_of::<Stream>() <= 64,
            "{}",
            std::mem::size_of::<Stream>()
        );
    }
}
