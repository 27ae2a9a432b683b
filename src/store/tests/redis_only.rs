//! What only the Redis store promises: data loss gives new epochs, several instances share the
//! work, appends reach the cluster channel with their position, several nodes share one
//! sequence per topic, expiry is reported once cluster-wide, and a dead Redis fails operations
//! quickly with `Unavailable` and is used again once back.

use std::time::Duration;

use super::redis_server::RedisServer;
use super::*;

mod data_loss;
mod faults;
mod instances;
mod nodes;

const PREFIX: &str = "rh";
const DEADLINE: Duration = Duration::from_secs(10);

fn store(r: &RedisServer, node: &str) -> RedisStore {
    RedisStore::connect(&[r.url()], PREFIX, node).unwrap()
}
