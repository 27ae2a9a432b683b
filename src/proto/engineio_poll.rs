//! Engine.IO v4 long-polling, sans-IO: session ids that name their owner and carry a secret,
//! the POST body split into packets, the GET body made from queued WebSocket frames (so a
//! session's output is encoded once, whichever transport carries it), and the HTTP answers
//! with their CORS headers.
//!
//! A polling session's requests may land on any shard and any HTTP connection; its id tells
//! the shard that owns it (the client id `<node>.<hex>` names node, shard and slot) and a
//! random secret, so knowing a client id (presence shows them) is not enough to take over a
//! session.

use std::borrow::Cow;

use base64::Engine;

use super::engineio::{
    decode_text, Data, EngineError, Kind, Packet, MAX_PAYLOAD_PACKETS, SEPARATOR,
};
use super::frame::{OP_BINARY, OP_CLOSE, OP_TEXT};

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// The separator between a session's client id and its secret.
const SID_SECRET: char = '~';

/// A session id: the owner's client id and the secret, `<client id>~<16 hex digits>`.
pub fn make_sid(client_id: &str, secret: u64) -> String {
    format!("{client_id}{SID_SECRET}{secret:016x}")
}

/// Splits a session id into the client id and the secret; `None` when it is not one.
pub fn split_sid(sid: &str) -> Option<(&str, u64)> {
    let (client, secret) = sid.rsplit_once(SID_SECRET)?;
    if secret.len() != 16 || client.is_empty() {
        return None;
    }
    Some((client, u64::from_str_radix(secret, 16).ok()?))
}

/// One packet of a POST body: text (the type digit and its data, as a WebSocket text frame
/// carries it) or a binary message (`b` + base64, decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<'a> {
    /// A text packet, type digit included (`42["ev"]`, `3`, `1`).
    Text(&'a [u8]),
    /// The bytes of a binary message (a Socket.IO attachment).
    Binary(Vec<u8>),
}

impl Part<'_> {
    /// The WebSocket opcode the same packet arrives with over WebSocket.
    pub fn opcode(&self) -> u8 {
        match self {
            Part::Text(_) => OP_TEXT,
            Part::Binary(_) => OP_BINARY,
        }
    }

    /// The packet's bytes as a WebSocket message carries them.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Part::Text(t) => t,
            Part::Binary(b) => b,
        }
    }
}

/// Splits a POST body into its packets: at most `max_bytes` long, at most
/// [`MAX_PAYLOAD_PACKETS`] packets, each non-empty; text stays borrowed.
pub fn split_payload(body: &[u8], max_bytes: usize) -> Result<Vec<Part<'_>>, EngineError> {
    if body.len() > max_bytes {
        return Err(EngineError::TooLarge);
    }
    if body.is_empty() {
        return Err(EngineError::Empty);
    }
    let mut out = Vec::new();
    for part in body.split(|b| *b == SEPARATOR) {
        if out.len() == MAX_PAYLOAD_PACKETS {
            return Err(EngineError::TooLarge);
        }
        out.push(match part.first() {
            None => return Err(EngineError::UnknownType),
            Some(b'b') => Part::Binary(B64.decode(&part[1..]).map_err(|_| EngineError::BadBase64)?),
            Some(_) => {
                // Checked here so a bad packet fails the whole body before any of it is applied.
                super::engineio::decode_text(part)?;
                Part::Text(part)
            }
        });
    }
    Ok(out)
}

/// Decodes a long-polling body (a POST) into its packets, at most `max_bytes` long: the
/// packets of [`split_payload`], decoded.
pub fn decode_payload(body: &[u8], max_bytes: usize) -> Result<Vec<Packet<'_>>, EngineError> {
    split_payload(body, max_bytes)?
        .into_iter()
        .map(|part| match part {
            Part::Binary(bytes) => Ok(Packet {
                kind: Kind::Message,
                data: Data::Binary(Cow::Owned(bytes)),
            }),
            Part::Text(text) => decode_text(text),
        })
        .collect()
}

/// The opcode and payload of the first frame in bytes the server encoded (unmasked, whole), and
/// the bytes after it (one queued `Bytes` may hold several frames: a binary event and its
/// attachments); `None` for bytes that do not start with a whole frame.
pub fn server_frame(frame: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&b0, rest) = frame.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    if b1 & 0x80 != 0 {
        return None;
    }
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let (l, r) = rest.split_at_checked(2)?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, r)
        }
        127 => {
            let (l, r) = rest.split_at_checked(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(l);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, r)
        }
        n => (n as usize, rest),
    };
    let (payload, after) = rest.split_at_checked(len)?;
    Some((b0 & 0x0f, payload, after))
}

/// Appends the frames of a queued `Bytes` to a GET body as their Engine.IO packets: a text
/// frame as it is, a binary one as `b` + base64, a close frame as the close packet `1`;
/// anything else (pings of the WebSocket layer) is left out. Returns whether a frame was the
/// close.
pub fn push_frame(mut bytes: &[u8], out: &mut Vec<u8>) -> bool {
    let mut closed = false;
    while let Some((op, payload, after)) = server_frame(bytes) {
        bytes = after;
        let packet: Cow<'_, [u8]> = match op {
            OP_TEXT => Cow::Borrowed(payload),
            OP_BINARY => {
                let mut b = Vec::with_capacity(1 + payload.len().div_ceil(3) * 4);
                super::engineio::encode_binary_polling(payload, &mut b);
                Cow::Owned(b)
            }
            OP_CLOSE => Cow::Borrowed(b"1"),
            _ => continue,
        };
        if !out.is_empty() {
            out.push(SEPARATOR);
        }
        out.extend_from_slice(&packet);
        closed |= op == OP_CLOSE;
    }
    closed
}

/// The CORS headers of an answer to `origin` (already checked against the allowlist): the
/// origin echoed, with credentials, as browsers require for `withCredentials` requests.
pub fn cors_headers(origin: Option<&str>) -> String {
    match origin.filter(|o| !o.contains(['\r', '\n'])) {
        Some(o) => format!(
            "Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
        ),
        None => String::new(),
    }
}

/// The extra headers of the answer to a CORS preflight (`OPTIONS`): the methods polling uses
/// and the request headers asked for (only token characters and commas are echoed).
pub fn preflight_headers(origin: Option<&str>, asked: Option<&str>) -> String {
    let mut h = cors_headers(origin);
    h.push_str("Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n");
    let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ',' | ' ');
    match asked.filter(|a| !a.is_empty() && a.len() <= 512 && a.chars().all(token)) {
        Some(a) => h.push_str(&format!("Access-Control-Allow-Headers: {a}\r\n")),
        None => h.push_str("Access-Control-Allow-Headers: content-type\r\n"),
    }
    h.push_str("Access-Control-Max-Age: 86400\r\n");
    h
}

/// The content type of polling answers with packets.
pub const TEXT: &str = "text/plain; charset=UTF-8";

#[cfg(test)]
#[path = "engineio_poll_tests.rs"]
mod tests;
