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
use std::ops::Range;
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

/// `Entry::len` of a publication without data.
const NO_DATA: u32 = u32::MAX;
/// `Entry::len` when all of `Entry::buf` is the data.
const WHOLE: u32 = u32::MAX - 1;

/// One kept publication. Its offset is implied by its place in the ring (offsets in a ring are
/// contiguous) and its event by the stream's runs of event names (`Stream::events`), so an
/// entry is the bytes holding its data, where the data sits in them, and the time: appending
/// one touches no reference count but that of the bytes it is given.
struct Entry {
    /// The data itself, or the publication's whole frame when its owner shard appended it
    /// ([`Streams::append_frame_at`]: the shard delivers the frame from here, see
    /// [`Streams::newest`]).
    buf: Bytes,
    /// Where the data starts in `buf`.
    start: u32,
    /// The data's length, or [`WHOLE`], or [`NO_DATA`].
    len: u32,
    time_ms: u64,
}

impl Entry {
    /// An entry keeping `data` as it is.
    fn of_data(data: Option<Bytes>, time_ms: u64) -> Self {
        let (buf, len) = match data {
            Some(d) => (d, WHOLE),
            None => (Bytes::new(), NO_DATA),
        };
        Entry {
            buf,
            start: 0,
            len,
            time_ms,
        }
    }

    /// An entry keeping a publication's `frame`, its data at `data`; `Err` gives the frame
    /// back when the range does not fit the entry's fields (no frame a shard accepts comes
    /// near 4 GiB) or the frame.
    fn of_frame(frame: Bytes, data: Option<Range<usize>>, time_ms: u64) -> Result<Self, Bytes> {
        let (start, len) = match data {
            None => (0, NO_DATA),
            Some(r) => match (u32::try_from(r.start), u32::try_from(r.len())) {
                (Ok(s), Ok(l)) if l < WHOLE && r.start <= r.end && r.end <= frame.len() => (s, l),
                _ => return Err(frame),
            },
        };
        Ok(Entry {
            buf: frame,
            start,
            len,
            time_ms,
        })
    }

    /// The kept data, shared with the entry's bytes.
    fn data(&self) -> Option<Bytes> {
        match self.len {
            NO_DATA => None,
            WHOLE => Some(self.buf.clone()),
            len => {
                let start = self.start as usize;
                Some(self.buf.slice(start..start + len as usize))
            }
        }
    }
}

/// One topic's stream.
struct Stream {
    epoch: Arc<str>,
    top: u64,
    ring: VecDeque<Entry>,
    /// The ring's event names, oldest first, as runs: a name and how many consecutive entries
    /// carry it (a topic's publications mostly repeat one event name, so appending one usually
    /// adds one to a count: no allocation, no reference count).
    events: VecDeque<(Box<str>, usize)>,
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

    /// Keeps `entry`, the publication at `top` (already counted), named `event`; the oldest go
    /// first so the ring never grows past `size`. `false`: not kept (`size` 0).
    #[inline]
    fn keep(&mut self, size: usize, event: &str, entry: Entry) -> bool {
        if size == 0 {
            self.ring.clear();
            self.events.clear();
            return false;
        }
        // One at a time: cheaper than a drain for the usual single eviction.
        while self.ring.len() >= size {
            self.evict();
        }
        match self.events.back_mut() {
            Some((name, n)) if **name == *event => *n += 1,
            _ => self.events.push_back((event.into(), 1)),
        }
        self.ring.push_back(entry);
        true
    }

    /// Drops the oldest kept publication.
    fn evict(&mut self) {
        if self.ring.pop_front().is_none() {
            return;
        }
        if let Some((_, n)) = self.events.front_mut() {
            *n -= 1;
            if *n == 0 {
                self.events.pop_front();
            }
        }
    }

    /// The event names of the kept publications, newest first (one per entry).
    fn events_newest_first(&self) -> impl Iterator<Item = &str> {
        self.events
            .iter()
            .rev()
            .flat_map(|(name, n)| std::iter::repeat_n(&**name, *n))
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
            events: VecDeque::new(),
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
        let s = self.stream_for_append(at, limits);
        s.top += 1;
        let entry = Entry::of_data(data(s.top), now_ms);
        s.keep(limits.size, event, entry);
        s.pos()
    }

    /// Appends a publication to the stream at `at` (as [`append_at`](Self::append_at)) keeping
    /// its whole frame: `frame` is called with the new offset and returns the publication's
    /// frame and where its data sits in it. Returns the offset, and the frame when the ring
    /// does not keep it (`limits.size` 0); otherwise the frame is the [`newest`](Self::newest)
    /// of the stream, where its owner shard delivers it from — so appending a publication
    /// neither clones the epoch nor touches the frame's reference count.
    ///
    /// # Panics
    /// If `at` is not a slot of these streams (a caller's bug, never input).
    pub fn append_frame_at(
        &mut self,
        at: usize,
        limits: HistoryLimits,
        event: &str,
        now_ms: u64,
        frame: impl FnOnce(u64) -> (Bytes, Option<Range<usize>>),
    ) -> (u64, Option<Bytes>) {
        let s = self.stream_for_append(at, limits);
        s.top += 1;
        let (f, data) = frame(s.top);
        if limits.size == 0 {
            s.keep(0, event, Entry::of_data(None, now_ms));
            return (s.top, Some(f));
        }
        let unkept = match Entry::of_frame(f, data.clone(), now_ms) {
            Ok(entry) => {
                s.keep(limits.size, event, entry);
                None
            }
            Err(f) => {
                // Not describable by the entry's fields: keep the data on its own (a range
                // outside the frame, a caller's bug, keeps none).
                let kept = data.filter(|r| r.start <= r.end && r.end <= f.len());
                let kept = kept.map(|r| f.slice(r));
                s.keep(limits.size, event, Entry::of_data(kept, now_ms));
                Some(f)
            }
        };
        (s.top, unkept)
    }

    /// The stream at `at`, recorded as the one appended to last.
    fn stream_for_append(&mut self, at: usize, limits: HistoryLimits) -> &mut Stream {
        self.last = Some((at, limits));
        let (_, s) = self.map.get_index_mut(at).expect("a slot of these streams");
        s
    }

    /// The newest kept publication's bytes at slot `at` — its frame right after
    /// [`append_frame_at`](Self::append_frame_at) kept it — and the stream's epoch (`None`:
    /// nothing kept, or no such slot).
    #[inline]
    pub fn newest(&self, at: usize) -> Option<(&Bytes, &Arc<str>)> {
        let (_, s) = self.map.get_index(at)?;
        Some((&s.ring.back()?.buf, &s.epoch))
    }

    /// The epoch of the stream at slot `at`.
    #[inline]
    pub fn epoch_at(&self, at: usize) -> Option<&Arc<str>> {
        self.map.get_index(at).map(|(_, s)| &s.epoch)
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
        let newest_first = s.ring.iter().skip(skip).rev();
        for (i, (e, event)) in newest_first.zip(s.events_newest_first()).enumerate() {
            match acc.offer(e.time_ms) {
                Offer::Take => acc.push(Publication {
                    offset: newest - i as u64,
                    event: Box::from(event),
                    data: e.data(),
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
#[path = "streams_tests.rs"]
mod tests;
