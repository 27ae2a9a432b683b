//! `fanout`: S subscribers on T topics, P publishers, open-loop `--rate` or closed-loop
//! `--max` with a per-stream in-flight window; exactly-once accounting with `--verify`.
//!
//! A *stream* is one (publisher, topic) sequence: there are max(P, T) streams, stream `s`
//! goes to topic `s % T` and is sent by publisher connection `s % P`. Subscriber `i`
//! listens on topic `i % T`.
//!
//! This module holds the run's course (connect, warm up, measure, drain); the rest lives in
//! `fanout_args` (command line), `fanout_shared` (cross-thread state), `fanout_tasks`
//! (WebSocket connections), `fanout_poll` (long-polling subscribers), `fanout_accounting`
//! (what a delivery counts for) and `fanout_report`.

use super::fanout_accounting::ThreadResult;
pub use super::fanout_args::{FanoutArgs, Transport};
use super::fanout_poll::poll_subscriber;
use super::fanout_report::report;
use super::fanout_shared::{build_shared, Shared};
use super::fanout_tasks::{publisher, subscriber};
use super::{secs, Ctx};
use crate::runner::{self, Phase};
use crate::stats::{self, fmt_rate, Report};
use anyhow::{bail, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One worker thread: spawns its share of connections, waits for `Done`, collects.
async fn worker(sh: Arc<Shared>, tid: usize) -> Result<ThreadResult> {
    let threads = sh.ctx.threads;
    let nsubs = sh.args.subscribers;
    let total = nsubs + sh.args.publishers;
    let sem = Arc::new(tokio::sync::Semaphore::new(sh.ctx.per_thread_concurrency()));
    let acc = std::rc::Rc::new(std::cell::RefCell::new(ThreadResult::default()));
    if sh.args.max {
        acc.borrow_mut().init_window(&sh, tid, threads);
    }
    let mut set = tokio::task::JoinSet::new();
    let mut tracks = Vec::new();
    for c in (tid..total).step_by(threads) {
        if c < nsubs {
            let track = std::rc::Rc::new(std::cell::RefCell::new(Default::default()));
            tracks.push((c, track.clone()));
            if sh.args.transport == Transport::Polling {
                set.spawn_local(poll_subscriber(
                    sh.clone(),
                    tid,
                    c,
                    sem.clone(),
                    acc.clone(),
                    track,
                ));
            } else {
                set.spawn_local(subscriber(
                    sh.clone(),
                    tid,
                    c,
                    sem.clone(),
                    acc.clone(),
                    track,
                ));
            }
        } else {
            set.spawn_local(publisher(
                sh.clone(),
                tid,
                c - nsubs,
                c,
                sem.clone(),
                acc.clone(),
            ));
        }
    }
    sh.phases.wait_for(Phase::Done).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
    let mut res = std::mem::take(&mut *acc.borrow_mut());
    for (c, track) in tracks {
        res.missing += track.borrow().missing(&sh, c);
    }
    Ok(res)
}

/// Runs the scenario end to end and builds the report.
pub fn run(ctx: &Ctx, args: &FanoutArgs) -> Result<Report> {
    let sh = Arc::new(build_shared(ctx, args)?);
    let total = args.subscribers + args.publishers;
    let w = sh.clone();
    let handles = runner::spawn_workers(ctx.threads, move |tid| worker(w.clone(), tid));
    let pb = runner::spinner();

    let setup_deadline = Instant::now() + ctx.setup_timeout;
    let all_ready = runner::wait_until(
        &pb,
        setup_deadline,
        || sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) >= total,
        || {
            format!(
                "connecting: {}/{} ready, {} failed",
                sh.ready.load(Ordering::Relaxed),
                total,
                sh.failed.load(Ordering::Relaxed)
            )
        },
    );
    let failed = sh.failed.load(Ordering::Relaxed);
    if !all_ready || failed > 0 {
        sh.phases.set(Phase::Done);
        pb.finish_and_clear();
        let _ = runner::join_workers(handles);
        let why = sh.first_error.get().unwrap_or_else(|| "timed out".into());
        bail!(
            "setup failed: {}/{total} connections ready, {failed} failed; first error: {why}",
            sh.ready.load(Ordering::Relaxed)
        );
    }
    // Give raw peers a moment to register the last connections before publishing.
    std::thread::sleep(Duration::from_millis(100));

    let warmup = secs(args.warmup);
    let duration = secs(args.duration);
    let start = stats::now_ns();
    let m_start = start + warmup.as_nanos() as u64;
    let m_end = m_start + duration.as_nanos() as u64;
    sh.start_ns.store(start, Ordering::Relaxed);
    sh.measure_start_ns.store(m_start, Ordering::Relaxed);
    sh.measure_end_ns.store(m_end, Ordering::Relaxed);
    sh.phases.set(Phase::Running);

    let at = |ns: u64| stats::epoch() + Duration::from_nanos(ns);
    let mut last = (Instant::now(), 0u64);
    let mut rate_msg = |label: &str| {
        let now = Instant::now();
        let d = runner::sum(&sh.unique);
        let dt = now.duration_since(last.0).as_secs_f64();
        let r = if dt > 0.0 {
            (d - last.1) as f64 / dt
        } else {
            0.0
        };
        if dt >= 0.5 {
            last = (now, d);
        }
        format!(
            "{label}: delivered {} msgs/s, published {}",
            fmt_rate(r),
            fmt_rate(sh.published_total() as f64)
        )
    };
    runner::wait_until(&pb, at(m_start), || false, || rate_msg("warmup"));
    let pub_at_start = sh.published_total();
    runner::wait_until(&pb, at(m_end), || false, || rate_msg("measuring"));
    let pub_at_end = sh.published_total();
    sh.phases.set(Phase::Draining);

    let drain_start = Instant::now();
    let drain_deadline = drain_start + secs(args.drain);
    runner::wait_until(
        &pb,
        drain_deadline,
        || sh.pubs_stopped.load(Ordering::Relaxed) >= args.publishers,
        || "draining: waiting for publishers to stop".into(),
    );
    let drained = runner::wait_until(
        &pb,
        drain_deadline,
        || runner::sum(&sh.unique) >= sh.expected_total(),
        || {
            format!(
                "draining: {} of {} expected deliveries",
                fmt_rate(runner::sum(&sh.unique) as f64),
                fmt_rate(sh.expected_total() as f64)
            )
        },
    );
    let drain_time = drain_start.elapsed();
    sh.phases.set(Phase::Done);
    pb.finish_and_clear();
    let results = runner::join_workers(handles)?;
    Ok(report(
        &sh,
        results,
        pub_at_end - pub_at_start,
        drained,
        drain_time,
    ))
}
