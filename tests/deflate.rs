//! permessage-deflate (RFC 7692) against the real server on both shells, with a small raw
//! client (tungstenite does not speak the extension): negotiation, compressed publications
//! shared with compressing subscribers and plain for the others, the size threshold, inflated
//! input on the echo route, and the refusals (a deflate bomb, RSV1 where it is not allowed).

mod common;
#[path = "deflate/takeover.rs"]
mod takeover;

use std::io::{Read, Write};
use std::net::TcpStream;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use ringhub::config::CompressionConfig;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const AGREED: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

fn server(io: IoMode, compression: CompressionConfig) -> Option<ServerHandle> {
    common::start(
        common::builder(io)
            .echo_path("/echo")
            .max_message_size(1 << 20)
            .compression(compression),
    )
}

fn on(threshold: usize) -> CompressionConfig {
    CompressionConfig {
        enabled: true,
        level: 6,
        threshold,
        ..CompressionConfig::default()
    }
}

/// A byte stream: TCP, or TLS over TCP.
trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// A blocking WebSocket client that writes and reads frames as they are on the wire.
struct Raw {
    s: Box<dyn Io>,
    buf: Vec<u8>,
    /// The inflater of a connection whose server keeps its window (it did not answer
    /// `server_no_context_takeover`): kept from message to message.
    window: Option<Decompress>,
    /// The payload length on the wire of the last message.
    wire: usize,
}

impl Raw {
    /// Upgrades on `path`, offering `ext` if given; returns the client and the response head.
    fn open(h: &ServerHandle, path: &str, ext: Option<&str>) -> (Raw, String) {
        let s = TcpStream::connect(h.local_addr()).unwrap();
        s.set_read_timeout(Some(common::GUARD)).unwrap();
        Raw::over(Box::new(s), path, ext)
    }

    /// [`Raw::open`] over an established stream.
    fn over(mut s: Box<dyn Io>, path: &str, ext: Option<&str>) -> (Raw, String) {
        let ext = ext.map_or(String::new(), |e| {
            format!("Sec-WebSocket-Extensions: {e}\r\n")
        });
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n"
        )
        .unwrap();
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            window: None,
            wire: 0,
        };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill();
        };
        let head = String::from_utf8(raw.buf.drain(..end).collect()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        if head.contains("permessage-deflate") && !head.contains("server_no_context_takeover") {
            raw.window = Some(Decompress::new(false));
        }
        (raw, head)
    }

    fn fill(&mut self) {
        let mut b = [0u8; 65536];
        let n = common::read_some(&mut self.s, &mut b);
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&b[..n]);
    }

    /// Sends one masked frame whose first byte is `b0` (FIN, RSV and opcode bits).
    fn send(&mut self, b0: u8, payload: &[u8]) {
        let f = common::masked_frame(b0, payload, [7, 1, 2, 9]);
        self.s.write_all(&f).unwrap();
    }

    /// The next frame: its first byte and payload.
    fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let b0 = self.buf[0];
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (b0, payload);
                }
            }
            self.fill();
        }
    }

    /// The next data message: whether it was compressed (RSV1), and its inflated payload.
    fn message(&mut self) -> (bool, Vec<u8>) {
        let (b0, payload) = self.frame();
        assert_eq!(b0 & 0x80, 0x80, "the server does not fragment");
        assert!(matches!(b0 & 0x0f, 1 | 2), "a data frame, got {b0:#x}");
        self.wire = payload.len();
        match (b0 & 0x40 != 0, &mut self.window) {
            (true, Some(w)) => (true, inflate_with(w, &payload)),
            (true, None) => (true, inflate(&payload)),
            (false, _) => (false, payload),
        }
    }

    /// The close code the server sent.
    fn close_code(&mut self) -> u16 {
        loop {
            let (b0, payload) = self.frame();
            if b0 & 0x0f == 8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }
}

fn inflate(data: &[u8]) -> Vec<u8> {
    inflate_with(&mut Decompress::new(false), data)
}

/// Inflates one message with `d`, which keeps its window for the next (context takeover).
fn inflate_with(d: &mut Decompress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let input = [data, &[0, 0, 0xff, 0xff]].concat();
    let start = d.total_in();
    while ((d.total_in() - start) as usize) < input.len() || out.len() == out.capacity() {
        out.reserve(64 * 1024);
        let at = (d.total_in() - start) as usize;
        d.decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .unwrap();
    }
    out
}

/// Raw deflate as a client sends a message: sync flush, the empty block's tail stripped.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(z.total_in() as usize, data.len());
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn subscribe(c: &mut Raw, topic: &str) {
    c.send(
        0x81,
        json!({"event":"subscribe","topic":topic,"id":1})
            .to_string()
            .as_bytes(),
    );
    let (_, reply) = c.message();
    assert_eq!(json(&reply), json!({"event":"reply","id":1,"topic":topic}));
}

/// A client that offers deflate gets the agreement and compressed publications (RSV1) over
/// the threshold, plain ones under it; a subscriber of the same topic that did not offer it
/// gets every publication plain, with the same content.
fn publications_are_compressed_for_those_that_negotiated(io: IoMode) {
    let Some(h) = server(io, on(200)) else { return };
    let (mut z, head) = Raw::open(&h, "/ws", Some(OFFER));
    assert!(head.contains(AGREED), "{head}");
    let (mut plain, head) = Raw::open(&h, "/ws", None);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    subscribe(&mut z, "news");
    subscribe(&mut plain, "news");

    let text = "the quick brown fox jumps over the lazy dog; ".repeat(25);
    h.publish("news", "story", &json!({ "text": text }))
        .unwrap();
    let (compressed, got) = z.message();
    let (b0, expected) = plain.frame();
    assert_eq!(
        b0, 0x81,
        "plain text frame for the client that did not negotiate"
    );
    assert!(compressed, "1 KB over a threshold of 200: compressed");
    assert_eq!(got, expected);
    assert_eq!(json(&got)["data"]["text"], text);

    h.publish("news", "short", &json!({ "n": 1 })).unwrap();
    let (compressed, got) = z.message();
    assert!(!compressed, "under the threshold: sent as it is");
    assert_eq!(got, plain.frame().1);
    h.shutdown();
}
per_shell!(fn publications_are_compressed_for_those_that_negotiated);

/// A smaller server window asked by the client is answered, and what is sent inflates with it.
fn server_window_is_negotiated(io: IoMode) {
    let Some(h) = server(io, on(0)) else { return };
    let offer = "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10";
    let (mut c, head) = Raw::open(&h, "/echo", Some(offer));
    assert!(head.contains("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10\r\n"), "{head}");
    let msg = (0..3000)
        .map(|i| format!("{} ", i % 97))
        .collect::<String>();
    c.send(0x81, msg.as_bytes());
    let (b0, payload) = c.frame();
    assert_eq!(b0, 0xC1);
    let mut d = Decompress::new_with_window_bits(false, 10);
    let mut out = Vec::with_capacity(msg.len() + 64);
    d.decompress_vec(
        &[&payload[..], &[0, 0, 0xff, 0xff]].concat(),
        &mut out,
        FlushDecompress::Sync,
    )
    .unwrap();
    assert_eq!(out, msg.as_bytes());
    // Disabled: the offer is ignored.
    let Some(off) = server(
        io,
        CompressionConfig {
            enabled: false,
            ..on(0)
        },
    ) else {
        return;
    };
    let (_, head) = Raw::open(&off, "/echo", Some(OFFER));
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    h.shutdown();
    off.shutdown();
}
per_shell!(fn server_window_is_negotiated);

/// Compressed messages in, whole or fragmented (RSV1 on the first frame only), are inflated,
/// and text is checked for UTF-8 after inflating; the echo comes back compressed.
fn compressed_input_is_inflated(io: IoMode) {
    let Some(h) = server(io, on(100)) else { return };
    let (mut c, _) = Raw::open(&h, "/echo", Some(OFFER));
    let msg = "ünïcödé text, repeated. ".repeat(200);
    c.send(0xC1, &deflate(msg.as_bytes()));
    assert_eq!(c.message(), (true, msg.clone().into_bytes()));
    let z = deflate(msg.as_bytes());
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, d) = rest.split_at(rest.len() / 2);
    c.send(0x41, a);
    c.send(0x00, b);
    c.send(0x80, d);
    assert_eq!(c.message(), (true, msg.into_bytes()));
    c.send(0xC2, &deflate(&[0xff; 300]));
    assert_eq!(c.message(), (true, vec![0xff; 300]), "binary");
    // A subscribe sent compressed on the pub/sub route is understood.
    let (mut p, _) = Raw::open(&h, "/ws", Some(OFFER));
    p.send(
        0xC1,
        &deflate(br#"{"event":"subscribe","topic":"t","id":7}"#),
    );
    assert_eq!(
        json(&p.message().1),
        json!({"event":"reply","id":7,"topic":"t"})
    );

    c.send(0xC1, &deflate(&[b'a', 0xff, b'b']));
    assert_eq!(c.close_code(), 1007, "invalid UTF-8 once inflated");
    let (mut c, _) = Raw::open(&h, "/echo", Some(OFFER));
    c.send(0xC1, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.close_code(), 1007, "not deflate data");
    h.shutdown();
}
per_shell!(fn compressed_input_is_inflated);

/// Peak resident memory of this process (the server runs in it), in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A message that inflates to 64 MiB from some 64 KB is refused with 1009 once it passes the
/// 1 MiB limit, without the server's memory growing by anything like it.
fn deflate_bomb_is_refused(io: IoMode) {
    let Some(h) = server(io, on(100)) else { return };
    let mut z = Compress::new(Compression::fast(), false);
    let mut bomb = Vec::with_capacity(1 << 20);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        z.compress_vec(&zeros, &mut bomb, FlushCompress::None)
            .unwrap();
    }
    z.compress_vec(&[], &mut bomb, FlushCompress::Sync).unwrap();
    assert!(
        bomb.len() < 1 << 20,
        "fits one frame under the limit: {}",
        bomb.len()
    );
    let before = peak_kib();
    for path in ["/echo", "/ws"] {
        let (mut c, _) = Raw::open(&h, path, Some(OFFER));
        c.send(0xC1, &bomb);
        assert_eq!(c.close_code(), 1009, "{path}");
        // Fragmented the same way.
        let (mut c, _) = Raw::open(&h, path, Some(OFFER));
        let (a, b) = bomb.split_at(bomb.len() / 2);
        c.send(0x41, a);
        c.send(0x80, b);
        assert_eq!(c.close_code(), 1009, "{path}, fragmented");
    }
    let grown = peak_kib().saturating_sub(before);
    assert!(grown < 32 * 1024, "peak memory grew by {grown} KiB");
    // The server is fine.
    let (mut c, _) = Raw::open(&h, "/echo", Some(OFFER));
    c.send(0x81, b"still here");
    assert_eq!(c.message().1, b"still here");
    h.shutdown();
}
per_shell!(fn deflate_bomb_is_refused);

/// RSV1 is a protocol error without the extension, on a control frame, and on a continuation.
fn misplaced_rsv1_closes_with_1002(io: IoMode) {
    let Some(h) = server(io, on(100)) else { return };
    let (mut c, _) = Raw::open(&h, "/echo", None);
    c.send(0xC1, &deflate(b"hello"));
    assert_eq!(c.close_code(), 1002, "not negotiated");
    let (mut c, _) = Raw::open(&h, "/ws", None);
    c.send(0xC1, &deflate(b"hello"));
    assert_eq!(c.close_code(), 1002, "not negotiated, pub/sub route");
    let (mut c, _) = Raw::open(&h, "/echo", Some(OFFER));
    c.send(0xC9, b"");
    assert_eq!(c.close_code(), 1002, "compressed ping");
    let (mut c, _) = Raw::open(&h, "/echo", Some(OFFER));
    c.send(0x01, b"part");
    c.send(0xC0, b"rest");
    assert_eq!(c.close_code(), 1002, "RSV1 on a continuation");
    h.shutdown();
}
per_shell!(fn misplaced_rsv1_closes_with_1002);

/// Under TLS: publications come compressed and compressed messages are inflated.
fn deflate_under_tls(io: IoMode) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ringhub-deflate-{}-{io:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let mut s = ringhub::settings::Settings::default();
    s.set(
        "tls.cert_file",
        dir.join("cert.pem").to_str().unwrap(),
        "test",
    )
    .unwrap();
    s.set(
        "tls.key_file",
        dir.join("key.pem").to_str().unwrap(),
        "test",
    )
    .unwrap();
    let guard = ringhub::guard::Guard::from_settings(&s).unwrap();
    let Some(h) = common::start(
        common::builder(io)
            .guard(guard)
            .echo_path("/echo")
            .compression(on(100)),
    ) else {
        return;
    };
    let tls = |path: &str| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(h.local_addr()).unwrap();
        tcp.set_read_timeout(Some(common::GUARD)).unwrap();
        let (c, head) = Raw::over(
            Box::new(rustls::StreamOwned::new(conn, tcp)),
            path,
            Some(OFFER),
        );
        assert!(head.contains(AGREED), "{head}");
        c
    };
    let mut sub = tls("/ws");
    subscribe(&mut sub, "secure");
    let text = "over TLS, compressed once and shared. ".repeat(30);
    h.publish("secure", "e", &json!({ "text": text })).unwrap();
    let (compressed, got) = sub.message();
    assert!(compressed);
    assert_eq!(json(&got)["data"]["text"], text);
    let mut echo = tls("/echo");
    echo.send(0xC1, &deflate(text.as_bytes()));
    assert_eq!(echo.message(), (true, text.into_bytes()));
    h.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
per_shell!(fn deflate_under_tls);
