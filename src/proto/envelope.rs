//! The JSON envelope `{topic, event, data, id}`: parsing client frames without copying, and
//! encoding server frames (WebSocket header included) once into shared [`Bytes`].

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::proto::error::ErrorCode;

/// A client envelope borrowed from the frame payload. `data` stays raw JSON so that forwarding
/// never re-serialises it.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    /// The topic (routing key). Defaults to empty, which routing refuses.
    #[serde(default, borrow)]
    pub topic: std::borrow::Cow<'a, str>,
    /// The event name (`subscribe`, `unsubscribe`, or an application event).
    #[serde(borrow)]
    pub event: std::borrow::Cow<'a, str>,
    /// The payload, as the exact JSON text the client sent.
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    /// A request id the server answers with exactly one `reply` or `error`.
    #[serde(default)]
    pub id: Option<u64>,
    /// Deliver a publication to every subscriber but the sender (protocol v2).
    #[serde(default)]
    pub exclude_sender: bool,
    /// `data` is an argument list (a JSON array), not one argument: see [`args`](crate::proto::args).
    #[serde(default)]
    pub spread: bool,
}

/// Why an envelope could not be parsed; carries the request id when it was readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Human-readable reason.
    pub message: String,
    /// The `id` field, if it could still be recovered.
    pub id: Option<u64>,
}

/// Parses one text frame into an [`Envelope`].
///
/// serde_json borrows strings and keeps `data` as a `RawValue` slice of the input. simd-json was
/// measured against this (see BENCHMARKS.md): its in-place parse rewrites the buffer, so keeping
/// `data` raw would need a copy of every frame plus re-serialisation.
pub fn parse(payload: &[u8]) -> Result<Envelope<'_>, ParseError> {
    if !within_depth(payload, MAX_DEPTH + 1) {
        return Err(ParseError {
            message: format!("data is nested deeper than {MAX_DEPTH} levels"),
            id: None,
        });
    }
    serde_json::from_slice::<Envelope<'_>>(payload).map_err(|e| ParseError {
        // serde's messages quote offending values (`invalid type: string "…"`): keep them short.
        message: format!(
            "invalid envelope: {}",
            crate::proto::error::shorten(&e.to_string())
        ),
        id: recover_id(payload),
    })
}

/// Deepest nesting of arrays and objects accepted in `data` (WebSocket and HTTP API): deeper
/// JSON would be stored and served to clients whose parsers recurse (and overflow) on it.
pub const MAX_DEPTH: usize = 64;

/// Whether `json` nests arrays and objects at most `max` deep (brackets inside strings do not
/// count). A linear scan that does not validate: the parser that follows does.
pub fn within_depth(json: &[u8], max: usize) -> bool {
    // JSON with at most `max` opening brackets (those in strings counted too) cannot nest
    // deeper: a vectorised count settles nearly every message, where the byte-by-byte scan
    // below was 12% of a fan-out publisher's server time.
    if json.len() <= max || memchr::memchr2_iter(b'[', b'{', json).nth(max).is_none() {
        return true;
    }
    depth_scan(json, max)
}

/// [`within_depth`]'s exact scan: strings and escapes followed byte by byte.
fn depth_scan(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in json {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Best-effort recovery of `id` from an envelope that failed to parse, so the error can carry it.
fn recover_id(payload: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_slice::<IdOnly>(payload).ok()?.id
}

/// Largest WebSocket frame header a server writes (no mask).
pub const MAX_HEADER: usize = 10;

/// Builds one unmasked WebSocket frame (text or binary) with its header, in one allocation.
pub struct FrameBuilder {
    buf: BytesMut,
}

impl FrameBuilder {
    /// Starts a frame with room for `payload_hint` payload bytes.
    pub fn with_capacity(payload_hint: usize) -> Self {
        let mut buf = BytesMut::with_capacity(MAX_HEADER + payload_hint);
        buf.put_bytes(0, MAX_HEADER);
        Self { buf }
    }

    /// The payload being written.
    pub fn payload(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Finishes the frame with `opcode` (1 text, 2 binary, 8 close, 9 ping, 10 pong); the header
    /// is formatted by fastwebsockets and placed right before the payload, so no copy is made.
    pub fn finish(mut self, opcode: u8) -> Bytes {
        let mut head = [0u8; MAX_HEADER];
        let hl = {
            let op =
                fastwebsockets::OpCode::try_from(opcode).unwrap_or(fastwebsockets::OpCode::Binary);
            let payload = fastwebsockets::Payload::Borrowed(&self.buf[MAX_HEADER..]);
            fastwebsockets::Frame::new(true, op, None, payload).fmt_head(&mut head)
        };
        let start = MAX_HEADER - hl;
        self.buf[start..MAX_HEADER].copy_from_slice(&head[..hl]);
        self.buf.freeze().slice(start..)
    }
}

/// Writes `s` as a JSON string literal.
#[inline]
pub fn put_json_str(out: &mut BytesMut, s: &str) {
    let mut w = out.writer();
    // Writing to a BytesMut cannot fail.
    let _ = serde_json::to_writer(&mut w, s);
}

/// Encodes `{"topic":T,"event":E,"data":D}` (data omitted when `None`) as a complete text frame.
pub fn publication(topic: &str, event: &str, data: Option<&[u8]>) -> Bytes {
    let hint = topic.len() + event.len() + data.map_or(0, <[u8]>::len) + 32;
    let mut f = FrameBuilder::with_capacity(hint);
    open_publication(f.payload(), topic, event);
    close_with_data(f.payload(), data);
    f.finish(1)
}

/// Starts a publication envelope: `{"topic":T,"event":E`.
/// Opens a publication envelope: `{"topic":T,"event":E` (the caller closes it).
pub(crate) fn open_publication(b: &mut BytesMut, topic: &str, event: &str) {
    b.put_slice(b"{\"topic\":");
    put_json_str(b, topic);
    b.put_slice(b",\"event\":");
    put_json_str(b, event);
}

/// Encodes `{"topic":T,"event":E,"data":D,"offset":O}`: a publication on a topic with history.
pub fn stored_publication(topic: &str, event: &str, data: Option<&[u8]>, offset: u64) -> Bytes {
    tail_frame(topic, event, data, offset, None).0
}

/// [`stored_publication`], also returning where `data` sits in the frame: a history ring keeps
/// the frame and that range, so a stored publication costs one allocation (the frame), not a
/// copy of its data, and its owner shard delivers the frame the ring keeps.
pub fn stored_publication_framed(
    topic: &str,
    event: &str,
    data: Option<&[u8]>,
    offset: u64,
) -> (Bytes, Option<std::ops::Range<usize>>) {
    let (frame, start) = tail_frame(topic, event, data, offset, None);
    let data = data.zip(start).map(|(d, at)| at..at + d.len());
    (frame, data)
}

/// Encodes `{"topic":T,"event":E,"data":D,"offset":O,"epoch":X,"ack":true}`: a durable user
/// message (`epoch` is the inbox store's: offsets restart when it changes).
pub fn durable(topic: &str, event: &str, data: Option<&[u8]>, offset: u64, epoch: &str) -> Bytes {
    tail_frame(topic, event, data, offset, Some(epoch)).0
}

fn tail_frame(
    topic: &str,
    event: &str,
    data: Option<&[u8]>,
    offset: u64,
    ack_epoch: Option<&str>,
) -> (Bytes, Option<usize>) {
    let hint = topic.len() + event.len() + data.map_or(0, <[u8]>::len) + 64;
    let mut f = FrameBuilder::with_capacity(hint);
    let b = f.payload();
    open_publication(b, topic, event);
    // Where `data` sits, counted back from the frame's end (the header goes in front).
    let mut data_at = None;
    if let Some(d) = data {
        b.put_slice(b",\"data\":");
        data_at = Some(b.len());
        b.put_slice(d);
    }
    b.put_slice(b",\"offset\":");
    b.put_slice(itoa::Buffer::new().format(offset).as_bytes());
    if let Some(epoch) = ack_epoch {
        b.put_slice(b",\"epoch\":");
        put_json_str(b, epoch);
        b.put_slice(b",\"ack\":true");
    }
    b.put_u8(b'}');
    let from_end = data_at.map(|at| b.len() - at);
    let frame = f.finish(1);
    let start = from_end.map(|back| frame.len() - back);
    (frame, start)
}

/// Ends an envelope: `,"data":D` when there is data (the client's bytes, as they are), then `}`.
fn close_with_data(b: &mut BytesMut, data: Option<&[u8]>) {
    if let Some(d) = data {
        b.put_slice(b",\"data\":");
        b.put_slice(d);
    }
    b.put_u8(b'}');
}

/// Opens a reply envelope: `{"event":"reply","id":N,"topic":T` (the caller closes it).
pub(crate) fn open_reply(b: &mut BytesMut, id: u64, topic: &str) {
    b.put_slice(b"{\"event\":\"reply\",\"id\":");
    b.put_slice(itoa::Buffer::new().format(id).as_bytes());
    b.put_slice(b",\"topic\":");
    put_json_str(b, topic);
}

/// Encodes `{"event":"reply","id":N,"topic":T[,"data":D]}` as a complete text frame.
pub fn reply(id: u64, topic: &str, data: Option<&[u8]>) -> Bytes {
    let mut f = FrameBuilder::with_capacity(topic.len() + data.map_or(0, <[u8]>::len) + 48);
    let b = f.payload();
    open_reply(b, id, topic);
    close_with_data(b, data);
    f.finish(1)
}

/// Encodes `{"event":"reply","id":N,"topic":T,"data":{"offset":O}}`: the answer to a publication
/// on a topic with history, written straight into its frame (one allocation per answer, as for
/// [`reply`]).
pub fn offset_reply(id: u64, topic: &str, offset: u64) -> Bytes {
    let mut f = FrameBuilder::with_capacity(topic.len() + 72);
    let b = f.payload();
    open_reply(b, id, topic);
    b.put_slice(b",\"data\":{\"offset\":");
    b.put_slice(itoa::Buffer::new().format(offset).as_bytes());
    b.put_slice(b"}}");
    f.finish(1)
}

/// Encodes `{"event":"error"[,"id":N],"topic":T,"data":{"code":C,"message":M}}` as a text frame.
///
/// Peer input is never echoed at length: a topic longer than any valid one
/// ([`MAX_TOPIC_LEN`](crate::proto::pattern::MAX_TOPIC_LEN)) is cut to its first
/// [`MAX_QUOTE`](crate::proto::error::MAX_QUOTE) characters (plus `…`), and the message to
/// [`MAX_ERROR_MESSAGE`](crate::proto::error::MAX_ERROR_MESSAGE) bytes.
pub fn error(id: Option<u64>, topic: &str, code: ErrorCode, message: &str) -> Bytes {
    let short;
    let topic = if topic.len() > crate::proto::pattern::MAX_TOPIC_LEN {
        let at = topic
            .char_indices()
            .nth(crate::proto::error::MAX_QUOTE)
            .map_or(topic.len(), |(i, _)| i);
        short = format!("{}…", &topic[..at]);
        short.as_str()
    } else {
        topic
    };
    let message = crate::proto::error::clamp_message(message);
    let message = &*message;
    let mut f = FrameBuilder::with_capacity(topic.len() + message.len() + 80);
    let b = f.payload();
    b.put_slice(b"{\"event\":\"error\",");
    if let Some(id) = id {
        b.put_slice(b"\"id\":");
        b.put_slice(itoa::Buffer::new().format(id).as_bytes());
        b.put_u8(b',');
    }
    b.put_slice(b"\"topic\":");
    put_json_str(b, topic);
    b.put_slice(b",\"data\":{\"code\":\"");
    b.put_slice(code.as_str().as_bytes());
    b.put_slice(b"\",\"message\":");
    put_json_str(b, message);
    b.put_slice(b"}}");
    f.finish(1)
}

/// A complete frame carrying `payload` with `opcode` (used by the echo route and control frames).
pub fn raw_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut f = FrameBuilder::with_capacity(payload.len());
    f.payload().put_slice(payload);
    f.finish(opcode)
}

/// A close frame with `code` and a short UTF-8 `reason`.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut f = FrameBuilder::with_capacity(2 + reason.len());
    f.payload().put_u16(code);
    f.payload().put_slice(reason.as_bytes());
    f.finish(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The count's shortcut answers as the exact scan does, brackets in strings included.
        #[test]
        fn within_depth_agrees_with_the_exact_scan(
            json in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\a,".to_vec()), 0..200),
            max in 0usize..8,
        ) {
            proptest::prop_assert_eq!(within_depth(&json, max), depth_scan(&json, max));
        }
    }

    #[test]
    fn within_depth_refuses_deep_nesting_and_ignores_brackets_in_strings() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(!within_depth(deep.as_bytes(), 64));
        assert!(within_depth(deep.as_bytes(), 65));
        let quoted = format!("{{\"d\":\"{}\"}}", "[".repeat(100));
        assert!(within_depth(quoted.as_bytes(), 2), "brackets in a string");
        let escaped = format!("[\"\\\"{}\"]", "{".repeat(100));
        assert!(
            within_depth(escaped.as_bytes(), 2),
            "after an escaped quote"
        );
    }

    fn payload(frame: &Bytes) -> serde_json::Value {
        let at = if frame[1] & 0x7f == 126 { 4 } else { 2 };
        serde_json::from_slice(&frame[at..]).unwrap()
    }

    #[test]
    fn a_stored_publication_says_where_its_data_is_in_its_frame() {
        for data in [&b"{\"n\":1}"[..], &[b'7'; 300][..]] {
            let (frame, at) = stored_publication_framed("t", "e\"", Some(data), 42);
            assert_eq!(frame, stored_publication("t", "e\"", Some(data), 42));
            assert_eq!(&frame[at.unwrap()], data);
            assert_eq!(payload(&frame)["offset"], 42);
        }
        let (_, none) = stored_publication_framed("t", "e", None, 1);
        assert!(none.is_none());
        assert_eq!(
            offset_reply(7, "t\"", 42),
            reply(7, "t\"", Some(b"{\"offset\":42}"))
        );
    }

    #[test]
    fn error_envelopes_do_not_echo_long_input() {
        let topic = "t".repeat(1 << 20);
        let f = error(Some(7), &topic, ErrorCode::BadRequest, &"m".repeat(1 << 20));
        assert!(f.len() < 1024, "error frame of {} bytes", f.len());
        let v = payload(&f);
        assert_eq!(v["id"], 7);
        let t = v["topic"].as_str().unwrap();
        assert_eq!(
            t,
            format!("{}…", "t".repeat(crate::proto::error::MAX_QUOTE))
        );
        // A valid topic is echoed exactly, so clients can correlate.
        let ok = "chat:".to_string() + &"x".repeat(200);
        assert_eq!(
            payload(&error(None, &ok, ErrorCode::Forbidden, "no"))["topic"],
            ok
        );
    }

    #[test]
    fn parse_errors_quote_little_of_the_input() {
        let big = format!(
            r#"{{"event":"x","topic":"a","id":"{}"}}"#,
            "9".repeat(100_000)
        );
        let e = parse(big.as_bytes()).unwrap_err();
        assert!(
            e.message.len() < 300,
            "{} bytes: {}",
            e.message.len(),
            e.message
        );
        let e = parse(format!(r#"{{"event":{}}}"#, "1".repeat(50_000)).as_bytes()).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
    }
}
