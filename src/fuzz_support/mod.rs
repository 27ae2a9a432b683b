//! Entry points for the fuzz targets (`fuzz/`), the proptest properties and the corpus replay
//! test: each takes arbitrary bytes from the network or an operator, drives one sans-IO parser the
//! way the server does, and checks invariants with `assert!`. None may panic on any input other
//! than through a broken invariant. Not a stable API.
//!
//! One file per kind of input: WebSocket frames and compression (`websocket.rs`), client
//! messages (`messages.rs`), the HTTP upgrade and its token (`upgrade.rs`), the operator's
//! settings file (`settings.rs`), stored data (`store.rs`), the cluster thread's RESP input
//! (`cluster.rs`), and Socket.IO (`socketio.rs`).

mod cluster;
mod messages;
mod settings;
mod socketio;
mod store;
mod upgrade;
mod websocket;

pub use cluster::{cluster_recv, resp_frame};
pub use messages::{delta, envelope, msgpack, v2_requests};
pub use settings::settings;
pub use socketio::socketio;
pub use store::store_codecs;
pub use upgrade::{http_head, jwt, JWT_SECRET};
pub use websocket::{frames, inflate, FrameOutcome, FRAME_MAX};

/// A fuzz entry point with its name.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name (the corpus directories under `fuzz/corpus/`).
pub const TARGETS: [Target; 12] = [
    ("frames", |d| {
        frames(d);
    }),
    ("envelope", envelope),
    ("http_head", http_head),
    ("jwt", jwt),
    ("settings", settings),
    ("store_codecs", store_codecs),
    ("v2_requests", v2_requests),
    ("inflate", inflate),
    ("delta", delta),
    ("msgpack", msgpack),
    ("cluster_recv", cluster_recv),
    ("socketio", socketio),
];
