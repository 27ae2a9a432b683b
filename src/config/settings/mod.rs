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

mod keys;
mod messaging;
mod proxy;
mod report;
#[cfg(test)]
mod tests;
mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::config::{ClusterConfig, Config, InboxConfig, IoMode, Namespace, StoreConfig};

pub use crate::policy::settings::{
    default_max_connections, fd_reserve, fd_soft_limit, max_connections_for_fd_limit, ApiSettings,
    AuthSettings, LimitSettings, PermissionSettings, Secret, SecuritySettings, TlsSettings,
    DEFAULT_BURST, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MESSAGES_PER_SECOND,
};
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

/// Why settings could not be loaded or are invalid. Every variant displays as one line.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// A value is outside what the key allows.
    #[error("invalid value for {key}: {value} (expected {expected}){origin}")]
    Invalid {
        /// Dotted key, e.g. `limits.burst`.
        key: String,
        /// The value as given (quoted when text, `"***"` for secrets).
        value: String,
        /// What the key allows.
        expected: String,
        /// Where the value came from, e.g. ` in RINGHUB_LIMITS_BURST` (empty after merging).
        origin: String,
    },
    /// A key that ringhub does not know.
    #[error("unknown setting {key} in {origin} (expected one of: {known})")]
    Unknown {
        /// The key as written.
        key: String,
        /// The file or variable it came from.
        origin: String,
        /// The keys allowed at that place.
        known: String,
    },
    /// A TOML table that is no section (`[autth]`).
    #[error("unknown section [{name}] in {origin} (expected one of: {known})")]
    UnknownSection {
        /// The table's name as written.
        name: String,
        /// The file it came from.
        origin: String,
        /// The sections, and the nearest one.
        known: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The configuration file is not valid TOML.
    #[error("{origin}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message, on one line.
        message: String,
    },
}

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

impl Settings {
    /// Defaults, then `file` if given, then the `RINGHUB_*` variables of `env`. Command-line
    /// flags follow with [`Settings::set`]; call [`Settings::validate`] last.
    pub fn load<I, K, V>(file: Option<&Path>, env: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        let mut s = Settings::default();
        if let Some(path) = file {
            s.merge_file(path)?;
        }
        s.apply_env(env)?;
        Ok(s)
    }

    /// Reads `path` and applies every key it sets.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        self.merge_toml(&text, &path.display().to_string())
    }

    /// Applies every key set in the TOML document `text`; `origin` names it in errors.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            SettingsError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().replace('\n', " ").trim().to_string(),
            }
        })?;
        for (name, value) in &table {
            match value {
                toml::Value::Table(inner) if SECTIONS.contains(&name.as_str()) => {
                    for (k, v) in inner {
                        let key = format!("{name}.{k}");
                        self.set_raw(&key, keys::Raw::Toml(v), origin)?;
                    }
                }
                // `[autth]`: a section, not a key; name the sections.
                toml::Value::Table(_) if !KEYS.iter().any(|k| k.name == name) => {
                    return Err(unknown_section(name, origin));
                }
                _ => self.set_raw(name, keys::Raw::Toml(value), origin)?,
            }
        }
        Ok(())
    }

    /// Applies every `RINGHUB_<SECTION>_<KEY>` variable of `vars` (e.g. `std::env::vars_os()`).
    /// Variables with the prefix that name no setting are ignored; those that are not one of the
    /// tools' own ([`TOOL_ENV`], such as `RINGHUB_CONFIG`) are listed by [`Settings::warnings`].
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), SettingsError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<std::ffi::OsStr>,
        V: AsRef<std::ffi::OsStr>,
    {
        for (name, value) in vars {
            let Some(name) = name.as_ref().to_str() else {
                continue;
            };
            let Some(key) = KEYS.iter().find(|k| k.env_name() == name) else {
                if name.starts_with("RINGHUB_") && !TOOL_ENV.contains(&name) {
                    self.ignored_env.push(name.to_string());
                }
                continue;
            };
            let origin = format!("in {name}");
            let Some(value) = value.as_ref().to_str() else {
                return Err(key.invalid("(not UTF-8)".into(), &origin));
            };
            self.set_raw(key.name, keys::Raw::Text(value), &origin)?;
        }
        Ok(())
    }

    /// Sets the dotted `key` (e.g. `limits.burst`, `listen`) from text as a flag or variable
    /// would give it: lists comma-separated, durations like `500ms`. `origin` names the source
    /// in errors, e.g. `--shards`.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), SettingsError> {
        self.set_raw(key, keys::Raw::Text(value), &format!("in {origin}"))
    }

    fn set_raw(
        &mut self,
        name: &str,
        raw: keys::Raw<'_>,
        origin: &str,
    ) -> Result<(), SettingsError> {
        let origin = if origin.starts_with("in ") {
            origin.to_string()
        } else {
            format!("in {origin}")
        };
        let Some(key) = KEYS.iter().find(|k| k.name == name) else {
            let section = name.split_once('.').map_or("", |(s, _)| s);
            let section = if SECTIONS.contains(&section) {
                section
            } else {
                ""
            };
            let known: Vec<&str> = KEYS
                .iter()
                .filter(|k| k.section() == section)
                .map(|k| k.name)
                .collect();
            let mut list = known.join(", ");
            if let Some(near) = report::closest(name, known.iter()) {
                list.push_str(&format!("; did you mean {near}?"));
            } else if name == "port" {
                list.push_str("; the port is part of listen, e.g. listen = \"0.0.0.0:8080\"");
            }
            return Err(SettingsError::Unknown {
                key: name.to_string(),
                origin: origin.trim_start_matches("in ").to_string(),
                known: list,
            });
        };
        if key.name == "topics" {
            // Its errors name the entry and key inside it, e.g. `topics[1].pattern`.
            (self.topics, self.proxy.topics) = messaging::topics_and_proxies(raw, &origin)?;
            return Ok(());
        }
        (key.set)(self, raw).map_err(|why| {
            let mut e = key.invalid(raw.show(!key.quote_refused), &origin);
            if let (Some(why), SettingsError::Invalid { expected, .. }) = (why, &mut e) {
                expected.push_str(": ");
                expected.push_str(&why);
            }
            e
        })
    }

    /// Checks what single keys cannot: combinations, files, and the engine's own ranges.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: String, expected: &str| SettingsError::Invalid {
            key: key.into(),
            value,
            expected: expected.into(),
            origin: String::new(),
        };
        let q = |s: &str| format!("{s:?}");
        if self.echo_path.as_deref() == Some(self.ws_path.as_str()) {
            return Err(invalid(
                "echo_path",
                q(&self.ws_path),
                "a path different from ws_path",
            ));
        }
        if self.idle_timeout <= self.ping_interval {
            let v = q(&humantime::format_duration(self.idle_timeout).to_string());
            return Err(invalid(
                "idle_timeout",
                v,
                "a duration longer than ping_interval",
            ));
        }
        if self.limits.messages_per_second > 0 && self.limits.burst == 0 {
            return Err(invalid("limits.burst", "0".into(), "a positive integer"));
        }
        if self.auth.anonymous == Some(false) && !self.auth.enabled() {
            return Err(invalid(
                "auth.anonymous",
                "false".into(),
                "true unless auth.jwt_secret or auth.jwt_public_key_file is set (no client could connect)",
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "(not set)".into(),
                    "a PEM key file when tls.cert_file is set",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "(not set)".into(),
                    "a PEM certificate file when tls.key_file is set",
                ))
            }
            _ => {}
        }
        let pem_files = [
            (
                "auth.jwt_public_key_file",
                &self.auth.jwt_public_key_file,
                "PUBLIC KEY",
            ),
            ("tls.cert_file", &self.tls.cert_file, "CERTIFICATE"),
            ("tls.key_file", &self.tls.key_file, "PRIVATE KEY"),
        ];
        for (key, path, label) in pem_files {
            if let Some(path) = path {
                check_pem(path, label).map_err(|why| {
                    invalid(
                        key,
                        q(&path.display().to_string()),
                        &format!("a readable PEM file with a {label} block: {why}"),
                    )
                })?;
            }
        }
        self.validate_messaging()?;
        self.validate_webhooks()?;
        self.engine_config()
            .validate()
            .map_err(|e| invalid("(engine)", "-".into(), &e.to_string()))
    }

    /// The engine's [`Config`] for these settings.
    pub fn engine_config(&self) -> Config {
        Config {
            listen: self.listen,
            shards: self.shards,
            io: self.io,
            pin_cores: self.pin_cores,
            echo_path: self.echo_path.clone(),
            ws_path: self.ws_path.clone(),
            socketio_namespaces: self.socketio_namespaces.clone(),
            socketio_recovery: self.socketio_recovery,
            max_message_size: self.max_message_size,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            outbound_queue: self.outbound_queue,
            max_subscriptions: self.limits.max_subscriptions,
            handler_threads: self.handler_threads,
            handshake_timeout: self.limits.handshake_timeout,
            http_keepalive_timeout: self.limits.keepalive_timeout,
            close_timeout: self.close_timeout,
            shutdown_timeout: self.shutdown_timeout,
            drain_delay: self.drain_delay,
            stats_interval: self.stats_interval,
            api_key: self.api.key.as_ref().map(|k| k.expose().to_string()),
            // Building the guard reads key files and can fail: see `Guard::from_settings`.
            guard: crate::policy::guard::Guard::default(),
            topics: self.topics.clone(),
            store: StoreConfig {
                backend: self.store_backend(),
                ..self.store.clone()
            },
            inbox: self.inbox,
            ui: self.ui.enabled,
            node: self.node.clone(),
            cluster: self.cluster.clone(),
            compression: self.compression,
            proxy: self.proxy.clone(),
            webhooks: self.webhooks.clone(),
        }
    }
}

/// `RINGHUB_*` variables that are not settings but are read by the binary (`RINGHUB_CONFIG`)
/// or by the repository's tests and scripts; they draw no warning.
pub const TOOL_ENV: &[&str] = &[
    "RINGHUB_CONFIG",
    "RINGHUB_BIN",
    "RINGHUB_LOADTEST",
    "RINGHUB_URL",
    "RINGHUB_SKIP_REDIS_TESTS",
];

/// The error for a table `[name]` that is no section.
fn unknown_section(name: &str, origin: &str) -> SettingsError {
    let sections: Vec<&str> = SECTIONS.iter().copied().filter(|s| !s.is_empty()).collect();
    let mut known = sections
        .iter()
        .map(|s| format!("[{s}]"))
        .collect::<Vec<_>>()
        .join(", ");
    known.push_str(", [[topics]]");
    if let Some(near) = report::closest(name, sections.iter().copied().chain(["topics"])) {
        known.push_str(&format!("; did you mean [{near}]?"));
    }
    SettingsError::UnknownSection {
        name: name.to_string(),
        origin: origin.trim_start_matches("in ").to_string(),
        known,
    }
}

/// Checks that `path` is readable and holds a PEM block whose label ends with `label`.
fn check_pem(path: &Path, label: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let found = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .any(|l| l.ends_with(label));
    if found {
        Ok(())
    } else {
        Err(format!("no '-----BEGIN ...{label}-----' line"))
    }
}

impl crate::policy::guard::Guard {
    /// Builds the door policy from validated settings (reads key and certificate files).
    pub fn from_settings(s: &Settings) -> Result<Self, crate::policy::guard::GuardError> {
        Self::from_sections(&s.auth, &s.permissions, &s.security, &s.limits, &s.tls)
    }
}
