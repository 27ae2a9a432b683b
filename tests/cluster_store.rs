//! History, recovery and durable messages across nodes on the Redis store: three nodes, one
//! Redis of the test's own (see `common::redis`), each test on fresh instances.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::Redis;
use common::*;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

const TOPICS: &str = r#"[{"pattern": "chat:*", "history_size": 1000}]"#;

/// Nodes with two shards each on the Redis store at `urls`, ready.
async fn nodes(io: IoMode, urls: &[String], names: &[&str]) -> Option<Vec<ServerHandle>> {
    let mut v = Vec::new();
    for name in names {
        let settings = [("store.backend", "redis"), ("topics", TOPICS)];
        v.push(node_with(io, name, urls, &settings)?);
    }
    for n in &v {
        let addr = n.local_addr();
        wait_for(|| ready(addr).0 == 200, "node ready").await;
    }
    Some(v)
}

async fn ws_to(addr: SocketAddr, path: &str) -> Ws {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect");
    ws
}

/// Subscribe on a history topic: the reply's (epoch, offset).
async fn sub_pos(ws: &mut Ws, topic: &str, id: u64) -> (String, u64) {
    let r = request(ws, json!({"event": "subscribe", "topic": topic, "id": id})).await;
    assert_eq!(r["event"], "reply", "{r}");
    (
        r["data"]["epoch"].as_str().expect("epoch").to_string(),
        r["data"]["offset"].as_u64().expect("offset"),
    )
}

fn publish_msg(topic: &str, data: Value, id: Option<u64>) -> Value {
    let mut m = json!({"event": "m", "topic": topic, "data": data});
    if let Some(id) = id {
        m["id"] = json!(id);
    }
    m
}

/// The next `n` publications on `topic`: (offset, data).
async fn take(ws: &mut Ws, topic: &str, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = recv(ws).await;
        if m["topic"] == topic && m["event"] == "m" {
            out.push((m["offset"].as_u64().expect("offset"), m["data"].clone()));
        }
    }
    out
}

/// Two publishers on A and B publish concurrently to one topic with history: subscribers on
/// A, B and C receive every publication once, in the same order, with the same offsets 1..2N.
async fn offsets_are_identical_on_every_node(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &[redis.url()], &["a", "b", "c"]).await else {
        return;
    };
    let mut subs = Vec::new();
    for n in &nodes {
        let mut ws = connect(n, "/ws").await;
        let (_, top) = sub_pos(&mut ws, "chat:one", 1).await;
        assert_eq!(top, 0);
        subs.push(ws);
    }
    const N: u64 = 40;
    let mut pa = connect(&nodes[0], "/ws").await;
    let mut pb = connect(&nodes[1], "/ws").await;
    for i in 0..N {
        send(&mut pa, publish_msg("chat:one", json!(["a", i]), None)).await;
        send(&mut pb, publish_msg("chat:one", json!(["b", i]), None)).await;
    }
    let first = take(&mut subs[0], "chat:one", 2 * N as usize).await;
    let offsets: Vec<u64> = first.iter().map(|p| p.0).collect();
    assert_eq!(offsets, (1..=2 * N).collect::<Vec<_>>());
    for who in ["a", "b"] {
        let seq: Vec<u64> = first
            .iter()
            .filter(|p| p.1[0] == who)
            .map(|p| p.1[1].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..N).collect::<Vec<_>>(), "{who}'s order");
    }
    for ws in &mut subs[1..] {
        assert_eq!(take(ws, "chat:one", 2 * N as usize).await, first);
    }
    stop(nodes);
}
per_shell!(async fn offsets_are_identical_on_every_node);

/// Two Redis instances: topics with history are spread over both (each topic's stream and
/// channel on the instance that owns it); every topic keeps its own gapless offsets, the same
/// on every node.
async fn two_instances_share_the_topics(io: IoMode) {
    let (Some(r1), Some(r2)) = (Redis::start(), Redis::start()) else {
        return;
    };
    let Some(nodes) = nodes(io, &[r1.url(), r2.url()], &["a", "b"]).await else {
        return;
    };
    let topics: Vec<String> = (0..8).map(|i| format!("chat:s{i}")).collect();
    let mut on_b = connect(&nodes[1], "/ws").await;
    for (i, t) in topics.iter().enumerate() {
        sub_pos(&mut on_b, t, i as u64 + 1).await;
    }
    let mut on_a = connect(&nodes[0], "/ws").await;
    for round in 0..3u64 {
        for t in &topics {
            send(&mut on_a, publish_msg(t, json!(round), None)).await;
        }
    }
    let mut seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for _ in 0..3 * topics.len() {
        let m = recv(&mut on_b).await;
        let t = m["topic"].as_str().unwrap().to_string();
        seen.entry(t)
            .or_default()
            .push(m["offset"].as_u64().unwrap());
    }
    for t in &topics {
        assert_eq!(seen[t], [1, 2, 3], "{t}");
    }
    // Both instances hold streams.
    for r in [&r1, &r2] {
        let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query(&mut r.conn()).unwrap();
        assert!(!keys.is_empty(), "an instance holds nothing: {keys:?}");
    }
    stop(nodes);
}
per_shell!(async fn two_instances_share_the_topics);

/// A client that saw offsets up to K on node C reconnects to node B with `since` while a
/// publisher on A keeps publishing: it gets every later publication exactly once, in order,
/// whichever way the recovery and the live stream interleave.
async fn reconnect_to_another_node_recovers(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &[redis.url()], &["a", "b", "c"]).await else {
        return;
    };
    let mut on_c = connect(&nodes[2], "/ws").await;
    let (epoch, _) = sub_pos(&mut on_c, "chat:r", 1).await;
    let mut publisher = connect(&nodes[0], "/ws").await;
    for i in 1..=5u64 {
        send(&mut publisher, publish_msg("chat:r", json!(i), None)).await;
    }
    let seen = take(&mut on_c, "chat:r", 5).await;
    assert_eq!(seen.last().unwrap().0, 5);
    drop(on_c);
    // Missed while away.
    for i in 6..=20u64 {
        send(&mut publisher, publish_msg("chat:r", json!(i), None)).await;
    }
    // Keep publishing while the client comes back on B.
    const LAST: u64 = 300;
    let pub_task = tokio::spawn(async move {
        for i in 21..=LAST {
            send(&mut publisher, publish_msg("chat:r", json!(i), None)).await;
        }
        publisher
    });
    let mut on_b = connect(&nodes[1], "/ws").await;
    let since = json!({"epoch": epoch, "offset": 5});
    let r = request(
        &mut on_b,
        json!({"event": "subscribe", "topic": "chat:r", "id": 2, "data": {"since": since}}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    assert_eq!(r["data"]["recovered"], true, "{r}");
    assert_eq!(r["data"]["epoch"], epoch);
    let mut got: Vec<u64> = r["data"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    let top = r["data"]["offset"].as_u64().unwrap();
    assert_eq!(got.last().copied().unwrap_or(5), top);
    let live = take(&mut on_b, "chat:r", (LAST - top) as usize).await;
    got.extend(live.iter().map(|p| p.0));
    assert_eq!(got, (6..=LAST).collect::<Vec<_>>(), "gapless, no duplicate");
    let _ = pub_task.await.unwrap();
    stop(nodes);
}
per_shell!(async fn reconnect_to_another_node_recovers);

/// A durable send on node A to a user connected to node B: delivered there, acknowledged there,
/// and node A reports it acknowledged; a send to the user while offline reaches the user's
/// next connection on node C.
async fn durable_send_to_a_user_on_another_node(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &[redis.url()], &["a", "b", "c"]).await else {
        return;
    };
    let a = nodes[0].local_addr();
    let send_durable = |data: Value| {
        let body = json!({"user": "ann", "event": "dm", "data": data, "durable": true});
        let (st, v) = http_json(a, "POST", "/api/v1/send", Some(KEY), Some(&body));
        assert_eq!(st, 200, "{v}");
        v["data"].clone()
    };
    // Offline: stored, delivered on the next connection (on C).
    let first = send_durable(json!(1));
    let mut ann = connect(&nodes[2], &format!("/ws?token={}", token("ann"))).await;
    let m = recv(&mut ann).await;
    assert_eq!(
        (m["data"].clone(), m["ack"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(m["offset"], first["offset"]);
    let ack = |o: &Value, id: u64| json!({"event": "ack", "topic": "user:ann", "id": id, "data": {"offset": o}});
    let r = request(&mut ann, ack(&m["offset"], 1)).await;
    assert_eq!(r["event"], "reply", "{r}");
    drop(ann);
    // Online on B.
    let mut ann = connect(&nodes[1], &format!("/ws?token={}", token("ann"))).await;
    let second = send_durable(json!(2));
    let m = recv(&mut ann).await;
    assert_eq!(m["data"], json!(2), "{m}");
    assert_eq!(m["offset"], second["offset"]);
    let r = request(&mut ann, ack(&m["offset"], 2)).await;
    assert_eq!(r["event"], "reply", "{r}");
    for receipt in [&first, &second] {
        let path = format!("/api/v1/messages/{}", receipt["message_id"]);
        let (st, v) = http_json(a, "GET", &path, Some(KEY), None);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["data"]["status"], "acked", "{v}");
    }
    stop(nodes);
}
per_shell!(async fn durable_send_to_a_user_on_another_node);

/// Redis (AOF, `appendfsync always`) is killed while a publisher keeps publishing, then
/// started again: publications while it is down are refused (`not_available`), every one that
/// was answered with an offset is still in the history afterwards under the same epoch, live
/// traffic resumes without restarting a node, and a subscriber that stayed connected throughout
/// either received every stored publication in order or was told (4010) to recover — never a
/// silent gap.
async fn redis_restart_loses_nothing_acknowledged(io: IoMode) {
    let dir = std::env::temp_dir().join(format!("ringhub-aof-{}-{:?}", std::process::id(), io));
    let _ = std::fs::remove_dir_all(&dir);
    let Some(mut redis) = Redis::start_aof(dir.clone()) else {
        return;
    };
    let Some(nodes) = nodes(io, &[redis.url()], &["a", "b", "c"]).await else {
        return;
    };
    let mut steady = connect(&nodes[2], "/ws").await;
    let (epoch, _) = sub_pos(&mut steady, "chat:aof", 1).await;
    let mut publisher = connect(&nodes[0], "/ws").await;
    let mut acked: Vec<(u64, u64)> = Vec::new();
    let mut refused = 0;
    // 1-20 with Redis up, 21-30 with Redis down, then from the restart on until 10 more were
    // stored (the store waits half a second after a failed connect before trying again).
    let until = Instant::now() + DEADLINE;
    let mut i = 0u64;
    while acked.len() < 30 {
        i += 1;
        if i == 21 {
            redis.kill();
        }
        if i == 31 {
            redis.revive();
        }
        let r = request(&mut publisher, publish_msg("chat:aof", json!(i), Some(i))).await;
        match r["event"].as_str() {
            Some("reply") => acked.push((i, r["data"]["offset"].as_u64().unwrap())),
            _ => {
                assert_eq!(r["data"]["code"], "not_available", "{r}");
                assert!(i >= 21, "refused before Redis went down: {r}");
                refused += 1;
                if i > 30 {
                    assert!(Instant::now() < until, "the store did not reconnect");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    assert!(
        refused >= 10,
        "every publish while Redis was down is refused"
    );
    assert!(acked.iter().all(|&(i, _)| !(21..=30).contains(&i)));
    for n in &nodes {
        let addr = n.local_addr();
        wait_for(|| ready(addr).0 == 200, "ready after the Redis restart").await;
    }
    let (st, v) = http_json(
        nodes[2].local_addr(),
        "POST",
        "/api/v1/history",
        Some(KEY),
        Some(&json!({"topic": "chat:aof", "limit": 1000})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["epoch"], epoch, "same epoch: {v}");
    let stored: Vec<(u64, u64)> = v["data"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["data"].as_u64().unwrap(), p["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        stored, acked,
        "exactly the acknowledged publications, in order"
    );
    // Live traffic across nodes resumes (the subscription is restored a moment after
    // readiness: probe until it arrives).
    let mut on_c = connect(&nodes[2], "/ws").await;
    sub_pos(&mut on_c, "chat:aof", 1).await;
    let until = Instant::now() + DEADLINE;
    let mut probes = 0u64;
    let last = loop {
        let r = request(&mut publisher, publish_msg("chat:aof", json!(0), Some(100))).await;
        let offset = r["data"]["offset"].as_u64().expect("probe stored");
        probes += 1;
        let got = tokio::time::timeout(Duration::from_millis(200), recv(&mut on_c)).await;
        if let Ok(m) = got {
            assert_eq!(m["topic"], "chat:aof");
            break offset;
        }
        assert!(Instant::now() < until, "no live traffic after the restart");
    };
    // The subscriber that stayed: a gapless prefix of the stream, then maybe a 4010 close.
    let mut offsets = Vec::new();
    let closed = loop {
        match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut steady)).await {
            Ok(Some(Ok(tungstenite::Message::Text(t)))) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                let o = m["offset"].as_u64().unwrap();
                offsets.push(o);
                if o == last {
                    break None;
                }
            }
            Ok(Some(Ok(tungstenite::Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("steady subscriber: {other:?}"),
        }
    };
    assert_eq!(
        offsets,
        (1..=offsets.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    match closed {
        None => assert_eq!(offsets.len() as u64, last),
        Some(code) => assert_eq!(code, 4010),
    }
    eprintln!(
        "acked {}, refused {refused}, probes {probes}, steady subscriber: {} then {closed:?}",
        acked.len(),
        offsets.len()
    );
    stop(nodes);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
per_shell!(async fn redis_restart_loses_nothing_acknowledged);

/// A node process killed with `kill -9`: its client reconnects to another node and recovers
/// what was published meanwhile from the history in Redis.
#[tokio::test]
async fn killed_node_clients_recover_elsewhere() {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(IoMode::Epoll, &[redis.url()], &["a", "b"]).await else {
        return;
    };
    let mut c = BinNode::spawn(
        "c",
        &redis.url(),
        &[
            ("RINGHUB_STORE_BACKEND", "redis"),
            ("RINGHUB_TOPICS", TOPICS),
        ],
    );
    wait_for(|| ready(c.addr).0 == 200, "binary node ready").await;
    let mut on_c = ws_to(c.addr, "/ws").await;
    let (epoch, _) = sub_pos(&mut on_c, "chat:k", 1).await;
    let mut publisher = connect(&nodes[0], "/ws").await;
    for i in 1..=3u64 {
        send(&mut publisher, publish_msg("chat:k", json!(i), None)).await;
    }
    assert_eq!(take(&mut on_c, "chat:k", 3).await.last().unwrap().0, 3);
    c.child.kill().expect("kill -9");
    let _ = c.child.wait();
    for i in 4..=10u64 {
        let r = request(&mut publisher, publish_msg("chat:k", json!(i), Some(i))).await;
        assert_eq!(r["event"], "reply", "{r}");
    }
    let mut on_b = connect(&nodes[1], "/ws").await;
    let since = json!({"epoch": epoch, "offset": 3});
    let r = request(
        &mut on_b,
        json!({"event": "subscribe", "topic": "chat:k", "id": 2, "data": {"since": since}}),
    )
    .await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    let got: Vec<u64> = r["data"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_u64().unwrap())
        .collect();
    assert_eq!(got, (4..=10).collect::<Vec<_>>());
    stop(nodes);
}
