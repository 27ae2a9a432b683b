//! The reading side of a WebSocket connection: fastwebsockets frames, reassembled under the size
//! limit, handed to the shard.

use std::convert::Infallible;
use std::future::ready;
use std::rc::Rc;

use fastwebsockets::{after_handshake_split, Frame, OpCode, Role, WebSocketError};
use tokio::io::AsyncRead;

use crate::envelope;
use crate::shard::{ConnKind, Shard};
use crate::stats::ShardStats;
use crate::ConnId;

/// Reads messages until the connection closes; returns true when input should be drained.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    id: ConnId,
    kind: ConnKind,
    reader: &mut R,
) -> bool {
    let max = shard.hub.config.max_message_size;
    let (mut ws, _) = after_handshake_split(reader, tokio::io::sink(), Role::Server);
    ws.set_max_message_size(max);
    let mut asm = Assembler::new(max);
    let mut obligated = |f: Frame<'_>| {
        if f.opcode == OpCode::Close && f.payload.len() > 125 {
            // Control frames carry at most 125 bytes (RFC 6455 §5.5); fastwebsockets only checks pings.
            shard.close(id, 1002, "control frame too long");
        } else if f.opcode == OpCode::Close {
            shard.close_with_frame(id, envelope::raw_frame(8, &f.payload));
        } else {
            shard.enqueue(id, envelope::raw_frame(f.opcode as u8, &f.payload));
        }
        ready(Ok::<(), Infallible>(()))
    };
    loop {
        let mut frame = match ws.read_frame(&mut obligated).await {
            Ok(f) => f,
            Err(e) => {
                let Some((code, reason)) = close_code(&e) else {
                    tracing::debug!(conn = %id, error = %e, "read ended");
                    return false;
                };
                ShardStats::add(&shard.stats().protocol_errors, 1);
                tracing::debug!(conn = %id, error = %e, code, "protocol error");
                shard.close(id, code, reason);
                return true;
            }
        };
        shard.touch(id);
        if !was_masked(&mut frame) {
            // RFC 6455 §5.1: a server must fail a connection whose client sends unmasked frames.
            ShardStats::add(&shard.stats().protocol_errors, 1);
            shard.close(id, 1002, "client frames must be masked");
            return true;
        }
        let complete = match frame.opcode {
            OpCode::Close => return false,
            OpCode::Pong if frame.payload.len() > 125 => {
                shard.close(id, 1002, "control frame too long");
                return true;
            }
            OpCode::Ping | OpCode::Pong => continue,
            _ => asm.push(frame.opcode, frame.fin, &frame.payload),
        };
        let (opcode, payload) = match complete {
            Err((code, reason)) => {
                ShardStats::add(&shard.stats().protocol_errors, 1);
                shard.close(id, code, reason);
                return true;
            }
            Ok(None) => continue,
            Ok(Some(done)) => done,
        };
        let stats = shard.stats();
        ShardStats::add(&stats.messages_in, 1);
        ShardStats::add(&stats.bytes_in, payload.len() as u64);
        match (kind, opcode) {
            (ConnKind::Echo, op) => shard.enqueue(id, envelope::raw_frame(op as u8, payload)),
            (ConnKind::PubSub, OpCode::Text) => shard.dispatch(id, payload),
            (ConnKind::PubSub, _) => {
                stats.error(crate::ErrorCode::BadRequest);
                let msg = "binary frames are not supported: send JSON envelopes as text";
                shard.enqueue(
                    id,
                    envelope::error(None, "", crate::ErrorCode::BadRequest, msg),
                );
            }
        }
        asm.reset();
    }
}

/// Whether the client masked this frame. fastwebsockets unmasks in place without telling; its
/// header formatter still writes the mask bit, so read it back from there.
fn was_masked(frame: &mut Frame<'_>) -> bool {
    let mut head = [0u8; 16];
    frame.fmt_head(&mut head);
    head[1] & 0x80 != 0
}

/// The close code for a read error, or `None` when the peer is simply gone.
fn close_code(e: &WebSocketError) -> Option<(u16, &'static str)> {
    match e {
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::ConnectionClosed => None,
        WebSocketError::FrameTooLarge => Some((1009, "message too big")),
        WebSocketError::InvalidUTF8 => Some((1007, "invalid UTF-8")),
        // fastwebsockets already queued the 1002 reply through the obligated-send callback.
        WebSocketError::InvalidCloseCode => Some((1002, "invalid close code")),
        _ => Some((1002, "protocol error")),
    }
}

/// Reassembles fragmented messages under the size limit, validating UTF-8 as fragments arrive.
struct Assembler {
    max: usize,
    opcode: Option<OpCode>,
    buf: Vec<u8>,
    utf8_ok: usize,
}

type Complete<'a> = Result<Option<(OpCode, &'a [u8])>, (u16, &'static str)>;

impl Assembler {
    fn new(max: usize) -> Self {
        Self {
            max,
            opcode: None,
            buf: Vec::new(),
            utf8_ok: 0,
        }
    }

    fn reset(&mut self) {
        if self.opcode.take().is_some() {
            self.buf = Vec::new();
            self.utf8_ok = 0;
        }
    }

    /// Adds a data frame; returns the whole message when complete (borrowing the frame's payload
    /// when it was not fragmented).
    fn push<'a>(&'a mut self, op: OpCode, fin: bool, payload: &'a [u8]) -> Complete<'a> {
        match (op, self.opcode) {
            (OpCode::Text | OpCode::Binary, None) if fin => Ok(Some((op, payload))),
            (OpCode::Text | OpCode::Binary, None) => {
                self.opcode = Some(op);
                self.append(payload)?;
                Ok(None)
            }
            (OpCode::Continuation, Some(start)) => {
                self.append(payload)?;
                if !fin {
                    return Ok(None);
                }
                if start == OpCode::Text && self.utf8_ok != self.buf.len() {
                    return Err((1007, "invalid UTF-8"));
                }
                Ok(Some((start, &self.buf)))
            }
            (OpCode::Continuation, None) => Err((1002, "continuation without a message")),
            _ => Err((1002, "new message inside a fragmented message")),
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), (u16, &'static str)> {
        if self.buf.len() + payload.len() > self.max {
            return Err((1009, "message too big"));
        }
        self.buf.extend_from_slice(payload);
        if self.opcode == Some(OpCode::Text) {
            match std::str::from_utf8(&self.buf[self.utf8_ok..]) {
                Ok(_) => self.utf8_ok = self.buf.len(),
                Err(e) if e.error_len().is_none() => self.utf8_ok += e.valid_up_to(),
                Err(_) => return Err((1007, "invalid UTF-8")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_joins_fragments_and_checks_utf8_across_boundaries() {
        let mut a = Assembler::new(100);
        let snow = "☃".as_bytes();
        assert_eq!(a.push(OpCode::Text, false, &snow[..1]), Ok(None));
        assert_eq!(a.push(OpCode::Continuation, false, &snow[1..]), Ok(None));
        assert_eq!(
            a.push(OpCode::Continuation, true, b"!"),
            Ok(Some((OpCode::Text, "☃!".as_bytes())))
        );
        a.reset();
        assert_eq!(a.push(OpCode::Text, false, b"ok"), Ok(None));
        assert_eq!(
            a.push(OpCode::Continuation, true, &[0xff]),
            Err((1007, "invalid UTF-8"))
        );
        a.reset();
        assert_eq!(a.push(OpCode::Text, false, &snow[..2]), Ok(None));
        assert_eq!(
            a.push(OpCode::Continuation, true, b""),
            Err((1007, "invalid UTF-8"))
        );
    }

    #[test]
    fn assembler_enforces_order_and_size() {
        let mut a = Assembler::new(4);
        assert_eq!(
            a.push(OpCode::Continuation, true, b"x"),
            Err((1002, "continuation without a message"))
        );
        assert_eq!(a.push(OpCode::Binary, false, b"abc"), Ok(None));
        assert_eq!(
            a.push(OpCode::Text, true, b"x"),
            Err((1002, "new message inside a fragmented message"))
        );
        assert_eq!(
            a.push(OpCode::Continuation, true, b"de"),
            Err((1009, "message too big"))
        );
        a.reset();
        assert_eq!(
            a.push(OpCode::Binary, true, b"whole"),
            Ok(Some((OpCode::Binary, &b"whole"[..])))
        );
    }
}
