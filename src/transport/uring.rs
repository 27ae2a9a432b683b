//! The io_uring shell: a tokio-uring runtime per shard. tokio-uring's completion-based streams take
//! owned buffers and do not implement tokio's `AsyncRead`; [`UringRead`] bridges that for
//! fastwebsockets by keeping one owned-buffer read in flight and serving `poll_read` from it.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio_uring::net::{TcpListener, TcpStream};

use super::{Accepted, Acceptor, Writer};

/// Bounds of the owned buffer a read completes into. It is sized to what the caller asks for, so
/// a quiet connection (which asks for little) keeps only a small buffer in flight.
const READ_MIN: usize = 512;
const READ_MAX: usize = 64 * 1024;

type ReadFut = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// `AsyncRead` over a tokio-uring stream (one read in flight, completed bytes copied out).
pub(crate) struct UringRead {
    stream: Rc<TcpStream>,
    buf: Option<Vec<u8>>,
    pos: usize,
    len: usize,
    inflight: Option<ReadFut>,
}

impl AsyncRead for UringRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.len {
                let buf = this
                    .buf
                    .as_ref()
                    .expect("a completed read leaves its buffer");
                let n = (this.len - this.pos).min(out.remaining());
                out.put_slice(&buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            let want = out.remaining().clamp(READ_MIN, READ_MAX);
            let fut = this.inflight.get_or_insert_with(|| {
                let mut b = match this.buf.take() {
                    Some(b) if b.capacity() >= want && b.capacity() <= want * 4 => b,
                    _ => Vec::with_capacity(want),
                };
                b.clear();
                let s = this.stream.clone();
                Box::pin(async move { s.read(b).await })
            });
            let (res, b) = match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.inflight = None;
            this.buf = Some(b);
            this.pos = 0;
            this.len = 0;
            match res {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(n) => this.len = n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The write side of a tokio-uring stream.
pub(crate) struct UringWrite(Rc<TcpStream>);

impl Writer for UringWrite {
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (r, b) = self.0.write_all(buf).await;
        (r, b)
    }
}

/// Accepts on a tokio-uring listener.
pub(crate) struct UringAcceptor(TcpListener);

impl Acceptor for UringAcceptor {
    type Read = UringRead;
    type Write = UringWrite;
    async fn accept(&self) -> io::Result<Accepted<UringRead, UringWrite>> {
        let (s, peer) = self.0.accept().await?;
        s.set_nodelay(true)?;
        let fd = s.as_raw_fd();
        let s = Rc::new(s);
        Ok(Accepted {
            read: UringRead {
                stream: s.clone(),
                buf: None,
                pos: 0,
                len: 0,
                inflight: None,
            },
            write: UringWrite(s),
            fd,
            peer,
        })
    }
}

/// Whether this process may create an io_uring (seccomp, kernel, `io_uring_disabled`).
/// Probes on a scratch thread, so the caller may itself be inside an async runtime.
pub(crate) fn probe() -> io::Result<()> {
    std::thread::spawn(|| tokio_uring::Runtime::new(&tokio_uring::builder()).map(drop))
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("io_uring probe panicked")))
}

/// Runs `f` (given this shard's acceptor) on a fresh tokio-uring runtime.
pub(crate) fn run<F, Fut>(listener: std::net::TcpListener, f: F) -> io::Result<()>
where
    F: FnOnce(UringAcceptor) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
    rt.block_on(async move {
        let l = TcpListener::from_std(listener);
        f(UringAcceptor(l)).await;
    });
    Ok(())
}
