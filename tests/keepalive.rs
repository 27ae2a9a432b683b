//! HTTP/1.1 persistent connections on the HTTP routes: several requests on one connection,
//! pipelining, `Connection: close`, HTTP/1.0, the idle keep-alive timeout, errors and limits on
//! a kept-alive connection, an upgrade after plain requests, TLS.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use ringhub::IoMode;

fn open(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    // A guard against a hung test, never a timing assertion.
    s.set_read_timeout(Some(GUARD * 2)).unwrap();
    s
}

/// One response as read off a connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn closes(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    }
}

/// Reads one response (by its `Content-Length`) from `s`, keeping what follows in `buf`;
/// `None` at EOF before a response began.
fn answer<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> Option<Answer> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a Content-Length");
            while buf.len() < end + 4 + len {
                assert!(fill(s, buf), "EOF inside a response: {head}");
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            return Some(Answer { status, head, body });
        }
        if !fill(s, buf) {
            assert!(buf.is_empty(), "EOF inside a response head");
            return None;
        }
    }
}

/// Reads more into `buf`; false at EOF (or a reset, which is a close too).
fn fill<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn publish(topic: &str, extra: &str) -> String {
    let body = format!(r#"{{"topic":"{topic}","event":"e","data":1}}"#);
    format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Several requests, one after the other, on one connection; every route kind (probe,
/// metrics, API) answers without closing it.
fn sequential(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut s = open(h.local_addr());
    let mut buf = Vec::new();
    for req in [
        HEALTH.to_string(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        publish("a", ""),
        "GET /api/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n".into(),
        HEALTH.to_string(),
    ] {
        s.write_all(req.as_bytes()).unwrap();
        let a = answer(&mut s, &mut buf).expect("an answer on the kept-alive connection");
        assert_eq!(a.status, 200, "{a:?}");
        assert!(!a.closes(), "{a:?}");
    }
    stop_server(h);
}

per_shell!(fn sequential);

/// Pipelined requests (all written before any answer is read) are answered in order.
fn pipelined(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut s = open(h.local_addr());
    let mut all = String::new();
    let topics: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for (i, t) in topics.iter().enumerate() {
        all.push_str(&publish(t, ""));
        if i % 5 == 0 {
            all.push_str("GET /api/v1/nothing HTTP/1.1\r\nAuthorization: Bearer k\r\n\r\n");
        }
    }
    all.push_str(&publish("last", "Connection: close\r\n"));
    s.write_all(all.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut statuses = Vec::new();
    while let Some(a) = answer(&mut s, &mut buf) {
        statuses.push(a.status);
    }
    let mut want = Vec::new();
    for i in 0..topics.len() {
        want.push(200);
        if i % 5 == 0 {
            want.push(404);
        }
    }
    want.push(200);
    assert_eq!(statuses, want);
    stop_server(h);
}

per_shell!(fn pipelined);

/// `Connection: close` gets its answer, said to close, then EOF.
fn connection_close(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut s = open(h.local_addr());
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let a = answer(&mut s, &mut buf).unwrap();
    assert!(a.status == 200 && a.closes(), "{a:?}");
    assert!(
        answer(&mut s, &mut buf).is_none(),
        "closed after the answer"
    );
    drop(s);
    stop_server(h);
}

per_shell!(fn connection_close);

/// HTTP/1.0 closes unless the client asks for keep-alive; then the answer says so.
fn http_1_0(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut s = open(h.local_addr());
    let mut buf = Vec::new();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let a = answer(&mut s, &mut buf).unwrap();
    assert!(a.status == 200 && a.closes(), "{a:?}");
    assert!(answer(&mut s, &mut buf).is_none());

    let mut s = open(h.local_addr());
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let a = answer(&mut s, &mut buf).unwrap();
        assert_eq!(a.status, 200);
        assert!(a.head.contains("\r\nConnection: keep-alive\r\n"), "{a:?}");
    }
    drop(s);
    stop_server(h);
}

per_shell!(fn http_1_0);

/// A kept-alive connection with no request closes after `limits.keepalive_timeout`; a
/// timeout of zero answers one request per connection.
fn idle_timeout(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| {
        b.http_keepalive_timeout(Duration::from_millis(200))
    }) else {
        return;
    };
    let mut s = open(h.local_addr());
    let mut buf = Vec::new();
    s.write_all(HEALTH.as_bytes()).unwrap();
    let a = answer(&mut s, &mut buf).unwrap();
    assert!(a.status == 200 && !a.closes(), "{a:?}");
    // The read guard is 10 s: this EOF comes from the idle timeout.
    assert!(answer(&mut s, &mut buf).is_none(), "closed when idle");
    stop_server(h);

    let Some(h) = server_with(io, &[], |b| b.http_keepalive_timeout(Duration::ZERO)) else {
        return;
    };
    let mut s = open(h.local_addr());
    s.write_all(HEALTH.as_bytes()).unwrap();
    let a = answer(&mut s, &mut buf).unwrap();
    assert!(a.status == 200 && a.closes(), "{a:?}");
    assert!(answer(&mut s, &mut buf).is_none());
    drop(s);
    stop_server(h);
}

per_shell!(fn idle_timeout);

/// A malformed request after good ones gets its 400 and the close, after the earlier answers;
/// another connection is unaffected.
fn malformed_second(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut other = open(h.local_addr());
    let mut obuf = Vec::new();
    other.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(answer(&mut other, &mut obuf).unwrap().status, 200);

    let mut s = open(h.local_addr());
    let mut buf = Vec::new();
    let req = format!(
        "{}GET / HTTP/1.1\r\nBad Header\r\n\r\n{HEALTH}",
        publish("a", "")
    );
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(answer(&mut s, &mut buf).unwrap().status, 200);
    let bad = answer(&mut s, &mut buf).unwrap();
    assert!(bad.status == 400 && bad.closes(), "{bad:?}");
    assert!(answer(&mut s, &mut buf).is_none(), "nothing after the 400");

    other.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(answer(&mut other, &mut obuf).unwrap().status, 200);
    drop((s, other));
    stop_server(h);
}

per_shell!(fn malformed_second);

/// A body that arrives in pieces, on the second request of a connection.
fn body_in_pieces(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut s = open(h.local_addr());
    let mut buf = Vec::new();
    s.write_all(HEALTH.as_bytes()).unwrap();
    assert_eq!(answer(&mut s, &mut buf).unwrap().status, 200);
    let req = publish("pieces", "");
    let (a, b) = req.split_at(req.len() - 10);
    let (head, body) = a.split_at(a.find("\r\n\r\n").unwrap() + 2);
    for part in [head, body, b] {
        s.write_all(part.as_bytes()).unwrap();
        s.flush().unwrap();
    }
    let a = answer(&mut s, &mut buf).unwrap();
    assert!(
        a.status == 200 && a.body.contains("\"success\":true"),
        "{a:?}"
    );
    stop_server(h);
}

per_shell!(fn body_in_pieces);

/// The throttle on wrong API keys holds on one kept-alive connection: the eleventh try is
/// refused with 429 even with the right key.
fn key_throttle(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let mut s = open(h.local_addr());
    let mut buf = Vec::new();
    let wrong = "GET /api/v1/stats HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n";
    for _ in 0..10 {
        s.write_all(wrong.as_bytes()).unwrap();
        assert_eq!(answer(&mut s, &mut buf).unwrap().status, 401);
    }
    s.write_all(publish("a", "").as_bytes()).unwrap();
    assert_eq!(answer(&mut s, &mut buf).unwrap().status, 429);
    stop_server(h);
}

per_shell!(fn key_throttle);

/// A kept-alive connection holds a slot in the connection caps: with one slot, a WebSocket is
/// refused meanwhile, and a request on another connection is answered, then closed; once the
/// kept-alive connection is gone the slot is free again.
fn counts_against_caps(io: IoMode) {
    let Some(h) = server_with(io, &[("limits.max_connections", "1")], |b| b) else {
        return;
    };
    let addr = h.local_addr();
    let mut kept = open(addr);
    let mut buf = Vec::new();
    kept.write_all(HEALTH.as_bytes()).unwrap();
    assert!(!answer(&mut kept, &mut buf).unwrap().closes());

    let mut s = open(addr);
    let mut sbuf = Vec::new();
    s.write_all(HEALTH.as_bytes()).unwrap();
    let a = answer(&mut s, &mut sbuf).unwrap();
    assert!(
        a.status == 200 && a.closes(),
        "answered at the cap, then closed: {a:?}"
    );
    assert!(answer(&mut s, &mut sbuf).is_none());

    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut ws = open(addr);
    ws.write_all(upgrade.as_bytes()).unwrap();
    let mut wbuf = Vec::new();
    let refused = answer(&mut ws, &mut wbuf).unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");

    // The kept-alive connection itself may upgrade: it holds the slot.
    kept.write_all(upgrade.as_bytes()).unwrap();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(fill(&mut kept, &mut buf));
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    drop((kept, s, ws));
    stop_server(h);
}

per_shell!(fn counts_against_caps);

/// After plain requests, the same connection upgrades to a WebSocket and works.
async fn upgrade_after_requests(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| b) else {
        return;
    };
    let tcp = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let mut tcp = tcp;
    let mut buf = Vec::new();
    for _ in 0..2 {
        tokio::io::AsyncWriteExt::write_all(&mut tcp, HEALTH.as_bytes())
            .await
            .unwrap();
        // The answer is 2 JSON bytes of "ok" wrapped: read until its whole length is here.
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: ")?.parse().ok())
                    .unwrap();
                if buf.len() >= end + 4 + len {
                    assert!(text.starts_with("HTTP/1.1 200"));
                    buf.drain(..end + 4 + len);
                    break;
                }
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "kept open");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    let url = format!("ws://{}/ws", h.local_addr());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    subscribe(&mut ws, "up", 1).await;
    send(
        &mut ws,
        serde_json::json!({"topic":"up","event":"e","data":1}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        serde_json::json!({"topic":"up","event":"e","data":1})
    );
    drop(ws);
    stop_server(h);
}

per_shell!(async fn upgrade_after_requests);

/// Keep-alive and pipelining over TLS.
fn tls(io: IoMode) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let Some(h) = server_with(
        io,
        &[
            ("tls.cert_file", cert_path.to_str().unwrap()),
            ("tls.key_file", key_path.to_str().unwrap()),
        ],
        |b| b,
    ) else {
        return;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(client), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, open(h.local_addr()));
    let mut buf = Vec::new();
    s.write_all(HEALTH.as_bytes()).unwrap();
    let a = answer(&mut s, &mut buf).unwrap();
    assert!(a.status == 200 && !a.closes(), "{a:?}");
    let two = format!(
        "{}{}",
        publish("a", ""),
        publish("b", "Connection: close\r\n")
    );
    s.write_all(two.as_bytes()).unwrap();
    assert_eq!(answer(&mut s, &mut buf).unwrap().status, 200);
    let last = answer(&mut s, &mut buf).unwrap();
    assert!(last.status == 200 && last.closes(), "{last:?}");
    drop(s);
    stop_server(h);
}

per_shell!(fn tls);
