//! Upgrade-time and per-action security checks, sans-IO: the origin allowlist ([`OriginPolicy`]),
//! IP allow/deny lists ([`IpFilter`]), the errors of topic permissions (which are
//! [`crate::policy::permissions`]), and connection counting ([`ConnLimits`], kept in [`crate::policy::ratelimit`] with the
//! other limits and re-exported here).

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

pub use crate::policy::ratelimit::{ConnLimits, ConnPermit};
use crate::proto::pattern::PatternError;

/// Prefix of the private per-user topics: `user:<id>` belongs to the user whose id is `<id>`.
pub const PRIVATE_PREFIX: &str = "user:";

/// A refused configuration entry or a refused action.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecurityError {
    /// A permission pattern or a requested topic/pattern is malformed.
    #[error(
        "invalid topic or pattern {}: {source}",
        crate::proto::error::quote(pattern)
    )]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it is malformed.
        source: PatternError,
    },
    /// An `allowed_origins` entry is malformed.
    #[error("invalid origin {entry:?}: {reason}")]
    InvalidOrigin {
        /// The entry as given.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No granted pattern covers the topic or pattern (`forbidden`).
    #[error("not permitted")]
    NotGranted,
    /// The topic is another user's private `user:<id>` topic, or a pattern that could match one
    /// (`forbidden`).
    #[error("private user topic")]
    PrivateTopic,
}

impl SecurityError {
    /// The HTTP status for refusing an upgrade with this error: always 403. (In a message
    /// handler, answer a `forbidden` error with the request's id instead.)
    pub fn http_status(&self) -> u16 {
        403
    }
}

/// One `allowed_origins` entry.
///
/// - `scheme://host[:port]` (e.g. `https://app.example.com`): the `Origin` must have this
///   scheme, host and port exactly (default ports 80/443 are the same as none).
/// - `scheme://*.example.com[:port]`: as above, for any subdomain (at any depth) of
///   `example.com`, not `example.com` itself.
/// - `example.com` or `*.example.com` without a scheme: that host (or any subdomain) with any
///   scheme and any port.
///
/// Comparison is case-insensitive; a trailing `/` in the entry is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: Option<String>,
    /// The host, or for a wildcard the domain after `*.`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// Splits `scheme://authority` into (scheme, host, port), lowercased, default ports removed.
fn split_origin(s: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = match s.split_once("://") {
        Some((sc, rest)) => (Some(sc.to_string()), rest.to_string()),
        None => (None, s),
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.clone(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let default = match scheme.as_deref() {
        Some("http" | "ws") => Some(80),
        Some("https" | "wss") => Some(443),
        _ => None,
    };
    let port = if port.is_some() && port == default {
        None
    } else {
        port
    };
    (!host.is_empty()).then_some((scheme, host, port))
}

impl OriginPattern {
    /// Parses an entry (see the type's documentation for the forms).
    pub fn parse(entry: &str) -> Result<Self, SecurityError> {
        let bad = |reason| SecurityError::InvalidOrigin {
            entry: entry.to_string(),
            reason,
        };
        if entry.trim() == "*" {
            return Err(bad("'*' is not a pattern: an empty list allows any origin"));
        }
        let (scheme, host, port) = split_origin(entry)
            .ok_or_else(|| bad("expected scheme://host[:port] or a host such as *.example.com"))?;
        if scheme.is_none() && port.is_some() {
            return Err(bad("a port needs a scheme: write https://host:port"));
        }
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(domain) => (domain.to_string(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') || host.starts_with('.') {
            return Err(bad("'*' may only start a host, as in *.example.com"));
        }
        Ok(Self {
            scheme,
            host,
            wildcard,
            port,
        })
    }

    /// Whether the `Origin` header value `origin` matches this entry.
    pub fn matches(&self, origin: &str) -> bool {
        let Some((Some(scheme), host, port)) = split_origin(origin) else {
            return false;
        };
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(self.host.as_str())
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        };
        host_ok
            && match &self.scheme {
                Some(s) => *s == scheme && self.port == port,
                None => true,
            }
    }
}

/// The `allowed_origins` allowlist, checked at the upgrade (refuse with 403 when
/// [`OriginPolicy::allows`] is false) against cross-site WebSocket hijacking.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    patterns: Vec<OriginPattern>,
}

impl OriginPolicy {
    /// Builds the policy from `security.allowed_origins` entries.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, SecurityError> {
        let patterns = entries
            .iter()
            .map(|e| OriginPattern::parse(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether a request with this `Origin` header may upgrade. An empty list allows any
    /// origin. A request without `Origin` is allowed: browsers always send it on WebSocket
    /// upgrades, so its absence means a non-browser client, which this check cannot constrain.
    /// `Origin: null` (sandboxed pages, files) only passes an empty list.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.patterns.is_empty() => true,
            None => true,
            Some(o) => self.patterns.iter().any(|p| p.matches(o)),
        }
    }

    /// Whether the list is empty (any origin allowed).
    pub fn is_open(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// IP allow and deny lists (CIDR). Deny wins; an empty allow list allows every address.
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are checked as IPv4.
#[derive(Debug, Clone, Default)]
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpFilter {
    /// Builds the filter from `security.allow_ips` and `security.deny_ips`.
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> Self {
        Self {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
        }
    }

    /// Whether a client at `ip` may connect (refuse with 403 otherwise). Cost: a linear scan
    /// of both lists, once per connection.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns() {
        let p = OriginPolicy::new(&[
            "https://app.example.com",
            "*.example.org",
            "http://localhost:3000",
            "https://*.corp.io",
        ])
        .expect("valid");
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("HTTPS://App.Example.com:443")));
        assert!(!p.allows(Some("http://app.example.com")));
        assert!(!p.allows(Some("https://app.example.com:8443")));
        assert!(!p.allows(Some("https://app.example.com.evil.net")));
        assert!(p.allows(Some("http://a.example.org:8080")));
        assert!(p.allows(Some("https://a.b.example.org")));
        assert!(!p.allows(Some("https://example.org")));
        assert!(!p.allows(Some("https://badexample.org")));
        assert!(p.allows(Some("http://localhost:3000")));
        assert!(!p.allows(Some("http://localhost:3001")));
        assert!(p.allows(Some("https://x.corp.io")));
        assert!(!p.allows(Some("http://x.corp.io")));
        assert!(!p.allows(Some("null")));
        assert!(p.allows(None));
        assert!(OriginPolicy::new::<&str>(&[])
            .expect("empty")
            .allows(Some("https://anything")));
        for bad in [
            "*",
            "https://",
            "a.*.com",
            "https://x.com/path",
            "x.com:80",
            "**.x.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_filter_deny_wins_and_empty_allow_is_all() {
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let f = IpFilter::new(
            &[net("10.0.0.0/8"), net("2001:db8::/32")],
            &[net("10.1.0.0/16")],
        );
        assert!(f.allows(ip("10.2.3.4")));
        assert!(!f.allows(ip("10.1.3.4")));
        assert!(!f.allows(ip("192.168.1.1")));
        assert!(f.allows(ip("2001:db8::1")));
        assert!(f.allows(ip("::ffff:10.2.3.4")));
        assert!(!f.allows(ip("::ffff:10.1.3.4")));
        let open = IpFilter::new(&[], &[net("127.0.0.0/8")]);
        assert!(open.allows(ip("8.8.8.8")));
        assert!(!open.allows(ip("127.0.0.1")));
    }
}
