//! What the public handles ask of the connection task, and the request/reply plumbing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::subscription::Event;

/// Where a request's outcome goes: the reply's `data` or the error.
pub(crate) type Reply = oneshot::Sender<Result<Option<Box<RawValue>>, Error>>;

/// A `(epoch, offset)` stream position.
pub(crate) type Since = (String, u64);

pub(crate) enum Command {
    /// Write `frame`. With a `reply` the frame carries `id` and waits for its answer (queued
    /// while disconnected); without one it is dropped while disconnected.
    Send {
        frame: String,
        id: Option<u64>,
        reply: Option<Reply>,
    },
    /// The caller stopped waiting for request `id`.
    Cancel(u64),
    Subscribe {
        topic: String,
        gen: u64,
        since: Option<Since>,
        /// Ask for Fossil deltas (`delta: "fossil"`).
        delta: bool,
        events: mpsc::UnboundedSender<Event>,
        ready: oneshot::Sender<Result<(), Error>>,
    },
    /// Ends subscription `gen` of `topic` (ignored when that topic has a newer one).
    Unsubscribe {
        topic: String,
        gen: u64,
        reply: Option<(u64, Reply)>,
    },
    /// Acknowledges durable message `offset` of `topic`.
    Ack {
        topic: String,
        offset: u64,
        reply: Option<(u64, Reply)>,
    },
    Close(oneshot::Sender<()>),
}

/// A weak way back to the task for subscriptions and messages: they do not keep the client
/// alive once every [`Client`](crate::Client) is dropped.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) cmd: mpsc::WeakUnboundedSender<Command>,
    pub(crate) ids: Arc<AtomicU64>,
    pub(crate) timeout: Duration,
}

impl Handle {
    pub(crate) fn send(&self, c: Command) -> Result<(), Error> {
        let tx = self.cmd.upgrade().ok_or(Error::Closed)?;
        tx.send(c).map_err(|_| Error::Closed)
    }

    /// Runs a request built by `make(id, reply)` and waits for its answer.
    pub(crate) async fn call(
        &self,
        make: impl FnOnce(u64, Reply) -> Command,
    ) -> Result<Option<Box<RawValue>>, Error> {
        let tx = self.cmd.upgrade().ok_or(Error::Closed)?;
        call(&tx, &self.ids, self.timeout, make).await
    }
}

pub(crate) fn next_id(ids: &AtomicU64) -> u64 {
    ids.fetch_add(1, Ordering::Relaxed)
}

/// Sends the command built by `make(id, reply)`, waits up to `timeout` for the reply, and
/// cancels the request on timeout.
pub(crate) async fn call(
    tx: &mpsc::UnboundedSender<Command>,
    ids: &AtomicU64,
    timeout: Duration,
    make: impl FnOnce(u64, Reply) -> Command,
) -> Result<Option<Box<RawValue>>, Error> {
    let id = next_id(ids);
    let (reply, rx) = oneshot::channel();
    tx.send(make(id, reply)).map_err(|_| Error::Closed)?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(Error::Closed),
        Err(_) => {
            let _ = tx.send(Command::Cancel(id));
            Err(Error::Timeout)
        }
    }
}
