//! The door policy: who may connect (IP lists, connection caps), who may upgrade (origin, JWT),
//! and what each connection may then do (permissions, rate limits). Built once from the door's
//! settings sections (`Guard::from_settings` in `config` takes the whole settings), shared
//! read-only by every shard.

use std::net::IpAddr;
use std::sync::Arc;

use thiserror::Error;

use crate::policy::auth::{token_from_request, AuthError, Authenticator};
use crate::policy::permissions::Permissions;
use crate::policy::ratelimit::{ConnLimits, UserLimiter};
use crate::policy::security::{IpFilter, OriginPolicy, SecurityError};
use crate::policy::settings::{
    AuthSettings, LimitSettings, PermissionSettings, SecuritySettings, TlsSettings,
};
use crate::proto::handshake::{HttpError, RequestHead};

/// Why the policy could not be built from the settings.
#[derive(Debug, Error)]
pub enum GuardError {
    /// `[auth]` keys are unusable.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    /// `[permissions]` or `[security]` hold an invalid pattern.
    #[error("security: {0}")]
    Security(#[from] SecurityError),
    /// `[tls]` files are unusable.
    #[error("tls: {0}")]
    Tls(String),
}

/// Everything checked at accept, at the upgrade and per message. The default is open: no auth,
/// every origin and address, no caps, no rate limit, plain TCP.
#[derive(Debug, Clone)]
pub struct Guard {
    /// JWT verification; `None` means every connection is anonymous.
    pub auth: Option<Arc<Authenticator>>,
    /// Default permissions for connections whose token carries no claims.
    pub permissions: Permissions,
    /// Allowed `Origin`s at the upgrade.
    pub origins: OriginPolicy,
    /// Allowed and denied client networks.
    pub ips: IpFilter,
    /// Connection caps in total and per IP.
    pub conn_limits: Option<Arc<ConnLimits>>,
    /// Per-connection message rate and burst.
    pub rate: Option<(u32, u32)>,
    /// Per-user message rate across every connection of the user.
    pub user_rate: Option<Arc<UserLimiter>>,
    /// TLS for `wss://` and `https://`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Largest HTTP request head accepted.
    pub max_handshake_bytes: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            auth: None,
            permissions: Permissions::new(&["*"], &["*"])
                .unwrap_or_else(|_| unreachable!("'*' is a valid pattern")),
            origins: OriginPolicy::default(),
            ips: IpFilter::default(),
            conn_limits: None,
            rate: None,
            user_rate: None,
            tls: None,
            max_handshake_bytes: crate::proto::handshake::MAX_HEAD,
        }
    }
}

/// A connection admitted by the upgrade checks.
pub(crate) struct Admitted {
    pub user: Option<Arc<str>>,
    pub permissions: Permissions,
    /// Topics to subscribe at connect (the token's `topics` claim).
    pub topics: Vec<String>,
}

impl Guard {
    /// Admits without looking at a request (anonymous, default permissions).
    pub(crate) fn admit_anonymous(&self) -> Admitted {
        Admitted {
            user: None,
            permissions: self.permissions.clone(),
            topics: Vec::new(),
        }
    }

    /// Builds the policy from validated settings sections (reads key and certificate files).
    pub fn from_sections(
        auth: &AuthSettings,
        permissions: &PermissionSettings,
        security: &SecuritySettings,
        l: &LimitSettings,
        tls: &TlsSettings,
    ) -> Result<Self, GuardError> {
        let auth = Authenticator::new(auth)?;
        let tls = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => {
                Some(super::tls::server_config(cert, key).map_err(GuardError::Tls)?)
            }
            _ => None,
        };
        let caps = l.max_connections > 0 || l.max_connections_per_ip > 0;
        Ok(Self {
            auth: (auth.enabled() || !auth.anonymous_allowed()).then(|| Arc::new(auth)),
            permissions: Permissions::new(&permissions.subscribe, &permissions.publish)?,
            origins: OriginPolicy::new(&security.allowed_origins)?,
            ips: IpFilter::new(&security.allow_ips, &security.deny_ips),
            conn_limits: caps.then(|| ConnLimits::new(l.max_connections, l.max_connections_per_ip)),
            rate: (l.messages_per_second > 0).then_some((l.messages_per_second, l.burst)),
            user_rate: UserLimiter::from_limits(l).map(Arc::new),
            tls,
            max_handshake_bytes: l.max_handshake_bytes,
        })
    }

    /// Checks a new TCP connection's address against the IP lists.
    pub(crate) fn admit_address(&self, ip: IpAddr) -> Result<(), HttpError> {
        if self.ips.allows(ip) {
            Ok(())
        } else {
            Err(HttpError::new(403, "address not allowed"))
        }
    }

    /// Checks an upgrade (WebSocket or SSE): origin, then token.
    pub(crate) fn admit(&self, head: &RequestHead) -> Result<Admitted, HttpError> {
        if !self.origins.allows(head.header("Origin")) {
            return Err(HttpError::new(403, "origin not allowed"));
        }
        let token = match &self.auth {
            None => None,
            Some(_) => token_from_request(head.query.as_deref(), head.header("Authorization")),
        };
        self.admit_token(token.as_deref())
    }

    /// Checks a token given some other way (the Socket.IO CONNECT packet's `auth.token`)
    /// exactly as the upgrade checks one: verification, expiry, claims.
    pub(crate) fn admit_token(&self, token: Option<&str>) -> Result<Admitted, HttpError> {
        let (user, permissions, topics) = match &self.auth {
            None => (None, self.permissions.clone(), Vec::new()),
            Some(auth) => {
                let id = auth
                    .authenticate(token)
                    .map_err(|e| HttpError::new(e.http_status(), format!("unauthorized: {e}")))?;
                let perms = self
                    .permissions
                    .with_claims(id.subscribe.as_deref(), id.publish.as_deref())
                    .map_err(|e| HttpError::new(401, format!("unauthorized: {e}")))?;
                (id.user, perms, id.topics.unwrap_or_default())
            }
        };
        // The connection's rate limiter is built by its shard at its first message (`rate`):
        // an idle connection holds none.
        Ok(Admitted {
            user,
            permissions,
            topics,
        })
    }
}
