//! The load scenarios and what they share.

pub mod classify;
pub mod connect;
pub mod delta;
pub mod durable;
pub mod echo;
pub mod fanout;
pub mod fanout_accounting;
pub mod fanout_args;
pub mod fanout_poll;
pub mod fanout_report;
pub mod fanout_shared;
pub mod fanout_tasks;
pub mod idle;
pub mod join;
pub mod payload;
pub mod recover;

use crate::client::{Sources, Target};
use std::sync::Mutex;
use std::time::Duration;

/// Settings shared by every scenario.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub target: Target,
    pub sources: Sources,
    pub threads: usize,
    /// `true` for the ringhub envelope protocol, `false` for raw broadcast/echo peers.
    pub ringhub: bool,
    /// socket.io v4 (fanout only; `ringhub` is then false).
    pub socketio: bool,
    pub connect_timeout: Duration,
    pub connect_concurrency: usize,
    pub setup_timeout: Duration,
}

impl Ctx {
    /// What subscribers and publishers read.
    pub fn dialect(&self) -> classify::Dialect {
        match (self.ringhub, self.socketio) {
            (true, _) => classify::Dialect::Ringhub,
            (false, true) => classify::Dialect::SocketIo,
            (false, false) => classify::Dialect::Raw,
        }
    }

    /// Connection concurrency allowed per worker thread.
    pub fn per_thread_concurrency(&self) -> usize {
        (self.connect_concurrency / self.threads).max(1)
    }
}

/// Keeps the first error message reported by any connection.
#[derive(Default)]
pub struct FirstError(Mutex<Option<String>>);

impl FirstError {
    pub fn set(&self, msg: String) {
        if let Ok(mut g) = self.0.lock() {
            g.get_or_insert(msg);
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

/// Converts seconds from the command line into a `Duration` (negative becomes 0).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
