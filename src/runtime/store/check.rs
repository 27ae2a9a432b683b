//! The store side of the position check (see `shard::position`): the shards' questions of one
//! batch are read together — every topic once, in one call per Redis instance — and each shard
//! gets the positions it asked for.

use std::collections::HashMap;
use std::sync::Arc;

use super::Sequencer;
use crate::shard::inbox::ShardMsg;

impl Sequencer {
    /// Answers the position checks `(shard, topics)` of one batch. Topics the store could not
    /// read (Redis away) are left out of the answers: checked again next time.
    pub(super) fn check_positions(&mut self, checks: Vec<(usize, Vec<Arc<str>>)>) {
        let mut topics: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (_, ts) in &checks {
            for t in ts {
                index.entry(t).or_insert_with(|| {
                    topics.push(t);
                    topics.len() - 1
                });
            }
        }
        let read = if topics.is_empty() {
            Vec::new()
        } else {
            self.store.positions(&topics)
        };
        if let Some(Err(e)) = read.iter().find(|r| r.is_err()) {
            tracing::debug!(error = %e, "position check: the store did not answer");
        }
        for (shard, ts) in &checks {
            let answer = ts
                .iter()
                .filter_map(|t| {
                    let p = read.get(*index.get(&**t)?)?.as_ref().ok()?;
                    Some((t.clone(), p.epoch.clone(), p.offset))
                })
                .collect();
            if let Some(inbox) = self.hub.inboxes.get(*shard) {
                inbox.push(ShardMsg::Positions(answer));
            }
        }
    }
}
