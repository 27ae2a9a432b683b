//! WebSocket frames in: decoding, control frames, reassembly and delivery of whole messages.

use super::{ConnKind, Phase, ShardState};
use crate::proto::envelope;
use crate::proto::frame::{self, Assembler, Fail, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
use crate::proto::stats::ShardStats;
use crate::shard::events::EventKind;
use crate::ConnId;

impl ShardState {
    /// Handles every complete frame at the start of `buf`; returns the bytes used.
    pub(super) fn frames(&mut self, id: ConnId, kind: ConnKind, buf: &mut [u8]) -> usize {
        let max = self.hub.config.max_message_size;
        let deflate = self.conn_mut(id).is_some_and(|c| c.deflate_bits() != 0);
        let mut at = 0;
        loop {
            let h = match frame::head_ext(&buf[at..], max, deflate) {
                Ok(Some(h)) if h.total() <= buf.len() - at => h,
                Ok(_) => return at,
                Err(f) => return self.fail(id, f, buf.len()),
            };
            let payload = h.unmask(&mut buf[at..at + h.total()]);
            at += h.total();
            match h.opcode {
                OP_PING => self.enqueue(id, envelope::raw_frame(OP_PONG, payload)),
                OP_PONG => {}
                OP_CLOSE => {
                    return match frame::close_code(payload) {
                        // Echo the code (RFC 6455 §5.5.1); then the write side is shut down.
                        Ok(code) => {
                            let echo = code.map_or_else(Vec::new, |c| c.to_be_bytes().to_vec());
                            self.close_frame(id, envelope::raw_frame(OP_CLOSE, &echo));
                            if let Some(c) = self.conn_mut(id) {
                                c.phase = Phase::Discard;
                            }
                            buf.len()
                        }
                        Err(f) => self.fail(id, f, buf.len()),
                    };
                }
                op => {
                    let Some(c) = self.conn_mut(id) else {
                        return buf.len();
                    };
                    if h.fin && c.asm.is_none() && h.rsv1 {
                        if let Err(f) = self.deliver_compressed(id, kind, op, payload) {
                            return self.fail(id, f, buf.len());
                        }
                    } else if h.fin && c.asm.is_none() {
                        // The common case, a whole message in one frame: no reassembly state.
                        match frame::complete(op, payload) {
                            Ok(()) => self.deliver(id, kind, op, payload),
                            Err(f) => return self.fail(id, f, buf.len()),
                        }
                    } else {
                        // The assembler borrows the connection; take it out while the message
                        // is delivered (delivery needs the whole shard).
                        let mut asm = c
                            .asm
                            .take()
                            .unwrap_or_else(|| Box::new(Assembler::new(max)));
                        if h.rsv1 {
                            asm.start_compressed();
                        }
                        let compressed = asm.is_compressed();
                        match asm.push(op, h.fin, payload) {
                            Err(f) => return self.fail(id, f, buf.len()),
                            Ok(None) => match self.conn_mut(id) {
                                Some(c) => c.asm = Some(asm),
                                None => return buf.len(),
                            },
                            // A compressed message is inflated once whole (the shard's
                            // inflater keeps no state between messages).
                            Ok(Some((op, msg))) if compressed => {
                                if let Err(f) = self.deliver_compressed(id, kind, op, msg) {
                                    return self.fail(id, f, buf.len());
                                }
                            }
                            // Delivered: the assembler (and its buffer) is dropped.
                            Ok(Some((op, msg))) => self.deliver(id, kind, op, msg),
                        }
                    }
                    // Closed by what it sent (rate limit, slow consumer): the rest is dropped,
                    // not answered message by message.
                    if let Some(c) = self.conn_mut(id).filter(|c| c.closing.is_some()) {
                        c.phase = Phase::Discard;
                        return buf.len();
                    }
                }
            }
        }
    }

    /// Inflates a compressed message with the shard's inflater, bounded by the message limit,
    /// checks it as an uncompressed one is checked, and delivers it.
    fn deliver_compressed(
        &mut self,
        id: ConnId,
        kind: ConnKind,
        op: u8,
        data: &[u8],
    ) -> Result<(), Fail> {
        let max = self.hub.config.max_message_size;
        let mut inflater = std::mem::take(&mut self.inflater);
        let result = match inflater.inflate(data, max) {
            Ok(msg) => frame::complete(op, msg).map(|()| self.deliver(id, kind, op, msg)),
            Err(f) => Err(f),
        };
        self.inflater = inflater;
        result
    }

    /// A protocol error: close with its code and discard further input.
    fn fail(&mut self, id: ConnId, (code, reason): Fail, used: usize) -> usize {
        ShardStats::add(&self.stats().protocol_errors, 1);
        tracing::debug!(conn = %id, code, reason, "protocol error");
        self.note(
            id,
            EventKind::ProtocolError,
            &format!("closed with {code}: {reason}"),
        );
        self.close(id, code, reason);
        if let Some(c) = self.conn_mut(id) {
            c.phase = Phase::Discard;
        }
        used
    }

    fn deliver(&mut self, id: ConnId, kind: ConnKind, op: u8, msg: &[u8]) {
        let stats = self.stats();
        ShardStats::add(&stats.messages_in, 1);
        ShardStats::add(&stats.bytes_in, msg.len() as u64);
        match (kind, op) {
            (ConnKind::Echo, op) => {
                let frame = envelope::raw_frame(op, msg);
                let frame = match self.conn_mut(id).map_or((0, false), |c| c.deflate()) {
                    (0, _) => frame,
                    (b, false) => self.deflater.frame_always(&frame, b).unwrap_or(frame),
                    (b, true) => match self.deflater.frame_kept(id.raw(), &frame, b, true) {
                        Ok(f) => f.unwrap_or(frame),
                        Err((code, reason)) => return self.close(id, code, reason),
                    },
                };
                self.enqueue(id, frame)
            }
            (ConnKind::SocketIo, op) => self.sio_input(id, op, msg),
            (ConnKind::SioCarrier, op) => self.carrier_input(id, op, msg),
            (ConnKind::PubSub, OP_TEXT) => self.dispatch(id, msg),
            (ConnKind::PubSub, OP_BINARY) if self.conn_mut(id).is_some_and(|c| c.msgpack()) => {
                self.dispatch_msgpack(id, msg)
            }
            (ConnKind::PubSub, OP_BINARY | _) => {
                let msg = "binary frames are not supported: send JSON envelopes as text";
                self.error(id, None, "", crate::ErrorCode::BadRequest, msg);
            }
        }
    }
}
