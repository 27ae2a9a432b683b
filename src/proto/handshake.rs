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
    /// The HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The validated `Content-Length`: every such header is plain decimal digits and all agree
    /// (else [`parse_head`] refused the request with 400). `None` when there is none.
    pub content_length: Option<usize>,
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

    /// Every value of the headers named `name` (case-insensitive), as raw bytes.
    pub(crate) fn header_values<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the client asks to keep the connection open after the response (RFC 9112 §9.3):
    /// HTTP/1.1 unless it sent `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub fn wants_keep_alive(&self) -> bool {
        if self.version >= 1 {
            !self.header_has_token("Connection", "close")
        } else {
            self.header_has_token("Connection", "keep-alive")
        }
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

/// A whole HTTP/1.1 response: status line, `Content-Type`, `Content-Length`, `extra` header
/// lines and `connection` (each a whole line ending in CRLF, or empty), then `body`. The one
/// serialiser of API answers, whether the API thread or a shard (a publish it answers itself)
/// wrote them, so both look alike byte for byte.
pub(crate) fn response_bytes(
    status: u16,
    content_type: &str,
    extra: &str,
    connection: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}{connection}\r\n",
        reason(status),
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
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
            let mut head = RequestHead {
                method: req.method.unwrap_or("").to_string(),
                path,
                query,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                version: req.version.unwrap_or(1),
                content_length: None,
            };
            head.content_length = content_length(&head)?;
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

/// The request's `Content-Length` (RFC 9112 §6.3): each header must be `1*DIGIT` that fits a
/// `usize`, and several must agree; anything else is a 400, since a proxy and this server could
/// otherwise disagree on where the body ends (request smuggling).
fn content_length(head: &RequestHead) -> Result<Option<usize>, HttpError> {
    let mut found: Option<usize> = None;
    for v in head.header_values("Content-Length") {
        let v = v.trim_ascii();
        let n = (!v.is_empty() && v.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| HttpError::new(400, "invalid Content-Length"))?;
        match found {
            Some(m) if m != n => {
                return Err(HttpError::new(400, "conflicting Content-Length headers"))
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// The validated `topics=a,b` of an SSE request: `GET`, at least one topic, each a valid pattern,
/// and at most `max_subscriptions` distinct ones (the limit a WebSocket connection has too) —
/// more is refused with 400 naming the limit rather than silently subscribing to the first ones.
/// Repeated topics count once.
pub(crate) fn sse_topics(
    head: &RequestHead,
    max_subscriptions: usize,
) -> Result<Vec<String>, HttpError> {
    if head.method != "GET" {
        return Err(HttpError::new(405, "SSE requires GET"));
    }
    let mut topics: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let given = head.query_param("topics").unwrap_or_default();
    for t in given.split(',').filter(|s| !s.is_empty()) {
        crate::proto::pattern::Pattern::parse(t).map_err(|e| {
            HttpError::new(400, format!("topic {}: {e}", crate::proto::error::quote(t)))
        })?;
        if seen.insert(t) {
            if topics.len() == max_subscriptions {
                return Err(HttpError::new(
                    400,
                    format!(
                        "too many topics: at most {max_subscriptions} per stream (limits.max_subscriptions)"
                    ),
                ));
            }
            topics.push(t.to_string());
        }
    }
    if topics.is_empty() {
        return Err(HttpError::new(400, "give topics=a,b"));
    }
    Ok(topics)
}

/// Validates a WebSocket upgrade and returns the `101 Switching Protocols` response, with no
/// extension: a permessage-deflate agreement adds its header ([`crate::proto::deflate`]).
pub(crate) fn accept_upgrade(req: &RequestHead) -> Result<Vec<u8>, HttpError> {
    if req.method != "GET" {
        return Err(HttpError::new(405, "WebSocket upgrade requires GET"));
    }
    // RFC 6455 §4.1: "The method of the request MUST be GET, and the HTTP version MUST be at
    // least 1.1."
    if req.version < 1 {
        return Err(HttpError::new(400, "WebSocket upgrade requires HTTP/1.1"));
    }
    if !req.header_has_token("Upgrade", "websocket")
        || !req.header_has_token("Connection", "upgrade")
    {
        return Err(HttpError::new(
            426,
            "this endpoint speaks WebSocket: send Upgrade: websocket",
        ));
    }
    // Every Sec-WebSocket-Version header (and every comma-separated entry) must say 13.
    let mut versions = req
        .header_values("Sec-WebSocket-Version")
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .peekable();
    if versions.peek().is_none() || !versions.all(|v| v == b"13") {
        return Err(HttpError::new(
            426,
            "unsupported Sec-WebSocket-Version (need 13)",
        ));
    }
    if req.header_values("Sec-WebSocket-Key").count() > 1 {
        return Err(HttpError::new(400, "more than one Sec-WebSocket-Key"));
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

    #[test]
    fn sse_topics_are_capped_at_the_subscription_limit() {
        let sse = |q: &str| head(&format!("GET /sse?{q} HTTP/1.1\r\n\r\n"));
        assert_eq!(
            sse_topics(&sse("topics=a,b*,a,,b*"), 2).unwrap(),
            ["a", "b*"],
            "repeats count once"
        );
        let many: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
        let e = sse_topics(&sse(&format!("topics={}", many.join(","))), 1000).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("at most 1000"), "{}", e.message);
        assert!(e.message.contains("max_subscriptions"), "{}", e.message);
        assert_eq!(
            sse_topics(&sse(&format!("topics={}", many[..1000].join(","))), 1000)
                .unwrap()
                .len(),
            1000
        );
        assert_eq!(sse_topics(&sse("topics="), 10).unwrap_err().status, 400);
        let long = "x".repeat(300);
        let e = sse_topics(&sse(&format!("topics={long}")), 10).unwrap_err();
        assert!(e.message.len() < 200, "quotes a prefix only: {}", e.message);
        let mut post = sse("topics=a");
        post.method = "POST".into();
        assert_eq!(sse_topics(&post, 10).unwrap_err().status, 405);
    }

    #[test]
    fn upgrade_over_http_1_0_is_refused() {
        let h = head(&GOOD.replacen("HTTP/1.1", "HTTP/1.0", 1));
        assert_eq!(h.version, 0);
        let e = accept_upgrade(&h).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("HTTP/1.1"), "{}", e.message);
        assert_eq!(head(GOOD).version, 1);
    }

    #[test]
    fn duplicate_key_and_conflicting_versions_are_refused() {
        let extra = |h: &str| GOOD.replacen("\r\n\r\n", &format!("\r\n{h}\r\n\r\n"), 1);
        let two_keys = extra("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==");
        let e = accept_upgrade(&head(&two_keys)).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "more than one Sec-WebSocket-Key")
        );
        // Even the same key twice is ambiguous.
        let same = extra("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept_upgrade(&head(&same)).unwrap_err().status, 400);
        for bad in [
            "Sec-WebSocket-Version: 8",
            "Sec-WebSocket-Version: 13, 8",
            "Sec-WebSocket-Version: ",
        ] {
            let e = accept_upgrade(&head(&extra(bad))).unwrap_err();
            assert_eq!(e.status, 426, "{bad}");
        }
        // A repeated identical version is harmless.
        assert!(accept_upgrade(&head(&extra("Sec-WebSocket-Version: 13"))).is_ok());
    }

    #[test]
    fn content_length_is_validated_and_exposed() {
        let req = |cl: &str| format!("POST /api/publish HTTP/1.1\r\nHost: a\r\n{cl}\r\n");
        let ok = |cl: &str| {
            parse_head(req(cl).as_bytes(), MAX_HEAD)
                .unwrap()
                .unwrap()
                .0
                .content_length
        };
        assert_eq!(ok(""), None);
        assert_eq!(ok("Content-Length: 25\r\n"), Some(25));
        assert_eq!(ok("Content-Length: 0\r\n"), Some(0));
        assert_eq!(ok("content-length: 7\r\nContent-Length: 7\r\n"), Some(7));
        for bad in [
            "Content-Length: +25\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 2 5\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: \r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 99999999999999999999999999\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5\r\nContent-Length: x\r\n",
        ] {
            let e = parse_head(req(bad).as_bytes(), MAX_HEAD).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
            assert!(e.message.contains("Content-Length"), "{}", e.message);
        }
    }
}
