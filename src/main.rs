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
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
    /// Shard threads, one pinned reactor each (0 = one per CPU) [default: 0].
    #[arg(long, global = true, value_name = "N")]
    shards: Option<String>,
    /// I/O backend: auto (io_uring, else epoll), uring, or epoll [default: auto].
    #[arg(long, global = true, value_name = "MODE")]
    io: Option<String>,
    /// Serve an echo route at this path (for conformance tests).
    #[arg(long, global = true, value_name = "PATH")]
    echo_path: Option<String>,
    /// Largest message a client may send, in bytes; larger closes the connection with 1009
    /// [default: 1048576].
    #[arg(long, global = true, value_name = "BYTES")]
    max_message_size: Option<String>,
    /// Ping a connection after this much silence (e.g. 500ms, 30s) [default: 30s].
    #[arg(long, global = true, value_name = "DURATION")]
    ping_interval: Option<String>,
    /// Drop a connection silent for this long [default: 90s].
    #[arg(long, global = true, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// Bytes queued to one connection before it is closed as a slow consumer (1008)
    /// [default: 4194304].
    #[arg(long, global = true, value_name = "BYTES")]
    outbound_queue: Option<String>,
    /// Worker threads for blocking handlers [default: 4].
    #[arg(long, global = true, value_name = "N")]
    handler_threads: Option<String>,
    /// Time graceful shutdown waits for connections to close [default: 10s].
    #[arg(long, global = true, value_name = "DURATION")]
    shutdown_timeout: Option<String>,
    /// On SIGTERM, time /readyz answers 503 before listeners close [default: 0s].
    #[arg(long, global = true, value_name = "DURATION")]
    drain_delay: Option<String>,
    /// Interval of the stats line in the log (0s disables it) [default: 60s].
    #[arg(long, global = true, value_name = "DURATION")]
    stats_interval: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Where history and inboxes are kept: memory (lost on restart), redb (on disk) or redis
    /// (the cluster's Redis, shared by every node) [default: redis with cluster.redis, else redb].
    #[arg(long, global = true, value_name = "BACKEND")]
    store: Option<String>,
    /// Directory of the redb store [default: ./ringhub-data].
    #[arg(long, global = true, value_name = "DIR")]
    store_path: Option<String>,
    /// This node's name in client ids: letters, digits, '-' or '_' [default: random at start].
    #[arg(long, global = true, value_name = "NAME")]
    node: Option<String>,
    /// Do not pin shard threads to cores.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Not a flag: answered with a pointer to `--listen` (people try `--port` first).
    #[arg(long, global = true, hide = true, num_args = 0..=1, default_missing_value = "PORT")]
    port: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate FILE (with the environment and flags applied) and print the effective
    /// configuration, secrets masked.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
    /// Print an HS256 connection token (JWT) for tests and development, signed with --secret or
    /// else the configured auth.jwt_secret (carrying auth.issuer and auth.audience when set).
    Token(TokenArgs),
}

/// `ringhub token`.
#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The user id (`sub` claim); omit it for an anonymous token.
    #[arg(long, value_name = "USER")]
    sub: Option<String>,
    /// HS256 secret [default: auth.jwt_secret from --config / RINGHUB_AUTH_JWT_SECRET].
    #[arg(long, value_name = "SECRET")]
    secret: Option<String>,
    /// Lifetime of the token (`exp` = now + TTL), e.g. 10m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    ttl: String,
    /// More claims as a JSON object, e.g. '{"subscribe":["chat:*"],"publish":["chat:*"]}'.
    #[arg(long, value_name = "JSON")]
    claims: Option<String>,
}

impl TokenArgs {
    /// The signed token, or why not.
    fn mint(&self, settings: &Settings) -> Result<String, Box<dyn Error>> {
        let secret = match (&self.secret, &settings.auth.jwt_secret) {
            (Some(s), _) => s.clone(),
            (None, Some(s)) => s.expose().to_string(),
            (None, None) => {
                return Err("no secret: give --secret SECRET, or set auth.jwt_secret \
                    (RINGHUB_AUTH_JWT_SECRET or --config FILE)"
                    .into())
            }
        };
        if secret.is_empty() {
            return Err("--secret is empty".into());
        }
        let ttl = humantime::parse_duration(&self.ttl)
            .map_err(|e| format!("invalid value for --ttl: {:?} ({e})", self.ttl))?;
        let mut claims = match &self.claims {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str(text) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => return Err(format!("--claims must be a JSON object, got {text:?}").into()),
            },
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl.as_secs()).into());
        if let Some(sub) = &self.sub {
            claims.insert("sub".into(), sub.as_str().into());
        }
        // A token the configured server accepts: it requires these when they are set.
        if let Some(iss) = &settings.auth.issuer {
            claims.entry("iss").or_insert_with(|| iss.as_str().into());
        }
        if let Some(aud) = &settings.auth.audience {
            claims.entry("aud").or_insert_with(|| aud.as_str().into());
        }
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )?)
    }
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
    if let Some(port) = &cli.port {
        eprintln!(
            "ringhub: there is no --port flag: give the address with --listen, \
             e.g. --listen 0.0.0.0:{port} (or 127.0.0.1:{port} for this host only)"
        );
        return ExitCode::from(2);
    }
    let env_file = std::env::var_os("RINGHUB_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let file = match &cli.command {
        Some(Command::CheckConfig { file }) => Some(file.clone()),
        Some(Command::Token(_)) | None => cli.config.clone().or(env_file),
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
    if let Some(Command::Token(t)) = &cli.command {
        return match t.mint(&settings) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringhub token: {e}");
                ExitCode::from(2)
            }
        };
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
