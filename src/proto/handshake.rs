//! The HTTP/1.1 side of a connection: reading the request head (httparse), validating a WebSocket
//! upgrade (RFC 6455 §4.2), and the responses, including proper errors instead of dropped sockets.

use base64::Engine;
use sha1::{Digest, Sha1};

/// Largest request head accepted (slowloris and memory bound).
pub(crate) const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed request head, owned so it outlives the read buffer.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// The first query parameter named `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes are kept as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| Some(hex(b[i + 1])? << 4 | hex(b[i + 2])?))
            .flatten();
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP error to answer with before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The full response: plain-text body, `Connection: close`.
    pub fn response(&self) -> Vec<u8> {
        let extra = if self.status == 426 || self.message.contains("Sec-WebSocket-Version") {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{}\n",
            self.status,
            reason(self.status),
            self.message.len() + 1,
            extra,
            self.message
        )
        .into_bytes()
    }
}

/// The reason phrase for `status`.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Parses a request head from `buf`: `Ok(Some((head, consumed)))` when complete, `Ok(None)` when
/// more bytes are needed.
pub(crate) fn parse_head(
    buf: &[u8],
    max: usize,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let target = req.path.unwrap_or("/");
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (target.to_string(), None),
            };
            let head = RequestHead {
                method: req.method.unwrap_or("").to_string(),
                path,
                query,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
            };
            Ok(Some((head, n)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= max => {
            Err(HttpError::new(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::new(431, "too many headers")),
        Err(e) => Err(HttpError::new(400, format!("malformed request: {e}"))),
    }
}

/// Validates a WebSocket upgrade and returns the `101 Switching Protocols` response.
/// Compression offers are never accepted (fastwebsockets rejects reserved bits).
pub(crate) fn accept_upgrade(req: &RequestHead) -> Result<Vec<u8>, HttpError> {
    if req.method != "GET" {
        return Err(HttpError::new(405, "WebSocket upgrade requires GET"));
    }
    if !req.header_has_token("Upgrade", "websocket")
        || !req.header_has_token("Connection", "upgrade")
    {
        return Err(HttpError::new(
            426,
            "this endpoint speaks WebSocket: send Upgrade: websocket",
        ));
    }
    if req.header("Sec-WebSocket-Version") != Some("13") {
        return Err(HttpError::new(
            426,
            "unsupported Sec-WebSocket-Version (need 13)",
        ));
    }
    let key = req
        .header("Sec-WebSocket-Key")
        .ok_or_else(|| HttpError::new(400, "missing Sec-WebSocket-Key"))?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(HttpError::new(400, "invalid Sec-WebSocket-Key")),
    }
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> RequestHead {
        parse_head(s.as_bytes(), MAX_HEAD).unwrap().unwrap().0
    }

    const GOOD: &str = "GET /ws?token=x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn rfc6455_example_accept_key() {
        let h = head(GOOD);
        assert_eq!(h.path, "/ws");
        assert_eq!(h.query.as_deref(), Some("token=x"));
        let resp = String::from_utf8(accept_upgrade(&h).unwrap()).unwrap();
        assert!(
            resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{resp}"
        );
    }

    #[test]
    fn partial_and_oversized_heads() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n", MAX_HEAD)
            .unwrap()
            .is_none());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_head(big.as_bytes(), MAX_HEAD).unwrap_err().status,
            431
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n", MAX_HEAD)
                .unwrap_err()
                .status,
            400
        );
        let (_, used) = parse_head(format!("{GOOD}extra").as_bytes(), MAX_HEAD)
            .unwrap()
            .unwrap();
        assert_eq!(used, GOOD.len());
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let h = head("GET /sse?topics=a%3Ab,c*&token=x+y%zz&e= HTTP/1.1\r\n\r\n");
        assert_eq!(h.query_param("topics").as_deref(), Some("a:b,c*"));
        assert_eq!(h.query_param("token").as_deref(), Some("x y%zz"));
        assert_eq!(h.query_param("e").as_deref(), Some(""));
        assert_eq!(h.query_param("nope"), None);
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%e2%98%83"), "☃");
    }

    #[test]
    fn refusals_have_statuses() {
        let post = GOOD.replacen("GET", "POST", 1);
        assert_eq!(accept_upgrade(&head(&post)).unwrap_err().status, 405);
        let plain = "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(accept_upgrade(&head(plain)).unwrap_err().status, 426);
        let v8 = GOOD.replace("Version: 13", "Version: 8");
        let e = accept_upgrade(&head(&v8)).unwrap_err();
        assert_eq!(e.status, 426);
        assert!(String::from_utf8(e.response())
            .unwrap()
            .contains("Sec-WebSocket-Version: 13"));
        let badkey = GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(accept_upgrade(&head(&badkey)).unwrap_err().status, 400);
    }
}
