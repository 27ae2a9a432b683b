//! The 40-byte ASCII header every measured message starts with:
//! stream id (8 hex), sequence number (16 hex), send timestamp in ns since the common
//! epoch (16 hex); the rest of the payload is padding up to the requested size.

use memchr::memmem::Finder;

pub const HEADER_LEN: usize = 40;

/// Header fields carried inside a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub stream: u32,
    pub seq: u64,
    pub ts_ns: u64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Per byte of `x` (all < 0x80): 0x80 where `a <= byte <= b`, else 0.
const fn in_range(x: u64, a: u64, b: u64) -> u64 {
    (x + (0x80 - a) * LO) & !(x + (0x7f - b) * LO) & HI
}

/// Decodes 8 lowercase hex digits at once (SWAR); `None` if any byte is not `[0-9a-f]`.
fn hex8(src: &[u8]) -> Option<u64> {
    let mut b = [0u8; 8];
    b.copy_from_slice(&src[..8]);
    let x = u64::from_be_bytes(b);
    if x & HI != 0 {
        return None;
    }
    let letters = in_range(x, 0x61, 0x66);
    if (in_range(x, 0x30, 0x39) | letters) != HI {
        return None;
    }
    let v = (x & (0x0f * LO)) + (letters >> 7) * 9;
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    Some((v | (v >> 16)) & 0x0000_0000_ffff_ffff)
}

fn get_hex(src: &[u8]) -> Option<u64> {
    src.chunks_exact(8)
        .try_fold(0u64, |acc, c| Some((acc << 32) | hex8(c)?))
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `dst`.
    pub fn write(&self, dst: &mut [u8]) {
        put_hex(&mut dst[0..8], self.stream as u64);
        put_hex(&mut dst[8..24], self.seq);
        put_hex(&mut dst[24..40], self.ts_ns);
    }

    /// Parses a header from the start of `src`.
    pub fn parse(src: &[u8]) -> Option<Header> {
        if src.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            stream: get_hex(&src[0..8])? as u32,
            seq: get_hex(&src[8..24])?,
            ts_ns: get_hex(&src[24..40])?,
        })
    }
}

/// A message template: the full frame payload with a header slot at `offset`.
#[derive(Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub offset: usize,
}

impl Template {
    /// A raw payload of `size` bytes: header then `x` padding.
    pub fn raw(size: usize) -> Template {
        let mut bytes = vec![b'x'; size.max(HEADER_LEN)];
        bytes[..HEADER_LEN].fill(b'0');
        Template { bytes, offset: 0 }
    }

    /// A ringhub publish frame whose `data` string is a `size`-byte raw payload.
    pub fn ringhub_publish(topic: &str, size: usize) -> Template {
        let prefix = format!("{{\"topic\":\"{topic}\",\"event\":\"m\",\"data\":\"");
        let mut bytes = prefix.clone().into_bytes();
        bytes.extend_from_slice(&Template::raw(size).bytes);
        bytes.extend_from_slice(b"\"}");
        Template {
            bytes,
            offset: prefix.len(),
        }
    }

    /// Copies the template into `dst` with `h` filled in.
    pub fn fill(&self, dst: &mut [u8], h: &Header) {
        dst.copy_from_slice(&self.bytes);
        h.write(&mut dst[self.offset..self.offset + HEADER_LEN]);
    }
}

/// What a received text frame turned out to be.
pub enum Incoming<'a> {
    Data(&'a [u8]),
    Reply,
    Error,
    Malformed,
}

/// Classifies a frame from a ringhub server (`{"topic":..,"data":"..."}`, replies, errors)
/// or, for raw servers, treats the whole frame as the payload.
///
/// Locating `"data":"` in every delivered frame was a visible share of the generator's time,
/// so the classifier remembers the bytes in front of the payload of the last data frame (for
/// one subscriber they are the same in every publication of its topic) and checks new frames
/// against that prefix first: one short comparison instead of a search. The result is always
/// the same as the search's: the prefix ends at the first `"data":"` of the frame it was taken
/// from, so a frame that starts with it has its first `"data":"` at the same place.
pub struct Classifier {
    ringhub: bool,
    data: Finder<'static>,
    prefix: Vec<u8>,
}

/// `{"event":` — the start of replies and errors, which are never data.
const EVENT: &[u8] = b"{\"event\":";
const DATA: &[u8] = b"\"data\":\"";

impl Classifier {
    pub fn new(ringhub: bool) -> Classifier {
        Classifier {
            ringhub,
            data: Finder::new(DATA),
            prefix: Vec::new(),
        }
    }

    pub fn classify<'a>(&mut self, frame: &'a [u8]) -> Incoming<'a> {
        if !self.ringhub {
            return Incoming::Data(frame);
        }
        if !self.prefix.is_empty() && frame.starts_with(&self.prefix) {
            return Incoming::Data(&frame[self.prefix.len()..]);
        }
        if frame.starts_with(b"{\"event\":\"error\"") {
            return Incoming::Error;
        }
        if frame.starts_with(EVENT) {
            return Incoming::Reply;
        }
        match self.data.find(frame) {
            Some(i) => {
                let end = i + DATA.len();
                // The frame does not start with `{"event":`, so neither does a prefix longer
                // than that: a reply or an error never matches it.
                if end > EVENT.len() && end <= 256 {
                    self.prefix.clear();
                    self.prefix.extend_from_slice(&frame[..end]);
                }
                Incoming::Data(&frame[end..])
            }
            None => Incoming::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_in_template() {
        let t = Template::ringhub_publish("t3", 64);
        let mut buf = vec![0u8; t.bytes.len()];
        let h = Header {
            stream: 7,
            seq: 123_456,
            ts_ns: 987_654_321,
        };
        t.fill(&mut buf, &h);
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v["data"].as_str().map(str::len), Some(64));
        match Classifier::new(true).classify(&buf) {
            Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
            _ => panic!("not data"),
        }
        assert!(Header::parse(b"zz").is_none());
        for bad in [b'g', b'/', b':', b'`', b'A', b' ', 0xc3] {
            let mut b = buf.clone();
            b[t.offset + 5] = bad;
            match Classifier::new(true).classify(&b) {
                Incoming::Data(d) => assert_eq!(Header::parse(d), None, "byte {bad:#x}"),
                _ => panic!("not data"),
            }
        }
        assert_eq!(get_hex(b"0123456789abcdef"), Some(0x0123_4567_89ab_cdef));
    }

    /// What the classifier answered before it learned prefixes: a search in every frame.
    fn reference(frame: &[u8]) -> Option<(u8, &[u8])> {
        if frame.starts_with(b"{\"event\":\"error\"") {
            return Some((b'e', frame));
        }
        if frame.starts_with(b"{\"event\":") {
            return Some((b'r', frame));
        }
        memchr::memmem::find(frame, DATA).map(|i| (b'd', &frame[i + 8..]))
    }

    fn kind(i: Incoming<'_>) -> Option<(u8, &[u8])> {
        match i {
            Incoming::Data(d) => Some((b'd', d)),
            Incoming::Reply => Some((b'r', b"")),
            Incoming::Error => Some((b'e', b"")),
            Incoming::Malformed => None,
        }
    }

    #[test]
    fn learned_prefix_answers_like_a_search() {
        let t0 = Template::ringhub_publish("t0", 48);
        let t1 = Template::ringhub_publish("t12", 48);
        let frames: Vec<Vec<u8>> = vec![
            t0.bytes.clone(),
            t1.bytes.clone(),
            br#"{"event":"reply","id":1,"topic":"t0"}"#.to_vec(),
            br#"{"event":"error","code":"bad","data":"x"}"#.to_vec(),
            br#"{"event":"m","topic":"t0","data":"0123"}"#.to_vec(),
            br#"{"topic":"t0","event":"m","data":"#.to_vec(),
            br#"{"topic":"t0","event":"m","data":""}"#.to_vec(),
            br#"{"topic":"t0","event":"m"}"#.to_vec(),
            br#""data":"abc"#.to_vec(),
            br#"{"topic":"t0","event":"m","x":"\"data\":\"","data":"z"}"#.to_vec(),
            b"".to_vec(),
        ];
        // Every ordered pair, then every frame after each other one as the learning frame.
        for a in &frames {
            for b in &frames {
                let mut c = Classifier::new(true);
                for f in [a, b, a, b] {
                    let got = kind(c.classify(f));
                    let want = reference(f).map(|(k, d)| (k, if k == b'd' { d } else { &b""[..] }));
                    assert_eq!(
                        got,
                        want,
                        "after {:?}: {:?}",
                        String::from_utf8_lossy(a),
                        String::from_utf8_lossy(f)
                    );
                }
            }
        }
        let mut c = Classifier::new(true);
        let mut buf = t0.bytes.clone();
        for seq in 0..3 {
            let h = Header {
                stream: 0,
                seq,
                ts_ns: seq * 7,
            };
            t0.fill(&mut buf, &h);
            match c.classify(&buf) {
                Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
                _ => panic!("not data"),
            }
        }
        assert_eq!(c.prefix, &t0.bytes[..t0.offset]);
    }
}
