//! Benchmark hooks: the shard's real subscribe, publish and delivery paths driven without
//! sockets (`bench_support`, `benches/`), and the teardown a shell would do.

use bytes::Bytes;

use super::{flag, ConnKind, Phase, ShardState};
use crate::ConnId;

impl ShardState {
    /// Benchmarks only: registers an upgraded pub/sub connection without a socket.
    pub(crate) fn bench_register(&mut self, admitted: crate::policy::guard::Admitted) -> ConnId {
        let slot = self.accept(-1, ([127, 0, 0, 1], 0).into());
        let id = self.conns[slot as usize].id;
        self.upgrade(id, Phase::Ws(ConnKind::PubSub), admitted);
        id
    }

    /// Benchmarks only: subscribes through the real path; false if refused.
    pub(crate) fn bench_subscribe(&mut self, id: ConnId, pattern: &str) -> bool {
        self.subscribe(id, pattern).is_ok()
    }

    /// Benchmarks only: unsubscribes through the real path.
    pub(crate) fn bench_unsubscribe(&mut self, id: ConnId, pattern: &str) {
        self.unsubscribe(id, pattern);
    }

    /// Benchmarks only: [`ShardState::publish`] (interest lookup, remote inboxes, local fan-out).
    pub(crate) fn bench_publish(&mut self, topic: &str, frame: Bytes) {
        self.publish(topic, frame, None);
    }

    /// Benchmarks only: [`ShardState::deliver_local`].
    pub(crate) fn bench_deliver_local(&mut self, topic: &str, frame: &Bytes) {
        self.deliver_local(topic, frame, None);
    }

    /// Benchmarks only: removes a connection as the shell does once its socket is done.
    pub(crate) fn bench_remove(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            c.set(flag::RD_EOF | flag::WR_SHUT);
        }
        self.begin_close(id);
        self.release_if_done(id.slot());
    }

    /// Benchmarks only: empties every outbound queue as a flush would (capacity kept); returns
    /// how many frames were queued.
    pub(crate) fn bench_drain(&mut self) -> usize {
        let mut frames = 0;
        for (_, c) in self.conns.iter_mut() {
            frames += c.out.len();
            c.out.clear();
            c.queued = 0;
            c.clear(flag::DIRTY);
        }
        self.dirty.clear();
        frames
    }
}
