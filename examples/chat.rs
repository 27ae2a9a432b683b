//! A chat server with a custom handler and a logging middleware.
//!
//! Run: `cargo run --release --example chat`, then from a browser console:
//! ```js
//! const ws = new WebSocket("ws://127.0.0.1:8080/ws");
//! ws.onmessage = (m) => console.log(m.data);
//! ws.onopen = () => {
//!   ws.send(JSON.stringify({event: "subscribe", topic: "chat:lobby", id: 1}));
//!   ws.send(JSON.stringify({topic: "chat:lobby", event: "say", data: {text: "hi"}, id: 2}));
//!   ws.send(JSON.stringify({topic: "time", event: "now", id: 3}));
//! };
//! ```

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ringhub::{Context, HandlerError, HandlerResult, Message, Next, RingHub};
use serde::Deserialize;

#[derive(Deserialize)]
struct Say {
    text: String,
}

/// Logs every message with how long its handler took.
fn log(ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>) -> HandlerResult {
    let start = Instant::now();
    let result = next.run(ctx, msg);
    tracing::info!(client = %ctx.client_id(), topic = msg.topic(), event = msg.event(), ok = result.is_ok(), took = ?start.elapsed(), "handled");
    result
}

/// Validates chat messages before publishing them to the room.
fn chat(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    let say: Say = msg.data()?;
    if say.text.trim().is_empty() || say.text.len() > 1000 {
        return Err(HandlerError::bad_request("text must be 1 to 1000 bytes"));
    }
    ctx.publish(
        msg.topic(),
        "said",
        &serde_json::json!({"from": ctx.client_id(), "text": say.text}),
    )
}

/// Answers with the server's clock.
fn time(ctx: &mut Context<'_>, _: &Message<'_>) -> HandlerResult {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| HandlerError::internal(e.to_string()))?;
    ctx.reply(&now.as_millis())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    RingHub::builder()
        .listen("127.0.0.1:8080".parse()?)
        .layer(log)
        .handle("chat:*", chat)
        .handle("time", time)
        .build()?
        .run()?;
    Ok(())
}
