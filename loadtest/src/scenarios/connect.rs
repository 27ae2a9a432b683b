//! `connect`: a connection storm of N WebSocket handshakes with a concurrency bound;
//! handshakes/s, failures and handshake latency (TCP connect + upgrade).

use super::{secs, Ctx, FirstError};
use crate::client;
use crate::runner::{self, Padded, Phase, Phases};
use crate::stats::{self, fmt_rate, Latency, Report};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Handshakes to perform in total.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub count: usize,
    /// Handshakes in flight at once (over all threads).
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Count a connection once its first text frame arrives (with a connect proxy: the
    /// `connected` frame, sent after the backend's answer), not at the `101`.
    #[arg(long)]
    pub first_frame: bool,
    /// Then subscribe to this topic and wait for the reply (with a subscribe proxy: one more
    /// backend round trip), included in the latency.
    #[arg(long)]
    pub subscribe: Option<String>,
}

struct Shared {
    ctx: Ctx,
    args: ConnectArgs,
    count: usize,
    next: AtomicUsize,
    phases: Phases,
    ok: Vec<Padded>,
    failed: Vec<Padded>,
    first_error: FirstError,
}

/// `--first-frame` and `--subscribe`: what a connection waits for after its `101`.
async fn after_upgrade(
    args: &ConnectArgs,
    rd: &mut client::WsReader,
    wr: &mut client::WsWriter,
) -> Result<(), String> {
    if args.first_frame {
        loop {
            let (op, payload) = rd.next().await.map_err(|e| format!("{e:#}"))?;
            match op {
                fastwebsockets::OpCode::Text => break,
                fastwebsockets::OpCode::Close => {
                    let code = payload
                        .get(..2)
                        .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                    return Err(format!("closed with {code} before the first frame"));
                }
                _ => {}
            }
        }
    }
    if let Some(topic) = &args.subscribe {
        super::join::ringhub_subscribe(rd, wr, topic).await?;
    }
    Ok(())
}

async fn worker(sh: Arc<Shared>, tid: usize, per_thread: usize) -> Result<Latency> {
    let lat = Rc::new(RefCell::new(Latency::new()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..per_thread {
        let (sh, lat) = (sh.clone(), lat.clone());
        set.spawn_local(async move {
            loop {
                let i = sh.next.fetch_add(1, Ordering::Relaxed);
                if i >= sh.count || sh.phases.get() >= Phase::Done {
                    break;
                }
                let t0 = Instant::now();
                match client::connect(
                    &sh.ctx.target,
                    sh.ctx.sources.pick(i),
                    sh.ctx.connect_timeout,
                )
                .await
                {
                    Ok((mut rd, mut wr)) => {
                        if let Err(e) = after_upgrade(&sh.args, &mut rd, &mut wr).await {
                            runner::bump(&sh.failed[tid], 1);
                            sh.first_error.set(e);
                            continue;
                        }
                        lat.borrow_mut().record(t0.elapsed().as_nanos() as u64);
                        runner::bump(&sh.ok[tid], 1);
                        wr.close().await;
                    }
                    Err(e) => {
                        runner::bump(&sh.failed[tid], 1);
                        sh.first_error.set(format!("{e:#}"));
                    }
                }
            }
        });
    }
    tokio::select! {
        _ = async { while set.join_next().await.is_some() {} } => {}
        _ = sh.phases.wait_for(Phase::Done) => set.abort_all(),
    }
    while set.join_next().await.is_some() {}
    let l = std::mem::take(&mut *lat.borrow_mut());
    Ok(l)
}

pub fn run(ctx: &Ctx, args: &ConnectArgs) -> Result<Report> {
    if args.count == 0 || args.concurrency == 0 {
        bail!("--count and --concurrency must be at least 1");
    }
    let pad = || (0..ctx.threads).map(|_| Padded::default()).collect();
    let sh = Arc::new(Shared {
        ctx: ctx.clone(),
        args: args.clone(),
        count: args.count,
        next: AtomicUsize::new(0),
        phases: Phases::default(),
        ok: pad(),
        failed: pad(),
        first_error: FirstError::default(),
    });
    let per_thread = (args.concurrency / ctx.threads).max(1);
    let w = sh.clone();
    let t0 = Instant::now();
    let handles = runner::spawn_workers(ctx.threads, move |tid| worker(w.clone(), tid, per_thread));
    let pb = runner::spinner();
    let n = args.count as u64;
    let finished = runner::wait_until(
        &pb,
        t0 + secs(args.timeout),
        || runner::sum(&sh.ok) + runner::sum(&sh.failed) >= n,
        || {
            let ok = runner::sum(&sh.ok);
            let rate = ok as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            format!("handshakes: {ok}/{n}, {} /s", fmt_rate(rate))
        },
    );
    let elapsed = t0.elapsed();
    sh.phases.set(Phase::Done);
    pb.finish_and_clear();
    let mut lat = Latency::new();
    for l in runner::join_workers(handles)? {
        lat.merge(&l);
    }
    let (ok, failed) = (runner::sum(&sh.ok), runner::sum(&sh.failed));
    let rate = ok as f64 / elapsed.as_secs_f64();
    let l = lat.summary();
    let mut rep = Report::new("connect");
    rep.row(
        "setup",
        format!(
            "{n} handshakes, concurrency {}, {} thread(s)",
            per_thread * ctx.threads,
            ctx.threads
        ),
    );
    rep.row("handshakes/s", fmt_rate(rate));
    rep.row("latency", l.line());
    rep.row("ok / failed", format!("{ok} / {failed}"));
    rep.row(
        "elapsed",
        format!(
            "{:.2}s{}",
            elapsed.as_secs_f64(),
            if finished { "" } else { " (TIMED OUT)" }
        ),
    );
    if let Some(e) = sh.first_error.get() {
        rep.row("first error", e);
    }
    if !finished {
        rep.failures.push(format!(
            "only {} of {n} handshakes finished in {}s",
            ok + failed,
            args.timeout
        ));
    }
    rep.set("msgs_per_s", rate);
    rep.set("handshakes_per_s", rate);
    rep.set("latency_us", l.to_json());
    rep.set("counts", json!({"ok": ok, "failed": failed}));
    rep.set("elapsed_s", stats::secs(elapsed));
    rep.set(
        "config",
        json!({"count": n, "concurrency": per_thread * ctx.threads, "threads": ctx.threads}),
    );
    Ok(rep)
}
