//! # ringhub-client
//!
//! An async (tokio) client for the ringhub WebSocket messaging hub (`docs/PROTOCOL.md`):
//! subscriptions, publications, requests with ids and timeouts, automatic reconnect with
//! resubscription and recovery of missed publications (protocol v2 history), presence, and
//! durable user messages acknowledged at least once.
//!
//! Start with [`Client::connect`]. The envelope encoder/decoder is available on its own in
//! [`codec`].
//!
//! ## Semantics
//!
//! - Reconnect: exponential backoff with full jitter ([`Backoff`]); the token provider is asked
//!   again before every attempt. [`ConnectionState::Connected`] is reached once every
//!   subscription is active again.
//! - Recovery: for topics with history the client remembers each topic's epoch and offset and
//!   resubscribes with `since`; missed publications are delivered in order before live ones,
//!   duplicates (by offset) are dropped, and [`Event::Recovered`] or [`Event::RecoveryFailed`]
//!   tells how it went. Topics without history resume without recovery.
//! - Requests in flight when the connection drops fail with [`Error::Disconnected`]; requests
//!   made while reconnecting wait for the connection (within the request timeout).
//!   [`Client::publish`] is at most once and fails at once while disconnected.
//! - Durable messages (`"ack": true` on `user:<id>`) go to [`Client::messages`], once each
//!   (by offset), and are acknowledged when handed out unless [`Options::manual_ack`] is set.
//! - Deltas ([`Client::subscribe_delta`]): publications of a topic with history may arrive as
//!   Fossil deltas against the previous one; the client applies them and hands out the full
//!   data. A delta that does not apply (wrong base, corrupt) is not delivered: the client
//!   resubscribes with `since` (its last delivered offset), and the server sends it again in
//!   full (recovery), then live publications, the first in full.
//! - Wire format: JSON text frames, or MessagePack binary frames with
//!   [`Options::format`]`(`[`Format::MessagePack`]`)` — the same API either way; bytes in `data`
//!   are the JSON value [`msgpack::bin`] builds.
#![warn(missing_docs)]

mod client;
pub mod codec;
mod command;
mod error;
pub mod fossil;
mod messages;
pub mod msgpack;
mod options;
mod router;
mod subscription;
mod task;

pub use client::{Client, History, Info, PresenceStats, StreamPosition};
pub use error::{Error, ErrorCode};
pub use messages::{Messages, UserMessage};
pub use options::{Backoff, Format, Options, TokenFuture, TokenProvider};
pub use subscription::{ClientInfo, Event, Publication, Subscription};
pub use task::ConnectionState;
