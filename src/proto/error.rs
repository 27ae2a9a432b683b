//! Error codes on the wire and the error types of the library's layers.

use std::fmt;

use thiserror::Error;

/// A stable error code sent to clients in `error` envelopes (`data.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Invalid JSON, missing or invalid fields, or a binary frame on `/ws`.
    BadRequest,
    /// No handler pattern matches the topic.
    HandlerNotFound,
    /// The connection may not do this.
    Forbidden,
    /// The connection sends faster than its limit allows.
    RateLimited,
    /// The server failed; the message says why.
    Internal,
    /// The feature is not enabled for this topic (no history, no presence), or a backend it
    /// needs is down.
    NotAvailable,
    /// A request asks for more than the server gives at once.
    TooMany,
    /// The application's backend answered a proxy call with something other than a valid
    /// answer (an HTTP error status, a body that is not the documented JSON).
    ProxyError,
}

impl ErrorCode {
    /// Every code, in a fixed order (for metrics).
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::HandlerNotFound,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::NotAvailable,
        ErrorCode::TooMany,
        ErrorCode::ProxyError,
    ];

    /// The code's wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::HandlerNotFound => "handler_not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::NotAvailable => "not_available",
            ErrorCode::TooMany => "too_many",
            ErrorCode::ProxyError => "proxy_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a handler or middleware returns on failure: sent to the client as an `error` envelope
/// (with the request's `id` if it had one) and counted in the shard's error counter.
///
/// Any `std::error::Error` converts into it with `?` (as code `internal`), like `anyhow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The wire code.
    pub code: ErrorCode,
    /// A human-readable explanation for the client.
    pub message: String,
}

impl HandlerError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match clamp_message(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(m) => m,
        };
        Self { code, message }
    }
    /// A `bad_request` error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// A `forbidden` error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    /// An `internal` error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::internal(e.to_string())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Longest part of a peer's input that an error message quotes, in characters.
pub const MAX_QUOTE: usize = 64;

/// Longest error message sent to a peer, in bytes (longer ones are cut with `…`).
pub const MAX_ERROR_MESSAGE: usize = 512;

/// Quotes peer input for an error message: at most [`MAX_QUOTE`] characters, in double quotes,
/// with control characters, quotes and backslashes escaped, and `…` plus the full length in bytes
/// when cut. A 1 MB topic thus costs the error reply about 80 bytes, not 1 MB.
///
/// ```
/// assert_eq!(ringhub::error::quote("a\"b\n"), r#""a\"b\n""#);
/// let q = ringhub::error::quote(&"x".repeat(1000));
/// assert!(q.starts_with("\"xxxx") && q.ends_with("…\" (1000 bytes)"), "{q}");
/// ```
pub fn quote(input: &str) -> String {
    let mut out = String::with_capacity(MAX_QUOTE + 24);
    out.push('"');
    let mut chars = input.char_indices();
    let mut cut = None;
    for (n, (at, c)) in chars.by_ref().enumerate() {
        if n == MAX_QUOTE {
            cut = Some(at);
            break;
        }
        out.extend(c.escape_debug());
    }
    match cut {
        Some(_) => {
            out.push('…');
            out.push_str(&format!("\" ({} bytes)", input.len()));
        }
        None => out.push('"'),
    }
    out
}

/// Cuts a parser's message (serde's, which quotes offending values such as
/// `invalid type: string "…"`) to at most `2 * MAX_QUOTE` characters, ending in `…` when cut.
pub fn shorten(message: &str) -> String {
    match message.char_indices().nth(2 * MAX_QUOTE) {
        None => message.to_string(),
        Some((at, _)) => format!("{}…", &message[..at]),
    }
}

/// Cuts `message` to at most [`MAX_ERROR_MESSAGE`] bytes (on a character boundary, ending in `…`).
pub fn clamp_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message.into();
    }
    let mut end = MAX_ERROR_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end]).into()
}

/// What a handler returns.
pub type HandlerResult = Result<(), HandlerError>;

/// Errors starting or running the server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding or configuring a listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--io uring` was forced but io_uring is not available.
    #[error("io_uring is not available: {0}")]
    UringUnavailable(std::io::Error),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A thread could not be spawned.
    #[error("cannot start thread: {0}")]
    Thread(std::io::Error),
    /// The store could not be opened (the store layer's error, as text: this layer sits below
    /// the store).
    #[error("cannot open the store: {0}")]
    Store(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_truncates_peer_input() {
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("chat:a"), "\"chat:a\"");
        assert_eq!(quote("a\u{0}\r\n\"\\"), r#""a\0\r\n\"\\""#);
        let big = "é".repeat(1 << 19); // 1 MiB
        let q = quote(&big);
        assert!(q.len() < 200, "{} bytes", q.len());
        assert_eq!(q.chars().filter(|c| *c == 'é').count(), MAX_QUOTE);
        assert!(q.ends_with("…\" (1048576 bytes)"), "{q}");
        // Exactly MAX_QUOTE characters is not cut.
        let exact = "y".repeat(MAX_QUOTE);
        assert_eq!(quote(&exact), format!("\"{exact}\""));
    }

    #[test]
    fn parser_messages_are_shortened() {
        assert_eq!(shorten("expected value"), "expected value");
        let long = format!("invalid type: string \"{}\"", "z".repeat(5000));
        let s = shorten(&long);
        assert_eq!(s.chars().count(), 2 * MAX_QUOTE + 1);
        assert!(s.ends_with('…'));
        let e: serde_json::Error =
            serde_json::from_str::<u64>(&format!("\"{}\"", "q".repeat(9999))).unwrap_err();
        assert!(shorten(&e.to_string()).len() < 200);
    }

    #[test]
    fn handler_error_messages_are_bounded() {
        let e = HandlerError::bad_request("☃".repeat(10_000));
        assert!(e.message.len() <= MAX_ERROR_MESSAGE, "{}", e.message.len());
        assert!(e.message.ends_with('…'));
        assert_eq!(HandlerError::forbidden("no").message, "no");
    }
}
