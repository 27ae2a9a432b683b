//! Scatter-gather over the shards: one operation queued to every shard's inbox, every answer
//! awaited. Used by the HTTP API and by the cluster's queries alike (both sit above the shard).

use std::time::Duration;

use tokio::sync::oneshot;

use super::inbox::{ApiOp, ApiReply, Inbox, ShardMsg};

/// How long the shards get to answer (a shard answers between two loop iterations).
const DEADLINE: Duration = Duration::from_secs(5);

/// Sends `make()` to every shard and collects the answers in shard order. `Err` names why one
/// is missing: a shard that stopped, or none answering within five seconds.
pub(crate) async fn scatter(
    inboxes: &[Inbox],
    mut make: impl FnMut() -> ApiOp,
) -> Result<Vec<ApiReply>, &'static str> {
    let mut waiting = Vec::with_capacity(inboxes.len());
    for inbox in inboxes {
        let (tx, rx) = oneshot::channel();
        inbox.push(ShardMsg::Api(make(), tx));
        waiting.push(rx);
    }
    let gather = async {
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(rx.await.map_err(|_| "a shard is not answering")?);
        }
        Ok(out)
    };
    tokio::time::timeout(DEADLINE, gather)
        .await
        .unwrap_or(Err("shards did not answer in time"))
}
