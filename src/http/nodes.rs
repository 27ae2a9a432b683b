//! Endpoints about this node and the cluster: `GET /api/v1/online`, `/stats`, `/topics`,
//! `/nodes`.

use std::time::Duration;

use serde_json::{json, Value};

use super::response::ApiError;
use crate::cluster::QueryKind;
use crate::shard::shared::HubShared;

/// `GET /api/v1/online`, `/stats`, `/topics`: this node's shards, or every live node of the
/// cluster (see `cluster::query`).
pub(crate) async fn gathered(hub: &HubShared, kind: QueryKind) -> Result<Value, ApiError> {
    crate::cluster::query::gather(hub, kind)
        .await
        .map_err(|e| ApiError::new(503, e))
}

/// `GET /api/v1/nodes`: the live nodes of the cluster (their registrations in Redis), or this
/// node alone.
pub(crate) async fn nodes(hub: &HubShared) -> Result<Value, ApiError> {
    let Some(rx) = hub.cluster.broker.nodes() else {
        let connections: i64 = hub
            .stats
            .iter()
            .map(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        return Ok(json!({"nodes": [{
            "node": &*hub.cluster.node,
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
