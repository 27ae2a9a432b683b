//! The WebSocket transport's parsers: client frames (headers, unmasking, control frames,
//! reassembly under [`FRAME_MAX`]) and permessage-deflate.

use crate::proto::frame as decode;
use decode::{Assembler, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// The message limit the frame target runs with (small, so the limits are reachable).
pub const FRAME_MAX: usize = 4096;

/// What [`frames`] saw: complete messages, control frames, and how the stream ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrameOutcome {
    /// Complete data messages (opcode, payload).
    pub messages: Vec<(u8, Vec<u8>)>,
    /// Pings, pongs and closes seen.
    pub controls: usize,
    /// The close code and reason of a protocol failure, if the stream failed.
    pub failed: Option<(u16, &'static str)>,
    /// Bytes consumed.
    pub consumed: usize,
}

/// Decodes a client byte stream as the connection reader does: frame headers, unmasking,
/// control frames, close payloads and message reassembly under [`FRAME_MAX`].
pub fn frames(data: &[u8]) -> FrameOutcome {
    let mut buf = data.to_vec();
    let mut asm = Assembler::new(FRAME_MAX);
    let mut out = FrameOutcome::default();
    let mut at = 0;
    loop {
        let h = match decode::head(&buf[at..], FRAME_MAX) {
            Ok(Some(h)) if h.total() <= buf.len() - at => h,
            Ok(_) => break,
            Err(f) => {
                out.failed = Some(f);
                break;
            }
        };
        assert!(h.len <= FRAME_MAX, "a frame over the limit was accepted");
        let payload = h.unmask(&mut buf[at..at + h.total()]);
        at += h.total();
        match h.opcode {
            OP_PING | OP_PONG => {
                assert!(payload.len() <= 125);
                out.controls += 1;
            }
            OP_CLOSE => {
                out.controls += 1;
                if let Err(f) = decode::close_code(payload) {
                    out.failed = Some(f);
                }
                break;
            }
            op => match asm.push(op, h.fin, payload) {
                Err(f) => {
                    out.failed = Some(f);
                    break;
                }
                Ok(None) => {}
                Ok(Some((op, msg))) => {
                    assert!(
                        msg.len() <= FRAME_MAX,
                        "a message over the limit was delivered"
                    );
                    if op == OP_TEXT {
                        assert!(std::str::from_utf8(msg).is_ok(), "invalid UTF-8 delivered");
                    }
                    out.messages.push((op, msg.to_vec()));
                    asm.reset();
                }
            },
        }
    }
    if let Some((code, reason)) = out.failed {
        assert!(
            matches!(code, 1002 | 1007 | 1008 | 1009),
            "close code {code}"
        );
        assert!(
            reason.len() <= 123,
            "a close reason must fit a control frame"
        );
    }
    out.consumed = at;
    out
}

/// permessage-deflate on arbitrary bytes: the first byte picks a message limit, the rest is a
/// compressed message, inflated as a shard does (never more than the limit comes out, failures
/// are 1007 or 1009); the same bytes as an extension offer negotiate a window of 9..=15 or
/// nothing; and as a server frame payload they survive compression and inflation unchanged.
pub fn inflate(data: &[u8]) {
    use crate::proto::deflate::{negotiate, Deflater, Inflater};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(first) * 64;
    let mut inf = Inflater::default();
    match inf.inflate(rest, max) {
        Ok(msg) => assert!(msg.len() <= max, "inflated past the limit"),
        Err((code, _)) => assert!(matches!(code, 1007 | 1009), "close code {code}"),
    }
    if let Some(a) = negotiate([rest], first % 2 == 0, 9 + first % 7) {
        assert!((9..=9 + first % 7).contains(&a.window_bits));
    }
    let frame = crate::proto::envelope::raw_frame(2, rest);
    let mut d = Deflater::new(u32::from(first % 10), 0);
    let bits = 9 + first % 7;
    if let Some(z) = d.frame_always(&frame, bits) {
        let at = match z[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        assert_eq!(z[0], 0xC2, "FIN, RSV1, binary");
        let back = inf.inflate(&z[at..], rest.len()).expect("inflates");
        assert_eq!(back, rest, "round trip");
    }
}
