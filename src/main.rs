//! The `ringhub` server binary: the default pub/sub hub on `/ws`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ringhub::{Config, IoMode, RingHub};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Thread-per-core WebSocket pub/sub hub. Clients connect to ws://ADDR/ws.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Shard threads, one pinned reactor each (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    shards: usize,
    /// I/O backend: auto (io_uring, else epoll), uring, or epoll.
    #[arg(long, default_value = "auto")]
    io: IoMode,
    /// Serve an echo route at this path (for conformance tests).
    #[arg(long)]
    echo_path: Option<String>,
    /// Largest message a client may send, in bytes; larger closes the connection with 1009.
    #[arg(long, default_value_t = 1 << 20)]
    max_message_size: usize,
    /// Ping a connection after this much silence (e.g. 500ms, 30s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
    /// Drop a connection silent for this long.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Bytes queued to one connection before it is closed as a slow consumer (1008).
    #[arg(long, default_value_t = 4 << 20)]
    outbound_queue: usize,
    /// Worker threads for blocking handlers.
    #[arg(long, default_value_t = 4)]
    handler_threads: usize,
    /// Time graceful shutdown waits for connections to close.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
    /// Interval of the stats line in the log (0s disables it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stats_interval: Duration,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let config = Config {
        listen: cli.listen,
        shards: cli.shards,
        io: cli.io,
        pin_cores: !cli.no_pin,
        echo_path: cli.echo_path,
        max_message_size: cli.max_message_size,
        ping_interval: cli.ping_interval,
        idle_timeout: cli.idle_timeout,
        outbound_queue: cli.outbound_queue,
        handler_threads: cli.handler_threads,
        shutdown_timeout: cli.shutdown_timeout,
        stats_interval: cli.stats_interval,
        ..Config::default()
    };
    let result = RingHub::builder().config(config).pubsub().build().and_then(|s| s.run());
    if let Err(e) = result {
        eprintln!("ringhub: {e}");
        std::process::exit(1);
    }
}
