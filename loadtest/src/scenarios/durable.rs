//! `durable`: durable user messages (protocol v2). `--concurrency` HTTP `POST /api/v1/send`
//! requests with `"durable": true` are kept in flight, each slot on its own kept-alive TCP
//! connection (`--close`: a new connection per request, `Connection: close`), to users
//! `u0 ..= u{N-1}` in turn (`--publish TOPIC`: `POST /api/v1/publish` instead); users
//! `u0 ..= u{C-1}` are connected (one WebSocket each, with an HS256 token) and acknowledge
//! every message they receive, the others are offline. `--batch N`: each request is a
//! `POST /api/v1/batch` of N sends. `--pipeline P`: each connection has P requests in flight,
//! written together (HTTP/1.1 pipelining, `durable/pipeline.rs`). Reports answered sends/s and the send latency (TCP connect
//! → complete answer), plus what the connected users received.

use super::{secs, Ctx, FirstError};
use crate::client::{self, Target};
use crate::runner::{self, Padded, Phase, Phases};
use crate::stats::{self, fmt_rate, Latency, Report};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::Args;
use fastwebsockets::OpCode;
use hmac::{Hmac, Mac};
use memchr::memmem;
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod pipeline;
mod report;
mod request;
use report::report;
use request::{check_answer, request};

#[derive(Args, Debug, Clone)]
pub struct DurableArgs {
    /// HTTP send requests in flight (one TCP connection each), over all threads.
    #[arg(long, short = 'c', default_value_t = 128)]
    pub concurrency: usize,
    /// Users the sends go to, in turn: u0 ..= u{N-1}.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Connected users (u0 ..= u{C-1}): one WebSocket each, acknowledging every message.
    #[arg(long, default_value_t = 100)]
    pub connected: usize,
    /// HS256 secret the server checks tokens with (needed when --connected > 0).
    #[arg(long)]
    pub jwt_secret: Option<String>,
    /// API key (sent as `Authorization: Bearer KEY`).
    #[arg(long, default_value = "bench")]
    pub api_key: String,
    /// Size of the `data` string of each message, in bytes.
    #[arg(long, short = 'b', default_value_t = 64)]
    pub payload: usize,
    /// Send without `"durable": true` (at-most-once, v1), for comparison.
    #[arg(long)]
    pub plain: bool,
    /// One TCP connection per request (`Connection: close`) instead of one kept-alive
    /// connection per in-flight slot.
    #[arg(long)]
    pub close: bool,
    /// `POST /api/v1/publish` to this topic instead of sends to users.
    #[arg(long)]
    pub publish: Option<String>,
    /// Sends per request: above 1, each request is a `POST /api/v1/batch` of this many sends
    /// (stored with one commit), so `--concurrency` × `--batch` sends are in flight; rates
    /// and counts are of sends, the latency is the request's.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Requests pipelined per connection: above 1, each slot writes this many requests in one
    /// write, reads their answers in order, then writes the next ones (one write per refill),
    /// so `--concurrency` × `--pipeline` requests are in flight; the latency is each
    /// request's (write → its answer).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Measured seconds (after warmup).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warmup seconds (sending, but not measured).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds one request may take before it counts as failed.
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,
}

struct Shared {
    ctx: Ctx,
    args: DurableArgs,
    phases: Phases,
    measure_start_ns: std::sync::atomic::AtomicU64,
    measure_end_ns: std::sync::atomic::AtomicU64,
    ready: AtomicUsize,
    failed: AtomicUsize,
    first_error: FirstError,
    /// Per thread: answered sends (all phases), for the progress line.
    answered: Vec<Padded>,
}

#[derive(Default)]
struct ThreadResult {
    latency: Latency,
    ok: u64,
    in_window: u64,
    delivered_at_once: u64,
    http_errors: u64,
    io_errors: u64,
    received: u64,
    acks: u64,
    ws_errors: u64,
}

/// An HS256 JWT for user `sub`, valid for a day.
fn token(secret: &str, sub: &str) -> Result<String> {
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 86_400;
    let head = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64.encode(json!({"sub": sub, "exp": exp}).to_string());
    let signing = format!("{head}.{claims}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| anyhow!("jwt secret: {e}"))?;
    mac.update(signing.as_bytes());
    Ok(format!(
        "{signing}.{}",
        b64.encode(mac.finalize().into_bytes())
    ))
}

/// The `N` after `"offset":` in a frame.
fn offset_of(frame: &[u8]) -> Option<u64> {
    let i = memmem::find(frame, b"\"offset\":")? + 9;
    let digits = &frame[i..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    (n > 0 && n < 20).then(|| {
        digits[..n]
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'))
    })
}

/// One connected user: acknowledges every durable message it receives.
async fn user(sh: Arc<Shared>, u: usize, acc: Rc<RefCell<ThreadResult>>) {
    let secret = sh.args.jwt_secret.as_deref().unwrap_or_default();
    let tok = match token(secret, &format!("u{u}")) {
        Ok(t) => t,
        Err(e) => return sh.fail(format!("user u{u}: {e:#}")),
    };
    let target = Target {
        path: format!("{}?token={tok}", sh.ctx.target.path),
        ..sh.ctx.target.clone()
    };
    let (mut rd, mut wr) =
        match client::connect(&target, sh.ctx.sources.pick(u), sh.ctx.connect_timeout).await {
            Ok(c) => c,
            Err(e) => return sh.fail(format!("user u{u}: {e:#}")),
        };
    sh.ready.fetch_add(1, Ordering::Relaxed);
    let topic = format!("user:u{u}");
    loop {
        if rd.fill().await.is_err() {
            if sh.phases.get() < Phase::Done {
                acc.borrow_mut().ws_errors += 1;
            }
            return;
        }
        let closed = {
            let mut a = acc.borrow_mut();
            let mut closed = false;
            while let Ok(Some((op, frame))) = rd.next_buffered() {
                match op {
                    OpCode::Text if frame.starts_with(b"{\"event\":\"error\"") => {
                        a.ws_errors += 1;
                        sh.first_error
                            .set(String::from_utf8_lossy(frame).into_owned());
                    }
                    OpCode::Text => {
                        a.received += 1;
                        if memmem::find(frame, b"\"ack\":true").is_some() {
                            if let Some(o) = offset_of(frame) {
                                let ack = format!(
                                "{{\"event\":\"ack\",\"topic\":\"{topic}\",\"data\":{{\"offset\":{o}}}}}"
                            );
                                wr.push(OpCode::Text, ack.as_bytes());
                                a.acks += 1;
                            }
                        }
                    }
                    OpCode::Ping => wr.push(OpCode::Pong, frame),
                    OpCode::Close => closed = true,
                    _ => {}
                }
            }
            closed
        };
        if closed || wr.flush().await.is_err() {
            return;
        }
    }
}

/// One send on the slot's connection (opened first when there is none; dropped after the
/// answer with `--close`, on an error, or when the server closes): write the request, read
/// one answer (to EOF with `--close`, else by its `Content-Length`); `Ok(delivered)` on HTTP
/// 200 with `"success":true`.
async fn send_one(
    sh: &Shared,
    src: std::net::IpAddr,
    req: &[u8],
    buf: &mut Vec<u8>,
    conn: &mut Option<tokio::net::TcpStream>,
) -> Result<u64> {
    let s = match conn {
        Some(s) => s,
        None => conn.insert(client::tcp_connect(&sh.ctx.target, src).await?),
    };
    let r = exchange(s, req, buf, sh.args.close).await;
    if !matches!(r, Ok(true)) {
        *conn = None;
    }
    r?;
    check_answer(buf)
}

/// Writes `req` and reads its answer into `buf`; returns whether the connection stays open.
async fn exchange(
    s: &mut tokio::net::TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
    to_eof: bool,
) -> Result<bool> {
    s.write_all(req).await?;
    buf.clear();
    if to_eof {
        s.read_to_end(buf).await?;
        return Ok(false);
    }
    Ok(pipeline::read_answer(s, buf).await?.1)
}

/// One in-flight slot: sends back to back until the measured window ends.
async fn sender(
    sh: Arc<Shared>,
    tid: usize,
    slot: usize,
    next: Rc<RefCell<usize>>,
    acc: Rc<RefCell<ThreadResult>>,
) {
    let a = &sh.args;
    let data: String = (0..a.payload)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let timeout = secs(a.request_timeout);
    let mut buf = Vec::with_capacity(512);
    let mut conn = None;
    let mut n = 0usize;
    let next_user = || {
        let mut nx = next.borrow_mut();
        let u = *nx;
        *nx = (u + sh.ctx.threads * a.batch.max(1)) % a.users;
        u
    };
    while sh.phases.get() == Phase::Running {
        let src = sh.ctx.sources.pick(slot + n * 7);
        n += 1;
        if a.pipeline > 1 {
            let reqs: Vec<String> = (0..a.pipeline)
                .map(|_| request(&sh, &data, next_user()))
                .collect();
            pipeline::round(&sh, tid, src, &reqs, &mut buf, &mut conn, &acc).await;
            continue;
        }
        let req = request(&sh, &data, next_user());
        let t0 = stats::now_ns();
        let r = tokio::time::timeout(
            timeout,
            send_one(&sh, src, req.as_bytes(), &mut buf, &mut conn),
        )
        .await;
        if r.is_err() {
            conn = None;
        }
        let t1 = stats::now_ns();
        let r = r.unwrap_or_else(|_| Err(anyhow!("request timed out")));
        record(&sh, tid, &mut acc.borrow_mut(), r, t0, t1);
    }
}

/// Counts one request's outcome (`Ok(delivered)`), sent at `t0` and answered at `t1`: its
/// sends and latency when both fall in the measured window.
fn record(sh: &Shared, tid: usize, acc: &mut ThreadResult, r: Result<u64>, t0: u64, t1: u64) {
    let a = &sh.args;
    let m_start = sh.measure_start_ns.load(Ordering::Relaxed);
    let m_end = sh.measure_end_ns.load(Ordering::Relaxed);
    match r {
        Ok(d) => {
            let sends = a.batch.max(1) as u64;
            acc.ok += sends;
            runner::bump(&sh.answered[tid], sends);
            if t0 >= m_start && t1 < m_end {
                acc.in_window += sends;
                acc.delivered_at_once += d;
                acc.latency.record(t1 - t0);
            }
        }
        Err(e) if format!("{e:#}").starts_with("HTTP") => {
            acc.http_errors += 1;
            sh.first_error.set(format!("{e:#}"));
        }
        Err(e) => {
            acc.io_errors += 1;
            sh.first_error.set(format!("{e:#}"));
        }
    }
}

impl Shared {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.set(what);
    }
}

async fn worker(sh: Arc<Shared>, tid: usize) -> Result<ThreadResult> {
    let acc = Rc::new(RefCell::new(ThreadResult::default()));
    let mut set = tokio::task::JoinSet::new();
    for u in (tid..sh.args.connected).step_by(sh.ctx.threads) {
        set.spawn_local(user(sh.clone(), u, acc.clone()));
    }
    sh.phases.wait_for(Phase::Running).await;
    let next = Rc::new(RefCell::new(tid % sh.args.users));
    let mut senders = tokio::task::JoinSet::new();
    for slot in (tid..sh.args.concurrency).step_by(sh.ctx.threads) {
        senders.spawn_local(sender(sh.clone(), tid, slot, next.clone(), acc.clone()));
    }
    tokio::select! {
        _ = async { while senders.join_next().await.is_some() {} } => {}
        _ = sh.phases.wait_for(Phase::Done) => senders.abort_all(),
    }
    // Let the connected users receive and acknowledge what was answered last.
    sh.phases.wait_for(Phase::Done).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
    let r = std::mem::take(&mut *acc.borrow_mut());
    Ok(r)
}

pub fn run(ctx: &Ctx, args: &DurableArgs) -> Result<Report> {
    if args.concurrency == 0 || args.users == 0 || args.batch == 0 || args.pipeline == 0 {
        bail!("--concurrency, --users, --batch and --pipeline must be at least 1");
    }
    if args.pipeline > 1 && args.close {
        bail!("--pipeline needs kept-alive connections (not --close)");
    }
    if args.batch > 1000 {
        bail!("--batch above 1000: the server takes at most 1000 commands per batch");
    }
    if args.connected > args.users {
        bail!("--connected exceeds --users");
    }
    if args.connected > 0 && args.jwt_secret.is_none() {
        bail!("--connected > 0 needs --jwt-secret (users connect with HS256 tokens)");
    }
    let pad = || (0..ctx.threads).map(|_| Padded::default()).collect();
    let sh = Arc::new(Shared {
        ctx: ctx.clone(),
        args: args.clone(),
        phases: Phases::default(),
        measure_start_ns: u64::MAX.into(),
        measure_end_ns: u64::MAX.into(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: FirstError::default(),
        answered: pad(),
    });
    let w = sh.clone();
    let handles = runner::spawn_workers(ctx.threads, move |tid| worker(w.clone(), tid));
    let pb = runner::spinner();
    let ready = runner::wait_until(
        &pb,
        Instant::now() + ctx.setup_timeout,
        || sh.ready.load(Ordering::Relaxed) + sh.failed.load(Ordering::Relaxed) >= args.connected,
        || {
            format!(
                "connecting users: {}/{}",
                sh.ready.load(Ordering::Relaxed),
                args.connected
            )
        },
    );
    if !ready || sh.failed.load(Ordering::Relaxed) > 0 {
        sh.phases.set(Phase::Done);
        pb.finish_and_clear();
        let _ = runner::join_workers(handles);
        let why = sh.first_error.get().unwrap_or_else(|| "timed out".into());
        bail!("setup failed: first error: {why}");
    }
    // Replays of earlier runs' unacknowledged messages reach reconnected users now.
    std::thread::sleep(Duration::from_millis(200));
    let start = stats::now_ns();
    let m_start = start + secs(args.warmup).as_nanos() as u64;
    let m_end = m_start + secs(args.duration).as_nanos() as u64;
    sh.measure_start_ns.store(m_start, Ordering::Relaxed);
    sh.measure_end_ns.store(m_end, Ordering::Relaxed);
    sh.phases.set(Phase::Running);
    let at = |ns: u64| stats::epoch() + Duration::from_nanos(ns);
    let mut last = (Instant::now(), 0u64);
    let mut msg = |label: &str| {
        let (now, n) = (Instant::now(), runner::sum(&sh.answered));
        let dt = now.duration_since(last.0).as_secs_f64();
        let r = if dt > 0.0 {
            (n - last.1) as f64 / dt
        } else {
            0.0
        };
        if dt >= 0.5 {
            last = (now, n);
        }
        format!("{label}: {} sends/s", fmt_rate(r))
    };
    runner::wait_until(&pb, at(m_start), || false, || msg("warmup"));
    runner::wait_until(&pb, at(m_end), || false, || msg("measuring"));
    sh.phases.set(Phase::Draining);
    // Requests still in flight finish (bounded by the request timeout); then the users get
    // a moment for the last deliveries and acks.
    std::thread::sleep(Duration::from_millis(500));
    sh.phases.set(Phase::Done);
    pb.finish_and_clear();
    let results = runner::join_workers(handles).context("durable workers")?;
    Ok(report(&sh, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_token() {
        let f = br#"{"topic":"user:u1","event":"m","data":"x","offset":42,"ack":true}"#;
        assert_eq!(offset_of(f), Some(42));
        assert_eq!(offset_of(br#"{"offset":}"#), None);
        let t = token("secret", "u1").expect("token");
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("base64");
        let v: serde_json::Value = serde_json::from_slice(&claims).expect("json");
        assert_eq!(v["sub"], "u1");
    }
}
