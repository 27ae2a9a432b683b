//! Pub/sub over real sockets on both backends: cross-shard fan-out, wildcards, unsubscribe,
//! ordering, replies.

mod common;

use common::*;
use serde_json::json;

async fn cross_shard_fanout(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    // Enough connections that the kernel's SO_REUSEPORT hash puts some on each shard.
    let mut subs = Vec::new();
    for i in 0..24 {
        let mut ws = connect(&h, "/ws").await;
        subscribe(&mut ws, if i % 2 == 0 { "chat:room1" } else { "chat:*" }, i).await;
        subs.push(ws);
    }
    for s in 0..h.shards() {
        assert!(
            h.shard_stats(s).unwrap().connections > 0,
            "shard {s} got no connection"
        );
    }
    let mut publisher = connect(&h, "/ws").await;
    for n in 0..50 {
        send(
            &mut publisher,
            json!({"topic":"chat:room1","event":"msg","data":{"n":n,"s":"é\"\\"}}),
        )
        .await;
    }
    send(
        &mut publisher,
        json!({"topic":"chat:room1","event":"msg","data":[1,2],"id":99}),
    )
    .await;
    assert_eq!(
        recv(&mut publisher).await,
        json!({"event":"reply","id":99,"topic":"chat:room1"})
    );
    for ws in &mut subs {
        // In publish order, each exactly once, data untouched.
        for n in 0..50 {
            assert_eq!(
                recv(ws).await,
                json!({"topic":"chat:room1","event":"msg","data":{"n":n,"s":"é\"\\"}})
            );
        }
        assert_eq!(
            recv(ws).await,
            json!({"topic":"chat:room1","event":"msg","data":[1,2]})
        );
    }
    drop((subs, publisher));
    h.shutdown();
    h.join();
}

async fn wildcard_unsubscribe_and_dedup(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut a = connect(&h, "/ws").await;
    let mut p = connect(&h, "/ws").await;
    subscribe(&mut a, "news:*", 1).await;
    subscribe(&mut a, "news:sport", 2).await;
    subscribe(&mut a, "end", 3).await;
    // Matched by two patterns: delivered once.
    send(&mut p, json!({"topic":"news:sport","event":"e","data":1})).await;
    send(&mut p, json!({"topic":"news:tech","event":"e","data":2})).await;
    send(&mut p, json!({"topic":"newsroom","event":"e","data":3})).await;
    send(&mut p, json!({"topic":"end","event":"e","data":4})).await;
    assert_eq!(recv(&mut a).await["data"], 1);
    assert_eq!(recv(&mut a).await["data"], 2);
    assert_eq!(
        recv(&mut a).await["data"],
        4,
        "newsroom must not match news:*"
    );
    send(
        &mut a,
        json!({"event":"unsubscribe","topic":"news:*","id":5}),
    )
    .await;
    assert_eq!(
        recv(&mut a).await,
        json!({"event":"reply","id":5,"topic":"news:*"})
    );
    send(&mut p, json!({"topic":"news:tech","event":"e","data":5})).await;
    send(&mut p, json!({"topic":"news:sport","event":"e","data":6})).await;
    send(&mut p, json!({"topic":"end","event":"e","data":7})).await;
    // Per-publisher order: had news:tech still been delivered it would come first.
    assert_eq!(recv(&mut a).await["data"], 6);
    assert_eq!(recv(&mut a).await["data"], 7);
    // The sender receives its own publication when subscribed.
    subscribe(&mut p, "self", 6).await;
    send(&mut p, json!({"topic":"self","event":"e"})).await;
    assert_eq!(recv(&mut p).await, json!({"topic":"self","event":"e"}));
    // Library handle publishes from outside.
    h.publish("end", "server", &json!({"k":"v"})).unwrap();
    assert_eq!(
        recv(&mut a).await,
        json!({"topic":"end","event":"server","data":{"k":"v"}})
    );
    drop((a, p));
    h.shutdown();
    h.join();
}

per_shell!(async fn cross_shard_fanout);

per_shell!(async fn wildcard_unsubscribe_and_dedup);
