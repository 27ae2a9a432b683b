//! The cluster thread: connections and reconnects, Redis subscriptions following the shards'
//! interest, received messages to the shards, control operations, the node's registration.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod inbound;
mod presence;
mod query;
mod subs;

use subs::{Sub, Waiting};

use super::publisher::{self, Link};
use super::recv::Fanin;
use super::subconn;
use super::{redact, Cmd, Ev, Out, Receivers, Setup, Shared, HEARTBEAT, RESPONSE_TIMEOUT};
use crate::cluster::{ClusterStats, ControlOp};
use crate::proto::registry::Interest;
use crate::shard::inbox::ShardMsg;
use crate::shard::shared::HubShared;

/// Time allowed to connect (TCP + handshake) to an instance.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: first step and ceiling (full jitter below them).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) struct Inst {
    client: redis::Client,
    pub(super) link: Rc<RefCell<Link>>,
    /// Commands to the subscriber connection (while it is up).
    sub: Option<mpsc::UnboundedSender<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    /// The start of a frame the last read of the subscriber connection ended in.
    partial: BytesMut,
    /// Subscription commands sent and not yet answered, in order (Redis answers in order).
    waiting: VecDeque<Waiting>,
    attempt: u32,
    ever_up: bool,
}

/// The `sub_done` key of the control channel's subscription after a reconnect (no pattern
/// starts with a NUL byte).
const RESYNC_KEY: &str = "\0resync";

pub(super) struct Manager {
    pub(super) setup: Arc<Setup>,
    pub(super) shared: Arc<Shared>,
    pub(super) hub: Arc<HubShared>,
    pub(super) insts: Vec<Inst>,
    subs: HashMap<Arc<str>, Sub>,
    pub(super) interest: Interest,
    pub(super) fanin: Fanin,
    next_wait: u64,
    ev: mpsc::UnboundedSender<Ev>,
    pub(super) out: Vec<mpsc::Sender<Out>>,
    next_sgen: u64,
    pub(super) ctl_seq: u64,
    rng: u64,
    pub(super) started_unix: u64,
    /// A random token of this process in its registration: another token found there on a
    /// refresh means another live node has the same name.
    pub(super) instance: String,
    /// Registrations written so far (the first may find a crashed predecessor's).
    pub(super) registrations: u64,
    /// This node's presence entries (rewritten every third of the TTL).
    pub(super) presence: super::presence::Tracker,
    /// Scatter-gather queries of this node waiting for answers.
    pub(super) queries: query::Pending,
}

/// The cluster thread's body.
pub(crate) fn run(
    setup: Arc<Setup>,
    shared: Arc<Shared>,
    hub: Arc<HubShared>,
    rx: Receivers,
    out: Vec<mpsc::Sender<Out>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cluster: cannot start the runtime; this node stays alone");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (ev, mut ev_rx) = mpsc::unbounded_channel();
        let Receivers { pubs, mut cmds } = rx;
        let mut insts = Vec::new();
        for (i, (url, prx)) in setup.urls.iter().zip(pubs).enumerate() {
            let client = match redis::Client::open(url.as_str()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(url = %redact(url), error = %e, "cluster: invalid Redis URL");
                    return;
                }
            };
            let link = Rc::new(RefCell::new(Link { conn: None, gen: 0 }));
            tokio::task::spawn_local(publisher::run(
                i,
                prx,
                link.clone(),
                setup.clone(),
                shared.clone(),
                ev.clone(),
            ));
            insts.push(Inst {
                client,
                link,
                sub: None,
                reader: None,
                partial: BytesMut::new(),
                waiting: VecDeque::new(),
                attempt: 0,
                ever_up: false,
            });
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let fanin = Fanin::new(setup.node.clone(), hub.shards);
        let mut m = Manager {
            setup,
            shared,
            hub,
            insts,
            subs: HashMap::new(),
            interest: Interest::new(),
            fanin,
            next_wait: 0,
            ev,
            out,
            next_sgen: 1,
            ctl_seq: crate::cluster::random_seq(true),
            rng: (seed.as_nanos() as u64) | 1,
            started_unix: seed.as_secs(),
            instance: format!("{:016x}", crate::cluster::random_seq(false)),
            registrations: 0,
            presence: Default::default(),
            queries: Default::default(),
        };
        for i in 0..m.insts.len() {
            m.connect(i, Duration::ZERO);
        }
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut presence = tokio::time::interval(Manager::presence_period(m.setup.presence_ttl));
        presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Stop) => break,
                    Some(c) => m.command(c),
                },
                Some(e) = ev_rx.recv() => m.event(e),
                _ = beat.tick() => m.register(),
                _ = presence.tick() => m.presence_refresh(),
            }
        }
        m.presence_stop().await;
        m.unregister().await;
    });
}

impl Manager {
    fn n(&self) -> usize {
        self.insts.len()
    }

    pub(super) fn node_key(&self) -> String {
        format!("{}:node:{}", self.setup.prefix, self.setup.node)
    }

    /// Connects instance `i` after `delay`; reports `Up` or `ConnectFailed`.
    fn connect(&mut self, i: usize, delay: Duration) {
        let client = self.insts[i].client.clone();
        let gen = self.insts[i].link.borrow().gen;
        let ev = self.ev.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(delay).await;
            let r = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map_err(|e| e.to_string())?;
                let sub = subconn::open(client.get_connection_info()).await?;
                Ok::<_, String>((conn, sub))
            })
            .await;
            let _ = ev.send(match r {
                Ok(Ok((conn, sub))) => Ev::Up { i, gen, conn, sub },
                Ok(Err(why)) => Ev::ConnectFailed { i, gen, why },
                Err(_) => Ev::ConnectFailed {
                    i,
                    gen,
                    why: "connect timed out".into(),
                },
            });
        });
    }

    /// Exponential backoff with full jitter: uniform in [0, min(max, base·2^attempt)].
    fn backoff(&mut self, attempt: u32) -> Duration {
        let cap = BACKOFF_BASE
            .saturating_mul(1u32 << attempt.min(16))
            .min(BACKOFF_MAX);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ms = cap.as_millis() as u64;
        Duration::from_millis(self.rng % (ms + 1)).max(Duration::from_millis(10))
    }

    fn event(&mut self, e: Ev) {
        match e {
            Ev::Up { i, gen, conn, sub } => self.up(i, gen, conn, sub),
            Ev::ConnectFailed { i, gen, why } => {
                if self.insts[i].link.borrow().gen != gen {
                    return;
                }
                ClusterStats::add(&self.shared.stats.redis_errors, 1);
                let attempt = self.insts[i].attempt;
                if attempt.is_multiple_of(10) {
                    tracing::warn!(url = %redact(&self.setup.urls[i]), error = %why, attempt, "cluster: cannot connect to Redis; retrying");
                }
                self.set_reason(i, &why);
                self.insts[i].attempt += 1;
                let d = self.backoff(attempt);
                self.connect(i, d);
            }
            Ev::Down { i, gen, why } => self.down(i, gen, &why),
            Ev::Data { i, gen, data } => self.data(i, gen, data),
            Ev::SubTimeout { i, gen, id } => {
                if self.insts[i].link.borrow().gen != gen {
                    return;
                }
                let Some(w) = self.insts[i].waiting.iter_mut().find(|w| w.id == id) else {
                    return;
                };
                ClusterStats::add(&self.shared.stats.redis_errors, 1);
                tracing::warn!(channel = %w.name, "cluster: Redis subscribe not confirmed in time");
                if let Some((key, sgen)) = w.done.take() {
                    self.sub_done(key, sgen);
                }
            }
        }
    }

    /// The control channel is back after a loss: control messages (durable messages among them)
    /// were dropped meanwhile, here or on the nodes that could not reach Redis. Every connected
    /// user's inbox is read again from the store on this node, and the other nodes are told to
    /// do the same.
    fn resync_inboxes(&mut self) {
        tracing::info!("cluster: control channel back; resyncing the inboxes of connected users");
        for inbox in self.hub.inboxes.iter() {
            inbox.push(ShardMsg::ResyncInboxes);
        }
        self.send_control(&ControlOp::InboxResync {});
    }

    fn set_reason(&self, i: usize, why: &str) {
        if let Ok(mut r) = self.shared.reasons.lock() {
            r[i] = why.to_string();
        }
    }

    fn up(&mut self, i: usize, gen: u64, conn: MultiplexedConnection, sub: subconn::Stream) {
        let new_gen = {
            let mut l = self.insts[i].link.borrow_mut();
            if l.gen != gen {
                return;
            }
            l.gen += 1;
            l.conn = Some(conn);
            l.gen
        };
        let (tx, reader) = subconn::spawn(sub, i, new_gen, self.ev.clone());
        let inst = &mut self.insts[i];
        let again = inst.ever_up;
        inst.sub = Some(tx);
        inst.reader = Some(reader);
        inst.partial.clear();
        inst.attempt = 0;
        let url = redact(&self.setup.urls[i]);
        if inst.ever_up {
            ClusterStats::add(&self.shared.stats.reconnects, 1);
            tracing::info!(url = %url, "cluster: reconnected to Redis; restoring subscriptions");
        } else {
            tracing::info!(url = %url, node = %self.setup.node, "cluster: connected to Redis");
        }
        inst.ever_up = true;
        self.set_reason(i, "");
        self.shared.up[i].store(true, Ordering::Relaxed);
        let all = self.shared.up.iter().all(|u| u.load(Ordering::Relaxed));
        self.shared
            .stats
            .connected
            .store(u64::from(all), Ordering::Relaxed);
        if i == 0 {
            let ctl = format!("{}:ctl", self.setup.prefix);
            // After a loss, once the control channel is back: durable messages sent meanwhile
            // may have reached no other node (see `resync_inboxes`).
            let done = again.then(|| (Arc::from(RESYNC_KEY), 0));
            self.spawn_subscribe(0, ctl, false, done);
            let reply = query::reply_channel(&self.setup.prefix, &self.setup.node);
            self.spawn_subscribe(0, reply, false, None);
            self.register();
        }
        // Redis may have restarted empty: this node's presence entries are written again.
        self.presence_refresh_on(Some(i));
        let keys: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        for key in keys {
            if self.targets(&key).contains(&i) {
                let sgen = self.subs[&key].sgen;
                if self.issue(i, &key, true, Some(sgen)) {
                    if let Some(s) = self.subs.get_mut(&key) {
                        s.pending += 1;
                    }
                }
            }
        }
    }

    pub(super) fn down(&mut self, i: usize, gen: u64, why: &str) {
        {
            let mut l = self.insts[i].link.borrow_mut();
            if l.gen != gen {
                return;
            }
            l.gen += 1;
            l.conn = None;
        }
        let inst = &mut self.insts[i];
        inst.sub = None;
        if let Some(r) = inst.reader.take() {
            r.abort();
        }
        inst.partial.clear();
        // Unanswered subscriptions are given up on (`up` issues them all again).
        for w in std::mem::take(&mut inst.waiting) {
            if let Some((key, sgen)) = w.done {
                self.sub_done(key, sgen);
            }
        }
        self.shared.up[i].store(false, Ordering::Relaxed);
        self.shared.stats.connected.store(0, Ordering::Relaxed);
        ClusterStats::add(&self.shared.stats.redis_errors, 1);
        tracing::warn!(url = %redact(&self.setup.urls[i]), error = %why, "cluster: lost Redis; serving local traffic only until it is back");
        self.set_reason(i, why);
        let d = self.backoff(0);
        self.insts[i].attempt = 1;
        self.connect(i, d);
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Interest {
                pattern,
                shard,
                add,
                ack,
            } => self.interest_change(pattern, shard, add, ack),
            Cmd::Control(op) => self.send_control(&op),
            Cmd::Nodes(tx) => self.nodes(tx),
            Cmd::Presence {
                topic,
                client,
                entry,
            } => self.presence_change(topic, client, entry),
            Cmd::PresenceRead(topic, tx) => self.presence_read(topic, tx),
            Cmd::Query(kind, tx) => self.query(kind, tx),
            Cmd::Stop => {}
        }
    }
}
