//! `ringhub-peer-tungstenite`: a plain tokio-tungstenite server used as a comparison peer
//! and as the cheapest server for checking that the load generator is not the bottleneck.
//!
//! Modes: `broadcast` (every received text/binary message goes to every connected client,
//! sender included, through a tokio broadcast channel), `echo` (each message is sent back)
//! and `sink` (messages are read and discarded). Any request path is accepted.

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use std::future::ready;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(about = "tokio-tungstenite peer server (broadcast / echo / sink)")]
struct Args {
    /// Address to listen on (loopback recommended).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value_t = Mode::Broadcast)]
    mode: Mode,
    /// Runtime threads: 1 = current-thread runtime, N > 1 = multi-thread with N workers.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Broadcast channel capacity (messages a slow client may lag before losing some).
    #[arg(long, default_value_t = 1 << 16)]
    capacity: usize,
    /// Exit by itself after this many seconds (0 = run until killed).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Broadcast,
    Echo,
    Sink,
}

/// Messages dropped because a client lagged more than `--capacity` behind.
static LAGGED: AtomicU64 = AtomicU64::new(0);

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn broadcast_conn(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    tx: broadcast::Sender<Message>,
) {
    let mut rx = tx.subscribe();
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    LAGGED.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if sink.feed(msg).await.is_err() {
                break;
            }
            // Coalesce whatever else is already queued into the same flush.
            loop {
                match rx.try_recv() {
                    Ok(m) => {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        LAGGED.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                let _ = tx.send(msg);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    writer.abort();
}

async fn handle(stream: TcpStream, mode: Mode, tx: broadcast::Sender<Message>) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    match mode {
        Mode::Broadcast => broadcast_conn(ws, tx).await,
        Mode::Echo => {
            let (sink, stream) = ws.split();
            // `forward` feeds while messages are ready and flushes when the input stalls.
            let _ = stream
                .try_filter(|m| ready(m.is_text() || m.is_binary()))
                .forward(sink)
                .await;
        }
        Mode::Sink => {
            let (_sink, mut stream) = ws.split();
            while let Some(Ok(m)) = stream.next().await {
                if m.is_close() {
                    break;
                }
            }
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "ringhub-peer-tungstenite: {:?} on ws://{} ({} thread(s))",
        args.mode, args.listen, args.threads
    );
    let (tx, _) = broadcast::channel::<Message>(args.capacity.max(16));
    let tx = Arc::new(tx);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, args.mode, (*tx).clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let exit_after = args.exit_after;
    rt.block_on(async move {
        let limit = async {
            if exit_after > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(exit_after)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = serve(args) => r,
            _ = limit => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    let lagged = LAGGED.load(Ordering::Relaxed);
    if lagged > 0 {
        eprintln!("ringhub-peer-tungstenite: {lagged} messages dropped for lagging clients");
    }
    Ok(())
}
