//! What every shard, the handler pool and the API thread share: configuration, routes, inboxes
//! and counters. Read-only after start except atomics and inboxes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::inbox::Inbox;
use crate::config::Config;
use crate::proto::handler::Handler;
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
}

/// State shared by every shard, the pool and the API thread.
pub(crate) struct HubShared {
    pub config: Config,
    pub shards: usize,
    pub router: PatternMap<Route>,
    pub inboxes: Box<[Inbox]>,
    pub stats: Box<[ShardStats]>,
    pub(crate) pool: Option<crossbeam_channel::Sender<Job>>,
    pub(crate) api: Option<tokio::sync::mpsc::UnboundedSender<ApiJob>>,
    pub(crate) stopping: AtomicBool,
}

impl HubShared {
    /// Whether shutdown has begun (`/readyz` turns 503, new clients get 503).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Hands a job to the pool without blocking the shard.
    pub(crate) fn submit(&self, job: Job) -> Result<(), String> {
        let pool = self.pool.as_ref().ok_or("no handler pool")?;
        pool.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => "handler pool overloaded".to_string(),
            crossbeam_channel::TrySendError::Disconnected(_) => "handler pool stopped".to_string(),
        })
    }

    /// Hands an HTTP request to the API thread; false if it is gone.
    pub(crate) fn submit_api(&self, job: ApiJob) -> bool {
        self.api.as_ref().is_some_and(|tx| tx.send(job).is_ok())
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
            pool: None,
            api: None,
            stopping: AtomicBool::new(false),
        }
    }
}
