//! The two I/O shells around the sans-IO shard: io_uring ([`uring`]) and epoll ([`epoll`]). Each
//! runs one shard's event loop on its thread: it owns the listener and the sockets, feeds the
//! [`ShardState`] what arrives, and at the end of every iteration writes what the state queued
//! (one send per connection with output, iovecs over the shared frames) and carries out the
//! socket work it asked for. Everything else is shared.

mod bufring;
pub(crate) mod epoll;
mod portcheck;
pub(crate) mod uring;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::shard::{IoReq, ShardState};

/// Binds one `SO_REUSEPORT` listener per shard on `addr` (port 0 picks one port for all).
/// Refuses an address another process already listens on: `SO_REUSEPORT` would otherwise let a
/// second server join it silently and split the traffic between two unrelated processes.
pub(crate) fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        // SO_REUSEADDR (not REUSEPORT): ignores connections in TIME_WAIT, not a live listener.
        probe.set_reuse_address(true)?;
        if let Err(e) = portcheck::bind_past_leftover(addr.port(), || probe.bind(&addr.into())) {
            return Err(if e.kind() == io::ErrorKind::AddrInUse {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "address already in use (is another ringhub or another server running on it?)",
                )
            } else {
                e
            });
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        sock.bind(&addr.into())?;
        sock.listen(4096)?;
        let l: std::net::TcpListener = sock.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// The peer address of an accepted socket (io_uring's multishot accept does not report it).
pub(crate) fn peer_addr(fd: RawFd) -> SocketAddr {
    // SAFETY: getpeername writes at most `len` bytes into the zeroed storage we own.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) == 0
        {
            if let Some(a) = socket2::SockAddr::new(storage, len).as_socket() {
                return a;
            }
        }
    }
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// Carries out the shard's socket work. Returns the slots that were cut (their reads end).
pub(crate) fn apply_io(st: &mut ShardState, reqs: &mut Vec<IoReq>, cut: &mut Vec<u32>) {
    loop {
        st.take_io(reqs);
        if reqs.is_empty() {
            return;
        }
        for r in reqs.drain(..) {
            // SAFETY (all three): the descriptors belong to live entries of this shard (the
            // entry is removed only together with its `Close`), so none was closed or reused.
            // A shutdown is looked up by connection id: its slot may hold a newer connection.
            match r {
                IoReq::ShutWr(id) => {
                    if let Some(fd) = st.live_fd(id) {
                        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                    }
                }
                IoReq::Cut(id) => {
                    if let Some(fd) = st.live_fd(id) {
                        if st.unsent(id.slot()) {
                            // A frame is unfinished (the peer stopped reading past the close
                            // deadline): end with a reset, not a FIN that would pass the cut
                            // stream off as complete. Linger 0 makes the final close() send RST.
                            let lg = libc::linger {
                                l_onoff: 1,
                                l_linger: 0,
                            };
                            unsafe {
                                libc::setsockopt(
                                    fd,
                                    libc::SOL_SOCKET,
                                    libc::SO_LINGER,
                                    (&lg as *const libc::linger).cast(),
                                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                                )
                            };
                        }
                        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                        cut.push(id.slot());
                    }
                }
                IoReq::Close(fd) => unsafe {
                    libc::close(fd);
                },
            }
        }
    }
}

/// The graceful-shutdown bookkeeping both loops share.
#[derive(Default)]
pub(crate) struct Stopping {
    /// When connections get cut if they have not closed.
    deadline: Option<Instant>,
    /// When the loop exits whatever is left.
    hard: Option<Instant>,
}

impl Stopping {
    /// Called once the listener is closed.
    pub(crate) fn begin(&mut self, now: Instant, timeout: Duration) {
        self.deadline.get_or_insert(now + timeout);
    }

    /// Cuts stragglers at the deadline; true when the loop must exit.
    pub(crate) fn check(&mut self, st: &mut ShardState, now: Instant) -> bool {
        if st.is_drained() {
            return true;
        }
        if let Some(d) = self.deadline {
            if now >= d && self.hard.is_none() {
                tracing::warn!(
                    open = st.len(),
                    "shutdown deadline passed with connections still open: cutting them"
                );
                st.cut_all();
                self.hard = Some(now + Duration::from_secs(1));
            }
        }
        self.hard.is_some_and(|h| now >= h)
    }

    /// The earliest time the loop must wake for shutdown.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.hard.or(self.deadline)
    }
}

/// Logs at most one line per interval for a repeating condition (accept failures).
pub(crate) struct RateLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    pub(crate) const fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; `suppressed` says how many were skipped since the last line.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(5))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A spare descriptor held for the moment the process runs out: at `EMFILE`/`ENFILE` the shell
/// gives it up, accepts the waiting clients one at a time, answers each `503` and closes it,
/// then takes the spare again — so clients at the limit get an answer instead of hanging in the
/// backlog (the classic trick; libuv and nginx users know it).
pub(crate) struct FdReserve(RawFd);

/// What a client shed at the descriptor limit reads.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 30\r\nConnection: close\r\nRetry-After: 1\r\n\r\nserver at its descriptor limit";

impl FdReserve {
    pub(crate) fn new() -> Self {
        Self(Self::open())
    }

    fn open() -> RawFd {
        // SAFETY: opens /dev/null read-only; the descriptor is owned by the reserve.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
    }

    /// Whether an accept error means the process or system is out of descriptors.
    pub(crate) fn is_exhaustion(errno: i32) -> bool {
        matches!(errno, libc::EMFILE | libc::ENFILE)
    }

    /// Answers up to `max` waiting clients on listener `lfd` with 503; returns how many.
    pub(crate) fn shed(&mut self, lfd: RawFd, max: usize) -> usize {
        let mut n = 0;
        if self.0 >= 0 {
            // SAFETY: closes our own spare descriptor.
            unsafe { libc::close(self.0) };
            self.0 = -1;
        }
        while n < max {
            // SAFETY: a non-blocking accept on the listener we own; the new descriptor is
            // written to once (a best-effort response to a client we refuse) and closed.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                break;
            }
            unsafe {
                libc::send(
                    fd,
                    SHED_RESPONSE.as_ptr().cast(),
                    SHED_RESPONSE.len(),
                    libc::MSG_NOSIGNAL,
                );
                // Read what the client already sent: closing with unread input would reset
                // the connection and could destroy the answer before the client reads it.
                let mut sink = [0u8; 2048];
                for _ in 0..8 {
                    let r =
                        libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT);
                    if r <= 0 {
                        break;
                    }
                }
                libc::shutdown(fd, libc::SHUT_WR);
                libc::close(fd);
            }
            n += 1;
        }
        self.0 = Self::open();
        n
    }
}

impl Drop for FdReserve {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: closes our own spare descriptor.
            unsafe { libc::close(self.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    use super::apply_io;
    use crate::shard::shared::HubShared;
    use crate::shard::ShardState;

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    /// One io_uring batch of completions, in the order the reconnect storm produced it: the
    /// send to an aborted client fails (a cut is requested), its receive ends with the reset
    /// (the entry is released), and an accept in the same batch takes the freed slot. The cut,
    /// applied at the end of the iteration, must not shut down the new connection's socket —
    /// before, it did, and that client read EOF instead of its 101.
    #[test]
    fn a_cut_of_a_connection_gone_spares_the_next_one_in_its_slot() {
        let mut st = ShardState::new(0, Arc::new(HubShared::for_bench(1)));
        let (old, _old_peer) = UnixStream::pair().unwrap();
        let (new, new_peer) = UnixStream::pair().unwrap();
        let slot = st.accept(old.into_raw_fd(), ([127, 0, 0, 1], 1).into());
        st.on_input(slot, &mut UPGRADE.to_vec());
        let mut iov = Vec::new();
        assert!(st.next_send(slot, &mut iov), "the 101 goes out");
        st.on_send_error(slot);
        st.on_eof(slot);
        let new_fd = new.into_raw_fd();
        assert_eq!(st.accept(new_fd, ([127, 0, 0, 1], 2).into()), slot);
        let (mut reqs, mut cut) = (Vec::new(), Vec::new());
        apply_io(&mut st, &mut reqs, &mut cut);
        assert!(cut.is_empty(), "cut {cut:?}");
        new_peer.set_nonblocking(true).unwrap();
        let read = (&new_peer).read(&mut [0u8; 16]).map_err(|e| e.kind());
        assert_eq!(
            read,
            Err(std::io::ErrorKind::WouldBlock),
            "the new connection's socket is open (Ok(0) is the EOF of a shutdown)"
        );
        // SAFETY: the new connection's descriptor, owned by the test's state, closed once.
        unsafe { libc::close(new_fd) };
    }
}
