//! The frames a Redis subscriber connection receives, parsed straight from the socket buffer.
//!
//! The cluster thread used to turn every received publication into a `redis::Msg` (a `Value`
//! tree, a `Vec` and three owned byte buffers) before decoding it; at ~100k+ publications/s a
//! node that is most of its cost. This parser borrows every field from the buffer instead and
//! allocates nothing. It reads only what a subscriber connection is sent — RESP2 arrays (`*`)
//! and RESP3 pushes (`>`) of bulk strings, simple strings, integers and nulls, plus top-level
//! simple strings, errors and integers (`AUTH`/`SELECT` answers, refusals) — and refuses
//! everything else with an error, after which the connection is dropped and opened again.
//! Commands (`SUBSCRIBE`, `AUTH`, …) are still encoded by the `redis` crate.

use std::fmt;

/// Longest bulk string accepted (a publication's payload). Larger ones are refused rather than
/// buffered: a node never publishes that much, so such a frame means the stream is not what it
/// should be.
pub const MAX_BULK: usize = 64 << 20;
/// Longest line (a simple string or error, or a length header) accepted without its `\r\n`.
pub const MAX_LINE: usize = 64 << 10;
/// Most elements in a push frame (a `pmessage` has 4).
pub const MAX_ELEMENTS: usize = 16;

/// Why the bytes are not a subscriber connection's stream. The stream cannot be resynchronised
/// after this: the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// A bulk string longer than [`MAX_BULK`] or a line longer than [`MAX_LINE`].
    TooLarge(usize),
    /// Bytes that are not RESP, or RESP a subscriber connection is never sent.
    Malformed(&'static str),
}

impl RespError {
    /// A stable code for logs and metrics.
    pub const fn code(&self) -> &'static str {
        match self {
            RespError::TooLarge(_) => "resp_too_large",
            RespError::Malformed(_) => "resp_malformed",
        }
    }
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::TooLarge(n) => write!(f, "{}: {n} bytes announced", self.code()),
            RespError::Malformed(why) => write!(f, "{}: {why}", self.code()),
        }
    }
}

impl std::error::Error for RespError {}

/// What a subscription confirmation confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// `subscribe` or `psubscribe`.
    Subscribe,
    /// `unsubscribe` or `punsubscribe`.
    Unsubscribe,
}

/// One frame, its fields borrowed from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push<'a> {
    /// A publication on a channel (`message`, or `pmessage` for a pattern subscription, or
    /// `smessage`).
    Message {
        /// The pattern that matched (`pmessage` only).
        pattern: Option<&'a [u8]>,
        /// The channel it was published on.
        channel: &'a [u8],
        /// What was published.
        payload: &'a [u8],
    },
    /// A (p)subscribe or (p)unsubscribe confirmation, one per channel or pattern named.
    Confirm {
        /// Which kind.
        kind: Confirm,
        /// The channel or pattern (absent when an unsubscribe-all found nothing).
        name: Option<&'a [u8]>,
    },
    /// A top-level error reply (a refused command), without the leading `-`.
    Error(&'a [u8]),
    /// Anything else a subscriber connection may be sent: `+OK`, a `pong`, an integer.
    Other,
}

/// Parses the first complete frame of `buf`: the frame and its length in bytes, `Ok(None)` when
/// more bytes are needed, or an error when `buf` cannot start a frame. Never panics.
pub fn parse(buf: &[u8]) -> Result<Option<(Push<'_>, usize)>, RespError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    match kind {
        b'*' | b'>' => {
            let Some((n, mut at)) = header(buf, 1)? else {
                return Ok(None);
            };
            let n = usize::try_from(n).map_err(|_| RespError::Malformed("negative array"))?;
            if n > MAX_ELEMENTS {
                return Err(RespError::Malformed("too many elements"));
            }
            let mut items: [Item<'_>; MAX_ELEMENTS] = [Item::Nil; MAX_ELEMENTS];
            for slot in items.iter_mut().take(n) {
                let Some((item, next)) = element(buf, at)? else {
                    return Ok(None);
                };
                *slot = item;
                at = next;
            }
            Ok(Some((classify(&items[..n]), at)))
        }
        b'+' | b':' => Ok(line(buf, 1)?.map(|(_, end)| (Push::Other, end))),
        b'-' => Ok(line(buf, 1)?.map(|(text, end)| (Push::Error(text), end))),
        _ => Err(RespError::Malformed("unexpected frame type")),
    }
}

/// One element of an array.
#[derive(Clone, Copy)]
enum Item<'a> {
    Bytes(&'a [u8]),
    Int,
    Nil,
}

fn classify<'a>(items: &[Item<'a>]) -> Push<'a> {
    let kind = match items.first() {
        Some(Item::Bytes(k)) => *k,
        _ => return Push::Other,
    };
    let bytes = |i: usize| match items.get(i) {
        Some(Item::Bytes(b)) => Some(*b),
        _ => None,
    };
    match (kind, items.len()) {
        (b"message" | b"smessage", 3) => match (bytes(1), bytes(2)) {
            (Some(channel), Some(payload)) => Push::Message {
                pattern: None,
                channel,
                payload,
            },
            _ => Push::Other,
        },
        (b"pmessage", 4) => match (bytes(1), bytes(2), bytes(3)) {
            (Some(p), Some(channel), Some(payload)) => Push::Message {
                pattern: Some(p),
                channel,
                payload,
            },
            _ => Push::Other,
        },
        (b"subscribe" | b"psubscribe" | b"ssubscribe", 3) => Push::Confirm {
            kind: Confirm::Subscribe,
            name: bytes(1),
        },
        (b"unsubscribe" | b"punsubscribe" | b"sunsubscribe", 3) => Push::Confirm {
            kind: Confirm::Unsubscribe,
            name: bytes(1),
        },
        _ => Push::Other,
    }
}

/// The element at `at`, and where the next one starts.
fn element(buf: &[u8], at: usize) -> Result<Option<(Item<'_>, usize)>, RespError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    match kind {
        b'$' => {
            let Some((n, start)) = header(buf, at + 1)? else {
                return Ok(None);
            };
            if n < 0 {
                return Ok(Some((Item::Nil, start)));
            }
            let n = usize::try_from(n).map_err(|_| RespError::Malformed("bulk length"))?;
            if n > MAX_BULK {
                return Err(RespError::TooLarge(n));
            }
            let end = start + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::Malformed("bulk string not ended by CRLF"));
            }
            Ok(Some((Item::Bytes(&buf[start..end]), end + 2)))
        }
        b'+' => Ok(line(buf, at + 1)?.map(|(s, end)| (Item::Bytes(s), end))),
        b':' => match header(buf, at + 1)? {
            Some((_, end)) => Ok(Some((Item::Int, end))),
            None => Ok(None),
        },
        b'_' => match line(buf, at + 1)? {
            Some((b"", end)) => Ok(Some((Item::Nil, end))),
            Some(_) => Err(RespError::Malformed("null with content")),
            None => Ok(None),
        },
        _ => Err(RespError::Malformed("unexpected element type")),
    }
}

/// The line starting at `at` (without its CRLF) and where the next one starts.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(at..).unwrap_or_default();
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(p) => Ok(Some((&rest[..p], at + p + 2))),
        None if rest.len() > MAX_LINE + 1 => Err(RespError::TooLarge(rest.len())),
        None => Ok(None),
    }
}

/// A decimal length or integer line (`-1`, `3`), and where the next line starts.
fn header(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, RespError> {
    let rest = buf.get(at..).unwrap_or_default();
    // "-9223372036854775808\r\n" is 22 bytes: anything longer is not a number.
    let window = &rest[..rest.len().min(24)];
    let Some(p) = window.iter().position(|&b| b == b'\r') else {
        return if rest.len() >= 24 {
            Err(RespError::Malformed("number too long"))
        } else {
            Ok(None)
        };
    };
    match rest.get(p + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(RespError::Malformed("CR not followed by LF")),
    }
    let digits = &rest[..p];
    let (neg, digits) = match digits.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return Err(RespError::Malformed("empty number"));
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::Malformed("not a number"));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(RespError::Malformed("number out of range"))?;
    }
    Ok(Some((if neg { -v } else { v }, at + p + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }

    fn frame(head: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![head];
        out.extend_from_slice(format!("{}\r\n", parts.len()).as_bytes());
        for p in parts {
            bulk(&mut out, p);
        }
        out
    }

    #[test]
    fn messages_in_resp2_and_resp3() {
        for head in [b'*', b'>'] {
            let f = frame(head, &[b"message", b"rh:t:a", b"\r\n\x00payload"]);
            let (p, n) = parse(&f).unwrap().unwrap();
            assert_eq!(n, f.len());
            assert_eq!(
                p,
                Push::Message {
                    pattern: None,
                    channel: b"rh:t:a",
                    payload: b"\r\n\x00payload"
                }
            );
            let f = frame(head, &[b"pmessage", b"rh:t:a*", b"rh:t:ab", b""]);
            let (p, n) = parse(&f).unwrap().unwrap();
            assert_eq!(n, f.len());
            assert_eq!(
                p,
                Push::Message {
                    pattern: Some(b"rh:t:a*"),
                    channel: b"rh:t:ab",
                    payload: b""
                }
            );
        }
    }

    #[test]
    fn confirmations_errors_and_others() {
        let f = b"*3\r\n$10\r\npsubscribe\r\n$4\r\nrh:*\r\n:2\r\n";
        let (p, n) = parse(f).unwrap().unwrap();
        assert_eq!(n, f.len());
        assert_eq!(
            p,
            Push::Confirm {
                kind: Confirm::Subscribe,
                name: Some(b"rh:*")
            }
        );
        let f = b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n";
        assert_eq!(
            parse(f).unwrap().unwrap().0,
            Push::Confirm {
                kind: Confirm::Unsubscribe,
                name: None
            }
        );
        let f = b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n";
        assert!(matches!(
            parse(f).unwrap().unwrap().0,
            Push::Confirm { name: None, .. }
        ));
        assert_eq!(
            parse(b"-ERR unknown command\r\n").unwrap().unwrap(),
            (Push::Error(b"ERR unknown command"), 22)
        );
        assert_eq!(parse(b"+OK\r\n").unwrap().unwrap(), (Push::Other, 5));
        assert_eq!(parse(b":12\r\n").unwrap().unwrap(), (Push::Other, 5));
        let pong = frame(b'*', &[b"pong", b""]);
        assert_eq!(parse(&pong).unwrap().unwrap().0, Push::Other);
        // A message with a wrong element count is not a message.
        let odd = frame(b'*', &[b"message", b"a"]);
        assert_eq!(parse(&odd).unwrap().unwrap().0, Push::Other);
        assert_eq!(parse(b"*0\r\n").unwrap().unwrap(), (Push::Other, 4));
    }

    #[test]
    fn every_split_point_waits_then_parses() {
        let mut stream = frame(b'*', &[b"message", b"rh:t:a", b"first"]);
        stream.extend(frame(b'>', &[b"pmessage", b"p*", b"pq", b"second"]));
        stream.extend_from_slice(b"+OK\r\n");
        let first = frame(b'*', &[b"message", b"rh:t:a", b"first"]).len();
        for cut in 0..first {
            assert_eq!(parse(&stream[..cut]), Ok(None), "cut at {cut}");
        }
        // Fed in pieces of every size, the same frames come out.
        for piece in 1..stream.len() {
            let (mut buf, mut got) = (Vec::new(), Vec::new());
            for chunk in stream.chunks(piece) {
                buf.extend_from_slice(chunk);
                while let Some((p, n)) = parse(&buf).unwrap() {
                    got.push(format!("{p:?}"));
                    buf.drain(..n);
                }
            }
            assert!(buf.is_empty());
            assert_eq!(got.len(), 3, "piece {piece}: {got:?}");
        }
    }

    #[test]
    fn huge_lengths_are_refused_not_buffered() {
        let f = format!("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n${}\r\n", MAX_BULK + 1);
        assert_eq!(parse(f.as_bytes()), Err(RespError::TooLarge(MAX_BULK + 1)));
        let f = b"*3\r\n$99999999999999999999999\r\n";
        assert!(matches!(parse(f), Err(RespError::Malformed(_))));
        assert!(parse(b"*9223372036854775807\r\n").is_err());
        assert!(parse(b"*-1\r\n").is_err());
        // A line that never ends is refused once longer than MAX_LINE.
        let mut long = b"+".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE));
        assert_eq!(parse(&long), Ok(None));
        long.extend_from_slice(b"xx");
        assert!(matches!(parse(&long), Err(RespError::TooLarge(_))));
        // At the limit, a bulk string is only waited for.
        let f = format!("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n${MAX_BULK}\r\n");
        assert_eq!(parse(f.as_bytes()), Ok(None));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"hello\r\n"[..],
            b"*1\r\n*1\r\n$1\r\na\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n_x\r\n",
            b"*1\r\n%1\r\n",
            b"*1\rx",
            b"*\r\n",
            b"*-\r\n",
            b"*1\r\n$-\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(RespError::Malformed("x").to_string(), "resp_malformed: x");
        let mut x: u32 = 7;
        for _ in 0..20_000 {
            let len = (x % 48) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    b"*>$+-:_\r\n0123message-"[(x >> 16) as usize % 21]
                })
                .collect();
            if let Ok(Some((_, n))) = parse(&v) {
                assert!(n <= v.len());
            }
        }
    }
}
