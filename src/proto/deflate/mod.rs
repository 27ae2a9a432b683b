//! permessage-deflate (RFC 7692), sans-IO: negotiation, the shard's compressor for outgoing
//! frames and its inflater for incoming messages.
//!
//! Neither direction keeps a window between messages by default (see [`negotiate`]), so both
//! are shared by every connection of a shard: a publication is compressed once and the
//! compressed frame is queued to every subscriber that negotiated the same window, and an
//! incoming message is inflated by the shard's one inflater into a buffer bounded by the
//! message limit. The exception, opt-in, is server context takeover ([`takeover`]).

mod negotiate;
mod takeover;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub(crate) use negotiate::negotiate;

use super::envelope::MAX_HEADER;
use super::frame::Fail;

/// The empty stored block a sender strips from the end of each message (RFC 7692 §7.2.1) and
/// the receiver appends back before inflating.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// The shard's compressor: one zlib stream per window size in use (almost always only the
/// default 15 bits), reset before each message.
pub(crate) struct Deflater {
    level: Compression,
    threshold: usize,
    streams: [Option<Box<Compress>>; 7],
    /// The own streams of the connections with context takeover.
    kept: takeover::Kept,
}

impl Deflater {
    /// A compressor at zlib `level` (0-9) for payloads of at least `threshold` bytes.
    pub fn new(level: u32, threshold: usize) -> Self {
        Self {
            level: Compression::new(level.min(9)),
            threshold,
            streams: Default::default(),
            kept: takeover::Kept::default(),
        }
    }

    /// The compressed form of a whole unfragmented server `frame` (header included) for a
    /// window of `bits` (9..=15): `None` for control frames, payloads under the threshold, and
    /// payloads that compression would not shrink, which go out as they are.
    pub fn frame(&mut self, frame: &[u8], bits: u8) -> Option<Bytes> {
        self.compress(frame, bits, false)
    }

    /// [`frame`](Self::frame) whatever the payload's size and the result's: for the echo
    /// route, a conformance tool, whose Autobahn runner (kosoku 0.1.0) mishandles an
    /// uncompressed message on a compressing connection (RFC 7692 allows one).
    pub fn frame_always(&mut self, frame: &[u8], bits: u8) -> Option<Bytes> {
        self.compress(frame, bits, true)
    }

    fn compress(&mut self, frame: &[u8], bits: u8, always: bool) -> Option<Bytes> {
        let (op, payload) = server_payload(frame)?;
        if (payload.len() < self.threshold && !always) || !(9..=15).contains(&bits) {
            return None;
        }
        let level = self.level;
        let z = self.streams[usize::from(bits - 9)]
            .get_or_insert_with(|| Box::new(Compress::new_with_window_bits(level, false, bits)));
        z.reset();
        encode(z, op, payload, (!always).then_some(payload.len()))
    }
}

/// Compresses `payload` (one whole message) with a sync flush into a frame of opcode `op`,
/// RSV1 set. `None` when zlib fails or, given a `limit`, as soon as the output reaches it: the
/// stream then holds part of the message and must be reset before the next.
fn encode(z: &mut Compress, op: u8, payload: &[u8], limit: Option<usize>) -> Option<Bytes> {
    let mut out = Vec::with_capacity(MAX_HEADER + payload.len() / 2 + 64);
    out.resize(MAX_HEADER, 0);
    let mut used = 0;
    loop {
        if limit.is_some_and(|l| out.len() - MAX_HEADER >= l) {
            return None;
        }
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity());
        }
        let before = z.total_in();
        z.compress_vec(&payload[used..], &mut out, FlushCompress::Sync)
            .ok()?;
        used += (z.total_in() - before) as usize;
        // A sync flush is complete when it left output room unused.
        if used == payload.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    let len = out.len() - MAX_HEADER;
    if limit.is_some_and(|l| len >= l) {
        return None;
    }
    let head = header(0x80 | 0x40 | op, len);
    let start = MAX_HEADER - head.len();
    out[start..MAX_HEADER].copy_from_slice(&head);
    Some(Bytes::from(out).slice(start..))
}

/// The opcode and payload of an unmasked, unfragmented, uncompressed text or binary frame.
fn server_payload(frame: &[u8]) -> Option<(u8, &[u8])> {
    let [b0, b1, ..] = *frame else { return None };
    if b0 & 0xf0 != 0x80 || !matches!(b0 & 0x0f, 1 | 2) || b1 & 0x80 != 0 {
        return None;
    }
    let at = match b1 {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((b0 & 0x0f, frame.get(at..)?))
}

/// A server frame header (no mask) for a payload of `len` bytes.
fn header(b0: u8, len: usize) -> Vec<u8> {
    let mut h = vec![b0];
    match len {
        n if n < 126 => h.push(n as u8),
        n if n <= 0xffff => {
            h.push(126);
            h.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            h.push(127);
            h.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    h
}

/// Largest inflate buffer kept between messages; a larger one is freed after its message.
const KEEP_OUT: usize = 64 * 1024;

/// The shard's inflater: one raw-deflate stream with a 32 KB window (enough for any window a
/// client may use), reset before each message, allocated at the first compressed message.
#[derive(Default)]
pub(crate) struct Inflater {
    stream: Option<Box<Decompress>>,
    out: Vec<u8>,
}

const TOO_BIG: Fail = (1009, "message too big");
const CORRUPT: Fail = (1007, "invalid compressed data");

impl Inflater {
    /// Inflates one whole message (its frames' payloads joined). Fails with 1009 as soon as
    /// the output would pass `max` bytes: the buffer never grows past `max + 1`, whatever the
    /// compression ratio of the input (a deflate bomb).
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<&[u8], Fail> {
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        }
        self.out.clear();
        let z = self
            .stream
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        z.reset(false);
        if !feed(z, &mut self.out, data, max)? {
            feed(z, &mut self.out, &TAIL, max)?;
        }
        Ok(&self.out)
    }
}

/// Inflates `data` into `out`; true when the deflate stream ended (a final block).
fn feed(z: &mut Decompress, out: &mut Vec<u8>, mut data: &[u8], max: usize) -> Result<bool, Fail> {
    loop {
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(TOO_BIG);
            }
            let want = (out.capacity() * 2).max(4096).min(max + 1);
            out.reserve_exact(want - out.len());
        }
        let (before_in, before_out) = (z.total_in(), out.len());
        let status = z
            .decompress_vec(data, out, FlushDecompress::Sync)
            .map_err(|_| CORRUPT)?;
        data = &data[(z.total_in() - before_in) as usize..];
        if out.len() > max {
            return Err(TOO_BIG);
        }
        if status == Status::StreamEnd {
            return Ok(true);
        }
        let room = out.len() < out.capacity();
        if data.is_empty() && room {
            return Ok(false);
        }
        if room && z.total_in() == before_in && out.len() == before_out {
            return Err(CORRUPT);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::envelope::raw_frame;

    /// Inflates what [`Deflater::frame`] produced, as a client does.
    fn client_inflate(frame: &[u8]) -> (u8, Vec<u8>) {
        let at = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mut inf = Inflater::default();
        (
            frame[0],
            inf.inflate(&frame[at..], usize::MAX - 1).unwrap().to_vec(),
        )
    }

    /// Raw deflate of `data` with the tail stripped, as a client sends a message.
    pub(crate) fn client_deflate(data: &[u8]) -> Vec<u8> {
        let mut z = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compresses_above_the_threshold_with_rsv1_and_round_trips() {
        let mut d = Deflater::new(6, 100);
        let text = br#"{"topic":"chat:room","event":"message","data":{"text":"hello hello hello hello hello hello"}}"#.repeat(20);
        for bits in [9, 12, 15] {
            let f = d.frame(&raw_frame(1, &text), bits).unwrap();
            assert_eq!(f[0], 0xC1, "FIN + RSV1 + text");
            assert!(f.len() < text.len() / 4, "{} bytes", f.len());
            assert_eq!(client_inflate(&f).1, text);
        }
        let bin: Vec<u8> = (0..70000u32).map(|i| (i % 7) as u8).collect();
        let f = d.frame(&raw_frame(2, &bin), 15).unwrap();
        assert_eq!(f[0], 0xC2);
        assert_eq!(client_inflate(&f).1, bin);
    }

    #[test]
    fn small_control_and_incompressible_frames_are_left_alone() {
        let mut d = Deflater::new(6, 100);
        assert_eq!(d.frame(&raw_frame(1, &[b'a'; 99]), 15), None, "threshold");
        assert!(d.frame(&raw_frame(1, &[b'a'; 100]), 15).is_some());
        assert_eq!(d.frame(&raw_frame(9, &[b'a'; 120]), 15), None, "ping");
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(d.frame(&raw_frame(2, &noise), 15), None, "would grow");
        assert_eq!(d.frame(&[0x81], 15), None, "truncated");
        for f in [raw_frame(2, &noise), raw_frame(1, b""), raw_frame(1, b"x")] {
            let c = d.frame_always(&f, 15).unwrap();
            let payload = server_payload(&f).unwrap().1.to_vec();
            assert_eq!(client_inflate(&c), (f[0] | 0x40, payload));
        }
    }

    #[test]
    fn inflates_client_messages_and_refuses_garbage() {
        let mut inf = Inflater::default();
        let msg = b"Hello, hello, hello, hello!".repeat(10);
        assert_eq!(inf.inflate(&client_deflate(&msg), 1000).unwrap(), &msg[..]);
        // RFC 7692 §7.2.3.1: "Hello" compressed, then reused for the next message.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inf.inflate(&hello, 1000).unwrap(), b"Hello");
        assert_eq!(inf.inflate(&hello, 1000).unwrap(), b"Hello");
        assert_eq!(inf.inflate(&[], 1000).unwrap(), b"");
        assert_eq!(inf.inflate(&[0xff, 0xff, 0xff], 1000).unwrap_err().0, 1007);
    }

    #[test]
    fn a_deflate_bomb_is_refused_without_growing_past_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = client_deflate(&zeros);
        assert!(bomb.len() < 10_000, "{} bytes", bomb.len());
        let mut inf = Inflater::default();
        let max = 100_000;
        assert_eq!(inf.inflate(&bomb, max).map(<[u8]>::len), Err(TOO_BIG));
        assert!(inf.out.capacity() <= max + 1, "{}", inf.out.capacity());
        // Exactly at the limit is fine.
        let at = client_deflate(&zeros[..max]);
        assert_eq!(inf.inflate(&at, max).unwrap().len(), max);
        assert_eq!(
            inf.inflate(&client_deflate(&zeros[..max + 1]), max),
            Err(TOO_BIG)
        );
        // The inflater is usable after a refusal, and a large buffer is not kept.
        assert_eq!(inf.inflate(&client_deflate(b"ok"), max).unwrap(), b"ok");
        assert!(inf.out.capacity() <= KEEP_OUT);
    }
}
