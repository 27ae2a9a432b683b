//! What flows through a connection: a slow consumer's 1008, large and fragmented messages,
//! thousands of clients on one shard, departures releasing their slots, a last message with the
//! EOF behind it.

use super::*;

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
            assert!(common::read_some(&mut s, &mut b) > 0);
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
