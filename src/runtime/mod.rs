//! Threads: the shards' event loops, the handler pool, and the server's entry points.

pub(crate) mod control;
pub(crate) mod hub;
pub(crate) mod pool;
pub mod hooks;
pub(crate) mod store;
pub(crate) mod messaging;
