//! State shared by every thread of a fanout run: the streams with their publish and
//! completion counters, the phase clock and the run-wide tallies, and how the command-line
//! arguments lay them out.

use super::classify::Dialect;
use super::fanout_args::{FanoutArgs, Transport};
use super::{Ctx, FirstError};
use crate::client::{self, Target};
use crate::runner::{Padded, Phases};
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use tokio::sync::Notify;

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

/// Checks the arguments and lays out the streams and counters of a run.
pub(super) fn build_shared(ctx: &Ctx, args: &FanoutArgs) -> Result<Shared> {
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
