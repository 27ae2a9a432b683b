//! Shared helpers for integration tests: start a server on port 0, talk to it with
//! tokio-tungstenite (an independent client implementation).
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringhub::{Builder, IoMode, RingHub, ServerError, ServerHandle};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Guard against a hung test; never used to assert speed.
pub const GUARD: Duration = Duration::from_secs(5);

/// A builder on 127.0.0.1:0 with two shards on `io`.
pub fn builder(io: IoMode) -> Builder {
    RingHub::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(2)
        .io(io)
        .handler_threads(2)
}

/// Starts the server, or returns `None` when io_uring is forced but unavailable here.
pub fn start(b: Builder) -> Option<ServerHandle> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    match b.build().unwrap().start() {
        Ok(h) => Some(h),
        Err(ServerError::UringUnavailable(e)) => {
            eprintln!("skipping: io_uring unavailable ({e})");
            None
        }
        Err(e) => panic!("server failed to start: {e}"),
    }
}

pub async fn connect(h: &ServerHandle, path: &str) -> Ws {
    let url = format!("ws://{}{}", h.local_addr(), path);
    let (ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    ws
}

pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, v: Value) {
    ws.send(WsMsg::Text(v.to_string())).await.expect("send");
}

/// Next text message as JSON (pings are answered by tungstenite and skipped).
pub async fn recv<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Value {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("recv timed out")
            .expect("stream ended")
            .expect("ws error");
        match m {
            WsMsg::Text(t) => return serde_json::from_str(&t).expect("server sent invalid JSON"),
            WsMsg::Ping(_) | WsMsg::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads until the server's close frame; returns its code.
pub async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> CloseCode {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("close timed out");
        match m {
            Some(Ok(WsMsg::Close(Some(f)))) => return f.code,
            Some(Ok(WsMsg::Close(None))) => panic!("close without code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close: {e}"),
            None => panic!("stream ended without close frame"),
        }
    }
}

/// Subscribes and waits for the reply (after which publications are guaranteed to arrive).
pub async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    topic: &str,
    id: u64,
) {
    send(
        ws,
        serde_json::json!({"event":"subscribe","topic":topic,"id":id}),
    )
    .await;
    assert_eq!(
        recv(ws).await,
        serde_json::json!({"event":"reply","id":id,"topic":topic})
    );
}

/// Runs `f` against io_uring and epoll.
pub const BACKENDS: [IoMode; 2] = [IoMode::Epoll, IoMode::Uring];
