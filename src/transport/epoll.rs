//! The epoll shell: a current-thread tokio runtime per shard, tokio's `TcpStream` split in two.

use std::io;
use std::os::fd::AsRawFd;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Accepted, Acceptor, Writer};

/// Accepts on a tokio listener.
pub(crate) struct EpollAcceptor(tokio::net::TcpListener);

/// The write half of a tokio stream.
pub(crate) struct EpollWrite(OwnedWriteHalf);

impl Writer for EpollWrite {
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let r = self.0.write_all(&buf).await;
        (r, buf)
    }
}

impl Acceptor for EpollAcceptor {
    type Read = OwnedReadHalf;
    type Write = EpollWrite;
    async fn accept(&self) -> io::Result<Accepted<OwnedReadHalf, EpollWrite>> {
        let (s, peer) = self.0.accept().await?;
        s.set_nodelay(true)?;
        let fd = s.as_raw_fd();
        let (read, write) = s.into_split();
        Ok(Accepted {
            read,
            write: EpollWrite(write),
            fd,
            peer,
        })
    }
}

/// Runs `f` (given this shard's acceptor) to completion on a fresh current-thread runtime.
pub(crate) fn run<F, Fut>(listener: std::net::TcpListener, f: F) -> io::Result<()>
where
    F: FnOnce(EpollAcceptor) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = tokio::net::TcpListener::from_std(listener)?;
        f(EpollAcceptor(l)).await;
        Ok(())
    })
}
