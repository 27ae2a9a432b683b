//! `echo`: C connections, each keeping `--pipeline K` B-byte messages in flight and timing
//! every echo (the send timestamp travels in the payload).

use super::payload::{Header, Template};
use super::{secs, Ctx, FirstError};
use crate::client;
use crate::runner::{self, Padded, Phase, Phases};
use crate::stats::{self, fmt_rate, Latency, Report};
use anyhow::{bail, Result};
use clap::Args;
use fastwebsockets::OpCode;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Message size in bytes (at least 40).
    #[arg(long, short = 'b', default_value_t = 64)]
    pub payload: usize,
    /// Messages in flight per connection.
    #[arg(long, short = 'k', default_value_t = 1)]
    pub pipeline: usize,
    /// Measured seconds (after warmup).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warmup seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
}

struct Shared {
    ctx: Ctx,
    args: EchoArgs,
    phases: Phases,
    m_start: AtomicU64,
    m_end: AtomicU64,
    ready: AtomicUsize,
    failed: AtomicUsize,
    first_error: FirstError,
    sent: Vec<Padded>,
    received: Vec<Padded>,
}

#[derive(Default)]
struct ThreadResult {
    latency: Latency,
    in_window: u64,
    malformed: u64,
    disconnects: u64,
}

async fn connection(
    sh: Arc<Shared>,
    tid: usize,
    idx: usize,
    sem: Arc<Semaphore>,
    acc: Rc<RefCell<ThreadResult>>,
) {
    let permit = sem.acquire().await;
    let src = sh.ctx.sources.pick(idx);
    let (mut rd, mut wr) = match client::connect(&sh.ctx.target, src, sh.ctx.connect_timeout).await
    {
        Ok(c) => c,
        Err(e) => {
            sh.failed.fetch_add(1, Ordering::Relaxed);
            sh.first_error.set(format!("connection {idx}: {e:#}"));
            return;
        }
    };
    drop(permit);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    sh.phases.wait_for(Phase::Running).await;
    let (m_start, m_end) = (
        sh.m_start.load(Ordering::Relaxed),
        sh.m_end.load(Ordering::Relaxed),
    );
    let end_at = tokio::time::Instant::from_std(stats::epoch() + Duration::from_nanos(m_end));
    let credits = Rc::new(Cell::new(sh.args.pipeline as u64));
    let wake = Rc::new(Notify::new());
    let pongs: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();

    // Reader: time each echo and hand a credit back to the writer.
    let (c2, w2, p2, sh2, acc2) = (
        credits.clone(),
        wake.clone(),
        pongs.clone(),
        sh.clone(),
        acc.clone(),
    );
    let reader = tokio::task::spawn_local(async move {
        'conn: while rd.fill().await.is_ok() {
            let now = stats::now_ns();
            let (mut got, mut a) = (0u64, acc2.borrow_mut());
            loop {
                match rd.next_buffered() {
                    Ok(Some((OpCode::Text | OpCode::Binary, payload))) => {
                        got += 1;
                        match Header::parse(payload) {
                            Some(h) if now >= m_start && now < m_end => {
                                a.in_window += 1;
                                a.latency.record(now.saturating_sub(h.ts_ns));
                            }
                            Some(_) => {}
                            None => a.malformed += 1,
                        }
                    }
                    Ok(Some((OpCode::Ping, payload))) => p2.borrow_mut().push(payload.to_vec()),
                    Ok(Some((OpCode::Close, _))) | Err(_) => break 'conn,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
            drop(a);
            runner::bump(&sh2.received[tid], got);
            c2.set(c2.get() + got);
            if got > 0 || !p2.borrow().is_empty() {
                w2.notify_one();
            }
        }
        if sh2.phases.get() < Phase::Done {
            acc2.borrow_mut().disconnects += 1;
        }
    });

    // Writer: spend all available credits in one coalesced write.
    let tpl = Template::raw(sh.args.payload);
    let mut seq = 0u64;
    loop {
        let now = stats::now_ns();
        if now >= m_end {
            break;
        }
        for p in pongs.borrow_mut().drain(..) {
            wr.push(OpCode::Pong, &p);
        }
        let n = credits.replace(0);
        for _ in 0..n {
            let h = Header {
                stream: idx as u32,
                seq,
                ts_ns: now,
            };
            wr.push_with(OpCode::Text, tpl.bytes.len(), |d| tpl.fill(d, &h));
            seq += 1;
        }
        runner::bump(&sh.sent[tid], n);
        if wr.flush().await.is_err() {
            break;
        }
        if credits.get() == 0 {
            let _ = tokio::time::timeout_at(end_at, wake.notified()).await;
        }
    }
    sh.phases.wait_for(Phase::Done).await;
    reader.abort();
}

async fn worker(sh: Arc<Shared>, tid: usize) -> Result<ThreadResult> {
    let sem = Arc::new(Semaphore::new(sh.ctx.per_thread_concurrency()));
    let acc = Rc::new(RefCell::new(ThreadResult::default()));
    let mut set = tokio::task::JoinSet::new();
    for c in (tid..sh.args.connections).step_by(sh.ctx.threads) {
        set.spawn_local(connection(sh.clone(), tid, c, sem.clone(), acc.clone()));
    }
    sh.phases.wait_for(Phase::Done).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
    let res = std::mem::take(&mut *acc.borrow_mut());
    Ok(res)
}

pub fn run(ctx: &Ctx, args: &EchoArgs) -> Result<Report> {
    if args.connections == 0 || args.pipeline == 0 {
        bail!("--connections and --pipeline must be at least 1");
    }
    if args.payload < super::payload::HEADER_LEN {
        bail!(
            "--payload must be at least {} bytes",
            super::payload::HEADER_LEN
        );
    }
    let pad = || (0..ctx.threads).map(|_| Padded::default()).collect();
    let sh = Arc::new(Shared {
        ctx: ctx.clone(),
        args: args.clone(),
        phases: Phases::default(),
        m_start: AtomicU64::new(u64::MAX),
        m_end: AtomicU64::new(u64::MAX),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: FirstError::default(),
        sent: pad(),
        received: pad(),
    });
    let w = sh.clone();
    let handles = runner::spawn_workers(ctx.threads, move |tid| worker(w.clone(), tid));
    let pb = runner::spinner();
    let n = args.connections;
    let ok = runner::wait_until(
        &pb,
        Instant::now() + ctx.setup_timeout,
        || sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) >= n,
        || format!("connecting: {}/{n}", sh.ready.load(Ordering::Relaxed)),
    );
    if !ok || sh.failed.load(Ordering::Relaxed) > 0 {
        sh.phases.set(Phase::Done);
        pb.finish_and_clear();
        let _ = runner::join_workers(handles);
        bail!(
            "setup failed: {}/{n} connected; first error: {}",
            sh.ready.load(Ordering::Relaxed),
            sh.first_error.get().unwrap_or_else(|| "timed out".into())
        );
    }
    let start = stats::now_ns();
    let m_start = start + secs(args.warmup).as_nanos() as u64;
    let m_end = m_start + secs(args.duration).as_nanos() as u64;
    sh.m_start.store(m_start, Ordering::Relaxed);
    sh.m_end.store(m_end, Ordering::Relaxed);
    sh.phases.set(Phase::Running);
    let at = |ns: u64| stats::epoch() + Duration::from_nanos(ns);
    let mut last = (Instant::now(), 0u64);
    let mut msg = || {
        let (now, r) = (Instant::now(), runner::sum(&sh.received));
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let rate = (r - last.1) as f64 / dt;
        if dt >= 0.5 {
            last = (now, r);
        }
        format!("echo: {} msgs/s", fmt_rate(rate))
    };
    runner::wait_until(&pb, at(m_end), || false, &mut msg);
    sh.phases.set(Phase::Draining);
    runner::wait_until(
        &pb,
        Instant::now() + Duration::from_secs(2),
        || runner::sum(&sh.received) >= runner::sum(&sh.sent),
        || "draining".into(),
    );
    let (sent, received) = (runner::sum(&sh.sent), runner::sum(&sh.received));
    sh.phases.set(Phase::Done);
    pb.finish_and_clear();
    let results = runner::join_workers(handles)?;

    let mut lat = Latency::new();
    let (mut in_window, mut malformed, mut disconnects) = (0, 0, 0);
    for r in &results {
        lat.merge(&r.latency);
        in_window += r.in_window;
        malformed += r.malformed;
        disconnects += r.disconnects;
    }
    let rate = in_window as f64 / secs(args.duration).as_secs_f64();
    let l = lat.summary();
    let mut rep = Report::new("echo");
    rep.row(
        "setup",
        format!(
            "{} connections, {} B, pipeline {}, {} thread(s)",
            n, args.payload, args.pipeline, ctx.threads
        ),
    );
    rep.row(
        "measured",
        format!("{:.1}s after {:.1}s warmup", args.duration, args.warmup),
    );
    rep.row("echoes/s", fmt_rate(rate));
    rep.row("latency", l.line());
    rep.row("sent/received", format!("{sent} / {received}"));
    if malformed + disconnects > 0 {
        rep.row(
            "problems",
            format!("{malformed} malformed, {disconnects} disconnects"),
        );
    }
    rep.set("msgs_per_s", rate);
    rep.set("latency_us", l.to_json());
    rep.set(
        "counts",
        json!({"sent": sent, "received": received, "malformed": malformed, "disconnects": disconnects}),
    );
    rep.set(
        "config",
        json!({"connections": n, "payload": args.payload, "pipeline": args.pipeline,
               "duration_s": args.duration, "warmup_s": args.warmup, "threads": ctx.threads}),
    );
    Ok(rep)
}
