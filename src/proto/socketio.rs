//! Socket.IO protocol v5 packets, sans-IO: decoding a packet from the text of an Engine.IO
//! `message`, encoding the server's packets, and the event helpers the shard maps onto topics.
//!
//! A packet is `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`: `2["chat:msg",{"a":1}]`,
//! `2/chat,17["ev",1]`, `51-["up",{"_placeholder":true,"num":0}]`. Decoding follows the reference
//! parser (`socket.io-parser` 4.x) and borrows everything from the input: the namespace is a
//! slice, the JSON stays a `&RawValue`. Binary attachments are in `socketio_binary`.

use std::borrow::Cow;

use serde_json::value::RawValue;
use thiserror::Error;

/// The longest namespace accepted (bytes, with the leading `/`).
pub const MAX_NAMESPACE_LEN: usize = 128;

/// The most binary attachments one packet may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// Event names a client may not emit (the reference parser's reserved list).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// A Socket.IO packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `0`: join a namespace (client, with the auth payload) / accepted (server, with `sid`).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event: `[name, ...args]`.
    Event,
    /// `3`: the answer to an event sent with an ack id: `[...args]`.
    Ack,
    /// `4`: the namespace refused the connection: `{message, data}`.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl Kind {
    /// The type digit on the wire.
    pub const fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// The type a digit stands for.
    pub const fn from_digit(d: u8) -> Option<Kind> {
        Some(match d {
            b'0' => Kind::Connect,
            b'1' => Kind::Disconnect,
            b'2' => Kind::Event,
            b'3' => Kind::Ack,
            b'4' => Kind::ConnectError,
            b'5' => Kind::BinaryEvent,
            b'6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether binary attachments follow the packet.
    pub const fn is_binary(self) -> bool {
        matches!(self, Kind::BinaryEvent | Kind::BinaryAck)
    }
}

/// One decoded Socket.IO packet, borrowing from the input.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// What it is.
    pub kind: Kind,
    /// The namespace (`/` when the packet names none).
    pub nsp: &'a str,
    /// The ack id, when the sender wants an answer (or this answers one).
    pub id: Option<u64>,
    /// How many binary attachments follow (binary kinds only, else 0).
    pub attachments: usize,
    /// The JSON payload, checked against what the kind allows.
    pub data: Option<&'a RawValue>,
}

/// What is wrong with a Socket.IO packet. Each has a stable wire code ([`SocketError::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SocketError {
    /// An empty packet or an unknown type digit.
    #[error("unknown packet type")]
    UnknownType,
    /// A binary packet without a valid `<count>-` prefix, or more than [`MAX_ATTACHMENTS`].
    #[error("illegal attachments")]
    IllegalAttachments,
    /// A namespace that is empty after `/`, too long, or not followed by `,` before data.
    #[error("invalid namespace")]
    BadNamespace,
    /// An ack id that does not fit 53 bits (JavaScript's safe integers).
    #[error("invalid ack id")]
    BadId,
    /// The payload is not JSON, or not what the packet type allows.
    #[error("invalid payload")]
    InvalidPayload,
    /// A placeholder naming a missing attachment, or an attachment nobody waits for.
    #[error("unexpected attachment")]
    BadAttachment,
    /// A packet and its attachments together over the message size limit.
    #[error("packet too large")]
    TooLarge,
}

impl SocketError {
    /// The stable code of this error (logs, metrics, `connect_error` data).
    pub const fn code(&self) -> &'static str {
        match self {
            SocketError::UnknownType => "sio_unknown_type",
            SocketError::IllegalAttachments => "sio_illegal_attachments",
            SocketError::BadNamespace => "sio_bad_namespace",
            SocketError::BadId => "sio_bad_id",
            SocketError::InvalidPayload => "sio_invalid_payload",
            SocketError::BadAttachment => "sio_bad_attachment",
            SocketError::TooLarge => "sio_too_large",
        }
    }
}

/// The largest ack id accepted: JavaScript's `Number.MAX_SAFE_INTEGER`.
const MAX_ID: u64 = (1 << 53) - 1;

/// Decodes a packet from the text of an Engine.IO `message`.
pub fn decode(text: &str) -> Result<Packet<'_>, SocketError> {
    let b = text.as_bytes();
    let kind = b
        .first()
        .and_then(|d| Kind::from_digit(*d))
        .ok_or(SocketError::UnknownType)?;
    let mut i = 1;
    let mut attachments = 0;
    if kind.is_binary() {
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 3 || b.get(i + digits) != Some(&b'-') {
            return Err(SocketError::IllegalAttachments);
        }
        attachments = text[i..i + digits]
            .parse()
            .map_err(|_| SocketError::IllegalAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(SocketError::IllegalAttachments);
        }
        i += digits + 1;
    }
    let mut nsp = "/";
    if b.get(i) == Some(&b'/') {
        let end = b[i..].iter().position(|c| *c == b',').map(|p| i + p);
        let stop = end.unwrap_or(b.len());
        nsp = &text[i..stop];
        if nsp.len() > MAX_NAMESPACE_LEN {
            return Err(SocketError::BadNamespace);
        }
        i = end.map_or(stop, |e| e + 1);
    }
    let mut id = None;
    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 {
        let n: u64 = text[i..i + digits]
            .parse()
            .map_err(|_| SocketError::BadId)?;
        if n > MAX_ID {
            return Err(SocketError::BadId);
        }
        id = Some(n);
        i += digits;
    }
    let data = if i < b.len() {
        let raw: &RawValue =
            serde_json::from_str(&text[i..]).map_err(|_| SocketError::InvalidPayload)?;
        Some(raw)
    } else {
        None
    };
    if !payload_valid(kind, data) {
        return Err(SocketError::InvalidPayload);
    }
    Ok(Packet {
        kind,
        nsp,
        id,
        attachments,
        data,
    })
}

/// What each type may carry (the reference parser's `isPayloadValid`, with events named by
/// strings only: a name is a topic here).
fn payload_valid(kind: Kind, data: Option<&RawValue>) -> bool {
    let first = data.map(|d| d.get().as_bytes()[0]);
    match kind {
        Kind::Connect => matches!(first, None | Some(b'{')),
        Kind::Disconnect => first.is_none(),
        Kind::ConnectError => matches!(first, Some(b'{') | Some(b'"')),
        Kind::Ack | Kind::BinaryAck => first == Some(b'['),
        Kind::Event | Kind::BinaryEvent => data.is_some_and(|d| event(d).is_ok()),
    }
}

/// An event's name and arguments.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The event name (borrowed unless it had JSON escapes).
    pub name: Cow<'a, str>,
    /// The arguments after the name, raw.
    pub args: Vec<&'a RawValue>,
}

/// Splits an event payload `["name", ...args]` (a non-reserved string name, then any JSON).
pub fn event(data: &RawValue) -> Result<Event<'_>, SocketError> {
    let mut items: Vec<&RawValue> =
        serde_json::from_str(data.get()).map_err(|_| SocketError::InvalidPayload)?;
    if items.is_empty() {
        return Err(SocketError::InvalidPayload);
    }
    let first = items.remove(0).get();
    let name: Cow<'_, str> = match serde_json::from_str::<&str>(first) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            serde_json::from_str::<String>(first).map_err(|_| SocketError::InvalidPayload)?,
        ),
    };
    if RESERVED_EVENTS.contains(&&*name) {
        return Err(SocketError::InvalidPayload);
    }
    Ok(Event { name, args: items })
}

/// The arguments of an ACK packet (`[...args]`).
pub fn ack_args(data: &RawValue) -> Result<Vec<&RawValue>, SocketError> {
    serde_json::from_str(data.get()).map_err(|_| SocketError::InvalidPayload)
}

/// Appends a packet's header: type digit, attachment count (binary kinds), the namespace
/// unless it is `/`, and the ack id.
pub fn encode_header(
    kind: Kind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    out: &mut Vec<u8>,
) {
    out.push(kind.digit());
    if kind.is_binary() {
        out.extend_from_slice(attachments.to_string().as_bytes());
        out.push(b'-');
    }
    if nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        out.extend_from_slice(id.to_string().as_bytes());
    }
}

/// Appends a whole packet: the header and the JSON payload, if any.
pub fn encode(kind: Kind, nsp: &str, id: Option<u64>, data: Option<&str>, out: &mut Vec<u8>) {
    encode_header(kind, nsp, 0, id, out);
    if let Some(d) = data {
        out.extend_from_slice(d.as_bytes());
    }
}

/// Appends `["<event>",<arg>...]` as an EVENT packet (`args` are JSON texts).
pub fn encode_event(nsp: &str, id: Option<u64>, event: &str, args: &[&str], out: &mut Vec<u8>) {
    encode_header(Kind::Event, nsp, 0, id, out);
    out.push(b'[');
    push_json_string(event, out);
    for a in args {
        out.push(b',');
        out.extend_from_slice(a.as_bytes());
    }
    out.push(b']');
}

/// Appends a CONNECT_ERROR packet: `{"message":..}` plus `data` (JSON text) when given.
pub fn encode_connect_error(nsp: &str, message: &str, data: Option<&str>, out: &mut Vec<u8>) {
    encode_header(Kind::ConnectError, nsp, 0, None, out);
    out.extend_from_slice(b"{\"message\":");
    push_json_string(message, out);
    if let Some(d) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(d.as_bytes());
    }
    out.push(b'}');
}

/// Appends a string as JSON (quoted and escaped).
pub fn push_json_string(s: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
#[path = "socketio_tests.rs"]
mod tests;
