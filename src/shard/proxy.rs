//! Backend proxies, the shard's side: the interface the runtime implements ([`ProxyClient`]),
//! and what a shard does while a connection waits for the backend.
//!
//! A call never runs on the shard: the shard hands a [`ProxyCall`] (the JSON body already
//! built) to the client and goes on; the answer comes back through the connection's inbox as
//! [`Action::Proxied`](super::inbox::Action::Proxied). While a connect, subscribe, publish or
//! RPC call of a connection is out, the connection's later messages are held in order
//! ([`Waiting::queue`]) and dispatched after the answer — other connections are not affected.
//! Refresh calls hold nothing (the connection keeps working until the answer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::proxy::{ProxyEndpoint, ProxyKind};
use crate::ConnId;

/// Runs proxy calls off the shards (implemented by the runtime over HTTP/1.1).
pub(crate) trait ProxyClient: Send + Sync {
    /// Starts a call; its answer reaches the connection's shard as
    /// [`Action::Proxied`](super::inbox::Action::Proxied). Must not block.
    fn call(&self, call: ProxyCall);
}

/// One call to the backend.
#[derive(Debug)]
pub(crate) struct ProxyCall {
    /// What is asked.
    pub kind: ProxyKind,
    /// Where.
    pub endpoint: Arc<ProxyEndpoint>,
    /// For whom (the answer goes to its shard).
    pub conn: ConnId,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Connect: the client's allowlisted request headers, passed on as they are.
    pub headers: Vec<(String, String)>,
}

/// Why a call has no answer.
#[derive(Debug, Clone)]
pub(crate) enum ProxyFailure {
    /// The backend could not be reached (connection refused, reset, no free slot in time...).
    Down(String),
    /// No answer within the endpoint's timeout.
    Timeout,
    /// An answer that is not one: an HTTP error status, a body too large.
    Bad(String),
}

/// The backend's answer to a [`ProxyCall`]: the body of a `200`, or why there is none.
#[derive(Debug)]
pub(crate) struct ProxyAnswer {
    /// The call's kind.
    pub kind: ProxyKind,
    /// The response body.
    pub result: Result<Bytes, ProxyFailure>,
}

/// Which kind of connection a connect call is for.
pub(super) enum Via {
    /// A `/ws` WebSocket.
    Ws,
    /// An SSE stream.
    Sse,
    /// A Socket.IO connection's first CONNECT: what the token admitted, kept until the answer.
    Sio(Box<SioConnect>),
}

/// A first Socket.IO CONNECT waiting for the connect proxy (`sio_proxy`): what the token
/// admitted, committed (with the backend's user) once the backend accepts.
pub(super) struct SioConnect {
    /// The namespace's index.
    pub(super) nsp: usize,
    /// The token's (and `on_connect`'s) decision.
    pub(super) admitted: crate::policy::guard::Admitted,
    /// The CONNECT's auth payload, for connection state recovery once admitted.
    pub(super) auth: Option<Box<serde_json::value::RawValue>>,
}

/// What a connection waits for.
pub(super) enum Step {
    /// Its connect: then it is subscribed to `topics` (from the token) and those of the answer.
    Connect { topics: Vec<String>, via: Via },
    /// An SSE stream's topics with a subscribe proxy, asked one after the other: `left` still
    /// to ask (the one asked is its last), `allowed` those that may be subscribed.
    /// `then`: the `connected` frame, sent once the stream starts.
    SseTopics {
        left: Vec<String>,
        allowed: Vec<String>,
        then: Option<Bytes>,
    },
    /// A subscribe: the original message, dispatched if allowed.
    Subscribe(Box<[u8]>),
    /// A publication: the original message, dispatched (its data maybe replaced) if allowed.
    Publish(Box<[u8]>),
    /// An RPC: its method and request id.
    Rpc { method: Box<str>, req: Option<u64> },
}

/// A message held while its connection waits.
pub(super) enum Held {
    /// A `/ws` (or SSE) client envelope.
    Envelope(Box<[u8]>),
    /// A Socket.IO connection's WebSocket message (opcode, payload), held before decoding.
    Sio(u8, Box<[u8]>),
}

impl Held {
    pub(super) fn len(&self) -> usize {
        match self {
            Held::Envelope(m) | Held::Sio(_, m) => m.len(),
        }
    }
}

/// A connection waiting for the backend, and what it sent meanwhile.
pub(super) struct Waiting {
    pub(super) endpoint: Arc<ProxyEndpoint>,
    pub(super) step: Step,
    pub(super) queue: VecDeque<Held>,
    pub(super) queued_bytes: usize,
}

/// Upper bounds (ms) of the latency histogram's buckets.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// Error kinds counted per proxy.
pub const FAILURE_KINDS: [&str; 3] = ["unavailable", "timeout", "bad_answer"];

/// One proxy kind's counters.
#[derive(Debug, Default)]
pub(crate) struct KindStats {
    pub(crate) calls: AtomicU64,
    pub(crate) errors: [AtomicU64; FAILURE_KINDS.len()],
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS_MS`] (plus `+Inf`).
    pub(crate) buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    pub(crate) sum_us: AtomicU64,
}

/// Proxy calls, latencies and errors by kind (`/metrics`), written by the runtime's client.
#[derive(Debug, Default)]
pub(crate) struct ProxyStats {
    pub(crate) kinds: [KindStats; ProxyKind::ALL.len()],
}

impl ProxyStats {
    /// Records one finished call.
    pub(crate) fn record(&self, kind: ProxyKind, took: Duration, failure: Option<&ProxyFailure>) {
        let k = &self.kinds[kind.index()];
        k.calls.fetch_add(1, Relaxed);
        let ms = took.as_millis() as u64;
        let at = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        for b in &k.buckets[at..] {
            b.fetch_add(1, Relaxed);
        }
        k.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
        if let Some(f) = failure {
            let i = match f {
                ProxyFailure::Down(_) => 0,
                ProxyFailure::Timeout => 1,
                ProxyFailure::Bad(_) => 2,
            };
            k.errors[i].fetch_add(1, Relaxed);
        }
    }
}
