//! The ringhub envelope as pure functions: encode a client frame into a byte buffer, decode a
//! server frame without copying its payload.
//!
//! Nothing here touches a socket or allocates beyond the caller's buffer (decoding borrows from
//! the input; only strings with escapes are copied), so a load generator can use it per message.
//!
//! ```
//! use ringhub_client::codec::{self, Kind};
//!
//! let mut buf = Vec::new();
//! codec::encode(&mut buf, "message", "chat:a", Some(7), Some(r#"{"text":"hi"}"#));
//! assert_eq!(buf, br#"{"event":"message","topic":"chat:a","id":7,"data":{"text":"hi"}}"#);
//!
//! let frame = codec::decode(br#"{"topic":"chat:a","event":"message","data":1,"offset":3}"#).unwrap();
//! assert_eq!(frame.kind(), Kind::Publication);
//! assert_eq!(frame.offset, Some(3));
//! assert_eq!(frame.data.unwrap().get(), "1");
//! ```

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// A decoded server frame. `data` is the payload's exact bytes (never re-serialised).
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    /// Routing key (for a reply: the request's topic).
    #[serde(borrow, default)]
    pub topic: Cow<'a, str>,
    /// `reply`, `error`, or an application event.
    #[serde(borrow, default)]
    pub event: Cow<'a, str>,
    /// The request's id on `reply` and `error`.
    #[serde(default)]
    pub id: Option<u64>,
    /// The payload, if any.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    /// Position in the topic's history (protocol v2, topics with history and inbox messages).
    #[serde(default)]
    pub offset: Option<u64>,
    /// A durable user message that must be acknowledged (protocol v2).
    #[serde(default)]
    pub ack: bool,
    /// On a durable user message: the server's inbox epoch (offsets restart when it changes).
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
    /// On a delta subscription: the publication's data as a Fossil delta against the data
    /// of the previous publication received on the topic (then `data` is absent).
    #[serde(borrow, default)]
    pub delta: Option<Cow<'a, str>>,
}

/// What an [`Incoming`] frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A successful answer to the request with this `id`.
    Reply,
    /// An error; answers a request when `id` is set.
    Error,
    /// A durable user message (`"ack": true`) to acknowledge with [`encode_ack`].
    UserMessage,
    /// A publication (or a `join`/`leave` event) on `topic`.
    Publication,
}

impl Incoming<'_> {
    /// Classifies the frame. `reply` without an id is an application event named `reply`.
    pub fn kind(&self) -> Kind {
        match (&*self.event, self.id) {
            ("reply", Some(_)) => Kind::Reply,
            ("error", _) if self.id.is_some() || is_error_body(self.data) => Kind::Error,
            _ if self.ack => Kind::UserMessage,
            _ => Kind::Publication,
        }
    }

    /// The `{code, message}` of an error frame.
    pub fn error_body(&self) -> Option<ErrorBody<'_>> {
        self.data.and_then(|d| serde_json::from_str(d.get()).ok())
    }
}

fn is_error_body(data: Option<&RawValue>) -> bool {
    data.and_then(|d| serde_json::from_str::<ErrorBody<'_>>(d.get()).ok())
        .is_some()
}

/// The payload of an `error` frame.
#[derive(Debug, Deserialize)]
pub struct ErrorBody<'a> {
    /// Stable code (`bad_request`, `forbidden`, ...).
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// For humans; may change.
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid frame from server: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// Decodes one server text message.
pub fn decode(frame: &[u8]) -> Result<Incoming<'_>, DecodeError> {
    Ok(serde_json::from_slice(frame)?)
}

/// Appends `{"event":E,"topic":T,"id":N,"data":D}` to `out` (`id` and `data` omitted when
/// `None`, `topic` when empty). `data` must be valid JSON; it is copied as is.
pub fn encode(out: &mut Vec<u8>, event: &str, topic: &str, id: Option<u64>, data: Option<&str>) {
    encode_with(out, event, topic, id, data, false);
}

/// Like [`encode`], with `"exclude_sender": true` when `exclude_sender` is set (protocol v2).
pub fn encode_with(
    out: &mut Vec<u8>,
    event: &str,
    topic: &str,
    id: Option<u64>,
    data: Option<&str>,
    exclude_sender: bool,
) {
    out.extend_from_slice(b"{\"event\":");
    push_str(out, event);
    if !topic.is_empty() {
        out.extend_from_slice(b",\"topic\":");
        push_str(out, topic);
    }
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        push_u64(out, id);
    }
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data.as_bytes());
    }
    if exclude_sender {
        out.extend_from_slice(b",\"exclude_sender\":true");
    }
    out.push(b'}');
}

/// Appends a subscribe request, with `data: {"since": {"epoch", "offset"}}` when recovering.
pub fn encode_subscribe(
    out: &mut Vec<u8>,
    topic: &str,
    id: Option<u64>,
    since: Option<(&str, u64)>,
) {
    encode_subscribe_with(out, topic, id, since, false);
}

/// Like [`encode_subscribe`], adding `"delta": "fossil"` to `data` when `delta` is set:
/// publications then come as Fossil deltas (topics with history).
pub fn encode_subscribe_with(
    out: &mut Vec<u8>,
    topic: &str,
    id: Option<u64>,
    since: Option<(&str, u64)>,
    delta: bool,
) {
    out.extend_from_slice(b"{\"event\":\"subscribe\",\"topic\":");
    push_str(out, topic);
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        push_u64(out, id);
    }
    match (since, delta) {
        (Some((epoch, offset)), _) => {
            out.extend_from_slice(b",\"data\":");
            push_since(out, epoch, offset);
            if delta {
                out.extend_from_slice(b",\"delta\":\"fossil\"");
            }
            out.push(b'}');
        }
        (None, true) => out.extend_from_slice(b",\"data\":{\"delta\":\"fossil\"}"),
        (None, false) => {}
    }
    out.push(b'}');
}

/// Appends `{"since":{"epoch":E,"offset":O}` (without the closing brace of the outer object).
fn push_since(out: &mut Vec<u8>, epoch: &str, offset: u64) {
    out.extend_from_slice(b"{\"since\":{\"epoch\":");
    push_str(out, epoch);
    out.extend_from_slice(b",\"offset\":");
    push_u64(out, offset);
    out.push(b'}');
}

/// The `data` of a history request: `{"limit":L,"since":{...}}`.
pub fn history_data(limit: Option<usize>, since: Option<(&str, u64)>) -> String {
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    if let Some(limit) = limit {
        out.extend_from_slice(b"\"limit\":");
        push_u64(&mut out, limit as u64);
    }
    if let Some((epoch, offset)) = since {
        if limit.is_some() {
            out.push(b',');
        }
        // Reuse the subscribe layout minus its leading brace.
        let mut s = Vec::new();
        push_since(&mut s, epoch, offset);
        out.extend_from_slice(&s[1..]);
    }
    out.push(b'}');
    String::from_utf8(out).expect("encoder writes UTF-8")
}

/// Appends the acknowledgement of durable user message `offset` on `topic` (`user:<id>`).
pub fn encode_ack(out: &mut Vec<u8>, topic: &str, offset: u64, id: Option<u64>) {
    out.extend_from_slice(b"{\"event\":\"ack\",\"topic\":");
    push_str(out, topic);
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        push_u64(out, id);
    }
    out.extend_from_slice(b",\"data\":{\"offset\":");
    push_u64(out, offset);
    out.extend_from_slice(b"}}");
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `s` as a JSON string.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn encodes_escaped_strings_and_numbers() {
        let mut b = Vec::new();
        encode(&mut b, "e\"v\n", "t\\\u{1}é", Some(u64::MAX), None);
        assert_eq!(
            parse(&b),
            json!({"event":"e\"v\n","topic":"t\\\u{1}é","id":u64::MAX})
        );
        b.clear();
        encode_with(&mut b, "m", "t", None, Some("[1,2]"), true);
        assert_eq!(
            parse(&b),
            json!({"event":"m","topic":"t","data":[1,2],"exclude_sender":true})
        );
    }

    #[test]
    fn encodes_subscribe_history_and_ack() {
        let mut b = Vec::new();
        encode_subscribe(&mut b, "chat:a", Some(1), Some(("ep", 37)));
        assert_eq!(
            parse(&b),
            json!({"event":"subscribe","topic":"chat:a","id":1,"data":{"since":{"epoch":"ep","offset":37}}})
        );
        b.clear();
        encode_subscribe_with(&mut b, "s", Some(2), Some(("ep", 3)), true);
        assert_eq!(
            parse(&b),
            json!({"event":"subscribe","topic":"s","id":2,"data":{"since":{"epoch":"ep","offset":3},"delta":"fossil"}})
        );
        b.clear();
        encode_subscribe_with(&mut b, "s", None, None, true);
        assert_eq!(
            parse(&b),
            json!({"event":"subscribe","topic":"s","data":{"delta":"fossil"}})
        );
        b.clear();
        encode_subscribe(&mut b, "chat:*", None, None);
        assert_eq!(parse(&b), json!({"event":"subscribe","topic":"chat:*"}));
        assert_eq!(
            parse(history_data(Some(5), Some(("e", 0))).as_bytes()),
            json!({"limit":5,"since":{"epoch":"e","offset":0}})
        );
        assert_eq!(parse(history_data(None, None).as_bytes()), json!({}));
        b.clear();
        encode_ack(&mut b, "user:a", 7, None);
        assert_eq!(
            parse(&b),
            json!({"event":"ack","topic":"user:a","data":{"offset":7}})
        );
    }

    #[test]
    fn classifies_frames() {
        let k = |s: &str| decode(s.as_bytes()).unwrap().kind();
        assert_eq!(k(r#"{"event":"reply","id":1,"topic":"t"}"#), Kind::Reply);
        assert_eq!(k(r#"{"event":"reply","topic":"t"}"#), Kind::Publication);
        assert_eq!(
            k(r#"{"event":"error","topic":"t","data":{"code":"bad_request","message":"x"}}"#),
            Kind::Error
        );
        assert_eq!(
            k(r#"{"event":"error","topic":"t","data":5}"#),
            Kind::Publication
        );
        assert_eq!(
            k(r#"{"event":"n","topic":"user:a","offset":7,"ack":true}"#),
            Kind::UserMessage
        );
        let f = decode(br#"{"event":"error","id":3,"topic":"t","data":{"code":"forbidden","message":"no \"way\""}}"#).unwrap();
        let e = f.error_body().unwrap();
        assert_eq!((&*e.code, &*e.message), ("forbidden", "no \"way\""));
        assert!(decode(b"not json").is_err());
    }
}
