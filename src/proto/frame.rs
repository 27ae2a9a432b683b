//! Sans-IO WebSocket frame decoding for the server side (RFC 6455 §5): header validation,
//! unmasking (fastwebsockets' SIMD `unmask`), control-frame rules and close-code checks
//! (fastwebsockets' `CloseCode`). It works on byte slices, so the reader decides which buffer
//! bytes live in — an idle connection holds none.

use fastwebsockets::CloseCode;

/// A protocol failure: the close code and reason to send.
pub(crate) type Fail = (u16, &'static str);

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub fin: bool,
    /// RSV1: the message this frame starts is compressed (permessage-deflate).
    pub rsv1: bool,
    pub opcode: u8,
    mask: [u8; 4],
    /// Header length in bytes.
    pub header: usize,
    /// Payload length in bytes.
    pub len: usize,
}

pub(crate) const OP_CONT: u8 = 0;
pub(crate) const OP_TEXT: u8 = 1;
pub(crate) const OP_BINARY: u8 = 2;
pub(crate) const OP_CLOSE: u8 = 8;
pub(crate) const OP_PING: u8 = 9;
pub(crate) const OP_PONG: u8 = 10;

/// Parses the header at the start of `buf`. `Ok(None)`: more bytes are needed.
/// `max` bounds a single frame's payload (the message limit); larger fails with 1009.
/// No extension is in use: every reserved bit fails with 1002.
pub(crate) fn head(buf: &[u8], max: usize) -> Result<Option<Head>, Fail> {
    head_ext(buf, max, false)
}

/// [`head`] for a connection that negotiated permessage-deflate when `deflate`: RSV1 is allowed
/// on the first frame of a data message (RFC 7692 §6), never on a control frame or a
/// continuation.
pub(crate) fn head_ext(buf: &[u8], max: usize, deflate: bool) -> Result<Option<Head>, Fail> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let opcode = b0 & 0x0f;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !deflate) {
        return Err((1002, "reserved bits set"));
    }
    if rsv1 && opcode >= OP_CLOSE {
        return Err((1002, "compressed control frame"));
    }
    if rsv1 && opcode == OP_CONT {
        return Err((1002, "RSV1 on a continuation frame"));
    }
    let fin = b0 & 0x80 != 0;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG if !fin => return Err((1002, "fragmented control frame")),
        OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err((1002, "unknown opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err((1002, "client frames must be masked"));
    }
    let (len, at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    if len >> 63 != 0 {
        return Err((1002, "invalid payload length"));
    }
    if opcode >= OP_CLOSE && len > 125 {
        return Err((1002, "control frame too long"));
    }
    if len > max as u64 {
        return Err((1009, "message too big"));
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        rsv1,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        header: at + 4,
        len: len as usize,
    }))
}

impl Head {
    /// Total frame length.
    pub fn total(&self) -> usize {
        self.header + self.len
    }

    /// Unmasks the payload in place; `frame` is the whole frame.
    pub fn unmask<'a>(&self, frame: &'a mut [u8]) -> &'a mut [u8] {
        let payload = &mut frame[self.header..self.total()];
        fastwebsockets::unmask(payload, self.mask);
        payload
    }
}

/// Validates a close payload; returns the code to echo (None for an empty close).
pub(crate) fn close_code(payload: &[u8]) -> Result<Option<u16>, Fail> {
    match payload {
        [] => Ok(None),
        [_] => Err((1002, "close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !CloseCode::from(code).is_allowed() {
                return Err((1002, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err((1007, "invalid UTF-8 in close reason"));
            }
            Ok(Some(code))
        }
    }
}

/// Checks a whole, unfragmented data frame when no fragmented message is pending (the common
/// case, which needs no reassembly state): text must be UTF-8; a continuation has nothing to
/// continue.
pub(crate) fn complete(op: u8, payload: &[u8]) -> Result<(), Fail> {
    match op {
        OP_TEXT => simdutf8::basic::from_utf8(payload)
            .map(drop)
            .map_err(|_| (1007, "invalid UTF-8")),
        OP_BINARY => Ok(()),
        _ => Err((1002, "continuation without a message")),
    }
}

/// Fewest fragments one message may always have, whatever the size limit.
pub(crate) const MIN_FRAGMENT_LIMIT: usize = 1024;

/// The most frames one fragmented message may span for a message limit of `max` bytes: one per
/// 64 bytes of the limit, and never fewer than [`MIN_FRAGMENT_LIMIT`]. Without a bound, a
/// client could keep a message open forever with empty continuation frames (each one also
/// counts as life for the idle timeout).
pub(crate) fn fragment_limit(max: usize) -> usize {
    (max / 64).max(MIN_FRAGMENT_LIMIT)
}

/// Reassembles fragmented messages under the size limit, validating UTF-8 as fragments arrive.
pub(crate) struct Assembler {
    max: usize,
    max_frames: usize,
    opcode: Option<u8>,
    buf: Vec<u8>,
    utf8_ok: usize,
    /// Frames of the message being assembled.
    frames: usize,
    /// The message is compressed: its UTF-8 is checked once inflated, not here.
    compressed: bool,
}

/// A complete message: its opcode and payload.
pub(crate) type Complete<'a> = Result<Option<(u8, &'a [u8])>, Fail>;

impl Assembler {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            max_frames: fragment_limit(max),
            opcode: None,
            buf: Vec::new(),
            utf8_ok: 0,
            frames: 0,
            compressed: false,
        }
    }

    /// Marks the message about to start as compressed (its first frame had RSV1): fragments
    /// are joined as they are, bounded by the limit, and inflated once whole by the caller.
    pub fn start_compressed(&mut self) {
        if self.opcode.is_none() {
            self.compressed = true;
        }
    }

    /// Whether the message being assembled (or just completed) is compressed.
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Forgets a delivered fragmented message (the shard drops its assembler instead; the fuzz
    /// entry points and tests reuse one).
    pub fn reset(&mut self) {
        if self.opcode.take().is_some() {
            self.buf = Vec::new();
            self.utf8_ok = 0;
            self.frames = 0;
        }
        self.compressed = false;
    }

    /// Adds a data frame; returns the whole message when complete (borrowing the frame's
    /// payload when it was not fragmented). Text is checked for UTF-8.
    pub fn push<'a>(&'a mut self, op: u8, fin: bool, payload: &'a [u8]) -> Complete<'a> {
        match (op, self.opcode) {
            (OP_TEXT | OP_BINARY, None) if fin && self.compressed => Ok(Some((op, payload))),
            (OP_TEXT, None) if fin => match simdutf8::basic::from_utf8(payload) {
                Ok(_) => Ok(Some((op, payload))),
                Err(_) => Err((1007, "invalid UTF-8")),
            },
            (OP_BINARY, None) if fin => Ok(Some((op, payload))),
            (OP_TEXT | OP_BINARY, None) => {
                self.opcode = Some(op);
                self.append(payload)?;
                Ok(None)
            }
            (OP_CONT, Some(start)) => {
                self.append(payload)?;
                if !fin {
                    return Ok(None);
                }
                if start == OP_TEXT && !self.compressed && self.utf8_ok != self.buf.len() {
                    return Err((1007, "invalid UTF-8"));
                }
                Ok(Some((start, &self.buf)))
            }
            (OP_CONT, None) => Err((1002, "continuation without a message")),
            _ => Err((1002, "new message inside a fragmented message")),
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), Fail> {
        self.frames += 1;
        if self.frames > self.max_frames {
            return Err((1009, "too many fragments in one message"));
        }
        if self.buf.len() + payload.len() > self.max {
            return Err((1009, "message too big"));
        }
        self.buf.extend_from_slice(payload);
        if self.opcode == Some(OP_TEXT) && !self.compressed {
            match std::str::from_utf8(&self.buf[self.utf8_ok..]) {
                Ok(_) => self.utf8_ok = self.buf.len(),
                Err(e) if e.error_len().is_none() => self.utf8_ok += e.valid_up_to(),
                Err(_) => return Err((1007, "invalid UTF-8")),
            }
        }
        Ok(())
    }
}

/// The payload of a whole server text frame (unmasked, unfragmented, uncompressed, header
/// included); `None` for any other frame. The shard re-encodes such frames per wire format
/// (MessagePack, Socket.IO).
pub fn text_payload(frame: &[u8]) -> Option<&[u8]> {
    let [b0, b1, ..] = *frame else { return None };
    if b0 != 0x81 || b1 & 0x80 != 0 {
        return None;
    }
    let at = match b1 {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(at..)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client frame as a browser sends it (masked), for tests across the crate.
    pub(crate) fn masked(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![(fin as u8) << 7 | op];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn parses_and_unmasks_all_length_forms() {
        for n in [0, 125, 126, 65535, 65536] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut f = masked(OP_BINARY, true, &data);
            for cut in [0, 1, 3, f.len().min(9), f.len() - 1] {
                if cut < f.len() && cut < 14 && cut < f.len() - data.len() {
                    assert_eq!(head(&f[..cut], 1 << 20), Ok(None), "n={n} cut={cut}");
                }
            }
            let h = head(&f, 1 << 20).unwrap().unwrap();
            assert_eq!(
                (h.fin, h.opcode, h.len, h.total()),
                (true, OP_BINARY, n, f.len())
            );
            assert_eq!(h.unmask(&mut f), &data[..]);
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        let bad = |f: &[u8]| head(f, 1000).unwrap_err();
        assert_eq!(bad(&[0x81, 0x00]).0, 1002, "unmasked");
        assert_eq!(bad(&[0xC1, 0x80, 0, 0, 0, 0]).0, 1002, "rsv1");
        assert_eq!(bad(&[0x83, 0x80, 0, 0, 0, 0]).0, 1002, "opcode 3");
        assert_eq!(bad(&[0x09, 0x80, 0, 0, 0, 0]).0, 1002, "fragmented ping");
        assert_eq!(bad(&[0x89, 0xFE, 0, 126, 0, 0, 0, 0]).0, 1002, "long ping");
        assert_eq!(bad(&masked(OP_TEXT, true, &[b'x'; 1001])).0, 1009);
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            head(&huge, usize::MAX).unwrap_err().0,
            1002,
            "length with the top bit set"
        );
        let big = [0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            head(&big, 1 << 20).unwrap_err().0,
            1009,
            "4 GiB: refused before allocating"
        );
    }

    #[test]
    fn rsv1_only_on_the_first_frame_of_a_negotiated_data_message() {
        let rsv1 = |b0: u8| [b0 | 0x40, 0x80, 0, 0, 0, 0];
        let fail = |f: &[u8], deflate| head_ext(f, 100, deflate).unwrap_err();
        assert_eq!(fail(&rsv1(0x81), false), (1002, "reserved bits set"));
        let h = head_ext(&rsv1(0x81), 100, true).unwrap().unwrap();
        assert!(h.rsv1 && h.fin && h.opcode == OP_TEXT);
        assert!(head_ext(&rsv1(0x02), 100, true).unwrap().unwrap().rsv1);
        assert!(
            !head_ext(&[0x81, 0x80, 0, 0, 0, 0], 100, true)
                .unwrap()
                .unwrap()
                .rsv1
        );
        assert_eq!(
            fail(&rsv1(0x80), true),
            (1002, "RSV1 on a continuation frame")
        );
        for control in [0x88, 0x89, 0x8A] {
            assert_eq!(
                fail(&rsv1(control), true),
                (1002, "compressed control frame")
            );
        }
        assert_eq!(fail(&[0xA1, 0x80, 0, 0, 0, 0], true).0, 1002, "rsv2");
        assert_eq!(fail(&[0x91, 0x80, 0, 0, 0, 0], true).0, 1002, "rsv3");
    }

    #[test]
    fn assembler_joins_compressed_fragments_without_checking_utf8() {
        let mut a = Assembler::new(6);
        a.start_compressed();
        assert!(a.is_compressed());
        assert_eq!(a.push(OP_TEXT, false, &[0xff, 0xfe]), Ok(None));
        assert_eq!(
            a.push(OP_CONT, true, &[0xfd]),
            Ok(Some((OP_TEXT, &[0xff, 0xfe, 0xfd][..])))
        );
        a.reset();
        assert!(!a.is_compressed());
        a.start_compressed();
        assert_eq!(a.push(OP_TEXT, false, b"1234"), Ok(None));
        assert_eq!(
            a.push(OP_CONT, true, b"567"),
            Err((1009, "message too big"))
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[3]).unwrap_err().0, 1002);
        assert_eq!(close_code(&1000u16.to_be_bytes()), Ok(Some(1000)));
        assert_eq!(close_code(&4000u16.to_be_bytes()), Ok(Some(4000)));
        for bad in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(close_code(&bad.to_be_bytes()).unwrap_err().0, 1002, "{bad}");
        }
        assert_eq!(close_code(&[0x03, 0xe8, 0xff]).unwrap_err().0, 1007);
    }

    #[test]
    fn assembler_joins_fragments_and_checks_utf8_across_boundaries() {
        let mut a = Assembler::new(100);
        let snow = "☃".as_bytes();
        assert_eq!(a.push(OP_TEXT, false, &snow[..1]), Ok(None));
        assert_eq!(a.push(OP_CONT, false, &snow[1..]), Ok(None));
        assert_eq!(
            a.push(OP_CONT, true, b"!"),
            Ok(Some((OP_TEXT, "☃!".as_bytes())))
        );
        a.reset();
        assert_eq!(a.push(OP_TEXT, false, b"ok"), Ok(None));
        assert_eq!(a.push(OP_CONT, true, &[0xff]), Err((1007, "invalid UTF-8")));
        a.reset();
        assert_eq!(a.push(OP_TEXT, false, &snow[..2]), Ok(None));
        assert_eq!(a.push(OP_CONT, true, b""), Err((1007, "invalid UTF-8")));
        a.reset();
        assert_eq!(a.push(OP_TEXT, true, &[0xc3]), Err((1007, "invalid UTF-8")));
    }

    #[test]
    fn assembler_bounds_the_fragments_of_one_message() {
        assert_eq!(fragment_limit(100), MIN_FRAGMENT_LIMIT);
        assert_eq!(fragment_limit(1 << 20), 16384);
        let mut a = Assembler::new(100);
        assert_eq!(a.push(OP_TEXT, false, b""), Ok(None));
        for _ in 1..MIN_FRAGMENT_LIMIT {
            assert_eq!(a.push(OP_CONT, false, b""), Ok(None));
        }
        assert_eq!(
            a.push(OP_CONT, false, b""),
            Err((1009, "too many fragments in one message"))
        );
        // The count is per message: after a delivered message a new one starts from zero.
        let mut a = Assembler::new(100);
        for _ in 0..3 {
            assert_eq!(a.push(OP_BINARY, false, b"a"), Ok(None));
            for _ in 2..MIN_FRAGMENT_LIMIT {
                assert_eq!(a.push(OP_CONT, false, b""), Ok(None));
            }
            assert_eq!(
                a.push(OP_CONT, true, b"b"),
                Ok(Some((OP_BINARY, &b"ab"[..])))
            );
            a.reset();
        }
    }

    #[test]
    fn assembler_enforces_order_and_size() {
        let mut a = Assembler::new(4);
        assert_eq!(
            a.push(OP_CONT, true, b"x"),
            Err((1002, "continuation without a message"))
        );
        assert_eq!(a.push(OP_BINARY, false, b"abc"), Ok(None));
        assert_eq!(
            a.push(OP_TEXT, true, b"x"),
            Err((1002, "new message inside a fragmented message"))
        );
        assert_eq!(a.push(OP_CONT, true, b"de"), Err((1009, "message too big")));
        a.reset();
        assert_eq!(
            a.push(OP_BINARY, true, b"whole"),
            Ok(Some((OP_BINARY, &b"whole"[..])))
        );
    }
}
