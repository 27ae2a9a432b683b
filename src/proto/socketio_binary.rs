//! Socket.IO binary attachments, sans-IO: BINARY_EVENT / BINARY_ACK packets carry JSON with
//! placeholders `{"_placeholder":true,"num":N}`, and the N-th binary Engine.IO message after the
//! packet is the bytes that stand there.
//!
//! The hub's internal form stays JSON, so bytes have the same spelling as MessagePack `bin` on
//! `ringhub.msgpack` connections: the object `{"$bin":"<base64>"}` ([`super::msgpack::BIN_KEY`]).
//! [`reconstruct`] turns a client's placeholders into that form; [`deconstruct`] turns it back
//! into placeholders and attachments for a Socket.IO client. Both walk the JSON in order, keep
//! every other value's text, and refuse what the reference parser refuses.

use base64::Engine;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::msgpack::BIN_KEY;
use super::socketio::{push_json_string, SocketError, MAX_ATTACHMENTS};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The deepest nesting walked (serde_json's own recursion limit is 128).
const MAX_DEPTH: usize = 64;

/// A binary packet waiting for its attachments: the packet's text, then each binary message.
/// Its memory is what the client sent, bounded by the packet count ([`MAX_ATTACHMENTS`]) and the
/// connection's message size limit per part.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    /// The BINARY_EVENT / BINARY_ACK packet's text.
    pub packet: String,
    /// How many attachments it announced.
    pub expected: usize,
    /// The attachments received so far.
    pub parts: Vec<Vec<u8>>,
}

impl Pending {
    /// A packet announcing `expected` attachments.
    pub fn new(packet: &str, expected: usize) -> Self {
        Self {
            packet: packet.to_owned(),
            expected,
            parts: Vec::new(),
        }
    }

    /// Adds one attachment; true when all have arrived.
    pub fn push(&mut self, part: &[u8]) -> bool {
        if self.parts.len() < self.expected {
            self.parts.push(part.to_vec());
        }
        self.parts.len() == self.expected
    }

    /// Bytes held (for the connection's memory accounting).
    pub fn bytes(&self) -> usize {
        self.packet.len() + self.parts.iter().map(Vec::len).sum::<usize>()
    }
}

/// An object's members in their order, values raw.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, &'de RawValue>()? {
                    v.push(e);
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// What a leaf rule makes of an object: `Some(text)` replaces it, `None` keeps walking into it.
type Leaf<'f> = dyn FnMut(&[(String, &RawValue)]) -> Result<Option<String>, SocketError> + 'f;

fn walk(
    raw: &RawValue,
    depth: usize,
    leaf: &mut Leaf<'_>,
    out: &mut Vec<u8>,
) -> Result<(), SocketError> {
    if depth > MAX_DEPTH {
        return Err(SocketError::InvalidPayload);
    }
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'{') => {
            let Members(members) =
                serde_json::from_str(text).map_err(|_| SocketError::InvalidPayload)?;
            if let Some(r) = leaf(&members)? {
                out.extend_from_slice(r.as_bytes());
                return Ok(());
            }
            out.push(b'{');
            for (n, (k, v)) in members.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                push_json_string(k, out);
                out.push(b':');
                walk(v, depth + 1, leaf, out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|_| SocketError::InvalidPayload)?;
            out.push(b'[');
            for (n, v) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                walk(v, depth + 1, leaf, out)?;
            }
            out.push(b']');
        }
        _ => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
}

/// Replaces each placeholder in `data` by `{"$bin":"<base64>"}` of the attachment it names.
/// An object with `"_placeholder":true` whose `num` names no attachment is refused.
pub fn reconstruct(data: &RawValue, parts: &[Vec<u8>]) -> Result<String, SocketError> {
    let mut leaf = |m: &[(String, &RawValue)]| {
        let flag = m.iter().find(|(k, _)| k == "_placeholder");
        if flag.is_none_or(|(_, v)| v.get() != "true") {
            return Ok(None);
        }
        let num = m
            .iter()
            .find(|(k, _)| k == "num")
            .and_then(|(_, v)| v.get().parse::<usize>().ok())
            .ok_or(SocketError::BadAttachment)?;
        let part = parts.get(num).ok_or(SocketError::BadAttachment)?;
        Ok(Some(format!(
            "{{\"{BIN_KEY}\":\"{}\"}}",
            B64.encode(part.as_slice())
        )))
    };
    let mut out = Vec::with_capacity(data.get().len());
    walk(data, 0, &mut leaf, &mut out)?;
    String::from_utf8(out).map_err(|_| SocketError::InvalidPayload)
}

/// JSON with placeholders, and the attachments they name in order.
pub type Deconstructed = (String, Vec<Vec<u8>>);

/// Replaces each `{"$bin":"<base64>"}` in `data` by a placeholder and returns the JSON with
/// the attachments in placeholder order; `None` when `data` holds no bytes (send it as a plain
/// EVENT). More than [`MAX_ATTACHMENTS`] objects are refused.
pub fn deconstruct(data: &RawValue) -> Result<Option<Deconstructed>, SocketError> {
    if !data.get().contains(BIN_KEY) {
        return Ok(None);
    }
    let mut parts = Vec::new();
    let mut leaf = |m: &[(String, &RawValue)]| {
        let [(k, v)] = m else { return Ok(None) };
        if k != BIN_KEY {
            return Ok(None);
        }
        let Ok(s) = serde_json::from_str::<&str>(v.get()) else {
            return Ok(None);
        };
        let Ok(bytes) = B64.decode(s) else {
            return Ok(None);
        };
        if parts.len() == MAX_ATTACHMENTS {
            return Err(SocketError::IllegalAttachments);
        }
        parts.push(bytes);
        Ok(Some(format!(
            "{{\"_placeholder\":true,\"num\":{}}}",
            parts.len() - 1
        )))
    };
    let mut out = Vec::with_capacity(data.get().len());
    walk(data, 0, &mut leaf, &mut out)?;
    if parts.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8(out).map_err(|_| SocketError::InvalidPayload)?;
    Ok(Some((text, parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).expect("JSON")
    }

    #[test]
    fn placeholders_become_bin_objects_in_order() {
        let data = raw(
            r#"["up",{"a":{"_placeholder":true,"num":1},"b":[{"num":0,"_placeholder":true}],"z":"x"}]"#,
        );
        let out = reconstruct(data, &[vec![1, 2, 3], vec![255]]).expect("ok");
        assert_eq!(
            out,
            r#"["up",{"a":{"$bin":"/w=="},"b":[{"$bin":"AQID"}],"z":"x"}]"#
        );
    }

    #[test]
    fn bad_placeholders_are_refused() {
        for bad in [
            r#"[{"_placeholder":true,"num":2}]"#,
            r#"[{"_placeholder":true,"num":-1}]"#,
            r#"[{"_placeholder":true,"num":"0"}]"#,
            r#"[{"_placeholder":true}]"#,
            r#"[{"_placeholder":true,"num":1e0}]"#,
        ] {
            assert_eq!(
                reconstruct(raw(bad), &[vec![0], vec![1]]),
                Err(SocketError::BadAttachment),
                "{bad}"
            );
        }
        // Not a placeholder: kept as it is.
        let keep = r#"[{"_placeholder":false,"num":9},{"num":9}]"#;
        assert_eq!(reconstruct(raw(keep), &[]).as_deref(), Ok(keep));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            reconstruct(raw(&deep), &[]),
            Err(SocketError::InvalidPayload)
        );
    }

    #[test]
    fn bin_objects_become_placeholders_and_back() {
        let data = raw(r#"["ev",{"f":{"$bin":"AQID"},"g":[{"$bin":""}],"s":"$bin"}]"#);
        let (text, parts) = deconstruct(data).expect("ok").expect("has bytes");
        assert_eq!(
            text,
            r#"["ev",{"f":{"_placeholder":true,"num":0},"g":[{"_placeholder":true,"num":1}],"s":"$bin"}]"#
        );
        assert_eq!(parts, vec![vec![1, 2, 3], vec![]]);
        let back = reconstruct(raw(&text), &parts).expect("ok");
        assert_eq!(back, data.get());
    }

    #[test]
    fn data_without_bytes_needs_no_attachments() {
        assert_eq!(deconstruct(raw(r#"{"a":1}"#)), Ok(None));
        // Looks like `$bin` but is not valid base64, or has another key: kept as JSON.
        assert_eq!(deconstruct(raw(r#"{"$bin":"!!"}"#)), Ok(None));
        assert_eq!(deconstruct(raw(r#"{"$bin":"AQID","x":1}"#)), Ok(None));
        assert_eq!(deconstruct(raw(r#"{"$bin":3}"#)), Ok(None));
    }

    #[test]
    fn too_many_attachments_are_refused() {
        let many = format!(
            "[{}]",
            vec![r#"{"$bin":"AA=="}"#; MAX_ATTACHMENTS + 1].join(",")
        );
        assert_eq!(
            deconstruct(raw(&many)),
            Err(SocketError::IllegalAttachments)
        );
    }

    #[test]
    fn pending_collects_exactly_the_announced_parts() {
        let mut p = Pending::new("51-[\"a\"]", 2);
        assert!(!p.push(&[1]));
        assert!(p.push(&[2, 3]));
        assert!(p.push(&[4]), "extra parts are not kept");
        assert_eq!(p.parts.len(), 2);
        assert_eq!(p.bytes(), 8 + 3);
    }
}
