//! Every error code, replies, HTTP refusals, handlers and middleware over real sockets.

mod common;

use std::io::{Read, Write};

use common::*;
use futures_util::SinkExt;
use ringhub::{chain, Context, ErrorCode, HandlerError, HandlerResult, Message, Next};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMsg;

fn app(io: ringhub::IoMode) -> ringhub::Builder {
    let deny_secret = |ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>| {
        if msg.topic().starts_with("secret:") {
            return Err(HandlerError::forbidden("secret topics are closed"));
        }
        next.run(ctx, msg)
    };
    let tag = |ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>| {
        if msg.event() == "tagged" {
            ctx.send(msg.topic(), "tag", &"seen by middleware")?;
        }
        next.run(ctx, msg)
    };
    builder(io)
        .layer(chain(deny_secret, tag))
        .handle("chat:*", ringhub::pubsub)
        .handle("secret:*", ringhub::pubsub)
        .handle(
            "limit",
            |_: &mut Context<'_>, _: &Message<'_>| -> HandlerResult {
                Err(HandlerError::new(ErrorCode::RateLimited, "slow down"))
            },
        )
        .handle(
            "fail",
            |_: &mut Context<'_>, _: &Message<'_>| -> HandlerResult {
                Err(std::io::Error::other("disk on fire").into())
            },
        )
        .handle(
            "panic",
            |_: &mut Context<'_>, _: &Message<'_>| -> HandlerResult { panic!("handler bug") },
        )
        .handle(
            "sum",
            |ctx: &mut Context<'_>, msg: &Message<'_>| -> HandlerResult {
                let v: Vec<i64> = msg.data()?;
                ctx.reply(&v.iter().sum::<i64>())
            },
        )
        .handle_blocking(
            "slow:*",
            |ctx: &mut Context<'_>, msg: &Message<'_>| -> HandlerResult {
                // Runs on the pool; its reply and publication travel back through the shard inbox.
                ctx.subscribe("slow:done")?;
                ctx.reply(&format!("pooled {}", msg.event()))
            },
        )
}

fn check_err(v: serde_json::Value, id: Option<u64>, topic: &str, code: &str) {
    assert_eq!(v["event"], "error", "{v}");
    assert_eq!(v["data"]["code"], code, "{v}");
    assert_eq!(v["topic"], topic, "{v}");
    assert_eq!(v.get("id").and_then(|i| i.as_u64()), id, "{v}");
    assert!(
        v["data"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

async fn error_codes(io: ringhub::IoMode) {
    let Some(h) = start(app(io)) else { return };
    let mut ws = connect(&h, "/ws").await;
    // bad_request: invalid JSON (id recovered when possible), missing event, bad patterns, binary.
    ws.send(WsMsg::Text("{not json".into())).await.unwrap();
    check_err(recv(&mut ws).await, None, "", "bad_request");
    ws.send(WsMsg::Text(r#"{"topic":"chat:a","id":7,"data":}"#.into()))
        .await
        .unwrap();
    check_err(recv(&mut ws).await, None, "", "bad_request");
    send(&mut ws, json!({"topic":"chat:a","id":8})).await;
    check_err(recv(&mut ws).await, Some(8), "", "bad_request");
    send(&mut ws, json!({"event":"subscribe","topic":"a*b","id":9})).await;
    check_err(recv(&mut ws).await, Some(9), "a*b", "bad_request");
    send(&mut ws, json!({"event":"subscribe","topic":"","id":10})).await;
    check_err(recv(&mut ws).await, Some(10), "", "bad_request");
    let long = "x".repeat(257);
    send(&mut ws, json!({"event":"subscribe","topic":long,"id":11})).await;
    // Too long to be a topic: only a short prefix is echoed (issue #8).
    let short = format!("{}…", "x".repeat(64));
    check_err(recv(&mut ws).await, Some(11), &short, "bad_request");
    send(&mut ws, json!({"event":"say","topic":"chat:*","id":12})).await;
    check_err(recv(&mut ws).await, Some(12), "chat:*", "bad_request");
    ws.send(WsMsg::Binary(vec![1, 2, 3])).await.unwrap();
    check_err(recv(&mut ws).await, None, "", "bad_request");
    send(
        &mut ws,
        json!({"event":"x","topic":"sum","data":"nope","id":13}),
    )
    .await;
    check_err(recv(&mut ws).await, Some(13), "sum", "bad_request");
    // handler_not_found, forbidden (middleware), rate_limited, internal (error and panic).
    send(&mut ws, json!({"event":"x","topic":"nowhere","id":14})).await;
    check_err(
        recv(&mut ws).await,
        Some(14),
        "nowhere",
        "handler_not_found",
    );
    send(&mut ws, json!({"event":"x","topic":"secret:a","id":15})).await;
    check_err(recv(&mut ws).await, Some(15), "secret:a", "forbidden");
    send(&mut ws, json!({"event":"x","topic":"limit"})).await;
    check_err(recv(&mut ws).await, None, "limit", "rate_limited");
    send(&mut ws, json!({"event":"x","topic":"fail","id":16})).await;
    check_err(recv(&mut ws).await, Some(16), "fail", "internal");
    send(&mut ws, json!({"event":"x","topic":"panic","id":17})).await;
    check_err(recv(&mut ws).await, Some(17), "panic", "internal");
    // The connection survived all of that: replies still work.
    send(
        &mut ws,
        json!({"event":"x","topic":"sum","data":[1,2,39],"id":18}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"event":"reply","id":18,"topic":"sum","data":42})
    );
    send(&mut ws, json!({"event":"tagged","topic":"chat:a","id":19})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"topic":"chat:a","event":"tag","data":"seen by middleware"})
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({"event":"reply","id":19,"topic":"chat:a"})
    );
    // Blocking handler on the pool: reply and subscription come back through the shard.
    send(&mut ws, json!({"event":"work","topic":"slow:1","id":20})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"event":"reply","id":20,"topic":"slow:1","data":"pooled work"})
    );
    h.publish("slow:done", "done", &1).unwrap();
    assert_eq!(
        recv(&mut ws).await,
        json!({"topic":"slow:done","event":"done","data":1})
    );
    assert!(
        h.stats().errors >= 14,
        "errors are counted: {:?}",
        h.stats()
    );
    drop(ws);
    h.shutdown();
    h.join();
}

per_shell!(async fn error_codes);

/// Sends a raw HTTP request and returns the status line.
fn http_status(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

per_shell!(fn http_refusals_get_proper_responses);
fn http_refusals_get_proper_responses(io: ringhub::IoMode) {
    {
        let Some(h) = start(builder(io).pubsub()) else {
            return;
        };
        let a = h.local_addr();
        assert_eq!(
            http_status(
                a,
                "GET /nope HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n"
            ),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            http_status(
                a,
                "GET /ws HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n"
            ),
            "HTTP/1.1 426 Upgrade Required"
        );
        let post = "POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(http_status(a, post), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(
            http_status(a, "\x16\x03\x01garbage\r\n\r\n"),
            "HTTP/1.1 400 Bad Request"
        );
        let huge = format!("GET /ws HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            http_status(a, &huge),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        assert!(h.stats().handshake_failures >= 5);
        h.shutdown();
        h.join();
    }
}

/// A huge topic (or pattern) is quoted back as a short prefix, not copied (twice) into the error.
async fn long_input_is_not_echoed(io: ringhub::IoMode) {
    let Some(h) = start(app(io)) else { return };
    let mut ws = connect(&h, "/ws").await;
    // ~1 MB (just under the message limit), with a control character.
    let topic = format!("chat:\u{7}{}", "x".repeat(1_000_000));
    for (event, code) in [("subscribe", "bad_request"), ("message", "bad_request")] {
        ws.send(WsMsg::Text(
            json!({"topic": topic, "event": event, "id": 5}).to_string(),
        ))
        .await
        .unwrap();
        let m = loop {
            match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut ws))
                .await
                .expect("reply timed out")
                .expect("stream ended")
                .expect("ws error")
            {
                WsMsg::Text(t) => break t,
                WsMsg::Ping(_) | WsMsg::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(m.len() < 1024, "{event}: error reply of {} bytes", m.len());
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["data"]["code"], code, "{v}");
        assert_eq!(v["id"], 5, "{v}");
        let msg = v["data"]["message"].as_str().unwrap();
        assert!(msg.contains("chat:\\u{7}x"), "escaped prefix quoted: {msg}");
        assert!(msg.contains("bytes)"), "says how long the input was: {msg}");
        assert!(
            !msg.contains('\u{7}'),
            "control characters are escaped: {msg}"
        );
    }
    // A valid but unknown topic: quoted once, escaped, short.
    let long = format!("nohandler:{}", "y".repeat(200));
    send(&mut ws, json!({"topic": long, "event": "e", "id": 6})).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["data"]["code"], "handler_not_found", "{v}");
    assert_eq!(v["topic"], long, "a valid topic is echoed for correlation");
    assert!(v["data"]["message"].as_str().unwrap().len() < 120, "{v}");
    drop(ws);
    h.shutdown();
    h.join();
}

per_shell!(async fn long_input_is_not_echoed);

/// Sends a raw request and returns the whole response.
fn http_response(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn strict_http(io: ringhub::IoMode) {
    let Some(h) = start(builder(io).api_key("k").pubsub()) else {
        return;
    };
    let a = h.local_addr();
    let up = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert!(http_response(a, &format!("{up}\r\n")).starts_with("HTTP/1.1 101 "));
    let http10 = format!("{up}\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1);
    let r = http_response(a, &http10);
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(r.contains("HTTP/1.1"), "{r}");
    let r = http_response(
        a,
        &format!("{up}Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    let r = http_response(a, &format!("{up}Sec-WebSocket-Version: 8\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 426 "), "{r}");
    let body = r#"{"topic":"a","event":"e"}"#;
    for cl in [
        "Content-Length: +25\r\n",
        "Content-Length: 25\r\nContent-Length: 26\r\n",
        "Content-Length: 2_5\r\n",
    ] {
        let req = format!(
            "POST /api/v1/publish HTTP/1.1\r\nConnection: close\r\nHost: x\r\nAuthorization: Bearer k\r\n{cl}\r\n{body}"
        );
        let r = http_response(a, &req);
        assert!(r.starts_with("HTTP/1.1 400 "), "{cl:?}: {r}");
    }
    h.shutdown();
    h.join();
}

per_shell!(fn strict_http);
