//! The table of every setting: its dotted name, what it allows, how it is parsed from a TOML
//! value or from text (environment variables and flags), and how it prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::Value;

use super::{LogFormat, Secret, Settings, SettingsError};
use crate::config::IoMode;
use crate::policy::security::OriginPattern;
use crate::proto::pattern::Pattern;

/// A value as given: a TOML value from a file, or text from a variable or flag.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    Toml(&'a Value),
    Text(&'a str),
}

impl Raw<'_> {
    /// The value for an error message: quoted text, TOML syntax, or `"***"` for secrets.
    pub(crate) fn show(self, secret: bool) -> String {
        match self {
            _ if secret => "\"***\"".into(),
            Raw::Text(t) => format!("{t:?}"),
            Raw::Toml(v) => v.to_string().replace('\n', " "),
        }
    }
}

/// Why a value was refused beyond the key's `expected` text, if there is more to say.
pub(super) type Why = Option<String>;

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Dotted name: `listen` at the top level, `limits.burst` in a section.
    pub name: &'static str,
    /// What the key allows, for error messages.
    pub expected: &'static str,
    /// Whether the value is a secret (masked everywhere).
    pub secret: bool,
    /// Whether a refused value is quoted in the error (not for secrets, nor for values that may
    /// carry one, like a Redis URL's password: their checks quote them redacted).
    pub(crate) quote_refused: bool,
    pub(crate) set: fn(&mut Settings, Raw<'_>) -> Result<(), Why>,
    pub(crate) get: fn(&Settings) -> Option<Value>,
}

impl Key {
    /// The TOML section (`""` for top-level keys).
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').map_or("", |(s, _)| s)
    }
    /// The environment variable that overrides the key: `RINGHUB_LIMITS_BURST`.
    pub fn env_name(&self) -> String {
        format!(
            "RINGHUB_{}",
            self.name.replace('.', "_").to_ascii_uppercase()
        )
    }
    pub(crate) fn invalid(&self, value: String, origin: &str) -> SettingsError {
        SettingsError::Invalid {
            key: self.name.into(),
            value,
            expected: self.expected.into(),
            origin: format!(" {origin}"),
        }
    }
}

pub(super) fn text(r: Raw<'_>) -> Result<&str, Why> {
    match r {
        Raw::Text(t) => Ok(t.trim()),
        Raw::Toml(Value::String(s)) => Ok(s.as_str()),
        Raw::Toml(_) => Err(None),
    }
}

pub(super) fn uint(r: Raw<'_>, min: u64, max: u64) -> Result<u64, Why> {
    let n = match r {
        Raw::Toml(Value::Integer(i)) => u64::try_from(*i).map_err(|_| None)?,
        Raw::Text(t) => t.trim().parse::<u64>().map_err(|_| None)?,
        Raw::Toml(_) => return Err(None),
    };
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(None)
    }
}

pub(super) fn boolean(r: Raw<'_>) -> Result<bool, Why> {
    match r {
        Raw::Toml(Value::Boolean(b)) => Ok(*b),
        Raw::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(None),
        },
        Raw::Toml(_) => Err(None),
    }
}

pub(super) fn duration(r: Raw<'_>, allow_zero: bool) -> Result<Duration, Why> {
    let d = humantime::parse_duration(text(r)?).map_err(|_| None)?;
    if d.is_zero() && !allow_zero {
        return Err(None);
    }
    Ok(d)
}

/// A TOML array of strings, or comma-separated text (empty text is the empty list).
pub(super) fn list(r: Raw<'_>) -> Result<Vec<String>, Why> {
    match r {
        Raw::Text(t) => Ok(t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()),
        Raw::Toml(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from).ok_or(None))
            .collect(),
        Raw::Toml(_) => Err(None),
    }
}

/// Text where the empty string means "not set".
fn optional(r: Raw<'_>) -> Result<Option<String>, Why> {
    let t = text(r)?;
    Ok((!t.is_empty()).then(|| t.to_string()))
}

fn path_value(r: Raw<'_>) -> Result<Option<PathBuf>, Why> {
    Ok(optional(r)?.map(PathBuf::from))
}

fn url_path(r: Raw<'_>) -> Result<String, Why> {
    let t = text(r)?;
    if t.starts_with('/') && !t.contains(char::is_whitespace) {
        Ok(t.to_string())
    } else {
        Err(None)
    }
}

fn secret(r: Raw<'_>) -> Result<Option<Secret>, Why> {
    let t = text(r)?;
    if t.is_empty() {
        return Err(None);
    }
    Ok(Some(Secret::new(t)))
}

fn patterns(r: Raw<'_>) -> Result<Vec<String>, Why> {
    let l = list(r)?;
    for p in &l {
        Pattern::parse(p).map_err(|e| Some(format!("{p:?}: {e}")))?;
    }
    Ok(l)
}

fn namespaces(r: Raw<'_>) -> Result<Vec<String>, Why> {
    let l = list(r)?;
    if l.len() > 127 {
        return Err(Some("more than 127 namespaces".into()));
    }
    for n in &l {
        let ok = n.starts_with('/')
            && n.len() <= crate::proto::socketio::MAX_NAMESPACE_LEN
            && !n.contains(',');
        if !ok {
            return Err(Some(format!("{n:?}: not a namespace")));
        }
    }
    Ok(l)
}

fn origins(r: Raw<'_>) -> Result<Vec<String>, Why> {
    let l = list(r)?;
    for o in &l {
        OriginPattern::parse(o).map_err(|e| Some(e.to_string()))?;
    }
    Ok(l)
}

fn networks(r: Raw<'_>) -> Result<Vec<IpNet>, Why> {
    list(r)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| Some(format!("{s:?} is not a network")))
        })
        .collect()
}

pub(super) fn int_v(n: impl TryInto<i64>) -> Option<Value> {
    Some(Value::Integer(n.try_into().unwrap_or(i64::MAX)))
}
pub(super) fn str_v(s: impl ToString) -> Option<Value> {
    Some(Value::String(s.to_string()))
}
pub(super) fn dur_v(d: Duration) -> Option<Value> {
    str_v(humantime::format_duration(d))
}
pub(super) fn list_v<T: ToString>(l: &[T]) -> Option<Value> {
    Some(Value::Array(
        l.iter().map(|s| Value::String(s.to_string())).collect(),
    ))
}
fn path_v(p: &Option<PathBuf>) -> Option<Value> {
    p.as_ref().and_then(|p| str_v(p.display()))
}

macro_rules! key {
    ($name:literal, $expected:literal, |$s:ident, $r:ident| $set:expr, |$g:ident| $get:expr) => {
        key!($name, $expected, false, |$s, $r| $set, |$g| $get)
    };
    ($name:literal, $expected:literal, $secret:literal, |$s:ident, $r:ident| $set:expr, |$g:ident| $get:expr) => {
        Key {
            name: $name,
            expected: $expected,
            secret: $secret,
            quote_refused: !$secret,
            set: |$s: &mut Settings, $r: Raw<'_>| -> Result<(), Why> {
                $set;
                Ok(())
            },
            get: |$g: &Settings| -> Option<Value> { $get },
        }
    };
}

pub(super) use key;

pub(super) const MAX_U32: u64 = u32::MAX as u64;
const MAX_SIZE: u64 = 1 << 40;

/// The settings of the transport, the guard and the process.
pub(super) const CORE: &[Key] = &[
    key!(
        "listen",
        "an address like 0.0.0.0:8080 or [::]:8080",
        |s, r| s.listen = text(r)?.parse::<SocketAddr>().map_err(|_| None)?,
        |s| str_v(s.listen)
    ),
    key!(
        "shards",
        "an integer from 0 (one per CPU) to 64",
        |s, r| s.shards = uint(r, 0, 64)? as usize,
        |s| int_v(s.shards)
    ),
    key!(
        "io",
        "auto, uring or epoll",
        |s, r| s.io = text(r)?.parse::<IoMode>().map_err(|_| None)?,
        |s| str_v(match s.io {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        })
    ),
    key!(
        "pin_cores",
        "true or false",
        |s, r| s.pin_cores = boolean(r)?,
        |s| Some(Value::Boolean(s.pin_cores))
    ),
    key!(
        "ws_path",
        "a path starting with '/'",
        |s, r| s.ws_path = url_path(r)?,
        |s| str_v(&s.ws_path)
    ),
    key!(
        "socketio_namespaces",
        "a list of at most 127 namespaces starting with '/' ([] turns /socket.io/ off)",
        |s, r| s.socketio_namespaces = namespaces(r)?,
        |s| list_v(&s.socketio_namespaces)
    ),
    key!(
        "socketio_recovery",
        "a duration (\"0s\" turns Socket.IO connection state recovery off)",
        |s, r| s.socketio_recovery = duration(r, true)?,
        |s| dur_v(s.socketio_recovery)
    ),
    key!(
        "echo_path",
        "a path starting with '/', or \"\" for none",
        |s, r| s.echo_path = if text(r)?.is_empty() {
            None
        } else {
            Some(url_path(r)?)
        },
        |s| s.echo_path.as_ref().and_then(str_v)
    ),
    key!(
        "max_message_size",
        "a size in bytes, at least 125",
        |s, r| s.max_message_size = uint(r, 125, MAX_SIZE)? as usize,
        |s| int_v(s.max_message_size)
    ),
    key!(
        "ping_interval",
        "a positive duration like 500ms or 30s",
        |s, r| s.ping_interval = duration(r, false)?,
        |s| dur_v(s.ping_interval)
    ),
    key!(
        "idle_timeout",
        "a positive duration like 500ms or 90s",
        |s, r| s.idle_timeout = duration(r, false)?,
        |s| dur_v(s.idle_timeout)
    ),
    key!(
        "outbound_queue",
        "a size in bytes, at least 1024",
        |s, r| s.outbound_queue = uint(r, 1024, MAX_SIZE)? as usize,
        |s| int_v(s.outbound_queue)
    ),
    key!(
        "handler_threads",
        "an integer from 1 to 1024",
        |s, r| s.handler_threads = uint(r, 1, 1024)? as usize,
        |s| int_v(s.handler_threads)
    ),
    key!(
        "close_timeout",
        "a positive duration like 5s",
        |s, r| s.close_timeout = duration(r, false)?,
        |s| dur_v(s.close_timeout)
    ),
    key!(
        "shutdown_timeout",
        "a duration like 10s",
        |s, r| s.shutdown_timeout = duration(r, true)?,
        |s| dur_v(s.shutdown_timeout)
    ),
    key!(
        "drain_delay",
        "a duration like 5s (0s: close at once)",
        |s, r| s.drain_delay = duration(r, true)?,
        |s| dur_v(s.drain_delay)
    ),
    key!(
        "stats_interval",
        "a duration like 60s (0s disables the stats line)",
        |s, r| s.stats_interval = duration(r, true)?,
        |s| dur_v(s.stats_interval)
    ),
    key!(
        "log_format",
        "text or json",
        |s, r| s.log_format = match text(r)? {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(None),
        },
        |s| str_v(match s.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    ),
    key!(
        "auth.jwt_secret",
        "a non-empty HS256 secret",
        true,
        |s, r| s.auth.jwt_secret = secret(r)?,
        |s| s.auth.jwt_secret.as_ref().and_then(|x| str_v(x.expose()))
    ),
    key!(
        "auth.jwt_public_key_file",
        "a path to an RS256 or ES256 public key PEM file, or \"\" for none",
        |s, r| s.auth.jwt_public_key_file = path_value(r)?,
        |s| path_v(&s.auth.jwt_public_key_file)
    ),
    key!(
        "auth.anonymous",
        "true or false",
        |s, r| s.auth.anonymous = Some(boolean(r)?),
        |s| s.auth.anonymous.map(Value::Boolean)
    ),
    key!(
        "auth.issuer",
        "the required iss claim, or \"\" for none",
        |s, r| s.auth.issuer = optional(r)?,
        |s| s.auth.issuer.as_ref().and_then(str_v)
    ),
    key!(
        "auth.audience",
        "the required aud claim, or \"\" for none",
        |s, r| s.auth.audience = optional(r)?,
        |s| s.auth.audience.as_ref().and_then(str_v)
    ),
    key!(
        "api.key",
        "a non-empty API key",
        true,
        |s, r| s.api.key = secret(r)?,
        |s| s.api.key.as_ref().and_then(|x| str_v(x.expose()))
    ),
    key!(
        "permissions.subscribe",
        "a list of topic patterns (exact, or ending in '*')",
        |s, r| s.permissions.subscribe = patterns(r)?,
        |s| list_v(&s.permissions.subscribe)
    ),
    key!(
        "permissions.publish",
        "a list of topic patterns (exact, or ending in '*')",
        |s, r| s.permissions.publish = patterns(r)?,
        |s| list_v(&s.permissions.publish)
    ),
    key!(
        "security.allowed_origins",
        "a list of origins like https://app.example.com or *.example.com",
        |s, r| s.security.allowed_origins = origins(r)?,
        |s| list_v(&s.security.allowed_origins)
    ),
    key!(
        "security.allow_ips",
        "a list of IP networks like 10.0.0.0/8 or 2001:db8::/32",
        |s, r| s.security.allow_ips = networks(r)?,
        |s| list_v(&s.security.allow_ips)
    ),
    key!(
        "security.deny_ips",
        "a list of IP networks like 10.0.0.0/8 or 2001:db8::/32",
        |s, r| s.security.deny_ips = networks(r)?,
        |s| list_v(&s.security.deny_ips)
    ),
    key!(
        "limits.max_connections",
        "a non-negative integer (0 = unlimited)",
        |s, r| s.limits.max_connections = uint(r, 0, MAX_U32)? as usize,
        |s| int_v(s.limits.max_connections)
    ),
    key!(
        "limits.max_connections_per_ip",
        "a non-negative integer (0 = unlimited)",
        |s, r| s.limits.max_connections_per_ip = uint(r, 0, MAX_U32)? as usize,
        |s| int_v(s.limits.max_connections_per_ip)
    ),
    key!(
        "limits.messages_per_second",
        "a non-negative integer (0 = no rate limit)",
        |s, r| s.limits.messages_per_second = uint(r, 0, MAX_U32)? as u32,
        |s| int_v(s.limits.messages_per_second)
    ),
    key!(
        "limits.burst",
        "a positive integer",
        |s, r| s.limits.burst = uint(r, 1, MAX_U32)? as u32,
        |s| int_v(s.limits.burst)
    ),
    key!(
        "limits.max_subscriptions",
        "a positive integer",
        |s, r| s.limits.max_subscriptions = uint(r, 1, MAX_U32)? as usize,
        |s| int_v(s.limits.max_subscriptions)
    ),
    key!(
        "limits.max_handshake_bytes",
        "a size in bytes from 1024 to 1048576",
        |s, r| s.limits.max_handshake_bytes = uint(r, 1024, 1 << 20)? as usize,
        |s| int_v(s.limits.max_handshake_bytes)
    ),
    key!(
        "limits.handshake_timeout",
        "a positive duration like 10s",
        |s, r| s.limits.handshake_timeout = duration(r, false)?,
        |s| dur_v(s.limits.handshake_timeout)
    ),
    key!(
        "limits.keepalive_timeout",
        "a duration like 60s, or 0s for one HTTP request per connection",
        |s, r| s.limits.keepalive_timeout = duration(r, true)?,
        |s| dur_v(s.limits.keepalive_timeout)
    ),
    key!(
        "tls.cert_file",
        "a path to a PEM certificate chain, or \"\" for none",
        |s, r| s.tls.cert_file = path_value(r)?,
        |s| path_v(&s.tls.cert_file)
    ),
    key!(
        "tls.key_file",
        "a path to a PEM private key, or \"\" for none",
        |s, r| s.tls.key_file = path_value(r)?,
        |s| path_v(&s.tls.key_file)
    ),
];
