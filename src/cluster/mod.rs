//! The cluster layer: how publications, subscription interest and API operations cross nodes.
//!
//! A node talks to the others through one [`Broker`]. [`local::LocalBroker`] (the default) is a
//! single node: nothing leaves the process and the shards skip every cluster step (one `bool`
//! test per publication). [`redis::RedisBroker`] joins N nodes through one or more Redis
//! instances (`[cluster] redis = [...]`): every publication on a topic without history is one
//! Redis `PUBLISH`, a node subscribes in Redis only to the patterns its connections want, and
//! API operations (`send`, `broadcast`, `disconnect`, server-side `subscribe`/`unsubscribe`,
//! durable messages and their removals) go to every node on a control channel. Publications on
//! topics with history do not pass through [`Broker::publish`]: the Redis store's append script
//! publishes them (wire kind `'B'`, one message per topic per script call), and the broker delivers them to every node, the origin
//! included, in offset order.

use std::sync::Arc;

use crate::proto::error::ServerError;
use crate::shard::shared::HubShared;

pub(crate) mod query;
pub mod redis;
pub(crate) use crate::config::ClusterConfig;
pub(crate) use crate::proto::wire::{self, instance_for, topic_channel};
pub(crate) use crate::shard::broker::{
    local, Broker, ClusterStats, ControlOp, Gathered, QueryKind, Reply,
};

/// Starts a broker's threads once the hub that holds it exists (remote publications go to its
/// shards).
pub(crate) type Starter = Box<dyn FnOnce(Arc<HubShared>) -> Result<(), ServerError> + Send>;

/// The broker for `config` and what starts it: Redis when URLs are given, else the single
/// node (nothing to start).
pub(crate) fn broker_for(
    config: &ClusterConfig,
    node: &Arc<str>,
) -> Result<(Arc<dyn Broker>, Starter), ServerError> {
    if config.redis.is_empty() {
        return Ok((Arc::new(local::LocalBroker), Box::new(|_| Ok(()))));
    }
    let broker = Arc::new(redis::RedisBroker::new(config, node.clone())?);
    let start = broker.clone();
    Ok((broker, Box::new(move |hub| start.start(hub))))
}

/// A random starting point for a sequence number a node stamps on what it sends. Receivers
/// de-duplicate by (origin, sequence) over a short window, so a node restarted under the same
/// name must not start where its previous life did, and its publication and control sequences
/// must not overlap: publications take the lower half of the range (`control == false`),
/// control operations the upper half.
pub(crate) fn random_seq(control: bool) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    // Room for 2^61 messages before either half wraps into the other.
    let base = h.finish() >> 2;
    if control {
        base | (1 << 63)
    } else {
        base
    }
}

pub(crate) use crate::proto::wire::glob_escape;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_start_apart() {
        let (p, c) = (random_seq(false), random_seq(true));
        assert_eq!(p >> 62, 0, "publications in the lower half, with room");
        assert_eq!(c >> 63, 1, "control operations in the upper half");
        // A restart starts elsewhere (equal only with probability 2^-62).
        assert_ne!(random_seq(false), random_seq(false));
    }

    #[test]
    fn glob_escape_escapes_metacharacters() {
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        assert_eq!(glob_escape("chat:"), "chat:");
    }
}
