//! WebSocket client plumbing: loopback target checks, source-address spreading,
//! the client handshake, a coalescing, masking writer (the batch frame reader is `reader`)
//! (masking uses fastwebsockets' SIMD `unmask`).

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use fastwebsockets::OpCode;
use sha1::{Digest, Sha1};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};

pub mod polling;
mod reader;
pub use reader::WsReader;

/// Where to connect: a loopback socket address plus the HTTP path.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Target {
    /// Resolves `host:port` (or `ws://host:port/path`) and refuses anything that is
    /// not a loopback address: this tool only ever sends traffic to 127.0.0.0/8 or ::1.
    pub fn parse(spec: &str, path: &str) -> Result<Target> {
        let mut rest = spec.strip_prefix("ws://").unwrap_or(spec);
        let mut path = path.to_string();
        if let Some(i) = rest.find('/') {
            path = rest[i..].to_string();
            rest = &rest[..i];
        }
        if spec.starts_with("wss://") {
            bail!("wss:// is not supported (loopback benchmarks use plain ws://)");
        }
        let addrs: Vec<SocketAddr> = rest
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve target {rest:?} (expected HOST:PORT)"))?
            .collect();
        let Some(addr) = addrs.iter().copied().find(|a| a.ip().is_loopback()) else {
            bail!(
                "refusing target {rest:?}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
            );
        };
        if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!("refusing target {rest:?}: it also resolves to non-loopback {bad}");
        }
        Ok(Target {
            addr,
            host: rest.to_string(),
            path,
        })
    }
}

/// A comma-separated list of targets (`--sub-targets`), each like `--target`; an empty
/// list is refused so that a typo cannot silently fall back to one server.
pub fn parse_targets(list: &str, path: &str) -> Result<Vec<Target>> {
    let targets = list
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Target::parse(t, path))
        .collect::<Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("empty target list {list:?}");
    }
    Ok(targets)
}

/// Client source addresses: 127.0.0.1 ..= 127.0.0.N for IPv4 loopback targets,
/// so that many connections do not exhaust one address's ephemeral ports.
#[derive(Clone, Debug)]
pub struct Sources(Vec<IpAddr>);

impl Sources {
    pub fn new(target: &Target, n: usize) -> Sources {
        match target.addr.ip() {
            IpAddr::V4(_) => Sources(
                (1..=n.clamp(1, 254))
                    .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                    .collect(),
            ),
            ip @ IpAddr::V6(_) => Sources(vec![ip]),
        }
    }

    /// The source address for connection number `i` (round-robin).
    pub fn pick(&self, i: usize) -> IpAddr {
        self.0[i % self.0.len()]
    }
}

/// `--deflate`: offer permessage-deflate and inflate what comes compressed.
pub static DEFLATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--msgpack`: offer the `ringhub.msgpack` subprotocol (the server then sends binary
/// MessagePack frames; what this client sends stays JSON text, which the server still reads).
pub static MSGPACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Bytes read from every connection's socket (handshakes included): wire bytes in.
pub static RX_BYTES: AtomicU64 = AtomicU64::new(0);

/// Write half: frames are masked and appended to one buffer, then written with a single
/// `write_all`, so pipelined messages are coalesced into one syscall.
pub struct WsWriter {
    stream: OwnedWriteHalf,
    buf: Vec<u8>,
    rng: u64,
    frames: usize,
}

static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// A cheap xorshift generator for masking keys and handshake nonces.
pub fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ t) | 1
}

impl WsWriter {
    /// Appends one masked frame whose payload (`len` bytes) is written by `fill`.
    pub fn push_with(&mut self, opcode: OpCode, len: usize, fill: impl FnOnce(&mut [u8])) {
        let key = (next_random(&mut self.rng) as u32).to_be_bytes();
        let b0 = 0x80 | opcode as u8;
        if len < 126 {
            self.buf.extend_from_slice(&[b0, 0x80 | len as u8]);
        } else if len < 65536 {
            self.buf.extend_from_slice(&[b0, 0x80 | 126]);
            self.buf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.buf.extend_from_slice(&[b0, 0x80 | 127]);
            self.buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.buf.extend_from_slice(&key);
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        fill(&mut self.buf[start..]);
        fastwebsockets::unmask(&mut self.buf[start..], key);
        self.frames += 1;
    }

    /// Appends one masked frame with a copy of `payload`.
    pub fn push(&mut self, opcode: OpCode, payload: &[u8]) {
        self.push_with(opcode, payload.len(), |dst| dst.copy_from_slice(payload));
    }

    /// Number of frames buffered and not yet flushed.
    pub fn pending(&self) -> usize {
        self.frames
    }

    /// Writes every buffered frame in one go.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf).await?;
            self.buf.clear();
            self.frames = 0;
        }
        Ok(())
    }

    /// Sends a close frame (best effort) and shuts the write side down.
    pub async fn close(mut self) {
        self.push(OpCode::Close, &1000u16.to_be_bytes());
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// Opens a TCP connection from `src` (bound with socket2 before connecting).
pub async fn tcp_connect(target: &Target, src: IpAddr) -> Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(target.addr);
    let sock = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    if src.is_ipv4() && src != Ipv4Addr::LOCALHOST {
        // Let the kernel pick the port at connect() time (4-tuple unique), not at bind().
        let one: libc::c_int = 1;
        // SAFETY: plain setsockopt on a socket we own; failure is ignored (optimisation only).
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SocketAddr::new(src, 0).into())
            .with_context(|| format!("bind to source address {src}"))?;
    }
    let std_stream: std::net::TcpStream = sock.into();
    let stream = TcpSocket::from_std_stream(std_stream)
        .connect(target.addr)
        .await
        .with_context(|| format!("connect to {} from {src}", target.addr))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Connects and performs the WebSocket client handshake, with an overall timeout.
pub async fn connect(
    target: &Target,
    src: IpAddr,
    timeout: Duration,
) -> Result<(WsReader, WsWriter)> {
    tokio::time::timeout(timeout, connect_inner(target, src))
        .await
        .map_err(|_| anyhow!("connect/handshake timed out after {timeout:?}"))?
}

async fn connect_inner(target: &Target, src: IpAddr) -> Result<(WsReader, WsWriter)> {
    let mut stream = tcp_connect(target, src).await?;
    let mut rng = seed();
    let nonce: [u8; 16] = {
        let (a, b) = (next_random(&mut rng), next_random(&mut rng));
        let mut n = [0u8; 16];
        n[..8].copy_from_slice(&a.to_le_bytes());
        n[8..].copy_from_slice(&b.to_le_bytes());
        n
    };
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{}{}\r\n",
        target.path,
        target.host,
        if DEFLATE.load(Ordering::Relaxed) {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        },
        if MSGPACK.load(Ordering::Relaxed) {
            "Sec-WebSocket-Protocol: ringhub.msgpack\r\n"
        } else {
            ""
        }
    );
    stream.write_all(req.as_bytes()).await?;

    let mut buf = Vec::with_capacity(512);
    let (header_len, takeover) = loop {
        if buf.len() > 16 * 1024 {
            bail!("handshake response headers too large");
        }
        let n = stream.read_buf(&mut buf).await?;
        if n == 0 {
            bail!("connection closed during handshake");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(&buf)? {
            if resp.code != Some(101) {
                bail!(
                    "handshake rejected: HTTP {} {}",
                    resp.code.unwrap_or(0),
                    resp.reason.unwrap_or("")
                );
            }
            let accept = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                .map(|h| h.value)
                .ok_or_else(|| anyhow!("handshake response lacks Sec-WebSocket-Accept"))?;
            let mut sha = Sha1::new();
            sha.update(key.as_bytes());
            sha.update(GUID.as_bytes());
            let want = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
            if accept != want.as_bytes() {
                bail!("bad Sec-WebSocket-Accept");
            }
            let agreed = resp.headers.iter().find(|h| {
                h.name.eq_ignore_ascii_case("sec-websocket-extensions")
                    && h.value.starts_with(b"permessage-deflate")
            });
            if DEFLATE.load(Ordering::Relaxed) && agreed.is_none() {
                bail!("--deflate: the server did not accept permessage-deflate");
            }
            let takeover = agreed.is_some_and(|h| {
                !String::from_utf8_lossy(h.value)
                    .to_ascii_lowercase()
                    .contains("server_no_context_takeover")
            });
            let packed = resp.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("sec-websocket-protocol")
                    && h.value == b"ringhub.msgpack"
            });
            if MSGPACK.load(Ordering::Relaxed) && !packed {
                bail!("--msgpack: the server did not accept the ringhub.msgpack subprotocol");
            }
            break (len, takeover);
        }
    };
    let (rd, wr) = stream.into_split();
    let reader = WsReader::new(rd, &buf[header_len..], takeover);
    let writer = WsWriter {
        stream: wr,
        buf: Vec::with_capacity(4096),
        rng,
        frames: 0,
    };
    Ok((reader, writer))
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit and checks that `needed`
/// descriptors fit; returns the limit in force.
pub fn ensure_fd_limit(needed: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit(RLIMIT_NOFILE) failed");
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let have = lim.rlim_cur;
    if needed > have {
        bail!(
            "this run needs about {needed} file descriptors but RLIMIT_NOFILE is {have} \
             (hard limit {}); use fewer connections or raise `ulimit -n`",
            lim.rlim_max
        );
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_lists() {
        let t = parse_targets(
            "127.0.0.1:9001, ws://127.0.0.1:9002/x,127.0.0.1:9003",
            "/ws",
        )
        .expect("three loopback targets");
        let ports: Vec<u16> = t.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [9001, 9002, 9003]);
        assert_eq!(t[0].path, "/ws");
        assert_eq!(t[1].path, "/x");
        assert!(parse_targets(" , ", "/ws").is_err());
        assert!(parse_targets("127.0.0.1:9001,10.1.2.3:80", "/ws").is_err());
        assert!(parse_targets("127.0.0.1", "/ws").is_err());
    }
}
