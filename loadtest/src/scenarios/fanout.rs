//! `fanout`: S subscribers on T topics, P publishers, open-loop `--rate` or closed-loop
//! `--max` with a per-stream in-flight window; exactly-once accounting with `--verify`.
//!
//! A *stream* is one (publisher, topic) sequence: there are max(P, T) streams, stream `s`
//! goes to topic `s % T` and is sent by publisher connection `s % P`. Subscriber `i`
//! listens on topic `i % T`.

use super::fanout_poll::poll_subscriber;
use super::fanout_tasks::{publisher, subscriber, ThreadResult};
use super::payload::Dialect;
use super::{secs, Ctx, FirstError};
use crate::client::{self, Target};
use crate::runner::{self, Padded, Phase, Phases};
use crate::stats::{self, fmt_rate, fmt_us, Latency, Report};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscriber connections.
    #[arg(long, short = 's', default_value_t = 100)]
    pub subscribers: usize,
    /// Topics (subscribers are spread round-robin over them; raw protocol: must be 1).
    #[arg(long, short = 't', default_value_t = 1)]
    pub topics: usize,
    /// Publisher connections.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,
    /// Payload size in bytes (the `data` string; at least 40).
    #[arg(long, short = 'b', default_value_t = 64)]
    pub payload: usize,
    /// Open loop: total publish rate in messages/s, spread evenly over the streams.
    #[arg(long, conflicts_with = "max")]
    pub rate: Option<f64>,
    /// Closed loop: publish as fast as the in-flight window allows.
    #[arg(long)]
    pub max: bool,
    /// `--max` window: publications per stream not yet delivered to every subscriber.
    #[arg(long, short = 'w', default_value_t = 128)]
    pub window: usize,
    /// Measured seconds (after warmup).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warmup seconds (publishing, but not measured).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait after publishers stop for in-flight messages.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Exit non-zero if any message was missing or duplicated after the drain.
    #[arg(long)]
    pub verify: bool,
    /// Topic names are PREFIX0, PREFIX1, ... (ringhub protocol), e.g. `hist:t` for topics
    /// configured with history (their publications carry an `offset` after `data`, which the
    /// classifier ignores like any trailing field).
    #[arg(long, default_value = "t")]
    pub topic_prefix: String,
    /// Check that every delivery carries `"offset":N` after its data, N increasing by one
    /// per subscriber (topics with history, one stream per topic); violations are counted
    /// and fail `--verify`.
    #[arg(long)]
    pub offsets: bool,
    /// Subscribers connect to these servers instead of `--target` (comma-separated, same
    /// form as `--target`; subscriber i to entry i mod N); publishers stay on `--target`.
    /// Latency is then also reported apart for subscribers on the publisher's server
    /// ("same node") and on the others ("cross node").
    #[arg(long)]
    pub sub_targets: Option<String>,
    /// `--protocol socketio`: the subscribers' Engine.IO transport; `polling` is HTTP
    /// long-polling (GET/POST with the session id, one kept-alive TCP connection each). The
    /// publisher stays on WebSocket.
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
}

/// The subscribers' transport.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    Polling,
}

/// One (publisher, topic) sequence.
pub struct Stream {
    pub topic: usize,
    pub publisher: usize,
    /// Subscribers that must receive each message of this stream.
    pub nsubs: u32,
    /// Messages published so far (the next sequence number).
    pub published: AtomicU64,
    /// `--max`: messages delivered to all `nsubs` subscribers (completion is in order).
    pub completed: AtomicU64,
    /// `--max`: delivery counters, slot `seq % window`.
    pub slots: Box<[AtomicU32]>,
}

/// State shared by all threads of a fanout run.
pub struct Shared {
    pub ctx: Ctx,
    pub args: FanoutArgs,
    /// `--sub-targets` (empty: every subscriber on `ctx.target`).
    pub sub_targets: Vec<Target>,
    pub streams: Vec<Stream>,
    pub pub_streams: Vec<Vec<usize>>,
    pub pub_notify: Vec<Notify>,
    pub phases: Phases,
    pub start_ns: AtomicU64,
    pub measure_start_ns: AtomicU64,
    pub measure_end_ns: AtomicU64,
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    pub pubs_stopped: AtomicUsize,
    pub first_error: FirstError,
    /// Per thread: first-time deliveries (all phases) and deliveries inside the window.
    pub unique: Vec<Padded>,
    pub in_window: Vec<Padded>,
    pub max_lag_ns: AtomicU64,
}

impl Shared {
    pub fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.set(what);
    }

    /// Where subscriber `idx` connects, and whether that is another server than the
    /// publishers' (a cross-node delivery in a cluster).
    pub fn sub_target(&self, idx: usize) -> (&Target, bool) {
        match self.sub_targets.len() {
            0 => (&self.ctx.target, false),
            n => {
                let t = &self.sub_targets[idx % n];
                (t, t.addr != self.ctx.target.addr)
            }
        }
    }

    pub fn published_total(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.published.load(Ordering::Relaxed))
            .sum()
    }

    pub fn expected_total(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.published.load(Ordering::Relaxed) * s.nsubs as u64)
            .sum()
    }
}

fn build_shared(ctx: &Ctx, args: &FanoutArgs) -> Result<Shared> {
    let (s, t, p) = (args.subscribers, args.topics, args.publishers);
    if s == 0 || t == 0 || p == 0 {
        bail!("--subscribers, --topics and --publishers must be at least 1");
    }
    if ctx.dialect() == Dialect::Raw && t != 1 {
        bail!("--protocol raw broadcasts to every connection: --topics must be 1");
    }
    if t > s {
        bail!("--topics ({t}) exceeds --subscribers ({s}): some topics would have no subscriber");
    }
    if args.payload < super::payload::HEADER_LEN {
        bail!(
            "--payload must be at least {} bytes",
            super::payload::HEADER_LEN
        );
    }
    if args.rate.is_none() && !args.max {
        bail!("give either --rate MSGS_PER_SEC (open loop) or --max (closed loop)");
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be positive");
    }
    if args.window == 0 {
        bail!("--window must be at least 1");
    }
    if args.offsets && (!ctx.ringhub || p.max(t) != t) {
        bail!("--offsets needs the ringhub protocol and one stream per topic (--publishers <= --topics)");
    }
    if args.transport == Transport::Polling && !ctx.socketio {
        bail!("--transport polling needs --protocol socketio");
    }
    let sub_targets = match &args.sub_targets {
        Some(list) => client::parse_targets(list, &ctx.target.path)?,
        None => Vec::new(),
    };
    let nstreams = p.max(t);
    let nsubs_of = |topic: usize| (s / t + usize::from(topic < s % t)) as u32;
    let window = if args.max { args.window } else { 0 };
    let streams = (0..nstreams)
        .map(|i| Stream {
            topic: i % t,
            publisher: i % p,
            nsubs: nsubs_of(i % t),
            published: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            slots: (0..window).map(|_| AtomicU32::new(0)).collect(),
        })
        .collect();
    let pad = || (0..ctx.threads).map(|_| Padded::default()).collect();
    Ok(Shared {
        ctx: ctx.clone(),
        args: args.clone(),
        sub_targets,
        streams,
        pub_streams: (0..p)
            .map(|pi| (0..nstreams).filter(|i| i % p == pi).collect())
            .collect(),
        pub_notify: (0..p).map(|_| Notify::new()).collect(),
        phases: Phases::default(),
        start_ns: AtomicU64::new(0),
        measure_start_ns: AtomicU64::new(u64::MAX),
        measure_end_ns: AtomicU64::new(u64::MAX),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        pubs_stopped: AtomicUsize::new(0),
        first_error: FirstError::default(),
        unique: pad(),
        in_window: pad(),
        max_lag_ns: AtomicU64::new(0),
    })
}

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

fn report(
    sh: &Shared,
    results: Vec<ThreadResult>,
    published_in_window: u64,
    drained: bool,
    drain_time: Duration,
) -> Report {
    let a = &sh.args;
    let mut lat = Latency::new();
    let (mut same, mut cross) = (Latency::new(), Latency::new());
    let mut lag_hist = Latency::new();
    let mut t = ThreadResult::default();
    for r in &results {
        lat.merge(&r.latency);
        same.merge(&r.latency_same);
        cross.merge(&r.latency_cross);
        lag_hist.merge(&r.send_lag);
        t.delivered += r.delivered;
        t.in_window += r.in_window;
        t.duplicates += r.duplicates;
        t.out_of_order += r.out_of_order;
        t.missing += r.missing;
        t.server_errors += r.server_errors;
        for (code, n) in &r.error_codes {
            *t.error_codes.entry(code.clone()).or_default() += n;
        }
        t.malformed += r.malformed;
        t.disconnects += r.disconnects;
        t.offset_errors += r.offset_errors;
        t.acks += r.acks;
    }
    let dur = secs(a.duration).as_secs_f64();
    let delivered_rate = t.in_window as f64 / dur;
    let publish_rate = published_in_window as f64 / dur;
    let published = sh.published_total();
    let expected = sh.expected_total();
    let l = lat.summary();
    let mode = match a.rate {
        Some(r) => format!("open loop, {} msgs/s total", fmt_rate(r)),
        None => format!("closed loop (--max), window {} per stream", a.window),
    };

    let mut rep = Report::new("fanout");
    rep.row(
        "setup",
        format!(
            "{} subscribers on {} topic(s), {} publisher(s), {} B payload, {} stream(s), {} thread(s)",
            a.subscribers,
            a.topics,
            a.publishers,
            a.payload,
            sh.streams.len(),
            sh.ctx.threads
        ),
    );
    rep.row("mode", mode);
    if a.transport == Transport::Polling {
        rep.row(
            "transport",
            "subscribers on HTTP long-polling, publisher on WebSocket",
        );
    }
    rep.row(
        "measured",
        format!("{:.1}s after {:.1}s warmup", a.duration, a.warmup),
    );
    rep.row("delivered/s", fmt_rate(delivered_rate));
    rep.row("published/s", fmt_rate(publish_rate));
    rep.row("latency", l.line());
    if !sh.sub_targets.is_empty() {
        let (s, c) = (same.summary(), cross.summary());
        rep.row("latency same node", s.line());
        rep.row("latency cross node", c.line());
        rep.set("latency_same_us", s.to_json());
        rep.set("latency_cross_us", c.to_json());
    }
    rep.row("published", fmt_rate(published as f64));
    rep.row("expected", fmt_rate(expected as f64));
    rep.row(
        "delivered",
        format!(
            "{} (duplicates {}, missing {}, out-of-order {})",
            fmt_rate(t.delivered as f64),
            t.duplicates,
            t.missing,
            t.out_of_order
        ),
    );
    if sh.ctx.socketio {
        rep.row("publish acks", fmt_rate(t.acks as f64));
    }
    rep.row(
        "drain",
        format!(
            "{} in {:.2}s",
            if drained { "complete" } else { "TIMED OUT" },
            drain_time.as_secs_f64()
        ),
    );
    if t.server_errors + t.malformed + t.disconnects > 0 {
        rep.row(
            "problems",
            format!(
                "{} server errors, {} malformed frames, {} disconnects",
                t.server_errors, t.malformed, t.disconnects
            ),
        );
    }
    if !t.error_codes.is_empty() {
        let list: Vec<String> = t
            .error_codes
            .iter()
            .map(|(c, n)| format!("{c} ×{n}"))
            .collect();
        rep.row("server said", list.join(", "));
        if t.error_codes.contains_key("rate_limited") || t.error_codes.contains_key("close 1008") {
            rep.row(
                "hint",
                "the server's default limits (1000 msgs/s per connection, 1000 connections per \
                 IP) refuse a load test: start it with RINGHUB_LIMITS_MESSAGES_PER_SECOND=0 \
                 RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 (see loadtest/README.md)",
            );
        }
    }
    let lag = sh.max_lag_ns.load(Ordering::Relaxed);
    let lag_summary = lag_hist.summary();
    if a.rate.is_some() {
        rep.row("max send lag", fmt_us(lag as f64 / 1000.0));
        rep.row("send lag", lag_summary.line());
        rep.set("send_lag_us", lag_summary.to_json());
    }
    if a.offsets {
        rep.row(
            "offsets",
            if t.offset_errors == 0 {
                "every delivery had the next offset".to_string()
            } else {
                format!("{} deliveries without the next offset", t.offset_errors)
            },
        );
    }
    if a.verify {
        if t.offset_errors > 0 {
            rep.failures
                .push(format!("{} offset errors", t.offset_errors));
        }
        if t.missing > 0 {
            rep.failures
                .push(format!("{} deliveries missing", t.missing));
        }
        if t.duplicates > 0 {
            rep.failures
                .push(format!("{} duplicate deliveries", t.duplicates));
        }
        if rep.failures.is_empty() {
            rep.row("verify", "exactly-once OK");
        }
    }
    rep.set("msgs_per_s", delivered_rate);
    rep.set("delivered_total", t.delivered);
    rep.set("published_per_s", publish_rate);
    rep.set("latency_us", l.to_json());
    rep.set(
        "counts",
        json!({
            "published": published, "expected": expected, "delivered": t.delivered,
            "duplicates": t.duplicates, "missing": t.missing, "out_of_order": t.out_of_order,
            "server_errors": t.server_errors, "malformed": t.malformed,
            "disconnects": t.disconnects, "in_window": t.in_window,
            "offset_errors": t.offset_errors, "error_codes": t.error_codes,
            "acks": t.acks,
        }),
    );
    rep.set(
        "config",
        json!({
            "subscribers": a.subscribers, "topics": a.topics, "publishers": a.publishers,
            "payload": a.payload, "rate": a.rate, "max": a.max, "window": a.window,
            "duration_s": a.duration, "warmup_s": a.warmup, "threads": sh.ctx.threads,
            "topic_prefix": a.topic_prefix, "offsets": a.offsets,
            "sub_targets": sh.sub_targets.iter().map(|t| t.addr.to_string()).collect::<Vec<_>>(),
            "transport": format!("{:?}", a.transport).to_lowercase(),
        }),
    );
    rep.set("drained", drained);
    rep.set("drain_s", stats::secs(drain_time));
    rep.set("max_send_lag_us", lag as f64 / 1000.0);
    rep
}
