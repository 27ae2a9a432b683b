// Applies a Fossil delta (https://fossil-scm.org/home/doc/tip/www/delta_format.wiki): the
// target's size, "\n", then N@O, (copy N bytes of the source from O), N:<N bytes> (literal)
// and C; (checksum). Throws on a malformed delta, a copy outside the source or a bad checksum.
const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~'
const VAL = new Int8Array(128).fill(-1)
for (let i = 0; i < 64; i++) VAL[DIGITS.charCodeAt(i)] = i

function checksum(z) {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0
  const n = z.length - (z.length % 4)
  for (let i = 0; i < n; i += 4) {
    s0 = (s0 + z[i]) | 0
    s1 = (s1 + z[i + 1]) | 0
    s2 = (s2 + z[i + 2]) | 0
    s3 = (s3 + z[i + 3]) | 0
  }
  let sum = (s3 + (s2 << 8) + (s1 << 16) + (s0 << 24)) | 0
  for (let i = n; i < z.length; i++) sum = (sum + (z[i] << (24 - 8 * (i - n)))) | 0
  return sum >>> 0
}

/** `src` and `delta` are Uint8Arrays; returns the target; `max` bounds its size. */
export function applyDelta(src, delta, max = 64 << 20) {
  let pos = 0
  const int = () => {
    let v = 0
    const start = pos
    for (let c; pos < delta.length && (c = delta[pos]) < 128 && VAL[c] >= 0; pos++) {
      v = v * 64 + VAL[c]
      if (v > Number.MAX_SAFE_INTEGER / 64) throw new Error('delta: integer overflow')
    }
    if (pos === start) throw new Error('delta: expected an integer')
    return v
  }
  const size = int()
  if (delta[pos++] !== 10) throw new Error('delta: size not followed by a newline')
  if (size > max) throw new Error('delta: target too large')
  const out = new Uint8Array(size)
  let len = 0
  while (pos < delta.length) {
    const n = int()
    const cmd = delta[pos++]
    if (cmd === 64 /* @ */) {
      const o = int()
      if (delta[pos++] !== 44 /* , */) throw new Error('delta: copy not followed by a comma')
      if (o + n > src.length || len + n > size) throw new Error('delta: copy out of bounds')
      out.set(src.subarray(o, o + n), len)
      len += n
    } else if (cmd === 58 /* : */) {
      if (pos + n > delta.length || len + n > size) throw new Error('delta: literal out of bounds')
      out.set(delta.subarray(pos, pos + n), len)
      len += n
      pos += n
    } else if (cmd === 59 /* ; */) {
      if (len !== size || checksum(out) !== n) throw new Error('delta: checksum mismatch')
      return out
    } else throw new Error('delta: unknown command')
  }
  throw new Error('delta: no terminating checksum')
}
