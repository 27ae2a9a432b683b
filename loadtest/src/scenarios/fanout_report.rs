//! What a fanout run measured: the human-readable rows and the JSON fields (scripts in
//! `scripts/` parse them), summed over the worker threads.

use super::fanout_accounting::ThreadResult;
use super::fanout_args::Transport;
use super::fanout_shared::Shared;
use super::secs;
use crate::stats::{self, fmt_rate, fmt_us, Latency, Report};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Sums the threads' results into the run's report; `--verify` failures go in `failures`.
pub(super) fn report(
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
