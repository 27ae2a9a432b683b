//! ringhub inside an existing axum application.
//!
//! ```text
//! cargo run --example axum_embed --features axum
//! ```
//!
//! The application (its own tokio runtime, its own routes) serves on 127.0.0.1:3000:
//!
//! - `GET /hello` — the application's own route;
//! - `ws://127.0.0.1:3000/ws` — ringhub's WebSocket endpoint (JSON envelopes:
//!   `{"event":"subscribe","topic":"chat"}`, `{"topic":"chat","event":"msg","data":"hi"}`);
//! - `http://127.0.0.1:3000/sse?topics=chat` — ringhub's Server-Sent Events endpoint.
//!
//! The hub's shards also listen on a port of their own (printed at start): clients on either
//! side talk to the same hub — same subscriptions, publications, handlers, hooks and auth.
//! Try it with two terminals:
//!
//! ```text
//! websocat ws://127.0.0.1:3000/ws         # through axum
//! websocat ws://127.0.0.1:<ringhub>/ws    # native
//! curl -N 'http://127.0.0.1:3000/sse?topics=chat'
//! ```
//!
//! How it works: the axum handler runs the engine's admission checks (upgrade headers, IP
//! lists, origin, JWT, `on_connect`, connection caps) and answers refusals with the engine's
//! HTTP statuses; an accepted upgrade is answered `101` by hyper, after which the TCP socket is
//! taken back from hyper and handed to a shard (round-robin), which serves it like one it
//! accepted itself. The router must be served with the peer address
//! (`into_make_service_with_connect_info::<SocketAddr>()`), which the IP checks need.

use std::net::SocketAddr;

use ringhub::{Context, HandlerError, Message, RingHub};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // The hub: shard threads of its own, plus a native port (0: any free one).
    let hub = RingHub::builder()
        .listen("127.0.0.1:0".parse()?)
        .shards(2)
        .handle("echo:*", |ctx: &mut Context<'_>, msg: &Message<'_>| {
            ctx.send_raw(msg.topic(), "echo", msg.data_raw());
            Ok::<_, HandlerError>(())
        })
        .pubsub()
        .build()?
        .start()?;
    println!("ringhub native port: ws://{}/ws", hub.local_addr());

    // The existing application, with ringhub's routes merged in.
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|| async { "hello from axum\n" }),
        )
        .merge(ringhub::axum::router(&hub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "axum app: http://{0}/hello, ws://{0}/ws, http://{0}/sse?topics=chat",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;

    // The application stopped: stop the hub too (its clients get 1001).
    hub.shutdown();
    hub.join();
    Ok(())
}
