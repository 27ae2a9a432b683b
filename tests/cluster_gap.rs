//! A node that misses stored publications (its subscriber connection to Redis was cut while
//! its command connection kept working) must subscribe again and close with 4010 every
//! subscriber of the topic — also one whose subscribe was answered just before, which the
//! 10-minute messaging soak (`scripts/soak-messaging.sh cluster`) caught seeing a silent gap —
//! and, thanks to the periodic position check, also when nothing more is published on it.

mod common;

use common::cluster::*;
use common::proxy::Relay;
use common::redis::Redis;
use common::*;
use ringhub::{IoMode, ServerHandle};
use serde_json::json;
use tokio_tungstenite::tungstenite;

const TOPICS: &str = r#"[{"pattern": "chat:*", "history_size": 1000}]"#;

/// Nodes `a` (Redis user `pub`, every permission) and `b` (user `default`, whose channel
/// permissions the test changes), two shards each, on the Redis store.
async fn nodes(io: IoMode, redis: &Redis) -> Option<Vec<ServerHandle>> {
    acl(redis, "pub", &["on", ">pub-pw", "~*", "&*", "+@all"]);
    let a_url = redis.url().replace("redis://", "redis://pub:pub-pw@");
    let settings = [("store.backend", "redis"), ("topics", TOPICS)];
    let v = vec![
        node_with(io, "a", &[a_url], &settings)?,
        node_with(io, "b", &[redis.url()], &settings)?,
    ];
    for n in &v {
        let addr = n.local_addr();
        wait_for(|| ready(addr).0 == 200, "node ready").await;
    }
    Some(v)
}

fn acl(redis: &Redis, user: &str, rules: &[&str]) {
    let mut cmd = ::redis::cmd("ACL");
    cmd.arg("SETUSER").arg(user);
    for r in rules {
        cmd.arg(*r);
    }
    cmd.query::<()>(&mut redis.conn()).expect("ACL SETUSER");
}

/// A subscriber on node b (its subscribe answered at offset `top`, nothing published since).
/// Then b's Redis user loses the permission for the topic's channel: Redis cuts b's pub/sub
/// connection, b reconnects and its SUBSCRIBE to that channel is refused, while node a stores
/// three publications. The permission comes back; b must subscribe again by itself (before,
/// a refused SUBSCRIBE was only logged: the node stayed deaf to the topic until its next
/// reconnect), and when a fourth is published, b's subscriber must be closed with 4010 (it
/// missed three), not handed the fourth (before: a silent gap).
async fn a_node_that_missed_publications_recovers_and_tells_its_subscribers(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let Some(nodes) = nodes(io, &redis).await else {
        return;
    };
    let a = nodes[0].local_addr();
    let topic = "chat:gap";
    let mut sub = connect(&nodes[1], "/ws").await;
    let r = request(
        &mut sub,
        json!({"event": "subscribe", "topic": topic, "id": 1}),
    )
    .await;
    let top = r["data"]["offset"].as_u64().expect("offset");
    let subscribed = || redis.channels().iter().any(|c| c.ends_with(topic));
    wait_for(subscribed, "b subscribed to the topic's channel").await;
    let others: Vec<String> = redis
        .channels()
        .into_iter()
        .filter(|c| !c.ends_with(topic))
        .map(|c| format!("&{c}"))
        .collect();
    let mut rules = vec!["resetchannels"];
    rules.extend(others.iter().map(String::as_str));
    acl(&redis, "default", &rules);
    ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("default")
        .arg("TYPE")
        .arg("pubsub")
        .query::<i64>(&mut redis.conn())
        .expect("CLIENT KILL");
    let refused = || {
        let log: ::redis::Value = ::redis::cmd("ACL")
            .arg("LOG")
            .query(&mut redis.conn())
            .expect("ACL LOG");
        format!("{log:?}").contains(topic)
    };
    wait_for(refused, "b's SUBSCRIBE to the topic refused").await;
    for i in 1..=3u64 {
        let d = api(
            a,
            "/api/v1/publish",
            json!({"topic": topic, "event": "m", "data": i}),
        );
        assert_eq!(d["offset"], top + i, "{d}");
    }
    acl(&redis, "default", &["allchannels"]);
    wait_for(subscribed, "b subscribed to the topic again").await;
    let d = api(
        a,
        "/api/v1/publish",
        json!({"topic": topic, "event": "m", "data": 4}),
    );
    assert_eq!(d["offset"], top + 4, "{d}");

    // What b's subscriber gets: a close 4010 (recover with since), never offset top + 4 alone.
    let got = loop {
        let m = tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut sub))
            .await
            .expect("nothing for the subscriber");
        match m {
            Some(Ok(tungstenite::Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["topic"] == topic && v.get("offset").is_some() {
                    break format!("publication at offset {} (top was {top})", v["offset"]);
                }
            }
            Some(Ok(tungstenite::Message::Close(f))) => {
                break format!("close {:?}", f.map(|f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            other => panic!("subscriber: {other:?}"),
        }
    };
    assert_eq!(got, "close Some(4010)");
    stop(nodes);
}
per_shell!(async fn a_node_that_missed_publications_recovers_and_tells_its_subscribers);

/// The periodic position check (`[cluster] position_check`): node b's links to Redis (its
/// subscriber connection among them) are cut while node a stores a publication on a topic b's
/// subscriber follows, and nothing more is published on it. Before the check, b's subscriber
/// stayed silently behind until the topic's next publication; now b notices within about two
/// check intervals that the store is ahead of what its subscriber got, and closes it with 4010
/// so its client recovers with `since` (or, were the node able to, hands it the publication).
async fn a_quiet_topic_that_missed_a_publication_is_noticed_by_the_position_check(io: IoMode) {
    let Some(redis) = Redis::start() else { return };
    let relay = Relay::to(format!("127.0.0.1:{}", redis.port).parse().unwrap());
    let settings = [
        ("store.backend", "redis"),
        ("topics", TOPICS),
        ("cluster.position_check", "200ms"),
    ];
    let Some(a) = node_with(io, "a", &[redis.url()], &settings) else {
        return;
    };
    let Some(b) = node_with(io, "b", &[relay.url()], &settings) else {
        return;
    };
    for n in [&a, &b] {
        let addr = n.local_addr();
        wait_for(|| ready(addr).0 == 200, "node ready").await;
    }
    let topic = "chat:quiet";
    let mut sub = connect(&b, "/ws").await;
    let r = request(
        &mut sub,
        json!({"event": "subscribe", "topic": topic, "id": 1}),
    )
    .await;
    let top = r["data"]["offset"].as_u64().expect("offset");
    let subscribed = || redis.channels().iter().any(|c| c.ends_with(topic));
    wait_for(subscribed, "b subscribed to the topic's channel").await;

    relay.cut();
    let b_addr = b.local_addr();
    wait_for(|| ready(b_addr).0 == 503, "node b lost Redis").await;
    let d = api(
        a.local_addr(),
        "/api/v1/publish",
        json!({"topic": topic, "event": "m", "data": 1}),
    );
    assert_eq!(d["offset"], top + 1, "{d}");
    relay.restore();

    // Nothing more is published: only the check can tell b's subscriber.
    let got = tokio::time::timeout(DEADLINE, async {
        loop {
            match futures_util::StreamExt::next(&mut sub).await {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["topic"] == topic && v.get("offset").is_some() {
                        break format!("publication at offset {}", v["offset"]);
                    }
                }
                Some(Ok(tungstenite::Message::Close(f))) => {
                    break format!("close {:?}", f.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                other => panic!("subscriber: {other:?}"),
            }
        }
    })
    .await
    .expect("the missed publication went unnoticed");
    let publication = format!("publication at offset {}", top + 1);
    assert!(
        got == "close Some(4010)" || got == publication,
        "{got} (top was {top})"
    );
    stop(vec![a, b]);
}
per_shell!(async fn a_quiet_topic_that_missed_a_publication_is_noticed_by_the_position_check);
