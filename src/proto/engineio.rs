//! Engine.IO protocol v4 (the transport under Socket.IO), sans-IO: packets, the long-polling
//! payload, the handshake's query and OPEN packet, and the HTTP error bodies.
//!
//! A packet is one type digit and its data. Over WebSocket each text frame is one packet
//! (`4hello`, `2`, `3probe`) and a binary frame is a binary `message` with no type byte. Over
//! long-polling, one HTTP body carries several packets separated by `\x1e` (record separator);
//! a binary message travels there as `b` + base64 (standard alphabet, padded).
//!
//! Nothing here owns a socket or a clock: the shard encodes and decodes with these functions and
//! keeps the session state (sid, ping deadline) itself.

use std::borrow::Cow;

use base64::Engine;
use thiserror::Error;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The only protocol revision served (`EIO=4`).
pub const PROTOCOL: u8 = 4;

/// The record separator between packets of a long-polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The path Socket.IO clients use by default.
pub const PATH: &str = "/socket.io/";

/// The most packets one long-polling body may hold (a bound on the work one POST causes).
pub const MAX_PAYLOAD_PACKETS: usize = 256;

/// An Engine.IO packet type (the leading digit of a text packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `0`: handshake data from the server.
    Open,
    /// `1`: the transport may be closed.
    Close,
    /// `2`: a heartbeat (the server sends it; `2probe` from a client probes an upgrade).
    Ping,
    /// `3`: the heartbeat's answer.
    Pong,
    /// `4`: application data (a Socket.IO packet, or one binary attachment).
    Message,
    /// `5`: the client switches from polling to WebSocket.
    Upgrade,
    /// `6`: nothing (flushes a pending poll during an upgrade).
    Noop,
}

impl Kind {
    /// The type digit on the wire.
    pub const fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// The type a digit stands for.
    pub const fn from_digit(d: u8) -> Option<Kind> {
        Some(match d {
            b'0' => Kind::Open,
            b'1' => Kind::Close,
            b'2' => Kind::Ping,
            b'3' => Kind::Pong,
            b'4' => Kind::Message,
            b'5' => Kind::Upgrade,
            b'6' => Kind::Noop,
            _ => return None,
        })
    }
}

/// A packet's data: text (UTF-8) or bytes (binary messages only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// Text, borrowed from the input.
    Text(&'a str),
    /// Bytes: borrowed from a WebSocket binary frame, decoded from base64 for polling.
    Binary(Cow<'a, [u8]>),
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// What it is.
    pub kind: Kind,
    /// What it carries (empty text for most control packets).
    pub data: Data<'a>,
}

/// What is wrong with Engine.IO input. Each has a stable wire code ([`EngineError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EngineError {
    /// A packet without a type digit, or with an unknown one.
    #[error("unknown packet type")]
    UnknownType,
    /// A text packet or payload that is not UTF-8.
    #[error("packet is not UTF-8")]
    NotUtf8,
    /// A `b` packet whose base64 does not decode.
    #[error("invalid base64 in binary packet")]
    BadBase64,
    /// A long-polling body with more than [`MAX_PAYLOAD_PACKETS`] packets, or over `maxPayload`.
    #[error("payload too large")]
    TooLarge,
    /// An empty long-polling body.
    #[error("empty payload")]
    Empty,
}

impl EngineError {
    /// The stable code of this error (logs, metrics, close reasons).
    pub const fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownType => "eio_unknown_type",
            EngineError::NotUtf8 => "eio_not_utf8",
            EngineError::BadBase64 => "eio_bad_base64",
            EngineError::TooLarge => "eio_too_large",
            EngineError::Empty => "eio_empty",
        }
    }
}

/// Decodes a WebSocket text frame (or one polling packet that is not `b`-prefixed).
pub fn decode_text(frame: &[u8]) -> Result<Packet<'_>, EngineError> {
    let text = std::str::from_utf8(frame).map_err(|_| EngineError::NotUtf8)?;
    let first = *text.as_bytes().first().ok_or(EngineError::UnknownType)?;
    let kind = Kind::from_digit(first).ok_or(EngineError::UnknownType)?;
    Ok(Packet {
        kind,
        // The digit is ASCII, so index 1 is a character boundary.
        data: Data::Text(&text[1..]),
    })
}

/// A WebSocket binary frame: a binary message (Engine.IO v4 sends no type byte over WebSocket).
pub fn decode_binary(frame: &[u8]) -> Packet<'_> {
    Packet {
        kind: Kind::Message,
        data: Data::Binary(Cow::Borrowed(frame)),
    }
}

/// Appends a text packet: its type digit and `data`.
pub fn encode_text(kind: Kind, data: &str, out: &mut Vec<u8>) {
    out.push(kind.digit());
    out.extend_from_slice(data.as_bytes());
}

/// Appends a binary message as long-polling carries it: `b` + base64.
pub fn encode_binary_polling(data: &[u8], out: &mut Vec<u8>) {
    out.push(b'b');
    let at = out.len();
    out.resize(at + base64::encoded_len(data.len(), true).unwrap_or(0), 0);
    let n = B64.encode_slice(data, &mut out[at..]).unwrap_or(0);
    out.truncate(at + n);
}

/// Appends one packet to a long-polling body under construction (adds the separator when the
/// body already holds a packet).
pub fn push_payload(packet: &Packet<'_>, out: &mut Vec<u8>) {
    if !out.is_empty() {
        out.push(SEPARATOR);
    }
    match &packet.data {
        Data::Text(t) => encode_text(packet.kind, t, out),
        Data::Binary(b) => encode_binary_polling(b, out),
    }
}

/// The transports a client may name in `?transport=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling (GET to receive, POST to send).
    Polling,
    /// One WebSocket connection.
    Websocket,
}

/// The handshake query of a `/socket.io/` request: `EIO`, `transport` and `sid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    /// The transport asked for.
    pub transport: Transport,
    /// The session to continue (polling requests after the handshake, and upgrades).
    pub sid: Option<&'a str>,
}

/// Why a `/socket.io/` request is refused, with the numeric code and message of Engine.IO's
/// reference server (clients and the protocol suite read the body `{"code":N,"message":".."}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestError {
    /// `transport` missing or not one of `polling` / `websocket`.
    #[error("Transport unknown")]
    UnknownTransport,
    /// A `sid` that names no session (or a session of another transport).
    #[error("Session ID unknown")]
    UnknownSid,
    /// A handshake that is neither GET nor a WebSocket upgrade.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Anything else the server cannot serve (two pending polls, a bad body).
    #[error("Bad request")]
    BadRequest,
    /// Refused by the server's rules (origin, IP, caps).
    #[error("Forbidden")]
    Forbidden,
    /// `EIO` missing or not `4`.
    #[error("Unsupported protocol version")]
    UnsupportedVersion,
}

impl RequestError {
    /// Engine.IO's numeric error code.
    pub const fn code(self) -> u8 {
        match self {
            RequestError::UnknownTransport => 0,
            RequestError::UnknownSid => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest => 3,
            RequestError::Forbidden => 4,
            RequestError::UnsupportedVersion => 5,
        }
    }

    /// The HTTP status the reference server answers with (403 for `Forbidden`, else 400).
    pub const fn status(self) -> u16 {
        match self {
            RequestError::Forbidden => 403,
            _ => 400,
        }
    }

    /// The JSON body: `{"code":1,"message":"Session ID unknown"}`.
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self)
    }
}

/// Reads `EIO`, `transport` and `sid` from a query string (the part after `?`, without `#`).
/// Other parameters (`t`, `b64`, the client's own) are ignored.
pub fn parse_query(query: &str) -> Result<Query<'_>, RequestError> {
    let (mut eio, mut transport, mut sid) = (None, None, None);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" => eio = Some(v),
            "transport" => transport = Some(v),
            "sid" => sid = Some(v),
            _ => {}
        }
    }
    let transport = match transport {
        Some("polling") => Transport::Polling,
        Some("websocket") => Transport::Websocket,
        _ => return Err(RequestError::UnknownTransport),
    };
    if eio != Some("4") {
        return Err(RequestError::UnsupportedVersion);
    }
    let sid = sid.filter(|s| !s.is_empty());
    if let Some(s) = sid {
        // Session ids are the server's own ASCII tokens: anything else names no session.
        let token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if s.len() > 64 || !s.bytes().all(token) {
            return Err(RequestError::UnknownSid);
        }
    }
    Ok(Query { transport, sid })
}

/// The handshake data of the OPEN packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open<'a> {
    /// The session id.
    pub sid: &'a str,
    /// Whether the client may upgrade to WebSocket (`["websocket"]`) or not (`[]`).
    pub upgrade_to_websocket: bool,
    /// Milliseconds between the server's pings.
    pub ping_interval_ms: u64,
    /// Milliseconds the server waits for a pong.
    pub ping_timeout_ms: u64,
    /// The largest payload the server accepts, in bytes.
    pub max_payload: usize,
}

impl Open<'_> {
    /// Appends the OPEN packet (`0{"sid":..}`). The sid is ASCII the server made, so it needs no
    /// escaping.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let upgrades = if self.upgrade_to_websocket {
            r#"["websocket"]"#
        } else {
            "[]"
        };
        let json = format!(
            r#"{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.sid, upgrades, self.ping_interval_ms, self.ping_timeout_ms, self.max_payload
        );
        encode_text(Kind::Open, &json, out);
    }
}

#[cfg(test)]
#[path = "engineio_tests.rs"]
mod tests;
