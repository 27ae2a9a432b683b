//! Threads: the shards' event loops, the handler pool, and the server's entry points.

pub(crate) mod control;
pub(crate) mod hub;
pub(crate) mod messaging;
pub(crate) mod pool;
pub(crate) mod proxy;
pub(crate) mod store;
pub(crate) mod webhook;
