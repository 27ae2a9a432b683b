//! Protocol v2 operations that gather from every shard or wait for the store: publish (to one
//! or many topics, with history), durable sends, presence, server-side subscriptions, history,
//! message status, inboxes, batch. Shared by the HTTP API, client `presence` requests and the
//! library's [`ServerHandle`](crate::ServerHandle); they all run on the API thread.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::response::ApiError;
use crate::proto::envelope;
use crate::proto::error::ErrorCode;
use crate::proto::pattern::validate_topic;
use crate::shard::gather::scatter;
use crate::shard::inbox::{ApiOp, ApiReply, Target};
use crate::shard::jobs::{Counted, DurableReply, HistoryTo, PubJob, PubReply, Since, StoreJob};
use crate::shard::shared::HubShared;
use crate::store::{HistoryRead, InboxMessage, MessageInfo, MessageStatus, StoreError};
use crate::ConnId;

/// The receipt of a durable send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendReceipt {
    /// The message id (for `GET /api/v1/messages/M`).
    pub message_id: u64,
    /// Its offset in the user's inbox.
    pub offset: u64,
    /// Connections it was written to at once (0 when the user is offline).
    pub delivered: usize,
}

/// One connection in a presence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The client id.
    pub client: String,
    /// Its user (`None` when anonymous).
    pub user: Option<String>,
    /// Metadata from `on_connect`, as JSON text.
    pub meta: Option<String>,
}

async fn wait<T>(rx: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(r)) => r.map_err(ApiError::from_store),
        Ok(Err(_)) => Err(ApiError::new(503, "the store is not answering")),
        Err(_) => Err(ApiError::new(503, "the store did not answer in time")),
    }
}

async fn sum_counts(waits: Vec<oneshot::Receiver<ApiReply>>) -> usize {
    let mut n = 0;
    for rx in waits {
        if let Ok(Ok(ApiReply::Count(k))) = tokio::time::timeout(Duration::from_secs(5), rx).await {
            n += k;
        }
    }
    n
}

fn counts(replies: Vec<ApiReply>) -> usize {
    replies
        .iter()
        .map(|r| match r {
            ApiReply::Count(n) | ApiReply::Subscribed(n, _) => *n,
            _ => 0,
        })
        .sum()
}

async fn gather(hub: &HubShared, make: impl FnMut() -> ApiOp) -> Result<Vec<ApiReply>, ApiError> {
    scatter(&hub.inboxes, make)
        .await
        .map_err(|why| ApiError::new(503, format!("shards did not answer: {why}")))
}

/// Publishes one publication to `topics`: topics without history are delivered once per
/// connection; each topic with history is stored (its own stream, with its own offset) first.
/// Returns the connections reached and the offsets assigned.
pub(crate) async fn publish(
    hub: &HubShared,
    topics: &[String],
    event: &str,
    data: Option<&[u8]>,
    exclude: Option<ConnId>,
) -> Result<(usize, Vec<(String, u64)>), ApiError> {
    if topics.is_empty() {
        return Err(ApiError::bad("give `topic` or `topics`"));
    }
    for t in topics {
        validate_topic(t).map_err(ApiError::bad)?;
    }
    let (stored, plain): (Vec<&String>, Vec<&String>) = topics
        .iter()
        .partition(|t| hub.namespaces.history(t).is_some());
    let mut delivered = 0;
    let mut offsets = Vec::new();
    let mut waits = Vec::new();
    for t in stored {
        let (tx, rx) = oneshot::channel();
        let job = PubJob {
            topic: t.as_str().into(),
            event: event.into(),
            data: data.map(Bytes::copy_from_slice),
            exclude,
            reply: PubReply::Api(tx),
        };
        hub.submit_store(StoreJob::Publish(Box::new(job)), true)
            .map_err(ApiError::from_handler)?;
        waits.push((t.clone(), rx));
    }
    if !plain.is_empty() {
        let frames: Arc<[(Arc<str>, Bytes)]> = plain
            .iter()
            .map(|t| (Arc::from(t.as_str()), envelope::publication(t, event, data)))
            .collect();
        if hub.cluster.clustered {
            hub.cluster.broker.publish(&frames);
        }
        let replies = gather(hub, || ApiOp::Publish {
            frames: frames.clone(),
            exclude,
        })
        .await?;
        delivered += counts(replies);
    }
    for (t, rx) in waits {
        let (offset, shard_waits): Counted = wait(rx).await?;
        delivered += sum_counts(shard_waits).await;
        offsets.push((t, offset));
    }
    Ok((delivered, offsets))
}

/// Stores a durable message for `user`, then writes it to the user's connections.
pub(crate) async fn send_durable(
    hub: &HubShared,
    user: &str,
    event: &str,
    data: Option<&[u8]>,
) -> Result<SendReceipt, ApiError> {
    if !crate::policy::auth::valid_user(user) {
        return Err(ApiError::bad(
            "invalid_user: a user is 1 to 128 bytes without '*' or control characters",
        ));
    }
    let (tx, rx) = oneshot::channel();
    let job = StoreJob::InboxPut {
        user: user.into(),
        event: event.into(),
        data: data.map(Bytes::copy_from_slice),
        reply: DurableReply::Api(tx),
    };
    hub.submit_store(job, true)
        .map_err(ApiError::from_handler)?;
    let (message_id, (offset, shard_waits)) = wait(rx).await?;
    Ok(SendReceipt {
        message_id,
        offset,
        delivered: sum_counts(shard_waits).await,
    })
}

/// An at-most-once message to one user's connections; returns how many were reached.
pub(crate) async fn send_plain(
    hub: &HubShared,
    user: &str,
    event: &str,
    data: Option<&[u8]>,
) -> Result<usize, ApiError> {
    let data = match data {
        Some(d) => Some(
            RawValue::from_string(String::from_utf8_lossy(d).into_owned())
                .map_err(ApiError::bad)?,
        ),
        None => None,
    };
    if hub.cluster.clustered {
        hub.cluster.broker.control(crate::cluster::ControlOp::Send {
            users: vec![user.to_string()],
            topic: None,
            event: event.to_string(),
            data: data.clone(),
        });
    }
    let req = Arc::new(crate::shard::inbox::SendReq {
        users: vec![user.to_string()],
        topic: None,
        event: event.to_string(),
        data,
    });
    Ok(counts(gather(hub, || ApiOp::Send(req.clone())).await?))
}

/// The connections subscribed to exactly `topic`: in a cluster, for a topic with
/// `presence = true`, every node's (from Redis, see `cluster::redis::presence`); otherwise this
/// node's shards'.
pub(crate) async fn presence(hub: &HubShared, topic: &str) -> Result<Vec<PresenceEntry>, ApiError> {
    validate_topic(topic).map_err(ApiError::bad)?;
    let tracked = hub.namespaces.get(topic).is_some_and(|n| n.presence);
    if let Some(rx) = tracked
        .then(|| hub.cluster.broker.presence(topic))
        .flatten()
    {
        return match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(Ok(entries))) => {
                let mut list: Vec<PresenceEntry> =
                    entries.iter().filter_map(|e| parse_entry(e)).collect();
                list.sort_by(|a, b| a.client.cmp(&b.client));
                Ok(list)
            }
            Ok(Ok(Err(e))) => Err(ApiError::new(503, format!("cluster: {e}"))),
            _ => Err(ApiError::new(
                503,
                "cluster: presence did not answer in time",
            )),
        };
    }
    let t: Arc<str> = topic.into();
    let replies = gather(hub, || ApiOp::Presence(t.clone())).await?;
    let mut out = Vec::new();
    for r in replies {
        if let ApiReply::Presence(list) = r {
            out.extend(list.into_iter().map(|(id, user, meta)| PresenceEntry {
                client: hub.client_id(id),
                user: user.map(|u| u.to_string()),
                meta: meta.map(|m| m.to_string()),
            }));
        }
    }
    Ok(out)
}

/// An entry of a cluster's presence hash (written by `shard::presence`); `None` when it is not
/// one (Redis data is not trusted).
fn parse_entry(json: &str) -> Option<PresenceEntry> {
    #[derive(Deserialize)]
    struct E {
        client: String,
        #[serde(default)]
        user: String,
        #[serde(default)]
        meta: Option<Box<RawValue>>,
    }
    let e: E = serde_json::from_str(json).ok()?;
    Some(PresenceEntry {
        client: e.client,
        user: (!e.user.is_empty()).then_some(e.user),
        meta: e.meta.map(|m| m.get().to_string()),
    })
}

/// The answer to a client's `presence` / `presence_stats`.
pub(crate) async fn presence_frame(
    hub: &HubShared,
    topic: &str,
    rid: Option<u64>,
    stats: bool,
) -> Option<Bytes> {
    let rid = rid?;
    Some(match presence(hub, topic).await {
        Ok(list) => {
            let body = presence_json(&list, stats).to_string();
            envelope::reply(rid, topic, Some(body.as_bytes()))
        }
        Err(e) => {
            let code = if e.status == 503 {
                ErrorCode::NotAvailable
            } else {
                ErrorCode::Internal
            };
            envelope::error(Some(rid), topic, code, &e.message)
        }
    })
}

fn presence_json(list: &[PresenceEntry], stats: bool) -> Value {
    if stats {
        let users: std::collections::HashSet<&str> =
            list.iter().filter_map(|e| e.user.as_deref()).collect();
        return json!({"clients": list.len(), "users": users.len()});
    }
    let clients: Vec<Value> = list
        .iter()
        .map(|e| {
            let mut v = json!({"client": e.client, "user": e.user.as_deref().unwrap_or("")});
            if let Some(m) = e
                .meta
                .as_deref()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
            {
                v["meta"] = m;
            }
            v
        })
        .collect();
    json!({ "clients": clients })
}

/// Subscribes (or unsubscribes) every matching connection, then waits until every shard has
/// applied the interest changes (a second, empty round behind them in every inbox).
pub(crate) async fn subscription(
    hub: &HubShared,
    target: Target,
    topic: &str,
    add: bool,
) -> Result<(usize, Vec<(String, String)>), ApiError> {
    crate::proto::pattern::Pattern::parse(topic).map_err(ApiError::bad)?;
    if let (true, Target::User(u)) = (hub.cluster.clustered, &target) {
        hub.cluster
            .broker
            .control(crate::cluster::ControlOp::Subscription {
                user: Some(u.to_string()),
                client: None,
                topic: topic.to_string(),
                add,
            });
    }
    let t: Arc<str> = topic.into();
    let replies = gather(hub, || ApiOp::Subscription {
        target: target.clone(),
        topic: t.clone(),
        add,
    })
    .await?;
    gather(hub, || ApiOp::Barrier).await?;
    let refused = replies
        .iter()
        .flat_map(|r| match r {
            ApiReply::Subscribed(_, list) => list.clone(),
            _ => Vec::new(),
        })
        .collect();
    Ok((counts(replies), refused))
}

/// The latest publications of a topic with history.
pub(crate) async fn history(
    hub: &HubShared,
    topic: &str,
    limit: usize,
    since: Option<(String, u64)>,
) -> Result<HistoryRead, ApiError> {
    validate_topic(topic).map_err(ApiError::bad)?;
    if hub.namespaces.history(topic).is_none() {
        return Err(ApiError::new(404, "this topic keeps no history"));
    }
    let (tx, rx) = oneshot::channel();
    let job = StoreJob::History {
        topic: topic.into(),
        limit: limit.min(hub.config.store.max_recover),
        since: since.map(|(e, o)| Since {
            epoch: e.into(),
            offset: o,
        }),
        until: None,
        to: HistoryTo::Api(tx),
    };
    hub.submit_store(job, false)
        .map_err(ApiError::from_handler)?;
    wait(rx).await
}

/// What is known of a durable message.
pub(crate) async fn status(hub: &HubShared, id: u64) -> Result<Option<MessageInfo>, ApiError> {
    let (tx, rx) = oneshot::channel();
    hub.submit_store(StoreJob::Status { id, reply: tx }, false)
        .map_err(ApiError::from_handler)?;
    wait(rx).await
}

/// A user's unacknowledged durable messages.
pub(crate) async fn inbox(
    hub: &HubShared,
    user: &str,
) -> Result<Vec<(InboxMessage, MessageStatus)>, ApiError> {
    let (tx, rx) = oneshot::channel();
    let job = StoreJob::Inbox {
        user: user.into(),
        reply: tx,
    };
    hub.submit_store(job, false)
        .map_err(ApiError::from_handler)?;
    wait(rx).await
}
