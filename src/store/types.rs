//! The values a [`Store`] takes and returns: stream positions, publications, inbox messages
//! and their statuses, and the limits that bound them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

#[cfg(doc)]
use super::Store;

/// Where a stream is: its epoch and its latest offset (0 before the first publication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPos {
    /// Changes whenever continuity cannot be proven.
    pub epoch: Arc<str>,
    /// The latest offset assigned (0 when empty).
    pub offset: u64,
}

/// How much history a topic keeps (from its `[[topics]]` namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Publications kept; older ones are trimmed on append.
    pub size: usize,
    /// Publications older than this are no longer served (zero = no age limit).
    pub ttl: Duration,
}

/// One stored publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the topic's stream.
    pub offset: u64,
    /// The event name.
    pub event: Box<str>,
    /// The raw JSON of `data`, as published (none when absent).
    pub data: Option<Bytes>,
    /// When it was appended (ms since the Unix epoch).
    pub time_ms: u64,
}

/// The answer to a history read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRead {
    /// The stream's position at the time of the read.
    pub pos: StreamPos,
    /// Publications, oldest first.
    pub publications: Vec<Publication>,
    /// Whether `publications` holds **every** publication after the requested offset up to
    /// `pos.offset`: false when some were trimmed (size or TTL), when more than `limit` exist, or
    /// when the requested offset is beyond the top.
    pub complete: bool,
}

/// A durable message's life: `pending` (stored, written to no connection yet), `delivered`
/// (written to at least one connection, not acknowledged), then one of the final states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Stored; not yet written to any connection.
    Pending,
    /// Written to at least one connection; not acknowledged yet.
    Delivered,
    /// Acknowledged by one of the user's connections: never delivered again.
    Acked,
    /// Not acknowledged within the inbox TTL; removed.
    Expired,
    /// Pushed out of a full inbox (`max_messages`); removed.
    Dropped,
}

impl MessageStatus {
    /// The wire spelling (`"pending"`, `"delivered"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Acked => "acked",
            MessageStatus::Expired => "expired",
            MessageStatus::Dropped => "dropped",
        }
    }
    /// Whether the message has left the inbox for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageStatus::Acked | MessageStatus::Expired | MessageStatus::Dropped
        )
    }
}

/// A durable message to store in a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// The topic it is delivered on; `None` means `user:<id>`.
    pub topic: Option<&'a str>,
    /// The event name.
    pub event: &'a str,
    /// Raw JSON data.
    pub data: Option<&'a [u8]>,
}

/// A message in a user's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    /// Its id, unique in the store (and positive).
    pub id: u64,
    /// Its offset in the user's inbox: gapless per user, from 1.
    pub offset: u64,
    /// The topic to deliver it on (`None` = `user:<id>`).
    pub topic: Option<Box<str>>,
    /// The event name.
    pub event: Box<str>,
    /// Raw JSON data.
    pub data: Option<Bytes>,
    /// When it was stored (ms since the Unix epoch).
    pub created_ms: u64,
    /// Times it was written to a connection.
    pub attempts: u32,
}

impl InboxMessage {
    /// Message `msg`, just stored as `id` at `offset` at `now_ms` (never written yet).
    pub fn stored(id: u64, offset: u64, msg: &NewMessage<'_>, now_ms: u64) -> Self {
        InboxMessage {
            id,
            offset,
            topic: msg.topic.map(Into::into),
            event: msg.event.into(),
            data: msg.data.map(Bytes::copy_from_slice),
            created_ms: now_ms,
            attempts: 0,
        }
    }
}

/// How much an inbox keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Messages kept per user; storing one more drops the oldest (status `dropped`).
    pub max_messages: usize,
    /// Unacknowledged messages older than this expire (status `expired`).
    pub ttl: Duration,
}

/// What is known of a durable message (`GET /api/v1/messages/M`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The message id.
    pub id: u64,
    /// Its user.
    pub user: Box<str>,
    /// Its inbox offset.
    pub offset: u64,
    /// Where it is in its life.
    pub status: MessageStatus,
    /// Times it was written to a connection.
    pub attempts: u32,
    /// When it was stored (ms since the Unix epoch).
    pub created_ms: u64,
}

/// A message reached a final status (for the `on_delivery` hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The message id.
    pub id: u64,
    /// Its user.
    pub user: Box<str>,
    /// Its inbox offset.
    pub offset: u64,
    /// The new (final) status.
    pub status: MessageStatus,
}

/// One publication to append, as [`Store::append_batch`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct AppendReq<'a> {
    /// The topic (its stream).
    pub topic: &'a str,
    /// Its history limits.
    pub limits: HistoryLimits,
    /// The event name.
    pub event: &'a str,
    /// Raw JSON data.
    pub data: Option<&'a [u8]>,
    /// The publishing connection to skip ([`ConnId::raw`](crate::ConnId::raw), 0: none): only a
    /// store that [delivers](Store::delivers) needs it.
    pub exclude: u64,
}

impl<'a> AppendReq<'a> {
    /// One publication of nobody's connection: what the single [`Store::append`] takes.
    pub fn one(
        topic: &'a str,
        limits: HistoryLimits,
        event: &'a str,
        data: Option<&'a [u8]>,
    ) -> Self {
        AppendReq {
            topic,
            limits,
            event,
            data,
            exclude: 0,
        }
    }
}
