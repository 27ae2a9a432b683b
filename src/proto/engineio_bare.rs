//! A bare Engine.IO endpoint's messages (Engine.IO v4 with no Socket.IO layer on top) as the
//! hub's envelopes and back, sans-IO.
//!
//! Engine.IO alone carries opaque messages: text (`4hello`) or bytes (a binary WebSocket frame,
//! `b<base64>` over long-polling). Such a client's message becomes the envelope
//! `{"topic":T,"event":"message","data":D}` on the endpoint's topic `T`, so handlers,
//! permissions and rate limits see it as a `/ws` message: `D` is the text as a JSON string, or
//! `{"$bin":"<base64>"}` for bytes (the form MessagePack `bin` and Socket.IO attachments take).
//! Back, every envelope that reaches the connection (a handler's `ctx.send`, a publication on a
//! topic it subscribes to) goes as one message made of its `data` alone: a JSON string as its
//! text, a `{"$bin"}` object as a binary message, nothing as an empty message, any other JSON
//! as its text; the server's `error` envelopes go whole (their JSON text), so a client can tell.

use std::borrow::Cow;

use base64::Engine;
use bytes::{BufMut, Bytes};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::engineio::{Data, Kind};
use super::envelope::FrameBuilder;
use super::frame::{OP_BINARY, OP_TEXT};
use super::socketio::push_json_string;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The event of the envelope a bare client's message becomes.
pub const EVENT: &str = "message";

/// The envelope (JSON text) of one message of a bare Engine.IO client, on `topic`.
pub fn envelope_from_message(topic: &str, data: &Data<'_>) -> Vec<u8> {
    let len = match data {
        Data::Text(t) => t.len() + t.len() / 8,
        Data::Binary(b) => b.len().div_ceil(3) * 4 + 12,
    };
    let mut out = Vec::with_capacity(topic.len() + len + 48);
    out.extend_from_slice(b"{\"topic\":");
    push_json_string(topic, &mut out);
    out.extend_from_slice(b",\"event\":\"message\",\"data\":");
    match data {
        Data::Text(t) => push_json_string(t, &mut out),
        Data::Binary(b) => {
            out.extend_from_slice(b"{\"$bin\":\"");
            let at = out.len();
            out.resize(at + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
            let n = B64.encode_slice(b, &mut out[at..]).unwrap_or(0);
            out.truncate(at + n);
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b'}');
    out
}

/// The fields of a server envelope this mapping reads.
#[derive(Deserialize)]
struct Out<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Bytes as envelopes carry them: `{"$bin":"<base64>"}` and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bin<'a> {
    #[serde(rename = "$bin", borrow)]
    b64: Cow<'a, str>,
}

/// The Engine.IO message for one server envelope frame (unmasked, whole, uncompressed) on a
/// bare connection: a text frame `4<text>`, or a binary frame for `{"$bin"}` data. `None` for
/// frames that are not envelopes (the shard's own Engine.IO packets, control frames), which
/// go out as they are.
pub fn frame_from_envelope(frame: &[u8]) -> Option<Bytes> {
    let json = super::frame::text_payload(frame)?;
    let env: Out<'_> = serde_json::from_slice(json).ok()?;
    if env.event == "error" {
        return Some(text_message(json));
    }
    let Some(data) = env.data else {
        return Some(text_message(b""));
    };
    let raw = data.get();
    if raw.starts_with('"') {
        let text: Cow<'_, str> = serde_json::from_str(raw).ok()?;
        return Some(text_message(text.as_bytes()));
    }
    if raw.starts_with('{') {
        let bytes = serde_json::from_str::<Bin<'_>>(raw)
            .ok()
            .and_then(|b| B64.decode(b.b64.as_bytes()).ok());
        if let Some(bytes) = bytes {
            let mut f = FrameBuilder::with_capacity(bytes.len());
            f.payload().put_slice(&bytes);
            return Some(f.finish(OP_BINARY));
        }
    }
    Some(text_message(raw.as_bytes()))
}

/// One Engine.IO `message` packet as a text frame: `4<text>`.
fn text_message(text: &[u8]) -> Bytes {
    let mut f = FrameBuilder::with_capacity(text.len() + 1);
    f.payload().put_u8(Kind::Message.digit());
    f.payload().put_slice(text);
    f.finish(OP_TEXT)
}

#[cfg(test)]
#[path = "engineio_bare_tests.rs"]
mod tests;
