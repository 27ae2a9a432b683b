//! The backend proxies' HTTP client: implements [`ProxyClient`] for the shards.
//!
//! One thread (`ringhub-proxy`) runs a small current-thread tokio runtime with hyper's pooled
//! keep-alive HTTP/1.1 client. Shards hand it calls through an unbounded channel (a send, never a
//! wait); each endpoint has a semaphore of `max_concurrency` slots, and a call's timeout covers
//! the wait for a slot, the request and the body. Answers go back to the connection's shard
//! through its inbox. [`ServerHandle::join`](crate::ServerHandle::join) stops and joins the
//! thread once the shards are gone: calls still out are cancelled then (nobody waits for their
//! answers any more). Without a join it ends when the hub is dropped (its sender with it).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use crate::proto::error::ServerError;
use crate::shard::inbox::{Action, ShardMsg};
use crate::shard::proxy::{ProxyAnswer, ProxyCall, ProxyClient, ProxyFailure};
use crate::shard::shared::HubShared;

/// Largest answer body read from the backend.
const MAX_ANSWER: usize = 1 << 20;

/// Headers of the client's request never passed on (they describe the hop, not the client).
const HOP_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "connection",
    "transfer-encoding",
    "upgrade",
];

/// What the proxy thread is sent.
pub(crate) enum ToProxy {
    /// A call from a shard.
    Call(ProxyCall),
    /// The server stops (sent once the shards are gone).
    Stop,
}

/// The shards' handle: queues calls to the proxy thread.
pub(crate) struct HttpProxy {
    tx: UnboundedSender<ToProxy>,
}

impl ProxyClient for HttpProxy {
    fn call(&self, call: ProxyCall) {
        if self.tx.send(ToProxy::Call(call)).is_err() {
            tracing::warn!("proxy thread is gone: call dropped");
        }
    }
}

/// The proxy thread's channel: the client for the shards, and the ends for [`spawn`].
pub(crate) struct Channel {
    /// What the shards call.
    pub(crate) client: Arc<dyn ProxyClient>,
    tx: UnboundedSender<ToProxy>,
    rx: UnboundedReceiver<ToProxy>,
}

/// A new channel to a proxy thread not started yet.
pub(crate) fn channel() -> Channel {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    Channel {
        client: Arc::new(HttpProxy { tx: tx.clone() }),
        tx,
        rx,
    }
}

/// The running proxy thread: [`ProxyThread::stop`] ends and joins it. Dropped without a stop,
/// the thread runs on until the hub (and the shards' sender) is gone.
pub(crate) struct ProxyThread {
    thread: std::thread::JoinHandle<()>,
    tx: UnboundedSender<ToProxy>,
}

impl ProxyThread {
    /// Stops taking calls, cancels those still out (their connections are gone: the shards
    /// stopped first) and joins the thread.
    pub(crate) fn stop(self) {
        let _ = self.tx.send(ToProxy::Stop);
        let _ = self.thread.join();
    }
}

/// Starts the proxy thread on `channel`'s receiving end.
pub(crate) fn spawn(hub: Weak<HubShared>, channel: Channel) -> Result<ProxyThread, ServerError> {
    let Channel { tx, rx, .. } = channel;
    let thread = std::thread::Builder::new()
        .name("ringhub-proxy".into())
        .spawn(move || run(hub, rx))
        .map_err(ServerError::Thread)?;
    Ok(ProxyThread { thread, tx })
}

fn run(hub: Weak<HubShared>, mut rx: UnboundedReceiver<ToProxy>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(error = %e, "proxy runtime failed to start"),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build_http();
        let mut endpoints: HashMap<String, (Result<Uri, String>, Arc<Semaphore>)> =
            HashMap::new();
        while let Some(ToProxy::Call(call)) = rx.recv().await {
            let (uri, slots) = endpoints
                .entry(call.endpoint.url.clone())
                .or_insert_with(|| {
                    let uri = call.endpoint.url.parse::<Uri>().map_err(|e| e.to_string());
                    (uri, Arc::new(Semaphore::new(call.endpoint.max_concurrency)))
                })
                .clone();
            let (client, hub) = (client.clone(), hub.clone());
            tokio::task::spawn_local(async move {
                let start = Instant::now();
                let (kind, conn) = (call.kind, call.conn);
                let timeout = call.endpoint.timeout;
                let result = match uri {
                    Ok(uri) => tokio::time::timeout(timeout, one(&client, uri, &slots, call))
                        .await
                        .unwrap_or(Err(ProxyFailure::Timeout)),
                    Err(e) => Err(ProxyFailure::Bad(format!("invalid url: {e}"))),
                };
                let Some(hub) = hub.upgrade() else { return };
                hub.proxy_stats
                    .record(kind, start.elapsed(), result.as_ref().err());
                if let Err(f) = &result {
                    tracing::debug!(conn = %conn, kind = kind.as_str(), failure = ?f, "proxy call failed");
                }
                if let Some(inbox) = hub.inboxes.get(conn.shard()) {
                    let answer = ProxyAnswer { kind, result };
                    inbox.push(ShardMsg::Conn(conn, Action::Proxied(Box::new(answer))));
                }
            });
        }
    });
    // Dropping the set cancels the calls still out: their answers would find no connection.
    drop(local);
    tracing::debug!("proxy thread stopped");
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One call: a slot, the request, the whole body.
async fn one(
    client: &HttpClient,
    uri: Uri,
    slots: &Semaphore,
    call: ProxyCall,
) -> Result<Bytes, ProxyFailure> {
    let _slot = slots
        .acquire()
        .await
        .map_err(|_| ProxyFailure::Down("closed".into()))?;
    let mut req = Request::post(uri).header(CONTENT_TYPE, "application/json");
    for (name, value) in &call.headers {
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            req = req.header(n, v);
        }
    }
    let req = req
        .body(Full::new(Bytes::from(call.body)))
        .map_err(|e| ProxyFailure::Bad(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| ProxyFailure::Down(chain(&e)))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| ProxyFailure::Bad(format!("reading the answer: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(ProxyFailure::Bad(format!("backend answered HTTP {status}")));
    }
    Ok(body)
}

/// An error with its sources (`client error (Connect): Connection refused`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
