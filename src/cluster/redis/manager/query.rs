//! The cluster thread's side of a scatter-gather query ([`crate::cluster::query`]): the
//! request goes to every node on `<prefix>:ctl` with a per-node id; each node computes its part
//! from its shards and publishes it on `<prefix>:reply:<asking node>`; the asking node waits
//! for the nodes registered in `<prefix>:node:*` (at most [`GATHER`]) and reports who did not
//! answer.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::Manager;
use crate::cluster::redis::{Out, RESPONSE_TIMEOUT};
use crate::cluster::{glob_escape, query, wire, ClusterStats, ControlOp, Gathered, QueryKind};

/// How long the asking node waits for the other nodes' parts.
const GATHER: Duration = Duration::from_secs(1);

/// Where a query's answers go: `(node, its part)`.
type Answers = mpsc::UnboundedSender<(String, Value)>;

/// Open queries of this node: id → where their answers go (shared with the gathering tasks,
/// which remove theirs when done; all on the cluster thread).
#[derive(Default)]
pub(crate) struct Pending {
    next: u64,
    open: Rc<RefCell<HashMap<u64, Answers>>>,
}

/// The channel on which `node` receives the answers to its queries.
pub(crate) fn reply_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:reply:{node}")
}

impl Manager {
    /// Sends a query to every node and gathers their answers on a task.
    pub(super) fn query(&mut self, kind: QueryKind, tx: oneshot::Sender<Result<Gathered, String>>) {
        let conn = self.insts[0].link.borrow().conn.clone();
        let Some(mut conn) = conn.filter(|_| self.shared.up[0].load(Ordering::Relaxed)) else {
            let _ = tx.send(Err("Redis unreachable".into()));
            return;
        };
        self.queries.next += 1;
        let id = self.queries.next;
        let (atx, mut arx) = mpsc::unbounded_channel();
        self.queries.open.borrow_mut().insert(id, atx);
        self.send_control(&ControlOp::Query {
            id,
            from: self.setup.node.to_string(),
            kind,
        });
        let open = self.queries.open.clone();
        let me = self.setup.node.to_string();
        let pattern = format!("{}:node:*", glob_escape(&self.setup.prefix));
        let strip = format!("{}:node:", self.setup.prefix);
        tokio::task::spawn_local(async move {
            let deadline = tokio::time::Instant::now() + GATHER;
            let live =
                tokio::time::timeout(RESPONSE_TIMEOUT, live_nodes(&mut conn, &pattern)).await;
            let expected: HashSet<String> = match live {
                Ok(Ok(keys)) => keys
                    .iter()
                    .filter_map(|k| k.strip_prefix(&strip))
                    .filter(|n| *n != me)
                    .map(String::from)
                    .collect(),
                _ => HashSet::new(),
            };
            let mut answers: Vec<(String, Value)> = Vec::new();
            while !expected.iter().all(|n| answers.iter().any(|(a, _)| a == n)) {
                match tokio::time::timeout_at(deadline, arx.recv()).await {
                    Ok(Some((node, data))) => {
                        if !answers.iter().any(|(a, _)| *a == node) {
                            answers.push((node, data));
                        }
                    }
                    _ => break,
                }
            }
            open.borrow_mut().remove(&id);
            let mut missing: Vec<String> = expected
                .into_iter()
                .filter(|n| !answers.iter().any(|(a, _)| a == n))
                .collect();
            missing.sort();
            answers.sort_by(|a, b| a.0.cmp(&b.0));
            let _ = tx.send(Ok(Gathered { answers, missing }));
        });
    }

    /// Another node's query (answered with this node's part) or an answer to one of ours.
    pub(super) fn query_message(&mut self, op: ControlOp) {
        match op {
            ControlOp::Query { id, from, kind } => {
                self.ctl_seq += 1;
                let seq = self.ctl_seq;
                let (hub, node, out) = (
                    self.hub.clone(),
                    self.setup.node.clone(),
                    self.out[0].clone(),
                );
                let channel = reply_channel(&self.setup.prefix, &from);
                let shared = self.shared.clone();
                tokio::task::spawn_local(async move {
                    let Ok(data) = query::local_part(&hub, kind).await else {
                        return;
                    };
                    let answer = ControlOp::Answer {
                        id,
                        node: node.to_string(),
                        data,
                    };
                    let Ok(json) = serde_json::to_vec(&answer) else {
                        return;
                    };
                    let payload = wire::control(&node, seq, &json);
                    if out.try_send(Out::Reply { channel, payload }).is_ok() {
                        ClusterStats::add(&shared.stats.control_sent, 1);
                    }
                });
            }
            ControlOp::Answer { id, node, data } => {
                if let Some(tx) = self.queries.open.borrow().get(&id) {
                    let _ = tx.send((node, data));
                }
            }
            _ => {}
        }
    }
}

/// The registration keys of the live nodes (`SCAN`).
async fn live_nodes(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 || keys.len() > 10_000 {
            return Ok(keys);
        }
    }
}
