//! Three in-process nodes joined through Redis (each test starts its own `redis-server` on a
//! free port): publications and API operations across nodes, Redis lost and restarted, topics
//! spread over two Redis instances. Without `redis-server` installed they fail, saying so,
//! unless `RINGHUB_SKIP_REDIS_TESTS=1` (see `common::redis`).

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::Redis;
use common::*;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};

fn publication(topic: &str, event: &str, data: Value) -> Value {
    json!({"topic": topic, "event": event, "data": data})
}

/// Publishes `room:1` 0..N from node A: subscribers of the exact topic, of `room:*` and of both
/// on every node receive each publication once, in order.
async fn publish_reaches_every_node_once_in_order(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = three(io, &[redis.url()]).await else {
        return;
    };
    let mut subs = Vec::new();
    for n in &nodes {
        for (k, patterns) in [vec!["room:1"], vec!["room:*"], vec!["room:1", "room:*"]]
            .into_iter()
            .enumerate()
        {
            let mut ws = connect(n, "/ws").await;
            for (j, p) in patterns.iter().enumerate() {
                subscribe(&mut ws, p, (k * 10 + j) as u64).await;
            }
            subs.push(ws);
        }
    }
    let mut publisher = connect(&nodes[0], "/ws").await;
    const N: i64 = 50;
    for i in 0..N {
        send(&mut publisher, publication("room:1", "m", json!(i))).await;
    }
    send(&mut publisher, publication("room:1", "end", json!(0))).await;
    for ws in &mut subs {
        for i in 0..N {
            assert_eq!(recv(ws).await, publication("room:1", "m", json!(i)));
        }
        assert_eq!(recv(ws).await, publication("room:1", "end", json!(0)));
    }
    // Wildcard subscribers on every node get a topic nobody subscribed to exactly, from B.
    let mut b = connect(&nodes[1], "/ws").await;
    send(&mut b, publication("room:9", "w", json!(9))).await;
    for (k, ws) in subs.iter_mut().enumerate() {
        if k % 3 != 0 {
            assert_eq!(recv(ws).await, publication("room:9", "w", json!(9)));
        }
    }
    // Glob metacharacters in a wildcard pattern are matched literally in Redis.
    let mut glob = connect(&nodes[2], "/ws").await;
    subscribe(&mut glob, "g[1]?*", 1).await;
    send(&mut b, publication("g[1]?x", "g", json!(1))).await;
    assert_eq!(recv(&mut glob).await, publication("g[1]?x", "g", json!(1)));
    // The API's publish (on C) and the library's (on B) reach every node too.
    api(
        nodes[2].local_addr(),
        "/api/v1/publish",
        json!({"topic": "room:1", "event": "api", "data": 1}),
    );
    for ws in &mut subs {
        assert_eq!(recv(ws).await, publication("room:1", "api", json!(1)));
    }
    nodes[1].publish("room:1", "lib", &2).unwrap();
    for ws in &mut subs {
        assert_eq!(recv(ws).await, publication("room:1", "lib", json!(2)));
    }
    let (sent, received) = (
        counter(&nodes[0], "publishes_sent"),
        counter(&nodes[1], "publishes_received"),
    );
    assert!(sent >= (N + 1) as u64, "sent {sent}");
    assert!(received >= (N + 1) as u64, "received {received}");
    // /api/v1/nodes lists the three.
    let (st, v) = http_json(
        nodes[0].local_addr(),
        "GET",
        "/api/v1/nodes",
        Some(KEY),
        None,
    );
    assert_eq!(st, 200);
    let names: Vec<&str> = v["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{v}");
    stop(nodes);
}
per_shell!(async fn publish_reaches_every_node_once_in_order);

/// A `ringhub_cluster_*` counter of a node's `/metrics`.
fn counter(h: &ServerHandle, name: &str) -> u64 {
    let addr = h.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let line = format!("ringhub_cluster_{name}_total ");
    out.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in metrics"))
}

/// `send`, server-side `subscribe` and `disconnect` called on node A reach a user on node C.
async fn api_operations_cross_nodes(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = three(io, &[redis.url()]).await else {
        return;
    };
    let (a, c) = (nodes[0].local_addr(), &nodes[2]);
    let mut ann = connect(c, &format!("/ws?token={}", token("ann"))).await;
    // Counts are node-local: ann is not on A.
    let d = api(
        a,
        "/api/v1/send",
        json!({"user": "ann", "event": "dm", "data": 1}),
    );
    assert_eq!(d["delivered"], 0);
    assert_eq!(
        recv(&mut ann).await,
        publication("user:ann", "dm", json!(1))
    );
    api(a, "/api/v1/broadcast", json!({"event": "all", "data": 2}));
    assert_eq!(
        recv(&mut ann).await,
        publication("broadcast", "all", json!(2))
    );
    // Server-side subscribe from A; C applies it asynchronously: publish until it arrives.
    api(
        a,
        "/api/v1/subscribe",
        json!({"user": "ann", "topic": "news"}),
    );
    let mut p = connect(&nodes[1], "/ws").await;
    let until = Instant::now() + DEADLINE;
    loop {
        send(&mut p, publication("news", "n", json!(0))).await;
        let got = tokio::time::timeout(Duration::from_millis(200), recv(&mut ann)).await;
        if let Ok(m) = got {
            assert_eq!(m, publication("news", "n", json!(0)));
            break;
        }
        assert!(
            Instant::now() < until,
            "server-side subscribe did not reach node C"
        );
    }
    let d = api(a, "/api/v1/disconnect", json!({"user": "ann"}));
    assert_eq!(d["disconnected"], 0);
    loop {
        match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut ann)).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
                assert_eq!(u16::from(f.code), 4000);
                break;
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a 4000 close, got {other:?}"),
        }
    }
    // A node that stops leaves the list at once (its entry is deleted, not left to expire).
    let mut nodes = nodes;
    let c = nodes.pop().unwrap();
    stop(vec![c]);
    let names = || {
        let (_, v) = http_json(a, "GET", "/api/v1/nodes", Some(KEY), None);
        v["data"]["nodes"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|n| n["node"].as_str().map(String::from))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    wait_for(|| names() == ["a", "b"], "node c gone from /api/v1/nodes").await;
    stop(nodes);
}
per_shell!(async fn api_operations_cross_nodes);

/// Redis killed: local pub/sub goes on and `/readyz` says why; Redis back on the same port:
/// the nodes reconnect and resubscribe by themselves.
async fn redis_outage_and_recovery(io: IoMode) {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = three(io, &[redis.url()]).await else {
        return;
    };
    let mut on_b = connect(&nodes[1], "/ws").await;
    subscribe(&mut on_b, "live", 1).await;
    let mut on_a = connect(&nodes[0], "/ws").await;
    subscribe(&mut on_a, "live", 1).await;
    let mut publisher = connect(&nodes[0], "/ws").await;

    redis.kill();
    let a = nodes[0].local_addr();
    wait_for(|| ready(a).0 == 503, "readyz 503 while Redis is down").await;
    let (_, v) = ready(a);
    assert!(
        v["error"].as_str().unwrap_or("").contains("redis"),
        "readyz should say why: {v}"
    );
    // Local traffic is served: a subscriber on the publisher's node gets it.
    send(&mut publisher, publication("live", "local", json!(1))).await;
    assert_eq!(
        recv(&mut on_a).await,
        publication("live", "local", json!(1))
    );
    // A publisher that asks is told its publication stayed on this node.
    let mut asking = connect(&nodes[0], "/ws").await;
    let r = request(
        &mut asking,
        json!({"topic": "live", "event": "local", "data": 3, "id": 9}),
    )
    .await;
    assert_eq!(r["event"], "error", "{r}");
    assert_eq!(r["data"]["code"], "not_available", "{r}");
    assert_eq!(
        recv(&mut on_a).await,
        publication("live", "local", json!(3))
    );
    // A client can still subscribe (the reply does not wait for Redis).
    let mut late = connect(&nodes[1], "/ws").await;
    subscribe(&mut late, "later", 2).await;

    let _redis = Redis::on(redis.port);
    for n in &nodes {
        wait_for(|| ready(n.local_addr()).0 == 200, "ready again").await;
    }
    // Subscriptions are restored (possibly a moment after readiness): probe until B hears A.
    let until = Instant::now() + DEADLINE;
    loop {
        send(&mut publisher, publication("later", "probe", json!(0))).await;
        let got = tokio::time::timeout(Duration::from_millis(200), recv(&mut late)).await;
        if got.is_ok() {
            break;
        }
        assert!(
            Instant::now() < until,
            "node B did not resubscribe after Redis came back"
        );
    }
    send(&mut publisher, publication("live", "after", json!(2))).await;
    loop {
        let m = recv(&mut on_b).await;
        if m["event"] == "after" {
            assert_eq!(m, publication("live", "after", json!(2)));
            break;
        }
    }
    assert!(counter(&nodes[0], "publishes_dropped") >= 1);
    assert!(counter(&nodes[1], "reconnects") >= 1);
    stop(nodes);
}
per_shell!(async fn redis_outage_and_recovery);

/// Two Redis instances: exact topics are spread over both, patterns subscribed on both; every
/// publication reaches every node once.
async fn two_redis_instances(io: IoMode) {
    let Some(r1) = Redis::start() else { return };
    let Some(r2) = Redis::start() else { return };
    let Some(nodes) = three(io, &[r1.url(), r2.url()]).await else {
        return;
    };
    let topics: Vec<String> = (0..8).map(|i| format!("spread:{i}")).collect();
    let mut exact = connect(&nodes[1], "/ws").await;
    for (i, t) in topics.iter().enumerate() {
        subscribe(&mut exact, t, i as u64).await;
    }
    let mut wild = connect(&nodes[2], "/ws").await;
    subscribe(&mut wild, "spread:*", 1).await;
    let (c1, c2) = (r1.channels(), r2.channels());
    assert!(
        c1.iter().any(|c| c.contains(":t:spread:")) && c2.iter().any(|c| c.contains(":t:spread:")),
        "topics should be spread over both instances: {c1:?} {c2:?}"
    );
    let mut publisher = connect(&nodes[0], "/ws").await;
    for t in &topics {
        send(&mut publisher, publication(t, "m", json!(t))).await;
    }
    let mut got_exact = Vec::new();
    let mut got_wild = Vec::new();
    for _ in &topics {
        got_exact.push(
            recv(&mut exact).await["topic"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        got_wild.push(recv(&mut wild).await["topic"].as_str().unwrap().to_string());
    }
    got_exact.sort();
    got_wild.sort();
    assert_eq!(got_exact, topics);
    assert_eq!(got_wild, topics);
    // Nothing more (no duplicate): a last publication on one topic is the next message.
    send(&mut publisher, publication("spread:0", "last", json!(0))).await;
    assert_eq!(recv(&mut exact).await["event"], "last");
    assert_eq!(recv(&mut wild).await["event"], "last");
    stop(nodes);
}
per_shell!(async fn two_redis_instances);

/// Measurement, not a check (`cargo test --test cluster -- --ignored --nocapture`): N
/// publications from node A's library handle to one subscriber on node B; prints
/// publications/s end to end and how many publications each Redis round trip carried.
#[tokio::test]
#[ignore]
async fn measure_cross_node_throughput() {
    let Some(redis) = Redis::start() else { return };
    let urls = [redis.url()];
    let (Some(a), Some(b)) = (
        node(IoMode::Epoll, "a", &urls),
        node(IoMode::Epoll, "b", &urls),
    ) else {
        return;
    };
    for n in [&a, &b] {
        wait_for(|| ready(n.local_addr()).0 == 200, "node ready").await;
    }
    let mut sub = connect(&b, "/ws").await;
    subscribe(&mut sub, "bench", 1).await;
    const N: u64 = 20_000;
    let t0 = Instant::now();
    let reader = tokio::spawn(async move {
        for _ in 0..N {
            recv(&mut sub).await;
        }
    });
    for i in 0..N {
        a.publish("bench", "m", &i).unwrap();
    }
    reader.await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let (pipelines, cmds) = (counter(&a, "pipelines"), counter(&a, "pipelined_commands"));
    println!(
        "{N} publications A→B in {secs:.3}s = {:.0}/s; {cmds} Redis commands in {pipelines} pipelines \
         ({:.1} commands per round trip; 1 PUBLISH per publication)",
        N as f64 / secs,
        cmds as f64 / pipelines.max(1) as f64
    );
    stop(vec![a, b]);
}

/// Two live nodes under one name are detected (each would skip the other's publications as
/// its own): a registration refresh finds the other's token, logs an error and counts it.
#[tokio::test]
async fn duplicate_node_names_are_detected() {
    let Some(redis) = Redis::start() else { return };
    let urls = [redis.url()];
    let (Some(one), Some(two)) = (
        node(IoMode::Epoll, "twin", &urls),
        node(IoMode::Epoll, "twin", &urls),
    ) else {
        return;
    };
    for n in [&one, &two] {
        let addr = n.local_addr();
        wait_for(|| ready(addr).0 == 200, "node ready").await;
    }
    wait_for(
        || counter(&one, "duplicate_names") + counter(&two, "duplicate_names") > 0,
        "the duplicate name detected",
    )
    .await;
    stop(vec![one, two]);
}
