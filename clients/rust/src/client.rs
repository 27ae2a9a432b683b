//! The public [`Client`] handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch, Mutex};

use crate::codec;
use crate::command::{call, Command, Handle};
use crate::error::Error;
use crate::messages::Messages;
use crate::options::Options;
use crate::subscription::{ClientInfo, Publication, Subscription};
use crate::task::{ConnectionState, Task};

/// A position in a topic's history: the stream's epoch and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Opaque; changes when the server cannot prove continuity (offsets restart at 1).
    pub epoch: String,
    /// Offset of the last publication seen (0 = none).
    pub offset: u64,
}

/// The answer to [`Client::history`].
#[derive(Debug, Clone)]
pub struct History {
    /// The stream's current position (its top).
    pub position: StreamPosition,
    /// The publications asked for, oldest first.
    pub publications: Vec<Publication>,
}

/// The answer to [`Client::presence_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PresenceStats {
    /// Connections subscribed to exactly the topic.
    pub clients: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// The answer to [`Client::info`]: who this connection is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Info {
    /// The connection's client id (`"<node>.<n>"`).
    pub client: String,
    /// Its user (`""` when anonymous).
    #[serde(default)]
    pub user: String,
    /// The server node's name.
    #[serde(default)]
    pub node: String,
}

/// A connection to a ringhub server that reconnects by itself. Cheap to clone; the connection
/// closes when [`close`](Self::close) is called or the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    ids: Arc<AtomicU64>,
    opts: Arc<Options>,
    gens: AtomicU64,
    messages: Messages,
    handle: Handle,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &*self.inner.state.borrow())
            .finish_non_exhaustive()
    }
}

fn to_raw<T: Serialize + ?Sized>(data: &T) -> Result<Box<RawValue>, Error> {
    Ok(serde_json::value::to_raw_value(data)?)
}

fn parse<T: for<'de> Deserialize<'de>>(data: Option<Box<RawValue>>) -> Result<T, Error> {
    let data = data.ok_or_else(|| Error::Json("the reply carries no data".into()))?;
    Ok(serde_json::from_str(data.get())?)
}

#[derive(Deserialize)]
struct HistoryReply {
    epoch: String,
    offset: u64,
    #[serde(default)]
    publications: Vec<HistoryItem>,
}

#[derive(Deserialize)]
struct HistoryItem {
    #[serde(default)]
    event: String,
    data: Option<Box<RawValue>>,
    offset: Option<u64>,
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws`, `wss://...`) and keeps the connection up:
    /// after a drop it reconnects with [`Options::backoff`], resubscribes every topic and
    /// recovers what was missed on topics with history.
    ///
    /// Fails when the first attempt fails (refused, HTTP 401, ...). Must be called inside a
    /// tokio runtime; the connection runs on a spawned task.
    ///
    /// ```no_run
    /// use ringhub_client::{Client, Event, Options};
    ///
    /// # async fn demo() -> Result<(), ringhub_client::Error> {
    /// let client = Client::connect("ws://127.0.0.1:8080/ws", Options::default().token("jwt")).await?;
    /// let mut sub = client.subscribe("chat:room1").await?;
    /// client.publish("chat:room1", "message", &serde_json::json!({"text": "hi"}))?;
    /// while let Some(event) = sub.recv().await {
    ///     if let Event::Publication(p) = event {
    ///         println!("{} {} {}", p.topic, p.event, p.data);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: impl Into<String>, options: Options) -> Result<Client, Error> {
        let opts = Arc::new(options);
        let (tx, cmd_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ConnectionState::Connecting);
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        let ids = Arc::new(AtomicU64::new(1));
        let handle = Handle {
            cmd: tx.downgrade(),
            ids: ids.clone(),
            timeout: opts.request_timeout,
        };
        let task = Task::new(
            url.into(),
            opts.clone(),
            cmd_rx,
            state_tx,
            ids.clone(),
            msg_tx,
            handle.clone(),
        );
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(task.run(first_tx));
        first_rx.await.map_err(|_| Error::Closed)??;
        let messages = Messages {
            rx: Arc::new(Mutex::new(msg_rx)),
            manual_ack: opts.manual_ack,
            handle: handle.clone(),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                tx,
                state,
                ids,
                opts,
                gens: AtomicU64::new(1),
                messages,
                handle,
            }),
        })
    }

    /// A receiver of the connection state (`changed().await`, `wait_for(...)`).
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.clone()
    }

    /// The durable user messages of this connection's user (protocol v2).
    pub fn messages(&self) -> Messages {
        self.inner.messages.clone()
    }

    /// Subscribes to a topic or pattern (`chat:*`) and returns once the server confirmed it:
    /// every publication made afterwards is delivered. One subscription per topic per client.
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        self.subscribe_inner(topic, None, false).await
    }

    /// Subscribes to an exact topic with history asking for deltas (`delta: "fossil"`): the
    /// server may send each publication as a Fossil delta against the previous one, which the
    /// client applies, so [`Publication::data`](crate::Publication) is always the full data.
    /// Pays for large payloads that change little between publications (see the protocol's
    /// "when it pays"). A topic without history is refused (`not_available`).
    pub async fn subscribe_delta(&self, topic: &str) -> Result<Subscription, Error> {
        self.subscribe_inner(topic, None, true).await
    }

    /// Subscribes and first delivers what was published on `topic` after `since` (a topic with
    /// history; see [`Event::Recovered`](crate::Event::Recovered) and
    /// [`Event::RecoveryFailed`](crate::Event::RecoveryFailed)).
    pub async fn subscribe_since(
        &self,
        topic: &str,
        since: StreamPosition,
    ) -> Result<Subscription, Error> {
        self.subscribe_inner(topic, Some((since.epoch, since.offset)), false)
            .await
    }

    async fn subscribe_inner(
        &self,
        topic: &str,
        since: Option<(String, u64)>,
        delta: bool,
    ) -> Result<Subscription, Error> {
        let gen = self.inner.gens.fetch_add(1, Ordering::Relaxed);
        let (events, rx) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        self.send(Command::Subscribe {
            topic: topic.to_string(),
            gen,
            since,
            delta,
            events,
            ready,
        })?;
        let sub = Subscription {
            topic: topic.to_string(),
            gen,
            rx,
            handle: self.inner.handle.clone(),
            active: true,
        };
        match tokio::time::timeout(self.inner.opts.request_timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(sub),
            Ok(Ok(Err(e))) => {
                let mut sub = sub;
                // Refused (or a duplicate): the task has no entry for this generation.
                sub.active = false;
                Err(e)
            }
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout), // dropping `sub` unsubscribes
        }
    }

    /// Publishes without waiting (at most once): fails with [`Error::Disconnected`] when not
    /// connected ([`Error::Closed`] once closed).
    pub fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        self.publish_inner(topic, event, data, false)
    }

    fn publish_inner<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
        exclude_sender: bool,
    ) -> Result<(), Error> {
        match *self.inner.state.borrow() {
            ConnectionState::Connected => {}
            ConnectionState::Closed => return Err(Error::Closed),
            _ => return Err(Error::Disconnected),
        }
        let data = to_raw(data)?;
        let mut b = Vec::with_capacity(32 + topic.len() + event.len() + data.get().len());
        codec::encode_with(&mut b, event, topic, None, Some(data.get()), exclude_sender);
        self.send(Command::Send {
            frame: String::from_utf8(b).expect("the codec writes UTF-8"),
            id: None,
            reply: None,
        })
    }

    /// Like [`publish`](Self::publish), but not delivered to this connection even when it is
    /// subscribed (`exclude_sender`, protocol v2).
    pub fn publish_to_others<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<(), Error> {
        self.publish_inner(topic, event, data, true)
    }

    /// Publishes and waits for the server's acceptance; on a topic with history returns the
    /// publication's offset (it is stored by then).
    pub async fn publish_ack<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> Result<Option<u64>, Error> {
        #[derive(Deserialize)]
        struct Stored {
            offset: Option<u64>,
        }
        let reply = self.request(event, topic, data).await?;
        Ok(reply
            .and_then(|d| serde_json::from_str::<Stored>(d.get()).ok())
            .and_then(|s| s.offset))
    }

    /// Sends `{event, topic, data, id}` and waits for the `reply` (its `data`) or `error`.
    /// A `data` serialising to `null` is left out. Requests made while reconnecting are sent
    /// once connected; all of them are bounded by [`Options::request_timeout`].
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        event: &str,
        topic: &str,
        data: &T,
    ) -> Result<Option<Box<RawValue>>, Error> {
        let data = to_raw(data)?;
        let data = (data.get() != "null").then_some(&*data);
        self.request_raw(event, topic, data).await
    }

    /// [`request`](Self::request) with the payload already as JSON.
    pub async fn request_raw(
        &self,
        event: &str,
        topic: &str,
        data: Option<&RawValue>,
    ) -> Result<Option<Box<RawValue>>, Error> {
        let mut b = Vec::with_capacity(48 + topic.len() + data.map_or(0, |d| d.get().len()));
        let inner = &self.inner;
        call(
            &inner.tx,
            &inner.ids,
            inner.opts.request_timeout,
            |id, reply| {
                codec::encode(&mut b, event, topic, Some(id), data.map(RawValue::get));
                Command::Send {
                    frame: String::from_utf8(b).expect("the codec writes UTF-8"),
                    id: Some(id),
                    reply: Some(reply),
                }
            },
        )
        .await
    }

    /// The latest `limit` publications of a topic with history (after `since` when given),
    /// oldest first (protocol v2).
    pub async fn history(
        &self,
        topic: &str,
        limit: Option<usize>,
        since: Option<&StreamPosition>,
    ) -> Result<History, Error> {
        let data = codec::history_data(limit, since.map(|s| (s.epoch.as_str(), s.offset)));
        let data = RawValue::from_string(data)?;
        let reply: HistoryReply = parse(self.request_raw("history", topic, Some(&data)).await?)?;
        Ok(History {
            position: StreamPosition {
                epoch: reply.epoch,
                offset: reply.offset,
            },
            publications: reply
                .publications
                .into_iter()
                .map(|p| Publication {
                    topic: topic.to_string(),
                    event: p.event,
                    data: p.data.unwrap_or_else(crate::router::null),
                    offset: p.offset,
                })
                .collect(),
        })
    }

    /// The connections subscribed to exactly `topic` (protocol v2, namespaces with presence).
    pub async fn presence(&self, topic: &str) -> Result<Vec<ClientInfo>, Error> {
        #[derive(Deserialize)]
        struct Presence {
            clients: Vec<ClientInfo>,
        }
        let p: Presence = parse(self.request_raw("presence", topic, None).await?)?;
        Ok(p.clients)
    }

    /// How many connections and users are subscribed to exactly `topic` (protocol v2).
    pub async fn presence_stats(&self, topic: &str) -> Result<PresenceStats, Error> {
        parse(self.request_raw("presence_stats", topic, None).await?)
    }

    /// This connection's client id, user and node (protocol v2).
    pub async fn info(&self) -> Result<Info, Error> {
        parse(self.request_raw("info", "", None).await?)
    }

    /// Closes the connection (close frame 1000) and ends every subscription; pending requests
    /// fail with [`Error::Closed`].
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Command::Close(done)).is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, c: Command) -> Result<(), Error> {
        self.inner.tx.send(c).map_err(|_| Error::Closed)
    }
}
