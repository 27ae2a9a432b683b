//! MessagePack envelopes (WebSocket subprotocol `ringhub.msgpack`), sans-IO.
//!
//! The shard's internal form stays JSON, so handlers, the store, history, the cluster and every
//! JSON client see exactly what they see without MessagePack. A connection that negotiated the
//! subprotocol is translated at its edges: its binary messages are converted to JSON when they
//! arrive ([`to_json`], a streaming walk with no tree in between), and the JSON frames it is sent
//! are converted to MessagePack binary frames ([`frame_from_json`]) — once per publication per
//! shard on fan-out, like the compressed frame.
//!
//! MessagePack `bin` has no JSON counterpart: it becomes the object `{"$bin":"<base64>"}`
//! (standard alphabet, padded), and that object — exactly one key `$bin` whose value is valid
//! base64 — becomes `bin` again on the way out, so bytes round-trip between MessagePack clients
//! and a JSON client sees them in that documented form.

use base64::Engine;
use bytes::{BufMut, Bytes};
use rmp::Marker;

use super::envelope::{FrameBuilder, ParseError, MAX_DEPTH};

/// The subprotocol a client offers in `Sec-WebSocket-Protocol` to speak MessagePack.
pub const SUBPROTOCOL: &str = "ringhub.msgpack";

/// The key of the JSON object that stands for MessagePack `bin`.
pub const BIN_KEY: &str = "$bin";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Whether any `Sec-WebSocket-Protocol` header value (comma-separated tokens, RFC 6455 §4.1)
/// offers [`SUBPROTOCOL`].
pub fn offered<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> bool {
    values.any(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii() == SUBPROTOCOL.as_bytes())
    })
}

/// Adds `Sec-WebSocket-Protocol: ringhub.msgpack` to a `101` response head.
pub fn add_to(response: &mut Vec<u8>) {
    if response.ends_with(b"\r\n\r\n") {
        response.truncate(response.len() - 2);
        response.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        response.extend_from_slice(SUBPROTOCOL.as_bytes());
        response.extend_from_slice(b"\r\n\r\n");
    }
}

/// Why a MessagePack message has no JSON form; the shard answers it with `bad_request`.
type Bad = &'static str;

/// Converts one MessagePack message (a whole binary WebSocket message) to the JSON text of the
/// same envelope, appended to `out`. Containers nested deeper than the JSON envelope may be
/// ([`MAX_DEPTH`] in `data`), map keys that are not strings, extension types, non-UTF-8
/// strings, NaN or infinities, a truncated value and bytes after the value are refused. The
/// output is at most about six times the input (a string of control characters, escaped).
pub fn to_json(msg: &[u8], out: &mut Vec<u8>) -> Result<(), ParseError> {
    let mut r = Reader { buf: msg, at: 0 };
    let result = match value(&mut r, out, MAX_DEPTH + 1) {
        Ok(()) if r.at != msg.len() => Err("bytes after the envelope"),
        other => other,
    };
    result.map_err(|why| ParseError {
        message: format!("invalid MessagePack envelope: {why}"),
        id: None,
    })
}

/// A cursor over the message; every read is bounds-checked (the input is the peer's).
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        let end = self.at.checked_add(n).ok_or("length overflows")?;
        let s = self.buf.get(self.at..end).ok_or("truncated value")?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Bad> {
        self.take(N)?.try_into().map_err(|_| "truncated value")
    }
    fn len8(&mut self) -> Result<usize, Bad> {
        Ok(usize::from(self.array::<1>()?[0]))
    }
    fn len16(&mut self) -> Result<usize, Bad> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }
    fn len32(&mut self) -> Result<usize, Bad> {
        usize::try_from(u32::from_be_bytes(self.array()?)).map_err(|_| "length overflows")
    }
}

fn value(r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize) -> Result<(), Bad> {
    let m = Marker::from_u8(r.array::<1>()?[0]);
    match m {
        Marker::Null => out.extend_from_slice(b"null"),
        Marker::True => out.extend_from_slice(b"true"),
        Marker::False => out.extend_from_slice(b"false"),
        Marker::FixPos(n) => unsigned(out, u64::from(n)),
        Marker::U8 => unsigned(out, u64::from(r.array::<1>()?[0])),
        Marker::U16 => unsigned(out, u64::from(u16::from_be_bytes(r.array()?))),
        Marker::U32 => unsigned(out, u64::from(u32::from_be_bytes(r.array()?))),
        Marker::U64 => unsigned(out, u64::from_be_bytes(r.array()?)),
        Marker::FixNeg(n) => signed(out, i64::from(n)),
        Marker::I8 => signed(out, i64::from(i8::from_be_bytes(r.array()?))),
        Marker::I16 => signed(out, i64::from(i16::from_be_bytes(r.array()?))),
        Marker::I32 => signed(out, i64::from(i32::from_be_bytes(r.array()?))),
        Marker::I64 => signed(out, i64::from_be_bytes(r.array()?)),
        Marker::F32 => float(out, f64::from(f32::from_be_bytes(r.array()?)))?,
        Marker::F64 => float(out, f64::from_be_bytes(r.array()?))?,
        Marker::FixStr(n) => string(r, out, usize::from(n))?,
        Marker::Str8 => {
            let n = r.len8()?;
            string(r, out, n)?
        }
        Marker::Str16 => {
            let n = r.len16()?;
            string(r, out, n)?
        }
        Marker::Str32 => {
            let n = r.len32()?;
            string(r, out, n)?
        }
        Marker::Bin8 => {
            let n = r.len8()?;
            binary(r, out, n)?
        }
        Marker::Bin16 => {
            let n = r.len16()?;
            binary(r, out, n)?
        }
        Marker::Bin32 => {
            let n = r.len32()?;
            binary(r, out, n)?
        }
        Marker::FixArray(n) => array(r, out, usize::from(n), depth)?,
        Marker::Array16 => {
            let n = r.len16()?;
            array(r, out, n, depth)?
        }
        Marker::Array32 => {
            let n = r.len32()?;
            array(r, out, n, depth)?
        }
        Marker::FixMap(n) => map(r, out, usize::from(n), depth)?,
        Marker::Map16 => {
            let n = r.len16()?;
            map(r, out, n, depth)?
        }
        Marker::Map32 => {
            let n = r.len32()?;
            map(r, out, n, depth)?
        }
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => return Err("extension types are not supported"),
        Marker::Reserved => return Err("reserved marker 0xc1"),
    }
    Ok(())
}

fn unsigned(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn signed(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn float(out: &mut Vec<u8>, x: f64) -> Result<(), Bad> {
    if !x.is_finite() {
        return Err("NaN and infinities have no JSON form");
    }
    // Writing to a Vec cannot fail; a finite float always has a JSON form.
    serde_json::to_writer(&mut *out, &x).map_err(|_| "bad float")
}

fn string(r: &mut Reader<'_>, out: &mut Vec<u8>, len: usize) -> Result<(), Bad> {
    let s = std::str::from_utf8(r.take(len)?).map_err(|_| "a string is not UTF-8")?;
    serde_json::to_writer(&mut *out, s).map_err(|_| "bad string")
}

fn binary(r: &mut Reader<'_>, out: &mut Vec<u8>, len: usize) -> Result<(), Bad> {
    let b = r.take(len)?;
    out.extend_from_slice(b"{\"$bin\":\"");
    let at = out.len();
    out.resize(
        at + base64::encoded_len(b.len(), true).ok_or("length overflows")?,
        0,
    );
    B64.encode_slice(b, &mut out[at..])
        .map_err(|_| "length overflows")?;
    out.extend_from_slice(b"\"}");
    Ok(())
}

fn array(r: &mut Reader<'_>, out: &mut Vec<u8>, n: usize, depth: usize) -> Result<(), Bad> {
    let depth = depth.checked_sub(1).ok_or("nested too deep")?;
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        // Every element takes at least one byte, so a huge count fails at the input's end.
        value(r, out, depth)?;
    }
    out.push(b']');
    Ok(())
}

fn map(r: &mut Reader<'_>, out: &mut Vec<u8>, n: usize, depth: usize) -> Result<(), Bad> {
    let depth = depth.checked_sub(1).ok_or("nested too deep")?;
    out.push(b'{');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let len = match Marker::from_u8(r.array::<1>()?[0]) {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 => r.len8()?,
            Marker::Str16 => r.len16()?,
            Marker::Str32 => r.len32()?,
            _ => return Err("a map key is not a string"),
        };
        string(r, out, len)?;
        out.push(b':');
        value(r, out, depth)?;
    }
    out.push(b'}');
    Ok(())
}

/// Converts the JSON text of a server envelope to MessagePack (map order kept; every
/// `{"$bin":"<base64>"}` object becomes `bin`). `None` when `json` is not JSON, which a frame
/// the server encoded always is.
pub fn from_json(json: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len());
    rmpv::encode::write_value(&mut out, &packed(json)?).ok()?;
    Some(out)
}

fn packed(json: &[u8]) -> Option<rmpv::Value> {
    let mut v: rmpv::Value = serde_json::from_slice(json).ok()?;
    unbin(&mut v);
    Some(v)
}

/// Replaces every `{"$bin":"<base64>"}` map by the bytes it stands for. Recursion is bounded
/// by serde_json's own nesting limit (128) on the text this came from.
fn unbin(v: &mut rmpv::Value) {
    match v {
        rmpv::Value::Map(pairs) => {
            if let [(rmpv::Value::String(k), rmpv::Value::String(s))] = pairs.as_slice() {
                if k.as_str() == Some(BIN_KEY) {
                    if let Some(b) = s.as_str().and_then(|s| B64.decode(s).ok()) {
                        *v = rmpv::Value::Binary(b);
                        return;
                    }
                }
            }
            pairs.iter_mut().for_each(|(_, x)| unbin(x));
        }
        rmpv::Value::Array(items) => items.iter_mut().for_each(unbin),
        _ => {}
    }
}

/// The MessagePack binary frame for a whole server JSON text frame (unmasked, unfragmented,
/// uncompressed, header included): `None` for any other frame (control frames, binary), which
/// goes out as it is.
pub fn frame_from_json(frame: &[u8]) -> Option<Bytes> {
    let json = crate::proto::frame::text_payload(frame)?;
    let v = packed(json)?;
    let mut f = FrameBuilder::with_capacity(json.len());
    rmpv::encode::write_value(&mut f.payload().writer(), &v).ok()?;
    Some(f.finish(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn pack(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    fn json_of(msg: &[u8]) -> Result<serde_json::Value, ParseError> {
        let mut out = Vec::new();
        to_json(msg, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("to_json writes JSON"))
    }

    fn envelope(data: Value) -> Value {
        Value::Map(vec![
            ("topic".into(), "chat:a".into()),
            ("event".into(), "say".into()),
            ("data".into(), data),
            ("id".into(), 7.into()),
        ])
    }

    #[test]
    fn bytes_round_trip_through_the_json_form() {
        let data = Value::Map(vec![
            ("blob".into(), Value::Binary(vec![0, 1, 2, 255, 254])),
            ("n".into(), (-3).into()),
            ("big".into(), u64::MAX.into()),
            ("f".into(), 1.5.into()),
            (
                "list".into(),
                Value::Array(vec![Value::Nil, true.into(), "é\n".into()]),
            ),
        ]);
        let msg = pack(&envelope(data.clone()));
        let json = json_of(&msg).unwrap();
        assert_eq!(
            json["data"]["blob"],
            serde_json::json!({"$bin": "AAEC//4="})
        );
        assert_eq!(json["data"]["big"], serde_json::json!(u64::MAX));
        assert_eq!(json["id"], 7);
        let mut text = Vec::new();
        to_json(&msg, &mut text).unwrap();
        let back = from_json(&text).unwrap();
        let v = rmpv::decode::read_value(&mut back.as_slice()).unwrap();
        assert_eq!(
            v,
            envelope(data),
            "map order, integers, floats and bin survive"
        );
    }

    #[test]
    fn only_a_lone_valid_bin_object_becomes_bytes() {
        let v = |j: &str| {
            rmpv::decode::read_value(&mut from_json(j.as_bytes()).unwrap().as_slice()).unwrap()
        };
        assert_eq!(v(r#"{"$bin":""}"#), Value::Binary(vec![]));
        assert!(matches!(v(r#"{"$bin":"not base64!"}"#), Value::Map(_)));
        assert!(matches!(v(r#"{"$bin":"AA==","x":1}"#), Value::Map(_)));
        assert!(matches!(v(r#"{"$bin":5}"#), Value::Map(_)));
        assert_eq!(
            v(r#"[{"$bin":"AA=="}]"#),
            Value::Array(vec![Value::Binary(vec![0])])
        );
        assert_eq!(from_json(b"{not json"), None);
    }

    #[test]
    fn refusals_are_errors_not_panics() {
        let deep = {
            let mut m = vec![0x91; 200];
            m.push(0xc0);
            m
        };
        let cases: [(&[u8], &str); 10] = [
            (&[], "truncated"),
            (&[0x82, 0xa1, b'a'], "truncated"),
            (&[0xc0, 0xc0], "bytes after"),
            (&[0xd4, 0, 0], "extension"),
            (&[0x81, 0x01, 0x02], "not a string"),
            (&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0], "NaN"),
            (&[0xa2, 0xff, 0xfe], "UTF-8"),
            (&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0], "truncated"),
            (&[0xc1], "reserved"),
            (&deep, "too deep"),
        ];
        for (msg, why) in cases {
            let e = json_of(msg).unwrap_err();
            assert!(e.message.contains(why), "{msg:x?}: {}", e.message);
        }
        // The deepest envelope JSON accepts passes.
        let mut ok = vec![0x91; MAX_DEPTH + 1];
        ok.push(0xc0);
        assert!(json_of(&ok).is_ok());
    }

    #[test]
    fn negotiation_finds_the_token_in_any_header_value() {
        let offers = |v: &[&str]| offered(v.iter().map(|s| s.as_bytes()));
        assert!(offers(&["ringhub.msgpack"]));
        assert!(offers(&["chat, ringhub.msgpack "]));
        assert!(offers(&["chat", "ringhub.msgpack"]));
        assert!(!offers(&["ringhub.msgpackx", "RINGHUB.MSGPACK"]));
        assert!(!offers(&[]));
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nA: b\r\n\r\n".to_vec();
        add_to(&mut resp);
        assert!(resp.ends_with(b"A: b\r\nSec-WebSocket-Protocol: ringhub.msgpack\r\n\r\n"));
    }

    #[test]
    fn a_json_text_frame_becomes_one_binary_frame() {
        let data = format!("\"{}\"", "x".repeat(300));
        let text = super::super::envelope::publication("t", "e", Some(data.as_bytes()));
        let bin = frame_from_json(&text).unwrap();
        assert_eq!(bin[0], 0x82);
        assert_eq!(bin[1], 126, "a 16-bit length");
        let len = usize::from(u16::from_be_bytes([bin[2], bin[3]]));
        assert_eq!(len, bin.len() - 4);
        let v = rmpv::decode::read_value(&mut &bin[4..]).unwrap();
        assert_eq!(v["topic"], Value::from("t"));
        assert_eq!(v["data"].as_str().map(str::len), Some(300));
        // Control and binary frames are not touched.
        assert_eq!(
            frame_from_json(&super::super::envelope::raw_frame(10, b"p")),
            None
        );
        assert_eq!(frame_from_json(&bin), None);
    }

    proptest::proptest! {
        #[test]
        fn any_input_is_json_or_an_error(msg in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut out = Vec::new();
            if to_json(&msg, &mut out).is_ok() {
                proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
                proptest::prop_assert!(from_json(&out).is_some());
            }
        }
    }
}
