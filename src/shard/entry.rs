//! One connection's entry in the shard's slab: its phase, its flags, and the coarse stamps
//! its timeouts use. Everything a quiet connection holds is here (the size is bounded by unit
//! tests in `shard::tests`).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proto::frame::Assembler;
use crate::ConnId;

/// What a WebSocket connection does with its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnKind {
    /// Envelope protocol: subscribe, unsubscribe, handlers.
    PubSub,
    /// Echoes every message (conformance route).
    Echo,
    /// Engine.IO v4 / Socket.IO v5 (`/socket.io/`): translated to envelopes at the edges.
    SocketIo,
    /// A WebSocket carrying a long-polling Socket.IO session after its upgrade (the session,
    /// perhaps on another shard, is the connection: `shard::sio_poll`).
    SioCarrier,
}

/// Where a connection is in its life.
pub(crate) enum Phase {
    /// Reading the HTTP request head (bytes so far in `inbuf`).
    Head,
    /// Reading an API request's body of `need` bytes (so far in `inbuf`); one box for both
    /// keeps the phase, in every entry, at 16 bytes.
    Body(Box<(crate::proto::handshake::RequestHead, usize)>),
    /// The request is with the API thread; input is ignored.
    Api,
    /// WebSocket frames.
    Ws(ConnKind),
    /// A Server-Sent Events stream: input is ignored until EOF.
    Sse,
    /// Input is discarded until EOF (after an HTTP error or a protocol-error close).
    Discard,
}

/// One connection: protocol state, outbound queue and subscriptions. Everything a quiet
/// connection holds is here, in one slab entry: no task, no read buffer, no write buffer.
pub(crate) struct ConnEntry {
    pub(crate) id: ConnId,
    pub(crate) fd: RawFd,
    pub(super) remote: Peer,
    pub(super) phase: Phase,
    pub(super) user: Option<Arc<str>>,
    /// What the connection may subscribe and publish to.
    pub(super) perms: crate::policy::permissions::Permissions,
    /// Its message rate limiter, when limits are on: built at its first message (boxed: most
    /// of an entry otherwise). Its slot in the connection caps is two bits of `flags`.
    pub(super) limiter: Option<Box<crate::policy::ratelimit::ConnLimiter>>,
    /// TLS state (rustls is sans-IO), boxed: most connections never have it.
    pub(super) tls: Option<Box<rustls::ServerConnection>>,
    /// Frames to write, shared with every other local recipient: a shard-local (non-atomic)
    /// reference count per publication, so fanning out to N connections costs N plain
    /// increments instead of N atomic ones, and 8 bytes of queue per frame.
    pub(super) out: VecDeque<Frame>,
    /// Bytes queued in `out` (the slow-consumer bound).
    pub(super) queued: usize,
    /// Bytes of `out[0]` already written.
    pub(super) head_sent: usize,
    /// Frames at the front of `out` that a send in flight points at: never dropped.
    pub(super) in_flight: u32,
    /// The socket's owned buffers, or a long-polling session's state in their place.
    pub(super) io: Io,
    /// A fragmented message being reassembled: allocated only while one is.
    pub(super) asm: Option<Box<Assembler>>,
    /// When the connection began closing; nothing is queued after its close frame.
    pub(super) closing: Option<Stamp>,
    pub(super) last_seen: Stamp,
    pub(super) accepted: Stamp,
    pub(super) subs: Vec<Box<str>>,
    /// Last publication delivered, to send each publication once per connection even when
    /// several of its patterns match.
    pub(super) stamp: u64,
    /// Interest changes an SSE stream waits for before it starts.
    pub(super) hold: u16,
    /// Operations the shell has in flight on the socket (io_uring); the entry lives until 0.
    pub(crate) ops: u8,
    pub(super) flags: u32,
}

/// What an entry holds beside its queue: a socket's owned buffers, or — for a long-polling
/// session, which reads and writes no socket of its own (`shard::sio_poll`) — its polling
/// state, in the same bytes of the entry (BENCHMARKS.md, "Polling client breakdown").
pub(crate) enum Io {
    /// A socket's buffers.
    Sock(SockBufs),
    /// A long-polling session's state.
    Poll(super::poll_state::PollSession),
}

/// A socket's owned buffers: allocated only while they hold something.
#[derive(Default)]
pub(crate) struct SockBufs {
    /// Owned output (TLS records, SSE events, HTTP responses) and how much of it is written.
    pub(super) wbuf: Vec<u8>,
    pub(super) wsent: usize,
    /// Bytes of an incomplete frame or request head: allocated only while one is pending.
    pub(super) inbuf: Vec<u8>,
}

/// `ConnEntry::flags` bits.
pub(super) mod flag {
    /// In the shard's dirty list.
    pub const DIRTY: u32 = 1;
    /// A send is in flight (or, on epoll, waiting for the socket to become writable).
    pub const SENDING: u32 = 2;
    /// The write side is shut down.
    pub const WR_SHUT: u32 = 4;
    /// No more input will come (EOF, error, or cut).
    pub const RD_EOF: u32 = 8;
    /// A ping was sent and not yet answered by any traffic.
    pub const PING_SENT: u32 = 16;
    /// Counted in `connections` (upgraded).
    pub const COUNTED: u32 = 32;
    /// The close deadline passed and the socket was cut.
    pub const FORCED: u32 = 64;
    /// Has entries in `ShardState::held` (waits for the store on some topic).
    pub const HELD: u32 = 128;
    /// Holds a slot in the connection caps' total (`limits.max_connections`).
    pub const CAPPED: u32 = 256;
    /// Holds a slot in its address's count too (`limits.max_connections_per_ip`).
    pub const CAPPED_IP: u32 = 512;
    /// Both caps bits, and how far to shift them down to two bits.
    pub const CAPS: u32 = CAPPED | CAPPED_IP;
    pub const CAPS_SHIFT: u32 = 8;
    /// Upgraded, its response not yet written: the queue's buffer, allocated for that response,
    /// is freed once it drains, so an idle connection holds none.
    pub const FRESH: u32 = 1024;
    /// The HTTP request with the API thread is answered with the connection kept open.
    pub const KEEP_ALIVE: u32 = 2048;
    /// Kept alive after an HTTP response: waits for the next request (the idle keep-alive
    /// timeout applies while nothing of it has arrived).
    pub const KEPT: u32 = 4096;
    /// That request came as HTTP/1.0 (keep-alive is then said in the response).
    pub const HTTP10: u32 = 8192;
    /// permessage-deflate: three bits holding the negotiated server window less 8 (1..=7 for
    /// 9..=15 bits), 0 when the connection did not negotiate it.
    pub const DEFLATE_SHIFT: u32 = 14;
    pub const DEFLATE: u32 = 7 << DEFLATE_SHIFT;
    /// permessage-deflate with server context takeover: the shard's deflater keeps this
    /// connection's own stream, and every compressed message to it goes through that stream.
    pub const DEFLATE_KEPT: u32 = 1 << 24;
    /// A delta subscriber of some topic (`shard::delta`): look it up when delivering.
    pub const DELTA: u32 = 1 << 18;
    /// Negotiated the `ringhub.msgpack` subprotocol: binary MessagePack envelopes both ways.
    pub const MSGPACK: u32 = 1 << 17;
    /// A Socket.IO connection: its frames are Engine.IO packets (`shard::sio`).
    pub const SIO: u32 = 1 << 19;
    /// That Socket.IO connection has connected a namespace (else it is closed after the
    /// handshake timeout).
    pub const SIO_NSP: u32 = 1 << 20;
    /// A Socket.IO long-polling session: no socket, its frames leave by a parked GET or the
    /// WebSocket it was upgraded to (`shard::sio_poll`).
    pub const POLL: u32 = 1 << 21;
    /// An Engine.IO connection of the bare endpoint (`Config::engineio`): no Socket.IO layer,
    /// its messages are envelopes on the endpoint's topic (`shard::eio_bare`). Set with `SIO`
    /// (the Engine.IO session is the same) and `SIO_NSP` (nothing more to wait for).
    pub const EIO_BARE: u32 = 1 << 22;
    /// That Socket.IO connection has a room in a namespace other than its home one
    /// (`shard::sio_rooms`): delivery looks up the namespaces.
    pub const SIO_ROOMS: u32 = 1 << 23;
    /// A Socket.IO connection's home namespace (index in the configured list, 7 bits): the
    /// namespace its publications are emitted on.
    pub const SIO_HOME_SHIFT: u32 = 25;
    pub const SIO_HOME: u32 = 0x7f << SIO_HOME_SHIFT;
}

impl ConnEntry {
    /// A connection that has sent nothing yet (`fd` -1: a polling session, with no socket).
    pub(super) fn new(
        id: ConnId,
        fd: RawFd,
        remote: impl Into<Peer>,
        perms: crate::policy::permissions::Permissions,
        tls: Option<Box<rustls::ServerConnection>>,
        now: Stamp,
    ) -> Self {
        ConnEntry {
            id,
            fd,
            remote: remote.into(),
            phase: Phase::Head,
            user: None,
            perms,
            limiter: None,
            tls,
            out: Default::default(),
            queued: 0,
            head_sent: 0,
            in_flight: 0,
            io: Io::Sock(SockBufs::default()),
            asm: None,
            closing: None,
            last_seen: now,
            accepted: now,
            subs: Vec::new(),
            stamp: 0,
            hold: 0,
            ops: 0,
            flags: 0,
        }
    }

    /// A kept-alive HTTP connection with nothing of its next request yet.
    pub(super) fn between_requests(&self) -> bool {
        matches!(self.phase, Phase::Head) && self.has(flag::KEPT) && self.inbuf_empty()
    }

    /// The socket's buffers (`None` for a long-polling session, which has none).
    pub(super) fn bufs(&mut self) -> Option<&mut SockBufs> {
        match &mut self.io {
            Io::Sock(b) => Some(b),
            Io::Poll(_) => None,
        }
    }

    /// No input is kept.
    pub(super) fn inbuf_empty(&self) -> bool {
        match &self.io {
            Io::Sock(b) => b.inbuf.is_empty(),
            Io::Poll(_) => true,
        }
    }

    /// Tests only: the capacities of the input and output buffers.
    #[cfg(test)]
    pub(super) fn buffer_capacities(&self) -> (usize, usize) {
        match &self.io {
            Io::Sock(b) => (b.inbuf.capacity(), b.wbuf.capacity()),
            Io::Poll(_) => (0, 0),
        }
    }

    /// Owned output is still unwritten.
    pub(super) fn wbuf_pending(&self) -> bool {
        match &self.io {
            Io::Sock(b) => b.wsent < b.wbuf.len(),
            Io::Poll(_) => false,
        }
    }
    pub(super) fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
    pub(super) fn set(&mut self, f: u32) {
        self.flags |= f;
    }
    pub(super) fn clear(&mut self, f: u32) {
        self.flags &= !f;
    }
    /// The server window negotiated for permessage-deflate (9..=15), 0 without it.
    pub(super) fn deflate_bits(&self) -> u8 {
        match (self.flags & flag::DEFLATE) >> flag::DEFLATE_SHIFT {
            0 => 0,
            b => b as u8 + 8,
        }
    }

    /// The server window, and whether the connection keeps it between messages (context
    /// takeover); a window of 0 without permessage-deflate.
    pub(super) fn deflate(&self) -> (u8, bool) {
        (self.deflate_bits(), self.has(flag::DEFLATE_KEPT))
    }

    /// The home namespace of a Socket.IO connection, `None` for any other (a bare Engine.IO
    /// one included).
    pub(super) fn sio_home(&self) -> Option<usize> {
        (self.flags & (flag::SIO | flag::EIO_BARE) == flag::SIO)
            .then_some(((self.flags & flag::SIO_HOME) >> flag::SIO_HOME_SHIFT) as usize)
    }

    /// Whether the connection is a bare Engine.IO one (no Socket.IO layer).
    pub(super) fn eio_bare(&self) -> bool {
        self.has(flag::EIO_BARE)
    }

    /// Whether the connection speaks MessagePack (subprotocol `ringhub.msgpack`).
    pub(super) fn msgpack(&self) -> bool {
        self.has(flag::MSGPACK)
    }

    /// Gives back its slot in the connection caps, if it holds one.
    pub(super) fn uncap(&mut self, guard: &crate::policy::guard::Guard) {
        use crate::policy::ratelimit::Counted;
        if let (true, Some(limits)) = (self.has(flag::CAPPED), &guard.conn_limits) {
            let counted = if self.has(flag::CAPPED_IP) {
                Counted::TotalAndIp
            } else {
                Counted::Total
            };
            limits.uncount(self.remote.ip(), counted);
        }
        self.clear(flag::CAPPED | flag::CAPPED_IP);
    }
}

/// A peer's address in 19 bytes (an IPv4 address as its IPv6-mapped form, the port, and
/// which of the two it was): `SocketAddr` is 32, and every entry holds one. An IPv6 peer's
/// flow label and scope id are not kept (nothing here reads them).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    ip: [u8; 16],
    port: [u8; 2],
    v4: bool,
}

impl Peer {
    /// The address.
    pub(crate) fn ip(self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.ip);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.v4 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    }

    /// As a socket address.
    pub(crate) fn addr(self) -> SocketAddr {
        SocketAddr::new(self.ip(), u16::from_ne_bytes(self.port))
    }

    /// The port.
    pub(crate) fn port(self) -> u16 {
        u16::from_ne_bytes(self.port)
    }

    /// The same address with another port (a socket a polling session borrowed: the session
    /// keeps its port only, `shard::sio_poll`).
    pub(crate) fn with_port(self, port: u16) -> Self {
        Peer {
            port: port.to_ne_bytes(),
            ..self
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Self {
        let (ip, v4) = match a.ip() {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), true),
            IpAddr::V6(v6) => (v6, false),
        };
        Peer {
            ip: ip.octets(),
            port: a.port().to_ne_bytes(),
            v4,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

/// A coarse timestamp: milliseconds since the shard started, 4 bytes in every entry instead of
/// an `Instant`'s 16 (non-zero, so an `Option` of it is 4 bytes too). Only differences under
/// 49 days are taken, which every timeout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(std::num::NonZeroU32);

impl Stamp {
    pub(super) fn at(epoch: Instant, now: Instant) -> Self {
        let ms = now.duration_since(epoch).as_millis() as u32;
        Stamp(std::num::NonZeroU32::new(ms | 1).unwrap_or(std::num::NonZeroU32::MIN))
    }

    /// Time from `earlier` to `self`.
    pub(super) fn since(self, earlier: Stamp) -> Duration {
        Duration::from_millis(u64::from(self.0.get().wrapping_sub(earlier.0.get())))
    }
}

/// A queued frame: the encoded bytes behind a shard-local reference count.
pub(crate) type Frame = std::rc::Rc<Bytes>;
