//! The API thread: HTTP requests for the API, health, readiness and metrics are parsed (and
//! their bodies read) on the shards, then served here on a small tokio runtime, because an API
//! call scatters to every shard and gathers their answers — waiting that must never happen on a
//! shard's loop. The response goes back to the connection's shard, which writes it.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::shard::inbox::ShardMsg;
use crate::shard::shared::{ControlJob, HubShared};

/// Serves jobs until `stop` fires or is dropped (after the shards have exited).
pub(crate) fn run(
    hub: Arc<HubShared>,
    mut jobs: UnboundedReceiver<ControlJob>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "API thread could not start its runtime");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        loop {
            let job = tokio::select! {
                _ = &mut stop => break,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            let hub = hub.clone();
            match job {
                ControlJob::Http(job) => {
                    tokio::task::spawn_local(async move {
                        let resp =
                            crate::http::api::handle(&hub, &job.head, job.body, job.peer).await;
                        // A response started while the server stops closes its connection.
                        let keep = if hub.is_stopping() {
                            crate::shard::shared::KeepAlive::Close
                        } else {
                            job.keep
                        };
                        let shard = job.conn.shard();
                        if let Some(inbox) = hub.inboxes.get(shard) {
                            inbox.push(ShardMsg::HttpResponse(
                                job.conn,
                                bytes::Bytes::from(resp.into_bytes(keep)),
                            ));
                        }
                    });
                }
                ControlJob::Presence {
                    conn,
                    rid,
                    topic,
                    stats,
                } => {
                    tokio::task::spawn_local(async move {
                        let frame =
                            crate::http::messaging::presence_frame(&hub, &topic, rid, stats).await;
                        if let (Some(inbox), Some(frame)) = (hub.inboxes.get(conn.shard()), frame) {
                            inbox.push(ShardMsg::Conn(
                                conn,
                                crate::shard::inbox::Action::Send(frame),
                            ));
                        }
                    });
                }
                ControlJob::Call(f) => {
                    tokio::task::spawn_local(f(hub));
                }
            }
        }
    });
}
