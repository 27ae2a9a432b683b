//! Settings of the messaging features: topic namespaces (`[[topics]]`), the store (`[store]`)
//! and durable user inboxes (`[inbox]`).

use std::path::PathBuf;
use std::time::Duration;

use crate::proto::pattern::{Pattern, PatternMap};
use crate::store::{HistoryLimits, InboxLimits};

/// One `[[topics]]` entry: what topics matching `pattern` get. The longest matching pattern wins
/// (exact beats wildcard); topics matching none get the v1 behaviour (no history, no presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Exact topic or `prefix*`.
    pub pattern: String,
    /// Publications kept per topic; 0 = no history (no offsets, no store, zero cost).
    pub history_size: usize,
    /// Publications older than this are not served (zero = kept until trimmed by size).
    pub history_ttl: Duration,
    /// Whether `presence` and `presence_stats` queries are allowed.
    pub presence: bool,
    /// Whether subscribers receive `join` and `leave` events.
    pub join_leave: bool,
}

impl Default for Namespace {
    fn default() -> Self {
        Self {
            pattern: "*".into(),
            history_size: 0,
            history_ttl: Duration::ZERO,
            presence: false,
            join_leave: false,
        }
    }
}

impl Namespace {
    /// Whether topics here keep history (and so carry offsets).
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }
    /// The store's view of the history settings.
    pub fn limits(&self) -> HistoryLimits {
        HistoryLimits {
            size: self.history_size,
            ttl: self.history_ttl,
        }
    }
}

/// The namespaces compiled for lookup by topic.
#[derive(Debug)]
pub struct Namespaces {
    map: PatternMap<Namespace>,
    any: bool,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            map: PatternMap::new(),
            any: false,
        }
    }
}

impl Namespaces {
    /// Compiles the list; a pattern that does not parse or appears twice is an error.
    pub fn new(list: &[Namespace]) -> Result<Self, String> {
        let mut map = PatternMap::new();
        for ns in list {
            let p = Pattern::parse(&ns.pattern)
                .map_err(|e| format!("[[topics]] pattern '{}': {e}", ns.pattern))?;
            if map.insert(p, ns.clone()).is_some() {
                return Err(format!("[[topics]] pattern '{}' appears twice", ns.pattern));
            }
        }
        Ok(Self {
            any: !list.is_empty(),
            map,
        })
    }

    /// The namespace of a topic (or, for a pattern, of the pattern itself as a topic name), if any.
    #[inline]
    pub fn get(&self, topic: &str) -> Option<&Namespace> {
        if !self.any {
            return None;
        }
        self.map.best_match(topic)
    }

    /// The namespace of `topic` if it keeps history.
    #[inline]
    pub fn history(&self, topic: &str) -> Option<&Namespace> {
        self.get(topic).filter(|n| n.has_history())
    }

    /// Whether any namespace is configured.
    pub fn is_empty(&self) -> bool {
        !self.any
    }
}

/// Which [`Store`](crate::store::Store) holds history and inboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreBackend {
    /// In memory: lost on restart (every stream gets a new epoch).
    #[default]
    Memory,
    /// redb on disk under `path`: survives `kill -9`; a power loss too with the default
    /// [`StoreSync::Always`] (an `fdatasync` per group commit).
    Redb,
    /// Redis, at the `[cluster] redis` URLs: history and inboxes shared by every node of a
    /// cluster (offsets gapless cluster-wide); survives what Redis's persistence keeps.
    Redis,
}

setting_words!(StoreBackend, "store backend", "memory" => Memory, "redb" => Redb, "redis" => Redis);

/// When the redb store syncs its write-ahead log (`[store] sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreSync {
    /// Before a batch is answered (`fdatasync` per batch): every answered write survives a
    /// process crash, a kernel crash and a power loss.
    #[default]
    Always,
    /// A batch is answered once its log record is written; the log is synced within
    /// [`StoreConfig::sync_interval`] of a write, at checkpoints and at a clean stop. Every
    /// answered write survives a process crash (`kill -9`: the kernel keeps what was written);
    /// a kernel crash or power loss can lose the writes answered in the last interval. Opt-in,
    /// like Redis's `appendfsync everysec` or PostgreSQL's `synchronous_commit = off`.
    Interval,
}

setting_words!(StoreSync, "store sync policy", "always" => Always, "interval" => Interval);

/// The bounds of [`StoreConfig::sync_interval`].
pub const SYNC_INTERVAL_MIN: Duration = Duration::from_millis(1);
/// See [`SYNC_INTERVAL_MIN`].
pub const SYNC_INTERVAL_MAX: Duration = Duration::from_secs(60);

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The backend. The server binary defaults to `redb` (`redis` when `[cluster] redis` is
    /// set); the library to `memory`. `redis` needs `[cluster] redis`.
    pub backend: StoreBackend,
    /// Directory of the redb database (`ringhub.redb` and its write-ahead log `ringhub.wal`
    /// inside it).
    pub path: PathBuf,
    /// Most publications a `since` recovery returns; beyond, `recovered: false`.
    pub max_recover: usize,
    /// When the redb store makes an answered batch durable against a power loss (default
    /// [`StoreSync::Always`]). Ignored by the other backends.
    pub sync: StoreSync,
    /// With [`StoreSync::Interval`]: the longest a written batch waits for its `fdatasync`
    /// ([`SYNC_INTERVAL_MIN`] to [`SYNC_INTERVAL_MAX`]; default 1 s).
    pub sync_interval: Duration,
}

impl StoreConfig {
    /// The interval between log syncs, `None` for a sync per batch (what the redb store is
    /// given).
    pub fn sync_every(&self) -> Option<Duration> {
        (self.sync == StoreSync::Interval).then_some(self.sync_interval)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            path: PathBuf::from("./ringhub-data"),
            max_recover: 1000,
            sync: StoreSync::Always,
            sync_interval: Duration::from_secs(1),
        }
    }
}

/// `[inbox]`: durable user messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxConfig {
    /// Time a delivered message waits for its ack before it is written again.
    pub ack_timeout: Duration,
    /// Writes of one message to a connected user before the server stops retrying (it is
    /// still delivered on the user's next connection).
    pub max_attempts: u32,
    /// Messages kept per user; one more drops the oldest.
    pub max_messages: usize,
    /// Unacknowledged messages expire after this.
    pub ttl: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(10),
            max_attempts: 5,
            max_messages: 1000,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl InboxConfig {
    /// The store's view of the limits.
    pub fn limits(&self) -> InboxLimits {
        InboxLimits {
            max_messages: self.max_messages,
            ttl: self.ttl,
        }
    }
}
