//! The epoll shell: a readiness loop (mio, edge-triggered) per shard. One 64 KiB read buffer is
//! shared by every connection of the shard — frames are decoded straight out of it and only an
//! incomplete frame is copied to the connection — and at the end of each iteration every
//! connection with output gets one `sendmsg` over iovecs of its queued frames.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{apply_io, FdReserve, RateLog, Stopping};
use crate::shard::shared::HubShared;
use crate::shard::{Rewatch, ShardState};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKE: Token = Token(usize::MAX - 2);
/// The shard's read buffer.
const READ_BUF: usize = 64 * 1024;

/// Runs shard `index` until it has shut down.
pub(crate) fn run(
    index: usize,
    hub: Arc<HubShared>,
    listener: std::net::TcpListener,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = Some(mio::net::TcpListener::from_std(listener));
    if let Some(l) = listener.as_mut() {
        poll.registry().register(l, LISTENER, Interest::READABLE)?;
    }
    let inbox = &hub.inboxes[index];
    let efd = inbox.eventfd();
    poll.registry()
        .register(&mut SourceFd(&efd), WAKE, Interest::READABLE)?;
    let mut st = ShardState::new(index, hub.clone());
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; READ_BUF];
    let (mut dirty, mut io, mut iov, mut cut) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut adopted = Vec::new();
    let mut moved = Vec::new();
    let mut stopping = Stopping::default();
    let mut accept_log = RateLog::new();
    let mut reserve = FdReserve::new();
    let mut accept_retry: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let mut wake = st.next_tick();
        for t in [accept_retry, stopping.wake_at()].into_iter().flatten() {
            wake = wake.min(t);
        }
        let timeout = if inbox.arm() {
            wake.saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        st.set_now(Instant::now());
        for ev in events.iter() {
            match ev.token() {
                LISTENER => {
                    if let Some(l) = listener.as_ref() {
                        accept_retry = accept_all(&mut st, l, &poll, &mut accept_log, &mut reserve);
                    }
                }
                WAKE => inbox.clear_eventfd(),
                Token(t) => {
                    let slot = t as u32;
                    if st.lent(slot) {
                        // A socket a polling session borrowed: watched, not read.
                        st.lent_ready(slot);
                        continue;
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        let closed = ev.is_read_closed() || ev.is_error();
                        read_all(&mut st, slot, &mut rbuf, closed);
                    }
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        st.on_writable(slot);
                    }
                }
            }
        }
        if accept_retry.is_some_and(|t| Instant::now() >= t) {
            if let Some(l) = listener.as_ref() {
                accept_retry = accept_all(&mut st, l, &poll, &mut accept_log, &mut reserve);
            }
        }
        while let Some(msg) = inbox.pop() {
            st.handle_msg(msg);
        }
        // Sockets adopted from an embedding server: registered like accepted ones.
        st.take_adopted(&mut adopted);
        for slot in adopted.drain(..) {
            register(&mut st, &poll, slot);
        }
        rewatch(&mut st, &poll, &mut moved);
        st.tick();
        flush(&mut st, &mut dirty, &mut iov);
        apply_io(&mut st, &mut io, &mut cut);
        // A cut socket reads EOF from now on: say so without waiting for an event.
        for slot in cut.drain(..) {
            st.on_eof(slot);
        }
        flush(&mut st, &mut dirty, &mut iov);
        apply_io(&mut st, &mut io, &mut cut);
        cut.clear();
        rewatch(&mut st, &poll, &mut moved);
        if st.is_shutting_down() {
            if let Some(mut l) = listener.take() {
                let _ = poll.registry().deregister(&mut l);
                // Out of LISTEN at once: clients waiting in the backlog are refused.
                // SAFETY: shuts down our own listening socket, closed right after.
                unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
                stopping.begin(Instant::now(), hub.config.shutdown_timeout);
            }
            if stopping.check(&mut st, Instant::now()) {
                flush(&mut st, &mut dirty, &mut iov);
                apply_io(&mut st, &mut io, &mut cut);
                return Ok(());
            }
        }
    }
}

/// Accepts until the backlog is empty. On a failure other than "nothing to accept" (EMFILE,
/// ENFILE, ENOBUFS) returns when to try again: edge-triggered readiness will not fire again for
/// connections already waiting.
fn accept_all(
    st: &mut ShardState,
    l: &mio::net::TcpListener,
    poll: &Poll,
    log: &mut RateLog,
    reserve: &mut FdReserve,
) -> Option<Instant> {
    loop {
        match l.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let fd: RawFd = stream.into_raw_fd();
                let slot = st.accept(fd, peer);
                register(st, poll, slot);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let now = Instant::now();
                let shed = match e.raw_os_error() {
                    Some(errno) if FdReserve::is_exhaustion(errno) => {
                        reserve.shed(l.as_raw_fd(), 64)
                    }
                    _ => 0,
                };
                if let Some(skipped) = log.allow(now) {
                    tracing::warn!(error = %e, shed, skipped, "accept failed; clients waiting were answered 503; pausing accepts for 100 ms");
                }
                return Some(now + Duration::from_millis(100));
            }
        }
    }
}

/// Watches a new connection's socket (edge-triggered, both directions); a socket that cannot
/// be registered is cut.
fn register(st: &mut ShardState, poll: &Poll, slot: u32) {
    let Some(fd) = st.fd(slot) else { return };
    let reg = poll.registry().register(
        &mut SourceFd(&fd),
        Token(slot as usize),
        Interest::READABLE | Interest::WRITABLE,
    );
    if reg.is_err() {
        st.on_send_error(slot);
    }
}

/// Sockets that changed entries (a polling session borrowing or giving back its parked GET's
/// socket), in order: deregistered from the slot it leaves, registered under the one it joins
/// (readiness is reported at once if it is ready). Applied before the next wait.
fn rewatch(st: &mut ShardState, poll: &Poll, list: &mut Vec<Rewatch>) {
    // Giving a socket back (a failed registration) asks for more: until none is left.
    loop {
        st.take_rewatch(list);
        if list.is_empty() {
            return;
        }
        rewatch_once(st, poll, list);
    }
}

fn rewatch_once(st: &mut ShardState, poll: &Poll, list: &mut Vec<Rewatch>) {
    for r in list.drain(..) {
        match r {
            Rewatch::Unwatch(fd) if fd >= 0 => {
                let _ = poll.registry().deregister(&mut SourceFd(&fd));
            }
            Rewatch::Watch(id) if st.live_fd(id).is_some() && st.lent(id.slot()) => {
                // Readiness to read only (writable at once would give it back at once).
                let fd = st.live_fd(id).unwrap_or(-1);
                let token = Token(id.slot() as usize);
                let reg = poll
                    .registry()
                    .register(&mut SourceFd(&fd), token, Interest::READABLE);
                if reg.is_err() {
                    // Unwatched, it would wait for its answer all the same: give it back now.
                    st.lent_ready(id.slot());
                }
            }
            Rewatch::Watch(id) if st.live_fd(id).is_some() => register(st, poll, id.slot()),
            // Epoll holds no operation on a socket: nothing to cancel.
            _ => {}
        }
    }
}

/// Reads until the socket is drained (edge-triggered), decoding from the shared buffer. A short
/// read means drained — unless the event also reported the peer's FIN (`closed`), which no
/// later edge would report again: then read on to the EOF.
fn read_all(st: &mut ShardState, slot: u32, buf: &mut [u8], closed: bool) {
    loop {
        if !st.wants_input(slot) {
            return;
        }
        let Some(fd) = st.fd(slot) else { return };
        // SAFETY: reads into our own buffer from a descriptor owned by a live entry.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let n = n as usize;
            st.on_input(slot, &mut buf[..n]);
            if n < buf.len() && !closed {
                return;
            }
        } else if n == 0 {
            st.on_eof(slot);
            return;
        } else {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => return,
                Some(libc::EINTR) => {}
                _ => {
                    st.on_eof(slot);
                    return;
                }
            }
        }
    }
}

/// Writes every connection with output: one `sendmsg` over its queued frames, repeated while
/// the socket takes it all.
fn flush(st: &mut ShardState, dirty: &mut Vec<u32>, iov: &mut Vec<libc::iovec>) {
    st.take_dirty(dirty);
    for slot in dirty.drain(..) {
        let Some(fd) = st.fd(slot) else { continue };
        while st.next_send(slot, iov) {
            match send(fd, iov) {
                Ok(n) => {
                    if !st.on_sent(slot, n) {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    st.on_would_block(slot);
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    st.on_sent(slot, 0);
                }
                Err(_) => {
                    st.on_send_error(slot);
                    break;
                }
            }
        }
    }
}

/// `sendmsg` with `MSG_NOSIGNAL`: a peer that went away is an error, not a SIGPIPE.
pub(crate) fn send(fd: RawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: the iovecs point into frames the shard keeps alive until `on_sent`; the msghdr
    // lives for the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
