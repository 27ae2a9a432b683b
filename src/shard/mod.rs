//! A shard: the connections one core owns, their subscriptions, and the replicated interest table.
//!
//! [`ShardState`] is sans-IO: the shells (`transport::uring`, `transport::epoll`) own the sockets
//! and feed it accepted descriptors, received bytes, completed writes and the time; it answers
//! with what to write ([`ShardState::next_send`]), which sockets to shut down and which to close
//! ([`ShardState::take_io`]). No syscalls, no tasks, no clock of its own. Other threads reach a
//! shard only through its [`Inbox`](inbox::Inbox).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use crate::proto::registry::{Interest, Registry};
use crate::proto::stats::ShardStats;
use crate::ConnId;

#[cfg(feature = "axum")]
mod adopt;
pub(crate) mod answer;
mod apply;
mod bench;
pub(crate) mod broker;
mod conn;
mod delta;
mod dispatch;
mod durable;
pub(crate) mod durable_run;
mod entry;
pub(crate) mod events;
mod fastapi;
mod fastbatch;
mod fastsend;
mod formats;
pub(crate) mod gather;
mod history;
mod hold;
pub mod hooks;
pub(crate) mod inbox;
pub(crate) mod jobs;
mod lifecycle;
mod messaging;
pub(crate) use messaging::fuzz_v2_request;
mod eio_bare;
mod output;
mod pipeline;
mod poll_state;
mod position;
mod presence;
mod proxied;
pub(crate) mod proxy;
mod request;
mod route;
pub(crate) mod shared;
mod sio;
mod sio_connect;
mod sio_events;
mod sio_poll;
mod sio_proxy;
pub(crate) mod sio_recover;
mod sio_rooms;
pub(crate) mod sio_sessions;
mod sse_proxy;
mod state;
mod sync;
pub(crate) mod webhook;
mod ws;

#[cfg(feature = "axum")]
pub(crate) use adopt::Adoption;
use entry::flag;
pub(crate) use entry::{ConnEntry, ConnKind, Frame, Phase, Stamp};
use inbox::ShardMsg;
use shared::HubShared;

/// What the shell must do with a socket.
///
/// Shutdowns name the connection, not its slot: a request is applied at the end of the loop
/// iteration, and by then the entry may be gone and its slot taken by a connection accepted in
/// the same iteration (io_uring handles a send error, the peer's reset and an accept in one
/// batch of completions). A request for a connection that is gone is dropped (see
/// [`ShardState::live_fd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoReq {
    /// Shut down the write side (the close frame or response is out).
    ShutWr(ConnId),
    /// Shut down both sides: a cut (close deadline, write error, shutdown deadline).
    Cut(ConnId),
    /// Close the descriptor: the entry is gone.
    Close(RawFd),
}

/// A socket changing hands between entries, for the shell, in order: a long-polling session
/// borrows its parked GET's socket while the GET waits (so the two share one entry) and gives
/// it back to a new HTTP entry to answer it (`shard::sio_poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rewatch {
    /// io_uring: cancel the receive armed for this connection; its socket moves once the
    /// receive ended ([`ShardState::recv_ended`]). The epoll shell never gets one.
    Cancel(ConnId),
    /// epoll: deregister this descriptor (it moves to another entry's slot, which a `Watch`
    /// then registers).
    Unwatch(RawFd),
    /// Watch this entry's socket, if the entry is still there: a connection's as an accepted
    /// one (epoll: register it; io_uring: arm its receive); a socket a session borrowed only
    /// for readiness — nothing is read from it while the GET waits, data or EOF give it back
    /// ([`ShardState::lent_ready`]; epoll: register it; io_uring: a one-shot poll).
    Watch(ConnId),
    /// io_uring: cancel the poll armed for this session's borrowed socket (given back).
    Unpoll(ConnId),
}

struct PendingInterest {
    remaining: usize,
    waiters: Vec<(ConnId, u64, Box<str>)>,
    /// SSE streams held until the change is acknowledged.
    held: Vec<ConnId>,
    /// Store requests sent once the change is acknowledged: a subscribe to a topic with
    /// history is answered only when every shard routes the topic's other events (join/leave)
    /// here too.
    then: Vec<crate::shard::jobs::StoreJob>,
}

/// The state of a shard.
pub(crate) struct ShardState {
    index: usize,
    pub(crate) hub: Arc<HubShared>,
    conns: Slab<ConnEntry>,
    /// Local connections of each authenticated user.
    users: HashMap<Arc<str>, Vec<ConnId>>,
    registry: Registry,
    interest: Interest,
    pending: HashMap<u64, PendingInterest>,
    pending_by_pattern: HashMap<Box<str>, u64>,
    next_token: u64,
    generation: u32,
    pub_seq: u64,
    /// The shard's clock, set by the shell once per iteration; `stamp` is the same instant as
    /// entries store it.
    now: Instant,
    epoch: Instant,
    stamp: Stamp,
    /// Connections with output to flush at the end of this loop iteration (corking).
    dirty: Vec<u32>,
    /// Socket work for the shell.
    io: Vec<IoReq>,
    /// Scratch for decrypted TLS input.
    plain: Vec<u8>,
    /// permessage-deflate for every connection of the shard (no context takeover): the
    /// compressor of outgoing frames, and the inflater of incoming messages.
    deflater: crate::proto::deflate::Deflater,
    inflater: crate::proto::deflate::Inflater,
    /// When the graceful shutdown's drain delay ends (503 to new clients until then).
    drain_until: Option<Instant>,
    /// Listeners closed, every connection told 1001.
    shutting_down: bool,
    last_tick: Instant,
    /// Topics whose stored publications a connection must not receive yet: its subscribe
    /// waits for the store's answer, which covers them (`""` = its user's durable messages,
    /// until the inbox sync arrives). See `hold` and `runtime::store`.
    held: HashMap<ConnId, Vec<hold::Hold>>,
    /// The streams of the history topics this shard owns (memory store, one node: see
    /// `history`); empty otherwise.
    history: crate::store::streams::Streams,
    /// Cluster: per topic with history, the last (epoch, offset) received (to detect gaps)
    /// and what the position check needs (see `position`).
    streams: HashMap<Arc<str>, position::Stream>,
    check: position::Check,
    /// Durable messages written to local connections and not yet acknowledged, per user.
    durable: HashMap<Arc<str>, std::collections::BTreeMap<u64, durable::PendingDurable>>,
    /// Connections whose inbox sync is not finished (waiting for the store, or being written
    /// page by page as the outbound queue drains).
    syncs: HashMap<ConnId, sync::InboxCursor>,
    /// Application metadata from `on_connect`, shown in presence.
    meta: HashMap<ConnId, Arc<str>>,
    /// Socket.IO connections' namespaces and pending binary packets.
    sio: HashMap<ConnId, Box<sio::SioConn>>,
    /// Socket.IO long-polling sessions this shard owns, and links to sessions of others.
    polls: sio_poll::Polls,
    /// Per topic with history, the last position delivered here (Socket.IO recovery).
    sio_seen: sio_sessions::Seen,
    /// The Socket.IO connection and namespace whose event is being handled (its joins and
    /// leaves are that namespace's: `sio_rooms`).
    sio_ctx: Option<(ConnId, usize)>,
    /// Topics with delta subscribers: the previous publication and who received it.
    deltas: delta::Deltas,
    /// The node's name, shard-local (handlers' `Context::client_id`).
    node: std::rc::Rc<str>,
    /// Sockets adopted from an embedding server since the shell last looked: it must watch them
    /// as it watches accepted ones.
    adopted: Vec<u32>,
    /// Sockets that changed hands since the shell last looked (see [`Rewatch`]).
    rewatch: Vec<Rewatch>,
    /// Connections waiting for the backend (a proxy call), with the messages they sent since.
    proxied: HashMap<ConnId, proxy::Waiting>,
    /// `expire_at` (Unix seconds) of connections the connect proxy gave one.
    expiry: HashMap<ConnId, u64>,
    /// Connections whose refresh call is out.
    refreshing: std::collections::HashSet<ConnId>,
    /// Durable-send batches served here, by the connection that asked, until every result
    /// is in (`fastbatch`).
    batches: HashMap<ConnId, fastbatch::Pending>,
    /// The wall clock at `epoch` (for `expire_at`, which is wall time).
    wall_epoch: std::time::SystemTime,
    /// `now` as wall-clock milliseconds, once computed in this loop turn (`history`).
    wall_ms: Option<u64>,
}

impl ShardState {
    pub(crate) fn new(index: usize, hub: Arc<HubShared>) -> Self {
        let now = Instant::now();
        ShardState {
            index,
            hub: hub.clone(),
            // Reserved, not touched: pages of the slab cost memory only once entries use them,
            // and a reservation spares the copy (and the freed old copy) of each doubling.
            conns: Slab::with_capacity(16 * 1024),
            users: HashMap::new(),
            registry: Registry::new(),
            interest: Interest::new(),
            pending: HashMap::new(),
            pending_by_pattern: HashMap::new(),
            next_token: 0,
            generation: 0,
            pub_seq: 0,
            now,
            epoch: now,
            stamp: Stamp::at(now, now),
            dirty: Vec::new(),
            io: Vec::new(),
            plain: Vec::new(),
            deflater: crate::proto::deflate::Deflater::new(
                hub.config.compression.level,
                hub.config.compression.threshold,
            ),
            inflater: Default::default(),
            drain_until: None,
            shutting_down: false,
            last_tick: now,
            held: HashMap::new(),
            history: crate::store::streams::Streams::new(
                hub.shard_history.clone().unwrap_or_else(|| "".into()),
            ),
            streams: HashMap::new(),
            check: position::Check::new(now),
            durable: HashMap::new(),
            syncs: HashMap::new(),
            meta: HashMap::new(),
            sio: HashMap::new(),
            polls: Default::default(),
            sio_seen: Default::default(),
            sio_ctx: None,
            deltas: HashMap::new(),
            node: std::rc::Rc::from(&*hub.cluster.node),
            adopted: Vec::new(),
            rewatch: Vec::new(),
            proxied: HashMap::new(),
            expiry: HashMap::new(),
            refreshing: Default::default(),
            batches: HashMap::new(),
            wall_epoch: std::time::SystemTime::now(),
            wall_ms: None,
        }
    }

    pub(crate) fn stats(&self) -> &ShardStats {
        &self.hub.stats[self.index]
    }

    /// Sets the coarse clock (once per loop iteration).
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.stamp = Stamp::at(self.epoch, now);
        self.wall_ms = None;
    }

    /// Whether listeners should close (the drain delay is over).
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Whether the loop may exit: shut down and every connection gone.
    pub(crate) fn is_drained(&self) -> bool {
        self.shutting_down && self.conns.is_empty()
    }

    /// Open entries (any phase).
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// The descriptor of a live entry.
    pub(crate) fn fd(&self, slot: u32) -> Option<RawFd> {
        self.conns.get(slot as usize).map(|c| c.fd)
    }

    /// The descriptor of connection `id` if it is still open (not of a later one in its slot).
    pub(crate) fn live_fd(&self, id: ConnId) -> Option<RawFd> {
        self.conns
            .get(id.slot() as usize)
            .filter(|c| c.id == id && c.fd >= 0)
            .map(|c| c.fd)
    }

    /// Takes the connections to flush, for the end of the loop iteration.
    pub(crate) fn take_dirty(&mut self, into: &mut Vec<u32>) {
        if self.polls.has_sessions() {
            // Sessions have no socket: their output goes to their carriers first.
            self.flush_polls();
        }
        std::mem::swap(&mut self.dirty, into);
    }

    /// Puts back connections a flush could not take this iteration (still marked dirty).
    pub(crate) fn requeue_dirty(&mut self, slots: &[u32]) {
        self.dirty.extend_from_slice(slots);
    }

    /// Whether connections wait for a flush (the loop must not sleep).
    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Takes the sockets that changed hands since the last call ([`Rewatch`], in order): the
    /// shell applies them before it waits again.
    pub(crate) fn take_rewatch(&mut self, into: &mut Vec<Rewatch>) {
        if self.polls.has_sessions() {
            self.lend_parked();
        }
        std::mem::swap(&mut self.rewatch, into);
    }

    /// Takes the slots of sockets adopted since the last call (see `ShardMsg::Adopt`): the shell
    /// arms a receive on each (io_uring) or registers it (epoll), as for an accepted socket.
    pub(crate) fn take_adopted(&mut self, into: &mut Vec<u32>) {
        std::mem::swap(&mut self.adopted, into);
    }

    /// Takes the socket work for the shell.
    pub(crate) fn take_io(&mut self, into: &mut Vec<IoReq>) {
        std::mem::swap(&mut self.io, into);
    }

    /// Queues `slot` for the end-of-iteration flush (once).
    fn mark_dirty(&mut self, slot: u32) {
        if let Some(c) = self.conns.get_mut(slot as usize) {
            if !c.has(flag::DIRTY) {
                c.set(flag::DIRTY);
                self.dirty.push(slot);
            }
        }
    }
}

impl Drop for ShardState {
    /// Connections still open when the shard stops give back their slots in the caps, as their
    /// permits did when dropped.
    fn drop(&mut self) {
        let guard = &self.hub.config.guard;
        for (_, c) in self.conns.iter_mut() {
            c.uncap(guard);
        }
    }
}

/// Publishes from outside any connection (library handle): every shard delivers locally.
pub(crate) fn publish_external(hub: &HubShared, topic: &str, frame: Bytes) {
    let t: Arc<str> = topic.into();
    if hub.cluster.clustered {
        hub.cluster.broker.publish(&[(t.clone(), frame.clone())]);
    }
    for inbox in hub.inboxes.iter() {
        inbox.push(ShardMsg::Publish {
            topic: t.clone(),
            frame: frame.clone(),
            exclude: None,
        });
    }
}

#[cfg(test)]
mod tests;
