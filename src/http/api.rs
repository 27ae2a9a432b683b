//! The one HTTP router on the WebSocket port: pages, health and readiness probes, Prometheus
//! metrics, then the API (`/api/v1/*`, API key in `Authorization: Bearer`) — each endpoint group
//! in a file of its own (`publish`, `users`, `messages`, `nodes`), over the operations in
//! `messaging` and the answers in `response`. Nothing below calls back into this file. The shard
//! keeps the connection alive between requests and hands them over one at a time, so answers
//! leave in request order (`shard::request`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::response::{respond, ApiError, Response};
use super::{messages, nodes, publish, users};
use crate::cluster::QueryKind;
use crate::proto::envelope;
use crate::proto::handshake::RequestHead;
use crate::shard::shared::HubShared;

/// Serves one API request; the shard read its body (`Content-Length` bytes) already.
pub(crate) async fn handle(
    hub: &HubShared,
    head: &RequestHead,
    body: Bytes,
    peer: std::net::IpAddr,
) -> Response {
    let method = head.method.as_str();
    if hub.config.serves_ui(&head.path) {
        return crate::http::ui::serve(head);
    }
    match (method, head.path.as_str()) {
        ("GET", "/healthz") => return Response::ok(json!("ok")),
        ("GET", "/readyz") if hub.is_stopping() => return Response::err(503, "shutting down"),
        ("GET", "/readyz") => {
            let store = hub.store_fault.lock().ok().and_then(|f| f.clone());
            return match (hub.cluster.broker.health(), store) {
                (Err(reason), _) | (Ok(()), Some(reason)) => Response::err(503, &reason),
                (Ok(()), None) => Response::ok(json!("ready")),
            };
        }
        ("GET", "/metrics") => {
            return Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::http::metrics::render(
                    &hub.stats,
                    hub.is_stopping(),
                    hub.cluster.broker.stats(),
                    hub.links
                        .store
                        .as_ref()
                        .map(|tx| hub.store_stats.list(tx.len())),
                    hub.links.proxy.as_ref().map(|_| &hub.proxy_stats),
                    hub.config
                        .webhooks
                        .url
                        .is_some()
                        .then(|| hub.webhooks.list()),
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
    if hub.api_keys.blocked(peer, now) {
        return Response::err(429, "too many wrong API keys from this address: try later");
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        key.as_bytes(),
    )) {
        hub.api_keys.failed(peer, now);
        return Response::err(401, "missing or wrong API key (Authorization: Bearer KEY)");
    }
    let path = head.path.as_str();
    if let Some(id) = path.strip_prefix("/api/v1/messages/") {
        if method != "GET" {
            return Response::err(405, "use GET");
        }
        return respond(messages::status_endpoint(hub, id).await);
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
        "/api/v1/online" => respond(nodes::gathered(hub, QueryKind::Online).await),
        "/api/v1/stats" => respond(nodes::gathered(hub, QueryKind::Stats).await),
        "/api/v1/topics" => respond(nodes::gathered(hub, QueryKind::Topics).await),
        "/api/v1/events" => Response::ok(hub.events.to_json()),
        "/api/v1/webhooks" => Response::ok(
            hub.webhooks
                .to_json(hub.config.webhooks.url.is_some(), crate::store::now_ms()),
        ),
        "/api/v1/inbox" => respond(messages::inbox_endpoint(hub, head.query.as_deref()).await),
        "/api/v1/nodes" => respond(nodes::nodes(hub).await),
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
    ("/api/v1/webhooks", "GET"),
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
        "publish" => publish::publish_endpoint(hub, body).await,
        "send" => users::send(hub, body).await,
        "broadcast" => users::broadcast(hub, body).await,
        "disconnect" => users::disconnect(hub, body).await,
        "subscribe" => users::subscription_endpoint(hub, body, true).await,
        "unsubscribe" => users::subscription_endpoint(hub, body, false).await,
        "history" => publish::history_endpoint(hub, body).await,
        "presence" => users::presence_endpoint(hub, body).await,
        other => Err(ApiError::bad(format!(
            "unknown method '{}'",
            crate::proto::error::shorten(other)
        ))),
    }
}

/// Most commands in one batch.
const MAX_BATCH: usize = 1000;

/// `POST /api/v1/batch`: each command in order, one result each; a failure does not stop the
/// others. A run of consecutive `publish` and `send` commands goes out together: each is
/// started in order (so they reach the shards and the store in order), the stored ones (history
/// publications, durable sends) to the store thread as one job — one commit — and then the run
/// is awaited. Any other command waits for everything before it.
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
    // One malformed entry (`null`, no `method`) fails alone.
    let cmds: Vec<Result<Cmd<'_>, ApiError>> = b
        .commands
        .iter()
        .map(|raw| match serde_json::from_str::<Cmd<'_>>(raw.get()) {
            Err(e) => Err(ApiError::bad(format!("invalid command: {e}"))),
            Ok(c) if c.method == "batch" => Err(ApiError::bad("a batch cannot contain a batch")),
            Ok(c) => Ok(c),
        })
        .collect();
    let together = |c: &Result<Cmd<'_>, ApiError>| matches!(c, Ok(c) if matches!(c.method.as_str(), "publish" | "send"));
    let mut results = Vec::with_capacity(cmds.len());
    let mut i = 0;
    while i < cmds.len() {
        let run = cmds[i..].iter().take_while(|c| together(c)).count();
        if run > 1 {
            let run_cmds = cmds[i..i + run]
                .iter()
                .filter_map(|c| c.as_ref().ok())
                .map(|c| (c.method.as_str(), c.params.get().as_bytes()));
            results.extend(started_together(hub, run_cmds).await);
            i += run;
            continue;
        }
        results.push(match &cmds[i] {
            Err(e) => Err(e.clone()),
            Ok(c) => command(hub, &c.method, c.params.get().as_bytes()).await,
        });
        i += 1;
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(data) => json!({"success": true, "data": data}),
            Err(e) => json!({"success": false, "code": e.code, "error": e.message}),
        })
        .collect();
    Ok(json!({ "results": results }))
}

/// Starts every command (up to its first wait) in order, with the store jobs they submit sent
/// as one; then waits for each.
async fn started_together<'a>(
    hub: &'a HubShared,
    cmds: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<Result<Value, ApiError>> {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    type Started<'a> = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + 'a>>;
    let mut futs: Vec<Started<'a>> = cmds
        .map(|(name, params)| Box::pin(command(hub, name, params)) as Started<'a>)
        .collect();
    let mut out: Vec<Option<Result<Value, ApiError>>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let ((), jobs) = crate::shard::shared::collect_store_jobs(|| {
            for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    *o = Some(r);
                }
            }
        });
        // Refused (store queue full, or stopped): the jobs are dropped, and each command waiting
        // for one fails with the store's error.
        if !jobs.is_empty() {
            if let Err(e) = hub.submit_store(crate::shard::jobs::StoreJob::Many(jobs), true) {
                tracing::debug!(error = %e, "API batch refused by the store");
            }
        }
        Poll::Ready(())
    })
    .await;
    let mut results = Vec::with_capacity(out.len());
    for (f, o) in futs.into_iter().zip(out) {
        results.push(match o {
            Some(r) => r,
            None => f.await,
        });
    }
    results
}
