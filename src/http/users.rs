//! Endpoints that reach connections by user or client: `send` (plain or durable),
//! `broadcast`, `disconnect`, server-side `subscribe`/`unsubscribe`, `presence`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::messaging::{self, subscription};
use super::response::ApiError;
use crate::cluster::ControlOp;
use crate::proto::envelope;
use crate::proto::pattern::validate_topic;
use crate::shard::gather::scatter;
use crate::shard::inbox::{ApiOp, ApiReply, SendReq, Target};
use crate::shard::shared::HubShared;

pub(crate) fn count(replies: Result<Vec<ApiReply>, &str>, field: &str) -> Result<Value, ApiError> {
    match replies {
        Err(why) => Err(ApiError::new(503, format!("shards did not answer: {why}"))),
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

pub(crate) async fn send(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
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
    if hub.cluster.clustered {
        hub.cluster.broker.control(ControlOp::Send {
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
    count(
        scatter(&hub.inboxes, || ApiOp::Send(req.clone())).await,
        "delivered",
    )
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

pub(crate) async fn broadcast(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
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
    if hub.cluster.clustered {
        hub.cluster.broker.control(ControlOp::Broadcast {
            topic: topic.to_string(),
            event: b.event.to_string(),
            data: b.data.map(RawValue::to_owned),
        });
    }
    count(
        scatter(&hub.inboxes, || ApiOp::Broadcast(frame.clone())).await,
        "delivered",
    )
}

pub(crate) async fn disconnect(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct D {
        user: String,
    }
    let d: D = serde_json::from_slice(body).map_err(ApiError::bad)?;
    if hub.cluster.clustered {
        hub.cluster.broker.control(ControlOp::Disconnect {
            user: d.user.clone(),
        });
    }
    let user: Arc<str> = d.user.into();
    count(
        scatter(&hub.inboxes, || ApiOp::Disconnect(user.clone())).await,
        "disconnected",
    )
}

#[derive(Deserialize)]
struct TargetBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    client: Option<String>,
    topic: String,
}

/// `POST /api/v1/subscribe` and `/unsubscribe`.
pub(crate) async fn subscription_endpoint(
    hub: &HubShared,
    body: &[u8],
    add: bool,
) -> Result<Value, ApiError> {
    let b: TargetBody = serde_json::from_slice(body).map_err(ApiError::bad)?;
    let target = match (b.user, b.client) {
        (Some(u), None) => Target::User(u.into()),
        (None, Some(c)) => match hub.parse_client(&c) {
            Some(id) => Target::Client(id),
            // Another node's client: that node applies it (the count stays this node's: 0).
            None if hub.cluster.clustered && c.split_once('.').is_some() => {
                crate::proto::pattern::Pattern::parse(&b.topic).map_err(ApiError::bad)?;
                hub.cluster
                    .broker
                    .control(crate::cluster::ControlOp::Subscription {
                        user: None,
                        client: Some(c),
                        topic: b.topic.clone(),
                        add,
                    });
                let field = if add { "subscribed" } else { "unsubscribed" };
                return Ok(json!({ field: 0 }));
            }
            None => return Err(ApiError::bad("`client` is not a client id of this node")),
        },
        _ => return Err(ApiError::bad("give exactly one of `user` and `client`")),
    };
    let (n, refused) = subscription(hub, target, &b.topic, add).await?;
    Ok(if add && !refused.is_empty() {
        // Say why a connection was not subscribed (its subscription limit, say).
        let refused: Vec<Value> = refused
            .into_iter()
            .map(|(client, reason)| json!({"client": client, "error": reason}))
            .collect();
        json!({ "subscribed": n, "refused": refused })
    } else if add {
        json!({ "subscribed": n })
    } else {
        json!({ "unsubscribed": n })
    })
}

/// `POST /api/v1/presence`: the clients in a topic's presence.
pub(crate) async fn presence_endpoint(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
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
