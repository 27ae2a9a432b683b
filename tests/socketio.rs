//! Socket.IO on both shells, spoken by hand: Engine.IO v4 over WebSocket with tokio-tungstenite
//! (the handshake, namespaces, auth, events routed to handlers, acks, rooms, binary attachments,
//! heartbeats and protocol errors) and over long-polling with raw HTTP (`socketio/polling.rs`).
//! `tests/socketio/` runs the real `socket.io-client`.

mod common;
#[path = "socketio/polling.rs"]
mod polling;
#[path = "socketio/polling_kept.rs"]
mod polling_kept;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use ringhub::{Config, Context, HandlerError, HandlerResult, IoMode, Message, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMsg;

const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The next Engine.IO text packet, answering server pings (`2`) on the way.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match next_msg(ws).await {
            WsMsg::Text(t) if t == "2" => ws.send(WsMsg::Text("3".into())).await.expect("pong"),
            WsMsg::Text(t) => return t,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn next_msg(ws: &mut Ws) -> WsMsg {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("recv timed out")
            .expect("stream ended")
            .expect("ws error");
        if !matches!(m, WsMsg::Ping(_) | WsMsg::Pong(_)) {
            return m;
        }
    }
}

async fn put(ws: &mut Ws, text: &str) {
    ws.send(WsMsg::Text(text.into())).await.expect("send");
}

/// Opens the Engine.IO session and checks the OPEN packet.
async fn open(h: &ServerHandle) -> Ws {
    let mut ws = connect(h, PATH).await;
    let t = next_text(&mut ws).await;
    let v: Value = serde_json::from_str(t.strip_prefix('0').expect("OPEN")).expect("JSON");
    assert!(v["sid"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert_eq!(v["upgrades"], json!([]));
    assert!(v["pingInterval"].as_u64().is_some() && v["pingTimeout"].as_u64().is_some());
    assert!(v["maxPayload"].as_u64().is_some_and(|n| n > 0));
    ws
}

/// Opens a session and connects namespace `nsp` with `auth`; returns the CONNECT answer.
async fn join_nsp(ws: &mut Ws, nsp: &str, auth: Value) -> String {
    let prefix = if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    };
    put(ws, &format!("40{prefix}{auth}")).await;
    next_text(ws).await
}

async fn client(h: &ServerHandle) -> Ws {
    let mut ws = open(h).await;
    let a = join_nsp(&mut ws, "/", json!({})).await;
    assert!(a.starts_with("40{\"sid\":"), "{a}");
    ws
}

/// `chat:join` joins `chat:<conversationId>` (the seed's event) and answers the room;
/// `chat:fail` fails; everything else is plain pub/sub.
fn chat_join(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    if msg.topic() == "chat:fail" {
        return Err(HandlerError::bad_request("nope"));
    }
    let v: Value = msg.data()?;
    let room = format!("chat:{}", v["conversationId"]);
    ctx.join(&room)?;
    ctx.reply(&json!({ "joined": room }))
}

fn server(io: IoMode) -> Option<ServerHandle> {
    let cfg = Config {
        socketio_namespaces: vec!["/".into(), "/chat".into()],
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    start(
        builder_with(io, cfg)
            .api_key("k")
            .pubsub()
            .handle("chat:join", chat_join)
            .handle("chat:fail", chat_join),
    )
}

async fn handshake_namespaces_and_heartbeat(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut ws = open(&h).await;
    assert_eq!(
        join_nsp(&mut ws, "/nope", json!({})).await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    let a = join_nsp(&mut ws, "/chat", json!({})).await;
    assert!(a.starts_with("40/chat,{\"sid\":"), "{a}");
    // The server pings on its own (answered by next_text); a probe is answered too.
    put(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws).await, "3probe");
    match next_msg(&mut ws).await {
        WsMsg::Text(t) => assert_eq!(t, "2", "a server ping"),
        other => panic!("{other:?}"),
    }
    drop(ws);
    stop_server(h);
}
per_shell!(async fn handshake_namespaces_and_heartbeat);

async fn events_acks_and_rooms(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = client(&h).await;
    let mut b = client(&h).await;
    // A handler joins the room and answers the ack.
    put(&mut a, r#"421["chat:join",{"conversationId":7}]"#).await;
    assert_eq!(next_text(&mut a).await, r#"431[{"joined":"chat:7"}]"#);
    // The default events: join (twice matching: once delivered), publish with an ack.
    put(&mut b, r#"422["join","chat:7"]"#).await;
    assert_eq!(next_text(&mut b).await, "432[]");
    put(&mut b, r#"423["join","chat:*"]"#).await;
    assert_eq!(next_text(&mut b).await, "433[]");
    put(
        &mut a,
        r#"424["publish",{"topic":"chat:7","event":"message","data":{"text":"hi"}}]"#,
    )
    .await;
    assert_eq!(next_text(&mut a).await, r#"42["message",{"text":"hi"}]"#);
    assert_eq!(next_text(&mut a).await, "434[]");
    assert_eq!(next_text(&mut b).await, r#"42["message",{"text":"hi"}]"#);
    // An event named like the room publishes to it (the binary's pub/sub handler), and
    // exclude_sender keeps it from the sender (`socket.to(room).emit`).
    put(
        &mut b,
        r#"42["publish",{"topic":"chat:7","event":"typing","data":1,"exclude_sender":true}]"#,
    )
    .await;
    assert_eq!(next_text(&mut a).await, r#"42["typing",1]"#);
    put(&mut b, r#"425["chat:7",{"x":1},2]"#).await;
    assert_eq!(next_text(&mut b).await, r#"42["message",[{"x":1},2]]"#);
    assert_eq!(next_text(&mut b).await, "435[]");
    assert_eq!(next_text(&mut a).await, r#"42["message",[{"x":1},2]]"#);
    // A handler's error answers the ack; reserved events and no-ack errors are emitted.
    put(&mut a, r#"426["chat:fail",{}]"#).await;
    let e = next_text(&mut a).await;
    assert!(
        e.starts_with(r#"436[{"error":{"code":"bad_request""#),
        "{e}"
    );
    put(&mut a, r#"427["leave","chat:7"]"#).await;
    assert_eq!(next_text(&mut a).await, "437[]");
    put(&mut b, r#"42["chat:7","after leave"]"#).await;
    assert_eq!(next_text(&mut b).await, r#"42["message","after leave"]"#);
    put(
        &mut a,
        r#"428["publish",{"topic":"chat:7","event":"ping2","data":0}]"#,
    )
    .await;
    assert_eq!(next_text(&mut a).await, "438[]", "left: not delivered to a");
    drop((a, b));
    stop_server(h);
}
per_shell!(async fn events_acks_and_rooms);

async fn binary_attachments_both_ways(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut a = client(&h).await;
    let mut b = client(&h).await;
    put(&mut b, r#"421["join","files"]"#).await;
    assert_eq!(next_text(&mut b).await, "431[]");
    put(
        &mut a,
        r#"451-2["publish",{"topic":"files","event":"file","data":{"name":"x","body":{"_placeholder":true,"num":0}}}]"#,
    )
    .await;
    a.send(WsMsg::Binary(vec![1, 2, 3])).await.expect("send");
    assert_eq!(
        next_text(&mut b).await,
        r#"451-["file",{"name":"x","body":{"_placeholder":true,"num":0}}]"#
    );
    assert_eq!(next_msg(&mut b).await, WsMsg::Binary(vec![1, 2, 3]));
    drop((a, b));
    stop_server(h);
}
per_shell!(async fn binary_attachments_both_ways);

async fn namespace_home_and_ws_clients_share_rooms(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut s = open(&h).await;
    assert!(join_nsp(&mut s, "/chat", json!({}))
        .await
        .starts_with("40/chat,"));
    put(&mut s, r#"42/chat,1["join","news"]"#).await;
    assert_eq!(next_text(&mut s).await, "43/chat,1[]");
    let mut w = connect(&h, "/ws").await;
    subscribe(&mut w, "news", 1).await;
    let pubd = common::cluster::api(
        h.local_addr(),
        "/api/v1/publish",
        json!({"topic": "news", "event": "headline", "data": {"n": 1}}),
    );
    assert_eq!(pubd["delivered"], 2, "{pubd}");
    assert_eq!(next_text(&mut s).await, r#"42/chat,["headline",{"n":1}]"#);
    assert_eq!(recv(&mut w).await["event"], "headline");
    drop((s, w));
    stop_server(h);
}
per_shell!(async fn namespace_home_and_ws_clients_share_rooms);

async fn malformed_packets_close_with_1002(io: IoMode) {
    let Some(h) = server(io) else { return };
    for bad in ["9", "4x", "42{}", "451[\"a\"]"] {
        let mut ws = client(&h).await;
        put(&mut ws, bad).await;
        match next_msg(&mut ws).await {
            WsMsg::Close(Some(f)) => assert_eq!(u16::from(f.code), 1002, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Another client is not affected.
    let mut ok = client(&h).await;
    put(&mut ok, r#"421["join","x"]"#).await;
    assert_eq!(next_text(&mut ok).await, "431[]");
    // A transport that does not exist: Engine.IO's error body.
    let (status, body) = http_exchange(
        h.local_addr(),
        "GET /socket.io/?EIO=4&transport=flashsocket HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert!(
        body.contains(r#"{"code":0,"message":"Transport unknown"}"#),
        "{body}"
    );
    let (status, body) = http_exchange(
        h.local_addr(),
        "GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert!(body.contains(r#""code":5"#), "{body}");
    // CORS with credentials: the (allowed) origin is echoed, never `*`.
    assert!(
        body.contains("Access-Control-Allow-Origin: https://a.example\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Access-Control-Allow-Credentials: true\r\n"),
        "{body}"
    );
    drop(ok);
    stop_server(h);
}
per_shell!(async fn malformed_packets_close_with_1002);

async fn auth_token_in_the_connect_packet(io: IoMode) {
    let settings = [
        ("auth.jwt_secret", common::cluster::SECRET),
        ("auth.anonymous", "false"),
    ];
    let Some(h) = server_with(io, &settings, |b| b) else {
        return;
    };
    let mut ws = open(&h).await;
    let e = join_nsp(&mut ws, "/", json!({"token": "bad"})).await;
    let v: Value =
        serde_json::from_str(e.strip_prefix("44").expect("CONNECT_ERROR")).expect("JSON");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("unauthorized")),
        "{v}"
    );
    assert_eq!(v["data"]["code"], "unauthorized");
    let e = join_nsp(&mut ws, "/", json!({})).await;
    assert!(e.starts_with("44{"), "no token: {e}");
    let ok = join_nsp(
        &mut ws,
        "/",
        json!({"token": common::cluster::token("ann")}),
    )
    .await;
    assert!(ok.starts_with("40{\"sid\":"), "{ok}");
    // A send to the user reaches the Socket.IO connection.
    let sent = common::cluster::api(
        h.local_addr(),
        "/api/v1/send",
        json!({"users": ["ann"], "event": "dm", "data": "hello"}),
    );
    assert_eq!(sent["delivered"], 1, "{sent}");
    assert_eq!(next_text(&mut ws).await, r#"42["dm","hello"]"#);
    drop(ws);
    stop_server(h);
}
per_shell!(async fn auth_token_in_the_connect_packet);

async fn on_connect_permissions_and_origin(io: IoMode) {
    use ringhub::hooks::{ConnectInfo, ConnectOutcome};
    let settings = [
        ("permissions.subscribe", "public:*"),
        ("security.allowed_origins", "https://app.example.com"),
    ];
    let Some(h) = server_with(io, &settings, |b| {
        b.on_connect(|c: &ConnectInfo<'_>| {
            let auth: Value = c
                .auth
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default();
            if auth["deny"] == true {
                return Err(HandlerError::forbidden("go away"));
            }
            assert_eq!((c.path, c.query), ("/socket.io/", None));
            Ok(ConnectOutcome {
                user: auth["name"].as_str().map(str::to_string),
                ..Default::default()
            })
        })
    }) else {
        return;
    };
    // The origin allowlist applies to the upgrade: Engine.IO's 403 body.
    let (status, body) = http_exchange(
        h.local_addr(),
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, 403);
    assert!(
        body.contains(r#"{"code":4,"message":"Forbidden"}"#),
        "{body}"
    );
    // on_connect refuses with its message, or names the user.
    let mut ws = open(&h).await;
    let e = join_nsp(&mut ws, "/", json!({"deny": true})).await;
    assert!(e.starts_with(r#"44{"message":"refused: go away""#), "{e}");
    let ok = join_nsp(&mut ws, "/", json!({"name": "zoe"})).await;
    assert!(ok.starts_with("40{"), "{ok}");
    let sent = common::cluster::api(
        h.local_addr(),
        "/api/v1/send",
        json!({"users": ["zoe"], "event": "dm", "data": 1}),
    );
    assert_eq!(sent["delivered"], 1, "{sent}");
    assert_eq!(next_text(&mut ws).await, r#"42["dm",1]"#);
    // Permissions apply to the default events as to the envelopes they stand for.
    put(&mut ws, r#"421["join","secret"]"#).await;
    let e = next_text(&mut ws).await;
    assert!(e.starts_with(r#"431[{"error":{"code":"forbidden""#), "{e}");
    put(&mut ws, r#"422["join","public:1"]"#).await;
    assert_eq!(next_text(&mut ws).await, "432[]");
    drop(ws);
    stop_server(h);
}
per_shell!(async fn on_connect_permissions_and_origin);
