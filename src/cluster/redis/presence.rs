//! Cluster-wide presence, as Centrifugo's Redis engine keeps it: per topic with
//! `presence = true`, a hash `<prefix>:p:<topic>` (client id → the entry's JSON) and a sorted
//! set `<prefix>:px:<topic>` (client id → expiry, Unix milliseconds), on the instance that owns
//! the topic.
//!
//! The shards queue their connections' joins and leaves to the cluster thread
//! ([`Cmd::Presence`](super::Cmd)); it keeps the node's own entries and hands the writes to the
//! instance's publisher queue, which sends everything queued at a wake-up as one pipeline.
//! Every third of the TTL (and after a reconnect) the node writes all its entries again with a
//! new expiry, so the entries of a node that died without a word expire within the TTL. A read
//! is one Lua script that first drops the expired members, then returns the hash's values; it
//! goes through the same queue, behind the writes queued before it, so a client that subscribed
//! sees itself.
//!
//! Expiry scores come from each node's clock: the nodes' clocks are assumed synchronised (NTP)
//! to well under the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;

use super::RESPONSE_TIMEOUT;

/// Entries written in one command at most (a refresh of a large topic is split).
pub(super) const CHUNK: usize = 1000;

/// Drops the members whose expiry (`ZSCORE`) is at or before `ARGV[1]` from the hash and the
/// set, then returns the hash's values. `unpack` is bounded by Lua's stack: 1000 at a time.
const READ: &str = r"
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', ARGV[1])
for i = 1, #expired, 1000 do
  local chunk = {unpack(expired, i, math.min(i + 999, #expired))}
  redis.call('hdel', KEYS[1], unpack(chunk))
  redis.call('zrem', KEYS[2], unpack(chunk))
end
return redis.call('hvals', KEYS[1])
";

/// Presence entries (JSON texts) of a topic, or why they cannot be read.
pub(crate) type Entries = Result<Vec<String>, String>;

/// A presence write for a publisher's pipeline.
pub(crate) enum Write {
    /// Sets (or refreshes) entries `(client, entry)` with expiry `expire_at` (Unix ms).
    Add {
        topic: Arc<str>,
        entries: Vec<(String, String)>,
        expire_at: u64,
        ttl_ms: u64,
    },
    /// Removes clients.
    Remove {
        topic: Arc<str>,
        clients: Vec<String>,
    },
}

/// This node's entries, by topic then client.
#[derive(Default)]
pub(crate) struct Tracker {
    pub(super) entries: HashMap<Arc<str>, HashMap<String, String>>,
}

/// The hash of a topic's entries.
pub(crate) fn hash_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}:p:{topic}")
}

/// The sorted set of a topic's expiries.
pub(crate) fn expiry_key(prefix: &str, topic: &str) -> String {
    format!("{prefix}:px:{topic}")
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Adds `w`'s commands to `pipe`; returns how many.
pub(crate) fn write(pipe: &mut redis::Pipeline, prefix: &str, w: Write) -> u64 {
    match w {
        Write::Add {
            topic,
            entries,
            expire_at,
            ttl_ms,
        } => {
            if entries.is_empty() {
                return 0;
            }
            let (h, z) = (hash_key(prefix, &topic), expiry_key(prefix, &topic));
            let hset = pipe.cmd("HSET").arg(&h);
            for (c, e) in &entries {
                hset.arg(c).arg(e);
            }
            hset.ignore();
            let zadd = pipe.cmd("ZADD").arg(&z);
            for (c, _) in &entries {
                zadd.arg(expire_at).arg(c);
            }
            zadd.ignore();
            // The keys outlive every entry's expiry: a topic whose nodes all died is gone too.
            pipe.cmd("PEXPIRE").arg(&h).arg(ttl_ms).ignore();
            pipe.cmd("PEXPIRE").arg(&z).arg(ttl_ms).ignore();
            4
        }
        Write::Remove { topic, clients } => {
            if clients.is_empty() {
                return 0;
            }
            pipe.cmd("HDEL")
                .arg(hash_key(prefix, &topic))
                .arg(&clients)
                .ignore();
            pipe.cmd("ZREM")
                .arg(expiry_key(prefix, &topic))
                .arg(&clients)
                .ignore();
            2
        }
    }
}

/// Runs the read script for each of `reads` on `conn` (after the pipeline that preceded them
/// in the queue completed, so their writes are visible).
pub(crate) fn spawn_reads(
    conn: Option<MultiplexedConnection>,
    prefix: &str,
    reads: Vec<(Arc<str>, oneshot::Sender<Entries>)>,
) {
    for (topic, tx) in reads {
        let Some(mut conn) = conn.clone() else {
            let _ = tx.send(Err("Redis unreachable".into()));
            continue;
        };
        let (h, z) = (hash_key(prefix, &topic), expiry_key(prefix, &topic));
        tokio::task::spawn_local(async move {
            let mut eval = redis::cmd("EVAL");
            eval.arg(READ).arg(2).arg(h).arg(z).arg(now_ms());
            let r = tokio::time::timeout(
                RESPONSE_TIMEOUT,
                eval.query_async::<Vec<Vec<u8>>>(&mut conn),
            )
            .await;
            let _ = tx.send(match r {
                // Values that are not UTF-8 are not entries this code wrote: skipped.
                Ok(Ok(values)) => Ok(values
                    .into_iter()
                    .filter_map(|v| String::from_utf8(v).ok())
                    .collect()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("Redis did not answer in time".into()),
            });
        });
    }
}
