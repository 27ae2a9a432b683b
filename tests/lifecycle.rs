//! Limits and connection lifecycle: oversize messages, slow consumers, keepalive, idle timeout,
//! graceful shutdown — on both backends.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMsg;

async fn oversize_closes_with_1009(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).max_message_size(4096).pubsub()) else {
        return;
    };
    let mut ws = connect(&h, "/ws").await;
    let mut other = connect(&h, "/ws").await;
    subscribe(&mut other, "t", 1).await;
    let big = json!({"topic":"t","event":"e","data":"x".repeat(5000)});
    send(&mut ws, big).await;
    assert_eq!(expect_close(&mut ws).await, CloseCode::Size);
    // Other connections are unaffected.
    let mut p = connect(&h, "/ws").await;
    send(&mut p, json!({"topic":"t","event":"e","data":"small"})).await;
    assert_eq!(recv(&mut other).await["data"], "small");
    drop((ws, other, p));
    h.shutdown();
    h.join();
}

async fn slow_consumer_closed_with_1008(io: ringhub::IoMode) {
    // The slow client reads nothing until the end: the close deadline must outlast the whole
    // run (on a loaded machine it can take longer than the default 5 s), or the server cuts it.
    let b = builder(io)
        .outbound_queue(64 * 1024)
        .close_timeout(Duration::from_secs(600))
        .pubsub();
    let Some(h) = start(b) else {
        return;
    };
    let mut slow = connect(&h, "/ws").await;
    subscribe(&mut slow, "feed", 1).await;
    // The publisher is also a subscriber and sends each message only after receiving the previous
    // one, so its own queue never grows while the slow one never reads.
    let mut fast = connect(&h, "/ws").await;
    subscribe(&mut fast, "feed", 2).await;
    let chunk = "y".repeat(10_000);
    let total = 3000; // 30 MB: more than the kernel's socket buffers can hide.
    for n in 0..total {
        send(
            &mut fast,
            json!({"topic":"feed","event":"e","data":{"n":n,"c":chunk}}),
        )
        .await;
        let m = recv(&mut fast).await;
        assert_eq!(
            m["data"]["n"], n,
            "fast subscriber lost or reordered a message"
        );
    }
    assert_eq!(h.stats().slow_consumers, 1);
    // The slow one receives what was written before the overflow, then close 1008.
    assert_eq!(expect_close(&mut slow).await, CloseCode::Policy);
    drop((slow, fast));
    h.shutdown();
    h.join();
}

async fn keepalive_and_idle_timeout(io: ringhub::IoMode) {
    let b = builder(io)
        .keepalive(Duration::from_millis(50), Duration::from_millis(300))
        .pubsub();
    let Some(h) = start(b) else { return };
    // A tungstenite client answers pings while we read, so it stays.
    let mut live = connect(&h, "/ws").await;
    // A raw client that completes the handshake and then never answers anything.
    let mut mute = std::net::TcpStream::connect(h.local_addr()).unwrap();
    mute.set_read_timeout(Some(GUARD)).unwrap();
    mute.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    // The mute client gets pinged, then dropped: read it to EOF on a blocking thread while the
    // live client keeps reading (which answers the server's pings).
    let mut mute_done = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let _ = mute.read_to_end(&mut got);
        got
    });
    let mut pings = 0;
    let got = loop {
        tokio::select! {
            got = &mut mute_done => break got.unwrap(),
            m = tokio::time::timeout(GUARD, live.next()) => match m.unwrap().unwrap().unwrap() {
                WsMsg::Ping(_) => pings += 1,
                other => panic!("unexpected {other:?}"),
            },
        }
    };
    assert!(pings > 0, "the live client was never pinged");
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let frames = &got[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        frames.windows(2).any(|w| w == [0x89, 0x00]),
        "expected a ping before the drop"
    );
    let close = frames.windows(4).any(|w| w == [0x88, 0x0e, 0x03, 0xe9]); // close, len 14, 1001
    assert!(close, "expected close 1001 'idle timeout', got {frames:?}");
    // Meanwhile the live client, which answered pings, is still served.
    subscribe(&mut live, "still", 1).await;
    drop(live);
    h.shutdown();
    h.join();
}

async fn graceful_shutdown_sends_1001(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut ws = connect(&h, "/ws").await;
        subscribe(&mut ws, "x", i).await;
        clients.push(ws);
    }
    let addr = h.local_addr();
    h.shutdown();
    let joiner = std::thread::spawn(move || h.join());
    for mut ws in clients {
        assert_eq!(expect_close(&mut ws).await, CloseCode::Away);
        // Dropping the client ends its side of the TCP connection, so the drain is immediate.
    }
    joiner.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener still accepting after shutdown"
    );
}

fn unmasked_frame_closes_with_1002(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap(); // text "hi", mask bit clear
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        &got[at..at + 4],
        &[0x88, 0x1e, 0x03, 0xea],
        "close 1002 expected: {:?}",
        &got[at..]
    );
    drop(s);
    h.shutdown();
    h.join();
}

per_shell!(fn unmasked_frame_closes_with_1002);

per_shell!(async fn oversize_closes_with_1009);

per_shell!(async fn slow_consumer_closed_with_1008);

per_shell!(async fn keepalive_and_idle_timeout);

per_shell!(async fn graceful_shutdown_sends_1001);

/// A message of endless empty continuation frames is cut off with 1009.
fn endless_fragments_close_with_1009(io: ringhub::IoMode) {
    let Some(h) = start(
        builder(io)
            .max_message_size(4096)
            .echo_path("/echo")
            .pubsub(),
    ) else {
        return;
    };
    let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut frames = vec![0x02, 0x81, 1, 2, 3, 4, b'x' ^ 1]; // binary "x", not final
                                                             // 1024 frames per message at most (for this size limit): the 1024th continuation is one
                                                             // too many, and nothing is left unread when the server closes (no reset to race with).
    for _ in 0..1024 {
        frames.extend_from_slice(&[0x00, 0x80, 1, 2, 3, 4]); // empty continuation, not final
    }
    s.write_all(&frames).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let reason = b"too many fragments in one message";
    assert_eq!(
        &got[at..at + 4],
        &[0x88, 2 + reason.len() as u8, 0x03, 0xf1],
        "close 1009 expected: {:?}",
        String::from_utf8_lossy(&got[at..])
    );
    assert_eq!(&got[at + 4..at + 4 + reason.len()], reason);
    drop(s);
    h.shutdown();
    h.join();
}

per_shell!(fn endless_fragments_close_with_1009);
