//! Connection options: token, reconnect backoff, timeouts, acknowledgement mode.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// What a token provider returns: a token, or why there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Produces a fresh token for each connection attempt (initial and every reconnect).
pub trait TokenProvider: Send + Sync + 'static {
    /// Returns the token to present (`Authorization: Bearer`), or an error message.
    fn token(&self) -> TokenFuture;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    fn token(&self) -> TokenFuture {
        Box::pin(self())
    }
}

/// Reconnect delays: exponential with full jitter — attempt `n` (from 0) waits a uniformly random
/// time in `[0, min(max, initial * factor^n)]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First ceiling (default 1 s).
    pub initial: Duration,
    /// Largest ceiling (default 5 s).
    pub max: Duration,
    /// Growth per attempt (default 2).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The ceiling of attempt `attempt` (before jitter).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self.factor.max(1.0).powi(attempt.min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }

    /// A jittered delay for attempt `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
    }
}

/// The envelope encoding on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// JSON text frames (the protocol's default).
    #[default]
    Json,
    /// MessagePack binary frames (subprotocol `ringhub.msgpack`): fewer bytes, and `data` may
    /// carry bytes (see [`msgpack::bin`](crate::msgpack::bin)). The client's API is the same.
    MessagePack,
}

/// How to connect and behave; build with [`Options::default`] and the setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// A fixed token (sent as `Authorization: Bearer`).
    pub token: Option<String>,
    /// Called before every connection attempt; wins over [`token`](Self::token).
    pub token_provider: Option<Arc<dyn TokenProvider>>,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Time a request waits for its reply (default 10 s).
    pub request_timeout: Duration,
    /// A ping is sent after this long without a frame from the server; the connection is
    /// considered dead (and re-established) after twice this long (default 25 s).
    pub ping_interval: Duration,
    /// Acknowledge durable user messages only when [`UserMessage::ack`](crate::UserMessage::ack)
    /// is called, instead of when [`Messages::recv`](crate::Messages::recv) hands them out.
    pub manual_ack: bool,
    /// The envelope encoding (default [`Format::Json`]).
    pub format: Format,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            token_provider: None,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            manual_ack: false,
            format: Format::Json,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_provider", &self.token_provider.is_some())
            .field("backoff", &self.backoff)
            .field("request_timeout", &self.request_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("manual_ack", &self.manual_ack)
            .field("format", &self.format)
            .finish()
    }
}

impl Options {
    /// Presents `token` on every connection.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Asks `provider` for a token before every connection attempt.
    ///
    /// ```
    /// let opts = ringhub_client::Options::default()
    ///     .token_provider(|| async { Ok::<_, String>("jwt".to_string()) });
    /// ```
    pub fn token_provider(mut self, provider: impl TokenProvider) -> Self {
        self.token_provider = Some(Arc::new(provider));
        self
    }

    /// Sets the reconnect backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the ping interval.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Acknowledge durable user messages by hand.
    pub fn manual_ack(mut self, manual: bool) -> Self {
        self.manual_ack = manual;
        self
    }

    /// Speaks `format` on the wire.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The token for the next connection attempt.
    pub(crate) async fn current_token(&self) -> Result<Option<String>, String> {
        match &self.token_provider {
            Some(p) => p.token().await.map(Some),
            None => Ok(self.token.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_full_jitter() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert_eq!(b.ceiling(1), Duration::from_secs(2));
        assert_eq!(b.ceiling(2), Duration::from_secs(4));
        assert_eq!(b.ceiling(3), Duration::from_secs(5));
        assert_eq!(b.ceiling(1000), Duration::from_secs(5));
        for n in 0..10 {
            assert!(b.delay(n) <= b.ceiling(n));
        }
    }
}
