//! Presence, join/leave, online, stats and topics across three nodes joined through Redis (each
//! test starts its own `redis-server` on a free port): every node sees the same complete
//! presence, and a node killed with `kill -9` leaves it within the presence TTL.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::redis::Redis;
use common::*;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};

/// Short, so the test of a killed node is bounded (entries are refreshed every third of it).
const TTL: &str = "2s";
/// `chat:*` has presence and join/leave (and history) in the default `[[topics]]`.
const ROOM: &str = "chat:room";

/// Subscribes to `topic` (a topic with history: the reply carries a position).
async fn sub(ws: &mut Ws, topic: &str, id: u64) {
    let r = request(ws, json!({"event": "subscribe", "topic": topic, "id": id})).await;
    assert_eq!(r["event"], "reply", "{r}");
}

/// The connection's client id (`info`).
async fn client_id(ws: &mut Ws) -> String {
    let r = request(ws, json!({"event": "info", "id": 900})).await;
    r["data"]["client"].as_str().unwrap().to_string()
}

/// `presence` asked by a client: the client ids listed.
async fn presence_of(ws: &mut Ws, id: u64) -> BTreeSet<String> {
    let r = request(ws, json!({"event": "presence", "topic": ROOM, "id": id})).await;
    assert_eq!(r["event"], "reply", "{r}");
    r["data"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap().to_string())
        .collect()
}

/// `POST /api/v1/presence` on `addr`: the client ids listed.
fn api_presence(addr: SocketAddr) -> BTreeSet<String> {
    api(addr, "/api/v1/presence", json!({"topic": ROOM}))["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `probe` until it returns `want` (panics at the deadline with the last value).
async fn until_eq<T: PartialEq + std::fmt::Debug>(
    mut probe: impl AsyncFnMut() -> T,
    want: &T,
    what: &str,
) {
    let until = Instant::now() + DEADLINE;
    loop {
        let got = probe().await;
        if got == *want {
            return;
        }
        assert!(Instant::now() < until, "{what}: got {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The users in `ROOM`'s presence, asked through the library on `h`.
async fn users_of(h: &ServerHandle) -> BTreeSet<String> {
    h.presence(ROOM)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.user)
        .collect()
}

/// Next `join`/`leave` announcement on `ws` (other messages skipped).
async fn announcement(ws: &mut Ws) -> Value {
    loop {
        let m = recv(ws).await;
        if m["event"] == "join" || m["event"] == "leave" {
            return m;
        }
    }
}

/// A subscriber on each of A, B and C: every node lists the same three; join and leave reach
/// the other nodes; a leave on B disappears everywhere; online, stats and topics add up over
/// the nodes.
async fn presence_join_leave_and_online_across_nodes(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = three_with(io, &[redis.url()], &[("cluster.presence_ttl", TTL)]).await else {
        return;
    };
    let mut ws = Vec::new();
    let mut ids = BTreeSet::new();
    for (n, user) in nodes.iter().zip(["ann", "bob", "cat"]) {
        let mut c = connect(n, &format!("/ws?token={}", token(user))).await;
        sub(&mut c, ROOM, 1).await;
        ids.insert(client_id(&mut c).await);
        ws.push(c);
    }
    // Joins reach the subscribers on the other nodes: A hears bob (B) and cat (C) — from two
    // nodes, so in either order — and B hears cat.
    let mut heard = BTreeSet::new();
    for k in [0, 0, 1] {
        let j = announcement(&mut ws[k]).await;
        assert_eq!(j["event"], "join", "{j}");
        heard.insert((k, j["data"]["user"].as_str().unwrap().to_string()));
    }
    let want: BTreeSet<(usize, String)> = [(0, "bob"), (0, "cat"), (1, "cat")]
        .map(|(k, u)| (k, u.to_string()))
        .into();
    assert_eq!(heard, want);
    // The same complete list from every node: clients, the API, the library.
    for (k, c) in ws.iter_mut().enumerate() {
        until_eq(
            async || presence_of(c, 10 + k as u64).await,
            &ids,
            "client presence",
        )
        .await;
    }
    for n in &nodes {
        assert_eq!(api_presence(n.local_addr()), ids);
    }
    let lib: BTreeSet<String> = nodes[2]
        .presence(ROOM)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client)
        .collect();
    assert_eq!(lib, ids);
    let users: BTreeSet<String> = nodes[1]
        .presence(ROOM)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.user)
        .collect();
    assert_eq!(users, ["ann", "bob", "cat"].map(String::from).into());
    let r = request(
        &mut ws[0],
        json!({"event": "presence_stats", "topic": ROOM, "id": 20}),
    )
    .await;
    assert_eq!(r["data"], json!({"clients": 3, "users": 3}), "{r}");

    // Online, stats and topics on A count every node's connections.
    let (st, v) = http_json(
        nodes[0].local_addr(),
        "GET",
        "/api/v1/online",
        Some(KEY),
        None,
    );
    assert_eq!(st, 200, "{v}");
    let d = &v["data"];
    let online: Vec<&str> = d["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert_eq!(online, ["ann", "bob", "cat"], "{v}");
    assert_eq!(d["connections"], 3, "{v}");
    assert_eq!(d["cluster"]["answered"], json!(["a", "b", "c"]), "{v}");
    assert_eq!(d["cluster"]["missing"], json!([]), "{v}");
    let (_, v) = http_json(
        nodes[1].local_addr(),
        "GET",
        "/api/v1/topics",
        Some(KEY),
        None,
    );
    let room = v["data"]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == ROOM)
        .cloned();
    assert_eq!(room, Some(json!({"topic": ROOM, "subscribers": 3})), "{v}");
    let (_, v) = http_json(
        nodes[2].local_addr(),
        "GET",
        "/api/v1/stats",
        Some(KEY),
        None,
    );
    let per_node: Vec<&str> = v["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(per_node, ["c", "a", "b"], "{v}");
    let sum: u64 = v["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["total"]["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(v["data"]["total"]["connections"], sum, "{v}");
    assert!(sum >= 3, "{v}");

    // bob leaves on B: A and C hear it, and every node's list drops him.
    let bob = client_id(&mut ws[1]).await;
    let r = request(
        &mut ws[1],
        json!({"event": "unsubscribe", "topic": ROOM, "id": 30}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    for k in [0, 2] {
        let l = announcement(&mut ws[k]).await;
        assert_eq!(l["event"], "leave", "{l}");
        assert_eq!(l["data"]["user"], "bob", "{l}");
        assert_eq!(l["data"]["client"], bob.as_str(), "{l}");
    }
    ids.remove(&bob);
    for (k, c) in ws.iter_mut().enumerate() {
        until_eq(
            async || presence_of(c, 40 + k as u64).await,
            &ids,
            "presence after bob left",
        )
        .await;
    }
    // cat disconnects on C: gone everywhere too.
    let cat = client_id(&mut ws[2]).await;
    drop(ws.pop());
    ids.remove(&cat);
    for n in &nodes {
        let addr = n.local_addr();
        until_eq(
            async || api_presence(addr),
            &ids,
            "presence after cat disconnected",
        )
        .await;
    }
    stop(nodes);
}
per_shell!(async fn presence_join_leave_and_online_across_nodes);

/// A node (the real binary) killed with `kill -9` never removes its entries: they are listed
/// until they expire, within the presence TTL, while the live nodes' entries stay.
#[tokio::test]
async fn killed_nodes_presence_expires_within_the_ttl() {
    let Some(redis) = Redis::start() else { return };
    let Some(a) = node_with(
        IoMode::Epoll,
        "a",
        &[redis.url()],
        &[("cluster.presence_ttl", TTL)],
    ) else {
        return;
    };
    wait_for(|| ready(a.local_addr()).0 == 200, "node a ready").await;
    let mut doomed = BinNode::spawn(
        "doomed",
        &redis.url(),
        &[
            ("RINGHUB_STORE_BACKEND", "memory"),
            ("RINGHUB_CLUSTER_PRESENCE_TTL", TTL),
        ],
    );
    let addr = doomed.addr;
    wait_for(|| ready(addr).0 == 200, "the child node ready").await;
    let url = format!("ws://{addr}/ws?token={}", token("dan"));
    let (mut dan, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let r = request(
        &mut dan,
        json!({"event": "subscribe", "topic": ROOM, "id": 1}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    let mut ann = connect(&a, &format!("/ws?token={}", token("ann"))).await;
    sub(&mut ann, ROOM, 1).await;
    let ann_id = client_id(&mut ann).await;
    let both: BTreeSet<String> = ["ann", "dan"].map(String::from).into();
    until_eq(
        async || users_of(&a).await,
        &both,
        "dan (on the child) and ann listed",
    )
    .await;
    // Still listed right before the kill.
    assert_eq!(users_of(&a).await, both);
    doomed.child.kill().expect("kill -9");
    doomed.child.wait().unwrap();
    drop(dan);
    let only_ann: BTreeSet<String> = ["ann".to_string()].into();
    until_eq(
        async || users_of(&a).await,
        &only_ann,
        "the killed node's entry expired",
    )
    .await;
    assert_eq!(api_presence(a.local_addr()), [ann_id].into());
    stop(vec![a]);
}
