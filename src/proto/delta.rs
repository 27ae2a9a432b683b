//! Fossil delta encoding (the format of the Fossil SCM, which Centrifugo also sends): a
//! sans-IO encoder and applier, and the split of a stored publication frame into the parts a
//! delta frame reuses.
//!
//! Format (<https://fossil-scm.org/home/doc/tip/www/delta_format.wiki>): the target's size,
//! `\n`, then commands — `N@O,` copies `N` bytes of the source from offset `O`, `N:<N bytes>`
//! inserts literal bytes — and `C;`, the target's checksum. Integers are written in base 64
//! with the digits [`DIGITS`].
//!
//! **UTF-8.** This encoder never cuts a UTF-8 character between a copy and a literal: when the
//! target is valid UTF-8 (JSON is), every literal is whole characters, so the delta is valid
//! UTF-8 too and travels as a plain JSON string. The output is an ordinary Fossil delta: any
//! Fossil applier reads it.
//!
//! No crate was used: the one on crates.io (`fossil-delta` 0.2) states that its deltas of
//! UTF-8 text may not be UTF-8, which this encoder guarantees, and the codec is 200 lines.

use bytes::{BufMut, Bytes, BytesMut};

/// The base-64 digits of Fossil's integers, lowest first.
pub const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Bytes hashed per block (and the rolling hash's window).
const NHASH: usize = 16;

/// Why a delta could not be applied. Stable codes for logs and clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta is not well formed (bad integer, unknown command, missing terminator).
    #[error("malformed delta: {0}")]
    Malformed(&'static str),
    /// A copy reads outside the source, or the output outgrows the size the delta announced.
    #[error("delta out of bounds: {0}")]
    Bounds(&'static str),
    /// The output's checksum or size differs from the delta's: wrong source or corrupt delta.
    #[error("delta checksum mismatch")]
    Checksum,
}

impl DeltaError {
    /// A stable string code.
    pub fn code(&self) -> &'static str {
        match self {
            DeltaError::Malformed(_) => "delta_malformed",
            DeltaError::Bounds(_) => "delta_bounds",
            DeltaError::Checksum => "delta_checksum",
        }
    }
}

fn put_int(out: &mut Vec<u8>, mut v: u64) {
    if v == 0 {
        out.push(b'0');
        return;
    }
    let mut buf = [0u8; 11];
    let mut i = buf.len();
    while v > 0 {
        i -= 1;
        buf[i] = DIGITS[(v & 63) as usize];
        v >>= 6;
    }
    out.extend_from_slice(&buf[i..]);
}

fn digit_count(v: usize) -> usize {
    let mut n = 1;
    let mut x = v >> 6;
    while x > 0 {
        n += 1;
        x >>= 6;
    }
    n
}

/// Fossil's checksum: the sum of the big-endian 32-bit words of `z` (a short tail padded).
pub fn checksum(z: &[u8]) -> u32 {
    let (mut s0, mut s1, mut s2, mut s3) = (0u32, 0u32, 0u32, 0u32);
    let mut chunks = z.chunks_exact(4);
    for c in &mut chunks {
        s0 = s0.wrapping_add(u32::from(c[0]));
        s1 = s1.wrapping_add(u32::from(c[1]));
        s2 = s2.wrapping_add(u32::from(c[2]));
        s3 = s3.wrapping_add(u32::from(c[3]));
    }
    let mut sum = s3
        .wrapping_add(s2 << 8)
        .wrapping_add(s1 << 16)
        .wrapping_add(s0 << 24);
    let r = chunks.remainder();
    for (i, &b) in r.iter().enumerate() {
        sum = sum.wrapping_add(u32::from(b) << (24 - 8 * i));
    }
    sum
}

/// Fossil's rolling hash over the last [`NHASH`] bytes.
struct Roll {
    a: u16,
    b: u16,
    i: usize,
    z: [u8; NHASH],
}

impl Roll {
    fn new(z: &[u8]) -> Self {
        let mut r = Roll {
            a: 0,
            b: 0,
            i: 0,
            z: [0; NHASH],
        };
        r.z.copy_from_slice(&z[..NHASH]);
        let (mut a, mut b) = (u16::from(z[0]), u16::from(z[0]));
        for &c in &z[1..NHASH] {
            a = a.wrapping_add(u16::from(c));
            b = b.wrapping_add(a);
        }
        r.a = a;
        r.b = b;
        r
    }

    fn next(&mut self, c: u8) {
        let old = self.z[self.i];
        self.z[self.i] = c;
        self.i = (self.i + 1) & (NHASH - 1);
        self.a = self
            .a
            .wrapping_sub(u16::from(old))
            .wrapping_add(u16::from(c));
        self.b = self
            .b
            .wrapping_sub((NHASH as u16).wrapping_mul(u16::from(old)))
            .wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        u32::from(self.a) | (u32::from(self.b) << 16)
    }
}

/// A UTF-8 continuation byte (never the first byte of a character).
#[inline]
fn is_cont(b: u8) -> bool {
    b & 0xC0 == 0x80
}

fn put_literal(out: &mut Vec<u8>, lit: &[u8]) {
    put_int(out, lit.len() as u64);
    out.push(b':');
    out.extend_from_slice(lit);
}

/// Encodes the delta that turns `src` into `target` (Fossil's algorithm: a hash of every
/// 16-byte block of the source, a rolling hash over the target, the longest match around each
/// hit). Copies start and end on UTF-8 character boundaries of the target.
pub fn encode(src: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 8 + 32);
    put_int(&mut out, target.len() as u64);
    out.push(b'\n');
    let (ls, lt) = (src.len(), target.len());
    if ls <= NHASH {
        put_literal(&mut out, target);
        put_int(&mut out, u64::from(checksum(target)));
        out.push(b';');
        return out;
    }
    let nhash = ls / NHASH;
    let mut collide = vec![u32::MAX; nhash];
    let mut landmark = vec![u32::MAX; nhash];
    let mut i = 0;
    while i + NHASH <= ls {
        let hv = Roll::new(&src[i..]).value() as usize % nhash;
        collide[i / NHASH] = landmark[hv];
        landmark[hv] = (i / NHASH) as u32;
        i += NHASH;
    }
    let mut base = 0usize;
    while base + NHASH < lt {
        let mut h = Roll::new(&target[base..]);
        let mut i = 0usize;
        loop {
            // (copy length, source offset, literal length before the copy)
            let mut best: Option<(usize, usize, usize)> = None;
            let mut block = landmark[h.value() as usize % nhash];
            let mut limit = 250;
            while block != u32::MAX && limit > 0 {
                limit -= 1;
                let isrc = block as usize * NHASH;
                let fwd = src[isrc..]
                    .iter()
                    .zip(&target[base + i..])
                    .take_while(|(a, b)| a == b)
                    .count();
                let mut back = 0;
                while back < isrc && back < i && src[isrc - back - 1] == target[base + i - back - 1]
                {
                    back += 1;
                }
                // Align the copy to characters of the target: cut continuation bytes off both
                // ends (they become literal bytes, which then hold whole characters).
                let (mut start, mut ofst, mut end) = (base + i - back, isrc - back, base + i + fwd);
                while start < end && is_cont(target[start]) {
                    start += 1;
                    ofst += 1;
                }
                while end > start && end < lt && is_cont(target[end]) {
                    end -= 1;
                }
                let cnt = end - start;
                let litsz = start - base;
                let cost = digit_count(litsz) + digit_count(cnt) + digit_count(ofst) + 3;
                if cnt >= cost && best.is_none_or(|b| cnt > b.0) {
                    best = Some((cnt, ofst, litsz));
                }
                block = collide[block as usize];
            }
            if let Some((cnt, ofst, litsz)) = best {
                if litsz > 0 {
                    put_literal(&mut out, &target[base..base + litsz]);
                }
                put_int(&mut out, cnt as u64);
                out.push(b'@');
                put_int(&mut out, ofst as u64);
                out.push(b',');
                base += litsz + cnt;
                break;
            }
            if base + i + NHASH >= lt {
                put_literal(&mut out, &target[base..]);
                base = lt;
                break;
            }
            h.next(target[base + i + NHASH]);
            i += 1;
        }
    }
    if base < lt {
        put_literal(&mut out, &target[base..]);
    }
    put_int(&mut out, u64::from(checksum(target)));
    out.push(b';');
    out
}

/// Reads one base-64 integer (at least one digit) from `d` at `*pos`.
fn get_int(d: &[u8], pos: &mut usize) -> Result<u64, DeltaError> {
    let start = *pos;
    let mut v: u64 = 0;
    while let Some(&c) = d.get(*pos) {
        let Some(digit) = DIGITS.iter().position(|&x| x == c) else {
            break;
        };
        v = v
            .checked_mul(64)
            .and_then(|v| v.checked_add(digit as u64))
            .ok_or(DeltaError::Malformed("integer overflow"))?;
        *pos += 1;
    }
    if *pos == start {
        return Err(DeltaError::Malformed("expected an integer"));
    }
    Ok(v)
}

/// Applies `delta` to `src`. The output may not exceed `max_len` bytes (the size the delta
/// announces is checked against it before anything is allocated). Never panics: a delta that
/// is malformed, reads outside `src` or fails its checksum is an error.
pub fn apply(src: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, DeltaError> {
    let mut pos = 0;
    let size = get_int(delta, &mut pos)?;
    if delta.get(pos) != Some(&b'\n') {
        return Err(DeltaError::Malformed("size not followed by a newline"));
    }
    pos += 1;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= max_len)
        .ok_or(DeltaError::Bounds("target larger than allowed"))?;
    let mut out = Vec::with_capacity(size);
    while pos < delta.len() {
        let n = get_int(delta, &mut pos)?;
        let cmd = delta.get(pos).copied();
        pos += 1;
        match cmd {
            Some(b'@') => {
                let ofst = get_int(delta, &mut pos)?;
                if delta.get(pos) != Some(&b',') {
                    return Err(DeltaError::Malformed("copy not followed by a comma"));
                }
                pos += 1;
                let (o, n) = (ofst as usize, n as usize);
                let piece = o
                    .checked_add(n)
                    .and_then(|e| src.get(o..e))
                    .ok_or(DeltaError::Bounds("copy outside the source"))?;
                if out.len() + piece.len() > size {
                    return Err(DeltaError::Bounds("copy past the announced size"));
                }
                out.extend_from_slice(piece);
            }
            Some(b':') => {
                let n = n as usize;
                let piece = pos
                    .checked_add(n)
                    .and_then(|e| delta.get(pos..e))
                    .ok_or(DeltaError::Bounds("literal past the delta's end"))?;
                if out.len() + piece.len() > size {
                    return Err(DeltaError::Bounds("literal past the announced size"));
                }
                out.extend_from_slice(piece);
                pos += n;
            }
            Some(b';') => {
                if out.len() != size || u64::from(checksum(&out)) != n {
                    return Err(DeltaError::Checksum);
                }
                return Ok(out);
            }
            _ => return Err(DeltaError::Malformed("unknown command")),
        }
    }
    Err(DeltaError::Malformed("no terminating checksum"))
}

/// The parts of a stored publication frame (`{"topic":T,"event":E,"data":D,"offset":O}`, as
/// [`envelope::stored_publication`](crate::proto::envelope::stored_publication) writes it,
/// WebSocket header included) that a delta frame reuses: `head` (`{"topic":T,"event":E,`),
/// `data` (`D`) and `tail` (`,"offset":O}`). `None` for a frame without `data` or of another
/// shape.
pub struct StoredParts {
    /// `{"topic":T,"event":E,`
    pub head: Bytes,
    /// The publication's data, as its exact JSON text.
    pub data: Bytes,
    /// `,"offset":O}`
    pub tail: Bytes,
}

/// Splits a frame written by `envelope::stored_publication`; see [`StoredParts`].
pub fn split_stored(frame: &Bytes) -> Option<StoredParts> {
    let hl = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let p = frame.get(hl..)?;
    let mut i = skip_prefix(p, 0, b"{\"topic\":")?;
    i = skip_string(p, i)?;
    i = skip_prefix(p, i, b",\"event\":")?;
    i = skip_string(p, i)?;
    let head_end = i + 1;
    let data_start = skip_prefix(p, i, b",\"data\":")?;
    let tail = p.windows(10).rposition(|w| w == b",\"offset\":")?;
    if tail < data_start {
        return None;
    }
    Some(StoredParts {
        head: frame.slice(hl..hl + head_end),
        data: frame.slice(hl + data_start..hl + tail),
        tail: frame.slice(hl + tail..),
    })
}

fn skip_prefix(p: &[u8], i: usize, prefix: &[u8]) -> Option<usize> {
    p.get(i..)?.starts_with(prefix).then_some(i + prefix.len())
}

/// The index after the JSON string starting at `p[i]`.
fn skip_string(p: &[u8], i: usize) -> Option<usize> {
    if p.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match p.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// Builds the delta frame `{"topic":T,"event":E,"delta":"<delta>","offset":O}` from a stored
/// frame's parts; `None` when the delta is not UTF-8 (the target was not) and cannot be a
/// JSON string.
pub fn delta_frame(parts: &StoredParts, delta: &[u8]) -> Option<Bytes> {
    let delta = std::str::from_utf8(delta).ok()?;
    let mut f = crate::proto::envelope::FrameBuilder::with_capacity(
        parts.head.len() + delta.len() + delta.len() / 8 + parts.tail.len() + 12,
    );
    let b: &mut BytesMut = f.payload();
    b.put_slice(&parts.head);
    b.put_slice(b"\"delta\":");
    crate::proto::envelope::put_json_str(b, delta);
    b.put_slice(&parts.tail);
    Some(f.finish(1))
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
