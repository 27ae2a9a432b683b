//! Subscriptions and the events they yield.

use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::command::{Command, Handle};
use crate::error::Error;

/// One publication on a subscribed topic.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The publication's topic (differs from the subscription's pattern for a wildcard).
    pub topic: String,
    /// Application event name.
    pub event: String,
    /// The payload exactly as published (`null` when the publication had none).
    pub data: Box<RawValue>,
    /// Position in the topic's history; `None` on topics without history.
    pub offset: Option<u64>,
}

impl Publication {
    /// Deserialises [`data`](Self::data).
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_str(self.data.get())?)
    }
}

/// A connection in presence lists and join/leave events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClientInfo {
    /// The connection's client id (`"<node>.<n>"`).
    pub client: String,
    /// Its user id (`""` when anonymous).
    #[serde(default)]
    pub user: String,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A publication. On topics with history (exact subscriptions) they come in offset order,
    /// without duplicates; a wildcard subscription passes them on as they arrive.
    Publication(Publication),
    /// A connection subscribed to the topic (namespaces with `join_leave`).
    Join(ClientInfo),
    /// A connection left the topic (namespaces with `join_leave`).
    Leave(ClientInfo),
    /// After a reconnect, the publications missed while away have been delivered (before this
    /// event, `publications` of them); the stream continues without gap.
    Recovered {
        /// How many publications the recovery delivered.
        publications: usize,
    },
    /// After a reconnect, the missed publications could not be recovered (other epoch,
    /// trimmed history, too many missed, or no history on the topic): reload your state. The
    /// stream continues from the given position.
    RecoveryFailed {
        /// The stream's current epoch, when it has history.
        epoch: Option<String>,
        /// The stream's current top offset, when it has history.
        offset: Option<u64>,
    },
    /// The server refused to resubscribe after a reconnect (e.g. `forbidden` with a new token).
    /// No further events follow.
    Unsubscribed(Error),
}

/// A live subscription: read it with [`recv`](Self::recv) or as a
/// [`Stream`](futures_util::Stream). Dropping it unsubscribes.
///
/// Events are buffered without bound: a subscription that is not read keeps growing.
pub struct Subscription {
    pub(crate) topic: String,
    pub(crate) gen: u64,
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
    pub(crate) handle: Handle,
    pub(crate) active: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The subscribed topic or pattern.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next event; `None` once the subscription ended (client closed or dropped, or after
    /// [`Event::Unsubscribed`]).
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is already here.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The next publication, skipping other events.
    pub async fn next_publication(&mut self) -> Option<Publication> {
        loop {
            if let Event::Publication(p) = self.rx.recv().await? {
                return Some(p);
            }
        }
    }

    /// Unsubscribes and waits for the server's confirmation.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.active = false;
        let (topic, gen) = (self.topic.clone(), self.gen);
        self.handle
            .call(|id, reply| Command::Unsubscribe {
                topic,
                gen,
                reply: Some((id, reply)),
            })
            .await
            .map(|_| ())
    }
}

impl futures_util::Stream for Subscription {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.active {
            let _ = self.handle.send(Command::Unsubscribe {
                topic: std::mem::take(&mut self.topic),
                gen: self.gen,
                reply: None,
            });
        }
    }
}
