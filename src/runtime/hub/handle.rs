//! A running server: [`ServerHandle`] publishes from outside, reads the counters, and shuts
//! the threads down in order.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::proto::envelope;
use crate::proto::error::HandlerError;
use crate::proto::pattern::validate_topic;
use crate::proto::stats::{ShardStats, StatsSnapshot};
use crate::shard::inbox::ShardMsg;
use crate::shard::shared::HubShared;

/// A running server.
pub struct ServerHandle {
    pub(in crate::runtime) hub: Arc<HubShared>,
    pub(super) local_addr: SocketAddr,
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) pool: Vec<JoinHandle<()>>,
    pub(super) pool_stop: crossbeam_channel::Sender<()>,
    pub(super) api: Option<JoinHandle<()>>,
    pub(super) api_stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) store_thread: Option<JoinHandle<()>>,
    /// The webhook sender, when webhooks are configured.
    pub(super) webhook_thread: Option<JoinHandle<()>>,
    /// The backend proxies' client, when a proxy is configured.
    pub(super) proxy_thread: Option<crate::runtime::proxy::ProxyThread>,
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
