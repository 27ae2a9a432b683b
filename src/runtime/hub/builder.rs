//! The builder: [`RingHub::builder`] collects settings, handlers and middleware, and
//! [`Builder::build`] checks them and turns them into a [`Server`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::server::Server;
use crate::config::{Config, IoMode};
use crate::proto::error::ServerError;
use crate::proto::handler::{Handler, Layered, Middleware};
use crate::proto::pattern::{Pattern, PatternMap};
use crate::shard::hooks::Hooks;
use crate::shard::shared::Route;
use crate::store::Store;

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
    pub(in crate::runtime) config: Config,
    routes: Vec<(String, Arc<dyn Handler>, bool)>,
    middleware: Vec<Arc<dyn Middleware>>,
    pub(in crate::runtime) hooks: Hooks,
    pub(in crate::runtime) store: Option<Box<dyn Store>>,
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

    /// Serves a bare Engine.IO endpoint at `path` (`/engine.io/` is the usual one): Engine.IO v4
    /// sessions over WebSocket and long-polling, with the upgrade and heartbeats of
    /// `/socket.io/` and its origin rules and caps, but no Socket.IO layer, for clients of
    /// `engine.io-client` or of the protocol itself. Each message a client sends reaches the
    /// handler registered for `topic` (see [`handle`](Self::handle)) as event `message` with the
    /// text as a JSON string, or bytes as `{"$bin":"<base64>"}`; what the connection receives
    /// (a handler's [`Context::send_raw`](crate::Context::send_raw), publications to topics it
    /// subscribes to) goes back as one message made of the envelope's `data`. The token, when
    /// authentication is on, comes as on `/ws` (`?token=` or `Authorization`), and `on_connect`
    /// runs at the handshake.
    pub fn engineio(mut self, path: impl Into<String>, topic: impl Into<String>) -> Self {
        self.config.engineio = Some(crate::config::EngineIoEndpoint {
            path: path.into(),
            topic: topic.into(),
        });
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
