//! The cluster thread's inbound side and bookkeeping: messages from the subscriber
//! connections (publications to the shards, other nodes' API operations), control operations
//! sent, and the node's registration (`<prefix>:node:<name>`, `GET /api/v1/nodes`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::oneshot;

use bytes::{Buf, Bytes};

use super::Manager;
use crate::cluster::redis::recv::Note;
use crate::cluster::redis::redact;
use crate::cluster::redis::{Out, RESPONSE_TIMEOUT};
use crate::cluster::wire;
use crate::cluster::{glob_escape, ClusterStats, ControlOp};
use crate::proto::envelope;
use crate::proto::pattern::{validate_topic, Pattern};
use crate::shard::inbox::{ApiOp, SendReq, ShardMsg, Target};

impl Manager {
    /// One read of instance `i`'s subscriber connection: publications to the shards (one push
    /// per shard), then confirmations, refusals and control operations in order. Bytes that
    /// are not what Redis sends end the connection (it is opened again, and every
    /// subscription restored).
    pub(super) fn data(&mut self, i: usize, gen: u64, data: Bytes) {
        if self.insts[i].link.borrow().gen != gen {
            return;
        }
        let inst = &mut self.insts[i];
        let fed = if inst.partial.is_empty() {
            self.fanin.feed(&data, &self.interest).map(|n| {
                if n < data.len() {
                    inst.partial.extend_from_slice(&data[n..]);
                }
            })
        } else {
            inst.partial.extend_from_slice(&data);
            let r = self.fanin.feed(&inst.partial, &self.interest);
            r.map(|n| inst.partial.advance(n))
        };
        self.fanin.flush(&self.hub.inboxes, &self.shared.stats);
        let mut broken = fed.err().map(|e| {
            tracing::warn!(url = %redact(&self.setup.urls[i]), error = %e, "cluster: unreadable data on the Redis subscriber connection; reconnecting");
            format!("unreadable data from Redis ({e})")
        });
        for note in std::mem::take(&mut self.fanin.notes) {
            match note {
                Note::Confirmed => {
                    let done = self.insts[i].waiting.pop_front().and_then(|w| w.done);
                    if let Some((key, sgen)) = done {
                        self.sub_done(key, sgen);
                    }
                }
                Note::Refused(e) => {
                    // Refused (e.g. `LOADING` right after a restart, or an ACL): the connection
                    // would live on without the channel, so its subscribers would get nothing
                    // until the next reconnect. Reconnect now; `up` subscribes everything again.
                    let w = self.insts[i].waiting.pop_front();
                    let name = w.as_ref().map_or("", |w| w.name.as_str());
                    ClusterStats::add(&self.shared.stats.redis_errors, 1);
                    tracing::warn!(channel = %name, error = %e, "cluster: Redis refused a command on the subscriber connection; reconnecting");
                    broken.get_or_insert_with(|| format!("subscribe to {name} refused: {e}"));
                    if let Some((key, sgen)) = w.and_then(|w| w.done) {
                        self.sub_done(key, sgen);
                    }
                }
                Note::Control(json) => self.control_message(&json),
            }
        }
        if let Some(why) = broken {
            self.down(i, gen, &why);
        }
    }

    /// A control operation from another node (already de-duplicated by the [`Fanin`]).
    ///
    /// [`Fanin`]: crate::cluster::redis::recv::Fanin
    pub(super) fn control_message(&mut self, json: &[u8]) {
        ClusterStats::add(&self.shared.stats.control_received, 1);
        match serde_json::from_slice::<ControlOp>(json) {
            Ok(op @ (ControlOp::Query { .. } | ControlOp::Answer { .. })) => self.query_message(op),
            Ok(op) => self.apply(op),
            Err(e) => tracing::debug!(error = %e, "cluster: malformed control operation"),
        }
    }

    /// Applies another node's API operation on every local shard.
    fn apply(&self, op: ControlOp) {
        let api = match op {
            ControlOp::Send {
                users,
                topic,
                event,
                data,
            } => {
                if topic.as_deref().is_some_and(|t| validate_topic(t).is_err()) {
                    return;
                }
                let req = Arc::new(SendReq {
                    users,
                    topic,
                    event,
                    data,
                });
                Box::new(move || ApiOp::Send(req.clone())) as Box<dyn Fn() -> ApiOp>
            }
            ControlOp::Broadcast { topic, event, data } => {
                if validate_topic(&topic).is_err() {
                    return;
                }
                let frame = envelope::publication(
                    &topic,
                    &event,
                    data.as_deref().map(|d| d.get().as_bytes()),
                );
                Box::new(move || ApiOp::Broadcast(frame.clone()))
            }
            ControlOp::Disconnect { user } => {
                let user: Arc<str> = user.into();
                Box::new(move || ApiOp::Disconnect(user.clone()))
            }
            ControlOp::Subscription {
                user,
                client,
                topic,
                add,
            } => {
                if Pattern::parse(&topic).is_err() {
                    return;
                }
                let target = match (user, client) {
                    (Some(u), None) => Target::User(u.into()),
                    (None, Some(c)) => match self.hub.parse_client(&c) {
                        Some(id) => Target::Client(id),
                        None => return,
                    },
                    _ => return,
                };
                let topic: Arc<str> = topic.into();
                Box::new(move || ApiOp::Subscription {
                    target: target.clone(),
                    topic: topic.clone(),
                    add,
                })
            }
            ControlOp::Durable {
                user,
                offset,
                topic,
                event,
                data,
                epoch,
            } => {
                let topic = topic.unwrap_or_else(|| format!("user:{user}"));
                if validate_topic(&topic).is_err() {
                    return;
                }
                let data = data.as_deref().map(|d| d.get().as_bytes());
                let frame = envelope::durable(&topic, &event, data, offset, &epoch);
                let user: Arc<str> = user.into();
                Box::new(move || ApiOp::Durable {
                    user: user.clone(),
                    offset,
                    frame: frame.clone(),
                })
            }
            ControlOp::InboxGone { gone } => {
                let gone: Arc<[(Arc<str>, u64)]> =
                    gone.into_iter().map(|(u, o)| (u.into(), o)).collect();
                for inbox in self.hub.inboxes.iter() {
                    inbox.push(ShardMsg::InboxGone(gone.clone()));
                }
                return;
            }
            ControlOp::InboxResync {} => {
                for inbox in self.hub.inboxes.iter() {
                    inbox.push(ShardMsg::ResyncInboxes);
                }
                return;
            }
            // Handled by `query_message`.
            ControlOp::Query { .. } | ControlOp::Answer { .. } => return,
        };
        for inbox in self.hub.inboxes.iter() {
            let (tx, _) = oneshot::channel();
            inbox.push(ShardMsg::Api(api(), tx));
        }
    }

    pub(super) fn send_control(&mut self, op: &ControlOp) {
        let Ok(json) = serde_json::to_vec(op) else {
            return;
        };
        self.ctl_seq += 1;
        let payload = wire::control(&self.setup.node, self.ctl_seq, &json);
        if self.shared.up[0].load(Ordering::Relaxed)
            && self.out[0].try_send(Out::Control(payload)).is_ok()
        {
            ClusterStats::add(&self.shared.stats.control_sent, 1);
        } else {
            tracing::warn!("cluster: Redis unreachable; an API operation reached this node only");
        }
    }

    /// Refreshes `<prefix>:node:<name>`. Before writing, reads what is there: another process's
    /// token on a refresh (not the first write, which may find a crashed predecessor's) means
    /// two live nodes share the name — logged and counted (`duplicate_names`), since each would
    /// skip the other's publications as its own.
    pub(super) fn register(&mut self) {
        if !self.shared.up[0].load(Ordering::Relaxed) {
            return;
        }
        let connections: i64 = self
            .hub
            .stats
            .iter()
            .map(|s| s.connections.load(Ordering::Relaxed))
            .sum();
        let value = json!({
            "node": &*self.setup.node,
            "connections": connections,
            "shards": self.hub.shards,
            "started": self.started_unix,
            "version": env!("CARGO_PKG_VERSION"),
            "instance": &self.instance,
        })
        .to_string();
        self.registrations += 1;
        let check = self.registrations > 1;
        let key = self.node_key();
        let out = self.out[0].clone();
        let conn = self.insts[0].link.borrow().conn.clone();
        let (shared, node, instance) = (
            self.shared.clone(),
            self.setup.node.clone(),
            self.instance.clone(),
        );
        tokio::task::spawn_local(async move {
            if let (true, Some(mut c)) = (check, conn) {
                let mut get = redis::cmd("GET");
                get.arg(&key);
                let found = tokio::time::timeout(
                    RESPONSE_TIMEOUT,
                    get.query_async::<Option<String>>(&mut c),
                )
                .await;
                if let Ok(Ok(Some(v))) = found {
                    let other = serde_json::from_str::<Value>(&v)
                        .ok()
                        .and_then(|j| j["instance"].as_str().map(str::to_string));
                    if other.is_some_and(|o| o != instance) {
                        ClusterStats::add(&shared.stats.duplicate_names, 1);
                        tracing::error!(
                            node = &*node,
                            "another live node uses this node name: give every node its own \
                             `node` (each skips the other's publications as its own)"
                        );
                    }
                }
            }
            let _ = out.try_send(Out::Register { key, value });
        });
    }

    pub(super) async fn unregister(&self) {
        let conn = self.insts[0].link.borrow().conn.clone();
        if let Some(mut c) = conn {
            let mut del = redis::cmd("DEL");
            del.arg(self.node_key());
            let _ = tokio::time::timeout(Duration::from_millis(500), del.query_async::<()>(&mut c))
                .await;
        }
    }

    /// Lists the registrations (`SCAN` + `MGET` on the first instance).
    pub(super) fn nodes(&self, tx: oneshot::Sender<Result<Vec<Value>, String>>) {
        let conn = self.insts[0].link.borrow().conn.clone();
        let Some(mut c) = conn else {
            let _ = tx.send(Err("Redis unreachable".into()));
            return;
        };
        let pattern = format!("{}:node:*", glob_escape(&self.setup.prefix));
        tokio::task::spawn_local(async move {
            let list = async {
                let mut keys: Vec<String> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(200)
                        .query_async(&mut c)
                        .await?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 || keys.len() > 10_000 {
                        break;
                    }
                }
                if keys.is_empty() {
                    return Ok(Vec::new());
                }
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                Ok::<_, redis::RedisError>(values)
            };
            let r = match tokio::time::timeout(RESPONSE_TIMEOUT, list).await {
                Ok(Ok(values)) => {
                    let mut v: Vec<Value> = values
                        .into_iter()
                        .flatten()
                        .filter_map(|s| serde_json::from_str(&s).ok())
                        .collect();
                    v.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
                    Ok(v)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("Redis did not answer in time".into()),
            };
            let _ = tx.send(r);
        });
    }
}
