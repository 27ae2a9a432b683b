//! Application hooks: code the embedding application runs at points of a connection's life and
//! of a durable message's life. Registered on the [`Builder`](crate::Builder).
//!
//! `on_connect`, `on_subscribe` and `on_disconnect` run on the connection's shard, inline: they
//! must be quick and must not block (hand slow work to a thread of your own). `on_delivery` runs
//! on the store thread.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proto::error::HandlerError;
pub use crate::store::{MessageStatus, StatusChange};

/// A connection about to be accepted (after authentication, before the `101` response).
#[derive(Debug)]
pub struct ConnectInfo<'a> {
    /// The client id the connection will have (`"<node>.<n>"`).
    pub client: &'a str,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The request path and query (`/ws?token=...` minus nothing: the application may read its
    /// own parameters here).
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// A Socket.IO client's auth payload (the JSON text of its first CONNECT packet; `path`
    /// is then `/socket.io/` and `query` `None`); `None` for `/ws` and SSE.
    pub auth: Option<&'a str>,
}

/// What `on_connect` decides for an accepted connection.
#[derive(Debug, Default, Clone)]
pub struct ConnectOutcome {
    /// Replaces the connection's user id (e.g. from a session cookie the application checked).
    pub user: Option<String>,
    /// Topics the connection is subscribed to at once (server-side, no permission check).
    pub topics: Vec<String>,
    /// Application metadata shown in presence entries (`"meta"`), as JSON.
    pub meta: Option<serde_json::Value>,
}

/// A connection that ended.
#[derive(Debug)]
pub struct DisconnectInfo<'a> {
    /// Its client id.
    pub client: &'a str,
    /// Its user, if any.
    pub user: Option<&'a str>,
    /// The peer's address.
    pub remote: SocketAddr,
}

/// A subscription being asked for (by the client, after the permission check).
#[derive(Debug)]
pub struct SubscribeInfo<'a> {
    /// The client id.
    pub client: &'a str,
    /// The user, if any.
    pub user: Option<&'a str>,
    /// The pattern asked for.
    pub topic: &'a str,
}

type ConnectHook = dyn Fn(&ConnectInfo<'_>) -> Result<ConnectOutcome, HandlerError> + Send + Sync;
type DisconnectHook = dyn Fn(&DisconnectInfo<'_>) + Send + Sync;
type SubscribeHook = dyn Fn(&SubscribeInfo<'_>) -> Result<(), HandlerError> + Send + Sync;
type DeliveryHook = dyn Fn(&StatusChange) + Send + Sync;

/// The registered hooks (all optional).
#[derive(Default, Clone)]
pub(crate) struct Hooks {
    pub on_connect: Option<Arc<ConnectHook>>,
    pub on_disconnect: Option<Arc<DisconnectHook>>,
    pub on_subscribe: Option<Arc<SubscribeHook>>,
    pub on_delivery: Option<Arc<DeliveryHook>>,
    /// Runs when a Socket.IO namespace connects (socket.io's `connection` event).
    pub on_socketio_connect: Option<Arc<dyn crate::proto::handler::Handler>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_subscribe", &self.on_subscribe.is_some())
            .field("on_delivery", &self.on_delivery.is_some())
            .field("on_socketio_connect", &self.on_socketio_connect.is_some())
            .finish()
    }
}

/// Runs a hook, turning a panic into an error so that a buggy hook fails one connection, not
/// the shard.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, HandlerError>) -> Result<T, HandlerError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(HandlerError::internal("hook panicked")))
}
