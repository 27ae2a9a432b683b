//! `delta`: a state object (`--size` bytes of JSON, a few fields changed per publication)
//! published to one topic with history and fanned out to `--subscribers`, with
//! `delta: "fossil"` subscriptions (`--delta`) or plain ones. Reports the wire bytes per
//! delivery and, with `--server-pid`, the server's CPU per delivery, both counted from the
//! first publication to the last delivery (connections and subscribes excluded).
//!
//! The first `--verify` subscribers rebuild every publication (applying the deltas with the
//! Rust client's applier) and check it byte for byte against what was published.

use super::{Ctx, FirstError};
use crate::client::{self, WsReader, WsWriter, RX_BYTES};
use crate::runner;
use crate::stats::{fmt_rate, Report};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use fastwebsockets::OpCode;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct DeltaArgs {
    /// Subscriber connections.
    #[arg(long, short = 's', default_value_t = 1000)]
    pub subscribers: usize,
    /// Publications (each one a new version of the state object).
    #[arg(long, short = 'n', default_value_t = 500)]
    pub publications: u64,
    /// Publications in flight (published, not yet delivered to every subscriber).
    #[arg(long, short = 'w', default_value_t = 16)]
    pub window: u64,
    /// Approximate size of the state object, in bytes of JSON.
    #[arg(long, default_value_t = 2048)]
    pub size: usize,
    /// Subscribe with `delta: "fossil"`.
    #[arg(long)]
    pub delta: bool,
    /// Topic (must match a `[[topics]]` pattern with history).
    #[arg(long, default_value = "state:t0")]
    pub topic: String,
    /// Subscribers that rebuild and check every publication.
    #[arg(long, default_value_t = 10)]
    pub verify: usize,
    /// The server's process id: its CPU time (utime + stime) is read over the measured span.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// The state object of version `k`: `players` sized to reach about `size` bytes; from one
/// version to the next the version, the clock and two players' positions change.
pub fn state_json(k: u64, size: usize) -> String {
    let n = (size / 75).max(2) as u64;
    let mut s = format!(
        "{{\"match\":\"league-final-7\",\"version\":{k},\"ts\":{},\"status\":\"live\",\"players\":[",
        1_700_000_000_000u64 + k * 50
    );
    for i in 0..n {
        let x = if i == k % n {
            (k * 37) % 1000
        } else {
            (i * 13) % 1000
        };
        let hp = if i == (k * 7 + 3) % n { k % 100 } else { 100 };
        s.push_str(&format!(
            "{}{{\"id\":{i},\"name\":\"player-{i}\",\"team\":\"{}\",\"x\":{x},\"y\":{},\"hp\":{hp}}}",
            if i == 0 { "" } else { "," },
            if i % 2 == 0 { "red" } else { "blue" },
            (i * 29) % 700,
        ));
    }
    s.push_str("]}");
    s
}

struct Shared {
    ctx: Ctx,
    args: DeltaArgs,
    ready: AtomicUsize,
    delivered: AtomicU64,
    /// RX_BYTES, the server's CPU ticks and the time when publishing starts.
    start: std::sync::Mutex<Option<(u64, Option<u64>, Instant)>>,
    end: std::sync::Mutex<Option<(u64, Option<u64>, Instant)>>,
    delta_frames: AtomicU64,
    errors: FirstError,
}

fn ticks(pid: Option<u32>) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces): utime is the 14th field.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn mark(sh: &Shared) -> (u64, Option<u64>, Instant) {
    (
        RX_BYTES.load(Relaxed),
        ticks(sh.args.server_pid),
        Instant::now(),
    )
}

#[derive(Deserialize)]
struct Pub<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    delta: Option<String>,
    offset: Option<u64>,
}

#[derive(Deserialize)]
struct Version {
    version: u64,
}

/// The next text frame (answering pings), copied: the loop that reads it keeps no borrow.
async fn next_text(rd: &mut WsReader, wr: &mut WsWriter) -> Result<Vec<u8>> {
    loop {
        let (op, frame) = rd.next().await?;
        match op {
            OpCode::Text => return Ok(frame.to_vec()),
            OpCode::Ping => {
                let p = frame.to_vec();
                wr.push(OpCode::Pong, &p);
                wr.flush().await?;
            }
            OpCode::Close => bail!("the server closed the connection"),
            _ => {}
        }
    }
}

async fn subscriber(sh: Arc<Shared>, idx: usize) -> Result<()> {
    let src = sh.ctx.sources.pick(idx);
    let (mut rd, mut wr) = client::connect(&sh.ctx.target, src, sh.ctx.connect_timeout).await?;
    let data = if sh.args.delta {
        json!({"delta": "fossil"})
    } else {
        json!(null)
    };
    let sub = json!({"event": "subscribe", "topic": sh.args.topic, "id": 1, "data": data});
    wr.push(OpCode::Text, sub.to_string().as_bytes());
    wr.flush().await?;
    let first = next_text(&mut rd, &mut wr).await?;
    if !first.starts_with(b"{\"event\":\"reply\"") {
        bail!("subscribe refused: {}", String::from_utf8_lossy(&first));
    }
    sh.ready.fetch_add(1, Relaxed);
    let verify = idx < sh.args.verify;
    let mut base: Vec<u8> = Vec::new();
    let mut got = 0;
    while got < sh.args.publications {
        let frame = next_text(&mut rd, &mut wr).await?;
        if !frame.starts_with(b"{\"topic\":") {
            continue;
        }
        got += 1;
        if verify {
            let p: Pub<'_> = serde_json::from_slice(&frame)?;
            let data = match (&p.delta, p.data) {
                (Some(d), _) => {
                    sh.delta_frames.fetch_add(1, Relaxed);
                    ringhub_client::fossil::apply(&base, d.as_bytes(), 64 << 20)
                        .map_err(|e| anyhow!("offset {:?}: {e}", p.offset))?
                }
                (None, Some(d)) => d.get().as_bytes().to_vec(),
                (None, None) => bail!("a publication without data"),
            };
            let v: Version = serde_json::from_slice(&data)?;
            if data != state_json(v.version, sh.args.size).as_bytes() {
                sh.errors
                    .set(format!("subscriber {idx}: version {} differs", v.version));
            }
            base = data;
        }
        let n = sh.delivered.fetch_add(1, Relaxed) + 1;
        if n == sh.args.publications * sh.args.subscribers as u64 {
            *sh.end.lock().unwrap() = Some(mark(&sh));
        }
    }
    wr.close().await;
    Ok(())
}

async fn publisher(sh: Arc<Shared>) -> Result<()> {
    let src = sh.ctx.sources.pick(sh.args.subscribers);
    let (_rd, mut wr) = client::connect(&sh.ctx.target, src, sh.ctx.connect_timeout).await?;
    let deadline = Instant::now() + sh.ctx.setup_timeout;
    while sh.ready.load(Relaxed) < sh.args.subscribers {
        if Instant::now() > deadline {
            bail!("subscribers not ready within the setup timeout");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n = sh.args.subscribers as u64;
    *sh.start.lock().unwrap() = Some(mark(&sh));
    for k in 1..=sh.args.publications {
        while sh.delivered.load(Relaxed) + sh.args.window * n < (k - 1) * n {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let m = format!(
            "{{\"topic\":{},\"event\":\"state\",\"data\":{}}}",
            serde_json::to_string(&sh.args.topic)?,
            state_json(k, sh.args.size)
        );
        wr.push(OpCode::Text, m.as_bytes());
        wr.flush().await?;
    }
    while sh.delivered.load(Relaxed) < sh.args.publications * n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wr.close().await;
    Ok(())
}

pub fn run(ctx: &Ctx, args: &DeltaArgs) -> Result<Report> {
    if args.subscribers == 0 || args.publications == 0 {
        bail!("--subscribers and --publications must be at least 1");
    }
    let sh = Arc::new(Shared {
        ctx: ctx.clone(),
        args: args.clone(),
        ready: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        start: Default::default(),
        end: Default::default(),
        delta_frames: AtomicU64::new(0),
        errors: FirstError::default(),
    });
    let threads = ctx.threads;
    let s2 = sh.clone();
    let handles = runner::spawn_workers(threads, move |t| {
        let sh = s2.clone();
        async move {
            let mut tasks = Vec::new();
            if t == 0 {
                tasks.push(tokio::task::spawn_local(publisher(sh.clone())));
            }
            for i in (t..sh.args.subscribers).step_by(threads) {
                tasks.push(tokio::task::spawn_local(subscriber(sh.clone(), i)));
            }
            for task in tasks {
                task.await??;
            }
            Ok(())
        }
    });
    runner::join_workers(handles)?;
    let (s, e) = (
        sh.start.lock().unwrap().take(),
        sh.end.lock().unwrap().take(),
    );
    let ((b0, c0, t0), (b1, c1, t1)) = s.zip(e).ok_or_else(|| anyhow!("no measurement"))?;
    let deliveries = args.publications * args.subscribers as u64;
    let bytes = (b1 - b0) as f64 / deliveries as f64;
    let secs = t1.duration_since(t0).as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_ns = c0
        .zip(c1)
        .map(|(a, b)| (b - a) as f64 * 1e9 / hz / deliveries as f64);
    let data_len = state_json(args.publications / 2, args.size).len();
    let mut rep = Report::new("delta");
    rep.row(
        "setup",
        format!(
            "{} subscribers ({}), {} publications of a {data_len}-byte state object, window {}",
            args.subscribers,
            if args.delta { "delta" } else { "full" },
            args.publications,
            args.window
        ),
    );
    rep.row(
        "wire",
        format!("{bytes:.1} bytes per delivery ({} deliveries)", deliveries),
    );
    rep.row(
        "throughput",
        format!("{} deliveries/s", fmt_rate(deliveries as f64 / secs)),
    );
    if let Some(c) = cpu_ns {
        rep.row("server CPU", format!("{c:.0} ns per delivery"));
        rep.set("server_cpu_ns_per_delivery", c);
    }
    let checked = args.verify.min(args.subscribers) as u64 * args.publications;
    rep.row(
        "checked",
        format!(
            "{checked} publications rebuilt byte for byte, {} of them from deltas",
            sh.delta_frames.load(Relaxed)
        ),
    );
    if let Some(e) = sh.errors.get() {
        rep.failures.push(e);
    }
    rep.set("bytes_per_delivery", bytes);
    rep.set("data_bytes", data_len);
    rep.set("msgs_per_s", deliveries as f64 / secs);
    rep.set("delivered_total", deliveries);
    rep.set(
        "config",
        json!({"subscribers": args.subscribers, "publications": args.publications,
               "window": args.window, "size": args.size, "delta": args.delta}),
    );
    Ok(rep)
}
