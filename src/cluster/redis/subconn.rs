//! A Redis subscriber connection of our own: the socket's bytes go to the cluster thread as
//! they were read (one event per read, decoded there by [`super::recv`]), and the
//! (un)subscribe commands it is given are written as the `redis` crate encodes them.
//!
//! The `redis` crate's `PubSub` built a `redis::Msg` (a value tree and three owned buffers) per
//! received publication and sent each through a channel of its own; at a node's receive rate
//! that was most of the cluster thread's cost.

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Ev;
use crate::proto::resp::{self, Push};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 << 10;

/// An open, authenticated subscriber connection.
pub(crate) enum Stream {
    /// TCP (`redis://`).
    Tcp(tokio::net::TcpStream),
    /// A Unix socket (`unix://`).
    Unix(tokio::net::UnixStream),
}

/// Connects to `info`'s address and runs `AUTH` and `SELECT` as it asks (RESP2: a subscriber
/// connection needs nothing of RESP3). Errors are one line for logs and `/readyz`.
pub(crate) async fn open(info: &ConnectionInfo) -> Result<Stream, String> {
    let mut s = match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let t = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| format!("subscriber connection: {e}"))?;
            let _ = t.set_nodelay(true);
            Stream::Tcp(t)
        }
        ConnectionAddr::Unix(path) => Stream::Unix(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| format!("subscriber connection: {e}"))?,
        ),
        _ => return Err("only redis:// and unix:// URLs are supported".into()),
    };
    let settings = info.redis_settings();
    if let Some(pass) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        auth.arg(pass);
        command(&mut s, &auth.get_packed_command(), "AUTH").await?;
    }
    if settings.db() != 0 {
        let select = redis::cmd("SELECT").arg(settings.db()).get_packed_command();
        command(&mut s, &select, "SELECT").await?;
    }
    Ok(s)
}

/// Writes one command and reads its answer: an error reply is an error.
async fn command(s: &mut Stream, cmd: &[u8], what: &str) -> Result<(), String> {
    match s {
        Stream::Tcp(t) => command_on(t, cmd, what).await,
        Stream::Unix(u) => command_on(u, cmd, what).await,
    }
}

async fn command_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    cmd: &[u8],
    what: &str,
) -> Result<(), String> {
    s.write_all(cmd).await.map_err(|e| format!("{what}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    loop {
        match resp::parse(&buf) {
            Ok(Some((Push::Error(e), _))) => {
                return Err(format!("{what} refused: {}", String::from_utf8_lossy(e)))
            }
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
        if s.read_buf(&mut buf)
            .await
            .map_err(|e| format!("{what}: {e}"))?
            == 0
        {
            return Err(format!("{what}: connection closed"));
        }
    }
}

/// Runs the connection of instance `i` (generation `gen`): every read goes to `ev` as
/// [`Ev::Data`], every command received on the returned sender is written; `Ev::Down` when the
/// connection ends. The task stops when the sender and `ev` are gone or it is aborted.
pub(crate) fn spawn(
    s: Stream,
    i: usize,
    gen: u64,
    ev: mpsc::UnboundedSender<Ev>,
) -> (mpsc::UnboundedSender<Vec<u8>>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::task::spawn_local(async move {
        let why = match s {
            Stream::Tcp(t) => run(t, i, gen, &ev, rx).await,
            Stream::Unix(u) => run(u, i, gen, &ev, rx).await,
        };
        if let Some(why) = why {
            let _ = ev.send(Ev::Down { i, gen, why });
        }
    });
    (tx, task)
}

/// The connection's loop; `Some(why)` when it ended, `None` when the cluster thread let go.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    i: usize,
    gen: u64,
    ev: &mpsc::UnboundedSender<Ev>,
    mut cmds: mpsc::UnboundedReceiver<Vec<u8>>,
) -> Option<String> {
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        tokio::select! {
            r = s.read_buf(&mut buf) => match r {
                Ok(0) => return Some("subscriber connection closed".into()),
                Ok(_) => {
                    let data: Bytes = buf.split().freeze();
                    if ev.send(Ev::Data { i, gen, data }).is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(format!("subscriber connection: {e}")),
            },
            cmd = cmds.recv() => match cmd {
                Some(c) => {
                    if let Err(e) = s.write_all(&c).await {
                        return Some(format!("subscriber connection: {e}"));
                    }
                }
                None => return None,
            },
        }
    }
}
