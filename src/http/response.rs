//! What every endpoint answers with: the HTTP [`Response`], and [`ApiError`], an operation's
//! failure as a status and a message (also what the library's calls return).

use serde_json::{json, Value};

use crate::proto::error::ErrorCode;
use crate::store::StoreError;

/// An HTTP response.
pub(crate) struct Response {
    pub status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// Further header lines, each ending in `\r\n`.
    pub(crate) headers: String,
}

impl Response {
    pub(crate) fn ok(data: Value) -> Self {
        Self::json(200, json!({"success": true, "data": data}))
    }
    /// A failure: the message for people, and the stable code of its status for programs.
    pub(crate) fn err(status: u16, error: &str) -> Self {
        Self::json(
            status,
            json!({"success": false, "code": code_for(status), "error": error}),
        )
    }
    pub(crate) fn json(status: u16, v: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            headers: String::new(),
        }
    }
    /// Serialises status line, headers and body. `keep` is how the connection continues:
    /// closed (`Connection: close`), or kept open — said explicitly to an HTTP/1.0 client, for
    /// which closing is the default.
    pub(crate) fn into_bytes(self, keep: crate::shard::shared::KeepAlive) -> Vec<u8> {
        crate::proto::handshake::response_bytes(
            self.status,
            self.content_type,
            &self.headers,
            keep.header(),
            &self.body,
        )
    }
}

/// The stable string code the API answers with for `status` (`"code"` beside `"error"`): the
/// WebSocket protocol's [`ErrorCode`] names where one fits, so a client handles both alike.
pub(crate) fn code_for(status: u16) -> &'static str {
    match status {
        400 | 411 | 413 | 431 => ErrorCode::BadRequest.as_str(),
        401 => "unauthorized",
        403 => ErrorCode::Forbidden.as_str(),
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        412 => "skipped",
        429 => ErrorCode::RateLimited.as_str(),
        503 => ErrorCode::NotAvailable.as_str(),
        _ => ErrorCode::Internal.as_str(),
    }
}

/// An operation's failure: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status the API answers with.
    pub status: u16,
    /// What went wrong.
    pub message: String,
    /// The stable string code (`"code"` in the API's answer): the handler's [`ErrorCode`] when
    /// a handler failed, else the one of `status`.
    pub code: &'static str,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: code_for(status),
        }
    }
    pub(crate) fn bad(e: impl std::fmt::Display) -> Self {
        Self::new(400, format!("invalid request: {e}"))
    }
    pub(crate) fn from_handler(e: crate::HandlerError) -> Self {
        let status = match e.code {
            ErrorCode::TooMany | ErrorCode::RateLimited => 429,
            ErrorCode::NotAvailable => 503,
            ErrorCode::BadRequest => 400,
            ErrorCode::Forbidden => 403,
            _ => 500,
        };
        Self {
            code: e.code.as_str(),
            ..Self::new(status, e.message)
        }
    }
    pub(crate) fn from_store(e: StoreError) -> Self {
        let status = if matches!(e, StoreError::Unavailable(_) | StoreError::Io(_)) {
            503
        } else {
            500
        };
        Self::new(status, e.to_string())
    }
}

/// Turns an operation's result into the API's JSON answer.
pub(crate) fn respond(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => Response::ok(v),
        Err(e) => Response::json(
            e.status,
            json!({"success": false, "code": e.code, "error": e.message}),
        ),
    }
}
