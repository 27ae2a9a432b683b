//! Scatter-gather across nodes for `GET /api/v1/online`, `/stats` and `/topics`: the asking
//! node computes its own part from its shards while the broker asks every other live node for
//! theirs (at most ~1 s), then the parts are merged; the answer says which nodes answered.
//!
//! A part is plain JSON (the same shape on every node), so a node merges what any version of
//! another node sends without trusting it: malformed fields count as zero.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::QueryKind;
use crate::shard::gather::scatter;
use crate::shard::inbox::{ApiOp, ApiReply};
use crate::shard::shared::HubShared;

/// How long the caller waits for the broker's gathered answers (it bounds its own wait).
const WAIT: Duration = Duration::from_secs(3);

/// This node's part of `kind`, from its shards.
pub(crate) async fn local_part(hub: &HubShared, kind: QueryKind) -> Result<Value, String> {
    match kind {
        QueryKind::Stats => {
            let shards: Vec<_> = hub.stats.iter().map(crate::ShardStats::snapshot).collect();
            let total = shards
                .iter()
                .fold(crate::StatsSnapshot::default(), |a, b| a + *b);
            Ok(json!({"total": total, "shards": shards}))
        }
        QueryKind::Online => {
            let replies = scatter(&hub.inboxes, || ApiOp::Online)
                .await
                .map_err(|_| "shards did not answer".to_string())?;
            let mut users: BTreeMap<Arc<str>, usize> = BTreeMap::new();
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
            Ok(json!({"users": list, "anonymous": anonymous, "connections": total}))
        }
        QueryKind::Topics => {
            let replies = scatter(&hub.inboxes, || ApiOp::Topics)
                .await
                .map_err(|_| "shards did not answer".to_string())?;
            let mut all: BTreeMap<String, usize> = BTreeMap::new();
            for r in replies {
                if let ApiReply::Topics(list) = r {
                    for (p, n) in list {
                        *all.entry(p).or_default() += n;
                    }
                }
            }
            let list: Vec<Value> = all
                .into_iter()
                .map(|(t, n)| json!({"topic": t, "subscribers": n}))
                .collect();
            Ok(json!({ "topics": list }))
        }
    }
}

/// `kind` for the API: this node's part alone, or, in a cluster, every live node's merged,
/// with `"cluster": {"answered": [...], "missing": [...]}` (and `"error"` when Redis could not
/// be asked: then only this node's part).
pub(crate) async fn gather(hub: &HubShared, kind: QueryKind) -> Result<Value, String> {
    // Asked first, so the other nodes work while this one computes its part.
    let remote = hub.cluster.broker.query(kind);
    let own = local_part(hub, kind).await?;
    let Some(rx) = remote else {
        return Ok(own);
    };
    let mut parts = vec![(hub.cluster.node.to_string(), own)];
    let (missing, error) = match tokio::time::timeout(WAIT, rx).await {
        Ok(Ok(Ok(g))) => {
            parts.extend(g.answers);
            (g.missing, None)
        }
        Ok(Ok(Err(e))) => (Vec::new(), Some(e)),
        _ => (
            Vec::new(),
            Some("the cluster thread did not answer".to_string()),
        ),
    };
    let mut v = merge(kind, &parts);
    let answered: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    let mut cluster = json!({"answered": answered, "missing": missing});
    if let Some(e) = error {
        cluster["error"] = json!(format!("cluster: {e}"));
    }
    v["cluster"] = cluster;
    Ok(v)
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Merges every node's part (the first is the asking node's own).
pub(crate) fn merge(kind: QueryKind, parts: &[(String, Value)]) -> Value {
    match kind {
        QueryKind::Online => {
            let mut users: BTreeMap<String, u64> = BTreeMap::new();
            let mut anonymous = 0;
            for (_, p) in parts {
                anonymous += count(&p["anonymous"]);
                for u in p["users"].as_array().into_iter().flatten() {
                    if let Some(name) = u["user"].as_str() {
                        *users.entry(name.to_string()).or_default() += count(&u["connections"]);
                    }
                }
            }
            let total = users.values().sum::<u64>() + anonymous;
            let list: Vec<Value> = users
                .iter()
                .map(|(u, n)| json!({"user": u, "connections": n}))
                .collect();
            json!({"users": list, "anonymous": anonymous, "connections": total})
        }
        QueryKind::Topics => {
            let mut all: BTreeMap<String, u64> = BTreeMap::new();
            for (_, p) in parts {
                for t in p["topics"].as_array().into_iter().flatten() {
                    if let Some(name) = t["topic"].as_str() {
                        *all.entry(name.to_string()).or_default() += count(&t["subscribers"]);
                    }
                }
            }
            let list: Vec<Value> = all
                .into_iter()
                .map(|(t, n)| json!({"topic": t, "subscribers": n}))
                .collect();
            json!({ "topics": list })
        }
        QueryKind::Stats => {
            // `total` sums every node's counters; `shards` stays this node's; `nodes` has each
            // node's total.
            let mut total = Map::new();
            let mut nodes = Vec::new();
            for (node, p) in parts {
                if let Some(t) = p["total"].as_object() {
                    for (k, v) in t {
                        let sum = count(total.get(k).unwrap_or(&Value::Null)) + count(v);
                        total.insert(k.clone(), json!(sum));
                    }
                }
                nodes.push(json!({"node": node, "total": p["total"].clone()}));
            }
            let shards = parts
                .first()
                .map_or(Value::Null, |(_, p)| p["shards"].clone());
            json!({"total": total, "shards": shards, "nodes": nodes})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_parts_add_up_by_user() {
        let parts = vec![
            (
                "a".to_string(),
                json!({"users": [{"user": "ann", "connections": 2}], "anonymous": 1, "connections": 3}),
            ),
            (
                "b".to_string(),
                json!({"users": [{"user": "ann", "connections": 1}, {"user": "bob", "connections": 1}], "anonymous": 0}),
            ),
            // A malformed part counts as nothing rather than failing the answer.
            ("c".to_string(), json!({"users": "nope", "anonymous": -4})),
        ];
        let v = merge(QueryKind::Online, &parts);
        assert_eq!(
            v,
            json!({"users": [{"user": "ann", "connections": 3}, {"user": "bob", "connections": 1}],
                   "anonymous": 1, "connections": 5})
        );
    }

    #[test]
    fn stats_and_topics_sum_over_nodes() {
        let parts = vec![
            (
                "a".to_string(),
                json!({"total": {"connections": 2, "messages_in": 5}, "shards": [1]}),
            ),
            (
                "b".to_string(),
                json!({"total": {"connections": 3, "messages_in": 1}, "shards": [2]}),
            ),
        ];
        let v = merge(QueryKind::Stats, &parts);
        assert_eq!(v["total"], json!({"connections": 5, "messages_in": 6}));
        assert_eq!(v["shards"], json!([1]));
        assert_eq!(v["nodes"][1]["node"], "b");
        let parts = vec![
            (
                "a".to_string(),
                json!({"topics": [{"topic": "x", "subscribers": 1}]}),
            ),
            (
                "b".to_string(),
                json!({"topics": [{"topic": "x", "subscribers": 2}, {"topic": "y", "subscribers": 1}]}),
            ),
        ];
        assert_eq!(
            merge(QueryKind::Topics, &parts),
            json!({"topics": [{"topic": "x", "subscribers": 3}, {"topic": "y", "subscribers": 1}]})
        );
    }
}
