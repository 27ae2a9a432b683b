//! The backend proxies' HTTP client: implements [`ProxyClient`] for the shards.
//!
//! One thread (`ringhub-proxy`) runs a small current-thread tokio runtime with hyper's HTTP/1.1
//! client connections, kept alive in a small pool per endpoint. Shards hand it calls through an unbounded channel (a send, never a
//! wait); each endpoint has a semaphore of `max_concurrency` slots, and a call's timeout covers
//! the wait for a slot, the request and the body. Answers go back to the connection's shard
//! through its inbox. [`ServerHandle::join`](crate::ServerHandle::join) stops and joins the
//! thread once the shards are gone: calls still out are cancelled then (nobody waits for their
//! answers any more). Without a join it ends when the hub is dropped (its sender with it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use crate::config::proxy::ProxyEndpoint;

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
        // Keyed by the configured endpoint's address (kept alive here, so never reused).
        let mut endpoints: HashMap<usize, (Arc<ProxyEndpoint>, Rc<Endpoint>)> = HashMap::new();
        while let Some(ToProxy::Call(call)) = rx.recv().await {
            let key = Arc::as_ptr(&call.endpoint) as usize;
            let ep = endpoints
                .entry(key)
                .or_insert_with(|| (call.endpoint.clone(), Rc::new(Endpoint::new(&call.endpoint))))
                .1
                .clone();
            let hub = hub.clone();
            tokio::task::spawn_local(async move {
                let start = Instant::now();
                let (kind, conn) = (call.kind, call.conn);
                let timeout = call.endpoint.timeout;
                let result = tokio::time::timeout(timeout, ep.call(call))
                    .await
                    .unwrap_or(Err(ProxyFailure::Timeout));
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

/// Where an endpoint is: the address to connect to, the `Host` header, the request target.
struct Target {
    addr: String,
    host: HeaderValue,
    path: Uri,
}

/// One endpoint on the proxy thread: its address, its `max_concurrency` slots and its idle
/// keep-alive connections (HTTP/1.1, one request at a time each). A small pool of its own
/// rather than hyper-util's: no shared pool lock, no key hashing, no task per request to hand
/// the connection back (profiled: see BENCHMARKS.md, "Backend proxies").
struct Endpoint {
    target: Result<Target, String>,
    slots: Semaphore,
    idle: RefCell<Vec<SendRequest<Full<Bytes>>>>,
}

impl Endpoint {
    fn new(ep: &ProxyEndpoint) -> Endpoint {
        Endpoint {
            target: target(&ep.url),
            slots: Semaphore::new(ep.max_concurrency),
            idle: RefCell::new(Vec::new()),
        }
    }

    /// One call: a slot, a connection, the request, the whole answer.
    async fn call(&self, call: ProxyCall) -> Result<Bytes, ProxyFailure> {
        let t = self
            .target
            .as_ref()
            .map_err(|e| ProxyFailure::Bad(format!("invalid url: {e}")))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ProxyFailure::Down("closed".into()))?;
        let mut req = request(t, call)?;
        loop {
            // An idle connection the backend may have closed meanwhile, else a new one.
            let idle = self.idle.borrow_mut().pop();
            let (mut sender, fresh) = match idle {
                Some(s) => (s, false),
                None => (connect(&t.addr).await?, true),
            };
            if !fresh && sender.ready().await.is_err() {
                continue;
            }
            let resp = match sender.try_send_request(req).await {
                Ok(r) => r,
                Err(mut e) => match e.take_message() {
                    // Not sent: the idle connection was closing. Again on another one.
                    Some(r) if !fresh => {
                        req = r;
                        continue;
                    }
                    _ => return Err(ProxyFailure::Down(chain(&e.into_error()))),
                },
            };
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ProxyFailure::Bad(format!("reading the answer: {e}")))?
                .to_bytes();
            // The answer was read whole: the connection takes the next request.
            if !sender.is_closed() {
                self.idle.borrow_mut().push(sender);
            }
            if !status.is_success() {
                return Err(ProxyFailure::Bad(format!("backend answered HTTP {status}")));
            }
            return Ok(body);
        }
    }
}

/// Splits `http://host[:port]/path?query` for [`Endpoint`].
fn target(url: &str) -> Result<Target, String> {
    let uri = url.parse::<Uri>().map_err(|e| e.to_string())?;
    let auth = uri.authority().ok_or("no host")?;
    let addr = format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80));
    let host = HeaderValue::from_str(auth.as_str()).map_err(|e| e.to_string())?;
    let path = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .map_err(|e| e.to_string())?;
    Ok(Target { addr, host, path })
}

/// A new keep-alive connection; its driver runs as a task of the thread.
async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, ProxyFailure> {
    let down = |e: &dyn std::error::Error| ProxyFailure::Down(chain(e));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| down(&e))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| down(&e))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "proxy connection ended");
        }
    });
    Ok(sender)
}

/// The `POST` of a call: its body, and for a connect the client's allowlisted headers.
fn request(t: &Target, call: ProxyCall) -> Result<Request<Full<Bytes>>, ProxyFailure> {
    let mut req = Request::post(t.path.clone())
        .header(HOST, t.host.clone())
        .header(CONTENT_TYPE, "application/json");
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
    req.body(Full::new(Bytes::from(call.body)))
        .map_err(|e| ProxyFailure::Bad(e.to_string()))
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
