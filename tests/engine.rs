//! Engine v2 regression tests: every behaviour below runs once on the io_uring shell and once on
//! the epoll shell (`*_uring` / `*_epoll`). No sleeps: every wait is a blocking read (or an
//! awaited message) under a guard timeout that only keeps a broken engine from hanging the test.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use ringhub::{Config, IoMode, ServerError, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMsg;

/// A longer guard for the heavy tests (floods, thousands of clients, drain delay) on a loaded
/// machine; still only a hang guard.
const LONG_GUARD: Duration = Duration::from_secs(30);

/// Sends a raw request and reads the whole response (to EOF, or the guard).
fn http_raw(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let _ = s.write_all(req.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(addr: SocketAddr, path: &str) -> String {
    http_raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nConnection: close\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n"),
    )
}

fn status_of(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

fn upgrade_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
}

/// A raw WebSocket client: upgrades and reads the response head byte by byte (so no frame
/// after it is consumed). Panics unless the answer is 101.
fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(LONG_GUARD)).unwrap();
    s.write_all(upgrade_req(path).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).expect("reading the upgrade response");
        assert!(
            n == 1,
            "EOF in the upgrade response: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked client frame.
fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![(u8::from(fin) << 7) | op];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// One server frame (unmasked): (fin, opcode, payload).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l)?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l)?;
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[0] & 0x80 != 0, h[0] & 0x0f, p))
}

fn close_code(payload: &[u8]) -> u16 {
    assert!(
        payload.len() >= 2,
        "close frame without a code: {payload:?}"
    );
    u16::from_be_bytes([payload[0], payload[1]])
}

// ---------------------------------------------------------------------------------------------
// 1. The handshake timeout answers 408 and then closes the socket.

fn handshake_timeout(io: IoMode) {
    let cfg = Config {
        handshake_timeout: Duration::from_millis(300),
        // Long, so that only the handshake timeout (not the close deadline's cut) can end the
        // socket within the guard.
        close_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let Some(h) = start(builder_with(io, cfg).pubsub()) else {
        return;
    };
    // A client that sends nothing, and one that sends half a head.
    for partial in ["", "GET /ws HTTP/1.1\r\nHost: x\r\n"] {
        let mut s = TcpStream::connect(h.local_addr()).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        s.write_all(partial.as_bytes()).unwrap();
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "{io:?} partial={partial:?}: expected a 408, got {text:?} ({r:?})"
        );
        assert!(
            r.is_ok(),
            "{io:?} partial={partial:?}: the socket stayed open after the 408 (read: {r:?})"
        );
    }
    // The server still serves.
    assert_eq!(
        status_of(&get(h.local_addr(), "/healthz")),
        "HTTP/1.1 200 OK"
    );
    stop_server(h);
}

#[test]
fn handshake_timeout_closes_uring() {
    handshake_timeout(IoMode::Uring);
}

#[test]
fn handshake_timeout_closes_epoll() {
    handshake_timeout(IoMode::Epoll);
}

// ---------------------------------------------------------------------------------------------
// 2. Health, metrics and the API answer at the connection cap; upgrades get 503.

async fn operator_endpoints_at_cap(io: IoMode) {
    let Some(h) = server_with(io, &[("limits.max_connections", "1")], |b| b) else {
        return;
    };
    let a = h.local_addr();
    let mut ws = connect(&h, "/ws").await;
    subscribe(&mut ws, "held", 1).await; // the slot is taken for sure
    let health = get(a, "/healthz");
    assert_eq!(status_of(&health), "HTTP/1.1 200 OK", "{io:?}: {health}");
    let metrics = get(a, "/metrics");
    assert_eq!(status_of(&metrics), "HTTP/1.1 200 OK", "{io:?}: {metrics}");
    assert!(metrics.contains("ringhub_connections"), "{metrics}");
    let stats = get(a, "/api/v1/stats");
    assert_eq!(status_of(&stats), "HTTP/1.1 200 OK", "{io:?}: {stats}");
    let ready = get(a, "/readyz");
    assert_eq!(status_of(&ready), "HTTP/1.1 200 OK", "{io:?}: {ready}");
    // A second WebSocket client and an SSE client are over the cap.
    let second = http_raw(a, &upgrade_req("/ws"));
    assert!(
        status_of(&second).starts_with("HTTP/1.1 503"),
        "{io:?}: {second}"
    );
    let sse = http_raw(a, "GET /sse?topics=t HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(status_of(&sse).starts_with("HTTP/1.1 503"), "{io:?}: {sse}");
    // The connected client is unaffected.
    subscribe(&mut ws, "still", 2).await;
    drop(ws);
    stop_server(h);
}

#[tokio::test]
async fn operator_endpoints_at_cap_uring() {
    operator_endpoints_at_cap(IoMode::Uring).await;
}

#[tokio::test]
async fn operator_endpoints_at_cap_epoll() {
    operator_endpoints_at_cap(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 3. A slow consumer cut by the server reads a 1008 close frame, not a bare EOF or reset.

async fn slow_consumer_gets_1008(io: IoMode) {
    let Some(h) = start(builder(io).outbound_queue(64 * 1024).pubsub()) else {
        return;
    };
    let mut slow = connect(&h, "/ws").await;
    subscribe(&mut slow, "flood", 1).await;
    // A reader on the same topic paces the flood: each publication is published only after the
    // previous one reached it, so the server is never asked to buffer more than one in flight.
    let mut pacer = connect(&h, "/ws").await;
    subscribe(&mut pacer, "flood", 2).await;
    let chunk = "z".repeat(16 * 1024);
    let cap = 4000; // 64 MB: far beyond the 64 KiB queue plus any kernel buffering.
    let mut sent = 0;
    while h.stats().slow_consumers == 0 {
        assert!(
            sent < cap,
            "{io:?}: no slow consumer after {cap} publications"
        );
        h.publish("flood", "e", &json!({"n": sent, "c": chunk}))
            .unwrap();
        let m = recv(&mut pacer).await;
        assert_eq!(m["data"]["n"], sent, "{io:?}: pacer lost a publication");
        sent += 1;
    }
    assert_eq!(
        h.stats().slow_consumers,
        1,
        "{io:?}: only the slow one is cut"
    );
    // Now the slow one reads: whole publications, in order, then a close frame with 1008.
    let mut next = 0;
    let code = loop {
        let m = tokio::time::timeout(LONG_GUARD, slow.next())
            .await
            .unwrap_or_else(|_| panic!("{io:?}: timed out reading the slow consumer"));
        match m {
            Some(Ok(WsMsg::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("a whole JSON publication");
                assert_eq!(v["data"]["n"], next, "{io:?}: publications out of order");
                next += 1;
            }
            Some(Ok(WsMsg::Close(Some(f)))) => break f.code,
            Some(Ok(WsMsg::Close(None))) => panic!("{io:?}: close frame without a code"),
            Some(Ok(other)) => panic!("{io:?}: unexpected {other:?}"),
            Some(Err(e)) => {
                panic!("{io:?}: error instead of a 1008 close after {next} messages: {e}")
            }
            None => panic!("{io:?}: EOF without a close frame after {next} messages"),
        }
    };
    assert_eq!(code, CloseCode::Policy, "{io:?}");
    assert!(next < sent, "{io:?}: the slow consumer got everything?");
    // The pacer is still served.
    h.publish("flood", "after", &json!(1)).unwrap();
    assert_eq!(recv(&mut pacer).await["event"], "after");
    drop((slow, pacer));
    stop_server(h);
}

#[tokio::test]
async fn slow_consumer_gets_1008_uring() {
    slow_consumer_gets_1008(IoMode::Uring).await;
}

#[tokio::test]
async fn slow_consumer_gets_1008_epoll() {
    slow_consumer_gets_1008(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 4. A second server on a port in use is refused with `ServerError::Listen` (AddrInUse).

fn second_server_refused(io: IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let addr = h.local_addr();
    assert_ne!(addr.port(), 0);
    match builder(io).listen(addr).pubsub().build().unwrap().start() {
        Err(ServerError::Listen { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::AddrInUse, "{io:?}: {source}")
        }
        Err(e) => panic!("{io:?}: expected ServerError::Listen, got {e}"),
        Ok(second) => {
            stop_server(second);
            panic!("{io:?}: a second server started on {addr}, which the first one holds");
        }
    }
    // The first one still serves.
    assert_eq!(status_of(&get(addr, "/healthz")), "HTTP/1.1 200 OK");
    stop_server(h);
}

#[test]
fn second_server_same_port_refused_uring() {
    second_server_refused(IoMode::Uring);
}

#[test]
fn second_server_same_port_refused_epoll() {
    second_server_refused(IoMode::Epoll);
}

/// Once `join` returns the port is free: nothing accepts on it, and a new server can bind it
/// (a restart on the same port). Three rounds on the same port.
fn port_free_after_join(io: IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let addr = h.local_addr();
    let mut h = Some(h);
    for round in 0..3 {
        let old = h.take().unwrap();
        stop_server(old);
        assert!(
            TcpStream::connect(addr).is_err(),
            "{io:?} round {round}: {addr} still accepts connections after join"
        );
        match builder(io).listen(addr).pubsub().build().unwrap().start() {
            Ok(next) => h = Some(next),
            Err(e) => panic!("{io:?} round {round}: restart on {addr} after join failed: {e}"),
        }
    }
    stop_server(h.unwrap());
}

#[test]
fn port_free_after_join_uring() {
    port_free_after_join(IoMode::Uring);
}

#[test]
fn port_free_after_join_epoll() {
    port_free_after_join(IoMode::Epoll);
}

// ---------------------------------------------------------------------------------------------
// 5. Drain delay: readiness 503 and new clients 503, existing clients served, then 1001.

async fn drain_delay(io: IoMode) {
    let Some(h) = start(builder(io).drain_delay(Duration::from_secs(3)).pubsub()) else {
        return;
    };
    let a = h.local_addr();
    let mut old = connect(&h, "/ws").await;
    subscribe(&mut old, "before", 1).await;
    assert_eq!(status_of(&get(a, "/readyz")), "HTTP/1.1 200 OK");
    h.shutdown();
    let ready = get(a, "/readyz");
    assert!(
        status_of(&ready).starts_with("HTTP/1.1 503"),
        "{io:?}: {ready}"
    );
    let health = get(a, "/healthz");
    assert_eq!(status_of(&health), "HTTP/1.1 200 OK", "{io:?}: {health}");
    let fresh = http_raw(a, &upgrade_req("/ws"));
    assert!(
        status_of(&fresh).starts_with("HTTP/1.1 503"),
        "{io:?}: {fresh}"
    );
    // The existing client is still served during the delay (a new subscription needs the other
    // shard's acknowledgement too).
    subscribe(&mut old, "during", 2).await;
    let joiner = std::thread::spawn(move || h.join());
    // After the delay it is told 1001.
    let code = loop {
        match tokio::time::timeout(LONG_GUARD, old.next())
            .await
            .expect("no close after the drain delay")
        {
            Some(Ok(WsMsg::Close(Some(f)))) => break f.code,
            Some(Ok(WsMsg::Ping(_) | WsMsg::Pong(_))) => continue,
            other => panic!("{io:?}: expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Away, "{io:?}");
    drop(old);
    joiner.join().unwrap();
    assert!(
        std::net::TcpStream::connect(a).is_err(),
        "{io:?}: listener still accepting after join"
    );
}

#[tokio::test]
async fn drain_delay_uring() {
    drain_delay(IoMode::Uring).await;
}

#[tokio::test]
async fn drain_delay_epoll() {
    drain_delay(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 6. A rate-limited client is closed once; what it had already sent is not answered one by one.

fn rate_limit_closes_once(io: IoMode) {
    let Some(h) = server_with(
        io,
        &[("limits.messages_per_second", "1"), ("limits.burst", "1")],
        |b| b,
    ) else {
        return;
    };
    let mut s = raw_ws(h.local_addr(), "/ws");
    let mut burst = Vec::new();
    for i in 0..100u64 {
        let m = json!({"topic":"t","event":"e","id":i}).to_string();
        burst.extend_from_slice(&masked(true, 0x1, m.as_bytes()));
    }
    s.write_all(&burst).unwrap(); // one write: ~5 KB, 100 frames
    let (mut replies, mut limited, mut other) = (0, 0, Vec::new());
    let code = loop {
        let (fin, op, p) = read_frame(&mut s).unwrap_or_else(|e| {
            panic!("{io:?}: no close frame (got {replies} replies, {limited} rate_limited): {e}")
        });
        assert!(fin);
        match op {
            0x1 => {
                let v: Value = serde_json::from_slice(&p).unwrap();
                match (v["event"].as_str(), v["data"]["code"].as_str()) {
                    (Some("reply"), _) => replies += 1,
                    (Some("error"), Some("rate_limited")) => limited += 1,
                    _ => other.push(v),
                }
            }
            0x8 => break close_code(&p),
            op => panic!("{io:?}: unexpected opcode {op}"),
        }
    };
    assert_eq!(code, 1008, "{io:?}");
    assert!(other.is_empty(), "{io:?}: {other:?}");
    assert!(replies >= 1, "{io:?}: the burst should pass");
    assert!(
        limited <= 3,
        "{io:?}: {limited} rate_limited errors before the close: the buffered messages were answered one by one"
    );
    assert!(
        replies + limited <= 4,
        "{io:?}: {replies} replies, {limited} errors"
    );
    // Nothing after the close frame; the server ends the connection.
    let mut rest = Vec::new();
    let r = s.read_to_end(&mut rest);
    assert!(r.is_ok(), "{io:?}: no EOF after the close: {r:?}");
    assert!(
        rest.is_empty(),
        "{io:?}: bytes after the close frame: {rest:?}"
    );
    let st = h.stats();
    assert!(
        st.rate_limited >= 1 && st.rate_limited <= 4,
        "{io:?}: stats().rate_limited = {}",
        st.rate_limited
    );
    assert!(
        st.messages_in <= 5,
        "{io:?}: messages_in = {}",
        st.messages_in
    );
    drop(s);
    stop_server(h);
}

#[test]
fn rate_limited_closed_once_uring() {
    rate_limit_closes_once(IoMode::Uring);
}

#[test]
fn rate_limited_closed_once_epoll() {
    rate_limit_closes_once(IoMode::Epoll);
}

// ---------------------------------------------------------------------------------------------
// 7. SSE streams over TLS and in plain text, with publications from the library handle.

struct TlsFiles {
    dir: std::path::PathBuf,
    cert: rcgen::CertifiedKey<rcgen::KeyPair>,
}

fn tls_files(tag: &str) -> TlsFiles {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ringhub-engine-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    TlsFiles { dir, cert }
}

/// A TLS client connection to `addr` trusting `files`' certificate.
async fn tls_connect(
    files: &TlsFiles,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tls_connector(files.cert.cert.der().clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(LONG_GUARD, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
}

/// The length of `got` and its last bytes, for failure messages.
fn tail(got: &[u8]) -> String {
    let from = got.len().saturating_sub(200);
    format!(
        "{} bytes, ending {:?}",
        got.len(),
        String::from_utf8_lossy(&got[from..])
    )
}

/// Reads from `r` until `got` contains `want`.
async fn read_until<R: tokio::io::AsyncRead + Unpin>(
    label: &str,
    r: &mut R,
    got: &mut Vec<u8>,
    want: &str,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // One deadline for the whole wait: SSE heartbeats must not keep a broken stream alive.
    let deadline = tokio::time::Instant::now() + LONG_GUARD;
    while !String::from_utf8_lossy(got).contains(want) {
        let n = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(r, &mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!("{label}: timed out waiting for {want:?}; got {}", tail(got))
            })
            .expect("read");
        assert!(
            n > 0,
            "stream ended; got {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

async fn sse_stream<R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: IoMode,
    label: &str,
    h: &ServerHandle,
    s: &mut R,
) {
    tokio::io::AsyncWriteExt::write_all(
        s,
        b"GET /sse?topics=feed,big HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    // The head comes once the subscriptions are active on every shard.
    read_until(&format!("{io:?} {label}"), s, &mut got, "\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"),
        "{io:?} {label}: {text}"
    );
    got.clear();
    h.publish("feed", "a", &json!({"n": 1})).unwrap();
    h.publish("other", "x", &json!(0)).unwrap();
    let big = "b".repeat(100_000); // many TLS records
    h.publish("big", "b", &big).unwrap();
    h.publish("feed", "c", &json!("end")).unwrap();
    let want = format!(
        "data: {{\"topic\":\"feed\",\"event\":\"a\",\"data\":{{\"n\":1}}}}\n\ndata: {{\"topic\":\"big\",\"event\":\"b\",\"data\":\"{big}\"}}\n\ndata: {{\"topic\":\"feed\",\"event\":\"c\",\"data\":\"end\"}}\n\n"
    );
    read_until(&format!("{io:?} {label}"), s, &mut got, "\"end\"}\n\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text == want,
        "{io:?} {label}: SSE stream differs ({} bytes, want {})",
        text.len(),
        want.len()
    );
}

async fn sse_tls_and_plain(io: IoMode) {
    // Plain first, then the same stream over TLS.
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut tcp = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    sse_stream(io, "plain", &h, &mut tcp).await;
    drop(tcp);
    stop_server(h);

    let files = tls_files(&format!("{io:?}"));
    let Some(h) = server_with(
        io,
        &[
            (
                "tls.cert_file",
                files.dir.join("cert.pem").to_str().unwrap(),
            ),
            ("tls.key_file", files.dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b,
    ) else {
        return;
    };
    let mut tls = tls_connect(&files, h.local_addr()).await;
    let _ = std::fs::remove_dir_all(&files.dir);
    sse_stream(io, "TLS", &h, &mut tls).await;
    drop(tls);
    stop_server(h);
}

#[tokio::test]
async fn sse_tls_and_plain_uring() {
    sse_tls_and_plain(IoMode::Uring).await;
}

#[tokio::test]
async fn sse_tls_and_plain_epoll() {
    sse_tls_and_plain(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 8. A 200 KB message written in small pieces, and as 50 fragments, echoes intact.

fn large_messages_echo(io: IoMode) {
    let Some(h) = start(builder(io).echo_path("/echo")) else {
        return;
    };
    let msg: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let expect_echo = |s: &mut TcpStream, what: &str, op: u8| {
        let (fin, got_op, p) = read_frame(s).unwrap_or_else(|e| panic!("{io:?} {what}: {e}"));
        assert!(fin, "{io:?} {what}");
        assert_eq!(got_op, op, "{io:?} {what}");
        assert!(
            p == msg,
            "{io:?} {what}: echo differs ({} bytes back)",
            p.len()
        );
    };

    // One frame, written 1 KB at a time.
    let mut s = raw_ws(h.local_addr(), "/echo");
    let frame = masked(true, 0x1, &msg);
    for piece in frame.chunks(1024) {
        s.write_all(piece).unwrap();
        s.flush().unwrap();
    }
    expect_echo(&mut s, "one frame in 1 KB writes", 0x1);

    // 50 fragments (text then continuations), each written in 1000-byte pieces.
    let parts: Vec<&[u8]> = msg.chunks(msg.len() / 50).collect();
    assert_eq!(parts.len(), 50);
    let mut all = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let op = if i == 0 { 0x1 } else { 0x0 };
        all.extend_from_slice(&masked(i == parts.len() - 1, op, p));
    }
    for piece in all.chunks(1000) {
        s.write_all(piece).unwrap();
    }
    expect_echo(&mut s, "50 fragments", 0x1);

    // The same fragments with a ping between two of them, in one write; binary this time.
    let mut all = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let op = if i == 0 { 0x2 } else { 0x0 };
        all.extend_from_slice(&masked(i == parts.len() - 1, op, p));
        if i == 25 {
            all.extend_from_slice(&masked(true, 0x9, b"mid"));
        }
    }
    s.write_all(&all).unwrap();
    let (fin, op, p) = read_frame(&mut s).unwrap();
    assert_eq!(
        (fin, op, p.as_slice()),
        (true, 0xA, &b"mid"[..]),
        "{io:?}: pong"
    );
    expect_echo(&mut s, "50 binary fragments with a ping", 0x2);

    // A clean close is echoed.
    s.write_all(&masked(true, 0x8, &1000u16.to_be_bytes()))
        .unwrap();
    let (_, op, p) = read_frame(&mut s).unwrap();
    assert_eq!((op, close_code(&p)), (0x8, 1000), "{io:?}");
    drop(s);
    stop_server(h);
}

#[test]
fn large_and_fragmented_echo_uring() {
    large_messages_echo(IoMode::Uring);
}

#[test]
fn large_and_fragmented_echo_epoll() {
    large_messages_echo(IoMode::Epoll);
}

// ---------------------------------------------------------------------------------------------
// 9. Thousands of clients on one shard: one publication reaches each exactly once. On io_uring,
// more subscribers than one loop iteration submits sends for (4,096), so the flush continues in
// the next iteration.

async fn many_connections(io: IoMode, many: usize) {
    // 2 descriptors per client in this process (client and server side), both tests at once:
    // 2 × (4,500 + 2,000) of the 20,000 this process may open.
    let Some(h) = start(builder(io).shards(1).pubsub()) else {
        return;
    };
    let mut clients = Vec::with_capacity(many);
    for _ in 0..many {
        clients.push(connect(&h, "/ws").await);
    }
    // Pipelined: every subscribe first, then every reply.
    for ws in clients.iter_mut() {
        send(ws, json!({"event":"subscribe","topic":"many","id":7})).await;
    }
    for ws in clients.iter_mut() {
        assert_eq!(
            recv(ws).await,
            json!({"event":"reply","id":7,"topic":"many"})
        );
    }
    assert_eq!(h.stats().connections, many as i64, "{io:?}");
    h.publish("many", "once", &json!(1)).unwrap();
    h.publish("many", "end", &json!(2)).unwrap();
    // Each client gets the publication, then the marker: no duplicate, nothing lost.
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(
            recv(ws).await,
            json!({"topic":"many","event":"once","data":1}),
            "{io:?}: client {i}"
        );
        assert_eq!(
            recv(ws).await,
            json!({"topic":"many","event":"end","data":2}),
            "{io:?}: client {i}"
        );
    }
    drop(clients);
    stop_server(h);
}

#[tokio::test]
async fn many_connections_uring() {
    many_connections(IoMode::Uring, 4500).await;
}

#[tokio::test]
async fn many_connections_epoll() {
    many_connections(IoMode::Epoll, 2000).await;
}

// ---------------------------------------------------------------------------------------------
// 8b. Large output over TLS (wss://): a 200 KB echo, and a burst of publications that adds up to
// more than rustls buffers by default (64 KiB of plaintext).

async fn large_echo_over_tls(io: IoMode) {
    let files = tls_files(&format!("big-{io:?}"));
    let Some(h) = server_with(
        io,
        &[
            (
                "tls.cert_file",
                files.dir.join("cert.pem").to_str().unwrap(),
            ),
            ("tls.key_file", files.dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b.echo_path("/echo"),
    ) else {
        return;
    };
    let port = h.local_addr().port();
    let tls = tls_connect(&files, h.local_addr()).await;
    let (mut echo, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/echo"), tls)
            .await
            .expect("wss upgrade");
    let msg: String = (0..200_000u32)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    futures_util::SinkExt::send(&mut echo, WsMsg::Text(msg.clone()))
        .await
        .unwrap();
    match tokio::time::timeout(LONG_GUARD, echo.next())
        .await
        .expect("echo timed out")
    {
        Some(Ok(WsMsg::Text(t))) => assert!(t == msg, "{io:?}: echo differs ({} bytes)", t.len()),
        other => panic!("{io:?}: 200 KB echo over TLS failed: {other:?}"),
    }
    drop(echo);
    stop_server(h);
    let _ = std::fs::remove_dir_all(&files.dir);
}

#[tokio::test]
async fn large_echo_over_tls_uring() {
    large_echo_over_tls(IoMode::Uring).await;
}

#[tokio::test]
async fn large_echo_over_tls_epoll() {
    large_echo_over_tls(IoMode::Epoll).await;
}

async fn tls_publication_burst(io: IoMode) {
    let files = tls_files(&format!("burst-{io:?}"));
    let Some(h) = server_with(
        io,
        &[
            (
                "tls.cert_file",
                files.dir.join("cert.pem").to_str().unwrap(),
            ),
            ("tls.key_file", files.dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b.outbound_queue(64 << 20),
    ) else {
        return;
    };
    let port = h.local_addr().port();
    // 400 publications of 20 KB (8 MB, more than the kernel's socket buffers take, under the
    // 64 MB queue) to a wss subscriber that reads only afterwards: frames pile up behind a
    // blocked send and are then encrypted together.
    let tls = tls_connect(&files, h.local_addr()).await;
    let (mut sub, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
        .await
        .expect("wss upgrade");
    subscribe(&mut sub, "burst", 1).await;
    let chunk = "q".repeat(20_000);
    for n in 0..400 {
        h.publish("burst", "e", &json!({"n": n, "c": chunk}))
            .unwrap();
    }
    for n in 0..400 {
        let v = match tokio::time::timeout(LONG_GUARD, sub.next())
            .await
            .expect("timed out")
        {
            Some(Ok(WsMsg::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("{io:?}: publication {n} over TLS: {other:?}"),
        };
        assert_eq!(v["data"]["n"], n, "{io:?}");
        assert!(
            v["data"]["c"] == chunk.as_str(),
            "{io:?}: publication {n} mangled"
        );
    }
    drop(sub);
    stop_server(h);
    let _ = std::fs::remove_dir_all(&files.dir);
}

#[tokio::test]
async fn tls_publication_burst_uring() {
    tls_publication_burst(IoMode::Uring).await;
}

#[tokio::test]
async fn tls_publication_burst_epoll() {
    tls_publication_burst(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 10. However a client goes away, its entry and its cap slot are released.

/// Waits (bounded) until the server counts no open WebSocket/SSE connection.
fn wait_no_connections(h: &ServerHandle, what: &str) {
    let deadline = std::time::Instant::now() + LONG_GUARD;
    while h.stats().connections != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} connections still counted",
            h.stats().connections
        );
        std::thread::yield_now();
    }
}

async fn departures_release_slots(io: IoMode) {
    const CAP: usize = 4;
    let Some(h) = server_with(io, &[("limits.max_connections", "4")], |b| b) else {
        return;
    };
    let a = h.local_addr();
    for round in 0..2 {
        // Clean close handshake.
        for _ in 0..CAP {
            let mut ws = connect(&h, "/ws").await;
            subscribe(&mut ws, "t", 1).await;
            ws.close(None).await.unwrap();
            while let Some(Ok(_)) = tokio::time::timeout(GUARD, ws.next()).await.unwrap() {}
        }
        wait_no_connections(&h, &format!("{io:?} round {round}: clean close"));
        // Abortive close (RST) while subscribed.
        for _ in 0..CAP {
            let s = raw_ws(a, "/ws");
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
        wait_no_connections(&h, &format!("{io:?} round {round}: reset"));
        // EOF in the middle of a frame: the server ends the connection.
        for _ in 0..CAP {
            let mut s = raw_ws(a, "/ws");
            s.set_read_timeout(Some(GUARD)).unwrap();
            let f = masked(true, 0x1, b"{\"event\":\"subscribe\",\"topic\":\"t\"}");
            s.write_all(&f[..f.len() / 2]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let r = s.read_to_end(&mut rest);
            assert!(
                r.is_ok(),
                "{io:?} round {round}: EOF mid-frame not seen: {r:?}"
            );
        }
        wait_no_connections(&h, &format!("{io:?} round {round}: EOF mid-frame"));
        // SSE clients that hang up.
        for _ in 0..CAP {
            let mut s = TcpStream::connect(a).unwrap();
            s.set_read_timeout(Some(GUARD)).unwrap();
            s.write_all(b"GET /sse?topics=t HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut b = [0u8; 64];
            assert!(s.read(&mut b).unwrap() > 0);
        }
        wait_no_connections(&h, &format!("{io:?} round {round}: SSE hang-up"));
        // A subscriber that stops reading and resets while a flood is queued for it.
        let mut s = raw_ws(a, "/ws");
        s.write_all(&masked(
            true,
            0x1,
            b"{\"event\":\"subscribe\",\"topic\":\"t\",\"id\":1}",
        ))
        .unwrap();
        let (_, op, _) = read_frame(&mut s).unwrap();
        assert_eq!(op, 0x1);
        for n in 0..100 {
            h.publish("t", "e", &json!({"n": n, "pad": "p".repeat(10_000)}))
                .unwrap();
        }
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        wait_no_connections(&h, &format!("{io:?} round {round}: reset under load"));
    }
    // Every slot is free again: the cap admits CAP clients at once.
    let mut all = Vec::new();
    for i in 0..CAP {
        let mut ws = connect(&h, "/ws").await;
        subscribe(&mut ws, "end", i as u64).await;
        all.push(ws);
    }
    drop(all);
    stop_server(h);
}

#[tokio::test]
async fn departures_release_slots_uring() {
    departures_release_slots(IoMode::Uring).await;
}

#[tokio::test]
async fn departures_release_slots_epoll() {
    departures_release_slots(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 11. A client that sends its last message and hangs up at once (data and FIN arriving
// together) is answered and then closed: the EOF behind the data is not missed.

fn last_message_then_eof(io: IoMode) {
    const N: usize = 50;
    let Some(h) = start(builder(io).echo_path("/echo")) else {
        return;
    };
    let a = h.local_addr();
    let mut clients = Vec::new();
    for _ in 0..N {
        let s = raw_ws(a, "/echo");
        s.set_read_timeout(Some(GUARD)).unwrap();
        clients.push(s);
    }
    // Every client sends one message and its FIN back to back (the shard sees many of them
    // together); the echo is queued while the message is read, before any EOF.
    for s in clients.iter_mut() {
        s.write_all(&masked(true, 0x1, b"last words")).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    for (i, s) in clients.iter_mut().enumerate() {
        let (_, op, p) =
            read_frame(s).unwrap_or_else(|e| panic!("{io:?} client {i}: no reply: {e}"));
        assert_eq!(op, 0x1, "{io:?} client {i}");
        assert_eq!(p, b"last words", "{io:?} client {i}");
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(
            r.is_ok(),
            "{io:?} client {i}: the server missed the EOF behind the last message and kept the connection open ({r:?})"
        );
    }
    drop(clients);
    wait_no_connections(&h, &format!("{io:?}: after {N} hang-ups"));
    stop_server(h);
}

#[test]
fn last_message_then_eof_uring() {
    last_message_then_eof(IoMode::Uring);
}

#[test]
fn last_message_then_eof_epoll() {
    last_message_then_eof(IoMode::Epoll);
}
