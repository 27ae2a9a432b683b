//! `idle`: open N idle connections, hold them for `--hold` seconds (answering pings),
//! then close; with `--server-pid`, report the server's RSS growth per connection.
//! `--protocol socketio`: each connection is a Socket.IO client connected to the default
//! namespace (Engine.IO over WebSocket, or with `--transport polling` over HTTP long-polling:
//! one kept-alive TCP connection each with a `GET` always pending), answering heartbeats.

use super::fanout::Transport;
use super::{secs, Ctx, FirstError};
use crate::client;
use crate::client::polling::{packets, PollConn};
use crate::runner::{self, Padded, Phase, Phases};
use crate::stats::Report;
use anyhow::{bail, Context, Result};
use clap::Args;
use fastwebsockets::OpCode;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub count: usize,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Server process whose VmRSS is read before and after (from /proc/PID/status).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// `--protocol socketio`: the clients' Engine.IO transport.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
}

struct Shared {
    ctx: Ctx,
    transport: Transport,
    phases: Phases,
    ready: AtomicUsize,
    failed: AtomicUsize,
    dropped: Vec<Padded>,
    first_error: FirstError,
}

impl Shared {
    /// A held connection ended: a drop unless the run is over.
    fn count_drop(&self, tid: usize) {
        if self.phases.get() < Phase::Done {
            runner::bump(&self.dropped[tid], 1);
        }
    }

    /// A connection could not be opened (`error` says which and why).
    fn open_failed(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.set(error);
    }
}

/// Reads a `kB` field (e.g. `VmRSS`) from /proc/PID/status.
pub fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// One idle long-polling session: connected, then a `GET` always pending; a heartbeat is
/// answered with `POST 3` between two `GET`s.
async fn hold_polling(sh: Arc<Shared>, tid: usize, idx: usize, sem: Arc<Semaphore>) {
    let permit = sem.acquire().await;
    let src = sh.ctx.sources.pick(idx);
    let opened = async {
        let mut c = PollConn::open(&sh.ctx.target, src, sh.ctx.connect_timeout)
            .await
            .map_err(|e| format!("{e:#}"))?;
        super::join::socketio_poll_connect(&mut c).await?;
        Ok::<_, String>(c)
    };
    let mut conn = match opened.await {
        Ok(c) => c,
        Err(e) => return sh.open_failed(format!("connection {idx}: {e}")),
    };
    drop(permit);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        let ping = match conn.get().await {
            Ok(body) => packets(body).any(|p| p == b"2"),
            Err(_) => break,
        };
        if ping && conn.post(b"3").await.is_err() {
            break;
        }
    }
    sh.count_drop(tid);
}

async fn hold(sh: Arc<Shared>, tid: usize, idx: usize, sem: Arc<Semaphore>) {
    if sh.transport == Transport::Polling {
        return hold_polling(sh, tid, idx, sem).await;
    }
    let permit = sem.acquire().await;
    let src = sh.ctx.sources.pick(idx);
    let (mut rd, mut wr) = match client::connect(&sh.ctx.target, src, sh.ctx.connect_timeout).await
    {
        Ok(c) => c,
        Err(e) => return sh.open_failed(format!("connection {idx}: {e:#}")),
    };
    if sh.ctx.socketio {
        if let Err(e) = super::join::socketio_connect(&mut rd, &mut wr).await {
            return sh.open_failed(format!("connection {idx}: {e}"));
        }
    }
    drop(permit);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        match rd.next().await {
            // Engine.IO heartbeat (`--protocol socketio`).
            Ok((OpCode::Text, b"2")) if sh.ctx.socketio => {
                wr.push(OpCode::Text, b"3");
                if wr.flush().await.is_err() {
                    break;
                }
            }
            Ok((OpCode::Ping, payload)) => {
                wr.push(OpCode::Pong, payload);
                if wr.flush().await.is_err() {
                    break;
                }
            }
            Ok((OpCode::Close, _)) => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    sh.count_drop(tid);
}

async fn worker(sh: Arc<Shared>, tid: usize, count: usize) -> Result<()> {
    let sem = Arc::new(Semaphore::new(sh.ctx.per_thread_concurrency()));
    let mut set = tokio::task::JoinSet::new();
    for c in (tid..count).step_by(sh.ctx.threads) {
        set.spawn_local(hold(sh.clone(), tid, c, sem.clone()));
    }
    sh.phases.wait_for(Phase::Done).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
    Ok(())
}

pub fn run(ctx: &Ctx, args: &IdleArgs) -> Result<Report> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let rss = |pid: u32| proc_status_kb(pid, "VmRSS");
    let before = args.server_pid.map(rss).transpose()?;
    if args.transport == Transport::Polling && !ctx.socketio {
        bail!("--transport polling needs --protocol socketio");
    }
    let sh = Arc::new(Shared {
        ctx: ctx.clone(),
        transport: args.transport,
        phases: Phases::default(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        dropped: (0..ctx.threads).map(|_| Padded::default()).collect(),
        first_error: FirstError::default(),
    });
    let n = args.count;
    let w = sh.clone();
    let t0 = Instant::now();
    let handles = runner::spawn_workers(ctx.threads, move |tid| worker(w.clone(), tid, n));
    let pb = runner::spinner();
    let opened_all = runner::wait_until(
        &pb,
        t0 + ctx.setup_timeout,
        || sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) >= n,
        || format!("opening: {}/{n}", sh.ready.load(Ordering::Relaxed)),
    );
    let open_time = t0.elapsed();
    let opened = sh.ready.load(Ordering::Relaxed);
    // Let the server settle (lazy allocations, deferred frees) before sampling.
    std::thread::sleep(Duration::from_millis(500));
    let after = args.server_pid.map(rss).transpose()?;
    let hold_end = Instant::now() + secs(args.hold);
    runner::wait_until(
        &pb,
        hold_end,
        || false,
        || {
            format!(
                "holding {opened} connections ({} dropped)",
                runner::sum(&sh.dropped)
            )
        },
    );
    let after_hold = args.server_pid.map(rss).transpose()?;
    let hwm = args
        .server_pid
        .map(|p| proc_status_kb(p, "VmHWM"))
        .transpose()?;
    sh.phases.set(Phase::Done);
    pb.finish_and_clear();
    runner::join_workers(handles)?;

    let failed = sh.failed.load(Ordering::Relaxed);
    let dropped = runner::sum(&sh.dropped);
    let mut rep = Report::new("idle");
    rep.row(
        "setup",
        format!(
            "{n} connections, hold {:.1}s, {} thread(s)",
            args.hold, ctx.threads
        ),
    );
    rep.row(
        "opened",
        format!(
            "{opened} in {:.2}s, {failed} failed{}",
            open_time.as_secs_f64(),
            if opened_all { "" } else { " (setup TIMED OUT)" }
        ),
    );
    rep.row("dropped while held", dropped.to_string());
    if let Some(e) = sh.first_error.get() {
        rep.row("first error", e);
    }
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    if let (Some(b), Some(a), Some(pc)) = (before, after, per_conn) {
        rep.row(
            "server RSS",
            format!(
                "{b} kB -> {a} kB (after hold {} kB)",
                after_hold.unwrap_or(0)
            ),
        );
        rep.row("RSS per connection", format!("{pc:.2} kB"));
    }
    if failed > 0 || !opened_all {
        rep.failures
            .push(format!("{} of {n} connections did not open", n - opened));
    }
    rep.set("msgs_per_s", 0.0);
    rep.set("connections", opened);
    rep.set("rss_before_kb", before);
    rep.set("rss_after_kb", after);
    rep.set("rss_after_hold_kb", after_hold);
    rep.set("rss_hwm_kb", hwm);
    rep.set("rss_per_conn_kb", per_conn);
    rep.set(
        "counts",
        json!({"opened": opened, "failed": failed, "dropped": dropped}),
    );
    rep.set(
        "config",
        json!({"count": n, "hold_s": args.hold, "threads": ctx.threads,
               "transport": format!("{:?}", args.transport).to_lowercase()}),
    );
    Ok(rep)
}
