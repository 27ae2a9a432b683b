//! The hub's envelopes as Socket.IO packets, sans-IO: one model, two wire protocols.
//!
//! The shard's frames stay JSON envelopes inside (`{"topic","event","data"}` publications,
//! `reply` and `error` answers). A Socket.IO connection is translated at its edges like a
//! MessagePack one: a client `emit(name, ...args, ack?)` becomes the envelope
//! [`envelope_from_event`] builds, and every server envelope becomes the Engine.IO `message`
//! [`frame_from_envelope`] builds — a publication is `emit(event, data)`, a `reply` answers the
//! ack, an `error` answers the ack with `{"error":{code,message}}` (or is emitted as the event
//! `error` when nothing waits for an ack).
//!
//! The envelope `id` of a request carries the ack id in its low 53 bits and the namespace's
//! index (in the configured list) above them, so an answer finds its namespace without any
//! per-request state.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::args;
use super::envelope::FrameBuilder;
use super::frame::{OP_BINARY, OP_TEXT};
use super::socketio::{self as sio, push_json_string, Kind};
use super::socketio_binary as bin;

/// Bits of an envelope id that hold the client's ack id.
pub const ACK_BITS: u32 = 53;

/// The envelope id of ack `ack` asked on namespace number `nsp`.
pub const fn request_id(nsp: usize, ack: u64) -> u64 {
    ((nsp as u64) << ACK_BITS) | (ack & ((1 << ACK_BITS) - 1))
}

/// The namespace number and ack id an envelope id stands for.
pub const fn split_id(id: u64) -> (usize, u64) {
    ((id >> ACK_BITS) as usize, id & ((1 << ACK_BITS) - 1))
}

/// The envelope (JSON text) of a client event: topic `name`, event `message`, the arguments as
/// `data` (none: no `data`; one: that argument; more: their array, marked `"spread":true` so
/// that it differs from one array argument: see [`args`]) and the request
/// id when the client wants an ack.
pub fn envelope_from_event(name: &str, args: &[&RawValue], id: Option<u64>) -> Vec<u8> {
    let len: usize = args.iter().map(|a| a.get().len() + 1).sum();
    let mut out = Vec::with_capacity(len + name.len() + 64);
    out.extend_from_slice(b"{\"topic\":");
    push_json_string(name, &mut out);
    out.extend_from_slice(b",\"event\":\"message\"");
    match args {
        [] => {}
        [one] => {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(one.get().as_bytes());
        }
        many => {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(&args::list(many));
            out.extend_from_slice(b",\"spread\":true");
        }
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.to_string().as_bytes());
    }
    out.push(b'}');
    out
}

/// The offset argument (connection state recovery, `socketio_recover`) of a publication at
/// `offset` in `topic`'s stream of epoch `epoch`, as JSON text (a quoted string).
pub fn offset_arg(epoch: &str, offset: u64, topic: &str) -> String {
    let mut out = Vec::with_capacity(topic.len() + epoch.len() + 24);
    let text = format!("{offset}:{epoch}:{topic}");
    push_json_string(&text, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The fields of a server envelope this mapping reads.
#[derive(Deserialize)]
struct Out<'a> {
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<u64>,
    /// A stored publication's offset, or a durable message's.
    #[serde(default)]
    offset: Option<u64>,
    /// A durable message: the client acknowledges it.
    #[serde(default)]
    ack: bool,
    /// `data` is the argument list (`proto::args`).
    #[serde(default)]
    spread: bool,
}

/// The JSON payload of a server text frame (unmasked, unfragmented, uncompressed, header
/// included); `None` for any other frame.
pub fn json_of_frame(frame: &[u8]) -> Option<&[u8]> {
    crate::proto::frame::text_payload(frame)
}

/// The Engine.IO frames for one server envelope frame on a Socket.IO connection whose
/// publications go to namespace `home` (answers go to the namespace their id names):
/// one text frame `4<packet>`, followed by one binary frame per attachment when the data
/// holds `{"$bin":..}` objects. `None` for frames that are not envelopes (control frames),
/// which go out as they are. `namespaces` is the configured list.
pub fn frame_from_envelope(frame: &[u8], namespaces: &[String], home: usize) -> Option<Bytes> {
    frame_from_envelope_at(frame, namespaces, home, None)
}

/// [`frame_from_envelope`] for a publication stored in a stream of epoch `epoch` (connection
/// state recovery on): its offset goes as the event's last argument
/// ([`offset_arg`]). A durable message
/// (`"ack":true`) is an event with an ack id, its offset: the client's ACK acknowledges it.
pub fn frame_from_envelope_at(
    frame: &[u8],
    namespaces: &[String],
    home: usize,
    epoch: Option<&str>,
) -> Option<Bytes> {
    let json = json_of_frame(frame)?;
    let env: Out<'_> = serde_json::from_slice(json).ok()?;
    let name = |i: usize| namespaces.get(i).map_or("/", String::as_str);
    let mut text = Vec::with_capacity(json.len() + 16);
    let mut parts = Vec::new();
    match (&*env.event, env.id) {
        ("reply", Some(id)) | ("error", Some(id)) => {
            let (nsp, ack) = split_id(id);
            let list = match (&*env.event, env.data) {
                ("reply", None) => "[]".to_owned(),
                // Several arguments: the list is the ACK's payload as it is.
                ("reply", Some(d)) if env.spread && args::inner(d.get()).is_some() => {
                    d.get().to_owned()
                }
                ("reply", Some(d)) => format!("[{}]", d.get()),
                (_, d) => format!("[{{\"error\":{}}}]", d.map_or("null", |d| d.get())),
            };
            let raw: &RawValue = serde_json::from_str(&list).ok()?;
            let (kind, body) = match bin::deconstruct(raw).ok()? {
                Some((t, p)) => {
                    parts = p;
                    (Kind::BinaryAck, Cow::Owned(t))
                }
                None => (Kind::Ack, Cow::Borrowed(raw.get())),
            };
            sio::encode_header(kind, name(nsp), parts.len(), Some(ack), &mut text);
            text.extend_from_slice(body.as_bytes());
        }
        (event, _) => {
            // Several arguments: the list's elements, spread after the name.
            let data = match env.data.map(|d| (d, args::inner(d.get()))) {
                Some((_, Some(inner))) if env.spread => Arg::Spread(inner),
                Some((d, _)) => Arg::One(d),
                None => Arg::None,
            };
            if env.ack {
                return event_frames_of(name(home), env.offset, event, data, None);
            }
            let tail = match (epoch, env.offset, env.topic.as_deref()) {
                (Some(e), Some(o), Some(t)) => Some(offset_arg(e, o, t)),
                _ => None,
            };
            return event_frames_of(name(home), None, event, data, tail.as_deref());
        }
    }
    Some(message_frames(&text, &parts))
}

/// The frames of `emit(event, data[, tail])` on namespace `nsp` (an EVENT, or a BINARY_EVENT
/// and its attachments when `data` holds `{"$bin"}` objects), asking for an ack `id` if given;
/// `tail` is one more argument (JSON text). `None` when they do not make a JSON array.
pub fn event_frames(
    nsp: &str,
    id: Option<u64>,
    event: &str,
    data: Option<&RawValue>,
    tail: Option<&str>,
) -> Option<Bytes> {
    let data = data.map_or(Arg::None, Arg::One);
    event_frames_of(nsp, id, event, data, tail)
}

/// An event's data: no argument, one, or the inside of an argument list (`a,b`).
#[derive(Clone, Copy)]
enum Arg<'a> {
    None,
    One(&'a RawValue),
    Spread(&'a str),
}

fn event_frames_of(
    nsp: &str,
    id: Option<u64>,
    event: &str,
    data: Arg<'_>,
    tail: Option<&str>,
) -> Option<Bytes> {
    let data = match data {
        Arg::None => None,
        Arg::One(d) => Some(d.get()),
        Arg::Spread(inner) => Some(inner).filter(|i| !i.is_empty()),
    };
    let mut args = Vec::with_capacity(event.len() + data.map_or(0, str::len) + 48);
    args.push(b'[');
    push_json_string(event, &mut args);
    for a in data.into_iter().chain(tail) {
        args.push(b',');
        args.extend_from_slice(a.as_bytes());
    }
    args.push(b']');
    let args = String::from_utf8(args).ok()?;
    let raw: &RawValue = serde_json::from_str(&args).ok()?;
    let mut parts = Vec::new();
    let (kind, body) = match bin::deconstruct(raw).ok()? {
        Some((t, p)) => {
            parts = p;
            (Kind::BinaryEvent, Cow::Owned(t))
        }
        None => (Kind::Event, Cow::Borrowed(raw.get())),
    };
    let mut text = Vec::with_capacity(body.len() + nsp.len() + 24);
    sio::encode_header(kind, nsp, parts.len(), id, &mut text);
    text.extend_from_slice(body.as_bytes());
    Some(message_frames(&text, &parts))
}

/// One Engine.IO `message` text frame holding a Socket.IO packet's text, then one binary frame
/// per attachment, in one buffer (written to the socket in that order).
pub fn message_frames(packet: &[u8], parts: &[Vec<u8>]) -> Bytes {
    let mut f = FrameBuilder::with_capacity(packet.len() + 1);
    f.payload().put_u8(b'4');
    f.payload().put_slice(packet);
    let first = f.finish(OP_TEXT);
    if parts.is_empty() {
        return first;
    }
    let mut all = BytesMut::from(&first[..]);
    for p in parts {
        let mut f = FrameBuilder::with_capacity(p.len());
        f.payload().put_slice(p);
        all.put_slice(&f.finish(OP_BINARY));
    }
    all.freeze()
}

/// One Engine.IO control packet as a text frame (`2` ping, `3probe`, `6` noop, the OPEN packet).
pub fn engine_frame(text: &[u8]) -> Bytes {
    let mut f = FrameBuilder::with_capacity(text.len());
    f.payload().put_slice(text);
    f.finish(OP_TEXT)
}

#[cfg(test)]
#[path = "socketio_map_tests.rs"]
mod tests;
