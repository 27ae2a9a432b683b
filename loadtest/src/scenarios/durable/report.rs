//! What a durable run measured, summed over the worker threads.

use super::{Shared, ThreadResult};
use crate::scenarios::secs;
use crate::stats::{fmt_rate, Latency, Report};
use serde_json::json;

pub(super) fn report(sh: &Shared, results: Vec<ThreadResult>) -> Report {
    let a = &sh.args;
    let mut lat = Latency::new();
    let mut t = ThreadResult::default();
    for r in &results {
        lat.merge(&r.latency);
        t.ok += r.ok;
        t.in_window += r.in_window;
        t.delivered_at_once += r.delivered_at_once;
        t.http_errors += r.http_errors;
        t.io_errors += r.io_errors;
        t.received += r.received;
        t.acks += r.acks;
        t.ws_errors += r.ws_errors;
    }
    let dur = secs(a.duration).as_secs_f64();
    let rate = t.in_window as f64 / dur;
    let l = lat.summary();
    let mut rep = Report::new("durable");
    rep.row(
        "setup",
        format!(
            "{} connections × {} pipelined request(s) in flight ({} send(s) each), {} users ({} connected, acking), {} B data, {}, {}, {} thread(s)",
            a.concurrency,
            a.pipeline,
            a.batch,
            a.users,
            a.connected,
            a.payload,
            match (&a.publish, a.plain) {
                (Some(_), _) => "publishes",
                (None, true) => "plain sends (not durable)",
                (None, false) => "durable sends",
            },
            if a.close {
                "a connection per request"
            } else {
                "kept-alive connections"
            },
            sh.ctx.threads
        ),
    );
    rep.row(
        "measured",
        format!("{:.1}s after {:.1}s warmup", a.duration, a.warmup),
    );
    rep.row("sends/s", fmt_rate(rate));
    rep.row("latency", l.line());
    rep.row(
        "answered",
        format!(
            "{} in all, {} in the window ({} written at once to a connected user)",
            fmt_rate(t.ok as f64),
            fmt_rate(t.in_window as f64),
            fmt_rate(t.delivered_at_once as f64)
        ),
    );
    rep.row(
        "users",
        format!(
            "{} messages received, {} acks sent",
            fmt_rate(t.received as f64),
            fmt_rate(t.acks as f64)
        ),
    );
    if t.http_errors + t.io_errors + t.ws_errors > 0 {
        rep.row(
            "errors",
            format!(
                "{} HTTP, {} connection/timeouts, {} WebSocket; first: {}",
                t.http_errors,
                t.io_errors,
                t.ws_errors,
                sh.first_error.get().unwrap_or_default()
            ),
        );
        rep.failures.push(format!(
            "{} failed sends, {} WebSocket errors",
            t.http_errors + t.io_errors,
            t.ws_errors
        ));
    }
    rep.set("msgs_per_s", rate);
    rep.set("sends_per_s", rate);
    rep.set("latency_us", l.to_json());
    rep.set(
        "counts",
        json!({
            "ok": t.ok, "in_window": t.in_window, "delivered_at_once": t.delivered_at_once,
            "http_errors": t.http_errors, "io_errors": t.io_errors, "received": t.received,
            "acks": t.acks, "ws_errors": t.ws_errors,
        }),
    );
    rep.set(
        "config",
        json!({
            "concurrency": a.concurrency, "batch": a.batch, "users": a.users, "connected": a.connected,
            "payload": a.payload, "durable": !a.plain, "duration_s": a.duration,
            "warmup_s": a.warmup, "threads": sh.ctx.threads,
        }),
    );
    rep
}
