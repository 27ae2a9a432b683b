//! Applying Fossil deltas (the `delta` of a publication on a delta subscription): the target's
//! size, `\n`, then `N@O,` (copy `N` bytes of the source from `O`), `N:<N bytes>` (literal)
//! and `C;` (checksum). Never panics on a malformed delta: every error is an `Err`. The
//! client applies deltas itself; this is public for tools that read the wire directly (the
//! load generator).

/// Fossil's base-64 digits, lowest first.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

fn get_int(d: &[u8], pos: &mut usize) -> Result<u64, &'static str> {
    let start = *pos;
    let mut v: u64 = 0;
    while let Some(digit) = d.get(*pos).and_then(|c| DIGITS.iter().position(|x| x == c)) {
        v = v
            .checked_mul(64)
            .and_then(|v| v.checked_add(digit as u64))
            .ok_or("integer overflow")?;
        *pos += 1;
    }
    if *pos == start {
        return Err("expected an integer");
    }
    Ok(v)
}

/// Fossil's checksum: the sum of the big-endian 32-bit words (a short tail padded).
pub(crate) fn checksum(z: &[u8]) -> u32 {
    let mut s = [0u32; 4];
    let mut chunks = z.chunks_exact(4);
    for c in &mut chunks {
        for (acc, &b) in s.iter_mut().zip(c) {
            *acc = acc.wrapping_add(u32::from(b));
        }
    }
    let mut sum = s[3]
        .wrapping_add(s[2] << 8)
        .wrapping_add(s[1] << 16)
        .wrapping_add(s[0] << 24);
    for (i, &b) in chunks.remainder().iter().enumerate() {
        sum = sum.wrapping_add(u32::from(b) << (24 - 8 * i));
    }
    sum
}

/// Applies `delta` to `src`; the target may not exceed `max_len` bytes. The error says why
/// the delta was refused (malformed, out of bounds, checksum).
pub fn apply(src: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, &'static str> {
    let mut pos = 0;
    let size = get_int(delta, &mut pos)?;
    if delta.get(pos) != Some(&b'\n') {
        return Err("size not followed by a newline");
    }
    pos += 1;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= max_len)
        .ok_or("target too large")?;
    let mut out = Vec::with_capacity(size);
    while pos < delta.len() {
        let n = get_int(delta, &mut pos)?;
        let cmd = delta.get(pos).copied();
        pos += 1;
        let piece = match cmd {
            Some(b'@') => {
                let o = get_int(delta, &mut pos)? as usize;
                if delta.get(pos) != Some(&b',') {
                    return Err("copy not followed by a comma");
                }
                pos += 1;
                o.checked_add(n as usize)
                    .and_then(|e| src.get(o..e))
                    .ok_or("copy outside the source")?
            }
            Some(b':') => {
                let p = pos
                    .checked_add(n as usize)
                    .and_then(|e| delta.get(pos..e))
                    .ok_or("literal past the end")?;
                pos += p.len();
                p
            }
            Some(b';') if out.len() == size && u64::from(checksum(&out)) == n => return Ok(out),
            Some(b';') => return Err("checksum mismatch"),
            _ => return Err("unknown command"),
        };
        if out.len() + piece.len() > size {
            return Err("output past the announced size");
        }
        out.extend_from_slice(piece);
    }
    Err("no terminating checksum")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_copies_and_literals_and_checks() {
        let src = b"hello world, hello fossil";
        let target = b"hello there, hello fossil!";
        // 6 bytes copied, a literal, 14 (E) copied from 11 (B), a literal.
        let mut d = b"Q\n6@0,5:thereE@B,1:!".to_vec();
        assert_eq!(target.len(), 26); // "Q" = 26
        let mut ck = Vec::new();
        let mut v = checksum(target);
        loop {
            ck.insert(0, DIGITS[(v & 63) as usize]);
            v >>= 6;
            if v == 0 {
                break;
            }
        }
        d.extend_from_slice(&ck);
        d.push(b';');
        assert_eq!(apply(src, &d, 1000).unwrap(), target);
        for cut in 0..d.len() {
            assert!(apply(src, &d[..cut], 1000).is_err());
        }
        assert!(apply(b"hello", &d, 1000).is_err(), "wrong source");
        assert!(apply(src, &d, 10).is_err(), "over the limit");
        assert!(apply(src, b"3\n9999999999999999@0,", 100).is_err());
    }
}
