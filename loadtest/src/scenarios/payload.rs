//! The 40-byte ASCII header every measured message starts with:
//! stream id (8 hex), sequence number (16 hex), send timestamp in ns since the common
//! epoch (16 hex); the rest of the payload is padding up to the requested size.

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
    /// Where a fixed-width Socket.IO ack id ([`ack_id`]) is written, if the frame asks for one.
    pub ack_at: Option<usize>,
}

/// Digits of the Socket.IO ack ids the publisher sends: ids are `1_000_000 + seq % 1_000_000`,
/// always 7 digits, so a template keeps its length (no leading zero, which parsers may refuse).
pub const ACK_DIGITS: usize = 7;

/// The Socket.IO ack id of publication `seq` ([`ACK_DIGITS`] digits).
pub fn ack_id(seq: u64) -> u64 {
    1_000_000 + seq % 1_000_000
}

impl Template {
    /// A raw payload of `size` bytes: header then `x` padding (or words, with `--words`).
    pub fn raw(size: usize) -> Template {
        let mut bytes = vec![b'x'; size.max(HEADER_LEN)];
        bytes[..HEADER_LEN].fill(b'0');
        if WORDS.load(std::sync::atomic::Ordering::Relaxed) {
            words(&mut bytes[HEADER_LEN..]);
        }
        Template {
            bytes,
            offset: 0,
            ack_at: None,
        }
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
            ack_at: None,
        }
    }

    /// A Socket.IO `publish` event with an ack, ringhub's default event
    /// (`42<id>["publish",{"topic":"<topic>","event":"m","data":"<payload>"}]`, docs/PROTOCOL.md)
    /// that the socket.io peer (`scripts/peers/socketio-cluster-server.js`) handles the same
    /// way: `io.to(topic).emit("m", data)`, then the ack. Subscribers get `42["m","<payload>"]`.
    pub fn socketio_publish(topic: &str, size: usize) -> Template {
        let id = "0".repeat(ACK_DIGITS);
        let prefix =
            format!("42{id}[\"publish\",{{\"topic\":\"{topic}\",\"event\":\"m\",\"data\":\"");
        let mut bytes = prefix.clone().into_bytes();
        bytes.extend_from_slice(&Template::raw(size).bytes);
        bytes.extend_from_slice(b"\"}]");
        Template {
            bytes,
            offset: prefix.len(),
            ack_at: Some(2),
        }
    }

    /// Copies the template into `dst` with `h` filled in.
    pub fn fill(&self, dst: &mut [u8], h: &Header) {
        dst.copy_from_slice(&self.bytes);
        h.write(&mut dst[self.offset..self.offset + HEADER_LEN]);
        if let Some(at) = self.ack_at {
            let mut id = ack_id(h.seq);
            for d in dst[at..at + ACK_DIGITS].iter_mut().rev() {
                *d = b'0' + (id % 10) as u8;
                id /= 10;
            }
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
        // The header sits at the template's offset, the start of `data` (classify.rs tests
        // that the classifier finds it there).
        assert_eq!(Header::parse(&buf[t.offset..]), Some(h));
        assert!(Header::parse(b"zz").is_none());
        for bad in [b'g', b'/', b':', b'`', b'A', b' ', 0xc3] {
            let mut b = buf.clone();
            b[t.offset + 5] = bad;
            assert_eq!(Header::parse(&b[t.offset..]), None, "byte {bad:#x}");
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
}
