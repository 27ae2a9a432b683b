//! From settings to what runs: the engine's [`Config`] and the door policy
//! ([`Guard`](crate::policy::guard::Guard)).

use crate::config::{Config, StoreConfig};

use super::Settings;

impl Settings {
    /// The engine's [`Config`] for these settings.
    pub fn engine_config(&self) -> Config {
        Config {
            listen: self.listen,
            shards: self.shards,
            io: self.io,
            pin_cores: self.pin_cores,
            echo_path: self.echo_path.clone(),
            ws_path: self.ws_path.clone(),
            socketio_namespaces: self.socketio_namespaces.clone(),
            socketio_recovery: self.socketio_recovery,
            // A library feature (`Builder::engineio`): the binary has no handler for it.
            engineio: None,
            max_message_size: self.max_message_size,
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            outbound_queue: self.outbound_queue,
            max_subscriptions: self.limits.max_subscriptions,
            handler_threads: self.handler_threads,
            handshake_timeout: self.limits.handshake_timeout,
            http_keepalive_timeout: self.limits.keepalive_timeout,
            close_timeout: self.close_timeout,
            shutdown_timeout: self.shutdown_timeout,
            drain_delay: self.drain_delay,
            stats_interval: self.stats_interval,
            api_key: self.api.key.as_ref().map(|k| k.expose().to_string()),
            // Building the guard reads key files and can fail: see `Guard::from_settings`.
            guard: crate::policy::guard::Guard::default(),
            topics: self.topics.clone(),
            store: StoreConfig {
                backend: self.store_backend(),
                ..self.store.clone()
            },
            inbox: self.inbox,
            ui: self.ui.enabled,
            node: self.node.clone(),
            cluster: self.cluster.clone(),
            compression: self.compression,
            proxy: self.proxy.clone(),
            webhooks: self.webhooks.clone(),
        }
    }
}

impl crate::policy::guard::Guard {
    /// Builds the door policy from validated settings (reads key and certificate files).
    pub fn from_settings(s: &Settings) -> Result<Self, crate::policy::guard::GuardError> {
        Self::from_sections(&s.auth, &s.permissions, &s.security, &s.limits, &s.tls)
    }
}
