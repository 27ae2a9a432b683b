//! The Redis broker: N nodes joined through one or more Redis instances.
//!
//! One thread per node (`ringhub-cluster`) runs a small single-threaded tokio runtime with, per
//! Redis instance, one multiplexed connection for commands and one subscriber connection:
//!
//! - shards hand publications over a bounded queue per instance (`try_send`: a shard never
//!   waits); the instance's publisher task takes everything queued at each wake-up and writes
//!   it as one pipeline — one `PUBLISH <prefix>:t:<topic> <payload>` per publication, the
//!   payload being the origin node, a per-node sequence number and the encoded frames
//!   ([`super::wire`]);
//! - interest changes from the shards keep a per-pattern shard mask: the node `SUBSCRIBE`s an
//!   exact topic (on the instance that owns it) or `PSUBSCRIBE`s a wildcard pattern (on every
//!   instance) when the mask becomes non-zero, unsubscribes when it becomes zero, and
//!   acknowledges a shard's change once Redis confirmed it;
//! - the subscriber connections are the node's own ([`subconn`]): each read is decoded in
//!   place ([`recv`]: RESP frames, then the wire format), de-duplicated, stripped of the node's
//!   own, and handed to the shards whose interest matches — one inbox push per shard per read;
//! - every node subscribes `<prefix>:ctl` (on the first instance) for cluster-wide API
//!   operations and keeps `<prefix>:node:<name>` alive (TTL 10 s, refreshed every 3 s).
//!
//! A lost connection marks the instance down (`/readyz` 503 with the reason, publications for
//! it dropped and counted), and is retried with exponential backoff and full jitter; once back,
//! every subscription is restored.

mod manager;
mod presence;
mod publisher;
pub(crate) mod recv;
mod subconn;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{
    instance_for, Broker, ClusterConfig, ClusterStats, ControlOp, Gathered, QueryKind, Reply,
};
use crate::proto::error::ServerError;
pub(crate) use crate::proto::wire::redact;
use crate::shard::shared::HubShared;

/// Time allowed for an answer (a pipeline, a subscribe confirmation).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the cluster thread's tasks report to the manager.
pub(crate) enum Ev {
    Up {
        i: usize,
        gen: u64,
        conn: redis::aio::MultiplexedConnection,
        sub: subconn::Stream,
    },
    ConnectFailed {
        i: usize,
        gen: u64,
        why: String,
    },
    Down {
        i: usize,
        gen: u64,
        why: String,
    },
    /// What one read of a subscriber connection returned.
    Data {
        i: usize,
        gen: u64,
        data: Bytes,
    },
    /// A (p)subscribe or (p)unsubscribe sent on a subscriber connection was not confirmed in
    /// time.
    SubTimeout {
        i: usize,
        gen: u64,
        id: u64,
    },
}

/// Publications queued per instance before new ones are dropped.
const QUEUE: usize = 65_536;
/// How long a node's registration lives without a refresh.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(10);
/// How often it is refreshed.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(3);

/// What a publisher task writes to its instance.
pub(crate) enum Out {
    /// One publication on one topic.
    One {
        seq: u64,
        topic: Arc<str>,
        frame: Bytes,
    },
    /// One publication on several topics: published on each topic's channel that this
    /// instance owns, with every frame in the payload (receivers deliver it once).
    Many {
        seq: u64,
        frames: Arc<[(Arc<str>, Bytes)]>,
    },
    /// A control operation on `<prefix>:ctl`.
    Control(Vec<u8>),
    /// The node's registration.
    Register { key: String, value: String },
    /// Presence entries written or removed.
    Presence(presence::Write),
    /// A presence read, run once the writes queued before it are written.
    PresenceRead(Arc<str>, oneshot::Sender<presence::Entries>),
    /// A node's answer to a query, on the asking node's reply channel.
    Reply { channel: String, payload: Vec<u8> },
    /// Answered once everything queued before it is written (on stop).
    Flush(oneshot::Sender<()>),
}

/// From the shards and the API thread to the cluster thread.
pub(crate) enum Cmd {
    Interest {
        pattern: Arc<str>,
        shard: usize,
        add: bool,
        ack: Option<u64>,
    },
    Control(ControlOp),
    Nodes(oneshot::Sender<Result<Vec<Value>, String>>),
    /// A local connection entered (`Some(entry)`) or left a topic's presence.
    Presence {
        topic: Arc<str>,
        client: String,
        entry: Option<String>,
    },
    PresenceRead(Arc<str>, oneshot::Sender<presence::Entries>),
    Query(QueryKind, oneshot::Sender<Result<Gathered, String>>),
    Stop,
}

/// State the broker handle and the cluster thread share.
pub(crate) struct Shared {
    pub stats: ClusterStats,
    /// Per instance: connected.
    pub up: Box<[AtomicBool]>,
    /// Per instance: why it is down (empty when up).
    pub reasons: Mutex<Vec<String>>,
    /// Millisecond clock of the last "dropped" log line (at most one a second).
    last_drop_log: AtomicU64,
    started: std::time::Instant,
}

impl Shared {
    /// Counts `n` dropped publications and logs it at most once a second.
    pub(crate) fn dropped(&self, n: u64, why: &str) {
        ClusterStats::add(&self.stats.publishes_dropped, n);
        let now = self.started.elapsed().as_millis() as u64 + 1000;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now >= last + 1000
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let total = self.stats.publishes_dropped.load(Ordering::Relaxed);
            tracing::warn!(
                dropped_total = total,
                "cluster: publications not sent to other nodes ({why})"
            );
        }
    }
}

/// The queues the cluster thread takes at start.
pub(crate) struct Receivers {
    pub pubs: Vec<mpsc::Receiver<Out>>,
    pub cmds: mpsc::UnboundedReceiver<Cmd>,
}

/// Settings the cluster thread needs.
pub(crate) struct Setup {
    pub urls: Vec<String>,
    pub prefix: String,
    pub node: Arc<str>,
    pub presence_ttl: Duration,
}

/// Stripes handed to threads that publish, one each (see [`next_seq`]).
static SEQ_STRIPES: AtomicU64 = AtomicU64::new(0);
/// Bits of a stripe's own counter: 2^48 publications per thread before it runs into the next.
const STRIPE_BITS: u32 = 48;

thread_local! {
    /// This thread's stripe and its count of publications so far.
    static SEQ: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// The next publication sequence number from `base`. Every publishing thread (a shard, the API
/// thread) counts in a stripe of its own, so publications from different shards never touch a
/// shared counter (one contended cache line per publication across every shard of a node
/// before) and never collide: receivers de-duplicate by (origin, sequence). The stripes keep
/// below `base + 2^61`, inside the publications' half of the range (see `random_seq`).
fn next_seq(base: u64) -> u64 {
    SEQ.with(|c| {
        let (stripe, n) = c.get().unwrap_or_else(|| {
            let s = SEQ_STRIPES.fetch_add(1, Ordering::Relaxed) % (1 << (61 - STRIPE_BITS));
            (s, 0)
        });
        c.set(Some((stripe, n.wrapping_add(1) & ((1 << STRIPE_BITS) - 1))));
        base.wrapping_add((stripe << STRIPE_BITS) | n)
    })
}

/// The broker handle kept in the hub.
pub struct RedisBroker {
    setup: Arc<Setup>,
    /// Where this node's publication sequence numbers start (each thread counts from its own
    /// stripe above it: see [`next_seq`]).
    seq_base: u64,
    pubs: Vec<mpsc::Sender<Out>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    receivers: Mutex<Option<Receivers>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RedisBroker {
    /// Checks the URLs; nothing connects before [`Broker::start`].
    pub(crate) fn new(config: &ClusterConfig, node: Arc<str>) -> Result<Self, ServerError> {
        for url in &config.redis {
            redis::Client::open(url.as_str()).map_err(|e| {
                ServerError::Config(format!("cluster.redis: invalid URL '{url}': {e}"))
            })?;
        }
        if config.prefix.is_empty() {
            return Err(ServerError::Config(
                "cluster.prefix must not be empty".into(),
            ));
        }
        let n = config.redis.len();
        let (mut pubs, mut pub_rx) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(QUEUE);
            pubs.push(tx);
            pub_rx.push(rx);
        }
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            stats: ClusterStats::default(),
            up: (0..n).map(|_| AtomicBool::new(false)).collect(),
            reasons: Mutex::new(vec!["not connected yet".to_string(); n]),
            last_drop_log: AtomicU64::new(0),
            started: std::time::Instant::now(),
        });
        Ok(Self {
            setup: Arc::new(Setup {
                urls: config.redis.clone(),
                prefix: config.prefix.clone(),
                node,
                presence_ttl: config.presence_ttl,
            }),
            seq_base: super::random_seq(false),
            pubs,
            cmds,
            receivers: Mutex::new(Some(Receivers {
                pubs: pub_rx,
                cmds: cmd_rx,
            })),
            shared,
            thread: Mutex::new(None),
        })
    }

    fn send(&self, i: usize, out: Out, n: u64) {
        if !self.shared.up[i].load(Ordering::Relaxed) {
            return self.shared.dropped(n, "Redis unreachable");
        }
        match self.pubs[i].try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.shared.dropped(n, "queue full"),
            Err(mpsc::error::TrySendError::Closed(_)) => self.shared.dropped(n, "stopped"),
        }
    }
}

impl RedisBroker {
    /// Starts the broker's thread; remote publications go to `hub`'s shards.
    pub(crate) fn start(&self, hub: Arc<HubShared>) -> Result<(), ServerError> {
        let Some(rx) = self.receivers.lock().ok().and_then(|mut r| r.take()) else {
            return Err(ServerError::Config("cluster broker started twice".into()));
        };
        let (setup, shared, pub_tx) = (self.setup.clone(), self.shared.clone(), self.pubs.clone());
        let t = std::thread::Builder::new()
            .name("ringhub-cluster".into())
            .spawn(move || manager::run(setup, shared, hub, rx, pub_tx))
            .map_err(ServerError::Thread)?;
        if let Ok(mut slot) = self.thread.lock() {
            *slot = Some(t);
        }
        Ok(())
    }
}

impl Broker for RedisBroker {
    fn clustered(&self) -> bool {
        true
    }

    fn publish(&self, frames: &[(Arc<str>, Bytes)]) {
        let n = self.pubs.len();
        let seq = next_seq(self.seq_base);
        match frames {
            [] => {}
            [(topic, frame)] => {
                let out = Out::One {
                    seq,
                    topic: topic.clone(),
                    frame: frame.clone(),
                };
                self.send(instance_for(topic, n), out, 1);
            }
            _ => {
                let all: Arc<[(Arc<str>, Bytes)]> = frames.into();
                let mut mask = 0u64;
                for (t, _) in frames {
                    mask |= 1 << instance_for(t, n).min(63);
                }
                while mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let out = Out::Many {
                        seq,
                        frames: all.clone(),
                    };
                    self.send(i, out, 1);
                }
            }
        }
    }

    fn interest(&self, pattern: &Arc<str>, shard: usize, add: bool, ack: Option<u64>) -> bool {
        self.cmds
            .send(Cmd::Interest {
                pattern: pattern.clone(),
                shard,
                add,
                ack,
            })
            .is_ok()
            && ack.is_some()
    }

    fn control(&self, op: ControlOp) {
        let _ = self.cmds.send(Cmd::Control(op));
    }

    fn health(&self) -> Result<(), String> {
        if self.shared.up.iter().all(|u| u.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let reasons = self
            .shared
            .reasons
            .lock()
            .map_or_else(|_| vec!["unknown".to_string()], |r| r.clone());
        let down: Vec<String> = self
            .setup
            .urls
            .iter()
            .zip(reasons)
            .zip(self.shared.up.iter())
            .filter(|(_, up)| !up.load(Ordering::Relaxed))
            .map(|((url, why), _)| format!("redis {} unreachable: {why}", redact(url)))
            .collect();
        Err(format!("cluster: {}", down.join("; ")))
    }

    fn nodes(&self) -> Option<oneshot::Receiver<Result<Vec<Value>, String>>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.cmds.send(Cmd::Nodes(tx));
        Some(rx)
    }

    fn stats(&self) -> Option<&ClusterStats> {
        Some(&self.shared.stats)
    }

    fn presence_change(&self, topic: &str, client: String, entry: Option<String>) {
        let _ = self.cmds.send(Cmd::Presence {
            topic: topic.into(),
            client,
            entry,
        });
    }

    fn presence(&self, topic: &str) -> Option<Reply<Vec<String>>> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.cmds.send(Cmd::PresenceRead(topic.into(), tx)) {
            if let Cmd::PresenceRead(_, tx) = e.0 {
                let _ = tx.send(Err("cluster stopped".into()));
            }
        }
        Some(rx)
    }

    fn query(&self, kind: QueryKind) -> Option<Reply<Gathered>> {
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.cmds.send(Cmd::Query(kind, tx)) {
            if let Cmd::Query(_, tx) = e.0 {
                let _ = tx.send(Err("cluster stopped".into()));
            }
        }
        Some(rx)
    }

    fn stop(&self) {
        let _ = self.cmds.send(Cmd::Stop);
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_counts_in_its_own_stripe() {
        let base = crate::cluster::random_seq(false);
        let mine: Vec<u64> = (0..3).map(|_| next_seq(base)).collect();
        assert_eq!((mine[1] - mine[0], mine[2] - mine[1]), (1, 1));
        let theirs = std::thread::spawn(move || next_seq(base)).join().unwrap();
        let stripe = |s: u64| (s - base) >> STRIPE_BITS;
        assert_ne!(
            stripe(theirs),
            stripe(mine[0]),
            "another thread, another stripe"
        );
        for s in mine.iter().chain([&theirs]) {
            assert_eq!(s >> 63, 0, "still in the publications' half");
        }
    }
}
