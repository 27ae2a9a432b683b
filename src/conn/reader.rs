//! The reading side of a WebSocket connection. Frames are decoded from byte slices
//! ([`super::decode`]): a quiet connection waits with a small buffer that lives in this task's
//! own state and holds no heap read buffer; under load reads go into a larger buffer that is
//! released again once the connection goes quiet.

use std::rc::Rc;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::proto::envelope;
use crate::proto::frame::{
    self as decode, Assembler, Fail, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};
use crate::proto::stats::ShardStats;
use crate::shard::{ConnKind, Shard};
use crate::ConnId;

/// Read size while the connection is quiet (inline in the task, no heap).
const SMALL: usize = 512;
/// Read size while it is busy.
const LARGE: usize = 16 * 1024;
/// Reads a busy connection keeps its large buffer for after input stops filling a quarter of it.
/// On io_uring every read is a wake-up, and the writers run in between: a burst that starts
/// with a small read sends its first frames in small batches, so bursty senders stay large.
const HOT_READS: u8 = 8;

/// What processing a buffer of frames led to.
enum Step {
    /// Bytes consumed; the rest is an incomplete frame.
    Consumed(usize),
    /// Stop reading; `true` when our close was for a protocol error (drain input first).
    Stop(bool),
}

/// Reads messages until the connection closes; returns true when input should be drained.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    id: ConnId,
    kind: ConnKind,
    reader: &mut R,
) -> bool {
    let max = shard.hub.config.max_message_size;
    let mut asm = Assembler::new(max);
    let mut small = [0u8; SMALL];
    // Bytes of an incomplete frame, and the read buffer while busy.
    let mut big: Vec<u8> = Vec::new();
    let mut hot: u8 = 0;
    loop {
        if big.is_empty() && hot == 0 {
            let n = match reader.read(&mut small).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            shard.touch(id);
            if n == SMALL {
                hot = HOT_READS;
            }
            match process(shard, id, kind, &mut asm, &mut small[..n], max) {
                Step::Stop(drain) => return drain,
                Step::Consumed(used) => big.extend_from_slice(&small[used..n]),
            }
        } else {
            // Room for the whole pending frame when its header says how long it is.
            let want = match decode::head(&big, max) {
                Ok(Some(h)) => h.total().max(LARGE),
                _ => LARGE,
            };
            big.reserve(want.saturating_sub(big.len()));
            let room = big.capacity() - big.len();
            let n = match reader.read_buf(&mut big).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            shard.touch(id);
            hot = if n >= room / 4 {
                HOT_READS
            } else {
                hot.saturating_sub(1)
            };
            match process(shard, id, kind, &mut asm, &mut big, max) {
                Step::Stop(drain) => return drain,
                Step::Consumed(used) => {
                    big.drain(..used);
                }
            }
            if big.is_empty() && hot == 0 {
                big = Vec::new();
            }
        }
    }
}

fn fail(shard: &Shard, id: ConnId, (code, reason): Fail) -> Step {
    ShardStats::add(&shard.stats().protocol_errors, 1);
    tracing::debug!(conn = %id, code, reason, "protocol error");
    shard.close(id, code, reason);
    Step::Stop(true)
}

/// Handles every complete frame at the start of `buf`.
fn process(
    shard: &Shard,
    id: ConnId,
    kind: ConnKind,
    asm: &mut Assembler,
    buf: &mut [u8],
    max: usize,
) -> Step {
    let mut at = 0;
    loop {
        let h = match decode::head(&buf[at..], max) {
            Ok(Some(h)) if h.total() <= buf.len() - at => h,
            Ok(_) => return Step::Consumed(at),
            Err(f) => return fail(shard, id, f),
        };
        let payload = h.unmask(&mut buf[at..at + h.total()]);
        at += h.total();
        match h.opcode {
            OP_PING => shard.enqueue(id, envelope::raw_frame(OP_PONG, payload)),
            OP_PONG => {}
            OP_CLOSE => {
                return match decode::close_code(payload) {
                    // Echo the code (RFC 6455 §5.5.1); the writer then shuts the socket down.
                    Ok(code) => {
                        let echo = code.map_or_else(Vec::new, |c| c.to_be_bytes().to_vec());
                        shard.close_with_frame(id, envelope::raw_frame(OP_CLOSE, &echo));
                        Step::Stop(false)
                    }
                    Err(f) => fail(shard, id, f),
                };
            }
            op => match asm.push(op, h.fin, payload) {
                Err(f) => return fail(shard, id, f),
                Ok(None) => {}
                Ok(Some((op, msg))) => {
                    deliver(shard, id, kind, op, msg);
                    asm.reset();
                }
            },
        }
    }
}

fn deliver(shard: &Shard, id: ConnId, kind: ConnKind, op: u8, msg: &[u8]) {
    let stats = shard.stats();
    ShardStats::add(&stats.messages_in, 1);
    ShardStats::add(&stats.bytes_in, msg.len() as u64);
    match (kind, op) {
        (ConnKind::Echo, op) => shard.enqueue(id, envelope::raw_frame(op, msg)),
        (ConnKind::PubSub, OP_TEXT) => shard.dispatch(id, msg),
        (ConnKind::PubSub, OP_BINARY | _) => {
            stats.error(crate::ErrorCode::BadRequest);
            let msg = "binary frames are not supported: send JSON envelopes as text";
            shard.enqueue(
                id,
                envelope::error(None, "", crate::ErrorCode::BadRequest, msg),
            );
        }
    }
}
