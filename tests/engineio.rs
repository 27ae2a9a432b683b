//! The bare Engine.IO endpoint (`Builder::engineio`) on both shells, spoken by hand: messages
//! reach the endpoint's handler and come back over WebSocket (tokio-tungstenite) and
//! long-polling (raw HTTP, each request on a new connection, so on any shard), publications
//! reach a bare client as messages of their data, and a polling session upgrades to WebSocket.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use ringhub::{Config, Context, HandlerError, HandlerResult, IoMode, Message, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMsg;

const WS: &str = "/engine.io/?EIO=4&transport=websocket";
const POLL: &str = "/engine.io/?EIO=4&transport=polling";

/// The endpoint's application: `sub` subscribes to `news`, `fail` fails, anything else
/// (text or bytes) is echoed.
fn app(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    match msg.data::<String>().ok().as_deref() {
        Some("sub") => {
            ctx.subscribe("news")?;
            ctx.send(msg.topic(), "message", "subscribed")
        }
        Some("fail") => Err(HandlerError::bad_request("no")),
        _ => {
            ctx.send_raw(msg.topic(), msg.event(), msg.data_raw());
            Ok(())
        }
    }
}

/// Pings far apart (no ping comes during a test), two shards; `/socket.io/` served too.
fn server(io: IoMode) -> Option<ServerHandle> {
    let cfg = Config {
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    start(
        builder_with(io, cfg)
            .api_key("k")
            .engineio("/engine.io/", "eio")
            .handle("eio", app),
    )
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

async fn next_text(ws: &mut Ws) -> String {
    match next_msg(ws).await {
        WsMsg::Text(t) => t.to_string(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn put(ws: &mut Ws, text: &str) {
    ws.send(WsMsg::Text(text.into())).await.expect("send");
}

/// The OPEN packet's fields.
fn open_packet(text: &str) -> Value {
    serde_json::from_str(text.strip_prefix('0').expect("OPEN")).expect("JSON")
}

/// One request on a new connection: (status, body).
fn once(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, out) = http_exchange(addr, &req);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

async fn websocket_echo_and_publications(io: IoMode) {
    let Some(h) = server(io) else { return };
    let mut ws = connect(&h, WS).await;
    let open = open_packet(&next_text(&mut ws).await);
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], 20_000);
    assert_eq!(open["pingTimeout"], 40_000);
    // Text and bytes come back as they went; `40` is a message like any other here (a
    // Socket.IO CONNECT would be answered `40{"sid":..}`).
    for text in ["4hello", "4", "4héllo \"quoted\"", "40"] {
        put(&mut ws, text).await;
        assert_eq!(next_text(&mut ws).await, text);
    }
    ws.send(WsMsg::Binary(vec![1, 2, 3, 4]))
        .await
        .expect("send");
    match next_msg(&mut ws).await {
        WsMsg::Binary(b) => assert_eq!(&b[..], [1, 2, 3, 4]),
        other => panic!("{other:?}"),
    }
    // A handler's error arrives as the `/ws` error envelope's JSON.
    put(&mut ws, "4fail").await;
    let err: Value = serde_json::from_str(&next_text(&mut ws).await[1..]).expect("JSON");
    assert_eq!(
        (&err["event"], &err["data"]["code"]),
        (&json!("error"), &json!("bad_request"))
    );
    // A handler subscribes the connection: publications reach it as messages of their data.
    put(&mut ws, "4sub").await;
    assert_eq!(next_text(&mut ws).await, "4subscribed");
    for (data, want) in [(json!("hi"), "4hi"), (json!({"n": 1}), r#"4{"n":1}"#)] {
        let body = json!({"topic": "news", "event": "e", "data": data});
        let (status, answer) = http_json(
            h.local_addr(),
            "POST",
            "/api/v1/publish",
            Some("k"),
            Some(&body),
        );
        assert_eq!(
            (status, &answer["data"]["delivered"]),
            (200, &json!(1)),
            "{answer}"
        );
        assert_eq!(next_text(&mut ws).await, want);
    }
    // The server's probe answer and the client's close, as on `/socket.io/`.
    put(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws).await, "3probe");
    put(&mut ws, "abc").await;
    assert_eq!(expect_close(&mut ws).await, 1002.into());
    drop(ws);
    stop_server(h);
}
per_shell!(async fn websocket_echo_and_publications);

/// The packets of the next GETs until `n` are in (one GET may carry fewer).
fn poll(addr: SocketAddr, sid: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let (status, body) = once(addr, "GET", &format!("{POLL}&sid={sid}"), "");
        assert_eq!(status, 200, "{body}");
        got.extend(body.split('\x1e').map(str::to_string));
    }
    got
}

async fn polling_echo_and_upgrade(io: IoMode) {
    let Some(h) = server(io) else { return };
    let addr = h.local_addr();
    let (status, body) = once(addr, "GET", POLL, "");
    assert_eq!(status, 200, "{body}");
    let open = open_packet(&body);
    assert_eq!(open["upgrades"], json!(["websocket"]));
    let sid = open["sid"].as_str().expect("sid").to_string();
    let path = format!("{POLL}&sid={sid}");
    // Text and a binary message (base64 over polling) in one POST, back in order.
    assert_eq!(
        once(addr, "POST", &path, "4hello\x1ebAQIDBA=="),
        (200, "ok".into())
    );
    assert_eq!(poll(addr, &sid, 2), ["4hello", "bAQIDBA=="]);
    // The upgrade: probe, the waiting poll ended, then messages over the WebSocket.
    let mut ws = connect(&h, &format!("{WS}&sid={sid}")).await;
    put(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws).await, "3probe");
    assert_eq!(once(addr, "GET", &path, ""), (200, "6".into()));
    put(&mut ws, "5").await;
    put(&mut ws, "4after").await;
    assert_eq!(next_text(&mut ws).await, "4after");
    let (status, body) = once(addr, "GET", &path, "");
    assert_eq!(
        (status, body),
        (400, r#"{"code":3,"message":"Bad request"}"#.into())
    );
    // A bad payload ends a polling session: 400, then its sid is unknown.
    let (_, body) = once(addr, "GET", POLL, "");
    let sid = open_packet(&body)["sid"].as_str().expect("sid").to_string();
    let path = format!("{POLL}&sid={sid}");
    assert_eq!(once(addr, "POST", &path, "abc").0, 400);
    let (status, body) = once(addr, "GET", &path, "");
    assert_eq!(
        (status, body),
        (400, r#"{"code":1,"message":"Session ID unknown"}"#.into())
    );
    drop(ws);
    stop_server(h);
}
per_shell!(async fn polling_echo_and_upgrade);

/// The bare endpoint is off unless configured, and a path another endpoint has is refused.
#[test]
fn endpoint_is_configured() {
    let cfg = Config {
        ping_interval: Duration::from_secs(20),
        ..Config::default()
    };
    let h = start(builder_with(IoMode::Epoll, cfg).pubsub()).expect("epoll");
    assert_eq!(
        http_exchange(
            h.local_addr(),
            &format!("GET {POLL} HTTP/1.1\r\nHost: x\r\n\r\n")
        )
        .0,
        404
    );
    stop_server(h);
    for path in ["/socket.io/", "/ws", "engine.io", "/admin/", "/"] {
        let built = builder(IoMode::Epoll).engineio(path, "eio").build();
        assert!(built.is_err(), "{path}");
    }
    let built = builder(IoMode::Epoll)
        .engineio("/eio", "bad topic*x")
        .build();
    assert!(built.is_err());
}

/// There is no CONNECT: `on_connect` decides at the handshake, on both transports, with the
/// endpoint's path and query; its user and topics apply to the session.
async fn on_connect_admits_at_the_handshake(io: IoMode) {
    use ringhub::hooks::{ConnectInfo, ConnectOutcome};
    let cfg = Config {
        ping_interval: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(60),
        ..Config::default()
    };
    let b = builder_with(io, cfg)
        .api_key("k")
        .engineio("/engine.io/", "eio")
        .handle("eio", app)
        .on_connect(|c: &ConnectInfo<'_>| {
            let query = c.query.unwrap_or("");
            if c.path != "/engine.io/" || query.contains("deny") {
                return Err(HandlerError::forbidden("not you"));
            }
            let user = query.split('&').find_map(|kv| kv.strip_prefix("user="));
            Ok(ConnectOutcome {
                user: user.map(str::to_string),
                topics: vec!["lobby".into()],
                ..Default::default()
            })
        });
    let Some(h) = start(b) else { return };
    let addr = h.local_addr();
    let (status, _) = once(addr, "GET", &format!("{POLL}&deny=1"), "");
    assert_eq!(status, 403);
    let url = format!("ws://{addr}{WS}&deny=1");
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("{other:?}"),
    }
    let mut ws = connect(&h, &format!("{WS}&user=ann")).await;
    open_packet(&next_text(&mut ws).await);
    let (_, body) = once(addr, "GET", &format!("{POLL}&user=bob"), "");
    let sid = open_packet(&body)["sid"].as_str().expect("sid").to_string();
    // Both joined `lobby` at the handshake; a send to ann's user reaches her alone.
    let body = json!({"topic": "lobby", "event": "e", "data": "all"});
    let (_, answer) = http_json(addr, "POST", "/api/v1/publish", Some("k"), Some(&body));
    assert_eq!(answer["data"]["delivered"], 2, "{answer}");
    let body = json!({"user": "ann", "event": "dm", "data": "just you"});
    let (_, answer) = http_json(addr, "POST", "/api/v1/send", Some("k"), Some(&body));
    assert_eq!(answer["data"]["delivered"], 1, "{answer}");
    assert_eq!(next_text(&mut ws).await, "4all");
    assert_eq!(next_text(&mut ws).await, "4just you");
    assert_eq!(poll(addr, &sid, 1), ["4all"]);
    drop(ws);
    stop_server(h);
}
per_shell!(async fn on_connect_admits_at_the_handshake);
