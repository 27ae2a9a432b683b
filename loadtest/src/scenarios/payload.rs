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

/// The portable decoder (8 digits at a time in a `u64`); on x86_64 only the tests use it.
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
mod swar {
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

    pub fn get_hex(src: &[u8]) -> Option<u64> {
        src.chunks_exact(8)
            .try_fold(0u64, |acc, c| Some((acc << 32) | hex8(c)?))
    }
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `dst`.
    pub fn write(&self, dst: &mut [u8]) {
        put_hex(&mut dst[0..8], self.stream as u64);
        put_hex(&mut dst[8..24], self.seq);
        put_hex(&mut dst[24..40], self.ts_ns);
    }

    /// Parses a header from the start of `src` (`None` unless its first 40 bytes are
    /// lowercase hex). Runs for every delivered message, so on x86_64 it decodes all 40 digits
    /// with SSE2 (about a third of the instructions of the SWAR version, which other targets
    /// use and which the tests compare it with).
    #[inline]
    pub fn parse(src: &[u8]) -> Option<Header> {
        let src: &[u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
        #[cfg(target_arch = "x86_64")]
        {
            sse2::parse(src)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Header::parse_swar(src)
        }
    }

    /// The portable decoder: 8 digits at a time in a `u64`.
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    fn parse_swar(src: &[u8; HEADER_LEN]) -> Option<Header> {
        Some(Header {
            stream: swar::get_hex(&src[0..8])? as u32,
            seq: swar::get_hex(&src[8..24])?,
            ts_ns: swar::get_hex(&src[24..40])?,
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use super::{Header, HEADER_LEN};
    use std::arch::x86_64::*;

    /// Per byte: its nibble value, and an all-ones mask of the bytes that are `[0-9a-f]`.
    /// (`unsafe` only because the intrinsics are; SSE2 is always there on x86_64.)
    #[inline(always)]
    unsafe fn nibbles(x: __m128i) -> (__m128i, __m128i) {
        // Signed compares: bytes >= 0x80 are negative and fall outside both ranges.
        let digit = _mm_and_si128(
            _mm_cmpgt_epi8(x, _mm_set1_epi8(b'0' as i8 - 1)),
            _mm_cmplt_epi8(x, _mm_set1_epi8(b'9' as i8 + 1)),
        );
        let letter = _mm_and_si128(
            _mm_cmpgt_epi8(x, _mm_set1_epi8(b'a' as i8 - 1)),
            _mm_cmplt_epi8(x, _mm_set1_epi8(b'f' as i8 + 1)),
        );
        let v = _mm_add_epi8(
            _mm_and_si128(x, _mm_set1_epi8(0x0f)),
            _mm_and_si128(letter, _mm_set1_epi8(9)),
        );
        (v, _mm_or_si128(digit, letter))
    }

    /// Two nibbles (first one high) per 16-bit lane → one byte value per lane.
    #[inline(always)]
    unsafe fn pairs(v: __m128i) -> __m128i {
        _mm_or_si128(
            _mm_slli_epi16(_mm_and_si128(v, _mm_set1_epi16(0x00ff)), 4),
            _mm_srli_epi16(v, 8),
        )
    }

    #[inline(always)]
    pub fn parse(src: &[u8; HEADER_LEN]) -> Option<Header> {
        // SAFETY: SSE2 is part of the x86_64 baseline; the loads read 16, 16 and 8 bytes at
        // offsets 0, 16 and 32 of a 40-byte array, and the store writes a 32-byte array.
        let bytes = unsafe {
            let a = _mm_loadu_si128(src.as_ptr() as *const __m128i);
            let b = _mm_loadu_si128(src.as_ptr().add(16) as *const __m128i);
            let c = _mm_loadl_epi64(src.as_ptr().add(32) as *const __m128i);
            let (va, ma) = nibbles(a);
            let (vb, mb) = nibbles(b);
            let (vc, mc) = nibbles(c);
            let ok = _mm_movemask_epi8(_mm_and_si128(ma, mb)) == 0xffff
                && _mm_movemask_epi8(mc) & 0xff == 0xff;
            if !ok {
                return None;
            }
            let mut out = [0u8; 32];
            let lo = _mm_packus_epi16(pairs(va), pairs(vb));
            let hi = _mm_packus_epi16(pairs(vc), _mm_setzero_si128());
            _mm_storeu_si128(out.as_mut_ptr() as *mut __m128i, lo);
            _mm_storeu_si128(out.as_mut_ptr().add(16) as *mut __m128i, hi);
            out
        };
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(w)
        };
        Some(Header {
            stream: (word(0) >> 32) as u32,
            seq: word(4),
            ts_ns: word(12),
        })
    }
}

/// `--words`: pad with chat-like text instead of `x`.
pub static WORDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fills `dst` with words drawn by a fixed pseudo-random sequence from a small vocabulary:
/// text that compresses about as well as chat messages do (a run of `x` compresses ~1000:1).
fn words(dst: &mut [u8]) {
    const VOCAB: &[&str] = &[
        "the",
        "message",
        "room",
        "user",
        "hello",
        "thanks",
        "meeting",
        "tomorrow",
        "at",
        "please",
        "check",
        "update",
        "order",
        "status",
        "shipped",
        "price",
        "delivery",
        "and",
        "we",
        "you",
        "can",
        "will",
        "see",
        "new",
        "team",
        "lunch",
        "today",
        "yes",
        "no",
        "maybe",
        "ok",
        "great",
        "sounds",
        "good",
        "later",
        "project",
        "deadline",
        "friday",
        "call",
        "me",
        "when",
        "ready",
        "photo",
        "link",
        "sent",
        "received",
        "customer",
        "ticket",
        "42",
        "7",
        "2024",
        "payment",
        "confirmed",
        "sorry",
        "late",
        "traffic",
        "coming",
        "now",
        "where",
        "are",
        "is",
        "it",
        "on",
        "my",
        "way",
        "done",
        "review",
        "merge",
        "build",
        "green",
    ];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut text = Vec::with_capacity(dst.len() + 16);
    while text.len() < dst.len() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.extend_from_slice(VOCAB[(x % VOCAB.len() as u64) as usize].as_bytes());
        text.push(if x.is_multiple_of(11) { b'.' } else { b' ' });
    }
    dst.copy_from_slice(&text[..dst.len()]);
}

/// A message template: the full frame payload with a header slot at `offset`.
#[derive(Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub offset: usize,
}

impl Template {
    /// A raw payload of `size` bytes: header then `x` padding (or words, with `--words`).
    pub fn raw(size: usize) -> Template {
        let mut bytes = vec![b'x'; size.max(HEADER_LEN)];
        bytes[..HEADER_LEN].fill(b'0');
        if WORDS.load(std::sync::atomic::Ordering::Relaxed) {
            words(&mut bytes[HEADER_LEN..]);
        }
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

    /// A socket.io `publish` event (`42["publish","<topic>","<payload>"]`) that the socket.io
    /// peer re-emits to the room as `42["m","<payload>"]`.
    pub fn socketio_publish(topic: &str, size: usize) -> Template {
        let prefix = format!("42[\"publish\",\"{topic}\",\"");
        let mut bytes = prefix.clone().into_bytes();
        bytes.extend_from_slice(&Template::raw(size).bytes);
        bytes.extend_from_slice(b"\"]");
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
    /// An Engine.IO heartbeat (`2`): answer with the text `3`.
    Heartbeat,
}

/// The wire dialect a [`Classifier`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// ringhub's JSON envelope.
    Ringhub,
    /// Raw broadcast peers: the whole frame is the payload.
    Raw,
    /// socket.io v4 (Engine.IO v4): publications are `42["m","<payload>"]`.
    SocketIo,
}

/// How a socket.io publication starts (event `m`, one string argument).
const SIO_DATA: &[u8] = b"42[\"m\",\"";

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
    dialect: Dialect,
    data: Finder<'static>,
    prefix: Vec<u8>,
}

/// `{"event":` — the start of replies and errors, which are never data.
const EVENT: &[u8] = b"{\"event\":";
const DATA: &[u8] = b"\"data\":\"";

impl Classifier {
    pub fn new(dialect: Dialect) -> Classifier {
        Classifier {
            dialect,
            data: Finder::new(DATA),
            prefix: Vec::new(),
        }
    }

    pub fn classify<'a>(&mut self, frame: &'a [u8]) -> Incoming<'a> {
        match self.dialect {
            Dialect::Ringhub => {}
            Dialect::Raw => return Incoming::Data(frame),
            Dialect::SocketIo => return classify_socketio(frame),
        }
        if !self.prefix.is_empty() && frame.starts_with(&self.prefix) {
            return Incoming::Data(&frame[self.prefix.len()..]);
        }
        if let Some(0x80..=0x8f) = frame.first() {
            return classify_msgpack(frame);
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

/// A MessagePack envelope (`--msgpack`): a map whose first key is `event` is a reply or an
/// error; else the string after the `data` key holds the header, as in JSON.
fn classify_msgpack(frame: &[u8]) -> Incoming<'_> {
    let body = &frame[1..];
    if body.starts_with(b"\xa5event\xa5error") {
        return Incoming::Error;
    }
    if body.starts_with(b"\xa5event") {
        return Incoming::Reply;
    }
    let Some(i) = memchr::memmem::find(body, b"\xa4data") else {
        return Incoming::Malformed;
    };
    let at = i + 5;
    let skip = match body.get(at) {
        Some(0xa0..=0xbf) => 1,
        Some(0xd9) => 2,
        Some(0xda) => 3,
        Some(0xdb) => 5,
        _ => return Incoming::Malformed,
    };
    body.get(at + skip..)
        .map_or(Incoming::Malformed, Incoming::Data)
}

/// socket.io frames: a publication, the heartbeat, an error (`44…` connect error) or
/// anything else the protocol sends (open packet, acks), which is a reply.
fn classify_socketio(frame: &[u8]) -> Incoming<'_> {
    if let Some(d) = frame.strip_prefix(SIO_DATA) {
        return Incoming::Data(d);
    }
    match frame {
        b"2" => Incoming::Heartbeat,
        [b'4', b'4', ..] => Incoming::Error,
        [b'0' | b'4', ..] => Incoming::Reply,
        _ => Incoming::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_frames_are_classified() {
        let h = Header {
            stream: 3,
            seq: 42,
            ts_ns: 123_456_789,
        };
        let t = Template::ringhub_publish("t3", 64);
        let mut json = vec![0u8; t.bytes.len()];
        t.fill(&mut json, &h);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let data = v["data"].as_str().unwrap().as_bytes();
        // {"topic":"t3","event":..,"data":<str 8>} as the server converts it.
        let mut f = vec![0x83, 0xa5];
        f.extend_from_slice(b"topic\xa2t3\xa5event\xa1e\xa4data\xd9");
        f.push(data.len() as u8);
        f.extend_from_slice(data);
        let mut cls = Classifier::new(Dialect::Ringhub);
        match cls.classify(&f) {
            Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
            _ => panic!("not data"),
        }
        assert!(matches!(
            cls.classify(b"\x83\xa5event\xa5reply\xa2id\x01"),
            Incoming::Reply
        ));
        assert!(matches!(
            cls.classify(b"\x83\xa5event\xa5error\xa2id\x01"),
            Incoming::Error
        ));
        assert!(matches!(
            cls.classify(b"\x81\xa1x\xc0"),
            Incoming::Malformed
        ));
    }

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
        match Classifier::new(Dialect::Ringhub).classify(&buf) {
            Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
            _ => panic!("not data"),
        }
        assert!(Header::parse(b"zz").is_none());
        for bad in [b'g', b'/', b':', b'`', b'A', b' ', 0xc3] {
            let mut b = buf.clone();
            b[t.offset + 5] = bad;
            match Classifier::new(Dialect::Ringhub).classify(&b) {
                Incoming::Data(d) => assert_eq!(Header::parse(d), None, "byte {bad:#x}"),
                _ => panic!("not data"),
            }
        }
        assert_eq!(
            swar::get_hex(b"0123456789abcdef"),
            Some(0x0123_4567_89ab_cdef)
        );
    }

    #[test]
    fn header_decoders_agree() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut buf = [0u8; HEADER_LEN];
        for i in 0..20_000u64 {
            let h = Header {
                stream: next() as u32,
                seq: next() >> (i % 64),
                ts_ns: next(),
            };
            h.write(&mut buf);
            assert_eq!(Header::parse(&buf), Some(h));
            assert_eq!(Header::parse_swar(&buf), Some(h));
            // One byte replaced by an arbitrary value: both decoders must agree.
            let mut bad = buf;
            bad[(next() % HEADER_LEN as u64) as usize] = next() as u8;
            assert_eq!(Header::parse(&bad), Header::parse_swar(&bad), "{bad:?}");
        }
        for pos in 0..HEADER_LEN {
            for v in 0..=255u8 {
                let mut b = [b'0'; HEADER_LEN];
                b[pos] = v;
                let want = v.is_ascii_digit() || (b'a'..=b'f').contains(&v);
                assert_eq!(Header::parse(&b).is_some(), want, "byte {v:#x} at {pos}");
                assert_eq!(
                    Header::parse_swar(&b).is_some(),
                    want,
                    "swar byte {v:#x} at {pos}"
                );
            }
        }
        assert_eq!(Header::parse(&buf[..39]), None);
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
            Incoming::Heartbeat => Some((b'h', b"")),
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
                let mut c = Classifier::new(Dialect::Ringhub);
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
        let mut c = Classifier::new(Dialect::Ringhub);
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

    #[test]
    fn socketio_publication_round_trip() {
        let t = Template::socketio_publish("t0", 64);
        let mut buf = t.bytes.clone();
        let h = Header {
            stream: 3,
            seq: 99,
            ts_ns: 12_345,
        };
        t.fill(&mut buf, &h);
        let v: serde_json::Value = serde_json::from_slice(&buf[2..]).expect("valid JSON");
        assert_eq!(v[0], "publish");
        assert_eq!(v[1], "t0");
        // What the peer emits to the room: the same payload as event `m`.
        let emitted = format!("42{}", serde_json::json!(["m", v[2]]));
        let mut c = Classifier::new(Dialect::SocketIo);
        match c.classify(emitted.as_bytes()) {
            Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
            _ => panic!("not data"),
        }
        assert!(matches!(c.classify(b"2"), Incoming::Heartbeat));
        assert!(matches!(c.classify(b"431[]"), Incoming::Reply));
        assert!(matches!(c.classify(br#"0{"sid":"x"}"#), Incoming::Reply));
        assert!(matches!(
            c.classify(br#"44{"message":"no"}"#),
            Incoming::Error
        ));
        assert!(matches!(c.classify(b"3"), Incoming::Malformed));
        assert!(matches!(c.classify(b""), Incoming::Malformed));
    }
}
