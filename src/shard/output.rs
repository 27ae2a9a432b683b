//! What goes out of a connection and when its socket is done: the send the shell makes next
//! (zero-copy iovecs over the queued frames, or the owned TLS/SSE buffer), what a completed or
//! failed write does to the queue, and the entry's removal once both directions are finished.

use std::io::Write;

use std::collections::VecDeque;

use super::entry::{Io, SockBufs};
use super::{flag, Frame, IoReq, Phase, ShardState};
use crate::proto::stats::ShardStats;

/// Most iovecs one send carries (the kernel's `IOV_MAX`).
const MAX_IOV: usize = 1024;
/// Most bytes one send carries.
const MAX_SEND: usize = 1 << 20;
/// Owned output buffers larger than this are released once written.
const KEEP_WBUF: usize = 16 * 1024;

impl ShardState {
    /// What to write next on `slot`, as iovecs into `iov` (cleared first): slices of the shared
    /// frames in the queue (no copy), or of the connection's owned buffer (TLS records, SSE
    /// events). False when there is nothing to send now; then the write side may be shut down
    /// (see [`take_io`](Self::take_io)). The slices stay valid until [`on_sent`](Self::on_sent)
    /// or [`on_send_error`](Self::on_send_error): frames in flight are never dropped.
    pub(crate) fn next_send(&mut self, slot: u32, iov: &mut Vec<libc::iovec>) -> bool {
        iov.clear();
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return false;
        };
        c.clear(flag::DIRTY);
        if c.has(flag::SENDING) || c.has(flag::WR_SHUT) || c.hold > 0 {
            return false;
        }
        // A long-polling session's output leaves by its carriers (`flush_polls`), never here.
        let Io::Sock(b) = &mut c.io else {
            return false;
        };
        if c.tls.is_some() || matches!(c.phase, Phase::Sse) {
            let frames = Self::render_owned(b, &mut c.out, &mut c.queued, &c.phase, &mut c.tls);
            let stats = &self.hub.stats[self.index];
            ShardStats::add(&stats.messages_out, frames);
        }
        if b.wsent < b.wbuf.len() {
            iov.push(libc::iovec {
                iov_base: b.wbuf[b.wsent..].as_ptr() as *mut _,
                iov_len: b.wbuf.len() - b.wsent,
            });
        } else {
            let mut bytes = 0;
            for (i, f) in c.out.iter().enumerate() {
                let skip = if i == 0 { c.head_sent } else { 0 };
                iov.push(libc::iovec {
                    iov_base: f[skip..].as_ptr() as *mut _,
                    iov_len: f.len() - skip,
                });
                bytes += f.len() - skip;
                if iov.len() == MAX_IOV || bytes >= MAX_SEND {
                    break;
                }
            }
            c.in_flight = iov.len() as u32;
        }
        if !iov.is_empty() {
            c.set(flag::SENDING);
            return true;
        }
        if c.closing.is_some() {
            c.set(flag::WR_SHUT);
            self.io.push(IoReq::ShutWr(c.id));
            self.release_if_done(slot);
        }
        false
    }

    /// Moves queued frames into the owned buffer: through rustls for TLS, rendered as events for
    /// SSE (HTTP bytes, which never have the FIN bit of our frames, pass as they are). Returns
    /// the frames moved.
    fn render_owned(
        b: &mut SockBufs,
        out: &mut VecDeque<Frame>,
        queued: &mut usize,
        phase: &Phase,
        tls: &mut Option<Box<rustls::ServerConnection>>,
    ) -> u64 {
        if b.wsent == b.wbuf.len() {
            b.wbuf.clear();
            b.wsent = 0;
        }
        let sse = matches!(phase, Phase::Sse);
        let mut frames = 0;
        // SSE events render straight into the output buffer; only TLS needs them in a scratch
        // buffer first (allocated once per flush, and only then).
        let mut scratch = Vec::new();
        while let Some(f) = out.pop_front() {
            *queued -= f.len();
            frames += 1;
            let event = sse && f.first().is_some_and(|b| b & 0x80 != 0);
            match tls.as_mut() {
                Some(tls) => {
                    let bytes: &[u8] = if event {
                        scratch.clear();
                        crate::proto::sse::render(&f, &mut scratch);
                        &scratch
                    } else {
                        &f
                    };
                    // Cannot fail: the session has no buffer limit (see `accept`).
                    let _ = tls.writer().write_all(bytes);
                }
                None if event => crate::proto::sse::render(&f, &mut b.wbuf),
                None => b.wbuf.extend_from_slice(&f),
            }
        }
        if let Some(tls) = tls.as_mut() {
            while tls.wants_write() {
                if tls.write_tls(&mut b.wbuf).is_err() {
                    break;
                }
            }
        }
        frames
    }

    /// `n` bytes of the last [`next_send`](Self::next_send) were written. Returns whether more
    /// is waiting (the shell sends again, now or at the end of the iteration).
    pub(crate) fn on_sent(&mut self, slot: u32, mut n: usize) -> bool {
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return false;
        };
        c.clear(flag::SENDING);
        c.in_flight = 0;
        let stats = &self.hub.stats[self.index];
        ShardStats::add(&stats.bytes_out, n as u64);
        if let Some(b) = c.bufs().filter(|b| b.wsent < b.wbuf.len()) {
            b.wsent += n;
            if b.wsent >= b.wbuf.len() {
                b.wsent = 0;
                b.wbuf.clear();
                if b.wbuf.capacity() > KEEP_WBUF {
                    b.wbuf = Vec::new();
                }
            }
        } else {
            let mut frames = 0;
            while n > 0 {
                let Some(f) = c.out.front() else { break };
                let rest = f.len() - c.head_sent;
                if n >= rest {
                    n -= rest;
                    c.queued -= f.len();
                    c.head_sent = 0;
                    c.out.pop_front();
                    frames += 1;
                } else {
                    c.head_sent += n;
                    n = 0;
                }
            }
            ShardStats::add(&stats.messages_out, frames);
        }
        if c.has(flag::FRESH) && c.out.is_empty() {
            // The upgrade's response is out: an idle connection keeps no queue buffer.
            c.clear(flag::FRESH);
            c.out = Default::default();
        }
        if !self.syncs.is_empty() {
            // The queue drained: the next page of an inbox sync, if one waits.
            let id = c.id;
            self.sync_resume(id);
        }
        let Some(c) = self.conns.get_mut(slot as usize) else {
            return false;
        };
        let more = !c.out.is_empty()
            || c.wbuf_pending()
            || c.tls.as_ref().is_some_and(|t| t.wants_write())
            || (c.closing.is_some() && !c.has(flag::WR_SHUT));
        if !more {
            self.release_if_done(slot);
        }
        more
    }

    /// epoll: the socket buffer is full; the send stays pending until it is writable.
    pub(crate) fn on_would_block(&mut self, slot: u32) {
        if let Some(c) = self.conns.get_mut(slot as usize) {
            c.in_flight = 0;
        }
    }

    /// epoll: the socket became writable.
    pub(crate) fn on_writable(&mut self, slot: u32) {
        if let Some(c) = self.conns.get_mut(slot as usize) {
            if c.has(flag::SENDING) {
                c.clear(flag::SENDING);
                self.mark_dirty(slot);
            }
        }
    }

    /// A send failed: the peer is gone. Cut the socket so a pending receive ends too.
    pub(crate) fn on_send_error(&mut self, slot: u32) {
        let Some(id) = self.slot_id(slot) else { return };
        if let Some(c) = self.conn_mut(id) {
            c.clear(flag::SENDING);
            c.in_flight = 0;
            c.head_sent = 0;
            c.out.clear();
            c.queued = 0;
            if let Some(b) = c.bufs() {
                b.wbuf = Vec::new();
                b.wsent = 0;
            }
            c.set(flag::WR_SHUT);
            if !c.has(flag::RD_EOF) {
                self.io.push(IoReq::Cut(id));
            }
        }
        self.begin_close(id);
        self.release_if_done(slot);
    }

    /// Whether bytes meant for `slot` are still unwritten (a cut now would truncate a frame).
    pub(crate) fn unsent(&self, slot: u32) -> bool {
        self.conns.get(slot as usize).is_some_and(|c| {
            !c.out.is_empty() || c.wbuf_pending() || c.tls.as_ref().is_some_and(|t| t.wants_write())
        })
    }

    /// Queues `slot` for the end-of-iteration flush.
    pub(crate) fn flush_later(&mut self, slot: u32) {
        self.mark_dirty(slot);
    }

    /// Removes the entry once both directions are done and the shell holds nothing of it.
    pub(crate) fn release_if_done(&mut self, slot: u32) {
        let Some(c) = self.conns.get(slot as usize) else {
            return;
        };
        let done = c.has(flag::RD_EOF)
            && c.has(flag::WR_SHUT)
            && !c.has(flag::SENDING)
            && c.ops == 0
            && c.closing.is_some();
        if !done {
            return;
        }
        let mut c = self.conns.remove(slot as usize);
        c.uncap(&self.hub.config.guard);
        if let Some(u) = &c.user {
            if let Some(ids) = self.users.get_mut(u) {
                ids.retain(|i| *i != c.id);
                if ids.is_empty() {
                    self.users.remove(u);
                    self.durable.remove(u);
                    self.webhook_user(u, false);
                }
            }
        }
        self.forget(c.id);
        if c.has(flag::COUNTED) {
            tracing::debug!(conn = %c.id, "disconnected");
            if let Some(hook) = self.hub.hooks.on_disconnect.clone() {
                let client = self.hub.client_id(c.id);
                let info = super::hooks::DisconnectInfo {
                    client: &client,
                    user: c.user.as_deref(),
                    remote: c.remote.addr(),
                };
                let _ = super::hooks::guarded(|| {
                    hook(&info);
                    Ok(())
                });
            }
            self.stats()
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        if c.fd >= 0 {
            self.io.push(IoReq::Close(c.fd));
        }
    }

    /// The shell's operations in flight on connection `id` (0 when it is gone).
    pub(crate) fn ops_of(&self, id: crate::ConnId) -> u8 {
        self.conns
            .get(id.slot() as usize)
            .filter(|c| c.id == id)
            .map_or(0, |c| c.ops)
    }

    /// The shell's operation count on `slot` (io_uring receives and sends in flight).
    pub(crate) fn ops_mut(&mut self, slot: u32) -> Option<&mut u8> {
        self.conns.get_mut(slot as usize).map(|c| &mut c.ops)
    }

    /// Cuts every connection at the shutdown deadline.
    pub(crate) fn cut_all(&mut self) {
        let slots: Vec<u32> = self.conns.iter().map(|(s, _)| s as u32).collect();
        for slot in slots {
            if let Some(c) = self.conns.get_mut(slot as usize) {
                if !c.has(flag::FORCED) {
                    c.set(flag::FORCED);
                    self.io.push(IoReq::Cut(c.id));
                }
            }
        }
    }
}
