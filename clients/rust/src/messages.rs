//! Durable user messages (protocol v2): at-least-once deliveries on `user:<id>` that the client
//! acknowledges.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Mutex};

use crate::command::{Command, Handle};
use crate::error::Error;

/// One durable message for this connection's user.
pub struct UserMessage {
    /// `user:<id>`.
    pub topic: String,
    /// Application event name.
    pub event: String,
    /// The payload (`null` when it had none).
    pub data: Box<RawValue>,
    /// The message's position in the user's inbox (unique per user).
    pub offset: u64,
    pub(crate) handle: Handle,
}

impl std::fmt::Debug for UserMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserMessage")
            .field("topic", &self.topic)
            .field("event", &self.event)
            .field("data", &self.data)
            .field("offset", &self.offset)
            .finish()
    }
}

impl UserMessage {
    /// Deserialises [`data`](Self::data).
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_str(self.data.get())?)
    }

    /// Acknowledges the message and waits for the server's confirmation (needed with
    /// [`Options::manual_ack`](crate::Options::manual_ack); harmless otherwise). While
    /// disconnected the acknowledgement is recorded and sent when the server redelivers it.
    pub async fn ack(&self) -> Result<(), Error> {
        let (topic, offset) = (self.topic.clone(), self.offset);
        self.handle
            .call(|id, reply| Command::Ack {
                topic,
                offset,
                reply: Some((id, reply)),
            })
            .await
            .map(|_| ())
    }
}

/// The receiver of durable user messages, de-duplicated by offset, in the order the server
/// writes them. Clones share one queue (each message goes to one of them).
#[derive(Clone)]
pub struct Messages {
    pub(crate) rx: Arc<Mutex<mpsc::UnboundedReceiver<UserMessage>>>,
    pub(crate) manual_ack: bool,
    pub(crate) handle: Handle,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("manual_ack", &self.manual_ack)
            .finish_non_exhaustive()
    }
}

impl Messages {
    /// The next message; `None` once the client is closed. Unless
    /// [`Options::manual_ack`](crate::Options::manual_ack) is set, the message is acknowledged
    /// as it is handed out.
    pub async fn recv(&self) -> Option<UserMessage> {
        let msg = self.rx.lock().await.recv().await?;
        if !self.manual_ack {
            let _ = self.handle.send(Command::Ack {
                topic: msg.topic.clone(),
                offset: msg.offset,
                reply: None,
            });
        }
        Some(msg)
    }
}
