//! The library side of protocol v2: hooks, namespaces and the store on the [`Builder`]; durable
//! sends, history, presence, server-side subscriptions and a batch sender on the
//! [`ServerHandle`]. Every handle call runs on the API thread (which gathers from the shards and
//! waits for the store), so it never blocks a shard and works from any async runtime.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::hub::{Builder, ServerHandle};
use crate::config::{Namespace, StoreBackend};
use crate::http::messaging as ops;
pub use crate::http::messaging::{PresenceEntry, SendReceipt};
pub use crate::http::response::ApiError;
use crate::proto::error::HandlerError;
use crate::shard::hooks::{
    ConnectInfo, ConnectOutcome, DisconnectInfo, StatusChange, SubscribeInfo,
};
use crate::shard::inbox::Target;
use crate::shard::shared::{ControlJob, HubShared};
use crate::store::{HistoryRead, Store};

impl Builder {
    /// Adds a topic namespace (`[[topics]]`): history, presence and join/leave for topics
    /// matching its pattern.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringhub::config::Namespace;
    ///
    /// let server = ringhub::RingHub::builder()
    ///     .topic(Namespace {
    ///         pattern: "chat:*".into(),
    ///         history_size: 100,
    ///         history_ttl: Duration::from_secs(600),
    ///         presence: true,
    ///         join_leave: true,
    ///     })
    ///     .pubsub()
    ///     .build();
    /// assert!(server.is_ok());
    /// ```
    pub fn topic(mut self, ns: Namespace) -> Self {
        self.config.topics.push(ns);
        self
    }

    /// Keeps history and inboxes in a redb database under `dir` (survives restarts) instead of
    /// memory.
    pub fn store_path(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.store.backend = StoreBackend::Redb;
        self.config.store.path = dir.into();
        self
    }

    /// With the redb store ([`store_path`](Self::store_path)): answers a batch once its
    /// write-ahead log record is written and syncs the log at most `every` later
    /// (`[store] sync = "interval"`, `sync_interval`; 1 ms to 60 s) instead of before the answer.
    /// Every answered write still survives a process crash (`kill -9`); a kernel crash or power
    /// loss can lose the writes answered in the last `every`. Several times the write rate when
    /// the disk's `fdatasync` is what bounds it.
    pub fn store_sync_interval(mut self, every: std::time::Duration) -> Self {
        self.config.store.sync = crate::config::StoreSync::Interval;
        self.config.store.sync_interval = every;
        self
    }

    /// Uses this [`Store`] (e.g. one of your own) instead of the configured one.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Runs `f` for every WebSocket connection before it is accepted: return an error to refuse
    /// it (HTTP 403 with the message), or an outcome that replaces the user, subscribes topics
    /// and attaches metadata shown in presence. Runs on the shard: must not block.
    ///
    /// ```
    /// use ringhub::hooks::{ConnectInfo, ConnectOutcome};
    /// use ringhub::HandlerError;
    ///
    /// let builder = ringhub::RingHub::builder().on_connect(|c: &ConnectInfo<'_>| {
    ///     if c.query.is_some_and(|q| q.contains("banned=1")) {
    ///         return Err(HandlerError::forbidden("banned"));
    ///     }
    ///     Ok(ConnectOutcome { topics: vec!["lobby".into()], ..Default::default() })
    /// });
    /// ```
    pub fn on_connect(
        mut self,
        f: impl Fn(&ConnectInfo<'_>) -> Result<ConnectOutcome, HandlerError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_connect = Some(Arc::new(f));
        self
    }

    /// Runs `handler` each time a Socket.IO client connects a namespace, right after the CONNECT
    /// answer (socket.io's `io.of(nsp).on("connection", socket => ...)`): the message's topic is
    /// the namespace (`/`, `/chat`), its event `connect`, its data the CONNECT auth payload (none
    /// when the client sent none, or when a recovered session resumed) and it has no id. What the
    /// handler sends goes to that namespace, and the rooms it joins are that namespace's. An
    /// error is emitted to the client as the event `error`. Runs on the shard: must not block.
    ///
    /// ```
    /// use ringhub::{Context, Message};
    ///
    /// let builder = ringhub::RingHub::builder().on_socketio_connect(
    ///     |ctx: &mut Context<'_>, msg: &Message<'_>| {
    ///         ctx.join("lobby")?;
    ///         ctx.send_args(msg.topic(), "welcome", &("hello", msg.topic()))
    ///     },
    /// );
    /// ```
    pub fn on_socketio_connect(mut self, handler: impl crate::proto::handler::Handler) -> Self {
        self.hooks.on_socketio_connect = Some(Arc::new(handler));
        self
    }

    /// Runs `f` when an accepted connection is gone. Runs on the shard: must not block.
    ///
    /// ```
    /// let builder = ringhub::RingHub::builder()
    ///     .on_disconnect(|d: &ringhub::hooks::DisconnectInfo<'_>| tracing::info!(client = d.client, "gone"));
    /// ```
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&DisconnectInfo<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_disconnect = Some(Arc::new(f));
        self
    }

    /// Runs `f` when a client asks to subscribe (after the permission check): an error refuses
    /// the subscription with its code and message. Runs on the shard: must not block.
    ///
    /// ```
    /// use ringhub::hooks::SubscribeInfo;
    /// use ringhub::HandlerError;
    ///
    /// let builder = ringhub::RingHub::builder().on_subscribe(|s: &SubscribeInfo<'_>| {
    ///     if s.topic.starts_with("admin:") && s.user != Some("root") {
    ///         return Err(HandlerError::forbidden("admins only"));
    ///     }
    ///     Ok(())
    /// });
    /// ```
    pub fn on_subscribe(
        mut self,
        f: impl Fn(&SubscribeInfo<'_>) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_subscribe = Some(Arc::new(f));
        self
    }

    /// Runs `f` when a durable message reaches a final status: acked, expired or dropped
    /// (go-wsc's delivery callbacks). Runs on the store thread: keep it short.
    ///
    /// ```
    /// let builder = ringhub::RingHub::builder().on_delivery(|c: &ringhub::hooks::StatusChange| {
    ///     tracing::info!(id = c.id, user = &*c.user, status = c.status.as_str(), "delivery");
    /// });
    /// ```
    pub fn on_delivery(mut self, f: impl Fn(&StatusChange) + Send + Sync + 'static) -> Self {
        self.hooks.on_delivery = Some(Arc::new(f));
        self
    }
}

impl ServerHandle {
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<HubShared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ApiError>> + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = ControlJob::Call(Box::new(move |hub| {
            Box::pin(async move {
                let _ = tx.send(f(hub).await);
            })
        }));
        if !self.hub.submit_api(job) {
            return Err(ApiError::new(503, "the server has stopped"));
        }
        rx.await
            .unwrap_or_else(|_| Err(ApiError::new(503, "the server has stopped")))
    }

    /// Stores a durable message in `user`'s inbox (answered once committed: with the redb store
    /// it survives `kill -9`), then writes it to the user's connections; they acknowledge it.
    pub async fn send_durable<T: Serialize + ?Sized>(
        &self,
        user: &str,
        event: &str,
        data: &T,
    ) -> Result<SendReceipt, ApiError> {
        let data = to_raw(data)?;
        let (user, event) = (user.to_string(), event.to_string());
        self.call(move |hub| async move {
            ops::send_durable(&hub, &user, &event, Some(data.get().as_bytes())).await
        })
        .await
    }

    /// The latest `limit` publications of a topic with history (oldest first).
    pub async fn history(&self, topic: &str, limit: usize) -> Result<HistoryRead, ApiError> {
        let topic = topic.to_string();
        self.call(move |hub| async move { ops::history(&hub, &topic, limit, None).await })
            .await
    }

    /// The connections subscribed to exactly `topic`, on every shard.
    pub async fn presence(&self, topic: &str) -> Result<Vec<PresenceEntry>, ApiError> {
        let topic = topic.to_string();
        self.call(move |hub| async move { ops::presence(&hub, &topic).await })
            .await
    }

    /// Subscribes every connection of `user` to `topic` (silently, as Socket.IO's `socketsJoin`);
    /// returns how many; they receive every publication made after this returns.
    pub async fn subscribe_user(&self, user: &str, topic: &str) -> Result<usize, ApiError> {
        let (user, topic) = (Arc::<str>::from(user), topic.to_string());
        self.call(move |hub| async move {
            ops::subscription(&hub, Target::User(user), &topic, true)
                .await
                .map(|(n, _)| n)
        })
        .await
    }

    /// Unsubscribes every connection of `user` from `topic`; returns how many.
    pub async fn unsubscribe_user(&self, user: &str, topic: &str) -> Result<usize, ApiError> {
        let (user, topic) = (Arc::<str>::from(user), topic.to_string());
        self.call(move |hub| async move {
            ops::subscription(&hub, Target::User(user), &topic, false)
                .await
                .map(|(n, _)| n)
        })
        .await
    }

    /// A batch sender: one message to many users, with a result per user and callbacks before
    /// and after each send (go-wsc's batch sender).
    ///
    /// ```no_run
    /// # async fn demo(handle: &ringhub::ServerHandle) {
    /// let report = handle
    ///     .batch()
    ///     .before(|user| user != "blocked")
    ///     .after(|user, result| tracing::info!(user, ok = result.is_ok(), "sent"))
    ///     .send(&["alice", "bob"], "notice", &serde_json::json!({"text": "hi"}))
    ///     .await;
    /// assert_eq!(report.len(), 2);
    /// # }
    /// ```
    pub fn batch(&self) -> BatchSender<'_> {
        BatchSender {
            handle: self,
            before: None,
            after: None,
            durable: true,
        }
    }
}

fn to_raw<T: Serialize + ?Sized>(data: &T) -> Result<Box<RawValue>, ApiError> {
    serde_json::value::to_raw_value(data)
        .map_err(|e| ApiError::new(400, format!("cannot encode data: {e}")))
}

type Before<'a> = Box<dyn Fn(&str) -> bool + Send + Sync + 'a>;
type After<'a> = Box<dyn Fn(&str, &Result<SendReceipt, ApiError>) + Send + Sync + 'a>;

/// Sends one message to many users; see [`ServerHandle::batch`].
pub struct BatchSender<'a> {
    handle: &'a ServerHandle,
    before: Option<Before<'a>>,
    after: Option<After<'a>>,
    durable: bool,
}

/// What happened for one recipient of a batch.
#[derive(Debug)]
pub struct BatchResult {
    /// The user.
    pub user: String,
    /// The receipt (for a non-durable send `message_id` and `offset` are 0), or why it failed
    /// (`skipped` when `before` said no).
    pub result: Result<SendReceipt, ApiError>,
}

impl<'a> BatchSender<'a> {
    /// Called before each send; returning false skips that user.
    pub fn before(mut self, f: impl Fn(&str) -> bool + Send + Sync + 'a) -> Self {
        self.before = Some(Box::new(f));
        self
    }
    /// Called after each send with its result.
    pub fn after(
        mut self,
        f: impl Fn(&str, &Result<SendReceipt, ApiError>) + Send + Sync + 'a,
    ) -> Self {
        self.after = Some(Box::new(f));
        self
    }
    /// Durable (stored, acknowledged, retried: the default) or at-most-once sends.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sends to each user in order; one result per user.
    pub async fn send<T: Serialize + ?Sized>(
        self,
        users: &[&str],
        event: &str,
        data: &T,
    ) -> Vec<BatchResult> {
        let raw = match to_raw(data) {
            Ok(r) => r,
            Err(e) => {
                return users
                    .iter()
                    .map(|u| BatchResult {
                        user: u.to_string(),
                        result: Err(e.clone()),
                    })
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            if self.before.as_ref().is_some_and(|f| !f(user)) {
                out.push(BatchResult {
                    user: user.to_string(),
                    result: Err(ApiError::new(412, "skipped")),
                });
                continue;
            }
            let result = if self.durable {
                self.handle.send_durable(user, event, &*raw).await
            } else {
                let (u, e, d) = (user.to_string(), event.to_string(), raw.clone());
                self.handle
                    .call(move |hub| async move {
                        let n = ops::send_plain(&hub, &u, &e, Some(d.get().as_bytes())).await?;
                        Ok(SendReceipt {
                            message_id: 0,
                            offset: 0,
                            delivered: n,
                        })
                    })
                    .await
            };
            if let Some(f) = &self.after {
                f(user, &result);
            }
            out.push(BatchResult {
                user: user.to_string(),
                result,
            });
        }
        out
    }
}
