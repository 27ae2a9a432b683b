//! Server context takeover (opt-in, `[compression] context_takeover`): a connection that did not
//! offer `server_no_context_takeover` keeps its own LZ77 window, so a message may refer back to
//! the messages before it and a chatty one-to-one stream of similar messages compresses far
//! better than each message on its own.
//!
//! The cost is why it is off by default. The client's inflater holds every byte the server
//! compressed for it, so **every** compressed message to such a connection must go through its
//! own stream, publications included: it cannot share the shard's once-per-publication frame,
//! and each delivery to it is one `deflate` call and one allocation. Its stream holds the
//! window and zlib's hash tables for the connection's whole life, allocated at its first
//! compressed message (BENCHMARKS.md, "Context takeover", has the measured bytes). A message
//! once fed to the stream must be sent compressed (the client's window would otherwise miss
//! it), so the "send it plain when compression does not shrink it" rule is off for it; the
//! threshold still applies (a plain message does not enter either window).

use std::collections::HashMap;

use bytes::Bytes;
use flate2::Compress;

use super::{encode, header, server_payload, Deflater};
use crate::proto::frame::Fail;

/// zlib failed in the middle of a message: the connection's window is lost with it.
pub(crate) const FAILED: Fail = (1011, "compression failed");

/// The streams of the connections with context takeover, by connection key.
#[derive(Default)]
pub(super) struct Kept(HashMap<u64, Box<Compress>>);

impl Deflater {
    /// The compressed form of `frame` for connection `key`, with its own stream (made at its
    /// first compressed message with a window of `bits`): `Ok(None)` for control frames,
    /// frames already compressed and payloads under the threshold (unless `always`), which go
    /// out as they are. An error means the connection must be closed (its window is lost).
    pub fn frame_kept(
        &mut self,
        key: u64,
        frame: &[u8],
        bits: u8,
        always: bool,
    ) -> Result<Option<Bytes>, Fail> {
        let Some((op, payload)) = server_payload(frame) else {
            return Ok(None);
        };
        if (payload.len() < self.threshold && !always) || !(9..=15).contains(&bits) {
            return Ok(None);
        }
        if payload.is_empty() {
            // An empty stored block, its tail stripped. zlib would write nothing: a second sync
            // flush in a row is skipped, and the client, given only the tail, would misread it.
            let mut f = header(0x80 | 0x40 | op, 1);
            f.push(0);
            return Ok(Some(Bytes::from(f)));
        }
        let level = self.level;
        let z = self
            .kept
            .0
            .entry(key)
            .or_insert_with(|| Box::new(Compress::new_with_window_bits(level, false, bits)));
        match encode(z, op, payload, None) {
            Some(f) => Ok(Some(f)),
            None => {
                self.kept.0.remove(&key);
                Err(FAILED)
            }
        }
    }

    /// Drops connection `key`'s stream, if it has one (it closed).
    pub fn forget(&mut self, key: u64) {
        self.kept.0.remove(&key);
    }

    /// How many connections hold a stream of their own.
    #[cfg(test)]
    pub fn kept_streams(&self) -> usize {
        self.kept.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envelope::raw_frame;
    use flate2::{Decompress, FlushDecompress};

    /// A client inflater that keeps its window between messages.
    fn inflate_kept(z: &mut Decompress, frame: &[u8]) -> Vec<u8> {
        let at = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mut data = frame[at..].to_vec();
        data.extend_from_slice(&super::super::TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        z.decompress_vec(&data, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn a_kept_window_makes_repeated_messages_smaller_and_still_inflates() {
        let mut d = Deflater::new(3, 100);
        let msg = |i: u32| {
            format!(
                r#"{{"topic":"dm:alice","event":"message","data":{{"from":"bob","seq":{i},"text":"are we still on for the meeting tomorrow at ten, the usual room?"}}}}"#
            )
        };
        let mut client = Decompress::new(false);
        let mut sizes = Vec::new();
        for i in 0..5 {
            let m = msg(i);
            let f = d
                .frame_kept(7, &raw_frame(1, m.as_bytes()), 15, false)
                .unwrap()
                .unwrap();
            assert_eq!(f[0], 0xC1);
            assert_eq!(inflate_kept(&mut client, &f), m.as_bytes(), "message {i}");
            sizes.push(f.len());
        }
        // Each message after the first refers back to the one before it.
        assert!(sizes[1] * 3 < sizes[0], "{sizes:?}");
        // Another connection starts from an empty window.
        let other = d
            .frame_kept(8, &raw_frame(1, msg(0).as_bytes()), 15, false)
            .unwrap()
            .unwrap();
        assert_eq!(other.len(), sizes[0]);
        assert_eq!(d.kept_streams(), 2);
        // Under the threshold, a control frame, an already compressed frame: left as they are.
        assert_eq!(d.frame_kept(7, &raw_frame(1, b"hi"), 15, false), Ok(None));
        assert_eq!(
            d.frame_kept(7, &raw_frame(9, &[b'a'; 120]), 15, false),
            Ok(None)
        );
        assert_eq!(d.frame_kept(7, &other, 15, false), Ok(None));
        // ... and the window is unaffected by them.
        let m = msg(9);
        let f = d
            .frame_kept(7, &raw_frame(1, m.as_bytes()), 15, false)
            .unwrap()
            .unwrap();
        assert_eq!(inflate_kept(&mut client, &f), m.as_bytes());
        d.forget(7);
        d.forget(8);
        assert_eq!(d.kept_streams(), 0);
    }

    #[test]
    fn an_incompressible_message_is_still_sent_compressed_to_keep_the_windows_equal() {
        let mut d = Deflater::new(3, 0);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut client = Decompress::new(false);
        for payload in [&noise[..], b"", b"after the noise, some text text text"] {
            let f = d
                .frame_kept(1, &raw_frame(2, payload), 12, false)
                .unwrap()
                .unwrap();
            assert_eq!(f[0], 0xC2);
            assert_eq!(inflate_kept(&mut client, &f), payload);
        }
    }
}
