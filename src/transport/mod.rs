//! The two I/O shells around the sans-IO core: io_uring ([`uring`]) and epoll ([`epoll`]). Each
//! provides an acceptor yielding a read half (tokio `AsyncRead`, which fastwebsockets parses) and
//! a write half that takes owned buffers (what io_uring needs), and runs a shard's future on its
//! own single-threaded runtime. Everything above this module is shared.

pub(crate) mod epoll;
pub(crate) mod tls;
pub(crate) mod uring;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

/// Writes owned buffers, returning them for reuse.
pub(crate) trait Writer: 'static {
    /// Writes all of `buf`.
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
}

/// An accepted TCP connection, split.
pub(crate) struct Accepted<R, W> {
    pub read: R,
    pub write: W,
    pub fd: RawFd,
    pub peer: SocketAddr,
}

/// Yields accepted connections.
pub(crate) trait Acceptor: 'static {
    type Read: AsyncRead + Unpin + 'static;
    type Write: Writer;
    async fn accept(&self) -> io::Result<Accepted<Self::Read, Self::Write>>;
}

/// Binds one `SO_REUSEPORT` listener per shard on `addr` (port 0 picks one port for all).
pub(crate) fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
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

/// Shuts a socket down by descriptor. Used to cut a connection whose tasks are blocked on I/O;
/// callers guarantee the descriptor is still owned by a live connection.
pub(crate) fn shutdown_fd(fd: RawFd, how: libc::c_int) {
    // SAFETY: shutdown(2) takes any descriptor and only affects the socket; the fd is open
    // because the connection entry that holds it is alive (see `shard::ConnEntry`).
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// A read half that first yields bytes read past the HTTP request head.
pub(crate) struct Prefixed<R> {
    prefix: Bytes,
    inner: R,
}

impl<R> Prefixed<R> {
    pub fn new(prefix: Bytes, inner: R) -> Self {
        Self { prefix, inner }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
