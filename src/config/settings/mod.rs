//! Operator settings: every key of `ringhub.toml`, its default, and loading with the precedence
//! defaults < TOML file < `RINGHUB_*` environment variables < command-line flags.
//!
//! ```no_run
//! use ringhub::settings::Settings;
//!
//! let mut s = Settings::default();
//! s.merge_file(std::path::Path::new("ringhub.toml"))?;
//! s.apply_env(std::env::vars_os())?;
//! s.set("shards", "4", "--shards")?; // one call per flag given on the command line
//! s.validate()?;
//! let config = s.engine_config();
//! println!("{s}"); // the effective configuration, secrets masked
//! # Ok::<(), ringhub::settings::SettingsError>(())
//! ```
//!
//! Every value, whatever its source, goes through one table of keys ([`KEYS`]), so an invalid
//! value is always the same one-line error naming the key, the value and what is allowed:
//! `invalid value for limits.burst: "abc" (expected a positive integer) in RINGHUB_LIMITS_BURST`.
//! Secrets are never printed: not by [`Display`](std::fmt::Display), `Debug`, nor in errors.

mod engine;
mod error;
mod keys;
mod load;
mod messaging;
mod proxy;
mod report;
#[cfg(test)]
mod tests;
mod validate;
mod webhooks;

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ClusterConfig, Config, InboxConfig, IoMode, Namespace, StoreConfig};

pub use crate::policy::settings::{
    default_max_connections, fd_reserve, fd_soft_limit, max_connections_for_fd_limit, ApiSettings,
    AuthSettings, LimitSettings, PermissionSettings, Secret, SecuritySettings, TlsSettings,
    DEFAULT_BURST, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MESSAGES_PER_SECOND,
};
pub use error::SettingsError;
pub use keys::Key;
pub use messaging::{default_store, default_topics, UiSettings};

/// Log output format (`log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting: the core ones (`keys`), then the messaging ones (`messaging::KEYS`). `check-config`
/// prints them section by section, in this order within a section.
pub static KEYS: &[Key] = &ALL;

static ALL: [Key; keys::CORE.len()
    + messaging::KEYS.len()
    + proxy::KEYS.len()
    + webhooks::KEYS.len()] = concat(&WITH_PROXY, webhooks::KEYS);

/// The core, the messaging and the proxy keys.
const WITH_PROXY: [Key; keys::CORE.len() + messaging::KEYS.len() + proxy::KEYS.len()] =
    concat(&MESSAGING, proxy::KEYS);

/// The core and the messaging keys.
const MESSAGING: [Key; keys::CORE.len() + messaging::KEYS.len()] =
    concat(keys::CORE, messaging::KEYS);

/// `a` then `b`, as an array of `N = a.len() + b.len()` keys (a static cannot join slices).
const fn concat<const N: usize>(a: &[Key], b: &[Key]) -> [Key; N] {
    assert!(a.len() + b.len() == N && N > 0);
    let mut out = [a[0]; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}

/// The start of the placeholder secrets in `ringhub.example.toml`; a secret starting with it
/// is the example's, known to everyone.
pub const EXAMPLE_SECRET_PREFIX: &str = "change-me";

/// Every operator setting. [`Default`] is a working configuration: no file is needed to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Address every shard listens on.
    pub listen: SocketAddr,
    /// Shard threads (0 = one per CPU, at most 64).
    pub shards: usize,
    /// I/O backend.
    pub io: IoMode,
    /// Pin shard threads to cores (`--no-pin` sets it false).
    pub pin_cores: bool,
    /// Path WebSocket clients connect to.
    pub ws_path: String,
    /// Socket.IO namespaces (empty: no `/socket.io/` endpoint).
    pub socketio_namespaces: Vec<String>,
    /// Socket.IO connection state recovery window (zero: off).
    pub socketio_recovery: Duration,
    /// Path of the echo route, off when `None`.
    pub echo_path: Option<String>,
    /// Largest client message in bytes (larger closes with 1009).
    pub max_message_size: usize,
    /// Silence after which the server pings.
    pub ping_interval: Duration,
    /// Silence after which a connection is dropped.
    pub idle_timeout: Duration,
    /// Bytes queued to one connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Worker threads for blocking handlers.
    pub handler_threads: usize,
    /// Time a closing connection gets to finish the close handshake.
    pub close_timeout: Duration,
    /// Time graceful shutdown waits for connections.
    pub shutdown_timeout: Duration,
    /// On SIGTERM, time `/readyz` answers 503 (and new clients get 503) before listeners close.
    pub drain_delay: Duration,
    /// Interval of the stats log line (0 disables it).
    pub stats_interval: Duration,
    /// Log output format.
    pub log_format: LogFormat,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[permissions]`.
    pub permissions: PermissionSettings,
    /// `[security]`.
    pub security: SecuritySettings,
    /// `[limits]`.
    pub limits: LimitSettings,
    /// `[tls]`.
    pub tls: TlsSettings,
    /// This node's name in client ids (`node`); empty = a random one at start.
    pub node: String,
    /// `[[topics]]`: history, presence and join/leave per topic pattern (default
    /// [`default_topics`]: `chat:*` for the chat demo, unlike the library's none).
    pub topics: Vec<Namespace>,
    /// `[store]` (default [`default_store`]: redb, unlike the library's in-memory default).
    /// Its backend as given; [`Settings::store_backend`] is the one used.
    pub store: StoreConfig,
    /// Whether `store.backend` was given (file, environment or flag). When it was not, a
    /// non-empty `cluster.redis` selects the Redis store: a cluster whose nodes each kept their
    /// own history would give one topic different offsets on each node.
    pub store_backend_given: bool,
    /// `[inbox]`: durable user messages.
    pub inbox: InboxConfig,
    /// `[cluster]`: other nodes through Redis.
    pub cluster: ClusterConfig,
    /// `[ui]`.
    pub ui: UiSettings,
    /// `[compression]`: permessage-deflate.
    pub compression: crate::config::CompressionConfig,
    /// `[proxy]` and the `proxy` tables of `[[topics]]` entries: the backend's proxies.
    pub proxy: crate::config::proxy::ProxyConfig,
    /// `[webhooks]`: events sent to the application's backend.
    pub webhooks: crate::config::WebhookConfig,
    /// `RINGHUB_*` variables that name no setting (a typo is otherwise silently ignored): each
    /// is a warning naming the closest known variable.
    ignored_env: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let c = Config::default();
        let l = LimitSettings::default();
        Self {
            listen: c.listen,
            shards: c.shards,
            io: c.io,
            pin_cores: c.pin_cores,
            ws_path: c.ws_path,
            socketio_namespaces: c.socketio_namespaces,
            socketio_recovery: c.socketio_recovery,
            echo_path: c.echo_path,
            max_message_size: c.max_message_size,
            ping_interval: c.ping_interval,
            idle_timeout: c.idle_timeout,
            outbound_queue: c.outbound_queue,
            handler_threads: c.handler_threads,
            close_timeout: c.close_timeout,
            shutdown_timeout: c.shutdown_timeout,
            drain_delay: c.drain_delay,
            stats_interval: c.stats_interval,
            log_format: LogFormat::Text,
            auth: AuthSettings::default(),
            api: ApiSettings::default(),
            permissions: PermissionSettings::default(),
            security: SecuritySettings::default(),
            limits: l,
            tls: TlsSettings::default(),
            node: c.node,
            topics: default_topics(),
            store: default_store(),
            store_backend_given: false,
            inbox: c.inbox,
            cluster: c.cluster,
            ui: UiSettings::default(),
            compression: c.compression,
            proxy: c.proxy,
            webhooks: c.webhooks,
            ignored_env: Vec::new(),
        }
    }
}

/// The TOML sections, in print order (the empty name is the top level).
const SECTIONS: [&str; 14] = [
    "",
    "auth",
    "api",
    "permissions",
    "security",
    "limits",
    "tls",
    "store",
    "inbox",
    "cluster",
    "ui",
    "compression",
    "proxy",
    "webhooks",
];

/// `RINGHUB_*` variables that are not settings but are read by the binary (`RINGHUB_CONFIG`)
/// or by the repository's tests and scripts; they draw no warning.
pub const TOOL_ENV: &[&str] = &[
    "RINGHUB_CONFIG",
    "RINGHUB_BIN",
    "RINGHUB_LOADTEST",
    "RINGHUB_URL",
    "RINGHUB_SKIP_REDIS_TESTS",
];
