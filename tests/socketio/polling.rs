//! Engine.IO long-polling spoken by hand over raw HTTP (and over TLS): each request on a new TCP
//! connection, so with two shards the requests of one session land on both (`SO_REUSEPORT`) and
//! the owner answers the others through the inboxes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::common::*;
use super::{next_text, put};
use crate::per_shell;
use futures_util::SinkExt;
use ringhub::{Config, IoMode, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMsg;

pub(super) const POLL: &str = "/socket.io/?EIO=4&transport=polling";

/// A server whose pings do not come during a test (each test answers them anyway).
pub(super) fn server(io: IoMode) -> Option<ServerHandle> {
    let cfg = Config {
        socketio_namespaces: vec!["/".into(), "/chat".into()],
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    start(builder_with(io, cfg).api_key("k").pubsub())
}

/// Sends one request on `s` and reads its whole answer: (status, head, body).
pub(super) fn exchange(s: &mut TcpStream, req: &[u8]) -> (u16, String, Vec<u8>) {
    s.write_all(req).expect("write");
    read_answer(s)
}

pub(super) fn read_answer(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    s.set_read_timeout(Some(GUARD)).expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("Content-Length");
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().expect("status");
                return (status, head, buf[end + 4..end + 4 + len].to_vec());
            }
        }
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // The io_uring shell's threads share the process: a signal may interrupt a read.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read: {e}"),
        };
        assert!(
            n > 0,
            "EOF before the answer: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub(super) fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// One request on a new connection (so on any shard).
pub(super) fn once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    exchange(&mut s, &request(method, path, body))
}

/// The handshake over polling: the session id.
fn handshake(addr: SocketAddr) -> String {
    let (status, head, body) = once(addr, "GET", POLL, b"");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Access-Control-Allow-Origin: https://app.example")
            && head.contains("Access-Control-Allow-Credentials: true"),
        "{head}"
    );
    let body = String::from_utf8(body).expect("UTF-8");
    let v: Value = serde_json::from_str(body.strip_prefix('0').expect("OPEN")).expect("JSON");
    assert_eq!(v["upgrades"], json!(["websocket"]));
    assert_eq!(v["pingInterval"], 20_000);
    assert!(v["maxPayload"].as_u64().is_some_and(|n| n > 0));
    v["sid"].as_str().expect("sid").to_string()
}

pub(super) fn path(sid: &str) -> String {
    format!("{POLL}&sid={sid}")
}

pub(super) fn post(addr: SocketAddr, sid: &str, body: &[u8]) {
    let (status, head, answer) = once(addr, "POST", &path(sid), body);
    assert_eq!((status, &answer[..]), (200, &b"ok"[..]), "{head}");
}

/// The packets of the next GET with something in it (server pings answered).
fn poll(addr: SocketAddr, sid: &str) -> Vec<Vec<u8>> {
    loop {
        let (status, head, body) = once(addr, "GET", &path(sid), b"");
        assert_eq!(status, 200, "{head} {}", String::from_utf8_lossy(&body));
        let packets: Vec<Vec<u8>> = body
            .split(|b| *b == 0x1e)
            .filter(|p| *p != b"2")
            .map(<[u8]>::to_vec)
            .collect();
        if body.split(|b| *b == 0x1e).any(|p| p == b"2") {
            post(addr, sid, b"3");
        }
        if !packets.is_empty() {
            return packets;
        }
    }
}

fn texts(packets: Vec<Vec<u8>>) -> Vec<String> {
    packets
        .into_iter()
        .map(|p| String::from_utf8(p).expect("text"))
        .collect()
}

/// A polling session with the default namespace connected.
fn session(addr: SocketAddr) -> String {
    let sid = handshake(addr);
    post(addr, &sid, b"40");
    let got = texts(poll(addr, &sid));
    assert!(got[0].starts_with("40{\"sid\":"), "{got:?}");
    sid
}

async fn polling_round_trips_across_shards(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let a = session(addr);
    let b = session(addr);
    // Two packets in one POST, an ack each, in order.
    post(
        addr,
        &b,
        b"421[\"join\",\"room\"]\x1e422[\"join\",\"other\"]",
    );
    let mut got = texts(poll(addr, &b));
    if got.len() == 1 {
        got.extend(texts(poll(addr, &b)));
    }
    assert_eq!(got, ["431[]", "432[]"]);
    // A publish from a reaches b (and a WebSocket client in the room), the ack reaches a.
    let mut ws = connect(&h, "/ws").await;
    subscribe(&mut ws, "room", 1).await;
    post(
        addr,
        &a,
        br#"423["publish",{"topic":"room","event":"hi","data":{"n":1}}]"#,
    );
    assert_eq!(texts(poll(addr, &a)), ["433[]"]);
    assert_eq!(texts(poll(addr, &b)), [r#"42["hi",{"n":1}]"#]);
    assert_eq!(recv(&mut ws).await["event"], "hi");
    // Binary both ways: an attachment posted as base64 comes out as base64.
    post(
        addr,
        &a,
        b"451-[\"publish\",{\"topic\":\"room\",\"event\":\"file\",\"data\":{\"_placeholder\":true,\"num\":0}}]\x1ebAQID",
    );
    let mut got = texts(poll(addr, &b));
    if got.len() == 1 {
        got.extend(texts(poll(addr, &b)));
    }
    assert_eq!(
        got,
        [
            r#"451-["file",{"_placeholder":true,"num":0}]"#.to_string(),
            "bAQID".to_string()
        ]
    );
    // A publication from the API, then the client's close ends the session.
    let pubd = super::common::cluster::api(
        addr,
        "/api/v1/publish",
        json!({"topic": "room", "event": "news", "data": 2}),
    );
    assert_eq!(pubd["delivered"], 2, "{pubd}");
    assert_eq!(texts(poll(addr, &b)), [r#"42["news",2]"#]);
    post(addr, &b, b"1");
    // A poll sent with the close (here: after it) ends with a noop; the session is gone then.
    let (status, _, body) = once(addr, "GET", &path(&b), b"");
    assert_eq!((status, &body[..]), (200, &b"6"[..]));
    let (status, _, body) = once(addr, "GET", &path(&b), b"");
    assert_eq!(status, 400);
    assert_eq!(body, br#"{"code":1,"message":"Session ID unknown"}"#);
    drop(ws);
    stop_server(h);
}
per_shell!(async fn polling_round_trips_across_shards);

async fn polling_refusals(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let err = |method: &str, path: &str, body: &[u8]| {
        let (status, head, b) = once(addr, method, path, body);
        (status, String::from_utf8_lossy(&b).to_string(), head)
    };
    let (s, b, _) = err("GET", "/socket.io/?EIO=4&transport=carrier-pigeon", b"");
    assert_eq!(
        (s, b.as_str()),
        (400, r#"{"code":0,"message":"Transport unknown"}"#)
    );
    let (s, b, _) = err("POST", POLL, b"40");
    assert_eq!(
        (s, b.as_str()),
        (400, r#"{"code":2,"message":"Bad handshake method"}"#)
    );
    // Unknown sessions: another node's, a bad secret, a slot that holds nothing.
    let sid = session(addr);
    let (client, _) = sid.rsplit_once('~').expect("secret");
    for bad in [
        "other-node.100000000000001~0000000000000001".to_string(),
        format!("{client}~0000000000000000"),
        "nonsense".to_string(),
    ] {
        let (s, b, _) = err("GET", &path(&bad), b"");
        assert_eq!(
            (s, b.as_str()),
            (400, r#"{"code":1,"message":"Session ID unknown"}"#),
            "{bad}"
        );
        let (s, _, _) = err("POST", &path(&bad), b"3");
        assert_eq!(s, 400, "{bad}");
    }
    // A preflight: the origin echoed with credentials.
    let (s, _, head) = err("OPTIONS", &path(&sid), b"");
    assert_eq!(s, 200);
    assert!(
        head.contains("Access-Control-Allow-Methods: GET, POST, OPTIONS"),
        "{head}"
    );
    assert!(
        head.contains("Access-Control-Allow-Credentials: true"),
        "{head}"
    );
    // A malformed payload: 400, and the session is closed; others go on.
    let other = session(addr);
    let (s, b, _) = err("POST", &path(&sid), b"4a\x1e\x1e4b");
    assert_eq!(
        (s, b.as_str()),
        (400, r#"{"code":3,"message":"Bad request"}"#)
    );
    let (s, _, _) = err("GET", &path(&sid), b"");
    assert_eq!(s, 400, "the session is gone");
    post(addr, &other, b"421[\"join\",\"x\"]");
    assert_eq!(texts(poll(addr, &other)), ["431[]"]);
    // Over maxPayload: refused before the body is read.
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        path(&other),
        Config::default().max_message_size + 1
    );
    assert_eq!(exchange(&mut s, head.as_bytes()).0, 413);
    drop(s);
    stop_server(h);
}
per_shell!(async fn polling_refusals);

async fn two_pending_gets_end_the_session(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let sid = session(addr);
    let mut first = TcpStream::connect(addr).expect("connect");
    first
        .write_all(&request("GET", &path(&sid), b""))
        .expect("write");
    let mut second = TcpStream::connect(addr).expect("connect");
    second
        .write_all(&request("GET", &path(&sid), b""))
        .expect("write");
    // Whichever the owner saw second is refused; the other is told the session closed.
    let mut answers = [read_answer(&mut first), read_answer(&mut second)];
    answers.sort_by_key(|a| a.0);
    assert_eq!((answers[0].0, &answers[0].2[..]), (200, &b"1"[..]));
    assert_eq!(
        (answers[1].0, &answers[1].2[..]),
        (400, &br#"{"code":3,"message":"Bad request"}"#[..])
    );
    let (s, _, _) = once(addr, "GET", &path(&sid), b"");
    assert_eq!(s, 400);
    drop((first, second));
    stop_server(h);
}
per_shell!(async fn two_pending_gets_end_the_session);

async fn upgrade_from_polling_keeps_order(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let sid = session(addr);
    post(addr, &sid, b"421[\"join\",\"up\"]");
    assert_eq!(texts(poll(addr, &sid)), ["431[]"]);
    // A poll waits; the WebSocket probes; the poll ends with a noop.
    let mut pending = TcpStream::connect(addr).expect("connect");
    pending
        .write_all(&request("GET", &path(&sid), b""))
        .expect("write");
    let mut ws = connect(
        &h,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .await;
    put(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws).await, "3probe");
    let (status, _, body) = read_answer(&mut pending);
    assert_eq!((status, &body[..]), (200, &b"6"[..]));
    // Published during the probe: kept, then sent on the WebSocket after the upgrade.
    for n in 0..3 {
        let pubd = super::common::cluster::api(
            addr,
            "/api/v1/publish",
            json!({"topic": "up", "event": "n", "data": n}),
        );
        assert_eq!(pubd["delivered"], 1, "{pubd}");
    }
    put(&mut ws, "5").await;
    for n in 0..3 {
        assert_eq!(next_text(&mut ws).await, format!(r#"42["n",{n}]"#));
    }
    put(
        &mut ws,
        r#"422["publish",{"topic":"up","event":"m","data":9}]"#,
    )
    .await;
    assert_eq!(next_text(&mut ws).await, r#"42["m",9]"#);
    assert_eq!(next_text(&mut ws).await, "432[]");
    // Polling is over for this session.
    let (s, _, b) = once(addr, "GET", &path(&sid), b"");
    assert_eq!(
        (s, &b[..]),
        (400, &br#"{"code":3,"message":"Bad request"}"#[..])
    );
    // A probe for an unknown session is refused (or closed by the owner).
    let (s, _, _) = once(
        addr,
        "GET",
        "/socket.io/?EIO=4&transport=websocket&sid=nonsense",
        b"",
    );
    assert_eq!(s, 400);
    // Closing the WebSocket ends the session.
    ws.send(WsMsg::Text("1".into())).await.expect("close");
    match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut ws)).await {
        Ok(Some(Ok(WsMsg::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {}
        other => panic!("{other:?}"),
    }
    drop((ws, pending));
    stop_server(h);
}
per_shell!(async fn upgrade_from_polling_keeps_order);

/// One request over TLS on a new connection (any shard): (status, body).
pub(super) async fn tls_once(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    req: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = connector.connect(name, tcp).await.expect("TLS handshake");
    s.write_all(req).await.expect("write");
    tls_read(&mut s).await
}

/// Reads one HTTP answer (status, body) from `s`.
pub(super) async fn tls_read<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: ")?.trim().parse().ok())
                .expect("Content-Length");
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().expect("status");
                return (status, buf[end + 4..end + 4 + len].to_vec());
            }
        }
        let n = tokio::time::timeout(GUARD, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "EOF before the answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A server on `io` serving TLS with a fresh self-signed `localhost` certificate, and a client
/// connector trusting it (`None`: the shell is unavailable here).
pub(super) fn tls_server(
    io: IoMode,
    tag: &str,
) -> Option<(ServerHandle, tokio_rustls::TlsConnector)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = std::env::temp_dir().join(format!("ringhub-sio-{tag}-{}-{io:?}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).expect("key");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (c, k) = (c.to_string_lossy(), k.to_string_lossy());
    let h = server_with(io, &[("tls.cert_file", &c), ("tls.key_file", &k)], |b| b);
    let _ = std::fs::remove_dir_all(&dir);
    Some((h?, tls_connector(cert.cert.der().clone())))
}

async fn polling_over_tls(io: IoMode) {
    let Some((h, tls)) = tls_server(io, "tls") else {
        return;
    };
    let addr = h.local_addr();
    let (status, open) = tls_once(&tls, addr, &request("GET", POLL, b"")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&open[1..]).expect("OPEN");
    let sid = v["sid"].as_str().expect("sid").to_string();
    let (status, ok) = tls_once(&tls, addr, &request("POST", &path(&sid), b"40")).await;
    assert_eq!((status, &ok[..]), (200, &b"ok"[..]));
    let (_, got) = tls_once(&tls, addr, &request("GET", &path(&sid), b"")).await;
    assert!(
        got.starts_with(b"40{\"sid\":"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let post = request("POST", &path(&sid), b"421[\"join\",\"t\"]");
    assert_eq!(tls_once(&tls, addr, &post).await.0, 200);
    let (_, got) = tls_once(&tls, addr, &request("GET", &path(&sid), b"")).await;
    assert_eq!(got, b"431[]");
    stop_server(h);
}
per_shell!(async fn polling_over_tls);
