//! What a node writes on a Redis channel, and the receiving side's de-duplication.
//!
//! ```text
//! 'R' kind  origin-len origin  seq (u64 BE)  body
//!      'P': u16 count, then per topic: u16 topic-len, topic, u32 frame-len, frame
//!      'C': a control operation as JSON
//! ```
//!
//! The frames are the publication's WebSocket frames exactly as the origin encoded them, so a
//! receiving node queues them to its connections without re-encoding.

const MAGIC: u8 = b'R';
const PUBLICATION: u8 = b'P';
const CONTROL: u8 = b'C';

/// A decoded message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A publication: `(topic, frame)` per topic.
    Publication(Vec<(&'a str, &'a [u8])>),
    /// A control operation (JSON).
    Control(&'a [u8]),
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
            let mut frames = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                let tl = r.u16()?;
                let topic = std::str::from_utf8(r.take(tl)?).ok()?;
                let fl = r.u32()?;
                frames.push((topic, r.take(fl)?));
            }
            if !r.0.is_empty() || frames.is_empty() {
                return None;
            }
            Decoded::Publication(frames)
        }
        CONTROL => Decoded::Control(r.0),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_round_trip() {
        let frames: Vec<(&str, &[u8])> = vec![("a", b"\x81\x02hi"), ("chat:b", b"")];
        let p = publication("node-1", 42, &frames);
        let e = decode(&p).unwrap();
        assert_eq!(e.origin, b"node-1");
        assert_eq!(e.seq, 42);
        assert_eq!(
            e.body,
            Decoded::Publication(vec![("a", &b"\x81\x02hi"[..]), ("chat:b", &b""[..])])
        );
        let c = control("n", 7, br#"{"op":"disconnect","user":"u"}"#);
        let e = decode(&c).unwrap();
        assert_eq!(
            e.body,
            Decoded::Control(br#"{"op":"disconnect","user":"u"}"#)
        );
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        let frames: Vec<(&str, &[u8])> = vec![("t", b"xyz")];
        let p = publication("n", 1, &frames);
        for cut in 0..p.len() {
            assert!(decode(&p[..cut]).is_none(), "cut at {cut}");
        }
        let mut extra = p.clone();
        extra.push(0);
        assert!(decode(&extra).is_none());
        assert!(decode(b"hello").is_none());
        assert!(decode(b"").is_none());
        // Arbitrary bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let len = (x % 40) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = decode(&v);
        }
    }

    #[test]
    fn dedup_window() {
        let mut d = Dedup::new();
        assert!(d.first(b"a", 1));
        assert!(!d.first(b"a", 1));
        assert!(d.first(b"b", 1));
        assert!(d.first(b"a", 2));
        assert!(!d.first(b"a", 1));
        for s in 10..(10 + WINDOW as u64) {
            assert!(d.first(b"c", s));
        }
        // Pushed out of the window.
        assert!(d.first(b"a", 1));
    }
}
