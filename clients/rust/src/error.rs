//! Errors: the server's stable codes plus what can go wrong on the client's side.

use std::fmt;

/// The server's stable error codes (`data.code` of an `error` frame).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Invalid JSON, missing or invalid fields, bad pattern, `data` a handler could not read.
    BadRequest,
    /// No handler pattern matches the topic.
    HandlerNotFound,
    /// Not permitted (permissions, private `user:` topic, middleware, subscription limit).
    Forbidden,
    /// The connection or its user sends too fast.
    RateLimited,
    /// The server failed.
    Internal,
    /// The feature is not enabled for the topic, or a backend it needs is down (v2).
    NotAvailable,
    /// Too many of something (v2).
    TooMany,
    /// A code this client does not know.
    Other(String),
}

impl ErrorCode {
    /// Parses a wire code.
    pub fn parse(code: &str) -> Self {
        match code {
            "bad_request" => Self::BadRequest,
            "handler_not_found" => Self::HandlerNotFound,
            "forbidden" => Self::Forbidden,
            "rate_limited" => Self::RateLimited,
            "internal" => Self::Internal,
            "not_available" => Self::NotAvailable,
            "too_many" => Self::TooMany,
            other => Self::Other(other.to_string()),
        }
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadRequest => "bad_request",
            Self::HandlerNotFound => "handler_not_found",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::NotAvailable => "not_available",
            Self::TooMany => "too_many",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a client call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an `error` frame.
    #[error("{code}: {message}")]
    Server {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable explanation (may change between server versions).
        message: String,
    },
    /// No answer within [`Options::request_timeout`](crate::Options::request_timeout).
    #[error("request timed out")]
    Timeout,
    /// The connection dropped before the answer came (the request may or may not have taken
    /// effect), or a fire-and-forget call was made while not connected.
    #[error("disconnected from the server")]
    Disconnected,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// The first connection attempt failed (bad URL, refused, HTTP error such as 401).
    #[error("connect: {0}")]
    Connect(String),
    /// The token provider failed.
    #[error("token provider: {0}")]
    Token(String),
    /// This client already has a [`Subscription`](crate::Subscription) to the topic.
    #[error("already subscribed to {0}")]
    AlreadySubscribed(String),
    /// A value could not be serialised, or the server's answer had an unexpected shape.
    #[error("json: {0}")]
    Json(String),
}

impl Error {
    /// The server's code, when the server refused.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn server(code: &str, message: &str) -> Self {
        Error::Server {
            code: ErrorCode::parse(code),
            message: message.to_string(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [
            "bad_request",
            "handler_not_found",
            "forbidden",
            "rate_limited",
            "internal",
            "not_available",
            "too_many",
            "future_code",
        ] {
            assert_eq!(ErrorCode::parse(c).as_str(), c);
        }
        let e = Error::server("forbidden", "no");
        assert_eq!(e.code(), Some(&ErrorCode::Forbidden));
        assert_eq!(e.to_string(), "forbidden: no");
    }
}
