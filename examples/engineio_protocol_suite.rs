//! The reference server of Engine.IO's protocol test suite (`socketio/engine.io-protocol`,
//! `test-suite/`), on ringhub's bare Engine.IO endpoint: every message a client sends comes
//! back to it, text or binary.
//!
//! Run: `cargo run --example engineio_protocol_suite [ADDR]` (default `127.0.0.1:3000`, where
//! the suite looks), then `npm ci && npm test` in the suite's `test-suite/` folder. The settings
//! are the ones the suite's README gives its reference server:
//!
//! ```js
//! const server = listen(3000, { pingInterval: 300, pingTimeout: 200, maxPayload: 1e6,
//!                               cors: { origin: "*" } });
//! server.on("connection", socket => socket.on("data", (...args) => socket.send(...args)));
//! ```
//!
//! With ringhub: the endpoint at `/engine.io/` delivers each message to the handler of its
//! topic (`engine.io` here) as event `message`, and what the handler sends the connection
//! goes back as one message of its data (`{"$bin"}` data: a binary message).

use std::time::Duration;

use ringhub::{Config, Context, HandlerResult, Message, RingHub};

/// The topic the endpoint's messages arrive on.
const TOPIC: &str = "engine.io";

/// `socket.send(data)`: the message back to its sender, as it came.
fn echo(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    ctx.send_raw(msg.topic(), msg.event(), msg.data_raw());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into())
        .parse()?;
    // The default origin policy allows any origin, as the suite's `cors: {origin: "*"}`; no
    // Socket.IO endpoint (no namespaces), only the bare one.
    let config = Config {
        ui: false,
        socketio_namespaces: Vec::new(),
        ..Config::default()
    };
    RingHub::builder()
        .config(config)
        .listen(listen)
        // pingInterval 300 ms; pingTimeout 200 ms is idle_timeout - ping_interval.
        .keepalive(Duration::from_millis(300), Duration::from_millis(500))
        .max_message_size(1_000_000)
        .engineio("/engine.io/", TOPIC)
        .handle(TOPIC, echo)
        .build()?
        .run()?;
    Ok(())
}
