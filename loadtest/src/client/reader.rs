//! The read half of a client connection: one large buffer, frames parsed in batches, inflated
//! when the server compressed them.

use super::{DEFLATE, RX_BYTES};
use anyhow::{anyhow, bail, Result};
use fastwebsockets::OpCode;
use std::sync::atomic::Ordering;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

/// Read half of a client connection: a batch frame parser over one large buffer.
///
/// `fill` reads whatever the socket has (cancel-safe) and `next_buffered` then yields
/// every complete frame in the buffer without further syscalls, so callers can process a
/// whole batch under one clock read.
pub struct WsReader {
    stream: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// `--deflate`: the inflater (made at the first compressed frame) and its output.
    inflater: Option<Box<flate2::Decompress>>,
    inflated: Vec<u8>,
    /// The server keeps its LZ77 window between messages (it did not answer
    /// `server_no_context_takeover`): the inflater is not reset between messages.
    takeover: bool,
}

/// Frames larger than this are refused.
const MAX_FRAME: usize = 64 << 20;

/// Location of one complete frame in the buffer.
struct FrameInfo {
    opcode: OpCode,
    header: usize,
    len: usize,
    mask: Option<[u8; 4]>,
    compressed: bool,
}

impl WsReader {
    pub(super) fn new(stream: OwnedReadHalf, leftover: &[u8], takeover: bool) -> WsReader {
        let mut buf = vec![0u8; (64 * 1024).max(leftover.len() * 2)];
        buf[..leftover.len()].copy_from_slice(leftover);
        WsReader {
            stream,
            buf,
            start: 0,
            end: leftover.len(),
            inflater: None,
            inflated: Vec::new(),
            takeover,
        }
    }

    /// Parses the frame header at `start`: `Ok(Err(needed))` when incomplete.
    fn parse(&self) -> Result<std::result::Result<FrameInfo, usize>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return Ok(Err(2));
        }
        let compressed = b[0] & 0x40 != 0;
        if b[0] & 0x30 != 0 || (compressed && !DEFLATE.load(Ordering::Relaxed)) {
            bail!("frame with reserved bits set (compression is not negotiated)");
        }
        let opcode = OpCode::try_from(b[0] & 0x0f).map_err(|e| anyhow!("{e}"))?;
        if b[0] & 0x80 == 0 || opcode == OpCode::Continuation {
            bail!("fragmented messages are not supported by this load generator");
        }
        let masked = b[1] & 0x80 != 0;
        let (mut header, len) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(l)).unwrap_or(usize::MAX),
                )
            }
            126 => return Ok(Err(4)),
            127 => return Ok(Err(10)),
            n => (2, n as usize),
        };
        if len > MAX_FRAME {
            bail!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit");
        }
        let mask = if masked {
            if b.len() < header + 4 {
                return Ok(Err(header + 4));
            }
            let m = [b[header], b[header + 1], b[header + 2], b[header + 3]];
            header += 4;
            Some(m)
        } else {
            None
        };
        if b.len() < header + len {
            return Ok(Err(header + len));
        }
        Ok(Ok(FrameInfo {
            opcode,
            header,
            len,
            mask,
            compressed,
        }))
    }

    fn take(&mut self, f: FrameInfo) -> (OpCode, &[u8]) {
        let from = self.start + f.header;
        self.start = from + f.len;
        let payload = &mut self.buf[from..from + f.len];
        if let Some(m) = f.mask {
            fastwebsockets::unmask(payload, m);
        }
        if !f.compressed {
            return (f.opcode, payload);
        }
        // Without context takeover each message inflates on its own; with it, the window of
        // the previous messages is kept.
        let z = self
            .inflater
            .get_or_insert_with(|| Box::new(flate2::Decompress::new(false)));
        if !self.takeover {
            z.reset(false);
        }
        self.inflated.clear();
        for input in [&payload[..], &[0u8, 0, 0xff, 0xff][..]] {
            let start = z.total_in();
            loop {
                self.inflated.reserve(payload.len() * 4 + 1024);
                let at = (z.total_in() - start) as usize;
                if z.decompress_vec(
                    &input[at..],
                    &mut self.inflated,
                    flate2::FlushDecompress::Sync,
                )
                .is_err()
                {
                    self.inflated.clear();
                    break;
                }
                if (z.total_in() - start) as usize == input.len()
                    && self.inflated.len() < self.inflated.capacity()
                {
                    break;
                }
            }
        }
        (f.opcode, &self.inflated)
    }

    /// The next complete frame already in the buffer, if any.
    pub fn next_buffered(&mut self) -> Result<Option<(OpCode, &[u8])>> {
        match self.parse()? {
            Ok(f) => Ok(Some(self.take(f))),
            Err(_) => Ok(None),
        }
    }

    /// Reads more bytes from the socket; an error on EOF. Cancel-safe.
    pub async fn fill(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let needed = match self.parse()? {
            Ok(_) => return Ok(()),
            Err(n) => n,
        };
        // Compact when the pending frame would not fit or little read room is left.
        if self.buf.len() - self.start < needed.max(4096) || self.buf.len() - self.end < 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < needed || self.buf.len() - self.end < 1024 {
            let size = (needed + 1024).next_power_of_two().max(self.buf.len() * 2);
            self.buf.resize(size, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        RX_BYTES.fetch_add(n as u64, Ordering::Relaxed);
        self.end += n;
        Ok(())
    }

    /// The next frame, reading from the socket as needed.
    pub async fn next(&mut self) -> Result<(OpCode, &[u8])> {
        loop {
            if let Ok(f) = self.parse()? {
                return Ok(self.take(f));
            }
            self.fill().await?;
        }
    }
}
