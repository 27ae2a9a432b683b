//! The messaging settings: `node`, `[[topics]]`, `[store]`, `[inbox]`, `[cluster]`, `[ui]` and
//! `[compression]`, their keys,
//! and the parsing of `[[topics]]` entries (a TOML array of tables in the file, a JSON array of
//! objects in `RINGHUB_TOPICS`).

use std::path::PathBuf;

use toml::Value;

use super::keys::{
    boolean, dur_v, duration, int_v, key, list, list_v, str_v, text, uint, Key, Raw, Why, MAX_U32,
};
use super::{Settings, SettingsError};
use crate::config::{
    Namespace, Namespaces, StoreBackend, StoreConfig, StoreSync, SYNC_INTERVAL_MAX,
    SYNC_INTERVAL_MIN,
};
use crate::proto::pattern::Pattern;

/// `[ui]`: the built-in web pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiSettings {
    /// Serve the chat demo at `/` and the admin dashboard at `/admin` (default true).
    pub enabled: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The server binary's `[store]` when none is configured: redb under `./ringhub-data`, so
/// history and inboxes survive a restart. (The library's [`StoreConfig::default`] is in memory.)
pub fn default_store() -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redb,
        ..StoreConfig::default()
    }
}

/// The server binary's `[[topics]]` when none is configured: the namespace the built-in chat
/// demo (`GET /`) needs — `chat:*` with 100 publications of history, presence and join/leave.
/// Any `[[topics]]` entry in the file (or `RINGHUB_TOPICS`, `""` for none) replaces it.
pub fn default_topics() -> Vec<Namespace> {
    vec![Namespace {
        pattern: "chat:*".into(),
        history_size: 100,
        presence: true,
        join_leave: true,
        ..Namespace::default()
    }]
}

/// Longest `node` name.
const MAX_NODE_LEN: usize = 64;

/// The keys of one `[[topics]]` entry.
const TOPIC_FIELDS: [&str; 6] = [
    "pattern",
    "history_size",
    "history_ttl",
    "presence",
    "join_leave",
    "proxy",
];

/// `cluster.presence_ttl`: at least a second (entries are refreshed every third of it).
fn presence_ttl(r: Raw<'_>) -> Result<std::time::Duration, Why> {
    let d = duration(r, false)?;
    (d >= std::time::Duration::from_secs(1))
        .then_some(d)
        .ok_or(None)
}

fn node(r: Raw<'_>) -> Result<String, Why> {
    let t = text(r)?;
    let ok = t.len() <= MAX_NODE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| t.to_string()).ok_or(None)
}

/// Redis URLs: `redis://[user:password@]host[:port][/db]` (or `unix://`), each at most once.
fn redis_urls(r: Raw<'_>) -> Result<Vec<String>, Why> {
    let l = list(r)?;
    for (i, u) in l.iter().enumerate() {
        let shown = crate::proto::wire::redact(u);
        if !(u.starts_with("redis://") || u.starts_with("unix://")) {
            return Err(Some(format!("{shown:?} is not a redis:// URL")));
        }
        ::redis::Client::open(u.as_str()).map_err(|e| Some(format!("{shown:?}: {e}")))?;
        if l[..i].contains(u) {
            return Err(Some(format!("{shown:?} is given twice")));
        }
    }
    Ok(l)
}

fn prefix(r: Raw<'_>) -> Result<String, Why> {
    let t = text(r)?;
    let ok = !t.is_empty() && t.len() <= 64 && !t.bytes().any(|b| b.is_ascii_whitespace());
    ok.then(|| t.to_string()).ok_or(None)
}

/// The spelling of a backend in settings.
pub(super) fn backend_name(b: StoreBackend) -> &'static str {
    match b {
        StoreBackend::Memory => "memory",
        StoreBackend::Redb => "redb",
        StoreBackend::Redis => "redis",
    }
}

fn sync_interval(r: Raw<'_>) -> Result<std::time::Duration, Why> {
    let d = duration(r, false)?;
    (SYNC_INTERVAL_MIN..=SYNC_INTERVAL_MAX)
        .contains(&d)
        .then_some(d)
        .ok_or(None)
}

fn store_path(r: Raw<'_>) -> Result<PathBuf, Why> {
    let t = text(r)?;
    (!t.is_empty()).then(|| PathBuf::from(t)).ok_or(None)
}

/// The entries as TOML (inline tables), so that the printed configuration reads back.
fn topics_v(list: &[Namespace], proxy: impl Fn(&str) -> Option<Value>) -> Option<Value> {
    let entry = |n: &Namespace| {
        let mut t = toml::Table::new();
        t.insert("pattern".into(), Value::String(n.pattern.clone()));
        t.insert("history_size".into(), int_v(n.history_size)?);
        t.insert("history_ttl".into(), dur_v(n.history_ttl)?);
        t.insert("presence".into(), Value::Boolean(n.presence));
        t.insert("join_leave".into(), Value::Boolean(n.join_leave));
        if let Some(p) = proxy(&n.pattern) {
            t.insert("proxy".into(), p);
        }
        Some(Value::Table(t))
    };
    Some(Value::Array(list.iter().map(entry).collect::<Option<_>>()?))
}

/// Writes `topics = [...]` for `check-config`: one inline table per line, `pattern` first.
pub(super) fn write_topics(f: &mut std::fmt::Formatter<'_>, s: &Settings) -> std::fmt::Result {
    let list = &s.topics;
    if list.is_empty() {
        return writeln!(f, "topics = []");
    }
    writeln!(f, "topics = [")?;
    for n in list {
        writeln!(
            f,
            "  {{ pattern = {}, history_size = {}, history_ttl = \"{}\", presence = {}, join_leave = {}{} }},",
            Value::String(n.pattern.clone()),
            n.history_size,
            humantime::format_duration(n.history_ttl),
            n.presence,
            n.join_leave,
            super::proxy::topic_proxies_v(s, &n.pattern)
                .map_or(String::new(), |p| format!(", proxy = {p}"))
        )?;
    }
    writeln!(f, "]")
}

/// What `topics` allows, for error messages.
const TOPICS_EXPECTED: &str =
    "an array of [[topics]] tables (in RINGHUB_TOPICS: a JSON array of objects, \"\" for none)";

/// The messaging keys (appended to [`super::KEYS`]).
pub(super) const KEYS: &[Key] = &[
    key!(
        "node",
        "letters, digits, '-' or '_' (at most 64), or \"\" for a random name at start",
        |s, r| s.node = node(r)?,
        |s| (!s.node.is_empty()).then(|| Value::String(s.node.clone()))
    ),
    key!(
        "topics",
        "an array of [[topics]] tables (in RINGHUB_TOPICS: a JSON array of objects)",
        // `Settings::set_raw` calls `topics` itself, for errors that name the entry's key.
        |s, r| s.topics = topics(r, "").map_err(|e| Some(e.to_string()))?,
        |s| topics_v(&s.topics, |p| super::proxy::topic_proxies_v(s, p))
    ),
    key!(
        "store.backend",
        "memory, redb or redis",
        |s, r| {
            s.store.backend = text(r)?.parse::<StoreBackend>().map_err(|_| None)?;
            s.store_backend_given = true;
        },
        // Not given: printed as a comment naming the default chosen (see `report`).
        |s| s
            .store_backend_given
            .then(|| str_v(backend_name(s.store.backend)))
            .flatten()
    ),
    key!(
        "store.path",
        "a non-empty directory path",
        |s, r| s.store.path = store_path(r)?,
        |s| str_v(s.store.path.display())
    ),
    key!(
        "store.sync",
        "always or interval",
        |s, r| s.store.sync = text(r)?.parse::<StoreSync>().map_err(|_| None)?,
        |s| str_v(s.store.sync.name())
    ),
    key!(
        "store.sync_interval",
        "a duration from 1ms to 60s like 1s",
        |s, r| s.store.sync_interval = sync_interval(r)?,
        |s| dur_v(s.store.sync_interval)
    ),
    key!(
        "store.max_recover",
        "a positive integer",
        |s, r| s.store.max_recover = uint(r, 1, MAX_U32)? as usize,
        |s| int_v(s.store.max_recover)
    ),
    key!(
        "inbox.ack_timeout",
        "a positive duration like 10s",
        |s, r| s.inbox.ack_timeout = duration(r, false)?,
        |s| dur_v(s.inbox.ack_timeout)
    ),
    key!(
        "inbox.max_attempts",
        "a positive integer",
        |s, r| s.inbox.max_attempts = uint(r, 1, MAX_U32)? as u32,
        |s| int_v(s.inbox.max_attempts)
    ),
    key!(
        "inbox.max_messages",
        "a positive integer",
        |s, r| s.inbox.max_messages = uint(r, 1, MAX_U32)? as usize,
        |s| int_v(s.inbox.max_messages)
    ),
    key!(
        "inbox.ttl",
        "a positive duration like 7days",
        |s, r| s.inbox.ttl = duration(r, false)?,
        |s| dur_v(s.inbox.ttl)
    ),
    // A URL may carry a password: a refused one is quoted only redacted (by `redis_urls`).
    Key {
        quote_refused: false,
        ..key!(
        "cluster.redis",
        "a list of redis:// URLs (several: topics are spread over them), empty for a single node",
        |s, r| s.cluster.redis = redis_urls(r)?,
        // Passwords in URLs are never printed.
        |s| list_v(
            &s.cluster
                .redis
                .iter()
                .map(|u| crate::proto::wire::redact(u))
                .collect::<Vec<_>>()
        )
        )
    },
    key!(
        "cluster.prefix",
        "a non-empty name without spaces (at most 64), shared by the nodes of one cluster",
        |s, r| s.cluster.prefix = prefix(r)?,
        |s| str_v(&s.cluster.prefix)
    ),
    key!(
        "cluster.presence_ttl",
        "a duration of at least 1s like 30s",
        |s, r| s.cluster.presence_ttl = presence_ttl(r)?,
        |s| dur_v(s.cluster.presence_ttl)
    ),
    key!(
        "cluster.position_check",
        "a duration like 3s (0s: no periodic position check)",
        |s, r| s.cluster.position_check = duration(r, true)?,
        |s| dur_v(s.cluster.position_check)
    ),
    key!(
        "ui.enabled",
        "true or false",
        |s, r| s.ui.enabled = boolean(r)?,
        |s| Some(Value::Boolean(s.ui.enabled))
    ),
    key!(
        "compression.enabled",
        "true or false",
        |s, r| s.compression.enabled = boolean(r)?,
        |s| Some(Value::Boolean(s.compression.enabled))
    ),
    key!(
        "compression.level",
        "an integer from 0 (stored) to 9 (smallest)",
        |s, r| s.compression.level = uint(r, 0, 9)? as u32,
        |s| int_v(s.compression.level)
    ),
    key!(
        "compression.threshold",
        "a size in bytes",
        |s, r| s.compression.threshold = uint(r, 0, MAX_U32)? as usize,
        |s| int_v(s.compression.threshold)
    ),
    key!(
        "compression.context_takeover",
        "true or false",
        |s, r| s.compression.context_takeover = boolean(r)?,
        |s| Some(Value::Boolean(s.compression.context_takeover))
    ),
    key!(
        "compression.window",
        "9 to 15 (bits of the server's LZ77 window)",
        |s, r| s.compression.window = uint(r, 9, 15)? as u8,
        |s| int_v(s.compression.window)
    ),
    key!(
        "compression.delta_full_every",
        "a count of publications (0 = never)",
        |s, r| s.compression.delta_full_every = uint(r, 0, MAX_U32)? as u32,
        |s| int_v(s.compression.delta_full_every)
    ),
];

fn invalid(key: String, value: String, expected: String, origin: &str) -> SettingsError {
    SettingsError::Invalid {
        key,
        value,
        expected,
        origin: if origin.is_empty() {
            String::new()
        } else {
            format!(" {origin}")
        },
    }
}

/// Parses `topics`: a TOML array of tables, or (from text) a JSON array of objects. Errors name
/// the entry and its key, e.g. `topics[1].pattern`; `origin` is like `in ringhub.toml`.
pub(super) fn topics(raw: Raw<'_>, origin: &str) -> Result<Vec<Namespace>, SettingsError> {
    topics_and_proxies(raw, origin).map(|(list, _)| list)
}

/// [`topics`], with the entries' `proxy` tables.
pub(super) fn topics_and_proxies(
    raw: Raw<'_>,
    origin: &str,
) -> Result<(Vec<Namespace>, Vec<crate::config::proxy::TopicProxies>), SettingsError> {
    let whole = |why: Option<String>| {
        let expected = match why {
            Some(why) => format!("{TOPICS_EXPECTED}: {why}"),
            None => TOPICS_EXPECTED.to_string(),
        };
        invalid("topics".into(), raw.show(false), expected, origin)
    };
    let value: Value = match raw {
        Raw::Toml(v) => v.clone(),
        Raw::Text(t) if t.trim().is_empty() => Value::Array(Vec::new()),
        Raw::Text(t) => serde_json::from_str(t).map_err(|e| whole(Some(e.to_string())))?,
    };
    let Value::Array(items) = value else {
        return Err(whole(None));
    };
    let mut list: Vec<Namespace> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Table(t) = item else {
            let expected = format!("a table of {}", TOPIC_FIELDS.join(", "));
            return Err(invalid(
                format!("topics[{i}]"),
                item.to_string(),
                expected,
                origin,
            ));
        };
        if let Some(k) = t.keys().find(|k| !TOPIC_FIELDS.contains(&k.as_str())) {
            return Err(SettingsError::Unknown {
                key: format!("topics[{i}].{k}"),
                origin: origin.trim_start_matches("in ").to_string(),
                known: TOPIC_FIELDS.join(", "),
            });
        }
        let field = |name: &str, expected: &str, why: Why| {
            let value = t
                .get(name)
                .map_or("(not set)".into(), |v| Raw::Toml(v).show(false));
            let expected = match why {
                Some(why) => format!("{expected}: {why}"),
                None => expected.to_string(),
            };
            invalid(format!("topics[{i}].{name}"), value, expected, origin)
        };
        const PATTERN: &str = "a topic pattern (exact, or ending in '*')";
        let pattern = match t.get("pattern") {
            Some(Value::String(p)) => p.clone(),
            _ => return Err(field("pattern", PATTERN, None)),
        };
        Pattern::parse(&pattern).map_err(|e| field("pattern", PATTERN, Some(e.to_string())))?;
        if let Some(j) = list.iter().position(|n| n.pattern == pattern) {
            let expected = "a pattern no other [[topics]] entry has";
            return Err(field(
                "pattern",
                expected,
                Some(format!("topics[{j}] has it")),
            ));
        }
        let mut ns = Namespace {
            pattern,
            ..Namespace::default()
        };
        if let Some(v) = t.get("history_size") {
            let n = uint(Raw::Toml(v), 0, MAX_U32);
            ns.history_size = n
                .map_err(|w| field("history_size", "a non-negative integer (0 = no history)", w))?
                as usize;
        }
        if let Some(v) = t.get("history_ttl") {
            ns.history_ttl = duration(Raw::Toml(v), true)
                .map_err(|w| field("history_ttl", "a duration like 10m (0s = no age limit)", w))?;
        }
        if let Some(v) = t.get("presence") {
            ns.presence =
                boolean(Raw::Toml(v)).map_err(|w| field("presence", "true or false", w))?;
        }
        if let Some(v) = t.get("join_leave") {
            ns.join_leave =
                boolean(Raw::Toml(v)).map_err(|w| field("join_leave", "true or false", w))?;
        }
        list.push(ns);
    }
    // The engine's own check, which the server runs at start.
    Namespaces::new(&list).map_err(|e| whole(Some(e)))?;
    let proxies = super::proxy::topic_proxies(&items).map_err(|(i, expected)| {
        let value = items[i]
            .get("proxy")
            .map_or("(not set)".into(), |v| Raw::Toml(v).show(false));
        invalid(format!("topics[{i}].proxy"), value, expected, origin)
    })?;
    Ok((list, proxies))
}

impl Settings {
    /// The messaging checks of [`Settings::validate`] that single keys cannot make.
    /// The store backend used: `store.backend` if given, else `redis` when `cluster.redis` is
    /// set, else `redb`.
    pub fn store_backend(&self) -> StoreBackend {
        if !self.store_backend_given && !self.cluster.redis.is_empty() {
            StoreBackend::Redis
        } else {
            self.store.backend
        }
    }

    /// The warning for a cluster whose nodes keep history and inboxes each on their own.
    pub(super) fn store_warning(&self) -> Option<String> {
        let backend = self.store_backend();
        (backend != StoreBackend::Redis && !self.cluster.redis.is_empty()).then(|| {
            let name = backend_name(backend);
            format!(
                "store.backend = \"{name}\" with cluster.redis set: history and durable inboxes \
                 are per node (a topic gets different offsets on each node, a client reconnecting \
                 to another node does not recover); use store.backend = \"redis\""
            )
        })
    }

    pub(super) fn validate_messaging(&self) -> Result<(), SettingsError> {
        if self.store_backend() == StoreBackend::Redis && self.cluster.redis.is_empty() {
            return Err(SettingsError::Invalid {
                key: "store.backend".into(),
                value: "\"redis\"".into(),
                expected: "memory or redb while cluster.redis is empty: the redis store keeps \
                           its data in the cluster's Redis"
                    .into(),
                origin: String::new(),
            });
        }
        let path = &self.store.path;
        if self.store_backend() == StoreBackend::Redb && path.exists() && !path.is_dir() {
            return Err(SettingsError::Invalid {
                key: "store.path".into(),
                value: format!("{:?}", path.display().to_string()),
                expected: "a directory (or a path where one can be created), not a file".into(),
                origin: String::new(),
            });
        }
        Ok(())
    }
}
