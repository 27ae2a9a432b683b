//! The sans-IO protocol core: topic patterns, subscriptions, envelopes, WebSocket frames, the
//! HTTP handshake, errors, Engine.IO v4 / Socket.IO v5 packets, the handler API, counters, and the node-to-node wire format with its
//! Redis channel naming (used by the cluster and the Redis store alike). Plain data structures with no sockets,
//! no runtime and no clock of their own; everything above builds on them.

pub mod args;
pub(crate) mod deflate;
pub mod delta;
pub mod engineio;
pub mod engineio_bare;
pub mod engineio_poll;
pub mod envelope;
pub mod error;
pub(crate) mod frame;
pub mod handler;
pub(crate) mod handshake;
pub mod msgpack;
pub mod pattern;
pub mod proxy;
pub mod registry;
pub(crate) mod resp;
pub mod socketio;
pub mod socketio_binary;
pub mod socketio_map;
pub mod socketio_recover;
pub(crate) mod sse;
pub mod stats;
pub mod webhook;
pub(crate) mod wire;
