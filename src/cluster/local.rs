//! The single-node broker: nothing crosses a process boundary.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::{Broker, ClusterStats, ControlOp, Gathered, QueryKind, Reply};
use crate::proto::error::ServerError;
use crate::shard::shared::HubShared;

/// One node alone: today's behaviour. Every method is a no-op, and the shards do not even call
/// them (`clustered()` is false).
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn clustered(&self) -> bool {
        false
    }
    fn start(&self, _hub: Arc<HubShared>) -> Result<(), ServerError> {
        Ok(())
    }
    fn publish(&self, _frames: &[(Arc<str>, Bytes)]) {}
    fn interest(&self, _p: &Arc<str>, _shard: usize, _add: bool, _ack: Option<u64>) -> bool {
        false
    }
    fn control(&self, _op: ControlOp) {}
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
    fn nodes(&self) -> Option<tokio::sync::oneshot::Receiver<Result<Vec<Value>, String>>> {
        None
    }
    fn stats(&self) -> Option<&ClusterStats> {
        None
    }
    fn presence_change(&self, _topic: &str, _client: String, _entry: Option<String>) {}
    fn presence(&self, _topic: &str) -> Option<Reply<Vec<String>>> {
        None
    }
    fn query(&self, _kind: QueryKind) -> Option<Reply<Gathered>> {
        None
    }
    fn stop(&self) {}
}
