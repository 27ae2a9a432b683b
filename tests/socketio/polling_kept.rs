//! Long-polling on one kept-alive connection, as browsers and the load generator poll: while a
//! GET waits, its session holds the connection's socket (one slab entry per idle client), and
//! gives it back to answer; the connection goes on carrying the session's requests, in clear
//! and over TLS, and closing it while a GET waits ends the session as before.

use std::io::Write;
use std::net::TcpStream;

use super::common::cluster::{api, wait_for};
use super::common::*;
use super::polling::{
    exchange, once, path, post, read_answer, request, server, tls_once, tls_read, tls_server, POLL,
};
use crate::per_shell;
use ringhub::IoMode;
use serde_json::{json, Value};

/// The session id in an OPEN packet's body.
fn sid_of(open: &[u8]) -> String {
    let v: Value = serde_json::from_slice(open.strip_prefix(b"0").expect("OPEN")).expect("JSON");
    v["sid"].as_str().expect("sid").to_string()
}

async fn one_kept_alive_connection_carries_a_whole_session(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let mut k = TcpStream::connect(addr).expect("connect");
    let (status, _, open) = exchange(&mut k, &request("GET", POLL, b""));
    assert_eq!(status, 200);
    let sid = sid_of(&open);
    let (_, _, ok) = exchange(&mut k, &request("POST", &path(&sid), b"40"));
    assert_eq!(ok, b"ok");
    let (_, _, got) = exchange(&mut k, &request("GET", &path(&sid), b""));
    assert!(got.starts_with(b"40{\"sid\":"), "{got:?}");
    for n in 0..3 {
        // The GET waits on `k` (the session holds its socket); the POST comes on another
        // connection, perhaps another shard; its answer goes out on `k`.
        k.write_all(&request("GET", &path(&sid), b""))
            .expect("write");
        post(addr, &sid, format!("42{n}[\"join\",\"r{n}\"]").as_bytes());
        let (status, head, body) = read_answer(&mut k);
        assert_eq!(
            (status, body),
            (200, format!("43{n}[]").into_bytes()),
            "{head}"
        );
        assert!(
            head.contains("Access-Control-Allow-Origin: https://app.example"),
            "{head}"
        );
    }
    // A publication to a room while the GET waits.
    k.write_all(&request("GET", &path(&sid), b""))
        .expect("write");
    let pubd = api(
        addr,
        "/api/v1/publish",
        json!({"topic": "r1", "event": "e", "data": 7}),
    );
    assert_eq!(pubd["delivered"], 1, "{pubd}");
    let (_, _, body) = read_answer(&mut k);
    assert_eq!(body, br#"42["e",7]"#);
    // Still this session's connection: a POST on it works too.
    let (_, _, ok) = exchange(&mut k, &request("POST", &path(&sid), b"3"));
    assert_eq!(ok, b"ok");
    stop_server(h);
}
per_shell!(async fn one_kept_alive_connection_carries_a_whole_session);

async fn closing_the_connection_of_a_waiting_get_ends_the_session(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let mut k = TcpStream::connect(addr).expect("connect");
    let (_, _, open) = exchange(&mut k, &request("GET", POLL, b""));
    let sid = sid_of(&open);
    let (_, _, ok) = exchange(&mut k, &request("POST", &path(&sid), b"40"));
    assert_eq!(ok, b"ok");
    let (_, _, got) = exchange(&mut k, &request("GET", &path(&sid), b""));
    assert!(got.starts_with(b"40{\"sid\":"), "{got:?}");
    k.write_all(&request("GET", &path(&sid), b""))
        .expect("write");
    // A pong on another connection: most likely read after the GET, which then waits with
    // its socket held by the session. Then the client goes away (before or after the server
    // read its GET: either way the connection's EOF ends the session).
    post(addr, &sid, b"3");
    drop(k);
    let unknown = br#"{"code":1,"message":"Session ID unknown"}"#;
    wait_for(
        || once(addr, "POST", &path(&sid), b"3").2 == unknown,
        "the session ended with its waiting GET's connection",
    )
    .await;
    stop_server(h);
}
per_shell!(async fn closing_the_connection_of_a_waiting_get_ends_the_session);

/// Sends `req` on the kept TLS stream `s` and reads its answer: (status, body).
async fn tls_exchange<S>(s: &mut S, req: &[u8]) -> (u16, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    s.write_all(req).await.expect("write");
    tls_read(s).await
}

async fn a_kept_alive_tls_connection_carries_a_session(io: IoMode) {
    use tokio::io::AsyncWriteExt;
    let Some((h, tls)) = tls_server(io, "kept") else {
        return;
    };
    let addr = h.local_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut s = tls.connect(name, tcp).await.expect("TLS handshake");
    let (status, open) = tls_exchange(&mut s, &request("GET", POLL, b"")).await;
    assert_eq!(status, 200);
    let sid = sid_of(&open);
    let (_, ok) = tls_exchange(&mut s, &request("POST", &path(&sid), b"40")).await;
    assert_eq!(ok, b"ok");
    let (_, got) = tls_exchange(&mut s, &request("GET", &path(&sid), b"")).await;
    assert!(got.starts_with(b"40{\"sid\":"), "{got:?}");
    for n in 0..2 {
        s.write_all(&request("GET", &path(&sid), b""))
            .await
            .expect("write");
        let join = format!("42{n}[\"join\",\"t{n}\"]");
        let (status, _) =
            tls_once(&tls, addr, &request("POST", &path(&sid), join.as_bytes())).await;
        assert_eq!(status, 200);
        let (status, body) = tls_read(&mut s).await;
        assert_eq!((status, body), (200, format!("43{n}[]").into_bytes()));
    }
    stop_server(h);
}
per_shell!(async fn a_kept_alive_tls_connection_carries_a_session);
