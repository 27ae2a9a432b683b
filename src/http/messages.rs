//! Endpoints for durable messages: `GET /api/v1/messages/M` and `GET /api/v1/inbox?user=U`.

use serde_json::{json, Value};

use super::messaging::{inbox, status};
use super::response::ApiError;
use crate::shard::shared::HubShared;

/// `GET /api/v1/messages/M`.
pub(crate) async fn status_endpoint(hub: &HubShared, id: &str) -> Result<Value, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad("message id must be a number"))?;
    let info = status(hub, id).await?.ok_or_else(|| {
        ApiError::new(
            404,
            "no such message (unknown, or forgotten after the inbox ttl)",
        )
    })?;
    Ok(json!({
        "message_id": info.id,
        "user": &*info.user,
        "offset": info.offset,
        "status": info.status.as_str(),
        "attempts": info.attempts,
    }))
}

/// `GET /api/v1/inbox?user=U`.
pub(crate) async fn inbox_endpoint(
    hub: &HubShared,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let user = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("user="))
        .map(|u| {
            percent_encoding::percent_decode_str(u)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::bad("give ?user=<id>"))?;
    let list = inbox(hub, &user).await?;
    let messages: Vec<Value> = list
        .iter()
        .map(|(m, st)| {
            let data = m
                .data
                .as_deref()
                .and_then(|d| serde_json::from_slice::<Value>(d).ok());
            json!({
                "message_id": m.id,
                "offset": m.offset,
                "event": &*m.event,
                "data": data,
                "attempts": m.attempts,
                "status": st.as_str(),
            })
        })
        .collect();
    Ok(json!({ "messages": messages }))
}
