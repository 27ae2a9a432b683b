//! The bare Engine.IO endpoint in the shard: a Socket.IO connection's session with no
//! Socket.IO layer, whose messages reach the endpoint's handler and come back as messages.

use super::*;
use crate::proto::engineio_poll::server_frame;

const UPGRADE: &[u8] = b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A shard serving `/engine.io` on topic `eio` whose handler echoes, and `/socket.io/`.
fn bare_shard() -> ShardState {
    let mut hub = HubShared::for_bench(1);
    hub.config.engineio = Some(crate::config::EngineIoEndpoint {
        path: "/engine.io/".into(),
        topic: "eio".into(),
    });
    let echo = |ctx: &mut crate::Context<'_>, msg: &crate::Message<'_>| {
        ctx.send_raw(msg.topic(), msg.event(), msg.data_raw());
        Ok(())
    };
    let p = crate::proto::pattern::Pattern::parse("eio").expect("valid pattern");
    let route = super::super::shared::Route {
        handler: Arc::new(echo),
        blocking: false,
    };
    hub.router.insert(p, route);
    ShardState::new(0, Arc::new(hub))
}

/// The frames written on `slot`: (opcode, payload).
fn frames(st: &mut ShardState, slot: u32) -> Vec<(u8, Vec<u8>)> {
    let out = written(st, slot);
    let mut rest = &out[..];
    let mut got = Vec::new();
    while let Some((op, payload, after)) = server_frame(rest) {
        got.push((op, payload.to_vec()));
        rest = after;
    }
    assert!(rest.is_empty(), "whole frames");
    got
}

#[test]
fn messages_reach_the_handler_and_come_back_as_they_went() {
    let mut st = bare_shard();
    let slot = st.accept(-1, ([127, 0, 0, 1], 1).into());
    st.on_input(slot, &mut UPGRADE.to_vec());
    let out = written(&mut st, slot);
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").expect("101") + 4;
    assert!(out.starts_with(b"HTTP/1.1 101"));
    let (op, open, rest) = server_frame(&out[at..]).expect("a frame");
    assert!(
        op == 1 && open.starts_with(b"0{\"sid\":") && rest.is_empty(),
        "the OPEN packet"
    );
    assert!(st
        .conns
        .get(slot as usize)
        .is_some_and(|c| c.eio_bare() && c.sio_home().is_none()));
    // `40` would be a Socket.IO CONNECT: here it is the message "0", echoed.
    for text in [&b"4hello"[..], b"4", b"40", "4é\"\\".as_bytes()] {
        st.on_input(slot, &mut frame(1, text));
        assert_eq!(frames(&mut st, slot), [(1, text.to_vec())]);
    }
    st.on_input(slot, &mut frame(2, &[1, 2, 3]));
    assert_eq!(frames(&mut st, slot), [(2, vec![1, 2, 3])]);
    // A ping probe is answered; a packet that does not parse closes with 1002.
    st.on_input(slot, &mut frame(1, b"2probe"));
    assert_eq!(frames(&mut st, slot), [(1, b"3probe".to_vec())]);
    st.on_input(slot, &mut frame(1, b"abc"));
    let closed = frames(&mut st, slot);
    assert_eq!(
        (closed[0].0, &closed[0].1[..2]),
        (8, &1002u16.to_be_bytes()[..])
    );
}

#[test]
fn a_polling_session_echoes_text_and_binary() {
    let mut st = bare_shard();
    let q = "/engine.io/?EIO=4&transport=polling";
    let exchange = |st: &mut ShardState, req: String| -> String {
        let slot = st.accept(-1, ([127, 0, 0, 1], 2).into());
        st.on_input(slot, &mut req.into_bytes());
        st.take_dirty(&mut Vec::new());
        let out = String::from_utf8(written(st, slot)).expect("UTF-8");
        st.on_eof(slot);
        out.split_once("\r\n\r\n").expect("answer").1.to_string()
    };
    let open = exchange(&mut st, format!("GET {q} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let v: serde_json::Value = serde_json::from_str(&open[1..]).expect("OPEN");
    assert_eq!(v["upgrades"], serde_json::json!(["websocket"]));
    let sid = v["sid"].as_str().expect("sid");
    let body = "4hello\u{1e}bAQIDBA==";
    let post = format!(
        "POST {q}&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(exchange(&mut st, post), "ok");
    let get = format!("GET {q}&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(exchange(&mut st, get), body);
}
