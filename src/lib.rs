//! # ringhub
//!
//! A thread-per-core WebSocket messaging hub: one io_uring reactor per CPU (epoll where io_uring
//! is refused), connections sharded by `SO_REUSEPORT`, topic routing with exact and `prefix*`
//! patterns, handlers and middleware, and pub/sub across shards without a shared lock.
//!
//! ```no_run
//! use ringhub::{Context, HandlerError, Message, Next, RingHub};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     RingHub::builder()
//!         .listen("127.0.0.1:8080".parse()?)
//!         // Every middleware wraps every handler, outermost first.
//!         .layer(|ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>| {
//!             tracing::info!(topic = msg.topic(), event = msg.event(), "message");
//!             next.run(ctx, msg)
//!         })
//!         .handle("echo:*", |ctx: &mut Context<'_>, msg: &Message<'_>| {
//!             ctx.send_raw(msg.topic(), "echo", msg.data_raw());
//!             Ok::<_, HandlerError>(())
//!         })
//!         .pubsub() // everything else: publish to the topic's subscribers
//!         .build()?
//!         .run()?; // until SIGINT/SIGTERM
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "axum")]
pub mod axum;
mod cluster;
pub mod config;
mod http;
pub mod policy;
pub mod proto;
mod runtime;
mod shard;
pub mod store;
mod transport;

// The stable public paths (`ringhub::envelope`, `ringhub::auth`, ...) of the layered modules.
pub use config::settings;
pub use policy::{auth, guard, ratelimit, security};
pub use proto::{envelope, error, handler, pattern, registry};

pub use config::{Config, IoMode};
pub use error::{ErrorCode, HandlerError, HandlerResult, ServerError};
pub use handler::{chain, pubsub, Context, Handler, Message, Middleware, Next};
pub use proto::stats::{ShardStats, StatsSnapshot};
pub use runtime::hub::{Builder, RingHub, Server, ServerHandle};
pub use runtime::messaging::{ApiError, BatchResult, BatchSender, PresenceEntry, SendReceipt};
pub use shard::hooks;

/// Identifies a connection across the whole server: its shard, its slot there, and a generation
/// so that a stale id never reaches a later connection in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(shard: usize, slot: u32, generation: u32) -> Self {
        ConnId(((shard as u64) << 56) | ((generation as u64 & 0xFF_FFFF) << 32) | slot as u64)
    }
    /// Rebuilds an id from [`ConnId::raw`].
    pub fn from_raw(raw: u64) -> Self {
        ConnId(raw)
    }
    /// The id as a number (stable for the connection's lifetime).
    pub fn raw(self) -> u64 {
        self.0
    }
    /// The shard that owns the connection.
    pub fn shard(self) -> usize {
        (self.0 >> 56) as usize
    }
    pub(crate) fn slot(self) -> u32 {
        self.0 as u32
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.shard(), self.0 & ((1 << 56) - 1))
    }
}

#[doc(hidden)]
pub mod bench_support;
#[doc(hidden)]
pub mod fuzz_support;
