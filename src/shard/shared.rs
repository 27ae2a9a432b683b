//! What every shard, the handler pool and the API thread share: configuration, routes, inboxes
//! and counters. Read-only after start except atomics and inboxes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::hooks::Hooks;
use super::inbox::Inbox;
use super::jobs::{PubJob, PubReply, StoreJob, MAX_QUEUED};
use crate::config::{Config, Namespaces};
use crate::proto::error::{ErrorCode, HandlerError};
use crate::proto::handler::Handler;
use crate::proto::handler::Outgoing;
use crate::proto::handshake::RequestHead;
use crate::proto::pattern::PatternMap;
use crate::proto::stats::ShardStats;
use crate::ConnId;

/// A routed handler with its middleware already applied.
pub(crate) struct Route {
    pub handler: Arc<dyn Handler>,
    pub blocking: bool,
}

/// One message for a blocking handler on the pool.
pub(crate) struct Job {
    pub handler: Arc<dyn Handler>,
    pub payload: Bytes,
    pub conn: ConnId,
    pub user: Option<Arc<str>>,
    pub remote: SocketAddr,
}

/// An HTTP request (API, health, metrics) for the API thread; the response goes back to the
/// connection's shard as [`ShardMsg::HttpResponse`](super::inbox::ShardMsg::HttpResponse).
pub(crate) struct ApiJob {
    pub conn: ConnId,
    pub head: RequestHead,
    pub body: Bytes,
    /// The client's address (wrong API keys are throttled per address).
    pub peer: std::net::IpAddr,
    /// Whether the shard keeps the connection open after this response.
    pub keep: KeepAlive,
}

/// How a connection continues after an HTTP response (defined with the inbox messages that
/// carry it, so the inbox needs nothing from here).
pub(crate) use super::inbox::KeepAlive;

thread_local! {
    /// Store jobs held back by [`collect_store_jobs`] on this thread.
    static COLLECTED: std::cell::RefCell<Option<Vec<StoreJob>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f`, holding back the store jobs it submits on this thread: they are returned, to go to
/// the store thread as one [`StoreJob::Many`] (so in one batch, one commit).
pub(crate) fn collect_store_jobs<R>(f: impl FnOnce() -> R) -> (R, Vec<StoreJob>) {
    let outer = COLLECTED.replace(Some(Vec::new()));
    let r = f();
    let jobs = COLLECTED.replace(outer).unwrap_or_default();
    (r, jobs)
}

/// A job for the API thread: an HTTP request, a client request that gathers from every shard,
/// or a library call of [`ServerHandle`](crate::ServerHandle).
pub(crate) enum ControlJob {
    Http(ApiJob),
    /// `presence` / `presence_stats` from a client: answered to `conn`.
    Presence {
        conn: ConnId,
        rid: Option<u64>,
        topic: Arc<str>,
        stats: bool,
    },
    /// Runs on the API thread's runtime.
    Call(Box<dyn FnOnce(Arc<HubShared>) -> LocalFuture + Send>),
}

/// A future run on the API thread (not `Send`: the thread runs a `LocalSet`).
pub(crate) type LocalFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// State shared by every shard, the pool and the API thread, grouped by who needs what: the
/// top level is what a shard reads on the hot path (configuration, routes, namespaces, hooks,
/// the shards' inboxes and counters); [`Links`] are the queues the runtime wires once to the
/// other threads; [`NodeLink`] is how this node reaches the others.
pub(crate) struct HubShared {
    pub config: Config,
    pub shards: usize,
    pub router: PatternMap<Route>,
    pub inboxes: Box<[Inbox]>,
    pub stats: Box<[ShardStats]>,
    pub(crate) stopping: AtomicBool,
    /// `[[topics]]`, compiled.
    pub(crate) namespaces: Namespaces,
    pub(crate) hooks: Hooks,
    /// Recent errors, cuts and disconnects for the admin dashboard.
    pub(crate) events: super::events::RecentEvents,
    /// Why the store is unusable, while it is ([`Store::health`](crate::store::Store::health),
    /// set by the store thread): `/readyz` answers 503 with it.
    pub(crate) store_fault: std::sync::Mutex<Option<String>>,
    /// What the store thread did, for `/metrics`.
    pub(crate) store_stats: super::jobs::StoreStats,
    /// Proxy calls, for `/metrics`.
    pub(crate) proxy_stats: super::proxy::ProxyStats,
    /// Dropped Socket.IO sessions kept for connection state recovery.
    pub(crate) sio_sessions: super::sio_sessions::SioSessions,
    /// What the webhook sender did and the outbox holds (`/metrics`, `/api/v1/webhooks`).
    pub(crate) webhooks: super::webhook::WebhookStats,
    /// Wrong API keys per address (429 after too many), for the API thread and the shards that
    /// answer an API publish themselves (`shard::fastapi`).
    pub(crate) api_keys: crate::policy::keyguard::SharedKeyGuard,
    /// Queues to the pool, the API thread and the store thread.
    pub(crate) links: Links,
    /// This node among the others.
    pub(crate) cluster: NodeLink,
    /// Memory store on one node: the base epoch of the history streams the shards keep
    /// themselves (see `shard::history`). `None`: the store thread keeps history.
    pub(crate) shard_history: Option<Arc<str>>,
}

/// The queues the runtime wires once at start (`None`: that thread does not run — benches,
/// sans-IO tests).
#[derive(Default)]
pub(crate) struct Links {
    /// The blocking-handler pool.
    pub(crate) pool: Option<crossbeam_channel::Sender<Job>>,
    /// The API thread.
    pub(crate) api: Option<tokio::sync::mpsc::UnboundedSender<ControlJob>>,
    /// The store thread's queue.
    pub(crate) store: Option<crossbeam_channel::Sender<StoreJob>>,
    /// The backend proxies' client (when `[proxy]` sets any).
    pub(crate) proxy: Option<Arc<dyn super::proxy::ProxyClient>>,
}

/// How this node reaches the others: its name and its broker.
pub(crate) struct NodeLink {
    /// This node's name in client ids.
    pub(crate) node: Arc<str>,
    /// How publications, interest and API operations reach other nodes.
    pub(crate) broker: Arc<dyn super::broker::Broker>,
    /// `broker.clustered()`, read on every publication.
    pub(crate) clustered: bool,
    /// The store delivers stored publications itself, through the broker (`Store::delivers`):
    /// shards judge held connections by offset (see `shard::hold`).
    pub(crate) remote_store: bool,
}

impl NodeLink {
    /// A single node named `node`, with the local broker.
    pub(crate) fn single(node: Arc<str>) -> Self {
        Self {
            node,
            broker: Arc::new(super::broker::local::LocalBroker),
            clustered: false,
            remote_store: false,
        }
    }
}

impl HubShared {
    /// Whether shutdown has begun (`/readyz` turns 503, new clients get 503).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// After a publication was delivered on this node: the error telling its publisher that it
    /// did not reach the other nodes, while the cluster is unreachable (`None` when it did, or
    /// on a single node).
    pub(crate) fn cluster_down(&self) -> Option<HandlerError> {
        if !self.cluster.clustered {
            return None;
        }
        self.cluster.broker.health().err().map(|why| {
            HandlerError::new(
                ErrorCode::NotAvailable,
                format!("published on this node only: the cluster is unreachable ({why})"),
            )
        })
    }

    /// Hands a job to the pool without blocking the shard.
    pub(crate) fn submit(&self, job: Job) -> Result<(), String> {
        let pool = self.links.pool.as_ref().ok_or("no handler pool")?;
        pool.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => "handler pool overloaded".to_string(),
            crossbeam_channel::TrySendError::Disconnected(_) => "handler pool stopped".to_string(),
        })
    }

    /// Hands a job to the API thread; false if it is gone.
    pub(crate) fn submit_api(&self, job: ControlJob) -> bool {
        self.links
            .api
            .as_ref()
            .is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Hands a job to the store thread. Publications and durable sends (`bounded`) are refused
    /// while the queue is over [`MAX_QUEUED`](MAX_QUEUED).
    pub(crate) fn submit_store(&self, job: StoreJob, bounded: bool) -> Result<(), HandlerError> {
        let Some(job) = COLLECTED.with_borrow_mut(|c| match c {
            Some(jobs) => {
                jobs.push(job);
                None
            }
            None => Some(job),
        }) else {
            return Ok(());
        };
        let Some(job) = self.route_history(job) else {
            return Ok(());
        };
        let tx = self
            .links
            .store
            .as_ref()
            .ok_or_else(|| HandlerError::new(ErrorCode::NotAvailable, "no store"))?;
        if bounded && tx.len() >= MAX_QUEUED {
            return Err(HandlerError::new(
                ErrorCode::TooMany,
                "store queue full: try again later",
            ));
        }
        tx.send(job)
            .map_err(|_| HandlerError::new(ErrorCode::NotAvailable, "store stopped"))
    }

    /// Hands a publication on a topic with history to the store thread (which answers the
    /// request, if any, once it is stored); `None` when the topic keeps no history.
    pub(crate) fn publish_stored(
        &self,
        p: &Outgoing<'_>,
        conn: Option<ConnId>,
    ) -> Option<Result<bool, HandlerError>> {
        self.namespaces.history(p.topic)?;
        let reply = match (conn, p.reply_id) {
            (Some(c), Some(r)) => PubReply::Conn(c, r),
            _ => PubReply::None,
        };
        let deferred = matches!(reply, PubReply::Conn(..));
        let job = PubJob {
            topic: p.topic.into(),
            event: p.event.into(),
            data: p.data.map(Bytes::copy_from_slice),
            exclude: if p.exclude_sender { conn } else { None },
            reply,
        };
        Some(
            self.submit_store(StoreJob::Publish(Box::new(job)), true)
                .map(|()| deferred),
        )
    }

    /// The client id of a connection: `"<node>.<hex>"`, a string, so JavaScript keeps it exact
    /// (the same as `Context::client_id`).
    pub(crate) fn client_id(&self, id: ConnId) -> String {
        format!("{}.{:x}", self.cluster.node, id.raw())
    }

    /// The connection behind a client id of this node.
    pub(crate) fn parse_client(&self, client: &str) -> Option<ConnId> {
        let (node, n) = client.rsplit_once('.')?;
        if node != &*self.cluster.node {
            return None;
        }
        let raw = u64::from_str_radix(n, 16).ok()?;
        let id = ConnId::from_raw(raw);
        (id.shard() < self.shards).then_some(id)
    }

    /// Benchmarks only: like [`for_bench`](Self::for_bench) with the pub/sub handler on `*`.
    pub(crate) fn for_bench_pubsub(shards: usize) -> Self {
        let mut hub = Self::for_bench(shards);
        let p = crate::proto::pattern::Pattern::parse("*").expect("valid pattern");
        hub.router.insert(
            p,
            Route {
                handler: Arc::new(crate::proto::handler::pubsub),
                blocking: false,
            },
        );
        hub
    }

    /// Benchmarks only: shared state for `shards` shards with the default config, no handlers,
    /// no pool and no sockets (see `bench_support`).
    pub(crate) fn for_bench(shards: usize) -> Self {
        HubShared {
            config: Config::default(),
            shards,
            router: PatternMap::new(),
            inboxes: (0..shards).map(|_| Inbox::default()).collect(),
            stats: (0..shards).map(|_| ShardStats::default()).collect(),
            stopping: AtomicBool::new(false),
            namespaces: Namespaces::default(),
            hooks: Hooks::default(),
            store_fault: std::sync::Mutex::new(None),
            events: Default::default(),
            links: Links::default(),
            cluster: NodeLink::single("bench".into()),
            store_stats: Default::default(),
            proxy_stats: Default::default(),
            sio_sessions: Default::default(),
            webhooks: Default::default(),
            api_keys: Default::default(),
            shard_history: None,
        }
    }
}
