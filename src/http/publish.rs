//! Endpoints for publications: `POST /api/v1/publish` and `POST /api/v1/history`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::messaging::{history, publish};
use super::response::ApiError;
use crate::shard::shared::HubShared;

#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    topics: Option<Vec<String>>,
    event: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    exclude_client: Option<String>,
}

/// `POST /api/v1/publish`.
pub(crate) async fn publish_endpoint(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
    let p: PublishBody<'_> = serde_json::from_slice(body).map_err(ApiError::bad)?;
    let mut topics = p.topics.unwrap_or_default();
    topics.extend(p.topic);
    let exclude = match p.exclude_client.as_deref() {
        None => None,
        Some(c) => Some(
            hub.parse_client(c)
                .ok_or_else(|| ApiError::bad("`exclude_client` is not a client id of this node"))?,
        ),
    };
    let data = p.data.map(|d| d.get().as_bytes());
    let (delivered, offsets) = publish(hub, &topics, &p.event, data, exclude).await?;
    let mut v = json!({ "delivered": delivered });
    match offsets.as_slice() {
        [] => {}
        [(_, o)] if topics.len() == 1 => v["offset"] = json!(o),
        many => {
            v["offsets"] = many
                .iter()
                .map(|(t, o)| (t.clone(), json!(o)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
    }
    Ok(v)
}

pub(crate) async fn history_endpoint(hub: &HubShared, body: &[u8]) -> Result<Value, ApiError> {
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
    let r = history(hub, &h.topic, h.limit.unwrap_or(50), since).await?;
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
