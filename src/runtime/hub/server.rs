//! A built server and its start: [`Server::start`] opens the store, wires the shared state and
//! spawns every thread (shards on the chosen I/O backend, pool, store, API, webhook, proxy);
//! [`Server::run`] also waits for a signal and shuts down.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::handle::ServerHandle;
use crate::config::{Config, IoMode, Namespaces};
use crate::proto::error::ServerError;
use crate::proto::pattern::PatternMap;
use crate::proto::stats::ShardStats;
use crate::shard::hooks::Hooks;
use crate::shard::inbox::Inbox;
use crate::shard::shared::{HubShared, Links, NodeLink, Route};
use crate::store::Store;
use crate::transport;

/// A built server, not yet running.
pub struct Server {
    pub(super) config: Config,
    pub(super) router: PatternMap<Route>,
    /// Whether any handler runs on the pool (no pool threads or queue otherwise).
    pub(super) blocking: bool,
    pub(super) hooks: Hooks,
    pub(super) store: Option<Box<dyn Store>>,
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
