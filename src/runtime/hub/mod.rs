//! The library's entry point: [`RingHub::builder`] registers handlers and middleware, [`Server`]
//! starts one pinned shard thread per core, [`ServerHandle`] publishes from outside and shuts down.
//!
//! One module per stage of a server's life: `builder` (settings and handlers), `server`
//! (built, then started), `handle` (running, then stopped).

mod builder;
mod handle;
mod server;

pub use builder::{Builder, RingHub};
pub use handle::ServerHandle;
pub use server::Server;
