//! The backend proxies (`[proxy]`, and `proxy` in a `[[topics]]` entry): which HTTP endpoint of
//! the application's backend decides a connect, a refresh, a subscribe, a publish or an RPC.
//!
//! The shard asks (`shard::proxy`), the runtime calls the backend; this module only
//! says where and how.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::pattern::Pattern;

/// What a proxy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// A new connection: its user, expiry, server-side topics, metadata — or a refusal.
    Connect,
    /// A connection whose `expire_at` passed: extended, or disconnected.
    Refresh,
    /// A client subscribe: allowed (with data for the client) or forbidden.
    Subscribe,
    /// A client publication: allowed, forbidden, or its data replaced.
    Publish,
    /// A client request (`event: "rpc"`): the backend's answer is the reply.
    Rpc,
}

impl ProxyKind {
    /// Every kind, in a fixed order (for metrics).
    pub const ALL: [ProxyKind; 5] = [
        ProxyKind::Connect,
        ProxyKind::Refresh,
        ProxyKind::Subscribe,
        ProxyKind::Publish,
        ProxyKind::Rpc,
    ];

    /// The kind's name in settings and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Connect => "connect",
            ProxyKind::Refresh => "refresh",
            ProxyKind::Subscribe => "subscribe",
            ProxyKind::Publish => "publish",
            ProxyKind::Rpc => "rpc",
        }
    }

    /// The kind's index in [`ProxyKind::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What happens when the backend cannot be reached or does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDown {
    /// Refuse: `not_available` to the client (a connect is closed with 4503).
    #[default]
    Refuse,
    /// Go on as if no proxy were configured (a connect keeps its token's user, a subscribe or a
    /// publication goes through, an RPC still fails: it has no answer without the backend).
    Allow,
}

/// One backend endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// `http://host:port/path`, called with `POST` and a JSON body.
    pub url: String,
    /// How long a call may take, waiting for a free slot included (default 1 s).
    pub timeout: Duration,
    /// Request headers of the client's connect request passed to the backend, lower case (e.g.
    /// `cookie`, `authorization`). Only the connect proxy sees the client's HTTP request.
    pub headers: Vec<String>,
    /// What a failed or late call means.
    pub on_down: OnDown,
    /// Calls in flight to this endpoint at most; more wait for a slot within their timeout.
    pub max_concurrency: usize,
}

impl ProxyEndpoint {
    /// An endpoint at `url` with the defaults (1 s, no headers, refuse when down, 64 calls).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
            headers: Vec::new(),
            on_down: OnDown::Refuse,
            max_concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Default [`ProxyEndpoint::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`ProxyEndpoint::max_concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 64;

/// The proxies of one `[[topics]]` pattern: they replace the global ones for its topics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicProxies {
    /// Exact topic or `prefix*`, as in `[[topics]]`.
    pub pattern: String,
    /// Subscribe proxy for these topics.
    pub subscribe: Option<Arc<ProxyEndpoint>>,
    /// Publish proxy for these topics.
    pub publish: Option<Arc<ProxyEndpoint>>,
    /// RPC proxy for these methods (an RPC's `topic` is its method).
    pub rpc: Option<Arc<ProxyEndpoint>>,
}

/// Every proxy (`[proxy]`); none by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    /// Connect proxy (WebSocket and SSE clients).
    pub connect: Option<Arc<ProxyEndpoint>>,
    /// Refresh proxy, called when a connection's `expire_at` passes.
    pub refresh: Option<Arc<ProxyEndpoint>>,
    /// Subscribe proxy for topics no `[[topics]]` proxy covers.
    pub subscribe: Option<Arc<ProxyEndpoint>>,
    /// Publish proxy for topics no `[[topics]]` proxy covers.
    pub publish: Option<Arc<ProxyEndpoint>>,
    /// RPC proxy for methods no `[[topics]]` proxy covers.
    pub rpc: Option<Arc<ProxyEndpoint>>,
    /// Per-pattern proxies (from `[[topics]]` entries with a `proxy` table).
    pub topics: Vec<TopicProxies>,
}

impl ProxyConfig {
    /// Whether any proxy is configured (the shard's fast path skips everything else).
    pub fn any(&self) -> bool {
        self.connect.is_some()
            || self.refresh.is_some()
            || self.subscribe.is_some()
            || self.publish.is_some()
            || self.rpc.is_some()
            || !self.topics.is_empty()
    }

    /// The endpoint deciding `kind` for `topic`: the longest matching `[[topics]]` pattern that
    /// sets one (exact beats wildcard), else the global one. `None`: no proxy, go on.
    pub fn for_topic(&self, kind: ProxyKind, topic: &str) -> Option<&Arc<ProxyEndpoint>> {
        fn pick(t: &TopicProxies, kind: ProxyKind) -> Option<&Arc<ProxyEndpoint>> {
            match kind {
                ProxyKind::Subscribe => t.subscribe.as_ref(),
                ProxyKind::Publish => t.publish.as_ref(),
                ProxyKind::Rpc => t.rpc.as_ref(),
                _ => None,
            }
        }
        let mut best: Option<(usize, &Arc<ProxyEndpoint>)> = None;
        for t in &self.topics {
            let Some(ep) = pick(t, kind) else { continue };
            let rank = match t.pattern.strip_suffix('*') {
                Some(prefix) if topic.starts_with(prefix) => prefix.len(),
                Some(_) => continue,
                None if t.pattern == topic => usize::MAX,
                None => continue,
            };
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, ep));
            }
        }
        if let Some((_, ep)) = best {
            return Some(ep);
        }
        match kind {
            ProxyKind::Connect => self.connect.as_ref(),
            ProxyKind::Refresh => self.refresh.as_ref(),
            ProxyKind::Subscribe => self.subscribe.as_ref(),
            ProxyKind::Publish => self.publish.as_ref(),
            ProxyKind::Rpc => self.rpc.as_ref(),
        }
    }

    /// Checks the URLs and patterns.
    pub fn validate(&self) -> Result<(), String> {
        let globals = [
            &self.connect,
            &self.refresh,
            &self.subscribe,
            &self.publish,
            &self.rpc,
        ];
        let per_topic = self
            .topics
            .iter()
            .flat_map(|t| [&t.subscribe, &t.publish, &t.rpc]);
        for ep in globals.into_iter().chain(per_topic).flatten() {
            check_url(&ep.url)?;
            if ep.timeout.is_zero() || ep.max_concurrency == 0 {
                return Err(format!(
                    "proxy {}: timeout and max_concurrency must be > 0",
                    ep.url
                ));
            }
        }
        for t in &self.topics {
            Pattern::parse(&t.pattern)
                .map_err(|e| format!("proxy pattern '{}': {e}", t.pattern))?;
        }
        Ok(())
    }
}

/// Checks that `url` is `http://host[:port][/path]` (the client speaks plain HTTP/1.1).
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || rest
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("{url:?} has no host or has spaces"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_pattern_then_global() {
        let ep = |u: &str| Some(Arc::new(ProxyEndpoint::new(u)));
        let c = ProxyConfig {
            subscribe: ep("http://g/s"),
            topics: vec![
                TopicProxies {
                    pattern: "project:*".into(),
                    subscribe: ep("http://p/s"),
                    ..Default::default()
                },
                TopicProxies {
                    pattern: "project:open".into(),
                    publish: ep("http://o/p"),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let url = |k, t| c.for_topic(k, t).map(|e| e.url.as_str());
        assert_eq!(url(ProxyKind::Subscribe, "project:1"), Some("http://p/s"));
        // The exact entry sets no subscribe proxy: the pattern's applies.
        assert_eq!(
            url(ProxyKind::Subscribe, "project:open"),
            Some("http://p/s")
        );
        assert_eq!(url(ProxyKind::Publish, "project:open"), Some("http://o/p"));
        assert_eq!(url(ProxyKind::Publish, "project:2"), None);
        assert_eq!(url(ProxyKind::Subscribe, "chat:1"), Some("http://g/s"));
        assert!(c.validate().is_ok());
        assert!(check_url("https://x/").is_err());
        assert!(check_url("http:///p").is_err());
    }
}
