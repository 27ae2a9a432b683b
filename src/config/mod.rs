//! Engine settings. The library takes them through [`crate::Builder`]; the binary fills them from
//! its command line.

/// `name` and `FromStr` for a settings enum spelled one word per variant: a word not listed is
/// refused with an error naming `$what` and every word allowed.
macro_rules! setting_words {
    ($ty:ident, $what:literal, $($word:literal => $var:ident),+ $(,)?) => {
        impl $ty {
            /// Its spelling in settings.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$var => $word,)+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($ty::$var),)+
                    _ => Err(format!(
                        "unknown {} '{s}' (expected {})",
                        $what,
                        $crate::config::one_of(&[$($word),+])
                    )),
                }
            }
        }
    };
}

/// `a`, `a or b`, `a, b or c`: the words a setting allows, for its error.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

mod cluster;
mod messaging;
pub mod proxy;
pub mod settings;
pub mod webhooks;

pub use cluster::ClusterConfig;
pub use messaging::{
    InboxConfig, Namespace, Namespaces, StoreBackend, StoreConfig, StoreSync, SYNC_INTERVAL_MAX,
    SYNC_INTERVAL_MIN,
};
pub use webhooks::WebhookConfig;

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::error::ServerError;

/// Which I/O backend the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring where the kernel allows it, else epoll (logged once at start).
    #[default]
    Auto,
    /// io_uring, or fail to start.
    Uring,
    /// epoll through tokio.
    Epoll,
}

setting_words!(IoMode, "io mode", "auto" => Auto, "uring" => Uring, "epoll" => Epoll);

/// A bare Engine.IO endpoint: Engine.IO v4 sessions (WebSocket, long-polling, the upgrade,
/// heartbeats) with no Socket.IO layer, for clients that speak `engine.io-client` (or the
/// protocol) directly. Each message a client sends reaches the handlers as an envelope on
/// `topic` (event `message`), and what the server sends the connection goes back as one message
/// (`proto::engineio_bare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineIoEndpoint {
    /// Where it is served (say `/engine.io/`; the same path without its trailing slash too).
    pub path: String,
    /// The topic its clients' messages arrive on: what handlers are registered for, and what
    /// permissions and rate limits apply to.
    pub topic: String,
}

/// Every engine setting, with production defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Shard threads; 0 means one per CPU. At most 64.
    pub shards: usize,
    /// I/O backend.
    pub io: IoMode,
    /// Pin shard threads to cores.
    pub pin_cores: bool,
    /// Path of the echo route (for conformance tests), off when `None`.
    pub echo_path: Option<String>,
    /// Path WebSocket clients connect to.
    pub ws_path: String,
    /// Socket.IO namespaces served at `/socket.io/` (each starts with `/`; at most 127); empty
    /// turns the Socket.IO endpoint off. Default `["/"]`.
    pub socketio_namespaces: Vec<String>,
    /// How long a Socket.IO session stays recoverable after its connection dropped (socket.io's
    /// `connectionStateRecovery.maxDisconnectionDuration`); zero turns recovery off (no `pid`,
    /// no offsets on events). Default 2 minutes.
    pub socketio_recovery: Duration,
    /// A bare Engine.IO endpoint (Engine.IO v4 with no Socket.IO layer), off when `None`; set
    /// with [`Builder::engineio`](crate::Builder::engineio).
    pub engineio: Option<EngineIoEndpoint>,
    /// Largest message (after reassembly) a client may send; larger closes with 1009.
    pub max_message_size: usize,
    /// Idle time after which the server pings a connection.
    pub ping_interval: Duration,
    /// Silence after which a connection is dropped.
    pub idle_timeout: Duration,
    /// Bytes queued to one connection before it counts as a slow consumer (closed with 1008).
    pub outbound_queue: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Worker threads for handlers registered as blocking.
    pub handler_threads: usize,
    /// Time allowed for the HTTP upgrade request to arrive.
    pub handshake_timeout: Duration,
    /// How long an HTTP connection (API, probes, metrics, pages) stays open waiting for its
    /// next request; zero answers one request per connection.
    pub http_keepalive_timeout: Duration,
    /// Time a closing connection gets to finish the close handshake before its socket is cut.
    pub close_timeout: Duration,
    /// Time graceful shutdown waits for connections to drain.
    pub shutdown_timeout: Duration,
    /// On shutdown, how long `/readyz` answers 503 and new clients are refused with 503 before
    /// the listeners close (load balancers notice and stop sending traffic meanwhile).
    pub drain_delay: Duration,
    /// Interval of the one-line stats summary in the log (zero disables it).
    pub stats_interval: Duration,
    /// Key for the HTTP API (`Authorization: Bearer KEY`); the API is off without one.
    pub api_key: Option<String>,
    /// Authentication, permissions, origin and IP checks, caps, rate limits, TLS.
    pub guard: crate::policy::guard::Guard,
    /// Topic namespaces (`[[topics]]`): history, presence, join/leave per pattern.
    pub topics: Vec<Namespace>,
    /// Where history and inboxes are kept (`[store]`).
    pub store: StoreConfig,
    /// Durable user messages (`[inbox]`).
    pub inbox: InboxConfig,
    /// Serve the chat demo at `/` and the admin dashboard at `/admin` (`[ui] enabled`).
    pub ui: bool,
    /// This node's name in client ids (`"<node>.<n>"`); empty = a random one at start. In a
    /// cluster, every node needs its own (it identifies the node's publications and entry).
    pub node: String,
    /// Other nodes, through Redis (`[cluster]`); none by default (a single node).
    pub cluster: ClusterConfig,
    /// permessage-deflate (`[compression]`).
    pub compression: CompressionConfig,
    /// The application backend's proxies (`[proxy]`); none by default.
    pub proxy: proxy::ProxyConfig,
    /// Events sent to the application's backend (`[webhooks]`); off by default.
    pub webhooks: WebhookConfig,
}

/// permessage-deflate (RFC 7692) with the clients that offer it (`[compression]`). Each
/// message is compressed on its own (no context takeover either way) unless
/// `context_takeover` is on, so a publication is compressed once per shard and an idle
/// connection holds no compression state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Accept permessage-deflate offers (default true).
    pub enabled: bool,
    /// zlib level: 0 (stored) to 9 (smallest, slowest); default 3.
    pub level: u32,
    /// Payloads shorter than this many bytes are sent uncompressed (default 128).
    pub threshold: usize,
    /// Keep the LZ77 window of each client that allows it (its offer leaves out
    /// `server_no_context_takeover`), for chatty one-to-one streams (default false). Such a
    /// connection gets its own compressor for its whole life (hundreds of KB once it has
    /// received a compressed message) and every message to it, publications included, is
    /// compressed for it alone: see DESIGN.md and BENCHMARKS.md, "Context takeover".
    pub context_takeover: bool,
    /// The largest LZ77 window (9..=15 bits) the server compresses with (default 15): a
    /// smaller one is announced as `server_max_window_bits` to every client, bounding what a
    /// kept window (`context_takeover`) costs per connection; shared frames hardly change.
    pub window: u8,
    /// Delta subscriptions (`delta: "fossil"`): every this-many-th publication of a topic is
    /// sent full to every subscriber, whatever they last received (default 100; 0 = never).
    pub delta_full_every: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            level: 3,
            threshold: 128,
            context_takeover: false,
            window: 15,
            delta_full_every: 100,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            shards: 0,
            io: IoMode::Auto,
            pin_cores: true,
            echo_path: None,
            ws_path: "/ws".into(),
            socketio_namespaces: vec!["/".into()],
            socketio_recovery: Duration::from_secs(120),
            engineio: None,
            max_message_size: 1 << 20,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            outbound_queue: 4 << 20,
            max_subscriptions: 1000,
            handler_threads: 4,
            handshake_timeout: Duration::from_secs(10),
            http_keepalive_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            stats_interval: Duration::from_secs(60),
            api_key: None,
            guard: crate::policy::guard::Guard::default(),
            topics: Vec::new(),
            store: StoreConfig::default(),
            inbox: InboxConfig::default(),
            node: String::new(),
            cluster: ClusterConfig::default(),
            compression: CompressionConfig::default(),
            proxy: proxy::ProxyConfig::default(),
            webhooks: WebhookConfig::default(),
            ui: true,
        }
    }
}

/// Whether `path` belongs to the web pages.
pub(crate) fn is_ui_path(path: &str) -> bool {
    matches!(path, "/" | "/admin") || path.starts_with("/assets/")
}

impl Config {
    /// Whether the pages serve `path` under this config: `[ui] enabled`, and not a path the
    /// operator gave the WebSocket or echo route (`ws_path = "/"` keeps `/` a WebSocket endpoint).
    pub(crate) fn serves_ui(&self, path: &str) -> bool {
        self.ui
            && is_ui_path(path)
            && path != self.ws_path
            && self.echo_path.as_deref() != Some(path)
    }

    /// The shard count after resolving 0 to the number of CPUs.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(64)
        } else {
            self.shards
        }
    }

    /// Checks ranges; the server refuses to start on an error.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |m: &str| Err(ServerError::Config(m.to_string()));
        if self.compression.level > 9 {
            return bad("compression level must be between 0 and 9");
        }
        if self.shards > 64 {
            return bad("shards must be between 0 (one per CPU) and 64");
        }
        if self.max_message_size < 125 {
            return bad("max-message-size must be at least 125 bytes");
        }
        if self.outbound_queue < 1024 {
            return bad("outbound-queue must be at least 1024 bytes");
        }
        if self.ping_interval.is_zero() || self.idle_timeout.is_zero() {
            return bad("ping-interval and idle-timeout must be positive");
        }
        if !self.ws_path.starts_with('/')
            || self
                .echo_path
                .as_deref()
                .is_some_and(|p| !p.starts_with('/'))
        {
            return bad("paths must start with '/'");
        }
        if self.echo_path.as_deref() == Some(self.ws_path.as_str()) {
            return bad("echo-path must differ from the WebSocket path");
        }
        if let Some(e) = &self.engineio {
            let trimmed = e.path.trim_end_matches('/');
            let taken = [
                Some(self.ws_path.as_str()),
                self.echo_path.as_deref(),
                Some("/sse"),
            ]
            .into_iter()
            .flatten()
            .chain((!self.socketio_namespaces.is_empty()).then_some("/socket.io"))
            .any(|p| p.trim_end_matches('/') == trimmed);
            if !e.path.starts_with('/') || trimmed.is_empty() || taken || self.serves_ui(trimmed) {
                return bad(
                    "engineio path must start with '/' and differ from the other endpoints",
                );
            }
            crate::proto::pattern::validate_topic(&e.topic)
                .map_err(|err| ServerError::Config(format!("engineio topic: {err}")))?;
        }
        Namespaces::new(&self.topics).map_err(ServerError::Config)?;
        self.proxy.validate().map_err(ServerError::Config)?;
        if self.store.max_recover == 0 {
            return bad("store max_recover must be at least 1");
        }
        if !(SYNC_INTERVAL_MIN..=SYNC_INTERVAL_MAX).contains(&self.store.sync_interval) {
            return bad("store sync_interval must be from 1ms to 60s");
        }
        if self.inbox.ack_timeout.is_zero() || self.inbox.max_attempts == 0 {
            return bad("inbox ack_timeout and max_attempts must be positive");
        }
        if self.inbox.max_messages == 0 || self.inbox.ttl.is_zero() {
            return bad("inbox max_messages and ttl must be positive");
        }
        if !self.node.is_empty()
            && !self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad("node must be letters, digits, '-' or '_'");
        }
        if self.cluster.prefix.is_empty() {
            return bad("cluster prefix must not be empty");
        }
        self.webhooks.validate().map_err(ServerError::Config)?;
        if self.store.backend == StoreBackend::Redis && self.cluster.redis.is_empty() {
            return bad("the redis store needs the cluster's Redis URLs (cluster redis)");
        }
        Ok(())
    }
}
