//! The backend proxies' bodies (sans-IO): what ringhub POSTs to the application's backend and
//! what it reads back. docs/PROTOCOL.md ("Backend proxies") is the contract.
//!
//! Every answer is one of `{"result": {...}}`, `{"error": {"code", "message"}}` (subscribe,
//! publish, RPC: an error envelope to the client) or `{"disconnect": {"code", "reason"}}`
//! (connect, refresh: the connection is closed with that code).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::proto::error::ErrorCode;

/// The client's connect request, as the connect proxy sees it.
#[derive(Debug, Serialize)]
pub struct ConnectRequest<'a> {
    /// The client id the connection has (`"<node>.<n>"`).
    pub client: &'a str,
    /// `websocket`, `sse` or `socketio`.
    pub transport: &'a str,
    /// The peer's address.
    pub remote: String,
    /// The request path.
    pub path: &'a str,
    /// The raw query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<&'a str>,
    /// The user the token (JWT) named, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The allowlisted request headers (lower-case names).
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The client's connect data: the `data` query parameter, as JSON (or as a string when it
    /// is not JSON); for Socket.IO, the CONNECT packet's auth payload (`io(url, {auth})`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Socket.IO: the namespace of the first CONNECT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
}

/// A request about an established connection: refresh, subscribe, publish, RPC.
#[derive(Debug, Serialize)]
pub struct ConnRequest<'a> {
    /// The client id.
    pub client: &'a str,
    /// The connection's user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// Subscribe and publish: the topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
    /// Publish: the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a str>,
    /// RPC: the method (the envelope's `topic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    /// The envelope's `data`, as the client sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
    /// Refresh: the connection's metadata from the connect proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a RawValue>,
}

impl ConnRequest<'_> {
    /// The JSON body.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl ConnectRequest<'_> {
    /// The JSON body.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The connect proxy's `result`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectResult {
    /// The connection's user (replaces the token's).
    pub user: Option<String>,
    /// Unix time (seconds) when the connection expires: the refresh proxy is asked then.
    pub expire_at: Option<u64>,
    /// Topics the connection is subscribed to at once (no permission check).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Metadata shown in presence entries.
    pub meta: Option<Box<RawValue>>,
    /// Data sent to the client in the `connected` frame.
    pub data: Option<Box<RawValue>>,
}

/// The `result` of refresh, subscribe, publish and RPC answers.
#[derive(Debug, Default, Deserialize)]
pub struct CallResult {
    /// Refresh: the new expiry (Unix seconds); none = never again.
    pub expire_at: Option<u64>,
    /// Subscribe: data for the client; publish: the replacement data; RPC: the reply's data.
    pub data: Option<Box<RawValue>>,
}

/// A backend's answer.
#[derive(Debug)]
pub enum Answer<T> {
    /// Allowed, with what the backend returned.
    Result(T),
    /// Refused: an error envelope with this code (default `forbidden`).
    Error(ErrorCode, String),
    /// Close the connection with this code (4000..=4999, default 4403) and reason.
    Disconnect(u16, String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<T> {
    result: Option<T>,
    error: Option<WireError>,
    disconnect: Option<WireDisconnect>,
}

#[derive(Deserialize)]
struct WireError {
    code: Option<String>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct WireDisconnect {
    code: Option<u16>,
    #[serde(default)]
    reason: String,
}

/// Close code for a connection the backend refused without a code of its own.
pub const CLOSE_REFUSED: u16 = 4403;
/// Close code for a connection whose connect or refresh proxy was down (`on_down = "refuse"`).
pub const CLOSE_UNAVAILABLE: u16 = 4503;

/// Parses an answer. An unknown `code` in `error` becomes `forbidden`; a disconnect code
/// outside 4000..=4999 becomes [`CLOSE_REFUSED`].
pub fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<Answer<T>, String> {
    let w: Wire<T> = serde_json::from_slice(body).map_err(|e| format!("invalid answer: {e}"))?;
    if let Some(d) = w.disconnect {
        let code = d
            .code
            .filter(|c| (4000..=4999).contains(c))
            .unwrap_or(CLOSE_REFUSED);
        return Ok(Answer::Disconnect(code, clip(d.reason)));
    }
    if let Some(e) = w.error {
        let code = e
            .code
            .and_then(|c| ErrorCode::ALL.into_iter().find(|k| k.as_str() == c))
            .unwrap_or(ErrorCode::Forbidden);
        return Ok(Answer::Error(code, clip(e.message)));
    }
    Ok(Answer::Result(w.result.unwrap_or_default()))
}

/// A close reason fits a control frame (123 bytes), cut on a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > 120 {
        let mut at = 120;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// The `data` query parameter, percent-decoded, as JSON (or a string when it is not JSON).
pub fn connect_data(query: Option<&str>) -> Option<serde_json::Value> {
    let raw = query?.split('&').find_map(|kv| kv.strip_prefix("data="))?;
    let text = percent_decode(raw)?;
    Some(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let a = parse::<ConnectResult>(br#"{"result":{"user":"u1","topics":["a"],"expire_at":5}}"#);
        let Ok(Answer::Result(r)) = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            (r.user.as_deref(), r.expire_at, r.topics.len()),
            (Some("u1"), Some(5), 1)
        );
        let a = parse::<CallResult>(br#"{"error":{"code":"not_available","message":"m"}}"#);
        assert!(matches!(a, Ok(Answer::Error(ErrorCode::NotAvailable, m)) if m == "m"));
        let a = parse::<CallResult>(br#"{"error":{"code":"weird"}}"#);
        assert!(matches!(a, Ok(Answer::Error(ErrorCode::Forbidden, _))));
        let a = parse::<CallResult>(br#"{"disconnect":{"code":1000,"reason":"x"}}"#);
        assert!(matches!(a, Ok(Answer::Disconnect(CLOSE_REFUSED, _))));
        let a = parse::<CallResult>(br#"{"disconnect":{"code":4001,"reason":"x"}}"#);
        assert!(matches!(a, Ok(Answer::Disconnect(4001, _))));
        assert!(matches!(parse::<CallResult>(b"{}"), Ok(Answer::Result(_))));
        assert!(parse::<CallResult>(b"nope").is_err());
        assert!(parse::<CallResult>(br#"{"resutl":{}}"#).is_err());
        let long = format!(r#"{{"disconnect":{{"reason":"{}"}}}}"#, "é".repeat(100));
        let Ok(Answer::Disconnect(_, r)) = parse::<CallResult>(long.as_bytes()) else {
            panic!()
        };
        assert!(r.len() <= 120);
    }

    #[test]
    fn connect_data_from_the_query() {
        let q = Some("token=x&data=%7B%22a%22%3A1%7D");
        assert_eq!(connect_data(q), Some(serde_json::json!({"a": 1})));
        assert_eq!(connect_data(Some("data=hi+there")), Some("hi there".into()));
        assert_eq!(connect_data(Some("data=%zz")), None);
        assert_eq!(connect_data(None), None);
    }
}
