//! Opening the configured [`Store`] backend.

use crate::config::{ClusterConfig, StoreBackend, StoreConfig};
use crate::proto::error::ServerError;
use crate::store::Store;

/// Opens the configured store; the Redis store joins the cluster's Redis instances (`urls`,
/// `prefix`, in the cluster's order) as `node`.
pub(crate) fn open_store(
    cfg: &StoreConfig,
    cluster: &ClusterConfig,
    node: &str,
) -> Result<Box<dyn Store>, ServerError> {
    Ok(match cfg.backend {
        StoreBackend::Memory => Box::new(crate::store::memory::MemoryStore::new()),
        StoreBackend::Redb => {
            let mut store = crate::store::redb::RedbStore::open(&cfg.path)?;
            store.set_sync_interval(cfg.sync_every())?;
            Box::new(store)
        }
        StoreBackend::Redis => Box::new(crate::store::redis::RedisStore::connect(
            &cluster.redis,
            &cluster.prefix,
            node,
        )?),
    })
}
