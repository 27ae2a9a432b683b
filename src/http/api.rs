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

use crate::proto::envelope;
use crate::proto::handshake::RequestHead;
use crate::proto::pattern::validate_topic;
use crate::shard::inbox::{ApiOp, ApiReply, SendReq, ShardMsg};
use crate::shard::shared::HubShared;

/// An HTTP response.
pub(crate) struct Response {
    pub status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn ok(data: Value) -> Self {
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
        }
    }
    /// Serialises status line, headers and body.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            crate::proto::handshake::reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Whether this path is served by [`handle`].
/// Serves one API request; the shard read its body (`Content-Length` bytes) already.
pub(crate) async fn handle(hub: &HubShared, head: &RequestHead, body: Bytes) -> Response {
    let method = head.method.as_str();
    match (method, head.path.as_str()) {
        ("GET", "/healthz") => return Response::ok(json!("ok")),
        ("GET", "/readyz") if hub.is_stopping() => return Response::err(503, "shutting down"),
        ("GET", "/readyz") => return Response::ok(json!("ready")),
        ("GET", "/metrics") => {
            return Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::http::metrics::render(&hub.stats, hub.is_stopping()).into_bytes(),
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
    let given = head
        .header("Authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        key.as_bytes(),
    )) {
        return Response::err(401, "missing or wrong API key (Authorization: Bearer KEY)");
    }
    let post = |m: &str| m == "POST";
    match head.path.as_str() {
        "/api/v1/online" if method == "GET" => online(hub).await,
        "/api/v1/stats" if method == "GET" => {
            let shards: Vec<_> = hub.stats.iter().map(crate::ShardStats::snapshot).collect();
            let total = shards
                .iter()
                .fold(crate::StatsSnapshot::default(), |a, b| a + *b);
            Response::ok(json!({"total": total, "shards": shards}))
        }
        "/api/v1/publish" | "/api/v1/send" | "/api/v1/broadcast" | "/api/v1/disconnect"
            if post(method) =>
        {
            if head.header("Content-Length").is_none() {
                return Response::err(411, "Content-Length required");
            }
            match head.path.as_str() {
                "/api/v1/publish" => publish(hub, &body).await,
                "/api/v1/send" => send(hub, &body).await,
                "/api/v1/broadcast" => broadcast(hub, &body).await,
                _ => disconnect(hub, &body).await,
            }
        }
        "/api/v1/online" | "/api/v1/stats" | "/api/v1/publish" | "/api/v1/send"
        | "/api/v1/broadcast" | "/api/v1/disconnect" => {
            Response::err(405, "wrong method for this endpoint")
        }
        _ => Response::err(404, "no such endpoint"),
    }
}

fn bad(e: impl std::fmt::Display) -> Response {
    Response::err(400, &format!("invalid request: {e}"))
}

async fn scatter(
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

fn count(replies: Result<Vec<ApiReply>, Response>, field: &str) -> Response {
    match replies {
        Err(r) => r,
        Ok(rs) => {
            let n: usize = rs
                .iter()
                .map(|r| if let ApiReply::Count(n) = r { *n } else { 0 })
                .sum();
            Response::ok(json!({ field: n }))
        }
    }
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

async fn publish(hub: &HubShared, body: &[u8]) -> Response {
    let p: PublishBody<'_> = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    if let Err(e) = validate_topic(&p.topic) {
        return bad(e);
    }
    let frame = envelope::publication(&p.topic, &p.event, p.data.map(|d| d.get().as_bytes()));
    let topic: Arc<str> = p.topic.as_ref().into();
    count(
        scatter(hub, || ApiOp::Publish {
            topic: topic.clone(),
            frame: frame.clone(),
        })
        .await,
        "delivered",
    )
}

#[derive(Deserialize)]
struct SendBody {
    user: Option<String>,
    users: Option<Vec<String>>,
    topic: Option<String>,
    event: String,
    data: Option<Box<RawValue>>,
}

async fn send(hub: &HubShared, body: &[u8]) -> Response {
    let b: SendBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let mut users = b.users.unwrap_or_default();
    users.extend(b.user);
    if users.is_empty() {
        return bad("give `user` or `users`");
    }
    if let Some(Err(e)) = b.topic.as_deref().map(validate_topic) {
        return bad(e);
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

async fn broadcast(hub: &HubShared, body: &[u8]) -> Response {
    let b: BroadcastBody<'_> = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let topic = b.topic.as_deref().unwrap_or("broadcast");
    if let Err(e) = validate_topic(topic) {
        return bad(e);
    }
    let frame = envelope::publication(topic, &b.event, b.data.map(|d| d.get().as_bytes()));
    count(
        scatter(hub, || ApiOp::Broadcast(frame.clone())).await,
        "delivered",
    )
}

async fn disconnect(hub: &HubShared, body: &[u8]) -> Response {
    #[derive(Deserialize)]
    struct D {
        user: String,
    }
    let d: D = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let user: Arc<str> = d.user.into();
    count(
        scatter(hub, || ApiOp::Disconnect(user.clone())).await,
        "disconnected",
    )
}

async fn online(hub: &HubShared) -> Response {
    let replies = match scatter(hub, || ApiOp::Online).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut users: std::collections::BTreeMap<Arc<str>, usize> = Default::default();
    let mut anonymous = 0;
    for r in replies {
        if let ApiReply::Online(list, anon) = r {
            anonymous += anon;
            for (u, n) in list {
                *users.entry(u).or_default() += n;
            }
        }
    }
    let list: Vec<Value> = users
        .iter()
        .map(|(u, n)| json!({"user": &**u, "connections": n}))
        .collect();
    let total: usize = users.values().sum::<usize>() + anonymous;
    Response::ok(json!({"users": list, "anonymous": anonymous, "connections": total}))
}
