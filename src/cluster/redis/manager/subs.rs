//! The manager's Redis subscriptions: which instances a pattern is subscribed on, the
//! (P)SUBSCRIBE commands and their confirmations, and the shards' interest acknowledged once
//! every instance answered.

use std::sync::Arc;

use super::{Manager, RESYNC_KEY};
use crate::cluster::redis::{Ev, RESPONSE_TIMEOUT};
use crate::cluster::{glob_escape, instance_for, topic_channel};
use crate::proto::pattern::Pattern;
use crate::shard::inbox::ShardMsg;

/// One pattern the node is subscribed to in Redis.
pub(super) struct Sub {
    /// Local shards with subscribers.
    pub(super) mask: u64,
    /// Identifies this subscription's confirmations (a pattern dropped and taken again gets a
    /// new one).
    pub(super) sgen: u64,
    /// Subscribe confirmations still awaited.
    pub(super) pending: u32,
    /// Shards' interest tokens acknowledged once `pending` is 0.
    pub(super) waiters: Vec<(usize, u64)>,
}

/// A subscription command awaiting its answer.
pub(super) struct Waiting {
    /// Identifies it for its timeout.
    pub(super) id: u64,
    /// Given to `sub_done` once answered (or timed out, or the connection lost).
    pub(super) done: Option<(Arc<str>, u64)>,
    /// The channel or pattern, for logs.
    pub(super) name: String,
}

impl Manager {
    /// A subscription of `key` was confirmed (or given up on): its shards' interest changes
    /// are acknowledged once every instance it needs answered.
    pub(super) fn sub_done(&mut self, key: Arc<str>, sgen: u64) {
        if &*key == RESYNC_KEY {
            return self.resync_inboxes();
        }
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        if sub.sgen != sgen {
            return;
        }
        sub.pending = sub.pending.saturating_sub(1);
        if sub.pending == 0 {
            let waiters = std::mem::take(&mut sub.waiters);
            self.ack_all(waiters);
        }
    }

    /// The instances a pattern is subscribed on: every one for a wildcard, the owner for a
    /// topic.
    pub(super) fn targets(&self, key: &str) -> Vec<usize> {
        if key.ends_with('*') {
            (0..self.n()).collect()
        } else {
            vec![instance_for(key, self.n())]
        }
    }

    /// The Redis channel (exact topic) or glob (wildcard) of a pattern.
    fn redis_name(&self, key: &str) -> (String, bool) {
        match key.strip_suffix('*') {
            Some(prefix) => (
                format!(
                    "{}*",
                    glob_escape(&topic_channel(&self.setup.prefix, prefix))
                ),
                true,
            ),
            None => (topic_channel(&self.setup.prefix, key), false),
        }
    }

    /// Subscribes (`add`) or unsubscribes `key` on instance `i`; with `sgen`, reports the
    /// confirmation to `sub_done`. False when the instance is down.
    pub(super) fn issue(&mut self, i: usize, key: &Arc<str>, add: bool, sgen: Option<u64>) -> bool {
        let (name, glob) = self.redis_name(key);
        if add {
            let done = sgen.map(|s| (key.clone(), s));
            self.spawn_subscribe(i, name, glob, done)
        } else {
            let cmd = if glob { "PUNSUBSCRIBE" } else { "UNSUBSCRIBE" };
            self.send_sub(i, cmd, name, None)
        }
    }

    /// Writes a subscription command for `name` on instance `i`'s subscriber connection and
    /// waits for its answer (`done` goes to `sub_done`); false when it is down.
    fn send_sub(
        &mut self,
        i: usize,
        cmd: &str,
        name: String,
        done: Option<(Arc<str>, u64)>,
    ) -> bool {
        let inst = &mut self.insts[i];
        let Some(tx) = &inst.sub else {
            return false;
        };
        if tx
            .send(redis::cmd(cmd).arg(&name).get_packed_command())
            .is_err()
        {
            return false;
        }
        self.next_wait += 1;
        let id = self.next_wait;
        inst.waiting.push_back(Waiting { id, done, name });
        let (ev, gen) = (self.ev.clone(), inst.link.borrow().gen);
        tokio::task::spawn_local(async move {
            tokio::time::sleep(RESPONSE_TIMEOUT).await;
            let _ = ev.send(Ev::SubTimeout { i, gen, id });
        });
        true
    }

    pub(super) fn spawn_subscribe(
        &mut self,
        i: usize,
        name: String,
        glob: bool,
        done: Option<(Arc<str>, u64)>,
    ) -> bool {
        let cmd = if glob { "PSUBSCRIBE" } else { "SUBSCRIBE" };
        self.send_sub(i, cmd, name, done)
    }

    fn ack_all(&self, waiters: Vec<(usize, u64)>) {
        for (shard, token) in waiters {
            if let Some(inbox) = self.hub.inboxes.get(shard) {
                inbox.push(ShardMsg::InterestAck(token));
            }
        }
    }

    pub(super) fn interest_change(
        &mut self,
        pattern: Arc<str>,
        shard: usize,
        add: bool,
        ack: Option<u64>,
    ) {
        let bit = 1u64 << shard.min(63);
        let Ok(p) = Pattern::parse(&pattern) else {
            self.ack_all(ack.map(|t| (shard, t)).into_iter().collect());
            return;
        };
        if add {
            self.interest.add(p, shard);
            let next = &mut self.next_sgen;
            let sub = self.subs.entry(pattern.clone()).or_insert_with(|| {
                *next += 1;
                Sub {
                    mask: 0,
                    sgen: *next,
                    pending: 0,
                    waiters: Vec::new(),
                }
            });
            let fresh = sub.mask == 0;
            sub.mask |= bit;
            sub.waiters.extend(ack.map(|t| (shard, t)));
            let sgen = sub.sgen;
            if fresh {
                for i in self.targets(&pattern) {
                    if self.issue(i, &pattern, true, Some(sgen)) {
                        if let Some(s) = self.subs.get_mut(&pattern) {
                            s.pending += 1;
                        }
                    }
                }
            }
            if let Some(s) = self.subs.get_mut(&pattern) {
                if s.pending == 0 {
                    let w = std::mem::take(&mut s.waiters);
                    self.ack_all(w);
                }
            }
        } else {
            self.interest.remove(p, shard);
            let Some(sub) = self.subs.get_mut(&pattern) else {
                return;
            };
            sub.mask &= !bit;
            if sub.mask != 0 {
                return;
            }
            if let Some(sub) = self.subs.remove(&pattern) {
                self.ack_all(sub.waiters);
            }
            for i in self.targets(&pattern) {
                self.issue(i, &pattern, false, None);
            }
        }
    }
}
