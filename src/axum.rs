//! ringhub's endpoint inside an existing [axum](https://docs.rs/axum) application (feature
//! `axum`): the same hub as the native shards — subscriptions, publications, handlers, hooks,
//! auth, caps — reached through a route of the application's own server.
//!
//! The shards own raw sockets, so the adapter hands them the connection rather than relaying
//! it:
//!
//! - **WebSocket** (`/ws`): the request is checked as the native path checks it (the upgrade
//!   headers, the IP lists, `Origin`, the JWT; then, on the chosen shard, `on_connect` and the
//!   connection caps), so a refusal is the same HTTP status (401, 403, 426, 429, 503, ...)
//!   answered by axum. Otherwise axum answers `101 Switching Protocols`, takes the TCP socket
//!   back from hyper (with any bytes hyper already read) and gives it to the shard, which from
//!   then on serves it exactly like a socket it accepted: no tokio task, no copy.
//! - **SSE** (`/sse?topics=a,b`): hyper hands over a socket only after a `101`, which an
//!   `EventSource` does not accept; so the shard serves the request natively on one end of a
//!   Unix socket pair (same checks, same statuses, same heartbeats and slow-consumer bound) and
//!   axum streams the other end to the client: one copy per event.
//!
//! Shards are picked round-robin. The router must be served with the peer address
//! ([`into_make_service_with_connect_info::<SocketAddr>`](axum::Router::into_make_service_with_connect_info)):
//! the IP lists and per-IP caps need it before anything is answered (without it the endpoint
//! answers 500 and says so). TLS, if any, is the embedding server's; the engine's own `[tls]`
//! applies to its native port only. The echo route is native only.

use std::io;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::policy::guard::Admitted;
use crate::proto::handshake::{self as http, HttpError, RequestHead};
use crate::shard::inbox::ShardMsg;
use crate::shard::shared::HubShared;
use crate::shard::Adoption;
use crate::{ConnId, ServerHandle};

/// How long the adapter waits for a shard's answer before giving up with 503.
const SHARD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest SSE response head (from the shard) or error body relayed.
const MAX_RELAY: usize = 64 * 1024;

/// A router with ringhub's WebSocket endpoint at `/ws` and its SSE endpoint at `/sse`, talking
/// to the hub behind `handle`. Merge or nest it into the application's router, and serve that
/// with the peer address.
///
/// ```no_run
/// use std::net::SocketAddr;
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // The hub: its shards also listen on a port of their own.
///     let hub = ringhub::RingHub::builder()
///         .listen("127.0.0.1:0".parse()?)
///         .pubsub()
///         .build()?
///         .start()?;
///     let app = axum::Router::new()
///         .route("/hello", axum::routing::get(|| async { "hello" }))
///         .merge(ringhub::axum::router(&hub)); // ws://host/ws and http://host/sse?topics=...
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
///     axum::serve(
///         listener,
///         app.into_make_service_with_connect_info::<SocketAddr>(),
///     )
///     .await?;
///     Ok(())
/// }
/// ```
pub fn router(handle: &ServerHandle) -> Router {
    Router::new()
        .route("/ws", any(ws_handler))
        .route("/sse", any(sse_handler))
        .with_state(Endpoint::new(handle))
}

/// The hub as the handlers' state: build one with [`Endpoint::new`] to mount [`ws_handler`] or
/// [`sse_handler`] on routes of your own (it is `Clone`; use `FromRef` for a larger state).
#[derive(Clone)]
pub struct Endpoint {
    hub: Arc<HubShared>,
    next: Arc<AtomicUsize>,
}

impl Endpoint {
    /// The endpoint of the hub behind `handle`.
    pub fn new(handle: &ServerHandle) -> Self {
        Self {
            hub: handle.shared().clone(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The next shard, round-robin.
    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.hub.shards
    }

    fn send(&self, shard: usize, a: Adoption) {
        self.hub.inboxes[shard].push(ShardMsg::Adopt(Box::new(a)));
    }
}

/// The WebSocket endpoint (what [`router`] mounts at `/ws`): the envelope protocol, as on the
/// native port's `ws_path`.
pub async fn ws_handler<S>(State(ep): State<S>, req: Request) -> Response
where
    Endpoint: FromRef<S>,
{
    let ep = Endpoint::from_ref(&ep);
    upgrade(&ep, req).await.unwrap_or_else(|e| {
        // Counted as the native path counts refused handshakes (its 101s count on the shard).
        ep.hub.stats[ep.pick()].handshake(e.status, Duration::ZERO);
        refusal(&e)
    })
}

/// The Server-Sent Events endpoint (what [`router`] mounts at `/sse`): `?topics=a,b`, as on
/// the native port's `/sse`.
pub async fn sse_handler<S>(State(ep): State<S>, req: Request) -> Response
where
    Endpoint: FromRef<S>,
{
    let ep = Endpoint::from_ref(&ep);
    sse(&ep, req).await.unwrap_or_else(|e| refusal(&e))
}

async fn upgrade(ep: &Endpoint, mut req: Request) -> Result<Response, HttpError> {
    let remote = peer(&req)?;
    let hub = &ep.hub;
    let guard = &hub.config.guard;
    // The native order: address, upgrade headers, shutdown, origin and token.
    guard.admit_address(remote.ip())?;
    let head = request_head(&req);
    let accept = accept_value(&http::accept_upgrade(&head)?)?;
    if hub.is_stopping() {
        return Err(HttpError::new(503, "server is shutting down"));
    }
    let admitted = guard.admit(&head)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shard = ep.pick();
    let (reply, rx) = tokio::sync::oneshot::channel();
    ep.send(
        shard,
        Adoption::Reserve {
            remote,
            head,
            admitted,
            reply,
        },
    );
    let (id, admitted) = match tokio::time::timeout(SHARD_TIMEOUT, rx).await {
        Ok(Ok(r)) => r?,
        _ => return Err(HttpError::new(503, "server is shutting down")),
    };
    let reservation = Reservation {
        ep: ep.clone(),
        shard,
        id,
        admitted: Some(admitted),
    };
    tokio::spawn(async move { reservation.attach(on_upgrade.await) });
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| HttpError::new(500, "invalid Sec-WebSocket-Accept"))?;
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(r)
}

/// A shard's entry waiting for its socket: dropped without [`attach`](Self::attach) (the
/// upgrade failed, the task was cancelled), it tells the shard to drop the entry.
struct Reservation {
    ep: Endpoint,
    shard: usize,
    id: ConnId,
    admitted: Option<Admitted>,
}

impl Reservation {
    fn attach(mut self, upgraded: Result<Upgraded, hyper::Error>) {
        let parts = match upgraded {
            Ok(u) => take_socket(u),
            Err(e) => {
                tracing::debug!(conn = %self.id, error = %e, "upgrade through axum failed");
                return;
            }
        };
        let Some((stream, pre_read)) = parts else {
            tracing::warn!(
                "axum connection is not a plain tokio TcpStream: cannot hand it to a shard"
            );
            return;
        };
        if self.ep.hub.is_stopping() {
            return; // dropped: closed, and the reservation with it
        }
        let fd = match stream.into_std() {
            Ok(s) => {
                // The shards expect non-blocking sockets; Nagle off as on accepted ones.
                let _ = s.set_nonblocking(true);
                let _ = s.set_nodelay(true);
                s.into_raw_fd()
            }
            Err(e) => {
                tracing::debug!(error = %e, "upgraded socket could not be taken from tokio");
                return;
            }
        };
        let admitted = self.admitted.take();
        if let Some(admitted) = admitted {
            self.ep.send(
                self.shard,
                Adoption::Attach {
                    id: self.id,
                    fd: Some(fd),
                    admitted,
                    pre_read,
                },
            );
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(admitted) = self.admitted.take() {
            self.ep.send(
                self.shard,
                Adoption::Attach {
                    id: self.id,
                    fd: None,
                    admitted,
                    pre_read: Bytes::new(),
                },
            );
        }
    }
}

/// The TCP stream under an upgraded connection and the bytes hyper read past the head, whether
/// axum served it through hyper-util's auto builder (`axum::serve`) or hyper's own.
fn take_socket(u: Upgraded) -> Option<(tokio::net::TcpStream, Bytes)> {
    type Io = TokioIo<tokio::net::TcpStream>;
    match hyper_util::server::conn::auto::upgrade::downcast::<Io>(u) {
        Ok(p) => Some((p.io.into_inner(), p.read_buf)),
        Err(u) => u
            .downcast::<Io>()
            .ok()
            .map(|p| (p.io.into_inner(), p.read_buf)),
    }
}

async fn sse(ep: &Endpoint, req: Request) -> Result<Response, HttpError> {
    let remote = peer(&req)?;
    let request = sse_request(&req);
    let failed = |e: io::Error| HttpError::new(500, format!("socket pair: {e}"));
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(failed)?;
    ours.set_nonblocking(true).map_err(failed)?;
    theirs.set_nonblocking(true).map_err(failed)?;
    let mut ours = tokio::net::UnixStream::from_std(ours).map_err(failed)?;
    ep.send(
        ep.pick(),
        Adoption::Fresh {
            fd: theirs.into_raw_fd(),
            remote,
            pre_read: request,
        },
    );
    // The shard answers as it does on its own port: the stream's head, or an error.
    let mut buf = Vec::with_capacity(1024);
    let limit = ep.hub.config.handshake_timeout + SHARD_TIMEOUT;
    let (status, used) = tokio::time::timeout(limit, async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => return Some((resp.code.unwrap_or(500), n)),
                Ok(httparse::Status::Partial) if buf.len() < MAX_RELAY => {}
                _ => return None,
            }
            match ours.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| HttpError::new(503, "no answer from the hub"))?;
    let rest = Bytes::copy_from_slice(&buf[used..]);
    if status != 200 {
        // An error: `Content-Length` bytes, then the shard closes.
        let mut body = rest.to_vec();
        let _ = tokio::time::timeout(SHARD_TIMEOUT, async {
            while body.len() < MAX_RELAY && matches!(ours.read_buf(&mut body).await, Ok(n) if n > 0)
            {
            }
        })
        .await;
        let message = String::from_utf8_lossy(&body).trim_end().to_string();
        return Err(HttpError::new(status, message));
    }
    let body = SseBody {
        io: ours,
        first: Some(rest),
        buf: vec![0; 16 * 1024].into_boxed_slice(),
    };
    let mut r = Response::new(axum::body::Body::new(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// The events the shard writes to its end of the socket pair, as the response body.
struct SseBody {
    io: tokio::net::UnixStream,
    first: Option<Bytes>,
    buf: Box<[u8]>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(b) = this.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(b))));
        }
        let mut rb = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                let data = Bytes::copy_from_slice(rb.filled());
                Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The peer address axum was served with.
fn peer(req: &Request) -> Result<SocketAddr, HttpError> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| {
            HttpError::new(
                500,
                "ringhub::axum needs the peer address: serve the router with \
                 into_make_service_with_connect_info::<SocketAddr>()",
            )
        })
}

/// The engine's view of an axum request head.
fn request_head(req: &Request) -> RequestHead {
    RequestHead {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        // Anything but HTTP/1.1 fails the upgrade's version check, as on the native port.
        version: u8::from(req.version() == Version::HTTP_11),
        content_length: None,
    }
}

/// The request as the shard's `/sse` route reads it: method, query and headers (not the body
/// framing: the shard never reads a body there).
fn sse_request(req: &Request) -> Bytes {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" /sse");
    if let Some(q) = req.uri().query() {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The `Sec-WebSocket-Accept` value of the engine's `101` response.
fn accept_value(response: &[u8]) -> Result<String, HttpError> {
    let text = std::str::from_utf8(response).unwrap_or("");
    text.split("\r\n")
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Accept: "))
        .map(str::to_string)
        .ok_or_else(|| HttpError::new(500, "no Sec-WebSocket-Accept"))
}

/// The native path's refusal, answered by axum.
fn refusal(e: &HttpError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, format!("{}\n", e.message)).into_response();
    if e.status == 426 || e.message.contains("Sec-WebSocket-Version") {
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    r
}
