//! Topic permissions: granted subscribe/publish patterns, the JWT `topics` claim, and the
//! private `user:<id>` topics ([`Permissions`]).

use std::sync::Arc;

use crate::policy::security::{SecurityError, PRIVATE_PREFIX};
use crate::proto::pattern::{validate_topic, Pattern};

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
