//! `ringhub-loadtest`: a loopback-only WebSocket load generator for ringhub and the peer
//! servers it is compared with. Scenarios: fanout, echo, connect, idle, durable, recover, delta.

mod client;
mod runner;
mod scenarios;
mod stats;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use scenarios::{connect, delta, durable, echo, fanout, idle, recover, Ctx};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Loopback WebSocket load generator for ringhub and peer servers"
)]
struct Cli {
    /// Server address HOST:PORT (or ws://HOST:PORT/path); loopback only.
    #[arg(long, global = true, default_value = "127.0.0.1:9000")]
    target: String,
    /// Request path (default: /echo for echo, /ws otherwise).
    #[arg(long, global = true)]
    path: Option<String>,
    /// `ringhub`: JSON envelope + subscribe handshake; `raw`: broadcast/echo peers;
    /// `socketio`: Socket.IO v5 / Engine.IO v4 with ringhub's default events (`join`,
    /// `publish` with ack): ringhub's /socket.io/ or scripts/peers/socketio-cluster-server.js
    /// (fanout and idle).
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Ringhub)]
    protocol: Protocol,
    /// Worker threads, each with its own current-thread runtime (default: usable CPUs).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Spread client sockets over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, global = true, default_value_t = 16)]
    source_addrs: usize,
    /// Concurrent connection attempts while setting up (over all threads).
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds allowed for one connect + handshake.
    #[arg(long, global = true, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seconds allowed for setting up all connections.
    #[arg(long, global = true, default_value_t = 60.0)]
    setup_timeout: f64,
    /// Write results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<String>,
    /// Server name recorded in the results.
    #[arg(long, global = true, default_value = "server")]
    label: String,
    /// Offer permessage-deflate (RFC 7692) and inflate compressed frames.
    #[arg(long, global = true)]
    deflate: bool,
    /// Offer the `ringhub.msgpack` subprotocol: publications arrive as MessagePack frames.
    #[arg(long, global = true)]
    msgpack: bool,
    /// Pad payloads with chat-like English words instead of `x` (compresses like real text).
    #[arg(long, global = true)]
    words: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Ringhub,
    Raw,
    Socketio,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Pub/sub fan-out: publishers -> topics -> subscribers.
    Fanout(fanout::FanoutArgs),
    /// Echo round trips with a pipeline per connection.
    Echo(echo::EchoArgs),
    /// Connection storm: WebSocket handshakes per second.
    Connect(connect::ConnectArgs),
    /// Hold idle connections; server RSS per connection.
    Idle(idle::IdleArgs),
    /// Durable user messages: HTTP sends/s with `"durable": true` (protocol v2).
    Durable(durable::DurableArgs),
    /// Time to recover missed publications with `subscribe` + `since` (protocol v2).
    Recover(recover::RecoverArgs),
    /// A state object fanned out as Fossil deltas (`--delta`) or in full (protocol v2).
    Delta(delta::DeltaArgs),
}

/// File descriptors a scenario needs (connections plus headroom).
fn fds_needed(s: &Scenario) -> u64 {
    let conns = match s {
        Scenario::Fanout(a) => a.subscribers + a.publishers,
        Scenario::Echo(a) => a.connections,
        Scenario::Connect(a) => a.concurrency,
        Scenario::Idle(a) => a.count,
        Scenario::Durable(a) => a.concurrency + a.connected,
        Scenario::Recover(_) => 2,
        Scenario::Delta(a) => a.subscribers + 1,
    };
    conns as u64 + 64
}

fn main() {
    match real_main() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("ringhub-loadtest: error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// User + system CPU seconds used by this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the CLI; `Ok(false)` means the run completed but failed a check.
fn real_main() -> Result<bool> {
    let cli = Cli::parse();
    stats::epoch();
    client::DEFLATE.store(cli.deflate, std::sync::atomic::Ordering::Relaxed);
    client::MSGPACK.store(cli.msgpack, std::sync::atomic::Ordering::Relaxed);
    scenarios::payload::WORDS.store(cli.words, std::sync::atomic::Ordering::Relaxed);
    let socketio = cli.protocol == Protocol::Socketio;
    if socketio && !matches!(cli.scenario, Scenario::Fanout(_) | Scenario::Idle(_)) {
        anyhow::bail!("--protocol socketio is for the fanout and idle scenarios only");
    }
    let default_path = match cli.scenario {
        Scenario::Echo(_) => "/echo",
        _ if socketio => scenarios::join::SOCKETIO_PATH,
        _ => "/ws",
    };
    let target = client::Target::parse(&cli.target, cli.path.as_deref().unwrap_or(default_path))?;
    let limit = client::ensure_fd_limit(fds_needed(&cli.scenario))?;
    let threads = cli.threads.unwrap_or_else(runner::default_threads).max(1);
    let ctx = Ctx {
        sources: client::Sources::new(&target, cli.source_addrs),
        target,
        threads,
        ringhub: cli.protocol == Protocol::Ringhub,
        socketio,
        connect_timeout: scenarios::secs(cli.connect_timeout),
        connect_concurrency: cli.connect_concurrency.max(1),
        setup_timeout: scenarios::secs(cli.setup_timeout),
    };
    let (wall0, cpu0) = (std::time::Instant::now(), cpu_seconds());
    let mut report = match &cli.scenario {
        Scenario::Fanout(a) => fanout::run(&ctx, a)?,
        Scenario::Echo(a) => echo::run(&ctx, a)?,
        Scenario::Connect(a) => connect::run(&ctx, a)?,
        Scenario::Idle(a) => idle::run(&ctx, a)?,
        Scenario::Durable(a) => durable::run(&ctx, a)?,
        Scenario::Recover(a) => recover::run(&ctx, a)?,
        Scenario::Delta(a) => delta::run(&ctx, a)?,
    };
    let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    report.row(
        "loadtest CPU",
        format!(
            "{cpu:.2}s over {wall:.2}s ({:.0}% of one core)",
            100.0 * cpu / wall
        ),
    );
    report.set("loadtest_cpu_s", cpu);
    report.set("loadtest_wall_s", wall);
    report.print(&cli.label);
    println!(
        "wire bytes in (all clients): {}",
        client::RX_BYTES.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Some(path) = &cli.json {
        let params = json!({
            "target": ctx.target.addr.to_string(), "path": ctx.target.path,
            "protocol": format!("{:?}", cli.protocol).to_lowercase(), "threads": threads,
            "source_addrs": cli.source_addrs, "fd_limit": limit,
        });
        report.write_json(path, &cli.label, params)?;
    }
    Ok(report.failures.is_empty())
}
