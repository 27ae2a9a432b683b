//! What a node writes on a Redis channel, and the receiving side's de-duplication.
//!
//! ```text
//! 'R' kind  origin-len origin  seq (u64 BE)  body
//!      'P': u16 count, then per topic: u16 topic-len, topic, u32 frame-len, frame
//!      'C': a control operation as JSON
//!      'S': u16 topic-len, topic, u16 event-len, event, u32 data-len (u32::MAX: none), data,
//!           u64 exclude (a connection id of the origin, 0: none), then `<epoch>:<offset>`
//!           in ASCII — appended by the Redis script that assigned them (see `store::redis`)
//!      'B': u16 topic-len, topic, u8 position-len, `<epoch>:<first offset>` in ASCII, then
//!           per publication until the end: u16 event-len, event, u32 data-len (u32::MAX:
//!           none), data, u64 exclude — the k-th (from 0) has offset first + k
//! ```
//!
//! 'S' is a publication on a topic with history: the Redis store's append script publishes it
//! in the same atomic step that assigns its offset, so every node (the origin included) receives
//! a topic's stored publications in offset order, and builds the frame itself.
//!
//! 'B' is what the append script publishes since it batches: every publication one script call
//! appended to a topic, in one message (one `PUBLISH` per topic per call instead of one per
//! publication; the node writes the header and each publication's part, the script only joins
//! the applied ones behind their first position). 'S' is still decoded: nodes of the previous
//! version publish it during a rolling upgrade. A node of that version ignores 'B' (an unknown
//! kind is malformed: counted and dropped, never misparsed) and learns of the publications it
//! missed from the next 'S' it receives (an offset gap: the subscribers recover from history)
//! or from the position check.
//!
//! The frames are the publication's WebSocket frames exactly as the origin encoded them, so a
//! receiving node queues them to its connections without re-encoding.

const MAGIC: u8 = b'R';
const PUBLICATION: u8 = b'P';
const CONTROL: u8 = b'C';
const STORED: u8 = b'S';
const STORED_BATCH: u8 = b'B';

/// A decoded message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A publication: `(topic, frame)` per topic, read without allocating.
    Publication(Frames<'a>),
    /// A control operation (JSON).
    Control(&'a [u8]),
    /// A publication on a topic with history, with the offset its stream assigned.
    Stored(StoredWire<'a>),
    /// Consecutive publications on one topic with history, from one append call.
    StoredBatch(StoredBatch<'a>),
}

/// The body of a 'B' message, checked by [`decode`] and read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredBatch<'a> {
    pub topic: &'a str,
    /// The stream's epoch when the offsets were assigned.
    pub epoch: &'a str,
    /// The first publication's offset; the others follow it one by one.
    pub first: u64,
    /// How many publications.
    pub count: usize,
    bytes: &'a [u8],
}

impl<'a> StoredBatch<'a> {
    /// The publications in offset order (the `epoch` of each is the batch's).
    pub(crate) fn iter(&self) -> impl Iterator<Item = StoredWire<'a>> + 'a {
        let mut r = Reader(self.bytes);
        let (topic, epoch, first) = (self.topic, self.epoch, self.first);
        (0..self.count as u64).map_while(move |k| {
            let (event, data, exclude) = stored_item(&mut r)?;
            Some(StoredWire {
                topic,
                event,
                data,
                exclude,
                epoch,
                offset: first + k,
            })
        })
    }
}

/// One publication's part of a 'B' message (and of an 'S' message after its topic).
fn stored_item<'a>(r: &mut Reader<'a>) -> Option<(&'a str, Option<&'a [u8]>, u64)> {
    let el = r.u16()?;
    let event = std::str::from_utf8(r.take(el)?).ok()?;
    let data = match r.u32()? {
        n if n == u32::MAX as usize => None,
        n => Some(r.take(n)?),
    };
    Some((event, data, r.u64()?))
}

/// `<epoch>:<offset>` as the append script writes a position.
fn position(tail: &[u8]) -> Option<(&str, u64)> {
    let tail = std::str::from_utf8(tail).ok()?;
    let (epoch, digits) = tail.rsplit_once(':')?;
    if epoch.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((epoch, digits.parse().ok()?))
}

/// The `(topic, frame)` pairs of a 'P' message, checked by [`decode`] and read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frames<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Frames<'a> {
    /// The pairs in wire order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let mut r = Reader(self.bytes);
        (0..self.count).map_while(move |_| frame(&mut r))
    }

    /// The only pair, when there is one.
    pub(crate) fn single(&self) -> Option<(&'a str, &'a [u8])> {
        (self.count == 1).then(|| self.iter().next()).flatten()
    }
}

fn frame<'a>(r: &mut Reader<'a>) -> Option<(&'a str, &'a [u8])> {
    let tl = r.u16()?;
    let topic = std::str::from_utf8(r.take(tl)?).ok()?;
    let fl = r.u32()?;
    Some((topic, r.take(fl)?))
}

/// The body of an 'S' message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StoredWire<'a> {
    pub topic: &'a str,
    pub event: &'a str,
    pub data: Option<&'a [u8]>,
    /// The origin's connection to skip (`exclude_sender`), 0 for none.
    pub exclude: u64,
    /// The stream's epoch when the offset was assigned.
    pub epoch: &'a str,
    pub offset: u64,
}

/// A message with its origin node and sequence number.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub origin: &'a [u8],
    pub seq: u64,
    pub body: Decoded<'a>,
}

fn header(out: &mut Vec<u8>, kind: u8, origin: &str, seq: u64) {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    out.push(MAGIC);
    out.push(kind);
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Encodes a publication (topics longer than 65,535 bytes or frames over 4 GiB cannot occur:
/// topics are at most 256 bytes, messages far below).
pub(crate) fn publication(origin: &str, seq: u64, frames: &[(&str, &[u8])]) -> Vec<u8> {
    let size: usize = frames.iter().map(|(t, f)| 6 + t.len() + f.len()).sum();
    let mut out = Vec::with_capacity(13 + origin.len() + size);
    header(&mut out, PUBLICATION, origin, seq);
    out.extend_from_slice(&(frames.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for (t, f) in frames.iter().take(u16::MAX as usize) {
        out.extend_from_slice(&(t.len() as u16).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Escapes Redis glob metacharacters (`*?[]\`) so `s` matches itself in a `PSUBSCRIBE`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Encodes a stored publication (kind 'S') **without its position**, as nodes of the previous
/// version did: their append script appended `<epoch>:<offset>` before publishing it (tests
/// feed it to the receiving side, which still decodes it).
#[cfg(test)]
pub(crate) fn stored(
    origin: &str,
    seq: u64,
    topic: &str,
    event: &str,
    data: Option<&[u8]>,
    exclude: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, STORED, origin, seq);
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    stored_item_into(&mut out, event, data, exclude);
    out
}

/// The start of a 'B' message for `topic` (the append script adds the position and the
/// applied publications' parts, each written by [`stored_item_into`]).
pub(crate) fn stored_batch_header_into(out: &mut Vec<u8>, origin: &str, seq: u64, topic: &str) {
    header(out, STORED_BATCH, origin, seq);
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
}

/// One publication's part of a 'B' message, appended to `out`.
pub(crate) fn stored_item_into(out: &mut Vec<u8>, event: &str, data: Option<&[u8]>, exclude: u64) {
    let event = &event.as_bytes()[..event.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(event.len() as u16).to_be_bytes());
    out.extend_from_slice(event);
    match data {
        Some(d) => {
            let d = &d[..d.len().min(u32::MAX as usize - 1)];
            out.extend_from_slice(&(d.len() as u32).to_be_bytes());
            out.extend_from_slice(d);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
    out.extend_from_slice(&exclude.to_be_bytes());
}

/// A whole 'B' message as the append script publishes it (tests and benches: the script joins
/// the parts in Redis).
pub(crate) fn stored_batch(
    origin: &str,
    seq: u64,
    topic: &str,
    epoch: &str,
    first: u64,
    pubs: &[(&str, Option<&[u8]>, u64)],
) -> Vec<u8> {
    let mut out = Vec::new();
    stored_batch_header_into(&mut out, origin, seq, topic);
    let pos = format!("{epoch}:{first}");
    out.push(pos.len() as u8);
    out.extend_from_slice(pos.as_bytes());
    for &(event, data, exclude) in pubs {
        stored_item_into(&mut out, event, data, exclude);
    }
    out
}

/// Encodes a control operation.
pub(crate) fn control(origin: &str, seq: u64, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + origin.len() + json.len());
    header(&mut out, CONTROL, origin, seq);
    out.extend_from_slice(json);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u32(&mut self) -> Option<usize> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_be_bytes(a))
    }
}

/// Decodes a message; `None` for anything malformed (never panics on what Redis delivers).
pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
    let mut r = Reader(bytes);
    if r.u8()? != MAGIC {
        return None;
    }
    let kind = r.u8()?;
    let n = usize::from(r.u8()?);
    let origin = r.take(n)?;
    let seq = r.u64()?;
    let body = match kind {
        PUBLICATION => {
            let count = r.u16()?;
            let bytes = r.0;
            for _ in 0..count {
                frame(&mut r)?;
            }
            if !r.0.is_empty() || count == 0 {
                return None;
            }
            Decoded::Publication(Frames { count, bytes })
        }
        CONTROL => Decoded::Control(r.0),
        STORED => {
            let tl = r.u16()?;
            let topic = std::str::from_utf8(r.take(tl)?).ok()?;
            let (event, data, exclude) = stored_item(&mut r)?;
            let (epoch, offset) = position(r.0)?;
            Decoded::Stored(StoredWire {
                topic,
                event,
                data,
                exclude,
                epoch,
                offset,
            })
        }
        STORED_BATCH => {
            let tl = r.u16()?;
            let topic = std::str::from_utf8(r.take(tl)?).ok()?;
            let pl = usize::from(r.u8()?);
            let (epoch, first) = position(r.take(pl)?)?;
            let bytes = r.0;
            let mut count = 0;
            while !r.0.is_empty() {
                stored_item(&mut r)?;
                count += 1;
            }
            // Offsets past 2^53 cannot occur (the script counts in doubles).
            if count == 0 || first.checked_add(count as u64).is_none() {
                return None;
            }
            Decoded::StoredBatch(StoredBatch {
                topic,
                epoch,
                first,
                count,
                bytes,
            })
        }
        _ => return None,
    };
    Some(Envelope { origin, seq, body })
}

/// Remembers the last messages seen, by origin and sequence: a publication that matches several
/// of the node's subscriptions arrives once per subscription, one right after the other on a
/// connection (and a publication to several topics once per topic channel, possibly on several
/// instances), so a short window catches every repeat.
pub(crate) struct Dedup {
    ring: Vec<(u64, u64)>,
    next: usize,
}

/// Messages remembered.
const WINDOW: usize = 256;

impl Dedup {
    pub(crate) fn new() -> Self {
        Self {
            ring: Vec::with_capacity(WINDOW),
            next: 0,
        }
    }

    /// True the first time `(origin, seq)` is seen within the window.
    pub(crate) fn first(&mut self, origin: &[u8], seq: u64) -> bool {
        let key = (fnv(origin), seq);
        // The previous message is the usual repeat: look back from the newest.
        let n = self.ring.len();
        for k in 0..n {
            let i = (self.next + n - 1 - k) % n;
            if self.ring[i] == key {
                return false;
            }
        }
        if n < WINDOW {
            self.ring.push(key);
            self.next = self.ring.len() % WINDOW;
        } else {
            self.ring[self.next] = key;
            self.next = (self.next + 1) % WINDOW;
        }
        true
    }
}

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The instance of `n` that owns `key`: jump consistent hashing (Lamping & Veach) over a stable
/// FNV-1a hash, so every node maps a topic to the same instance, and adding an instance moves
/// only about 1/n of the topics.
pub(crate) fn instance_for(key: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n as i64 {
        b = j;
        h = h.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((h >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The Redis channel of a topic's publications: the broker subscribes it and publishes plain
/// publications on it; the Redis store's append script publishes stored ones on it.
pub(crate) fn topic_channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}:t:{topic}")
}

/// A URL without its password, for logs and `/readyz`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
