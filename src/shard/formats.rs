//! Wire formats per connection: MessagePack (subprotocol `ringhub.msgpack`) translated at the
//! connection's edges, and the encodings of one publication shared on fan-out.
//!
//! The shard's frames stay JSON inside. A MessagePack connection's binary messages become JSON
//! before `dispatch` ([`ShardState::dispatch_msgpack`]); what is queued to it alone goes through
//! `enqueue`, which converts it for that connection ([`ShardState::packed_for`]); on fan-out a
//! publication is converted once per shard, at its first MessagePack subscriber, and compressed
//! once more per window size when permessage-deflate applies ([`Encodings`]).

use bytes::Bytes;

use super::{ConnEntry, Frame, ShardState};
use crate::proto::deflate::Deflater;
use crate::proto::msgpack;
use crate::proto::socketio_map;
use crate::proto::stats::ShardStats;
use crate::ConnId;

impl ShardState {
    /// A binary message of a MessagePack connection: converted to the JSON envelope and
    /// dispatched like a text one; a message with no JSON form is answered `bad_request`.
    pub(super) fn dispatch_msgpack(&mut self, id: ConnId, msg: &[u8]) {
        let mut json = Vec::with_capacity(msg.len() + msg.len() / 2 + 16);
        match msgpack::to_json(msg, &mut json) {
            Ok(()) => self.dispatch(id, &json),
            Err(e) => self.error(id, e.id, "", crate::ErrorCode::BadRequest, &e.message),
        }
    }

    /// `frame` as the connection `id` reads it: the MessagePack binary frame for a JSON text
    /// frame when it negotiated MessagePack (counted), else `frame` itself.
    pub(super) fn packed_for(&self, id: ConnId, frame: Bytes) -> Bytes {
        let Some(c) = self.conn(id) else { return frame };
        if c.eio_bare() {
            // Bare Engine.IO: the envelope's data as one message; its own packets as they are.
            return crate::proto::engineio_bare::frame_from_envelope(&frame).unwrap_or(frame);
        }
        if let Some(home) = c.sio_home() {
            // Socket.IO: the envelope as an Engine.IO message; other frames (its own Engine.IO
            // packets, control frames) as they are. While the connection's event of a
            // namespace is handled, what a handler sends it goes to that namespace.
            let home = self
                .sio_ctx
                .filter(|(c, _)| *c == id)
                .map_or(home, |(_, n)| n);
            let namespaces = &self.hub.config.socketio_namespaces;
            return socketio_map::frame_from_envelope(&frame, namespaces, home).unwrap_or(frame);
        }
        if !c.msgpack() {
            return frame;
        }
        match msgpack::frame_from_json(&frame) {
            Some(packed) => {
                ShardStats::add(&self.stats().msgpack_encodings, 1);
                packed
            }
            None => frame,
        }
    }

    pub(super) fn conn(&self, id: ConnId) -> Option<&ConnEntry> {
        self.conns.get(id.slot() as usize).filter(|c| c.id == id)
    }
}

/// The encodings of one publication on a shard: the JSON frame as given, and the others each
/// made at the first subscriber that needs it and shared (one reference count) by the rest —
/// compressed per deflate window size, MessagePack, MessagePack compressed. `None` inside a
/// slot: that encoding is not smaller (or not possible) and the uncompressed one goes.
pub(super) struct Encodings<'a> {
    json: &'a Bytes,
    plain: Frame,
    deflated: [Option<Option<Frame>>; 7],
    packed: Option<Option<Frame>>,
    packed_deflated: [Option<Option<Frame>>; 7],
    /// Socket.IO frames per set of namespaces (made at the first subscriber of each).
    sio: Vec<(u128, Option<Frame>)>,
    /// The bare Engine.IO message (`proto::engineio_bare`).
    eio: Option<Option<Frame>>,
}

impl<'a> Encodings<'a> {
    /// The encodings of `json`, none made yet.
    pub(super) fn new(json: &'a Bytes) -> Self {
        Self {
            json,
            plain: Frame::new(json.clone()),
            deflated: Default::default(),
            packed: None,
            packed_deflated: Default::default(),
            sio: Vec::new(),
            eio: None,
        }
    }

    /// The frame for a bare Engine.IO connection: the publication's data as one message, made
    /// at the first such subscriber and shared; `None` if it has none.
    pub(super) fn pick_eio(&mut self) -> Option<&Frame> {
        let json = self.json;
        self.eio
            .get_or_insert_with(|| {
                crate::proto::engineio_bare::frame_from_envelope(json).map(Frame::new)
            })
            .as_ref()
    }

    /// The frames for a Socket.IO connection whose rooms matching the publication are in the
    /// namespaces `mask` (bit `i`: the `i`-th): `emit(event, data)` on each (with the offset
    /// last when `epoch` is the stored publication's), made once per shard per set of
    /// namespaces; `None` if the publication has no Socket.IO form (a frame the server encoded
    /// always has one).
    pub(super) fn pick_sio(
        &mut self,
        stats: &ShardStats,
        namespaces: &[String],
        mask: u128,
        epoch: Option<&str>,
    ) -> Option<&Frame> {
        let at = match self.sio.iter().position(|(m, _)| *m == mask) {
            Some(at) => at,
            None => {
                ShardStats::add(&stats.socketio_encodings, 1);
                let mut all: Option<Vec<u8>> = None;
                let mut one = None;
                for nsp in (0..namespaces.len()).filter(|n| mask & (1 << n) != 0) {
                    let f = socketio_map::frame_from_envelope_at(self.json, namespaces, nsp, epoch);
                    match (f, one.take(), &mut all) {
                        (None, ..) => {}
                        (Some(f), None, None) => one = Some(f),
                        (Some(f), Some(first), None) => {
                            all = Some([&first[..], &f[..]].concat());
                        }
                        (Some(f), _, Some(a)) => a.extend_from_slice(&f),
                    }
                }
                let f = all.map(Bytes::from).or(one);
                self.sio.push((mask, f.map(Frame::new)));
                self.sio.len() - 1
            }
        };
        self.sio[at].1.as_ref()
    }

    /// The frame for a connection with deflate window `bits` (0: none) and `msgpack` or not.
    pub(super) fn pick(
        &mut self,
        deflater: &mut Deflater,
        stats: &ShardStats,
        bits: u8,
        msgpack: bool,
    ) -> &Frame {
        let json = self.json;
        let packed = match msgpack {
            true => self
                .packed
                .get_or_insert_with(|| {
                    ShardStats::add(&stats.msgpack_encodings, 1);
                    msgpack::frame_from_json(json).map(Frame::new)
                })
                .as_ref(),
            false => None,
        };
        let (base, slots) = match packed {
            Some(p) => (p, &mut self.packed_deflated),
            None => (&self.plain, &mut self.deflated),
        };
        if bits == 0 {
            return base;
        }
        slots[usize::from(bits - 9).min(6)]
            .get_or_insert_with(|| deflater.frame(base, bits).map(Frame::new))
            .as_ref()
            .unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Every subscriber of one format (and window) gets the same frame; each encoding is made
    /// once, the MessagePack one counted once, and deflate applies to it too.
    #[test]
    fn each_encoding_is_made_once_and_shared() {
        let text = format!(r#"{{"text":"{}"}}"#, "compressible ".repeat(40));
        let json = crate::proto::envelope::publication("t", "e", Some(text.as_bytes()));
        let stats = ShardStats::default();
        let mut deflater = Deflater::new(6, 64);
        let mut enc = Encodings::new(&json);
        let picks: Vec<Frame> = [(0, false), (0, true), (15, false), (15, true), (12, true)]
            .iter()
            .flat_map(|&(bits, mp)| {
                [0, 1].map(|_| enc.pick(&mut deflater, &stats, bits, mp).clone())
            })
            .collect();
        for pair in picks.chunks(2) {
            assert!(Frame::ptr_eq(&pair[0], &pair[1]), "shared, not made twice");
        }
        assert_eq!(stats.msgpack_encodings.load(Relaxed), 1);
        let (plain, packed, z, packed_z) = (&picks[0], &picks[2], &picks[4], &picks[6]);
        assert!(Frame::ptr_eq(plain, &Frame::new(json.clone())) || plain.as_ref() == &json);
        assert_eq!(packed[0], 0x82, "binary");
        assert_eq!(z[0], 0xC1, "compressed text");
        assert_eq!(packed_z[0], 0xC2, "compressed binary");
        assert!(!Frame::ptr_eq(&picks[6], &picks[8]), "one per window size");
        assert!(packed_z.len() < packed.len() && packed.len() < plain.len());
    }
}
