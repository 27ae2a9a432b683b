//! MessagePack on the wire (subprotocol `ringhub.msgpack`, [`Format::MessagePack`]): the client
//! keeps working in JSON and converts each frame at the socket, the way the server does.
//!
//! MessagePack `bin` has no JSON form: it is the object `{"$bin":"<base64>"}` (standard,
//! padded), built by [`bin`] and read by [`bytes_of`]; such an object in data sent over
//! MessagePack goes out as `bin`, so bytes round-trip between MessagePack clients.
//!
//! [`Format::MessagePack`]: crate::Format::MessagePack

use base64::Engine;
use rmpv::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The subprotocol offered in `Sec-WebSocket-Protocol`.
pub const SUBPROTOCOL: &str = "ringhub.msgpack";

/// The JSON form of `bytes` (`{"$bin":"<base64>"}`): sent as MessagePack `bin` on a MessagePack
/// connection, and what a JSON client receives for `bin`.
pub fn bin(bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({ "$bin": B64.encode(bytes) })
}

/// The bytes of a `{"$bin":"<base64>"}` value; `None` for anything else.
pub fn bytes_of(v: &serde_json::Value) -> Option<Vec<u8>> {
    let o = v.as_object().filter(|o| o.len() == 1)?;
    B64.decode(o.get("$bin")?.as_str()?).ok()
}

/// The MessagePack form of a JSON envelope (map order kept, `$bin` objects as `bin`).
pub fn from_json(json: &str) -> Result<Vec<u8>, String> {
    let mut v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    unbin(&mut v);
    let mut out = Vec::with_capacity(json.len());
    rmpv::encode::write_value(&mut out, &v).map_err(|e| e.to_string())?;
    Ok(out)
}

fn unbin(v: &mut Value) {
    match v {
        Value::Map(pairs) => {
            if let [(Value::String(k), Value::String(s))] = pairs.as_slice() {
                if k.as_str() == Some("$bin") {
                    if let Some(b) = s.as_str().and_then(|s| B64.decode(s).ok()) {
                        *v = Value::Binary(b);
                        return;
                    }
                }
            }
            pairs.iter_mut().for_each(|(_, x)| unbin(x));
        }
        Value::Array(items) => items.iter_mut().for_each(unbin),
        _ => {}
    }
}

/// The JSON text of a MessagePack server frame (`bin` as `{"$bin":..}`, map order kept).
pub fn to_json(msg: &[u8]) -> Result<String, String> {
    let v = rmpv::decode::read_value(&mut &msg[..]).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(msg.len() + msg.len() / 2);
    write(&v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut String) -> Result<(), String> {
    let text = |s: &str, out: &mut String| {
        out.push_str(&serde_json::Value::from(s).to_string());
    };
    match v {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&i.to_string()),
        Value::F32(x) => out.push_str(&number(f64::from(*x))?),
        Value::F64(x) => out.push_str(&number(*x)?),
        Value::String(s) => text(s.as_str().ok_or("a string is not UTF-8")?, out),
        Value::Binary(b) => out.push_str(&bin(b).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out)?;
            }
            out.push(']');
        }
        Value::Map(pairs) => {
            out.push('{');
            for (i, (k, x)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                text(k.as_str().ok_or("a map key is not a string")?, out);
                out.push(':');
                write(x, out)?;
            }
            out.push('}');
        }
        Value::Ext(..) => return Err("extension types are not supported".into()),
    }
    Ok(())
}

fn number(x: f64) -> Result<String, String> {
    serde_json::Number::from_f64(x)
        .map(|n| n.to_string())
        .ok_or_else(|| "NaN and infinities have no JSON form".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_and_bytes_round_trip() {
        let json =
            r#"{"topic":"t","event":"e","data":{"z":1,"a":[1.5,-2,null,{"$bin":"AAH/"}]},"id":3}"#;
        let packed = from_json(json).unwrap();
        let v = rmpv::decode::read_value(&mut &packed[..]).unwrap();
        assert_eq!(v["data"]["a"][3], Value::Binary(vec![0, 1, 255]));
        assert_eq!(to_json(&packed).unwrap(), json);
        assert_eq!(bytes_of(&bin(b"\x00hi")), Some(b"\x00hi".to_vec()));
        assert_eq!(bytes_of(&serde_json::json!({"$bin": 1})), None);
    }
}
