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
}

impl ErrorCode {
    /// Every code, in a fixed order (for metrics).
    pub const ALL: [ErrorCode; 5] = [
        ErrorCode::BadRequest,
        ErrorCode::HandlerNotFound,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
    ];

    /// The code's wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::HandlerNotFound => "handler_not_found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
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
        Self {
            code,
            message: message.into(),
        }
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
}
