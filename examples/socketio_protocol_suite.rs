//! The reference application of Socket.IO's protocol test suite
//! (`socketio/socket.io-protocol`, `test-suite/`), on ringhub's engine.
//!
//! Run: `cargo run --example socketio_protocol_suite [ADDR]` (default `127.0.0.1:3000`, where the
//! suite looks), then `npm ci && npm test` in the suite's `test-suite/` folder. The settings are
//! the ones the suite's README gives its reference server: `pingInterval` 300 ms,
//! `pingTimeout` 200 ms, `maxPayload` 1,000,000, any origin (`connectTimeout`: see below); namespaces
//! `/` and `/custom`; no connection state recovery (its CONNECT answer is exactly `{"sid"}`).
//!
//! The application, in socket.io terms, and how it reads with ringhub's handlers:
//!
//! ```js
//! io.on("connection", (socket) => {
//!   socket.emit("auth", socket.handshake.auth);              // on_socketio_connect + send_args
//!   socket.on("message", (...args) => socket.emit("message-back", ...args)); // args + send_args
//!   socket.on("message-with-ack", (...args) => args.pop()(...args.slice(0, -1))); // reply_args
//! });
//! io.of("/custom").on("connection", (socket) => socket.emit("auth", socket.handshake.auth));
//! ```
//!
//! Every argument list travels as it came (`Message::args`: one array argument stays one
//! argument), binary attachments included.

use std::time::Duration;

use ringhub::{Config, Context, HandlerResult, Message, RingHub};
use serde_json::value::RawValue;

/// `socket.emit("auth", socket.handshake.auth)` on the namespace just connected (`{}` when the
/// client sent no auth payload, as socket.io's `handshake.auth` defaults to).
fn auth(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    let empty = RawValue::from_string("{}".into())?;
    let payload = msg.data_raw().unwrap_or(&empty);
    ctx.send_args_raw(msg.topic(), "auth", &[payload]);
    Ok(())
}

/// `socket.emit("message-back", ...args)`.
fn message(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    let args = msg.args()?;
    ctx.send_args_raw(msg.topic(), "message-back", &args);
    Ok(())
}

/// `ack(...args)`.
fn message_with_ack(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    let args = msg.args()?;
    ctx.reply_args_raw(&args);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    // The default origin policy allows any origin, as the suite's `cors: {origin: "*"}`.
    let config = Config {
        ui: false,
        socketio_recovery: Duration::ZERO,
        // The suite's `connectTimeout` is 1 s; its heartbeat tests run three 300 ms ping
        // cycles before any CONNECT, and ringhub's timers run every ping_interval / 4, so the
        // third ping could come after 1 s. 1.5 s still closes a silent client well within the
        // suite's 2 s test timeout.
        handshake_timeout: Duration::from_millis(1500),
        ..Config::default()
    };
    RingHub::builder()
        .config(config)
        .listen(listen)
        .keepalive(Duration::from_millis(300), Duration::from_millis(500))
        .max_message_size(1_000_000)
        .socketio_namespace("/custom")
        .on_socketio_connect(auth)
        .handle("message", message)
        .handle("message-with-ack", message_with_ack)
        .build()?
        .run()?;
    Ok(())
}
