//! Engine v2 regression tests: every behaviour below runs once on the io_uring shell and once on
//! the epoll shell (`*_uring` / `*_epoll`). No sleeps: every wait is a blocking read (or an
//! awaited message) under a guard timeout that only keeps a broken engine from hanging the test.

mod common;
#[path = "engine/door.rs"]
mod door;
#[path = "engine/flow.rs"]
mod flow;
#[path = "engine/tls.rs"]
mod tls;

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
        let n = common::read_some(&mut s, &mut b);
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
    masked_frame((u8::from(fin) << 7) | op, payload, [0x37, 0xfa, 0x21, 0x3d])
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
