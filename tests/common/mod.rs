//! Shared helpers for integration tests: start a server on port 0, talk to it with
//! tokio-tungstenite (an independent client implementation).
#![allow(dead_code)]

pub mod backend;
pub mod proxy;
pub mod redis;
pub mod webhook;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringhub::config::Namespace;
use ringhub::hooks::{ConnectInfo, ConnectOutcome};
use ringhub::{Builder, Config, IoMode, RingHub, ServerError, ServerHandle};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod cluster;

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

/// Like [`builder`], starting from a whole `Config` (for settings without a builder method).
pub fn builder_with(io: IoMode, cfg: Config) -> Builder {
    RingHub::builder()
        .config(cfg)
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(2)
        .io(io)
        .handler_threads(2)
}

/// A pub/sub server (API key "k") whose door policy comes from settings pairs; `more` adds to
/// the builder. `None` when io_uring is unavailable (see [`start`]).
pub fn server_with(
    io: IoMode,
    settings: &[(&str, &str)],
    more: impl FnOnce(Builder) -> Builder,
) -> Option<ServerHandle> {
    let mut s = ringhub::settings::Settings::default();
    for (k, v) in settings {
        s.set(k, v, "test").unwrap();
    }
    s.validate().unwrap();
    let guard = ringhub::guard::Guard::from_settings(&s).unwrap();
    start(more(builder(io).guard(guard).api_key("k").pubsub()))
}

/// Shuts the server down and waits for its threads.
pub fn stop_server(h: ServerHandle) {
    h.shutdown();
    h.join();
}

/// A client frame: first byte `b0` (FIN, RSV bits, opcode), `payload` masked with `mask`.
pub fn masked_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![b0];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// `?user=NAME` (among other query pairs) becomes the connection's user (through `on_connect`).
pub fn users(b: Builder) -> Builder {
    b.on_connect(|c: &ConnectInfo<'_>| {
        let user = c
            .query
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("user=")))
            .map(str::to_string);
        Ok(ConnectOutcome {
            user,
            ..Default::default()
        })
    })
}

/// A namespace of topics `pattern` keeping `history` publications (no TTL), with presence and
/// join/leave events.
pub fn ns(pattern: &str, history: usize) -> Namespace {
    Namespace {
        pattern: pattern.into(),
        history_size: history,
        history_ttl: Duration::ZERO,
        presence: true,
        join_leave: true,
    }
}

/// A TLS client trusting only `cert` (the test's self-signed certificate).
pub fn tls_connector(
    cert: rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    // Deprecated in rustls 0.23.48 (no post-quantum key exchange): ring is what the server uses.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
}

/// Starts the server, or returns `None` when io_uring is forced but unavailable here — except
/// on CI (`CI=true`), where that is a failure: CI must test both shells.
pub fn start(b: Builder) -> Option<ServerHandle> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    match b.build().unwrap().start() {
        Ok(h) => Some(h),
        Err(ServerError::UringUnavailable(e)) => {
            uring_missing(&e.to_string());
            None
        }
        Err(e) => panic!("server failed to start: {e}"),
    }
}

/// Whether this run is on CI (`CI=true`), where a missing shell fails instead of skipping.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// io_uring cannot be used: panics on CI, else prints a note (the caller then skips).
pub fn uring_missing(why: &str) {
    uring_missing_on(on_ci(), why)
}

/// [`uring_missing`] with the CI flag given (testable without touching the environment).
pub fn uring_missing_on(ci: bool, why: &str) {
    if ci {
        panic!("io_uring is unavailable on CI (CI=true), so the uring tests cannot run: {why}");
    }
    eprintln!("note: skipping the io_uring variant: io_uring unavailable here ({why})");
}

/// Probes io_uring with the raw `io_uring_setup` syscall (seccomp or an old kernel refuse it).
pub fn uring_probe() -> Result<(), std::io::Error> {
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) into `params`.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor this function just opened and owns.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Whether a test for shell `io` can run here. For io_uring when the probe fails: panics on CI,
/// else prints a note and returns false (skip).
pub fn shell_available(io: IoMode) -> bool {
    match io {
        IoMode::Uring => match uring_probe() {
            Ok(()) => true,
            Err(e) => {
                uring_missing(&e.to_string());
                false
            }
        },
        _ => true,
    }
}

/// Defines one test per I/O shell for a function taking an [`IoMode`]: a module named after the
/// function with `uring` and `epoll` tests (`cargo test fanout::uring`). The uring test fails on
/// CI when io_uring cannot be created, and skips with a note elsewhere.
///
/// ```ignore
/// per_shell!(async fn cross_shard_fanout);
/// per_shell!(fn unmasked_frame_closes_with_1002);
/// ```
#[macro_export]
macro_rules! per_shell {
    (async fn $name:ident) => {
        mod $name {
            #[tokio::test]
            async fn uring() {
                if $crate::common::shell_available(ringhub::IoMode::Uring) {
                    super::$name(ringhub::IoMode::Uring).await;
                }
            }
            #[tokio::test]
            async fn epoll() {
                super::$name(ringhub::IoMode::Epoll).await;
            }
        }
    };
    (fn $name:ident) => {
        mod $name {
            #[test]
            fn uring() {
                if $crate::common::shell_available(ringhub::IoMode::Uring) {
                    super::$name(ringhub::IoMode::Uring);
                }
            }
            #[test]
            fn epoll() {
                super::$name(ringhub::IoMode::Epoll);
            }
        }
    };
}

pub async fn connect(h: &ServerHandle, path: &str) -> Ws {
    connect_addr(h.local_addr(), path).await
}

/// Like [`connect`], to a server known by its address (the binary).
pub async fn connect_addr(addr: std::net::SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
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

/// One blocking `read`, retried when a signal interrupts it (`EINTR`; io_uring's task-work
/// notifications in this process can cause one), as `read_to_end` does by itself.
pub fn read_some<R: std::io::Read>(r: &mut R, buf: &mut [u8]) -> usize {
    loop {
        match r.read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Both I/O shells (prefer [`per_shell!`], which makes one test per shell).
pub const BACKENDS: [IoMode; 2] = [IoMode::Epoll, IoMode::Uring];

/// Writes the raw request `req` and reads the response to its end: (status, whole response).
pub fn http_exchange(addr: std::net::SocketAddr, req: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD * 2)).unwrap();
    // The answer is read to EOF: ask for it (HTTP/1.1 keeps the connection open otherwise).
    let req = match req.split_once("\r\n") {
        Some((line, rest)) if !req.to_ascii_lowercase().contains("\r\nconnection:") => {
            format!("{line}\r\nConnection: close\r\n{rest}")
        }
        _ => req.to_string(),
    };
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// One blocking HTTP request; returns (status, body).
pub fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, out) = http_exchange(addr, &req);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// One blocking HTTP request; returns (status, body as JSON or `Null`).
pub fn http_json(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, body) = http_raw(addr, method, path, key, body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Reads a child ringhub's log until its "listening addr=" line; returns the address and keeps
/// draining the log in a thread (so the child never blocks on a full pipe).
pub fn wait_listening(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(out).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("ringhub exited before listening")
            .expect("read log");
        if let Some(at) = line.find("listening addr=") {
            let rest = &line[at + "listening addr=".len()..];
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// A request with an id; returns the reply's (or error's) envelope.
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    v: Value,
) -> Value {
    let id = v["id"].clone();
    send(ws, v).await;
    loop {
        let m = recv(ws).await;
        if m["id"] == id && (m["event"] == "reply" || m["event"] == "error") {
            return m;
        }
    }
}
