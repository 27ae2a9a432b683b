//! The `ringhub` server binary: the default pub/sub hub on `/ws`.
//!
//! Settings come from defaults, then `--config FILE` (or `RINGHUB_CONFIG`), then `RINGHUB_*`
//! environment variables, then the flags below. An invalid setting is a one-line error on stderr
//! and exit code 2. `ringhub check-config FILE` validates and prints the effective configuration.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringhub::guard::Guard;
use ringhub::settings::{LogFormat, Settings};
use ringhub::RingHub;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set:
/// mimalloc asks for them on its arena, and then memory grows in 2 MiB steps, one whenever a
/// shard's connection slab or a buffer first reaches a new huge page: 210 bytes per connection
/// at 10,000 for each step, two to four steps at that scale (BENCHMARKS.md, "Idle connections").
fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: a prctl with integer arguments only; it fails harmlessly on old kernels.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Thread-per-core WebSocket pub/sub hub. Clients connect to ws://ADDR/ws.
///
/// Flags override `RINGHUB_*` environment variables, which override the --config file; see
/// ringhub.example.toml for every setting.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML); defaults to $RINGHUB_CONFIG when set.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Shard threads, one pinned reactor each (0 = one per CPU) [default: 0].
    #[arg(long, value_name = "N")]
    shards: Option<String>,
    /// I/O backend: auto (io_uring, else epoll), uring, or epoll [default: auto].
    #[arg(long, value_name = "MODE")]
    io: Option<String>,
    /// Serve an echo route at this path (for conformance tests).
    #[arg(long, value_name = "PATH")]
    echo_path: Option<String>,
    /// Largest message a client may send, in bytes; larger closes the connection with 1009
    /// [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<String>,
    /// Ping a connection after this much silence (e.g. 500ms, 30s) [default: 30s].
    #[arg(long, value_name = "DURATION")]
    ping_interval: Option<String>,
    /// Drop a connection silent for this long [default: 90s].
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Bytes queued to one connection before it is closed as a slow consumer (1008)
    /// [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    outbound_queue: Option<String>,
    /// Worker threads for blocking handlers [default: 4].
    #[arg(long, value_name = "N")]
    handler_threads: Option<String>,
    /// Time graceful shutdown waits for connections to close [default: 10s].
    #[arg(long, value_name = "DURATION")]
    shutdown_timeout: Option<String>,
    /// On SIGTERM, time /readyz answers 503 before listeners close [default: 0s].
    #[arg(long, value_name = "DURATION")]
    drain_delay: Option<String>,
    /// Interval of the stats line in the log (0s disables it) [default: 60s].
    #[arg(long, value_name = "DURATION")]
    stats_interval: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Where history and inboxes are kept: memory (lost on restart), redb (on disk) or redis
    /// (the cluster's Redis, shared by every node) [default: redis with cluster.redis, else redb].
    #[arg(long, value_name = "BACKEND")]
    store: Option<String>,
    /// Directory of the redb store [default: ./ringhub-data].
    #[arg(long, value_name = "DIR")]
    store_path: Option<String>,
    /// This node's name in client ids: letters, digits, '-' or '_' [default: random at start].
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Do not pin shard threads to cores.
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate FILE (with the environment and flags applied) and print the effective
    /// configuration, secrets masked.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
}

impl Cli {
    /// The flags given, as (settings key, value, flag name).
    fn overrides(&self) -> Vec<(&'static str, &str, &'static str)> {
        let flags = [
            ("listen", &self.listen, "--listen"),
            ("shards", &self.shards, "--shards"),
            ("io", &self.io, "--io"),
            ("echo_path", &self.echo_path, "--echo-path"),
            (
                "max_message_size",
                &self.max_message_size,
                "--max-message-size",
            ),
            ("ping_interval", &self.ping_interval, "--ping-interval"),
            ("idle_timeout", &self.idle_timeout, "--idle-timeout"),
            ("outbound_queue", &self.outbound_queue, "--outbound-queue"),
            (
                "handler_threads",
                &self.handler_threads,
                "--handler-threads",
            ),
            (
                "shutdown_timeout",
                &self.shutdown_timeout,
                "--shutdown-timeout",
            ),
            ("drain_delay", &self.drain_delay, "--drain-delay"),
            ("stats_interval", &self.stats_interval, "--stats-interval"),
            ("log_format", &self.log_format, "--log-format"),
            ("store.backend", &self.store, "--store"),
            ("store.path", &self.store_path, "--store-path"),
            ("node", &self.node, "--node"),
        ];
        let mut out: Vec<_> = flags
            .into_iter()
            .filter_map(|(k, v, f)| Some((k, v.as_deref()?, f)))
            .collect();
        if self.no_pin {
            out.push(("pin_cores", "false", "--no-pin"));
        }
        out
    }
}

/// Loads, overrides and validates the settings, and builds every policy once so that a bad key
/// file or pattern fails here rather than at the first connection.
fn load(cli: &Cli, file: Option<&Path>) -> Result<Settings, Box<dyn Error>> {
    let mut s = Settings::load(file, std::env::vars_os())?;
    for (key, value, flag) in cli.overrides() {
        s.set(key, value, flag)?;
    }
    s.validate()?;
    // Builds every key, pattern and certificate once, so `check-config` catches them too.
    Guard::from_settings(&s)?;
    Ok(s)
}

/// Logs go through a background writer thread: a shard never blocks on a slow stdout (lines are
/// dropped, not waited for, if the writer falls far behind). Keep the guard alive to flush.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // The writer's queue is allocated (and touched) up front: 16k lines is ample for bursts.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(16 * 1024)
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    let env_file = std::env::var_os("RINGHUB_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let file = match &cli.command {
        Some(Command::CheckConfig { file }) => Some(file.clone()),
        None => cli.config.clone().or(env_file),
    };
    let settings = match load(&cli, file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringhub: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig { file }) = &cli.command {
        for w in settings.warnings() {
            eprintln!("ringhub: warning: {w}");
        }
        // A closed pipe (`| head`) is not an error worth a panic.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "# effective configuration from {} (secrets masked)",
            file.display()
        );
        let _ = write!(out, "{settings}");
        return ExitCode::SUCCESS;
    }

    let _log_guard = init_logging(settings.log_format);
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    let guard = match Guard::from_settings(&settings) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("ringhub: {e}");
            return ExitCode::from(2);
        }
    };
    if guard.auth.is_some() && guard.origins.is_open() {
        tracing::warn!("authentication is on but security.allowed_origins is empty: any web page may open connections with a user's token (cross-site WebSocket hijacking); list your origins");
    }
    let mut config = settings.engine_config();
    config.guard = guard;
    let result = RingHub::builder()
        .config(config)
        .pubsub()
        .build()
        .and_then(|s| s.run());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringhub: {e}");
            ExitCode::FAILURE
        }
    }
}
