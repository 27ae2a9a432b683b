//! The door and the lifecycle: the handshake timeout, the operator endpoints at the connection
//! cap, a second server on a port in use, the port freed by `join`, the drain delay, a
//! rate-limited client closed once.

use super::*;

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
