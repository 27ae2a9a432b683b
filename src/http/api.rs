//! The HTTP side on the WebSocket port: the publishing API (`/api/v1/*`, API key in
//! `Authorization: Bearer`), health and readiness probes, and Prometheus metrics. One request per
//! connection (`Connection: close`); operations that span shards are scattered to every shard's
//! inbox and gathered here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::messaging::{self, respond, ApiError};
use crate::cluster::{ControlOp, QueryKind};
use crate::proto::envelope;
use crate::proto::handshake::RequestHead;
use crate::proto::pattern::validate_topic;
use crate::shard::inbox::{ApiOp, ApiReply, SendReq, ShardMsg};
use crate::shard::shared::HubShared;

/// An HTTP response.
pub(crate) struct Response {
    pub status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    /// Further header lines, each ending in `\r\n`.
    pub(crate) headers: String,
}

impl Response {
    pub(crate) fn ok(data: Value) -> Self {
        Self::json(200, json!({"success": true, "data": data}))
    }
    pub(crate) fn err(status: u16, error: &str) -> Self {
        Self::json(status, json!({"success": false, "error": error}))
    }
    fn json(status: u16, v: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            headers: String::new(),
        }
    }
    /// Serialises status line, headers and body.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            crate::proto::handshake::reason(self.status),
            self.content_type,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Serves one API request; the shard read its body (`Content-Length` bytes) already.
pub(crate) async fn handle(
    hub: &HubShared,
    head: &RequestHead,
    body: Bytes,
    peer: std::net::IpAddr,
    keys: &std::cell::RefCell<super::keyguard::KeyGuard>,
) -> Response {
    let method = head.method.as_str();
    if crate::http::ui::serves(&hub.config, &head.path) {
        return crate::http::ui::serve(head);
    }
    match (method, head.path.as_str()) {
        ("GET", "/healthz") => return Response::ok(json!("ok")),
        ("GET", "/readyz") if hub.is_stopping() => return Response::err(503, "shutting down"),
        ("GET", "/readyz") => {
            return match hub.broker.health() {
                Ok(()) => Response::ok(json!("ready")),
                Err(reason) => Response::err(503, &reason),
            }
        }
        ("GET", "/metrics") => {
            return Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::http::metrics::render(
                    &hub.stats,
                    hub.is_stopping(),
                    hub.broker.stats(),
                )
                .into_bytes(),
                headers: String::new(),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics") => return Response::err(405, "use GET"),
        _ => {}
    }
    let Some(key) = hub.config.api_key.as_deref() else {
        return Response::err(
            403,
            "the HTTP API is disabled: configure an API key ([api] key)",
        );
    };
    // RFC 7235: the scheme is case-insensitive.
    let given = head
        .header("Authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, k)| k.trim_start());
    let now = std::time::Instant::now();
    if keys.borrow_mut().blocked(peer, now) {
        return Response::err(429, "too many wrong API keys from this address: try later");
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        key.as_bytes(),
    )) {
        keys.borrow_mut().failed(peer, now);
        return Response::err(401, "missing or wrong API key (Authorization: Bearer KEY)");
    }
    let path = head.path.as_str();
    if let Some(id) = path.strip_prefix("/api/v1/messages/") {
        if method != "GET" {
            return Response::err(405, "use GET");
        }
        return respond(messaging::status_endpoint(hub, id).await);
    }
    let known = ENDPOINTS.iter().find(|(p, _)| *p == path);
    match known {
        None => return Response::err(404, "no such endpoint"),
        Some((_, m)) if *m != method => {
            return Response::err(405, "wrong method for this endpoint")
        }
        Some(_) => {}
    }
    if method == "POST" && head.header("Content-Length").is_none() {
        return Response::err(411, "Content-Length required");
    }
    // `data` sits at most 4 levels down (a batch command's params).
    if !envelope::within_depth(&body, envelope::MAX_DEPTH + 4) {
        return Response::err(
            400,
            &format!("data is nested deeper than {} levels", envelope::MAX_DEPTH),
        );
    }
    match path {
        "/api/v1/online" => respond(gathered(hub, QueryKind::Online).await),
        "/api/v1/stats" => respond(gathered(hub, QueryKind::Stats).await),
        "/api/v1/topics" => respond(gathered(hub, QueryKind::Topics).await),
        "/api/v1/events" => Response::ok(hub.events.to_json()),
        "/api/v1/inbox" => respond(messaging::inbox_endpoint(hub, head.query.as_deref()).await),
        "/api/v1/nodes" => respond(nodes(hub).await),
        "/api/v1/batch" => respond(batch(hub, &body).await),
        _ => respond(command(hub, &path["/api/v1/".len()..], &body).await),
    }
}

/// Every endpoint under `/api/v1/` with its method (`/api/v1/messages/M` aside).
const ENDPOINTS: &[(&str, &str)] = &[
    ("/api/v1/online", "GET"),
    ("/api/v1/stats", "GET"),
    ("/api/v1/inbox", "GET"),
    ("/api/v1/nodes", "GET"),
    ("/api/v1/topics", "GET"),
    ("/api/v1/events", "GET"),
    ("/api/v1/publish", "POST"),
    ("/api/v1/send", "POST"),
    ("/api/v1/broadcast", "POST"),
    ("/api/v1/disconnect", "POST"),
    ("/api/v1/subscribe", "POST"),
    ("/api/v1/unsubscribe", "POST"),
    ("/api/v1/history", "POST"),
    ("/api/v1/presence", "POST"),
    ("/api/v1/batch", "POST"),
];

/// One POST command by name: an endpoint, or a command of a batch.
async fn command(hub: &HubShared, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    match name {
        "publish" => messaging::publish_endpoint(hub, body).await,
        "send" => send(hub, body).await,
        "broadcast" => broadcast(hub, body).await,
        "disconnect" => disconnect(hub, body).await,
        "subscribe" => messaging::subscription_endpoint(hub, body, true).await,
        "unsubscribe" => messaging::subscription_endpoint(hub, body, false).await,
        "history" => history(hub, body).await,
        "presence" => {
            #[derive(Deserialize)]
            struct P {
                topic: String,
            }
            let p: P = serde_json::from_slice(body).map_err(ApiError::bad)?;
            let list = messaging::presence(hub, &p.topic).await?;
            let clients: Vec<Value> = list
                .iter()
                .map(|e| json!({"client": e.client, "user": e.user.as_deref().unwrap_or("")}))
                .collect();
            Ok(json!({ "clients": clients }))
        }
        other => Err(ApiError::bad(format!(
            "unknown method '{}'",
            crate::proto::error::shorten(other)
        ))),
    }
}

/// Most commands in one batch.
const MAX_BATCH: usize = 1000;

/// `POST /api/v1/batch`: each command in order, one result each; a failure does not stop the
/// others.
async fn batch(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Cmd<'a> {
        method: String,
        #[serde(borrow)]
        params: &'a RawValue,
    }
    #[derive(Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        commands: Vec<&'a RawValue>,
    }
    let b: Batch<'_> = serde_json::from_slice(body).map_err(ApiError::bad)?;
    if b.commands.len() > MAX_BATCH {
        return Err(ApiError::bad(format!(
            "at most {MAX_BATCH} commands per batch"
        )));
    }
    let mut results = Vec::with_capacity(b.commands.len());
    for raw in &b.commands {
        // One malformed entry (`null`, no `method`) fails alone.
        let r = match serde_json::from_str::<Cmd<'_>>(raw.get()) {
            Err(e) => Err(ApiError::bad(format!("invalid command: {e}"))),
            Ok(c) if c.method == "batch" => Err(ApiError::bad("a batch cannot contain a batch")),
            Ok(c) => command(hub, &c.method, c.params.get().as_bytes()).await,
        };
        results.push(match r {
            Ok(data) => json!({"success": true, "data": data}),
            Err(e) => json!({"success": false, "error": e.message}),
        });
    }
    Ok(json!({ "results": results }))
}

async fn history(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct SinceB {
        epoch: String,
        offset: u64,
    }
    #[derive(Deserialize)]
    struct H {
        topic: String,
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        since: Option<SinceB>,
    }
    let h: H = serde_json::from_slice(body).map_err(ApiError::bad)?;
    let since = h.since.map(|s| (s.epoch, s.offset));
    let r = messaging::history(hub, &h.topic, h.limit.unwrap_or(50), since).await?;
    let pubs: Vec<Value> = r
        .publications
        .iter()
        .map(|p| {
            let data = p
                .data
                .as_deref()
                .and_then(|d| serde_json::from_slice::<Value>(d).ok());
            json!({"event": &*p.event, "data": data, "offset": p.offset})
        })
        .collect();
    Ok(json!({"epoch": &*r.pos.epoch, "offset": r.pos.offset, "publications": pubs}))
}

pub(crate) async fn scatter(
    hub: &HubShared,
    mut make: impl FnMut() -> ApiOp,
) -> Result<Vec<ApiReply>, Response> {
    let mut waiting = Vec::with_capacity(hub.inboxes.len());
    for inbox in hub.inboxes.iter() {
        let (tx, rx) = oneshot::channel();
        inbox.push(ShardMsg::Api(make(), tx));
        waiting.push(rx);
    }
    let gather = async {
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(
                rx.await
                    .map_err(|_| Response::err(503, "a shard is not answering"))?,
            );
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(5), gather)
        .await
        .unwrap_or_else(|_| Err(Response::err(503, "shards did not answer in time")))
}

fn count(replies: Result<Vec<ApiReply>, Response>, field: &str) -> Result<Value, ApiError> {
    match replies {
        Err(r) => Err(ApiError::new(r.status, "shards did not answer")),
        Ok(rs) => {
            let n: usize = rs
                .iter()
                .map(|r| if let ApiReply::Count(n) = r { *n } else { 0 })
                .sum();
            Ok(json!({ field: n }))
        }
    }
}

#[derive(Deserialize)]
struct SendBody {
    user: Option<String>,
    users: Option<Vec<String>>,
    topic: Option<String>,
    event: String,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    durable: bool,
}

async fn send(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    let b: SendBody = serde_json::from_slice(body).map_err(ApiError::bad)?;
    if b.durable {
        let (Some(user), None, None) = (b.user.as_deref(), &b.users, &b.topic) else {
            return Err(ApiError::bad(
                "a durable send takes one `user` and no `topic` (it is delivered on user:<id>)",
            ));
        };
        let data = b.data.as_ref().map(|d| d.get().as_bytes());
        let r = messaging::send_durable(hub, user, &b.event, data).await?;
        return Ok(
            json!({"message_id": r.message_id, "offset": r.offset, "delivered": r.delivered}),
        );
    }
    let mut users = b.users.unwrap_or_default();
    users.extend(b.user);
    if users.is_empty() {
        return Err(ApiError::bad("give `user` or `users`"));
    }
    if !users.iter().all(|u| crate::policy::auth::valid_user(u)) {
        return Err(ApiError::bad(
            "invalid_user: a user is 1 to 128 bytes without '*' or control characters",
        ));
    }
    if let Some(Err(e)) = b.topic.as_deref().map(validate_topic) {
        return Err(ApiError::bad(e));
    }
    if hub.clustered {
        hub.broker.control(ControlOp::Send {
            users: users.clone(),
            topic: b.topic.clone(),
            event: b.event.clone(),
            data: b.data.clone(),
        });
    }
    let req = Arc::new(SendReq {
        users,
        topic: b.topic,
        event: b.event,
        data: b.data,
    });
    count(scatter(hub, || ApiOp::Send(req.clone())).await, "delivered")
}

#[derive(Deserialize)]
struct BroadcastBody<'a> {
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

async fn broadcast(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    let b: BroadcastBody<'_> = serde_json::from_slice(body).map_err(ApiError::bad)?;
    let topic = b.topic.as_deref().unwrap_or("broadcast");
    validate_topic(topic).map_err(ApiError::bad)?;
    // A broadcast reaches every connection; a private topic would leak to all of them.
    if topic.starts_with("user:") {
        return Err(ApiError::bad(
            "broadcast reaches every connection: a user: topic is refused (use /api/v1/send)",
        ));
    }
    let frame = envelope::publication(topic, &b.event, b.data.map(|d| d.get().as_bytes()));
    if hub.clustered {
        hub.broker.control(ControlOp::Broadcast {
            topic: topic.to_string(),
            event: b.event.to_string(),
            data: b.data.map(RawValue::to_owned),
        });
    }
    count(
        scatter(hub, || ApiOp::Broadcast(frame.clone())).await,
        "delivered",
    )
}

async fn disconnect(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct D {
        user: String,
    }
    let d: D = serde_json::from_slice(body).map_err(ApiError::bad)?;
    if hub.clustered {
        hub.broker.control(ControlOp::Disconnect {
            user: d.user.clone(),
        });
    }
    let user: Arc<str> = d.user.into();
    count(
        scatter(hub, || ApiOp::Disconnect(user.clone())).await,
        "disconnected",
    )
}

/// `GET /api/v1/online`, `/stats`, `/topics`: this node's shards, or every live node of the
/// cluster (see `cluster::query`).
async fn gathered(hub: &HubShared, kind: QueryKind) -> Result<Value, ApiError> {
    crate::cluster::query::gather(hub, kind)
        .await
        .map_err(|e| ApiError::new(503, e))
}

/// `GET /api/v1/nodes`: the live nodes of the cluster (their registrations in Redis), or this
/// node alone.
async fn nodes(hub: &HubShared) -> Result<Value, ApiError> {
    let Some(rx) = hub.broker.nodes() else {
        let connections: i64 = hub
            .stats
            .iter()
            .map(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        return Ok(json!({"nodes": [{
            "node": &*hub.node,
            "connections": connections,
            "shards": hub.shards,
        }]}));
    };
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok(list))) => Ok(json!({ "nodes": list })),
        Ok(Ok(Err(e))) => Err(ApiError::new(503, format!("cluster: {e}"))),
        _ => Err(ApiError::new(503, "cluster: no answer")),
    }
}
