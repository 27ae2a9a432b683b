//! Socket.IO connection state recovery and durable messages as emits with an ack, on both
//! shells, spoken by hand: the CONNECT answer's `pid`, offsets as the last argument of events
//! of rooms with history, a resume after a cut replaying exactly the missed publications, a gap
//! the history no longer covers, and durable sends acknowledged by the client's ACK (or written
//! again to its next connection); rooms per namespace. `tests/socketio/` runs the same with
//! `socket.io-client`.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use ringhub::hooks::{ConnectInfo, ConnectOutcome};
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMsg;

const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("recv timed out")
            .expect("stream ended")
            .expect("ws error");
        match m {
            WsMsg::Text(t) if t == "2" => ws.send(WsMsg::Text("3".into())).await.expect("pong"),
            WsMsg::Text(t) => return t.to_string(),
            WsMsg::Ping(_) | WsMsg::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn put(ws: &mut Ws, text: &str) {
    ws.send(WsMsg::Text(text.into())).await.expect("send");
}

/// Opens an Engine.IO session and sends CONNECT to `/` with `auth`.
async fn connect_sio(h: &ServerHandle, auth: Value) -> Ws {
    let mut ws = connect(h, PATH).await;
    assert!(next_text(&mut ws).await.starts_with("0{"), "OPEN");
    put(&mut ws, &format!("40{auth}")).await;
    ws
}

/// The `pid` of a CONNECT answer.
fn pid_of(answer: &str) -> String {
    let v: Value = serde_json::from_str(answer.strip_prefix("40").expect("CONNECT")).unwrap();
    v["pid"].as_str().expect("a pid").to_string()
}

/// `(data, offset)` of an event `42["message",data,offset]`.
fn event(text: &str) -> (Value, String) {
    let v: Value = serde_json::from_str(text.strip_prefix("42").expect("EVENT")).unwrap();
    assert_eq!(v[0], "message", "{text}");
    (v[1].clone(), v[2].as_str().expect("an offset").to_string())
}

fn publish(h: &ServerHandle, topic: &str, n: u64) {
    let body = json!({"topic": topic, "event": "message", "data": {"n": n}});
    common::cluster::api(h.local_addr(), "/api/v1/publish", body);
}

/// The auth payload's `name` is the user (as an application's `on_connect` would decide).
fn server(io: IoMode) -> Option<ServerHandle> {
    server_with(io, &[], |b| {
        named_users(
            b.socketio_namespace("/chat")
                .topic(ns("chat:*", 100))
                .topic(ns("small:*", 2)),
        )
    })
}

/// The auth payload's `name` becomes the connection's user.
fn named_users(b: ringhub::Builder) -> ringhub::Builder {
    b.on_connect(|c: &ConnectInfo<'_>| {
        let auth: Value = c
            .auth
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        Ok(ConnectOutcome {
            user: auth["name"].as_str().map(str::to_string),
            ..Default::default()
        })
    })
}

/// Waits until `topic` lists no client (the dropped connection's close was handled, so its
/// session is kept): polled state, not a timed wait.
async fn wait_gone(h: &ServerHandle, topic: &str) {
    let gone = || {
        let v = common::cluster::api(h.local_addr(), "/api/v1/presence", json!({"topic": topic}));
        v["clients"].as_array().is_some_and(Vec::is_empty)
    };
    common::cluster::wait_for(gone, "the cut connection is gone").await;
}

async fn resume_after_a_cut_replays_the_missed_publications_once(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect_sio(&h, json!({"name": "ann"})).await;
    let pid = pid_of(&next_text(&mut a).await);
    put(&mut a, r#"421["join","chat:1"]"#).await;
    assert!(next_text(&mut a).await.starts_with("431"));
    // A room without history gets no offsets; it is restored too.
    put(&mut a, r#"422["join","plain"]"#).await;
    assert_eq!(next_text(&mut a).await, "432[]");
    publish(&h, "chat:1", 1);
    let (d, offset) = event(&next_text(&mut a).await);
    assert_eq!(d, json!({"n": 1}));
    assert!(
        offset.starts_with("1:") && offset.ends_with(":chat:1"),
        "{offset}"
    );
    // The network goes: no DISCONNECT, no Engine.IO close.
    drop(a);
    wait_gone(&h, "chat:1").await;
    publish(&h, "chat:1", 2);
    publish(&h, "chat:1", 3);
    let auth = json!({"name": "ann", "pid": pid, "offset": offset});
    let mut b = connect_sio(&h, auth).await;
    // The missed publications, in order, each once, then the answer with the same pid.
    let mut got = Vec::new();
    let answer = loop {
        let t = next_text(&mut b).await;
        if t.starts_with("40") {
            break t;
        }
        got.push(event(&t));
    };
    assert_eq!(pid_of(&answer), pid, "recovered");
    let ns: Vec<Value> = got.iter().map(|(d, _)| d["n"].clone()).collect();
    assert_eq!(ns, [json!(2), json!(3)]);
    assert!(got[1].1.starts_with("3:"), "{:?}", got[1]);
    // Rooms restored: live publications follow, with no duplicate before them.
    publish(&h, "chat:1", 4);
    assert_eq!(event(&next_text(&mut b).await).0, json!({"n": 4}));
    common::cluster::api(
        h.local_addr(),
        "/api/v1/publish",
        json!({"topic": "plain", "event": "message", "data": 5}),
    );
    assert_eq!(next_text(&mut b).await, r#"42["message",5]"#);
    drop(b);
    stop_server(h);
}
per_shell!(async fn resume_after_a_cut_replays_the_missed_publications_once);

/// Publishes `{"n": n}` to `topic` with the default `publish` event (ack id `n`), and waits
/// for the ack.
async fn sio_publish(p: &mut Ws, n: u64, topic: &str) {
    let ev = json!(["publish", {"topic": topic, "event": "message", "data": {"n": n}}]);
    put(p, &format!("42{n}{ev}")).await;
    let ack = format!("43{n}");
    while !next_text(p).await.starts_with(&ack) {}
}

/// Two rooms with history on one shard (so the shard that sequences them is the connection's
/// own): the room the client's offset does not name resumes from the session's position, with
/// nothing replayed twice; and a CONNECT by another user with the pid leaves the session to
/// its owner.
async fn every_room_resumes_where_it_stopped_and_a_leaked_pid_is_not_used_up(io: IoMode) {
    let Some(h) = server_with(io, &[], |b| {
        named_users(b.shards(1).topic(ns("chat:*", 100)))
    }) else {
        return;
    };
    // Publications from a client (the owner shard sequences and delivers them in one step).
    let mut p = connect_sio(&h, json!({"name": "pub"})).await;
    next_text(&mut p).await;
    let mut a = connect_sio(&h, json!({"name": "ann"})).await;
    let pid = pid_of(&next_text(&mut a).await);
    put(&mut a, r#"421["join","chat:1"]"#).await;
    assert!(next_text(&mut a).await.starts_with("431"));
    put(&mut a, r#"422["join","chat:2"]"#).await;
    assert!(next_text(&mut a).await.starts_with("432"));
    sio_publish(&mut p, 1, "chat:1").await;
    assert_eq!(event(&next_text(&mut a).await).0, json!({"n": 1}));
    sio_publish(&mut p, 2, "chat:2").await;
    let (d, offset) = event(&next_text(&mut a).await);
    assert_eq!(d, json!({"n": 2}));
    drop(a);
    wait_gone(&h, "chat:1").await;
    sio_publish(&mut p, 3, "chat:1").await;
    sio_publish(&mut p, 4, "chat:2").await;
    // Someone else with ann's pid: a fresh session, and ann's stays hers.
    let mut eve = connect_sio(&h, json!({"name": "eve", "pid": pid, "offset": offset})).await;
    let answer = next_text(&mut eve).await;
    assert!(
        answer.starts_with("40{") && pid_of(&answer) != pid,
        "{answer}"
    );
    drop(eve);
    let mut b = connect_sio(&h, json!({"name": "ann", "pid": pid, "offset": offset})).await;
    let (got, answer) = resumed(&mut b).await;
    assert_eq!(pid_of(&answer), pid, "recovered: {answer}");
    let mut ns: Vec<Value> = got.iter().map(|(d, _)| d["n"].clone()).collect();
    ns.sort_by_key(|n| n.as_u64());
    assert_eq!(ns, [json!(3), json!(4)], "each missed event once: {got:?}");
    drop((b, p));
    stop_server(h);
}
per_shell!(async fn every_room_resumes_where_it_stopped_and_a_leaked_pid_is_not_used_up);

async fn a_gap_the_history_lost_or_an_unknown_pid_is_not_recovered(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect_sio(&h, json!({})).await;
    let pid = pid_of(&next_text(&mut a).await);
    put(&mut a, r#"421["join","small:1"]"#).await;
    assert!(next_text(&mut a).await.starts_with("431"));
    publish(&h, "small:1", 1);
    let (_, offset) = event(&next_text(&mut a).await);
    drop(a);
    wait_gone(&h, "small:1").await;
    // Four more: the history keeps two, so offsets 2 and 3 are gone.
    for n in 2..=5 {
        publish(&h, "small:1", n);
    }
    let mut b = connect_sio(&h, json!({"pid": pid, "offset": offset})).await;
    let answer = next_text(&mut b).await;
    let fresh = pid_of(&answer);
    assert_ne!(fresh, pid, "not recovered: {answer}");
    // An unknown pid (or one already used) connects normally too.
    let mut c = connect_sio(&h, json!({"pid": pid, "offset": offset})).await;
    let answer = next_text(&mut c).await;
    assert!(
        answer.starts_with("40{") && pid_of(&answer) != pid,
        "{answer}"
    );
    drop((b, c));
    stop_server(h);
}
per_shell!(async fn a_gap_the_history_lost_or_an_unknown_pid_is_not_recovered);

fn send_durable(h: &ServerHandle, n: u64) -> u64 {
    let body = json!({"user": "ann", "event": "note", "data": {"n": n}, "durable": true});
    let v = common::cluster::api(h.local_addr(), "/api/v1/send", body);
    v["message_id"].as_u64().expect("message_id")
}

fn status(h: &ServerHandle, id: u64) -> String {
    let (st, v) = http_json(
        h.local_addr(),
        "GET",
        &format!("/api/v1/messages/{id}"),
        Some("k"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v["data"]["status"].as_str().unwrap_or_default().to_string()
}

async fn durable_sends_are_emits_with_an_ack(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = connect_sio(&h, json!({"name": "ann"})).await;
    assert!(next_text(&mut a).await.starts_with("40{"));
    let m1 = send_durable(&h, 1);
    // The ack id is the message's offset in the user's inbox.
    assert_eq!(next_text(&mut a).await, r#"421["note",{"n":1}]"#);
    put(&mut a, r#"431["ok"]"#).await;
    common::cluster::wait_for(|| status(&h, m1) == "acked", "acked").await;
    // Not acknowledged: written again to the user's next connection, with the same ack id.
    let m2 = send_durable(&h, 2);
    assert_eq!(next_text(&mut a).await, r#"422["note",{"n":2}]"#);
    drop(a);
    let mut b = connect_sio(&h, json!({"name": "ann"})).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(next_text(&mut b).await);
    }
    assert!(seen.iter().any(|t| t.starts_with("40{")), "{seen:?}");
    assert!(
        seen.contains(&r#"422["note",{"n":2}]"#.to_string()),
        "{seen:?}"
    );
    assert_ne!(status(&h, m2), "acked");
    put(&mut b, "432[]").await;
    common::cluster::wait_for(|| status(&h, m2) == "acked", "acked").await;
    drop(b);
    stop_server(h);
}
per_shell!(async fn durable_sends_are_emits_with_an_ack);

fn publish_plain(h: &ServerHandle, topic: &str, n: u64) -> Value {
    let body = json!({"topic": topic, "event": "message", "data": {"n": n}});
    common::cluster::api(h.local_addr(), "/api/v1/publish", body)
}

async fn rooms_belong_to_the_namespaces_they_were_joined_in(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut ws = connect_sio(&h, json!({})).await;
    assert!(next_text(&mut ws).await.starts_with("40{"));
    put(&mut ws, "40/chat,{}").await;
    assert!(next_text(&mut ws).await.starts_with("40/chat,{"));
    // Joined in /chat only: emitted there only.
    put(&mut ws, r#"42/chat,1["join","news"]"#).await;
    assert_eq!(next_text(&mut ws).await, "43/chat,1[]");
    publish_plain(&h, "news", 1);
    assert_eq!(next_text(&mut ws).await, r#"42/chat,["message",{"n":1}]"#);
    // Joined in / too: once on each, one delivery for the connection.
    put(&mut ws, r#"421["join","news"]"#).await;
    assert_eq!(next_text(&mut ws).await, "431[]");
    assert_eq!(publish_plain(&h, "news", 2)["delivered"], 1);
    assert_eq!(next_text(&mut ws).await, r#"42["message",{"n":2}]"#);
    assert_eq!(next_text(&mut ws).await, r#"42/chat,["message",{"n":2}]"#);
    // Left in /chat: / still has it.
    put(&mut ws, r#"42/chat,2["leave","news"]"#).await;
    assert_eq!(next_text(&mut ws).await, "43/chat,2[]");
    publish_plain(&h, "news", 3);
    publish_plain(&h, "news", 4);
    assert_eq!(next_text(&mut ws).await, r#"42["message",{"n":3}]"#);
    assert_eq!(next_text(&mut ws).await, r#"42["message",{"n":4}]"#);
    // Left in / as well: no subscription is left.
    put(&mut ws, r#"423["leave","news"]"#).await;
    assert_eq!(next_text(&mut ws).await, "433[]");
    assert_eq!(publish_plain(&h, "news", 5)["delivered"], 0);
    drop(ws);
    stop_server(h);
}
per_shell!(async fn rooms_belong_to_the_namespaces_they_were_joined_in);

/// Reads events until the CONNECT answer: `(missed events, answer)`.
async fn resumed(ws: &mut Ws) -> (Vec<(Value, String)>, String) {
    let mut got = Vec::new();
    loop {
        let t = next_text(ws).await;
        if t.starts_with("40") {
            return (got, t);
        }
        got.push(event(&t));
    }
}

/// A server on the redb store in `dir`.
fn redb_server(io: IoMode, dir: &std::path::Path) -> Option<ServerHandle> {
    let store = ringhub::store::redb::RedbStore::open(dir).expect("redb store");
    server_with(io, &[], |b| {
        named_users(b.topic(ns("chat:*", 100)).store(store))
    })
}

async fn a_clean_restart_keeps_the_sessions_of_connected_clients(io: IoMode) {
    let dir = tempfile::tempdir().unwrap();
    let Some(h) = redb_server(io, dir.path()) else {
        return;
    };
    let mut a = connect_sio(&h, json!({"name": "ann"})).await;
    let pid = pid_of(&next_text(&mut a).await);
    put(&mut a, r#"421["join","chat:1"]"#).await;
    assert!(next_text(&mut a).await.starts_with("431"));
    publish(&h, "chat:1", 1);
    let (_, offset) = event(&next_text(&mut a).await);
    // Still connected when the server stops: the shutdown writes its session.
    stop_server(h);
    drop(a);
    let h = redb_server(io, dir.path()).expect("restarted");
    publish(&h, "chat:1", 2);
    publish(&h, "chat:1", 3);
    // Another user with ann's pid: a new session; the store keeps ann's for her.
    let mut eve = connect_sio(&h, json!({"name": "eve", "pid": pid, "offset": offset})).await;
    let (_, answer) = resumed(&mut eve).await;
    assert_ne!(pid_of(&answer), pid, "{answer}");
    drop(eve);
    let mut b = connect_sio(&h, json!({"name": "ann", "pid": pid, "offset": offset})).await;
    // Sent before the store answered: held, then handled after the CONNECT answer.
    put(&mut b, r#"421["join","chat:2"]"#).await;
    let (got, answer) = resumed(&mut b).await;
    assert_eq!(pid_of(&answer), pid, "recovered after the restart");
    let ns: Vec<Value> = got.iter().map(|(d, _)| d["n"].clone()).collect();
    assert_eq!(ns, [json!(2), json!(3)]);
    assert!(next_text(&mut b).await.starts_with("431"));
    publish(&h, "chat:1", 4);
    assert_eq!(event(&next_text(&mut b).await).0, json!({"n": 4}));
    // Taken once: the same pid again is a new session.
    let mut c = connect_sio(&h, json!({"name": "ann", "pid": pid, "offset": offset})).await;
    let (_, answer) = resumed(&mut c).await;
    assert_ne!(pid_of(&answer), pid);
    drop((b, c));
    stop_server(h);
}
per_shell!(async fn a_clean_restart_keeps_the_sessions_of_connected_clients);

async fn a_session_dropped_on_one_node_resumes_on_another(io: IoMode) {
    let Some(redis) = common::redis::Redis::start() else {
        return;
    };
    let urls = [redis.url()];
    let settings = [
        ("store.backend", "redis"),
        ("topics", r#"[{"pattern": "chat:*", "history_size": 100}]"#),
    ];
    let Some(n1) = common::cluster::node_with(io, "n1", &urls, &settings) else {
        return;
    };
    let n2 = common::cluster::node_with(io, "n2", &urls, &settings).expect("n2");
    for n in [&n1, &n2] {
        let addr = n.local_addr();
        common::cluster::wait_for(|| common::cluster::ready(addr).0 == 200, "ready").await;
    }
    let mut a = connect_sio(&n1, json!({})).await;
    let pid = pid_of(&next_text(&mut a).await);
    put(&mut a, r#"421["join","chat:1"]"#).await;
    assert!(next_text(&mut a).await.starts_with("431"));
    publish(&n1, "chat:1", 1);
    let (_, offset) = event(&next_text(&mut a).await);
    drop(a);
    // The session reached Redis (polled state).
    let mut conn = redis.conn();
    let key = format!(
        "{}:sio:{pid}",
        ringhub::config::ClusterConfig::default().prefix
    );
    common::cluster::wait_for(
        || {
            ::redis::cmd("EXISTS")
                .arg(&key)
                .query::<i64>(&mut conn)
                .unwrap_or(0)
                == 1
        },
        "the session is in Redis",
    )
    .await;
    let ttl: i64 = ::redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(ttl > 0, "expires with socketio_recovery: {ttl}");
    publish(&n1, "chat:1", 2);
    let mut b = connect_sio(&n2, json!({"pid": pid, "offset": offset})).await;
    let (got, answer) = resumed(&mut b).await;
    assert_eq!(pid_of(&answer), pid, "recovered on the other node");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, json!({"n": 2}));
    publish(&n1, "chat:1", 3);
    assert_eq!(event(&next_text(&mut b).await).0, json!({"n": 3}));
    drop(b);
    common::cluster::stop(vec![n1, n2]);
}
per_shell!(async fn a_session_dropped_on_one_node_resumes_on_another);
