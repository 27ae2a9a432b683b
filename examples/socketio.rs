//! A Socket.IO chat server: the seed application's events on ringhub's engine.
//!
//! Run: `RINGHUB_AUTH__JWT_SECRET=... cargo run --example socketio` (settings as for the binary:
//! `--config FILE` as the first argument, then `RINGHUB_*` variables), and connect with
//! `io("http://127.0.0.1:8080/chat", {auth: {token}, transports: ["websocket"]})`.
//!
//! - `chat:join` `{conversationId}` joins the room `chat:<id>` and answers `{room}` (a handler
//!   joining a room: `socket.join`);
//! - `chat:message` `{conversationId, text}` is published to the room with every member but the
//!   sender (`socket.to(room).emit("chat:message", …)`) and answered `{ok: true}`;
//! - `chat:leave` `{conversationId}` leaves it;
//! - everything else: the binary's defaults (`join`, `leave`, `publish`, pub/sub by name).

use ringhub::{Context, HandlerError, HandlerResult, Message, RingHub};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chat {
    conversation_id: serde_json::Value,
    #[serde(default)]
    text: Option<String>,
}

fn room(c: &Chat) -> String {
    match &c.conversation_id {
        serde_json::Value::String(s) => format!("chat:{s}"),
        v => format!("chat:{v}"),
    }
}

fn chat(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    let c: Chat = msg.data()?;
    let room = room(&c);
    match msg.topic() {
        "chat:join" => {
            ctx.join(&room)?;
            ctx.reply(&json!({ "room": room }))
        }
        "chat:leave" => {
            ctx.leave(&room);
            ctx.reply(&json!({ "room": room }))
        }
        "chat:message" => {
            let text = c.text.unwrap_or_default();
            if text.trim().is_empty() {
                return Err(HandlerError::bad_request("text is empty"));
            }
            let user = ctx.user().unwrap_or("anonymous").to_string();
            let data = json!({ "room": room, "from": user, "text": text });
            let data = serde_json::value::to_raw_value(&data)?;
            ctx.broadcast_raw(&room, "chat:message", Some(&data))?;
            ctx.reply(&json!({ "ok": true }))
        }
        _ => Err(HandlerError::bad_request("unknown chat event")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args().nth(1).map(std::path::PathBuf::from);
    let settings = ringhub::settings::Settings::load(file.as_deref(), std::env::vars())?;
    settings.validate()?;
    let mut config = settings.engine_config();
    config.guard = ringhub::guard::Guard::from_settings(&settings)?;
    RingHub::builder()
        .config(config)
        .socketio_namespace("/chat")
        .pubsub()
        .handle("chat:join", chat)
        .handle("chat:leave", chat)
        .handle("chat:message", chat)
        .build()?
        .run()?;
    Ok(())
}
