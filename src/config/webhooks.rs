//! `[webhooks]`: events sent to the application's backend (see `runtime::webhook` and
//! docs/PROTOCOL.md, "Webhooks").

use std::time::Duration;

use crate::proto::pattern::Pattern;
pub use crate::proto::webhook::{EventKind, EventSet};

/// Where and how webhook events are sent. Off while `url` is `None`. `Debug` masks the secret.
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    /// The receiver, `http://host[:port]/path` (plain HTTP/1.1; put a TLS proxy in front for
    /// https). `None`: no events are produced at all.
    pub url: Option<String>,
    /// The HMAC-SHA256 key of the `ringhub-signature` header.
    pub secret: String,
    /// The event types sent (default: all).
    pub events: EventSet,
    /// Topic patterns whose client publications are sent as `publication` events (default
    /// none).
    pub topics: Vec<String>,
    /// Most events per request.
    pub batch_size: usize,
    /// Time a request may take before it counts as failed.
    pub timeout: Duration,
    /// The first retry's wait (doubled per failure, with jitter).
    pub retry_min: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
    /// Events still undelivered this long after they happened are dropped and counted as
    /// dead letters.
    pub dead_letter_after: Duration,
    /// How long a claimed batch stays the claimer's before another sender (another node in a
    /// cluster) may take it over; longer than `timeout`.
    pub lease: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"***")
            .field("events", &self.events)
            .field("topics", &self.topics)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("retry_min", &self.retry_min)
            .field("retry_max", &self.retry_max)
            .field("dead_letter_after", &self.dead_letter_after)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: String::new(),
            events: EventSet::all(),
            topics: Vec::new(),
            batch_size: 100,
            timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            dead_letter_after: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(60),
        }
    }
}

impl WebhookConfig {
    /// Whether events of kind `k` are produced.
    pub fn wants(&self, k: EventKind) -> bool {
        self.url.is_some() && self.events.contains(k)
    }

    /// Checks ranges and the URL.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else { return Ok(()) };
        let uri: http_uri::Uri = url
            .parse()
            .map_err(|e| format!("webhooks url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "webhooks url {url:?}: expected http://host[:port]/path"
            ));
        }
        if self.secret.is_empty() {
            return Err("webhooks secret must be set when webhooks url is".into());
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err("webhooks batch_size must be between 1 and 10000".into());
        }
        if self.timeout.is_zero() || self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(
                "webhooks timeout and retry_min must be positive, retry_max at least retry_min"
                    .into(),
            );
        }
        if self.lease <= self.timeout {
            return Err("webhooks lease must be longer than timeout".into());
        }
        for t in &self.topics {
            Pattern::parse(t).map_err(|e| format!("webhooks topics {t:?}: {e}"))?;
        }
        Ok(())
    }
}

/// The `http` crate's URI type, as hyper re-exports it.
mod http_uri {
    pub use hyper::Uri;
}
