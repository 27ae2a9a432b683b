//! A slow consumer cut over a real socket (issue 21, item 10): a client with a tiny receive
//! buffer that stops reading while publications flow must, once it reads again, find whole
//! frames followed by a complete 1008 close frame — never a FIN in the middle of a frame.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use ringhub::IoMode;
use serde_json::json;
use socket2::{Domain, Socket, Type};

/// A raw TCP connection with a 4 KB receive buffer (set before connect, so the window stays
/// small), upgraded by hand.
fn small_buffer_client(addr: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    t.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        t.read_exact(&mut b).expect("the 101 head");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    t
}

/// Sends one masked text frame.
fn send_text(t: &mut TcpStream, text: &str) {
    let p = text.as_bytes();
    assert!(p.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | p.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    t.write_all(&f).unwrap();
}

/// Splits a server stream into frames: (opcode, payload), and the bytes left over (a frame the
/// stream ended inside).
fn frames(mut b: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut out = Vec::new();
    loop {
        if b.len() < 2 {
            return (out, b.len());
        }
        let op = b[0] & 0x0f;
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return (out, b.len()),
            n => (n as usize, 2),
        };
        if b.len() < head + len {
            return (out, b.len());
        }
        out.push((op, b[head..head + len].to_vec()));
        b = &b[head + len..];
    }
}

/// Subscribes a small-buffer client to `flood`, then publishes 3,000 × 4 KB while it does not
/// read; returns the client and the server.
fn flooded(io: IoMode, close_timeout: Duration) -> Option<(TcpStream, ringhub::ServerHandle)> {
    let h = start(
        builder(io)
            .outbound_queue(256 * 1024)
            .close_timeout(close_timeout)
            .pubsub(),
    )?;
    let mut t = small_buffer_client(h.local_addr());
    send_text(&mut t, r#"{"event":"subscribe","topic":"flood","id":1}"#);
    // The reply: a small text frame.
    let mut reply = [0u8; 2];
    t.read_exact(&mut reply).unwrap();
    let mut body = vec![0u8; (reply[1] & 0x7f) as usize];
    t.read_exact(&mut body).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"event":"reply","id":1,"topic":"flood"})
    );
    let chunk = "z".repeat(4000);
    for n in 0..3000 {
        h.publish("flood", "e", &json!({"n": n, "c": chunk}))
            .unwrap();
    }
    assert_eq!(
        h.stats().slow_consumers,
        1,
        "{io:?}: the reader was not cut"
    );
    Some((t, h))
}

/// Checks what the client read: whole publications in order, then a complete 1008 close frame.
fn assert_ends_with_1008(io: IoMode, all: &[u8]) {
    let (fs, rest) = frames(all);
    assert_eq!(
        rest,
        0,
        "{io:?}: the stream ended inside a frame ({rest} bytes of it) after {} frames",
        fs.len()
    );
    let (op, last) = fs.last().expect("no frame at all");
    assert_eq!(*op, 0x8, "{io:?}: the last frame is not a close frame");
    assert_eq!(&last[..2], &1008u16.to_be_bytes(), "{io:?}: close code");
    for (i, (op, p)) in fs[..fs.len() - 1].iter().enumerate() {
        assert_eq!(*op, 0x1, "{io:?}: frame {i}");
        let v: serde_json::Value = serde_json::from_slice(p).expect("whole JSON");
        assert_eq!(v["data"]["n"], i, "{io:?}: out of order");
    }
}

/// The client reads again within the close deadline: it gets every frame the server had begun,
/// then the 1008 close frame.
fn cut_slow_consumer_ends_with_close_frame(io: IoMode) {
    let Some((mut t, h)) = flooded(io, Duration::from_secs(30)) else {
        return;
    };
    let mut all = Vec::new();
    t.read_to_end(&mut all)
        .unwrap_or_else(|e| panic!("{io:?}: read failed after {} bytes: {e}", all.len()));
    assert_ends_with_1008(io, &all);
    h.shutdown();
    h.join();
}

per_shell!(fn cut_slow_consumer_ends_with_close_frame);

/// The client reads again only after the server gave up flushing (its close deadline passed and
/// the connection is gone): the stream may not end in a clean EOF inside a frame. Either the
/// close frame made it, or the server reset the connection (an abortive end the client cannot
/// mistake for a complete stream).
fn slow_consumer_cut_after_deadline_never_ends_mid_frame(io: IoMode) {
    let Some((mut t, h)) = flooded(io, Duration::from_millis(200)) else {
        return;
    };
    // Wait until the server released the connection (cut at the deadline).
    let mut polls = 0;
    while h.stats().connections != 0 {
        polls += 1;
        assert!(polls < 2000, "{io:?}: the connection was never cut");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut all = Vec::new();
    match t.read_to_end(&mut all) {
        Ok(_) => assert_ends_with_1008(io, &all),
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{io:?}: {e} after {} bytes",
            all.len()
        ),
    }
    h.shutdown();
    h.join();
}

per_shell!(fn slow_consumer_cut_after_deadline_never_ends_mid_frame);
