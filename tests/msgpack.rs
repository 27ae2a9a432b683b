//! MessagePack binary frames (subprotocol `ringhub.msgpack`) on both shells and under TLS, with
//! tokio-tungstenite and rmpv as the independent client: negotiation, mixed JSON and MessagePack
//! subscribers of one topic (each gets its format, encoded once per publication per shard:
//! `ringhub_encodings_total{format="msgpack"}`), bytes in `data` both ways, and a bad message
//! answered `bad_request` with the connection and the others going on.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use ringhub::{IoMode, ServerHandle};
use rmpv::Value as Mp;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::WebSocketStream;

const PROTOCOL: &str = "ringhub.msgpack";

/// Opens `/ws` offering the subprotocol; asserts the server chose it.
async fn packed(h: &ServerHandle) -> Ws {
    let mut req = format!("ws://{}/ws", h.local_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", PROTOCOL.parse().unwrap());
    let (ws, resp) = tokio::time::timeout(GUARD, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect timed out")
        .expect("connect");
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        PROTOCOL
    );
    ws
}

fn pack(v: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn map(pairs: &[(&str, Mp)]) -> Mp {
    Mp::Map(
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    )
}

async fn send_mp<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, v: &Mp) {
    ws.send(WsMsg::Binary(pack(v))).await.expect("send");
}

/// The next message, which must be a binary MessagePack frame.
async fn recv_mp<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Mp {
    loop {
        let m = tokio::time::timeout(GUARD, ws.next())
            .await
            .expect("recv timed out")
            .expect("stream ended")
            .expect("ws error");
        match m {
            WsMsg::Binary(b) => {
                let mut at = b.as_slice();
                let v = rmpv::decode::read_value(&mut at).expect("MessagePack");
                assert!(at.is_empty(), "one value per frame");
                return v;
            }
            WsMsg::Ping(_) | WsMsg::Pong(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

async fn subscribe_mp<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    topic: &str,
    id: u64,
) {
    let req = map(&[
        ("event", "subscribe".into()),
        ("topic", topic.into()),
        ("id", id.into()),
    ]);
    send_mp(ws, &req).await;
    let want = map(&[
        ("event", "reply".into()),
        ("id", id.into()),
        ("topic", topic.into()),
    ]);
    assert_eq!(recv_mp(ws).await, want);
}

/// Three MessagePack and two JSON subscribers on one shard: each gets every publication in its
/// format, and the MessagePack frame is made once per publication, whatever the count.
async fn mixed_subscribers_encoded_once_per_format(io: IoMode) {
    let Some(h) = start(builder(io).shards(1).pubsub()) else {
        return;
    };
    let mut mps = Vec::new();
    for i in 0..3 {
        let mut ws = packed(&h).await;
        subscribe_mp(&mut ws, "mix", i).await;
        mps.push(ws);
    }
    let mut jsons = Vec::new();
    for i in 0..2 {
        let mut ws = connect(&h, "/ws").await;
        subscribe(&mut ws, "mix", i).await;
        jsons.push(ws);
    }
    let before = h.stats().msgpack_encodings;
    for n in 0..5u64 {
        h.publish("mix", "tick", &json!({"n": n, "s": "x"}))
            .unwrap();
    }
    for n in 0..5u64 {
        for ws in &mut mps {
            let v = recv_mp(ws).await;
            let want = map(&[
                ("topic", "mix".into()),
                ("event", "tick".into()),
                ("data", map(&[("n", n.into()), ("s", "x".into())])),
            ]);
            assert_eq!(v, want);
        }
        for ws in &mut jsons {
            assert_eq!(
                recv(ws).await,
                json!({"topic": "mix", "event": "tick", "data": {"n": n, "s": "x"}})
            );
        }
    }
    assert_eq!(
        h.stats().msgpack_encodings - before,
        5,
        "once per publication"
    );
    let (status, body) = http_exchange(
        h.local_addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let total = h.stats().msgpack_encodings;
    assert!(
        body.contains(&format!(
            "ringhub_encodings_total{{format=\"msgpack\"}} {total}"
        )),
        "{body}"
    );
    h.shutdown();
}
per_shell!(async fn mixed_subscribers_encoded_once_per_format);

/// `bin` from a MessagePack publisher: `bin` to a MessagePack subscriber, `{"$bin": base64}` to
/// a JSON one; that object from a JSON publisher is `bin` again to MessagePack.
async fn bytes_in_data(io: IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut a = packed(&h).await;
    let mut b = packed(&h).await;
    let mut j = connect(&h, "/ws").await;
    subscribe_mp(&mut b, "bytes", 1).await;
    subscribe(&mut j, "bytes", 1).await;
    let bytes = vec![0u8, 1, 2, 0xff, b'"'];
    let data = map(&[("file", Mp::Binary(bytes.clone())), ("f", 0.25.into())]);
    let publication = map(&[
        ("topic", "bytes".into()),
        ("event", "upload".into()),
        ("data", data.clone()),
        ("id", 9.into()),
    ]);
    send_mp(&mut a, &publication).await;
    let reply = map(&[
        ("event", "reply".into()),
        ("id", 9.into()),
        ("topic", "bytes".into()),
    ]);
    assert_eq!(recv_mp(&mut a).await, reply);
    assert_eq!(recv_mp(&mut b).await["data"], data);
    let got = recv(&mut j).await;
    assert_eq!(
        got["data"],
        json!({"file": {"$bin": "AAEC/yI="}, "f": 0.25})
    );

    send(
        &mut j,
        json!({"topic": "bytes", "event": "back", "data": [{"$bin": "AAEC/yI="}, {"$bin": "no"}]}),
    )
    .await;
    let v = recv_mp(&mut b).await;
    assert_eq!(v["data"][0], Mp::Binary(bytes));
    assert_eq!(
        v["data"][1],
        map(&[("$bin", "no".into())]),
        "not base64: a map"
    );
    h.shutdown();
}
per_shell!(async fn bytes_in_data);

/// Bad MessagePack is answered `bad_request` (in MessagePack); the connection and the others
/// go on. Without the subprotocol a binary frame is refused as before, in JSON.
async fn bad_messages_are_bad_requests(io: IoMode) {
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut a = packed(&h).await;
    let mut other = packed(&h).await;
    subscribe_mp(&mut other, "after", 1).await;
    let bad: [&[u8]; 5] = [
        &[0x82, 0xa1],                   // truncated
        &[0xc1],                         // reserved
        &[0x81, 0xa4, b'd', b'a', b't'], // truncated key
        &[0x81, 0x01, 0x02],             // integer key
        &[0x91, 0xd6, 0xff, 0, 0, 0, 1], // a timestamp (extension)
    ];
    for msg in bad {
        a.send(WsMsg::Binary(msg.to_vec())).await.unwrap();
        let e = recv_mp(&mut a).await;
        assert_eq!(e["event"], Mp::from("error"), "{msg:x?}");
        assert_eq!(e["data"]["code"], Mp::from("bad_request"), "{msg:x?}");
    }
    // A valid MessagePack value that is no envelope: the JSON protocol's error, in MessagePack.
    send_mp(&mut a, &map(&[("topic", "x".into()), ("id", 4.into())])).await;
    let e = recv_mp(&mut a).await;
    assert_eq!(
        (e["id"].as_u64(), e["data"]["code"].as_str()),
        (Some(4), Some("bad_request"))
    );
    // Text JSON is still understood on a MessagePack connection; answers are MessagePack.
    send(
        &mut a,
        json!({"event": "subscribe", "topic": "after", "id": 2}),
    )
    .await;
    assert_eq!(recv_mp(&mut a).await["id"], Mp::from(2));
    h.publish("after", "e", &1).unwrap();
    assert_eq!(recv_mp(&mut a).await["data"], Mp::from(1));
    assert_eq!(recv_mp(&mut other).await["data"], Mp::from(1));

    let mut plain = connect(&h, "/ws").await;
    plain.send(WsMsg::Binary(pack(&map(&[])))).await.unwrap();
    let e = recv(&mut plain).await;
    assert_eq!(e["data"]["code"], "bad_request");
    h.shutdown();
}
per_shell!(async fn bad_messages_are_bad_requests);

/// Under TLS: negotiated, and frames both ways are MessagePack.
async fn msgpack_under_tls(io: IoMode) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ringhub-msgpack-{}-{io:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let Some(h) = server_with(
        io,
        &[
            ("tls.cert_file", dir.join("cert.pem").to_str().unwrap()),
            ("tls.key_file", dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b,
    ) else {
        return;
    };
    let tcp = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_connector(cert.cert.der().clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut req = format!("wss://localhost:{}/ws", h.local_addr().port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", PROTOCOL.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("wss upgrade");
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        PROTOCOL
    );
    subscribe_mp(&mut ws, "secure", 1).await;
    h.publish("secure", "e", &json!({"ok": true})).unwrap();
    let v = recv_mp(&mut ws).await;
    assert_eq!(v["data"], map(&[("ok", true.into())]));
    h.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
per_shell!(async fn msgpack_under_tls);
