//! Webhooks of a cluster with the Redis store against a real receiver (`common::webhook`):
//! each cluster-wide transition sent once, a killed node's released by its next life, and
//! transitions whose check Redis did not answer sent late, once. Every wait is on something
//! observable: the receiver's log, Redis's keys or the status endpoint.

mod common;
#[path = "webhooks_cluster/support.rs"]
mod support;

use std::sync::{Arc, Mutex};

use common::webhook::*;
use common::*;
use ringhub::IoMode;
use serde_json::json;
use support::*;

/// Two nodes with the Redis store: occupied / vacated and online / offline are sent once per
/// cluster-wide transition (not once per node), and every event once (the outbox is one Redis
/// stream read by both nodes through a consumer group).
#[tokio::test]
async fn cluster_sends_each_transition_once() {
    let Some(redis) = common::redis::Redis::start() else {
        return;
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    let url = rx.url();
    let settings = [
        ("store.backend", "redis"),
        ("webhooks.url", url.as_str()),
        ("webhooks.secret", SECRET),
        ("webhooks.retry_min", "20ms"),
        ("webhooks.retry_max", "200ms"),
        (
            "webhooks.events",
            "topic_occupied,topic_vacated,user_online,user_offline",
        ),
    ];
    let urls = [redis.url()];
    let Some(a) = cluster::node_with(IoMode::Epoll, "a", &urls, &settings) else {
        return;
    };
    let b = cluster::node_with(IoMode::Epoll, "b", &urls, &settings).unwrap();
    for n in [&a, &b] {
        cluster::wait_for(|| cluster::ready(n.local_addr()).0 == 200, "node ready").await;
    }
    let path = format!("/ws?token={}", cluster::token("alice"));
    let mut on_a = connect(&a, &path).await;
    subscribe(&mut on_a, "room:1", 1).await;
    until("alice online", || {
        count(&rx.events(), "user_online", "user", "alice") >= 1
    })
    .await;
    let mut on_b = connect(&b, &path).await;
    subscribe(&mut on_b, "room:1", 1).await;
    // A node reports its changes to Redis after the fact (its subscribe answer does not wait):
    // closing alice on a before b's "have" reached Redis is a real cluster-wide vacated then
    // occupied (see `webhook_transitions_alternate_in_every_order`). One transition each way
    // is asserted, so a leaves only once both nodes are seen holding both keys.
    let mut conn = redis.conn();
    let mut holds = |key: &str, node: &str| -> bool {
        ::redis::cmd("SISMEMBER")
            .arg(format!("ringhub:whn:{key}"))
            .arg(node)
            .query(&mut conn)
            .unwrap()
    };
    until("b's user and topic seen in Redis", || {
        holds("user:alice", "b") && holds("topic:room:1", "b")
    })
    .await;
    for mut ws in [on_a, on_b] {
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    }
    until("alice offline", || {
        count(&rx.events(), "user_offline", "user", "alice") >= 1
    })
    .await;
    until("room:1 vacated", || {
        count(&rx.events(), "topic_vacated", "topic", "room:1") >= 1
    })
    .await;
    // Both nodes have processed their last transitions once no node holds either key ...
    let mut conn = redis.conn();
    let mut held = |key: &str| -> u64 {
        ::redis::cmd("SCARD")
            .arg(format!("ringhub:whn:{key}"))
            .query(&mut conn)
            .unwrap()
    };
    until("no node holds the keys", || {
        held("user:alice") == 0 && held("topic:room:1") == 0
    })
    .await;
    // ... and everything they put in the outbox before has been sent once a later event of each
    // node arrived and the stream is empty.
    let markers = settled(&a, &b, &rx, &redis.url()).await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "user_online", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_occupied", "topic", "room:1"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:1"), 1, "{ev:?}");
    drop(markers);
    cluster::stop(vec![a, b]);
}

/// A node killed with `kill -9` while a user and a topic were its: its next life (same node
/// name) releases what the dead one held, so the offline and vacated events the dead node never
/// sent are sent, once. (A node that never comes back is released by the others once its
/// registration stayed missing — `Store::webhook_orphans`, covered by the store's Redis tests.)
#[tokio::test]
async fn a_killed_nodes_last_transitions_are_sent_by_its_next_life() {
    let Some(redis) = common::redis::Redis::start() else {
        return;
    };
    let log = Arc::new(Mutex::new(Log::default()));
    let Some(rx) = Receiver::start(0, log) else {
        return;
    };
    let url = rx.url();
    let env = [
        ("RINGHUB_STORE_BACKEND", "redis"),
        ("RINGHUB_WEBHOOKS_URL", url.as_str()),
        ("RINGHUB_WEBHOOKS_SECRET", SECRET),
        ("RINGHUB_WEBHOOKS_RETRY_MIN", "20ms"),
        ("RINGHUB_WEBHOOKS_RETRY_MAX", "200ms"),
        (
            "RINGHUB_WEBHOOKS_EVENTS",
            "topic_occupied,topic_vacated,user_online,user_offline",
        ),
    ];
    let mut first = cluster::BinNode::spawn("phoenix", &redis.url(), &env);
    let path = format!("/ws?token={}", cluster::token("alice"));
    let mut ws = connect_addr(first.addr, &path).await;
    subscribe(&mut ws, "room:9", 1).await;
    until("alice online and room:9 occupied", || {
        let ev = rx.events();
        count(&ev, "user_online", "user", "alice") == 1
            && count(&ev, "topic_occupied", "topic", "room:9") == 1
    })
    .await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(ws);
    assert_eq!(count(&rx.events(), "user_offline", "user", "alice"), 0);
    let second = cluster::BinNode::spawn("phoenix", &redis.url(), &env);
    until("alice offline and room:9 vacated", || {
        let ev = rx.events();
        count(&ev, "user_offline", "user", "alice") == 1
            && count(&ev, "topic_vacated", "topic", "room:9") == 1
    })
    .await;
    // Marked by a later event of the second life: nothing was sent twice meanwhile.
    let _marker = connect_addr(second.addr, &format!("/ws?token={}", cluster::token("m"))).await;
    until("the marker", || {
        count(&rx.events(), "user_online", "user", "m") == 1
    })
    .await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:9"), 1, "{ev:?}");
}

/// The cluster-wide check of a node's transitions fails while Redis is down (killed, then
/// started again on its port with its AOF): the node keeps them and checks them again once
/// Redis is back, so the vacated and the occupied that happened meanwhile are sent late, once,
/// with the time they happened; the topic's next cycle on the other node — lost before, when
/// the node stayed in the topic's set in Redis after a removal that never reached it — is sent
/// too; and a topic occupied and vacated while Redis was down sends a pair or nothing.
#[tokio::test]
async fn transitions_while_redis_is_down_are_sent_once_it_is_back() {
    let dir = std::env::temp_dir().join(format!("ringhub-whretry-{}", std::process::id()));
    let Some(Outage {
        mut redis,
        rx,
        url,
        a,
        b,
        alice,
    }) = outage(Some(&dir), "room:1").await
    else {
        return;
    };

    // Redis down: alice leaves (vacated, offline), dave comes (online, occupied room:2), erin
    // comes and goes (room:3 and erin back to what Redis has).
    redis.kill();
    close(alice).await;
    let mut dave = connect(&a, &tok("dave")).await;
    // Not waiting for the reply: it waits for Redis to confirm the node's SUBSCRIBE.
    send(
        &mut dave,
        json!({"event":"subscribe","topic":"room:2","id":1}),
    )
    .await;
    let mut erin = connect(&a, &tok("erin")).await;
    send(
        &mut erin,
        json!({"event":"subscribe","topic":"room:3","id":1}),
    )
    .await;
    close(erin).await;
    checks_failed(&a, 4).await;
    let down_until = ringhub::store::now_ms();
    redis.revive();

    until("the transitions of the outage sent", || {
        let ev = rx.events();
        count(&ev, "topic_vacated", "topic", "room:1") == 1
            && count(&ev, "user_offline", "user", "alice") == 1
            && count(&ev, "topic_occupied", "topic", "room:2") == 1
            && count(&ev, "user_online", "user", "dave") == 1
    })
    .await;
    until("nothing left to check, a out of room:1 in Redis", || {
        status(a.local_addr())["unsynced_transitions"] == 0 && !holds(&url, "topic:room:1", "a")
    })
    .await;
    // The late events carry the time of the change, not of the check.
    let ev = rx.events();
    let late = ev
        .iter()
        .find(|e| e["type"] == "topic_vacated" && e["topic"] == "room:1")
        .unwrap();
    assert!(late["time_ms"].as_u64() <= Some(down_until), "{late}");

    // room:1's next cycle, on b: occupied and vacated (before the fix, a stayed in its set).
    let mut carol = connect(&b, &tok("carol")).await;
    subscribe(&mut carol, "room:1", 1).await;
    until("room:1 occupied again", || {
        count(&rx.events(), "topic_occupied", "topic", "room:1") == 2
    })
    .await;
    close(carol).await;
    close(dave).await;
    until("room:1 vacated again, room:2 vacated", || {
        let ev = rx.events();
        count(&ev, "topic_vacated", "topic", "room:1") == 2
            && count(&ev, "topic_vacated", "topic", "room:2") == 1
    })
    .await;
    let markers = settled(&a, &b, &rx, &url).await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    for (kind, field, value, n) in [
        ("topic_occupied", "topic", "room:1", 2),
        ("topic_vacated", "topic", "room:1", 2),
        ("topic_occupied", "topic", "room:2", 1),
        ("topic_vacated", "topic", "room:2", 1),
        ("user_online", "user", "alice", 1),
        ("user_offline", "user", "alice", 1),
        ("user_online", "user", "dave", 1),
        ("user_offline", "user", "dave", 1),
    ] {
        assert_eq!(count(&ev, kind, field, value), n, "{kind} {value}: {ev:?}");
    }
    // Occupied and vacated while Redis was down: a pair (its facts reached the store thread on
    // either side of the restart) or nothing, and no node left holding it.
    let pair =
        |on, off, field, value| (count(&ev, on, field, value), count(&ev, off, field, value));
    let r3 = pair("topic_occupied", "topic_vacated", "topic", "room:3");
    assert!(r3 == (0, 0) || r3 == (1, 1), "room:3 {r3:?}: {ev:?}");
    let e = pair("user_online", "user_offline", "user", "erin");
    assert!(e == (0, 0) || e == (1, 1), "erin {e:?}: {ev:?}");
    assert!(!holds(&url, "topic:room:3", "a") && !holds(&url, "user:erin", "a"));
    drop(markers);
    cluster::stop(vec![a, b]);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis stopped (SIGSTOP: its socket open, nothing answered) while a topic's last subscriber
/// leaves: the node's check times out (3 s) — and, once Redis runs again, Redis may well run the
/// timed-out call it had received, its answer lost. The node checks again until Redis answers
/// and the vacated is sent once either way; the topic's next cycle is sent too.
#[tokio::test]
async fn a_check_that_timed_out_is_sent_once_redis_answers() {
    let Some(Outage {
        redis,
        rx,
        url,
        a,
        b,
        alice,
    }) = outage(None, "room:5").await
    else {
        return;
    };
    redis.pause();
    close(alice).await;
    checks_failed(&a, 2).await;
    redis.resume();
    until("room:5 vacated, alice offline", || {
        let ev = rx.events();
        count(&ev, "topic_vacated", "topic", "room:5") == 1
            && count(&ev, "user_offline", "user", "alice") == 1
    })
    .await;
    until("nothing left to check", || {
        status(a.local_addr())["unsynced_transitions"] == 0
    })
    .await;
    assert!(!holds(&url, "topic:room:5", "a"));
    let mut carol = connect(&b, &tok("carol")).await;
    subscribe(&mut carol, "room:5", 1).await;
    until("room:5 occupied again", || {
        count(&rx.events(), "topic_occupied", "topic", "room:5") == 2
    })
    .await;
    close(carol).await;
    until("room:5 vacated again", || {
        count(&rx.events(), "topic_vacated", "topic", "room:5") == 2
    })
    .await;
    let markers = settled(&a, &b, &rx, &url).await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "topic_occupied", "topic", "room:5"), 2, "{ev:?}");
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:5"), 2, "{ev:?}");
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    drop(markers);
    cluster::stop(vec![a, b]);
}

/// A node stopped while a transition still waits for Redis (its last pass at shutdown fails
/// too) is released like a dead one: what Redis still holds for it is removed by its next life
/// (same name) at start, and the vacated / offline it never sent are sent then, once.
#[tokio::test]
async fn a_node_stopped_with_unchecked_transitions_is_released_by_its_next_life() {
    let dir = std::env::temp_dir().join(format!("ringhub-whstop-{}", std::process::id()));
    let Some(Outage {
        mut redis,
        rx,
        url,
        a,
        b,
        alice,
    }) = outage(Some(&dir), "room:7").await
    else {
        return;
    };
    redis.kill();
    close(alice).await;
    checks_failed(&a, 2).await;
    cluster::stop(vec![a]);
    redis.revive();
    assert!(
        holds(&url, "topic:room:7", "a"),
        "a's removal never reached Redis"
    );
    let a = node("a", &url, &rx.url()).unwrap();
    until("room:7 vacated, alice offline", || {
        let ev = rx.events();
        count(&ev, "topic_vacated", "topic", "room:7") == 1
            && count(&ev, "user_offline", "user", "alice") == 1
    })
    .await;
    assert!(!holds(&url, "topic:room:7", "a"));
    let markers = settled(&a, &b, &rx, &url).await;
    let ev = rx.events();
    assert_unique_ids(&ev);
    assert_eq!(count(&ev, "topic_vacated", "topic", "room:7"), 1, "{ev:?}");
    assert_eq!(count(&ev, "user_offline", "user", "alice"), 1, "{ev:?}");
    drop(markers);
    cluster::stop(vec![a, b]);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
