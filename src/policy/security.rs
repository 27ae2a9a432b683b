//! Upgrade-time and per-action security checks, sans-IO: the origin allowlist ([`OriginPolicy`]),
//! IP allow/deny lists ([`IpFilter`]), topic permissions with private `user:<id>` topics
//! ([`Permissions`]), and connection counting ([`ConnLimits`], kept in [`crate::policy::ratelimit`] with the
//! other limits and re-exported here).

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

pub use crate::policy::ratelimit::{ConnLimits, ConnPermit};
use crate::proto::pattern::{validate_topic, Pattern, PatternError};

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

/// One granted pattern: the topic (exact) or the prefix (without its `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    text: Box<str>,
    prefix: bool,
}

impl Grant {
    fn parse(p: &str) -> Result<Self, SecurityError> {
        match Pattern::parse(p) {
            Ok(Pattern::Exact(t)) => Ok(Grant {
                text: t.into(),
                prefix: false,
            }),
            Ok(Pattern::Prefix(t)) => Ok(Grant {
                text: t.into(),
                prefix: true,
            }),
            Err(source) => Err(SecurityError::InvalidPattern {
                pattern: p.to_string(),
                source,
            }),
        }
    }
    fn pattern(&self) -> Pattern<'_> {
        if self.prefix {
            Pattern::Prefix(&self.text)
        } else {
            Pattern::Exact(&self.text)
        }
    }
    /// Whether every topic `requested` matches is matched by this grant.
    fn covers(&self, requested: Pattern<'_>) -> bool {
        match requested {
            Pattern::Exact(t) => self.pattern().matches(t),
            Pattern::Prefix(p) => self.prefix && p.starts_with(&*self.text),
        }
    }
}

/// Whether `topic` is `user:<user>` for this very user.
fn is_own_topic(user: Option<&str>, topic: &str) -> bool {
    user.is_some_and(|u| topic.strip_prefix(PRIVATE_PREFIX) == Some(u))
}

/// What a connection may subscribe and publish to: the token's `subscribe`/`publish` claims, or
/// the `[permissions]` defaults. Cloning is two reference-count increments.
///
/// The private-topic rule, applied before the grants: every topic starting with `user:` is
/// private, and `user:<id>` belongs to the user whose id (token `sub`) is exactly `<id>`.
/// - A user may always subscribe and publish to its own `user:<id>`, whatever the grants.
/// - Subscribing or publishing to any other exact `user:…` topic is refused
///   ([`SecurityError::PrivateTopic`]), for anonymous connections too.
/// - Wildcard subscriptions (`*`, `user:*`) are judged by the grants alone: the shard delivers a
///   `user:<id>` publication only to connections of user `<id>`, whatever pattern matched, so a
///   wildcard never reveals another user's private topic. The check costs one prefix test per
///   publication, and a string compare per recipient only for `user:` topics.
#[derive(Debug, Clone)]
pub struct Permissions(Arc<Grants>);

/// Both lists behind one pointer: every connection holds a `Permissions`, 8 bytes of its entry.
#[derive(Debug)]
struct Grants {
    subscribe: Arc<[Grant]>,
    publish: Arc<[Grant]>,
}

impl Permissions {
    /// Builds permissions from pattern lists (the `[permissions]` section or token claims).
    pub fn new<S: AsRef<str>>(subscribe: &[S], publish: &[S]) -> Result<Self, SecurityError> {
        let parse = |l: &[S]| {
            l.iter()
                .map(|p| Grant::parse(p.as_ref()))
                .collect::<Result<Arc<[Grant]>, _>>()
        };
        Ok(Self(Arc::new(Grants {
            subscribe: parse(subscribe)?,
            publish: parse(publish)?,
        })))
    }

    /// These permissions (the defaults) with each list replaced by the token's claim when it
    /// has one: `defaults.with_claims(identity.subscribe.as_deref(), identity.publish.as_deref())`.
    pub fn with_claims(
        &self,
        subscribe: Option<&[String]>,
        publish: Option<&[String]>,
    ) -> Result<Self, SecurityError> {
        let pick = |claim: Option<&[String]>, default: &Arc<[Grant]>| match claim {
            Some(l) => l
                .iter()
                .map(|p| Grant::parse(p))
                .collect::<Result<Arc<[Grant]>, _>>(),
            None => Ok(default.clone()),
        };
        if subscribe.is_none() && publish.is_none() {
            return Ok(self.clone());
        }
        Ok(Self(Arc::new(Grants {
            subscribe: pick(subscribe, &self.0.subscribe)?,
            publish: pick(publish, &self.0.publish)?,
        })))
    }

    /// Whether `user` (None = anonymous) may subscribe to `pattern` (see the type's rules).
    /// Cost: one pass over the granted patterns.
    pub fn can_subscribe(&self, user: Option<&str>, pattern: &str) -> Result<(), SecurityError> {
        let requested =
            Pattern::parse(pattern).map_err(|source| SecurityError::InvalidPattern {
                pattern: pattern.to_string(),
                source,
            })?;
        match requested {
            Pattern::Exact(t) if is_own_topic(user, t) => return Ok(()),
            Pattern::Exact(t) if t.starts_with(PRIVATE_PREFIX) => {
                return Err(SecurityError::PrivateTopic)
            }
            _ => {}
        }
        if self.0.subscribe.iter().any(|g| g.covers(requested)) {
            Ok(())
        } else {
            Err(SecurityError::NotGranted)
        }
    }

    /// Whether `user` (None = anonymous) may publish to `topic` (see the type's rules).
    /// Cost: one pass over the granted patterns, per published message.
    pub fn can_publish(&self, user: Option<&str>, topic: &str) -> Result<(), SecurityError> {
        validate_topic(topic).map_err(|source| SecurityError::InvalidPattern {
            pattern: topic.to_string(),
            source,
        })?;
        if is_own_topic(user, topic) {
            return Ok(());
        }
        if topic.starts_with(PRIVATE_PREFIX) {
            return Err(SecurityError::PrivateTopic);
        }
        if self.0.publish.iter().any(|g| g.pattern().matches(topic)) {
            Ok(())
        } else {
            Err(SecurityError::NotGranted)
        }
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

    #[test]
    fn permissions_grants_cover_patterns() {
        let p = Permissions::new(&["chat:*", "news"], &["chat:room1"]).expect("valid");
        assert_eq!(p.can_subscribe(None, "chat:a"), Ok(()));
        assert_eq!(p.can_subscribe(None, "chat:room*"), Ok(()));
        assert_eq!(p.can_subscribe(None, "chat:*"), Ok(()));
        assert_eq!(p.can_subscribe(None, "news"), Ok(()));
        assert_eq!(
            p.can_subscribe(None, "news*"),
            Err(SecurityError::NotGranted)
        );
        assert_eq!(
            p.can_subscribe(None, "cha*"),
            Err(SecurityError::NotGranted)
        );
        assert!(matches!(
            p.can_subscribe(None, "a*b"),
            Err(SecurityError::InvalidPattern { .. })
        ));
        assert_eq!(p.can_publish(None, "chat:room1"), Ok(()));
        assert_eq!(
            p.can_publish(None, "chat:room2"),
            Err(SecurityError::NotGranted)
        );
        assert!(matches!(
            p.can_publish(None, "chat:*"),
            Err(SecurityError::InvalidPattern { .. })
        ));
        assert!(Permissions::new(&["ok", "bad*x"], &[]).is_err());
        let claims = p
            .with_claims(Some(&["admin:*".to_string()]), None)
            .expect("valid");
        assert_eq!(claims.can_subscribe(None, "admin:x"), Ok(()));
        assert_eq!(
            claims.can_subscribe(None, "chat:a"),
            Err(SecurityError::NotGranted)
        );
        assert_eq!(claims.can_publish(None, "chat:room1"), Ok(()));
    }

    #[test]
    fn user_topics_are_private() {
        let all = Permissions::new(&["*"], &["*"]).expect("valid");
        let none = Permissions::new::<&str>(&[], &[]).expect("valid");
        let alice = Some("alice");
        // Own topic: always, even without grants.
        assert_eq!(none.can_subscribe(alice, "user:alice"), Ok(()));
        assert_eq!(none.can_publish(alice, "user:alice"), Ok(()));
        // Someone else's, or anonymous: never, even with "*" granted.
        assert_eq!(
            all.can_subscribe(alice, "user:bob"),
            Err(SecurityError::PrivateTopic)
        );
        assert_eq!(
            all.can_publish(alice, "user:bob"),
            Err(SecurityError::PrivateTopic)
        );
        assert_eq!(
            all.can_publish(alice, "user:alice:x"),
            Err(SecurityError::PrivateTopic)
        );
        assert_eq!(
            all.can_subscribe(None, "user:alice"),
            Err(SecurityError::PrivateTopic)
        );
        assert_eq!(
            all.can_publish(None, "user:"),
            Err(SecurityError::PrivateTopic)
        );
        // Wildcards are judged by the grants; delivery filters other users' topics.
        for p in ["*", "u*", "user:*", "user:al*", "chat:*", "users*"] {
            assert_eq!(all.can_subscribe(alice, p), Ok(()), "{p}");
        }
        assert_eq!(all.can_publish(alice, "users"), Ok(()));
    }
}
