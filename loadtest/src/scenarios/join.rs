//! Joining a topic before the measurement starts, per protocol: ringhub's `subscribe` with
//! its reply, and Socket.IO's namespace connect + a `join` event acknowledged by the server
//! (ringhub's default event; `scripts/peers/socketio-cluster-server.js` handles it the same way).
//!
//! socket.io (Engine.IO v4 over a bare WebSocket, `?EIO=4&transport=websocket`): the server
//! opens with `0{...}`, the client connects the default namespace with `40` and gets
//! `40{...}`; events are `42[...]`, an event with ack id 1 is `421[...]`, its answer `431[...]`;
//! the server's heartbeat is the text `2`, answered with `3`. The load generator speaks exactly
//! this much of it: one topic per connection, no binary attachments. The long-polling transport is in
//! `crate::client::polling`.

use crate::client::{WsReader, WsWriter};
use fastwebsockets::OpCode;

/// The request path of a socket.io WebSocket connection (no long-polling upgrade).
pub const SOCKETIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// Sends ringhub's `subscribe` and waits for its reply.
pub async fn ringhub_subscribe(
    rd: &mut WsReader,
    wr: &mut WsWriter,
    topic: &str,
) -> Result<(), String> {
    let msg = format!("{{\"event\":\"subscribe\",\"topic\":\"{topic}\",\"id\":1}}");
    wr.push(OpCode::Text, msg.as_bytes());
    wr.flush()
        .await
        .map_err(|e| format!("send subscribe: {e}"))?;
    // `--msgpack`: the reply is a MessagePack map; its text shows the same words unquoted.
    let packed = crate::client::MSGPACK.load(std::sync::atomic::Ordering::Relaxed);
    wait_text(rd, wr, |text| {
        if text.contains("\"event\":\"error\"") || (packed && text.contains("error")) {
            return Err(format!("subscribe rejected: {text}"));
        }
        Ok(
            (text.contains("\"event\":\"reply\"") && text.contains("\"id\":1"))
                || (packed && text.contains("reply")),
        )
    })
    .await
}

/// Connects socket.io's default namespace (`40` → `40{...}`); every socket.io connection,
/// publisher or subscriber, does this first.
pub async fn socketio_connect(rd: &mut WsReader, wr: &mut WsWriter) -> Result<(), String> {
    // The Engine.IO open packet comes first, unasked.
    wait_text(rd, wr, |t| Ok(t.starts_with('0'))).await?;
    wr.push(OpCode::Text, b"40");
    wr.flush()
        .await
        .map_err(|e| format!("send namespace connect: {e}"))?;
    wait_text(rd, wr, |t| {
        if t.starts_with("44") {
            return Err(format!("namespace connect refused: {t}"));
        }
        Ok(t.starts_with("40"))
    })
    .await
}

/// Joins the room `topic` with an acknowledged `join` event (after [`socketio_connect`]):
/// ringhub's default event (docs/PROTOCOL.md, Socket.IO), which the socket.io peer handles
/// with `socket.join(room)` and the ack.
pub async fn socketio_subscribe(
    rd: &mut WsReader,
    wr: &mut WsWriter,
    topic: &str,
) -> Result<(), String> {
    let msg = format!("421[\"join\",\"{topic}\"]");
    wr.push(OpCode::Text, msg.as_bytes());
    wr.flush()
        .await
        .map_err(|e| format!("send subscribe: {e}"))?;
    wait_text(rd, wr, |t| Ok(t.starts_with("431"))).await
}

/// Reads frames until `done` says yes (or fails); answers Engine.IO heartbeats on the way.
async fn wait_text(
    rd: &mut WsReader,
    wr: &mut WsWriter,
    mut done: impl FnMut(&str) -> Result<bool, String>,
) -> Result<(), String> {
    loop {
        let (op, payload) = rd.next().await.map_err(|e| format!("await reply: {e:#}"))?;
        match op {
            OpCode::Text | OpCode::Binary => {
                let text = String::from_utf8_lossy(payload).into_owned();
                if text == "2" {
                    wr.push(OpCode::Text, b"3");
                    wr.flush().await.map_err(|e| format!("send pong: {e}"))?;
                    continue;
                }
                if done(&text)? {
                    return Ok(());
                }
            }
            OpCode::Ping => {
                let p = payload.to_vec();
                wr.push(OpCode::Pong, &p);
                wr.flush().await.map_err(|e| format!("send pong: {e}"))?;
            }
            OpCode::Close => return Err("server closed before the reply".into()),
            _ => {}
        }
    }
}

/// Over long-polling: connects the default namespace and joins `topic` with an acknowledged
/// `join` (the same packets as over WebSocket, each in its own `POST`; answers arrive in
/// `GET`s, heartbeats on the way are answered).
pub async fn socketio_poll_join(
    c: &mut crate::client::polling::PollConn,
    topic: &str,
) -> Result<(), String> {
    socketio_poll_connect(c).await?;
    let msg = format!("421[\"join\",\"{topic}\"]");
    c.post(msg.as_bytes())
        .await
        .map_err(|e| format!("send join: {e:#}"))?;
    poll_until(c, |p| Ok(p.starts_with(b"431"))).await
}

/// Connects a polling session to the default namespace (`POST 40`, then `GET`s until the
/// CONNECT answer).
pub async fn socketio_poll_connect(c: &mut crate::client::polling::PollConn) -> Result<(), String> {
    c.post(b"40")
        .await
        .map_err(|e| format!("send namespace connect: {e:#}"))?;
    poll_until(c, |p| {
        if p.starts_with(b"44") {
            return Err(format!(
                "namespace connect refused: {}",
                String::from_utf8_lossy(p)
            ));
        }
        Ok(p.starts_with(b"40"))
    })
    .await
}

/// `GET`s until a packet satisfies `done`; answers heartbeats (`2` → `POST 3`).
async fn poll_until(
    c: &mut crate::client::polling::PollConn,
    mut done: impl FnMut(&[u8]) -> Result<bool, String>,
) -> Result<(), String> {
    loop {
        let body = c.get().await.map_err(|e| format!("await reply: {e:#}"))?;
        let (mut found, mut ping) = (false, false);
        for p in crate::client::polling::packets(body) {
            if p == b"2" {
                ping = true;
            } else if p == b"1" {
                return Err("server closed the session before the reply".into());
            } else if done(p)? {
                found = true;
            }
        }
        if ping {
            c.post(b"3")
                .await
                .map_err(|e| format!("send pong: {e:#}"))?;
        }
        if found {
            return Ok(());
        }
    }
}
