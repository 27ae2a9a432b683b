//! The cluster webhook tests' set-up: two nodes on one Redis sending to one receiver, and the
//! waits on Redis's keys and on the status endpoint.

use std::sync::{Arc, Mutex};

use super::common::webhook::*;
use super::common::*;
use ringhub::{IoMode, ServerHandle};

/// Node `name` of the cluster at `redis`, sending topic and user events to `hook`.
pub fn node(name: &str, redis: &str, hook: &str) -> Option<ServerHandle> {
    let settings = [
        ("store.backend", "redis"),
        ("webhooks.url", hook),
        ("webhooks.secret", SECRET),
        ("webhooks.retry_min", "20ms"),
        ("webhooks.retry_max", "200ms"),
        (
            "webhooks.events",
            "topic_occupied,topic_vacated,user_online,user_offline",
        ),
    ];
    cluster::node_with(IoMode::Epoll, name, &[redis.to_string()], &settings)
}

/// Nodes `a` and `b` (see [`node`]), ready.
pub async fn two_nodes(redis: &str, hook: &str) -> Option<(ServerHandle, ServerHandle)> {
    let a = node("a", redis, hook)?;
    let b = node("b", redis, hook).unwrap();
    for n in [&a, &b] {
        cluster::wait_for(|| cluster::ready(n.local_addr()).0 == 200, "node ready").await;
    }
    Some((a, b))
}

/// The path of a connection of `user`.
pub fn tok(user: &str) -> String {
    format!("/ws?token={}", cluster::token(user))
}

/// Whether `node` is in the set of holders of `key` in the Redis at `url`.
pub fn holds(url: &str, key: &str, node: &str) -> bool {
    let mut conn = ::redis::Client::open(url)
        .unwrap()
        .get_connection()
        .unwrap();
    ::redis::cmd("SISMEMBER")
        .arg(format!("ringhub:whn:{key}"))
        .arg(node)
        .query(&mut conn)
        .unwrap()
}

/// Closes `ws` and waits for the server's close.
pub async fn close(mut ws: Ws) {
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
}

/// Waits until everything both nodes put in the outbox was sent: a later event of each node
/// arrived and the outbox stream is empty.
pub async fn settled(a: &ServerHandle, b: &ServerHandle, rx: &Receiver, redis: &str) -> Vec<Ws> {
    let ma = connect(a, &tok("marker-a")).await;
    let mb = connect(b, &tok("marker-b")).await;
    until("the markers", || {
        let ev = rx.events();
        count(&ev, "user_online", "user", "marker-a") == 1
            && count(&ev, "user_online", "user", "marker-b") == 1
    })
    .await;
    let mut conn = ::redis::Client::open(redis)
        .unwrap()
        .get_connection()
        .unwrap();
    until("an empty outbox stream", || {
        ::redis::cmd("XLEN")
            .arg("ringhub:wh")
            .query::<u64>(&mut conn)
            .unwrap()
            == 0
    })
    .await;
    vec![ma, mb]
}

/// Node a's store thread found its cluster-wide checks failing: (with the fix) at least `n`
/// transitions wait for Redis; (before it) their events were sent and failed to be stored.
pub async fn checks_failed(a: &ServerHandle, n: u64) {
    until("a's checks failed", || {
        let s = status(a.local_addr());
        s["unsynced_transitions"].as_u64() >= Some(n)
            || s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("storing"))
    })
    .await;
}

/// What the Redis-outage tests start from: Redis (with an AOF in a fresh folder `aof`, so it
/// can be started again with its data; `None`: no AOF), the webhook receiver, nodes a and b,
/// and alice on a in `room`, occupied and held by a in Redis.
pub struct Outage {
    pub redis: super::common::redis::Redis,
    pub rx: Receiver,
    pub url: String,
    pub a: ServerHandle,
    pub b: ServerHandle,
    pub alice: Ws,
}

pub async fn outage(aof: Option<&std::path::Path>, room: &str) -> Option<Outage> {
    let redis = match aof {
        Some(dir) => {
            let _ = std::fs::remove_dir_all(dir);
            super::common::redis::Redis::start_aof(dir.to_path_buf())?
        }
        None => super::common::redis::Redis::start()?,
    };
    let rx = Receiver::start(0, Arc::new(Mutex::new(Log::default())))?;
    let url = redis.url();
    let (a, b) = two_nodes(&url, &rx.url()).await?;
    let mut alice = connect(&a, &tok("alice")).await;
    subscribe(&mut alice, room, 1).await;
    let key = format!("topic:{room}");
    until(&format!("{room} occupied, a holding it in Redis"), || {
        count(&rx.events(), "topic_occupied", "topic", room) == 1 && holds(&url, &key, "a")
    })
    .await;
    Some(Outage {
        redis,
        rx,
        url,
        a,
        b,
        alice,
    })
}
