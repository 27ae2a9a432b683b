//! Large history in pages (issue 21, item 8): six 900 KB publications on a topic with history,
//! then `history` (limit 50) or a `since` subscribe: the reader is not cut as a slow consumer;
//! the reply carries what fits with `more` and `next`, and the next pages follow on request.

mod common;

use std::time::Duration;

use common::*;
use ringhub::config::Namespace;
use ringhub::IoMode;
use serde_json::{json, Value};

/// Follows `next` until a page without `more`; returns the offsets of every page, in order.
async fn pages(ws: &mut Ws, topic: &str, first: &Value, mut id: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut page = first.clone();
    loop {
        let d = &page["data"];
        for p in d["publications"].as_array().expect("publications") {
            assert_eq!(p["data"]["big"].as_str().map(str::len), Some(900_000));
            offsets.push(p["offset"].as_u64().unwrap());
        }
        if d["more"] != true {
            return offsets;
        }
        id += 1;
        page = request(
            ws,
            json!({"event": "history", "topic": topic, "id": id, "data": d["next"]}),
        )
        .await;
        assert_eq!(page["event"], "reply", "{page}");
    }
}

async fn large_history_in_pages(io: IoMode) {
    let Some(h) = start(
        builder(io)
            .topic(Namespace {
                pattern: "chat:*".into(),
                history_size: 100,
                history_ttl: Duration::ZERO,
                presence: false,
                join_leave: false,
            })
            .pubsub(),
    ) else {
        return;
    };
    let mut publisher = connect(&h, "/ws").await;
    let big = "b".repeat(900_000);
    for n in 0..6u64 {
        let r = request(
            &mut publisher,
            json!({"event": "m", "topic": "chat:big", "id": n + 1, "data": {"big": big}}),
        )
        .await;
        assert_eq!(r["data"]["offset"], n + 1, "{io:?}");
    }
    let mut reader = connect(&h, "/ws").await;
    let r = request(
        &mut reader,
        json!({"event": "history", "topic": "chat:big", "id": 1, "data": {"limit": 50}}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{io:?}");
    assert_eq!(r["data"]["more"], true, "{io:?}: one reply for 5.4 MB?");
    assert_eq!(
        pages(&mut reader, "chat:big", &r, 100).await,
        vec![1, 2, 3, 4, 5, 6],
        "{io:?}"
    );
    // Recovery with `since`: the first page in the reply, the rest through `history`.
    let epoch = r["data"]["epoch"].clone();
    let r = request(
        &mut reader,
        json!({"event": "subscribe", "topic": "chat:big", "id": 2,
               "data": {"since": {"epoch": epoch, "offset": 0}}}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{io:?}");
    assert_eq!(r["data"]["recovered"], true, "{io:?}");
    assert_eq!(
        pages(&mut reader, "chat:big", &r, 200).await,
        vec![1, 2, 3, 4, 5, 6],
        "{io:?}"
    );
    // Still connected and subscribed: a live publication continues at 7.
    request(
        &mut publisher,
        json!({"event": "m", "topic": "chat:big", "id": 9, "data": {"big": "x"}}),
    )
    .await;
    let m = recv(&mut reader).await;
    assert_eq!(m["offset"], 7, "{io:?}: {m}");
    assert_eq!(h.stats().slow_consumers, 0, "{io:?}");
    h.shutdown();
    h.join();
}
per_shell!(async fn large_history_in_pages);
