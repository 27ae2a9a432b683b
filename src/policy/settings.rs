//! The door's settings sections (`[auth]`, `[api]`, `[permissions]`, `[security]`, `[limits]`,
//! `[tls]`) and the small types they use: defined by the policy that enforces them, parsed and
//! validated by `config::settings` (a layer above), which re-exports them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// A secret string (JWT secret, API key): `Debug` prints `"***"`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<Box<str>>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[auth]`: how connections authenticate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthSettings {
    /// HS256 shared secret (`jwt_secret`).
    pub jwt_secret: Option<Secret>,
    /// RS256 or ES256 public key, PEM file (`jwt_public_key_file`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// Whether connections without a token are accepted; `None` = allowed exactly when no JWT key
    /// is configured (see [`AuthSettings::anonymous_allowed`]).
    pub anonymous: Option<bool>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
}

impl AuthSettings {
    /// Whether a JWT key (secret or public key file) is configured.
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key_file.is_some()
    }
    /// The effective anonymous policy: the explicit value, else allowed iff auth is disabled.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous.unwrap_or(!self.enabled())
    }
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiSettings {
    /// Key that HTTP API calls must present (`key`).
    pub key: Option<Secret>,
}

/// `[permissions]`: topic patterns granted to connections whose token carries no such claim.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionSettings {
    /// Patterns a connection may subscribe to (default `["*"]`).
    pub subscribe: Vec<String>,
    /// Patterns of topics a connection may publish to (default `["*"]`).
    pub publish: Vec<String>,
}

impl Default for PermissionSettings {
    fn default() -> Self {
        Self {
            subscribe: vec!["*".into()],
            publish: vec!["*".into()],
        }
    }
}

/// `[security]`: checks at the upgrade.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecuritySettings {
    /// Allowed `Origin`s (exact origins or `*.example.com`); empty allows any.
    pub allowed_origins: Vec<String>,
    /// Client networks allowed to connect (CIDR); empty allows all.
    pub allow_ips: Vec<IpNet>,
    /// Client networks refused (CIDR); wins over `allow_ips`.
    pub deny_ips: Vec<IpNet>,
}

/// Default `limits.messages_per_second`: generous for people and apps (a chat client sends a
/// few per second), yet a bound on what one connection can make a hub fan out.
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 1000;
/// Default `limits.burst` above the rate.
pub const DEFAULT_BURST: u32 = 2000;
/// Default `limits.max_connections_per_ip` (an IPv4 address or an IPv6 /64): room for a large
/// NAT or office behind one address; a reverse proxy on the same host needs 0 or more.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1000;

/// The soft `RLIMIT_NOFILE` of this process (`None` if unknown; `u64::MAX` for unlimited).
pub fn fd_soft_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0).then_some(if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    })
}

/// Descriptors kept for everything but client sockets (listeners, io_uring, eventfds, log and
/// key files, the HTTP API): 5 % of the limit, at least 64.
pub fn fd_reserve(soft: u64) -> u64 {
    (soft / 20).max(64)
}

/// The default `limits.max_connections` for a descriptor limit `soft`: the limit less
/// [`fd_reserve`] (each connection holds one descriptor), at least 1 and at most 2^32 - 1 —
/// so that connections past what the process can hold get a clean 503 instead of `accept`
/// failing with `EMFILE`.
pub fn max_connections_for_fd_limit(soft: u64) -> usize {
    let n = if soft > fd_reserve(soft) {
        soft - fd_reserve(soft)
    } else {
        soft / 2
    };
    n.clamp(1, u32::MAX as u64) as usize
}

/// The default `limits.max_connections` for this process (1024 descriptors assumed if the limit
/// cannot be read).
pub fn default_max_connections() -> usize {
    max_connections_for_fd_limit(fd_soft_limit().unwrap_or(1024))
}

/// `[limits]`: resource limits. `0` means unlimited where noted. The defaults are on: a
/// connection cap derived from the descriptor limit, a per-IP cap and a message rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Open connections in total (0 = unlimited; default [`default_max_connections`]).
    pub max_connections: usize,
    /// Open connections from one IP address (0 = unlimited).
    pub max_connections_per_ip: usize,
    /// Messages a connection (and a user) may send per second (0 = no rate limit).
    pub messages_per_second: u32,
    /// Messages allowed in a burst above the rate.
    pub burst: u32,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Largest HTTP upgrade request head, in bytes.
    pub max_handshake_bytes: usize,
    /// Time allowed for the HTTP upgrade request to arrive.
    pub handshake_timeout: Duration,
    /// How long an HTTP connection stays open waiting for its next request (0 = one request
    /// per connection).
    pub keepalive_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            messages_per_second: DEFAULT_MESSAGES_PER_SECOND,
            burst: DEFAULT_BURST,
            max_subscriptions: 1000,
            max_handshake_bytes: 8192,
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
        }
    }
}

/// `[tls]`: serve `wss://` and `https://` when both files are set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}
