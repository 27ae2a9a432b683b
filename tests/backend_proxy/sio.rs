//! Socket.IO clients pass the same proxies, spoken in raw Engine.IO frames: the first CONNECT's
//! auth payload decides the connect (a refusal is a CONNECT_ERROR), `join` the subscribe proxy,
//! `publish` the publish proxy, `emit('rpc', {method, data}, ack)` the RPC proxy; packets sent
//! while a call is out are held in order.

use super::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMsg;

const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

fn sio_server(io: IoMode, proxy: ProxyConfig) -> Option<ServerHandle> {
    let cfg = Config {
        proxy,
        socketio_namespaces: vec!["/".into(), "/chat".into()],
        ..Config::default()
    };
    start(builder_with(io, cfg).api_key("k").pubsub())
}

/// The next Engine.IO text packet, answering server pings on the way.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("recv timed out")
            .expect("stream ended")
            .expect("ws error");
        match m {
            WsMsg::Text(t) if t == "2" => put(ws, "3").await,
            WsMsg::Text(t) => return t,
            WsMsg::Ping(_) | WsMsg::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn put(ws: &mut Ws, text: &str) {
    ws.send(WsMsg::Text(text.into())).await.expect("send");
}

/// An Engine.IO session, past its OPEN packet.
async fn open(h: &ServerHandle) -> Ws {
    let mut ws = connect(h, PATH).await;
    assert!(next_text(&mut ws).await.starts_with("0{"));
    ws
}

/// The JSON of a packet `<prefix><json>`.
fn body(packet: &str, prefix: &str) -> Value {
    let rest = packet
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{packet:?} does not start with {prefix:?}"));
    serde_json::from_str(rest).expect("JSON")
}

/// Connects `/` with the session token as the auth payload: the CONNECT answer, then the
/// `connected` event with the backend's data.
async fn login(h: &ServerHandle, token: &str) -> (Ws, Value) {
    let mut ws = open(h).await;
    put(&mut ws, &format!("40{}", json!({ "token": token }))).await;
    let ok = next_text(&mut ws).await;
    assert!(ok.starts_with("40{\"sid\":"), "{ok}");
    let hello = body(&next_text(&mut ws).await, "42");
    assert_eq!(hello[0], "connected", "{hello}");
    (ws, hello[1].clone())
}

async fn sio_connect_proxy(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = sio_server(io, proxies(&backend)) else {
        return;
    };
    let (mut alice, hello) = login(&h, "tok-alice").await;
    assert_eq!(hello["user"], "alice");
    assert_eq!(hello["data"], json!({"welcome": "hello alice"}));
    // The backend's topics are joined: a publication there reaches her.
    h.publish("announcements", "news", &json!("v2 is out"))
        .unwrap();
    assert_eq!(next_text(&mut alice).await, r#"42["news","v2 is out"]"#);
    // Another namespace with the same auth payload: connected, not asked again.
    put(&mut alice, r#"40/chat,{"token":"tok-alice"}"#).await;
    assert!(next_text(&mut alice).await.starts_with("40/chat,{\"sid\":"));
    // Refused: the client's `connect_error` with the backend's reason and code.
    let mut ws = open(&h).await;
    put(&mut ws, r#"40{"token":"tok-mallory"}"#).await;
    assert_eq!(
        body(&next_text(&mut ws).await, "44"),
        json!({"message":"banned","data":{"code":"forbidden","disconnect":4403}})
    );
    put(&mut ws, "40{}").await;
    assert_eq!(
        body(&next_text(&mut ws).await, "44"),
        json!({"message":"login required","data":{"code":"unauthorized","disconnect":4401}})
    );
    // A later CONNECT is asked again; the RPC sent right behind it waits for the answer (it
    // would be dropped on a namespace not connected yet) and is answered after it, in order.
    // Both in one write: the server reads the RPC while the CONNECT's call is out.
    for p in [
        r#"40{"token":"tok-bob"}"#,
        r#"421["rpc",{"method":"projects.mine"}]"#,
    ] {
        ws.feed(WsMsg::Text(p.into())).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    assert!(next_text(&mut ws).await.starts_with("40{\"sid\":"));
    assert_eq!(body(&next_text(&mut ws).await, "42")[1]["user"], "bob");
    assert_eq!(next_text(&mut ws).await, "431[[1,2]]");
    drop((alice, ws));
    stop_server(h);
}
per_shell!(async fn sio_connect_proxy);

async fn sio_join_publish_and_rpc(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = sio_server(io, proxies(&backend)) else {
        return;
    };
    let (mut alice, _) = login(&h, "tok-alice").await;
    let (mut bob, _) = login(&h, "tok-bob").await;
    // `join` asks the subscribe proxy: refused by the project rule, answered through the ack.
    put(&mut alice, r#"421["join","project:2"]"#).await;
    assert_eq!(
        body(&next_text(&mut alice).await, "431"),
        json!([{"error":{"code":"forbidden","message":"not a member of project 2"}}])
    );
    for ws in [&mut alice, &mut bob] {
        put(ws, r#"422["join","project:1"]"#).await;
        assert_eq!(
            next_text(ws).await,
            r#"42["subscribed",{"project":"Apollo"}]"#
        );
        assert_eq!(next_text(ws).await, "432[]");
    }
    // `publish` asks the publish proxy, which stamps the author.
    put(
        &mut alice,
        r#"423["publish",{"topic":"project:1","event":"comment","data":{"text":"ship it"},"exclude_sender":true}]"#,
    )
    .await;
    assert_eq!(next_text(&mut alice).await, "433[]");
    let got = body(&next_text(&mut bob).await, "42");
    assert_eq!(got[0], "comment");
    assert_eq!(got[1]["text"], "ship it");
    assert_eq!(got[1]["author"], "alice");
    // Refused where she is not a member.
    put(
        &mut alice,
        r#"424["publish",{"topic":"project:2","event":"comment","data":"hi"}]"#,
    )
    .await;
    assert_eq!(
        body(&next_text(&mut alice).await, "434")[0]["error"]["code"],
        "forbidden"
    );
    // RPC through the ack: the backend's data, or its error.
    put(
        &mut alice,
        r#"425["rpc",{"method":"projects.mine","data":{}}]"#,
    )
    .await;
    assert_eq!(next_text(&mut alice).await, "435[[1]]");
    put(&mut alice, r#"426["rpc",{"method":"nope"}]"#).await;
    assert_eq!(
        body(&next_text(&mut alice).await, "436"),
        json!([{"error":{"code":"bad_request","message":"no method nope"}}])
    );
    drop((alice, bob));
    stop_server(h);
}
per_shell!(async fn sio_join_publish_and_rpc);

/// One HTTP/1.1 request on a connection of its own (`Connection: close`): the response body.
async fn http(h: &ServerHandle, method: &str, target: &str, cookie: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(GUARD, s.read_to_end(&mut got))
        .await
        .expect("response timed out")
        .unwrap();
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A long-polling client passes the connect proxy like a WebSocket one: the allowlisted headers
/// of its handshake (here the session cookie, with no token in the auth payload) reach the
/// backend at its first CONNECT.
async fn sio_polling_forwards_the_handshake_headers(io: IoMode) {
    let backend = Backend::start();
    let mut proxy = proxies(&backend);
    let mut connect = ProxyEndpoint::new(backend.url("/connect"));
    connect.headers = vec!["cookie".into()];
    proxy.connect = Some(Arc::new(connect));
    let Some(h) = sio_server(io, proxy) else {
        return;
    };
    let cookie = "theme=dark; session=tok-bob";
    let base = "/socket.io/?EIO=4&transport=polling";
    let open = http(&h, "GET", base, cookie, "").await;
    let sid = body(&open, "0")["sid"].as_str().unwrap().to_string();
    let at = format!("{base}&sid={sid}");
    // The cookie comes with the handshake only: the CONNECT's own request carries none.
    assert_eq!(http(&h, "POST", &at, "", "40").await, "ok");
    let mut packets = Vec::new();
    while !packets.iter().any(|p: &String| p.starts_with("42")) {
        let got = http(&h, "GET", &at, "", "").await;
        packets.extend(got.split('\u{1e}').map(str::to_string));
    }
    assert!(packets[0].starts_with("40{\"sid\":"), "{packets:?}");
    let hello = packets.iter().find(|p| p.starts_with("42")).unwrap();
    let hello = body(hello, "42");
    assert_eq!(hello[0], "connected", "{hello}");
    assert_eq!(hello[1]["user"], "bob", "{hello}");
    stop_server(h);
}
per_shell!(async fn sio_polling_forwards_the_handshake_headers);
