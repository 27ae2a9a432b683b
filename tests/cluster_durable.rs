//! Issue 21, items 2 and 3, against a real `redis-server` of the test's own: durable messages
//! sent while Redis restarts reach a user who stays connected on another node, acks made while
//! Redis is stopped land once it resumes, and a publish answered `not_available` is never
//! stored later. Both shells; conditions polled on state with a deadline, no sleep as sync.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::proxy::Relay;
use common::redis::Redis;
use common::*;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};

const TOPICS: &str = r#"[{"pattern": "chat:*", "history_size": 1000}]"#;

/// Nodes with two shards each on the Redis store at `urls`, ready.
async fn nodes(io: IoMode, urls: &[String], names: &[&str]) -> Option<Vec<ServerHandle>> {
    let each: Vec<(&str, &[String])> = names.iter().map(|n| (*n, urls)).collect();
    nodes_each(io, &each).await
}

/// Like [`nodes`], each node reaching Redis at its own URLs (same instances, other routes).
async fn nodes_each(io: IoMode, each: &[(&str, &[String])]) -> Option<Vec<ServerHandle>> {
    let mut v = Vec::new();
    for (name, urls) in each {
        let settings = [
            ("store.backend", "redis"),
            ("topics", TOPICS),
            ("inbox.ack_timeout", "3s"),
        ];
        v.push(node_with(io, name, urls, &settings)?);
    }
    for n in &v {
        let addr = n.local_addr();
        wait_for(|| ready(addr).0 == 200, "node ready").await;
    }
    Some(v)
}

fn send_durable(addr: std::net::SocketAddr, user: &str, n: u64) -> (u16, Value) {
    let body = json!({"user": user, "event": "dm", "data": n, "durable": true});
    http_json(addr, "POST", "/api/v1/send", Some(KEY), Some(&body))
}

fn status(addr: std::net::SocketAddr, id: &Value) -> Value {
    let (st, v) = http_json(
        addr,
        "GET",
        &format!("/api/v1/messages/{id}"),
        Some(KEY),
        None,
    );
    if st == 200 {
        v["data"]["status"].clone()
    } else {
        Value::Null
    }
}

/// Next durable message on `ws` within `wait`: (offset, data).
async fn next_durable(ws: &mut Ws, wait: Duration) -> Option<(u64, Value)> {
    let until = Instant::now() + wait;
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        let m = tokio::time::timeout(left, recv(ws)).await.ok()?;
        if m["ack"] == true {
            return Some((m["offset"].as_u64().expect("offset"), m["data"].clone()));
        }
    }
}

/// Redis is killed and started again (empty) while node A takes durable sends for a user who
/// stays connected to node B: every send answered 200 reaches B's connection, and every ack
/// lands (status `acked`). Before: control messages dropped while A's cluster link was down
/// never reached B (`pending`, 0 attempts, no retry) until the user reconnected. (Here the
/// store and the control channel come back together, so this passes without the inbox resync
/// too; the two tests below pin it.)
async fn durable_sends_across_a_redis_restart_reach_the_connected_user(io: IoMode) {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let Some(nodes) = nodes(io, &[redis.url()], &["a", "b"]).await else {
        return;
    };
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    let mut bob = connect(&nodes[1], &format!("/ws?token={}", token("bob"))).await;
    let (st, v) = send_durable(a, "bob", 0);
    assert_eq!(st, 200, "{v}");
    let (first, _) = next_durable(&mut bob, GUARD).await.expect("first message");
    let r = request(
        &mut bob,
        json!({"event": "ack", "topic": "user:bob", "id": 1, "data": {"offset": first}}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");

    redis.kill();
    let mut answered: Vec<(u64, Value)> = Vec::new();
    let until = Instant::now() + DEADLINE;
    let mut n = 0;
    while answered.len() < 10 {
        n += 1;
        if n == 3 {
            redis.revive();
        }
        let (st, v) = send_durable(a, "bob", n);
        if st == 200 {
            answered.push((n, v["data"]["message_id"].clone()));
        } else {
            assert_eq!(st, 503, "{v}");
            assert!(Instant::now() < until, "the store did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Every answered message reaches bob's connection on B (a retry may repeat one).
    let mut got: Vec<u64> = Vec::new();
    let mut rid = 10;
    let want: Vec<u64> = answered.iter().map(|(n, _)| *n).collect();
    let until = Instant::now() + DEADLINE;
    while !want.iter().all(|n| got.contains(n)) {
        assert!(
            Instant::now() < until,
            "bob got {got:?} of {want:?} (answered 200 on node A)"
        );
        let Some((offset, data)) = next_durable(&mut bob, Duration::from_millis(500)).await else {
            continue;
        };
        got.push(data.as_u64().expect("data"));
        rid += 1;
        // Not `request`: it would skip the durable messages arriving before the reply.
        send(
            &mut bob,
            json!({"event": "ack", "topic": "user:bob", "id": rid, "data": {"offset": offset}}),
        )
        .await;
    }
    all_acked(a, &answered).await;
    let _ = b;
    stop(nodes);
}
per_shell!(async fn durable_sends_across_a_redis_restart_reach_the_connected_user);

/// Two Redis instances: the control channel lives on the first, alice's inbox on the second
/// (`instance_for("user:alice", 2) == 1`). With the first killed, durable sends to alice are
/// stored (200 + id) but the control message that would carry them to her connection on B is
/// lost, and B does not track them (no `ack_timeout` retry). Only the inbox resync when the
/// control channel comes back can deliver them. Before: `pending`, 0 attempts, until she
/// reconnected.
async fn durable_sends_stored_while_the_control_channel_is_down_reach_the_connected_user(
    io: IoMode,
) {
    let Some(mut ctl) = Redis::start() else {
        return;
    };
    let Some(inbox) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &[ctl.url(), inbox.url()], &["a", "b"]).await else {
        return;
    };
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    let mut alice = alice_on_b(&nodes).await;

    ctl.kill();
    // Both nodes know the control channel is gone: nothing queued for it can still go out.
    wait_for(|| ready(a).0 == 503 && ready(b).0 == 503, "nodes not ready").await;
    let answered = send_five(a, "alice");
    ctl.revive();
    receive_and_ack(&mut alice, "alice", &answered).await;
    all_acked(a, &answered).await;
    stop(nodes);
}
per_shell!(async fn durable_sends_stored_while_the_control_channel_is_down_reach_the_connected_user);

/// Only the sending node loses Redis: A reaches the control instance through a relay the
/// test cuts, B keeps its link. A stores durable sends for alice (her inbox is on the second
/// instance, which A still reaches) and drops their control messages; B never lost anything,
/// so only A's `InboxResync` broadcast, when its control channel is back, makes B read alice's
/// inbox again. Before: `pending`, 0 attempts, on B's live connection.
async fn durable_sends_stored_while_the_sender_was_cut_off_reach_the_user_on_another_node(
    io: IoMode,
) {
    let Some(ctl) = Redis::start() else { return };
    let Some(inbox) = Redis::start() else { return };
    let relay = Relay::to(format!("127.0.0.1:{}", ctl.port).parse().unwrap());
    let via_relay = [relay.url(), inbox.url()];
    let direct = [ctl.url(), inbox.url()];
    let Some(nodes) = nodes_each(io, &[("a", &via_relay), ("b", &direct)]).await else {
        return;
    };
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    let mut alice = alice_on_b(&nodes).await;

    relay.cut();
    wait_for(|| ready(a).0 == 503, "node A not ready").await;
    assert_eq!(ready(b).0, 200, "B keeps its link");
    let answered = send_five(a, "alice");
    relay.restore();
    receive_and_ack(&mut alice, "alice", &answered).await;
    all_acked(a, &answered).await;
    stop(nodes);
}
per_shell!(async fn durable_sends_stored_while_the_sender_was_cut_off_reach_the_user_on_another_node);

/// Alice connected to node B, once the cluster carried a durable send from A to her (acked).
async fn alice_on_b(nodes: &[ServerHandle]) -> Ws {
    let mut alice = connect(&nodes[1], &format!("/ws?token={}", token("alice"))).await;
    let (st, v) = send_durable(nodes[0].local_addr(), "alice", 0);
    assert_eq!(st, 200, "{v}");
    let (first, data) = next_durable(&mut alice, GUARD)
        .await
        .expect("first message");
    assert_eq!(data, 0);
    send(
        &mut alice,
        json!({"event": "ack", "topic": "user:alice", "id": 1, "data": {"offset": first}}),
    )
    .await;
    alice
}

/// Waits until every message of `answered` is `acked` (asked at `addr`).
async fn all_acked(addr: std::net::SocketAddr, answered: &[(u64, Value)]) {
    for (n, id) in answered {
        wait_for(
            || status(addr, id) == "acked",
            &format!("message {n} ({id}) acked"),
        )
        .await;
    }
}

/// Five durable sends to `user` through `addr`, each stored (200) but not yet delivered:
/// (data, message id).
fn send_five(addr: std::net::SocketAddr, user: &str) -> Vec<(u64, Value)> {
    let mut answered = Vec::new();
    for n in 1..=5 {
        let (st, v) = send_durable(addr, user, n);
        assert_eq!(
            st, 200,
            "the user's inbox is on the instance still reachable (instance_for changed?): {v}"
        );
        answered.push((n, v["data"]["message_id"].clone()));
    }
    for (n, id) in &answered {
        assert_eq!(status(addr, id), "pending", "message {n}");
    }
    answered
}

/// Reads `user`'s connection until every message of `answered` arrived, acking each.
async fn receive_and_ack(ws: &mut Ws, user: &str, answered: &[(u64, Value)]) {
    let want: Vec<u64> = answered.iter().map(|(n, _)| *n).collect();
    let mut got: Vec<u64> = Vec::new();
    let mut rid = 10;
    let until = Instant::now() + DEADLINE;
    while !want.iter().all(|n| got.contains(n)) {
        assert!(
            Instant::now() < until,
            "{user} got {got:?} of {want:?} (stored while the control channel was down)"
        );
        let Some((offset, data)) = next_durable(ws, Duration::from_millis(500)).await else {
            continue;
        };
        got.push(data.as_u64().expect("data"));
        rid += 1;
        send(
            ws,
            json!({"event": "ack", "topic": format!("user:{user}"), "id": rid, "data": {"offset": offset}}),
        )
        .await;
    }
}

/// Redis is stopped (SIGSTOP) while a connected user acks the messages it received: the acks
/// the store could not record are kept and retried, so once Redis resumes every message is
/// `acked`. Before: acks that met the store's connect cool-down were dropped (`pending`).
async fn acks_made_while_redis_is_stopped_land(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &[redis.url()], &["a"]).await else {
        return;
    };
    let a = nodes[0].local_addr();
    let mut carl = connect(&nodes[0], &format!("/ws?token={}", token("carl"))).await;
    let mut ids = Vec::new();
    let mut offsets = Vec::new();
    for n in 0..5 {
        let (st, v) = send_durable(a, "carl", n);
        assert_eq!(st, 200, "{v}");
        ids.push(v["data"]["message_id"].clone());
        let (offset, _) = next_durable(&mut carl, GUARD).await.expect("message");
        offsets.push(offset);
    }
    redis.pause();
    for (i, offset) in offsets.iter().enumerate() {
        send(
            &mut carl,
            json!({"event": "ack", "topic": "user:carl", "data": {"offset": offset}, "id": 100 + i}),
        )
        .await;
    }
    // Every ack is answered (kept for a retry or recorded) before Redis resumes.
    let mut replies = 0;
    while replies < offsets.len() {
        let m = tokio::time::timeout(DEADLINE, futures_util::StreamExt::next(&mut carl))
            .await
            .expect("ack answered")
            .expect("open")
            .expect("frame");
        let Ok(text) = m.into_text() else { continue };
        let Ok(m) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if m["event"] == "reply" || m["event"] == "error" {
            assert_eq!(
                m["event"], "reply",
                "an ack kept for a retry is accepted: {m}"
            );
            replies += 1;
        }
    }
    redis.resume();
    for id in &ids {
        wait_for(|| status(a, id) == "acked", &format!("message {id} acked")).await;
    }
    stop(nodes);
}
per_shell!(async fn acks_made_while_redis_is_stopped_land);

/// `INFO errorstats`'s count of `STALE` error replies (appends refused after their deadline).
fn stale_refusals(redis: &Redis) -> u64 {
    let info: String = ::redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut redis.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_STALE:count="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn history(addr: std::net::SocketAddr, topic: &str) -> Vec<Value> {
    let (st, v) = http_json(
        addr,
        "POST",
        "/api/v1/history",
        Some(KEY),
        Some(&json!({"topic": topic, "limit": 100})),
    );
    assert_eq!(st, 200, "{v}");
    v["data"]["publications"].as_array().unwrap().clone()
}

/// Redis is stopped while a history publish with an id waits for it: the publish is answered
/// `not_available` (the store's timeout), and when Redis resumes it works through the append
/// it was sent — which must refuse it (deadline passed) rather than store and publish it: a
/// client retrying the failed publish would duplicate it. Before: stored and delivered.
async fn a_publish_answered_not_available_is_never_stored(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &[redis.url()], &["a"]).await else {
        return;
    };
    let a = nodes[0].local_addr();
    let mut publisher = connect(&nodes[0], "/ws").await;
    let mut watcher = connect(&nodes[0], "/ws").await;
    let r = request(
        &mut watcher,
        json!({"event": "subscribe", "topic": "chat:x", "id": 1}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    let publish = |n: u64| json!({"event": "m", "topic": "chat:x", "data": n, "id": n});
    let r = request(&mut publisher, publish(1)).await;
    assert_eq!(r["data"]["offset"], 1, "{r}");
    redis.pause();
    let r = tokio::time::timeout(DEADLINE, request(&mut publisher, publish(2)))
        .await
        .expect("answered");
    assert_eq!(r["event"], "error", "{r}");
    assert_eq!(r["data"]["code"], "not_available", "{r}");
    redis.resume();
    // Redis works through the append it was sent: refused (STALE) or, wrongly, stored.
    wait_for(
        || stale_refusals(&redis) > 0 || history(a, "chat:x").len() > 1,
        "the stopped append decided",
    )
    .await;
    let stored: Vec<Value> = history(a, "chat:x")
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(
        stored,
        vec![json!(1)],
        "the failed publish is not in the history"
    );
    // The client's retry is stored once, and the watcher sees 1 then the retry, nothing else.
    let until = Instant::now() + DEADLINE;
    loop {
        let r = request(&mut publisher, publish(2)).await;
        if r["event"] == "reply" {
            assert_eq!(r["data"]["offset"], 2, "{r}");
            break;
        }
        assert!(Instant::now() < until, "the store did not come back: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored: Vec<Value> = history(a, "chat:x")
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(stored, vec![json!(1), json!(2)]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = recv(&mut watcher).await;
        if m["topic"] == "chat:x" && m["event"] == "m" {
            seen.push(m["data"].clone());
        }
    }
    assert_eq!(seen, vec![json!(1), json!(2)]);
    stop(nodes);
}
per_shell!(async fn a_publish_answered_not_available_is_never_stored);
