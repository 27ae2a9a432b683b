//! `POST /api/v1/batch`: a run of durable sends and history publications is stored with one
//! commit, and its results keep the commands' order. Real sockets, both shells.

mod common;

use std::time::Duration;

use common::*;
use ringhub::config::Namespace;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};

fn server(io: IoMode) -> Option<ServerHandle> {
    start(
        builder(io)
            .api_key("k")
            .topic(Namespace {
                pattern: "chat:*".into(),
                history_size: 1000,
                history_ttl: Duration::ZERO,
                presence: false,
                join_leave: false,
            })
            .pubsub(),
    )
}

fn commits(h: &ServerHandle) -> u64 {
    let (st, text) = http_raw(h.local_addr(), "GET", "/metrics", None, None);
    assert_eq!(st, 200, "{text}");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == "ringhub_store_commits_total").then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no ringhub_store_commits_total in /metrics:\n{text}"))
}

/// 40 durable sends to offline users and 40 publications on a topic with history, in one
/// batch: one commit, every result in order (offsets 1..=40 in command order).
fn one_commit(io: IoMode) {
    let Some(h) = server(io) else { return };
    let before = commits(&h);
    let mut cmds = Vec::new();
    for i in 0..40 {
        cmds.push(json!({"method": "send", "params": {"user": format!("u{i}"), "event": "e", "data": i, "durable": true}}));
        cmds.push(
            json!({"method": "publish", "params": {"topic": "chat:a", "event": "e", "data": i}}),
        );
    }
    cmds.push(json!({"method": "nope", "params": {}}));
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/batch",
        Some("k"),
        Some(&json!({ "commands": cmds })),
    );
    assert_eq!(st, 200, "{v}");
    let results = v["data"]["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 81);
    let mut ids = Vec::new();
    for (i, pair) in results[..80].chunks(2).enumerate() {
        assert_eq!(pair[0]["success"], json!(true), "{}", pair[0]);
        ids.push(
            pair[0]["data"]["message_id"]
                .as_u64()
                .expect("a message id"),
        );
        assert_eq!(pair[1]["success"], json!(true), "{}", pair[1]);
        assert_eq!(
            pair[1]["data"]["offset"].as_u64(),
            Some(i as u64 + 1),
            "{}",
            pair[1]
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    assert_eq!(results[80]["success"], json!(false));
    assert_eq!(
        commits(&h) - before,
        1,
        "the batch's stored commands in one commit"
    );
    h.shutdown();
    h.join();
}

per_shell!(fn one_commit);

/// A command that is neither a send nor a publish runs on its own, between the runs around
/// it, in order: here `history` sees nothing of the publication after it.
fn barrier(io: IoMode) {
    let Some(h) = server(io) else { return };
    let cmds = json!([
        {"method": "send", "params": {"user": "bob", "event": "e", "data": 1, "durable": true}},
        {"method": "send", "params": {"user": "bob", "event": "e", "data": 2, "durable": true}},
        {"method": "history", "params": {"topic": "chat:b"}},
        {"method": "publish", "params": {"topic": "chat:b", "event": "e", "data": 3}},
    ]);
    let (st, v) = http_json(
        h.local_addr(),
        "POST",
        "/api/v1/batch",
        Some("k"),
        Some(&json!({ "commands": cmds })),
    );
    assert_eq!(st, 200, "{v}");
    let r: &Vec<Value> = v["data"]["results"].as_array().unwrap();
    assert!(r.iter().all(|x| x["success"] == json!(true)), "{v}");
    assert_eq!(r[2]["data"]["publications"], json!([]), "{v}");
    assert_eq!(r[3]["data"]["offset"], json!(1), "{v}");
    h.shutdown();
    h.join();
}

per_shell!(fn barrier);
