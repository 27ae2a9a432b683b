//! The library's entry point: [`RingHub::builder`] registers handlers and middleware, [`Server`]
//! starts one pinned shard thread per core, [`ServerHandle`] publishes from outside and shuts down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::{Config, IoMode, Namespaces};
use crate::proto::envelope;
use crate::proto::error::{HandlerError, ServerError};
use crate::proto::handler::{Handler, Layered, Middleware};
use crate::proto::pattern::{validate_topic, Pattern, PatternMap};
use crate::proto::stats::{ShardStats, StatsSnapshot};
use crate::shard::hooks::Hooks;
use crate::shard::inbox::{Inbox, ShardMsg};
use crate::shard::shared::{HubShared, Links, NodeLink, Route};
use crate::store::Store;
use crate::transport;

/// Namespace for [`RingHub::builder`].
pub struct RingHub;

impl RingHub {
    /// A builder with default settings and no handlers.
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
            routes: Vec::new(),
            middleware: Vec::new(),
            hooks: Hooks::default(),
            store: None,
        }
    }
}

/// Configures and builds a [`Server`].
pub struct Builder {
    pub(super) config: Config,
    routes: Vec<(String, Arc<dyn Handler>, bool)>,
    middleware: Vec<Arc<dyn Middleware>>,
    pub(super) hooks: Hooks,
    pub(super) store: Option<Box<dyn Store>>,
}

impl Builder {
    /// Replaces every setting at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// Serve the chat demo at `/` and the admin dashboard at `/admin` (default true).
    pub fn ui(mut self, enabled: bool) -> Self {
        self.config.ui = enabled;
        self
    }
    /// Address to listen on.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }
    /// Shard threads (0 = one per CPU).
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }
    /// I/O backend.
    pub fn io(mut self, io: IoMode) -> Self {
        self.config.io = io;
        self
    }
    /// Worker threads for blocking handlers.
    pub fn handler_threads(mut self, n: usize) -> Self {
        self.config.handler_threads = n;
        self
    }
    /// permessage-deflate with the clients that offer it (`[compression]`).
    pub fn compression(mut self, c: crate::config::CompressionConfig) -> Self {
        self.config.compression = c;
        self
    }
    /// Signed, batched, at-least-once events to the application's backend (`[webhooks]`; see
    /// [`WebhookConfig`](crate::config::WebhookConfig)).
    pub fn webhooks(mut self, w: crate::config::WebhookConfig) -> Self {
        self.config.webhooks = w;
        self
    }
    /// Largest accepted message in bytes.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }
    /// Outbound queue bound per connection in bytes.
    pub fn outbound_queue(mut self, bytes: usize) -> Self {
        self.config.outbound_queue = bytes;
        self
    }
    /// On shutdown, how long `/readyz` answers 503 and new clients get 503 before the listeners
    /// close (default 0).
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.config.drain_delay = delay;
        self
    }
    /// Time a closing connection gets to finish the close handshake before its socket is cut.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }
    /// Ping interval and idle timeout.
    pub fn keepalive(mut self, ping_interval: Duration, idle_timeout: Duration) -> Self {
        self.config.ping_interval = ping_interval;
        self.config.idle_timeout = idle_timeout;
        self
    }
    /// How long an HTTP connection stays open for its next request (zero: one request per
    /// connection). Default 60 s.
    pub fn http_keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.config.http_keepalive_timeout = timeout;
        self
    }
    /// Sets the door policy: authentication, permissions, origins, IP lists, caps, rate limits,
    /// TLS.
    pub fn guard(mut self, guard: crate::policy::guard::Guard) -> Self {
        self.config.guard = guard;
        self
    }
    /// Enables the HTTP API under `/api/v1/` for callers presenting `key` as a bearer token.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }
    /// Enables the echo route at `path`.
    pub fn echo_path(mut self, path: impl Into<String>) -> Self {
        self.config.echo_path = Some(path.into());
        self
    }
    /// Serves the Socket.IO namespace `nsp` (starting with `/`) at `/socket.io/`, besides the
    /// configured ones (`/` by default); an unknown one is refused with "Invalid namespace".
    pub fn socketio_namespace(mut self, nsp: impl Into<String>) -> Self {
        let nsp = nsp.into();
        if !self.config.socketio_namespaces.contains(&nsp) {
            self.config.socketio_namespaces.push(nsp);
        }
        self
    }

    /// Routes topics matching `pattern` (exact, or `prefix*`) to `handler`, run inline on the
    /// connection's shard: it must not block.
    pub fn handle(mut self, pattern: impl Into<String>, handler: impl Handler) -> Self {
        self.routes.push((pattern.into(), Arc::new(handler), false));
        self
    }

    /// Like [`handle`](Self::handle), but the handler runs on the handler pool, so it may block.
    pub fn handle_blocking(mut self, pattern: impl Into<String>, handler: impl Handler) -> Self {
        self.routes.push((pattern.into(), Arc::new(handler), true));
        self
    }

    /// Wraps every handler in `mw`; the first layer added is the outermost.
    pub fn layer(mut self, mw: impl Middleware) -> Self {
        self.middleware.push(Arc::new(mw));
        self
    }

    /// Registers the default pub/sub handler on `*` (every topic without a more specific handler
    /// is published to its subscribers).
    pub fn pubsub(self) -> Self {
        self.handle("*", crate::proto::handler::pubsub)
    }

    /// Validates the configuration and patterns.
    pub fn build(self) -> Result<Server, ServerError> {
        self.config.validate()?;
        let mut router = PatternMap::new();
        let blocking_routes = self.routes.iter().any(|r| r.2);
        for (pattern, handler, blocking) in self.routes {
            let p = Pattern::parse(&pattern)
                .map_err(|e| ServerError::Config(format!("handler pattern '{pattern}': {e}")))?;
            let handler = self.middleware.iter().rev().fold(handler, |inner, mw| {
                Arc::new(Layered {
                    mw: mw.clone(),
                    inner,
                }) as Arc<dyn Handler>
            });
            if router.insert(p, Route { handler, blocking }).is_some() {
                return Err(ServerError::Config(format!(
                    "handler pattern '{pattern}' registered twice"
                )));
            }
        }
        Ok(Server {
            config: self.config,
            router,
            blocking: blocking_routes,
            hooks: self.hooks,
            store: self.store,
        })
    }
}

/// A built server, not yet running.
pub struct Server {
    config: Config,
    router: PatternMap<Route>,
    /// Whether any handler runs on the pool (no pool threads or queue otherwise).
    blocking: bool,
    hooks: Hooks,
    store: Option<Box<dyn Store>>,
}

/// Which backend the shards actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Uring,
    Epoll,
}

impl Server {
    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub fn run(self) -> Result<(), ServerError> {
        let handle = self.start()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Thread)?;
        let interval = handle.hub.config.stats_interval;
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            let log_stats = async {
                if interval.is_zero() {
                    return std::future::pending().await;
                }
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let s = handle.stats();
                    tracing::info!(
                        connections = s.connections,
                        msgs_in = s.messages_in,
                        msgs_out = s.messages_out,
                        bytes_in = s.bytes_in,
                        bytes_out = s.bytes_out,
                        errors = s.errors,
                        slow_consumers = s.slow_consumers,
                        "stats"
                    );
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = term => tracing::info!("SIGTERM: shutting down"),
                _ = log_stats => {}
            }
        });
        handle.shutdown();
        handle.join();
        tracing::info!("shutdown complete");
        Ok(())
    }

    /// Starts the shards and the pool and returns at once.
    pub fn start(self) -> Result<ServerHandle, ServerError> {
        let n = self.config.shard_count();
        let backend = choose_backend(self.config.io)?;
        let listeners = transport::bind_listeners(self.config.listen, n).map_err(|source| {
            ServerError::Listen {
                addr: self.config.listen,
                source,
            }
        })?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: self.config.listen,
                source,
            })?;
        // The pool exists only for blocking handlers; its bounded queue's slots are allocated
        // and touched up front, so it is sized for bursts, not for every message of a second.
        let (pool_tx, pool_rx) = crossbeam_channel::bounded(if self.blocking { 8_192 } else { 1 });
        let (api_tx, api_rx) = tokio::sync::mpsc::unbounded_channel();
        let namespaces = Namespaces::new(&self.config.topics).map_err(ServerError::Config)?;
        let node: Arc<str> = if self.config.node.is_empty() {
            crate::store::new_epoch()[..6].into()
        } else {
            self.config.node.as_str().into()
        };
        let store = match self.store {
            Some(s) => s,
            None => {
                crate::runtime::store::open_store(&self.config.store, &self.config.cluster, &node)?
            }
        };
        let (store_tx, store_rx) = crossbeam_channel::unbounded();
        let (broker, start_broker) = crate::cluster::broker_for(&self.config.cluster, &node)?;
        self.config.proxy.validate().map_err(ServerError::Config)?;
        let proxy_channel = self.config.proxy.any().then(crate::runtime::proxy::channel);
        let proxy = proxy_channel.as_ref().map(|c| c.client.clone());
        let hub = Arc::new(HubShared {
            shards: n,
            router: self.router,
            inboxes: (0..n).map(|_| Inbox::default()).collect(),
            stats: (0..n).map(|_| ShardStats::default()).collect(),
            stopping: AtomicBool::new(false),
            namespaces,
            hooks: self.hooks,
            events: Default::default(),
            store_fault: std::sync::Mutex::new(None),
            store_stats: Default::default(),
            proxy_stats: Default::default(),
            sio_sessions: crate::shard::sio_sessions::SioSessions::new(store.keeps_sio_sessions()),
            webhooks: Default::default(),
            api_keys: Default::default(),
            // History on the shards needs one node (a cluster reads history in Redis).
            shard_history: (store.history_in_shards() && !broker.clustered())
                .then(|| store.inbox_epoch()),
            config: self.config,
            links: Links {
                pool: self.blocking.then_some(pool_tx),
                api: Some(api_tx),
                store: Some(store_tx),
                proxy,
            },
            cluster: NodeLink {
                clustered: broker.clustered(),
                remote_store: store.delivers(),
                broker,
                node,
            },
        });
        start_broker(hub.clone())?;
        let proxy_thread = match proxy_channel {
            Some(c) => Some(crate::runtime::proxy::spawn(Arc::downgrade(&hub), c)?),
            None => None,
        };
        let store_thread = {
            let seq = crate::runtime::store::Sequencer::new(store, hub.clone(), store_rx);
            std::thread::Builder::new()
                .name("ringhub-store".into())
                .spawn(move || seq.run())
                .map_err(ServerError::Thread)?
        };
        let webhook_thread = crate::runtime::webhook::spawn(hub.clone())?;
        let (api_stop, api_stop_rx) = tokio::sync::oneshot::channel();
        let api = {
            let hub = hub.clone();
            std::thread::Builder::new()
                .name("ringhub-api".into())
                .spawn(move || crate::runtime::control::run(hub, api_rx, api_stop_rx))
                .map_err(ServerError::Thread)?
        };
        let (pool_stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut pool = Vec::new();
        let workers = if self.blocking {
            hub.config.handler_threads.max(1)
        } else {
            0
        };
        for i in 0..workers {
            let (hub, rx, stop) = (hub.clone(), pool_rx.clone(), stop_rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("ringhub-pool-{i}"))
                .spawn(move || crate::runtime::pool::worker(hub, rx, stop))
                .map_err(ServerError::Thread)?;
            pool.push(t);
        }
        let cores = if hub.config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut threads = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let hub = hub.clone();
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let t = std::thread::Builder::new()
                .name(format!("ringhub-shard-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let r = match backend {
                        Backend::Uring => transport::uring::run(i, hub, listener),
                        Backend::Epoll => transport::epoll::run(i, hub, listener),
                    };
                    if let Err(e) = r {
                        tracing::error!(shard = i, error = %e, "shard failed to start");
                    }
                })
                .map_err(ServerError::Thread)?;
            threads.push(t);
        }
        tracing::info!(addr = %local_addr, shards = n, backend = ?backend, "ringhub listening");
        Ok(ServerHandle {
            hub,
            local_addr,
            threads,
            pool,
            pool_stop,
            api: Some(api),
            api_stop: Some(api_stop),
            store_thread: Some(store_thread),
            webhook_thread,
            proxy_thread,
        })
    }
}

fn choose_backend(mode: IoMode) -> Result<Backend, ServerError> {
    match mode {
        IoMode::Epoll => {
            tracing::info!("I/O backend: epoll (forced by --io epoll)");
            Ok(Backend::Epoll)
        }
        IoMode::Uring => match transport::uring::probe() {
            Ok(()) => {
                tracing::info!("I/O backend: io_uring (forced by --io uring)");
                Ok(Backend::Uring)
            }
            Err(e) => Err(ServerError::UringUnavailable(e)),
        },
        IoMode::Auto => match transport::uring::probe() {
            Ok(()) => {
                tracing::info!("I/O backend: io_uring");
                Ok(Backend::Uring)
            }
            Err(e) => {
                tracing::warn!("I/O backend: epoll, because io_uring is unavailable ({e}); seccomp or kernel settings may forbid it");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// A running server.
pub struct ServerHandle {
    pub(super) hub: Arc<HubShared>,
    local_addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
    pool: Vec<JoinHandle<()>>,
    pool_stop: crossbeam_channel::Sender<()>,
    api: Option<JoinHandle<()>>,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
    store_thread: Option<JoinHandle<()>>,
    /// The webhook sender, when webhooks are configured.
    webhook_thread: Option<JoinHandle<()>>,
    /// The backend proxies' client, when a proxy is configured.
    proxy_thread: Option<crate::runtime::proxy::ProxyThread>,
}

impl ServerHandle {
    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The state every shard shares (for embedding adapters such as `crate::axum`).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<HubShared> {
        &self.hub
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.hub.shards
    }

    /// Publishes `{topic, event, data}` to every subscriber on every shard.
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), HandlerError> {
        validate_topic(topic).map_err(|e| HandlerError::bad_request(e.to_string()))?;
        let data: Box<RawValue> = serde_json::value::to_raw_value(data)?;
        let out = crate::proto::handler::Outgoing {
            topic,
            event,
            data: Some(data.get().as_bytes()),
            exclude_sender: false,
            reply_id: None,
        };
        // A topic with history is sequenced (and stored) by the store thread first.
        if let Some(r) = self.hub.publish_stored(&out, None) {
            return r.map(drop);
        }
        let frame = envelope::publication(topic, event, Some(data.get().as_bytes()));
        crate::shard::publish_external(&self.hub, topic, frame);
        Ok(())
    }

    /// Counters of one shard.
    pub fn shard_stats(&self, shard: usize) -> Option<StatsSnapshot> {
        self.hub.stats.get(shard).map(ShardStats::snapshot)
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> StatsSnapshot {
        self.hub
            .stats
            .iter()
            .map(ShardStats::snapshot)
            .fold(StatsSnapshot::default(), |a, b| a + b)
    }

    /// Starts a graceful shutdown: stop accepting, close every connection with 1001, drain.
    pub fn shutdown(&self) {
        if !self.hub.stopping.swap(true, Ordering::SeqCst) {
            for inbox in self.hub.inboxes.iter() {
                inbox.push(ShardMsg::Shutdown);
            }
        }
    }

    /// Waits for the shards to finish, then stops the pool.
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // No shard asks the backend any more: calls still out have no connection to answer.
        if let Some(p) = self.proxy_thread.take() {
            p.stop();
        }
        // Disconnecting the stop channel ends the workers once queued jobs are done.
        drop(self.pool_stop);
        for t in self.pool.drain(..) {
            let _ = t.join();
        }
        // The webhook sender stops first (it waits on the store); its events stay in the outbox.
        crate::runtime::webhook::stop(&self.hub);
        if let Some(t) = self.webhook_thread.take() {
            let _ = t.join();
        }
        // The store commits what is queued and stops; then the API thread, which may wait for
        // its answers.
        if let Some(tx) = &self.hub.links.store {
            let _ = tx.send(crate::shard::jobs::StoreJob::Stop);
        }
        if let Some(t) = self.store_thread.take() {
            let _ = t.join();
        }
        // Shards and the store are gone: nothing hands the broker work any more.
        self.hub.cluster.broker.stop();
        drop(self.api_stop.take());
        if let Some(t) = self.api.take() {
            let _ = t.join();
        }
    }
}
