//! Cluster-wide webhook transitions (see
//! [`Store::webhook_transition`](crate::store::Store::webhook_transition)), and the clean-up of
//! a node that died without removing what it held.
//!
//! On the key's instance (`cluster::instance_for(key, n)`):
//! - `P:whn:<key>` — the set of nodes that have `key` (`topic:<t>` or `user:<u>`);
//! - `P:whk:<node>` — the index: the keys of this instance that `node` has. A node killed
//!   with `kill -9` (or cut off for good) never removes its entries; the index is how a live
//!   node finds them ([`Store::webhook_orphans`](crate::store::Store::webhook_orphans)) and
//!   removes them ([`Store::webhook_reap`](crate::store::Store::webhook_reap)) through the same
//!   script as a regular removal, so each vacated / offline transition is still reported once.

use super::{RedisStore, StoreError};

/// `KEYS[1]` the set of nodes having a key, `KEYS[2]` the node's index on this instance;
/// `ARGV[1]` the node, `ARGV[2]` `1` (has it) or `0`, `ARGV[3]` the key, `ARGV[4]` `1` for a
/// retry: 1 when this change was the cluster-wide transition (the first node added, the last
/// removed). A retry that finds the node already as asked (the failed call ran, its answer was
/// lost) answers whether the set is as that call left it if it was the transition (the node
/// alone; empty).
const TRANSITION: &str = r"
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[2], ARGV[3])
  if redis.call('SADD', KEYS[1], ARGV[1]) == 0 and ARGV[4] ~= '1' then return 0 end
  if redis.call('SCARD', KEYS[1]) == 1 then return 1 end
  return 0
end
redis.call('SREM', KEYS[2], ARGV[3])
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 and ARGV[4] ~= '1' then return 0 end
if redis.call('SCARD', KEYS[1]) == 0 then return 1 end
return 0
";

/// At most this many index keys are looked at per instance in one orphan scan.
const SCAN_MAX: usize = 10_000;

impl RedisStore {
    /// See [`Store::webhook_transition`](crate::store::Store::webhook_transition): the set
    /// `P:whn:<key>` of nodes having `key`, on the key's instance, changed in one script
    /// (`retry`: see [`Store::webhook_transition_retry`](crate::store::Store::webhook_transition_retry)).
    pub(super) fn transition_inner(
        &mut self,
        key: &str,
        node: &str,
        on: bool,
        retry: bool,
    ) -> Result<bool, StoreError> {
        let k = crate::proto::wire::instance_for(key, self.inst.len());
        let r: i64 = self.inst[k].query(
            ::redis::cmd("EVAL")
                .arg(TRANSITION)
                .arg(2)
                .arg(format!("{}:whn:{key}", self.prefix))
                .arg(format!("{}:whk:{node}", self.prefix))
                .arg(node)
                .arg(if on { "1" } else { "0" })
                .arg(key)
                .arg(if retry { "1" } else { "0" }),
        )?;
        Ok(r == 1)
    }

    /// See [`Store::webhook_orphans`](crate::store::Store::webhook_orphans): the nodes with an
    /// index on any instance, and whether their registration (`P:node:<name>`, on the first
    /// instance, refreshed by every live node) exists.
    pub(super) fn orphans_inner(&mut self) -> Result<Vec<(String, bool)>, StoreError> {
        let pattern = format!("{}:whk:*", crate::proto::wire::glob_escape(&self.prefix));
        let strip = format!("{}:whk:", self.prefix);
        let mut nodes: Vec<String> = Vec::new();
        for i in 0..self.inst.len() {
            let mut cursor: u64 = 0;
            let mut seen = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = self.inst[i].query(
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(200),
                )?;
                seen += batch.len();
                nodes.extend(
                    batch
                        .iter()
                        .filter_map(|k| k.strip_prefix(&strip))
                        .map(str::to_string),
                );
                cursor = next;
                if cursor == 0 || seen > SCAN_MAX {
                    break;
                }
            }
        }
        nodes.sort();
        nodes.dedup();
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let registered: bool = self.inst[0]
                .query(::redis::cmd("EXISTS").arg(format!("{}:node:{n}", self.prefix)))?;
            out.push((n, registered));
        }
        Ok(out)
    }

    /// See [`Store::webhook_reap`](crate::store::Store::webhook_reap): every key of `node`'s
    /// indexes removed through the transition script; the ones it was the last holder of.
    pub(super) fn reap_inner(&mut self, node: &str) -> Result<Vec<String>, StoreError> {
        let index = format!("{}:whk:{node}", self.prefix);
        let mut vacated = Vec::new();
        for i in 0..self.inst.len() {
            let keys: Vec<String> = self.inst[i].query(::redis::cmd("SMEMBERS").arg(&index))?;
            for key in keys {
                if self.transition_inner(&key, node, false, false)? {
                    vacated.push(key);
                }
            }
        }
        Ok(vacated)
    }
}
