//! `recover`: time to recover missed publications on a topic with history (protocol v2).
//!
//! Per repetition: a subscriber has the topic's position (epoch, offset) and is disconnected;
//! a publisher connection publishes `--missed` publications, each with an `id`, and waits for
//! every reply (a reply means stored); the subscriber reconnects and sends
//! `subscribe` with `data.since`. The time measured runs from writing that subscribe to having
//! read its whole reply (the handshake is not included); the reply is then checked:
//! `recovered: true`, exactly `--missed` publications with consecutive offsets after `since`.

use super::{Ctx, FirstError};
use crate::client::{self, WsReader, WsWriter};
use crate::runner;
use crate::stats::{fmt_rate, fmt_us, Latency, Report};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use fastwebsockets::OpCode;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct RecoverArgs {
    /// Topic (must match a `[[topics]]` pattern with history_size >= --missed).
    #[arg(long, default_value = "rec:t0")]
    pub topic: String,
    /// Publications missed while disconnected (at most the server's max_recover).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub missed: usize,
    /// Repetitions (the median and percentiles are over these).
    #[arg(long, short = 'r', default_value_t = 50)]
    pub repetitions: usize,
    /// Size of the `data` string of each publication, in bytes.
    #[arg(long, short = 'b', default_value_t = 64)]
    pub payload: usize,
}

/// Reads frames until the reply (or error) to request `id`; returns its text and when the
/// last byte of it was read.
async fn reply(rd: &mut WsReader, wr: &mut WsWriter, id: u64) -> Result<(String, Instant)> {
    let want = format!("\"id\":{id},");
    let want_end = format!("\"id\":{id}}}");
    loop {
        let (op, frame) = rd.next().await?;
        match op {
            OpCode::Text => {
                let t = Instant::now();
                if frame.starts_with(b"{\"event\":\"error\"") {
                    bail!("error from the server: {}", String::from_utf8_lossy(frame));
                }
                if frame.starts_with(b"{\"event\":\"reply\"") {
                    let text = String::from_utf8_lossy(frame);
                    if text.contains(&want) || text.contains(&want_end) {
                        return Ok((text.into_owned(), t));
                    }
                }
            }
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

fn position(reply: &Value) -> Result<(String, u64)> {
    let d = &reply["data"];
    let epoch = d["epoch"]
        .as_str()
        .ok_or_else(|| anyhow!("reply without data.epoch: {reply}"))?;
    let offset = d["offset"]
        .as_u64()
        .ok_or_else(|| anyhow!("reply without data.offset: {reply}"))?;
    Ok((epoch.to_string(), offset))
}

struct Outcome {
    recover: Latency,
    publish: Latency,
    reply_bytes: usize,
    samples: Vec<f64>,
}

async fn session(
    ctx: Ctx,
    args: RecoverArgs,
    errors: std::sync::Arc<FirstError>,
) -> Result<Outcome> {
    let src = ctx.sources.pick(0);
    let connect = || client::connect(&ctx.target, src, ctx.connect_timeout);
    let (mut prd, mut pwr) = connect().await.context("publisher")?;
    let topic = &args.topic;
    let mut id = 1u64;

    // First position: subscribe once without `since`.
    let (mut srd, mut swr) = connect().await.context("subscriber")?;
    swr.push(
        OpCode::Text,
        json!({"event": "subscribe", "topic": topic, "id": id})
            .to_string()
            .as_bytes(),
    );
    swr.flush().await?;
    let (text, _) = reply(&mut srd, &mut swr, id).await?;
    let (mut epoch, mut offset) = position(&serde_json::from_str(&text)?)?;
    swr.close().await;
    drop(srd);

    let data: String = (0..args.payload)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut out = Outcome {
        recover: Latency::new(),
        publish: Latency::new(),
        reply_bytes: 0,
        samples: Vec::new(),
    };
    for rep in 0..args.repetitions {
        // Publish the missed ones, every one with an id; the replies say they are stored.
        let t0 = Instant::now();
        for _ in 0..args.missed {
            id += 1;
            let m = format!(
                "{{\"topic\":\"{topic}\",\"event\":\"m\",\"data\":\"{data}\",\"id\":{id}}}"
            );
            pwr.push(OpCode::Text, m.as_bytes());
        }
        pwr.flush().await?;
        let mut replies = 0;
        while replies < args.missed {
            let (op, frame) = prd.next().await?;
            if op != OpCode::Text {
                continue;
            }
            if frame.starts_with(b"{\"event\":\"error\"") {
                bail!("publish rejected: {}", String::from_utf8_lossy(frame));
            }
            if frame.starts_with(b"{\"event\":\"reply\"") {
                replies += 1;
            }
        }
        out.publish.record(t0.elapsed().as_nanos() as u64);

        // Reconnect and recover.
        let (mut srd, mut swr) = connect().await.context("subscriber reconnect")?;
        id += 1;
        let sub = json!({"event": "subscribe", "topic": topic, "id": id,
                         "data": {"since": {"epoch": epoch, "offset": offset}}})
        .to_string();
        swr.push(OpCode::Text, sub.as_bytes());
        let t0 = Instant::now();
        swr.flush().await?;
        let (text, t1) = reply(&mut srd, &mut swr, id).await?;
        let ns = t1.duration_since(t0).as_nanos() as u64;
        out.recover.record(ns);
        out.samples.push(ns as f64 / 1000.0);
        out.reply_bytes = text.len();
        swr.close().await;
        drop(srd);

        let v: Value = serde_json::from_str(&text)?;
        if v["data"]["recovered"] != Value::Bool(true) {
            bail!(
                "repetition {rep}: not recovered: {}",
                &text[..text.len().min(300)]
            );
        }
        let pubs = v["data"]["publications"]
            .as_array()
            .ok_or_else(|| anyhow!("reply without publications"))?;
        if pubs.len() != args.missed {
            errors.set(format!(
                "repetition {rep}: {} publications, expected {}",
                pubs.len(),
                args.missed
            ));
        }
        for (k, p) in pubs.iter().enumerate() {
            if p["offset"].as_u64() != Some(offset + 1 + k as u64) {
                errors.set(format!(
                    "repetition {rep}: publication {k} has offset {}, expected {}",
                    p["offset"],
                    offset + 1 + k as u64
                ));
                break;
            }
        }
        let (e, o) = position(&v)?;
        if e != epoch {
            errors.set(format!("repetition {rep}: epoch changed {epoch} -> {e}"));
        }
        (epoch, offset) = (e, o);
    }
    pwr.close().await;
    Ok(out)
}

pub fn run(ctx: &Ctx, args: &RecoverArgs) -> Result<Report> {
    if args.missed == 0 || args.repetitions == 0 {
        bail!("--missed and --repetitions must be at least 1");
    }
    let errors = std::sync::Arc::new(FirstError::default());
    let (c, a, e) = (ctx.clone(), args.clone(), errors.clone());
    let handles = runner::spawn_workers(1, move |_| session(c.clone(), a.clone(), e.clone()));
    let mut results = runner::join_workers(handles)?;
    let o = results.pop().ok_or_else(|| anyhow!("no result"))?;
    let l = o.recover.summary();
    let p = o.publish.summary();
    let mut rep = Report::new("recover");
    rep.row(
        "setup",
        format!(
            "topic {}, {} missed publications of {} B, {} repetitions",
            args.topic, args.missed, args.payload, args.repetitions
        ),
    );
    rep.row("recover", l.line());
    rep.row("reply", format!("{} bytes", fmt_rate(o.reply_bytes as f64)));
    rep.row(
        "publish",
        format!(
            "{} publications with id, all replies: {} (p50, i.e. {} stored publications/s on one connection)",
            args.missed,
            fmt_us(p.p50),
            fmt_rate(args.missed as f64 / (p.p50 / 1e6))
        ),
    );
    if let Some(e) = errors.get() {
        rep.failures.push(e);
    }
    rep.set("msgs_per_s", 1e6 / l.p50.max(1e-9));
    rep.set("latency_us", l.to_json());
    rep.set("recover_us", json!(o.samples));
    rep.set("publish_us", p.to_json());
    rep.set("reply_bytes", o.reply_bytes);
    rep.set(
        "config",
        json!({"topic": args.topic, "missed": args.missed, "repetitions": args.repetitions,
               "payload": args.payload}),
    );
    Ok(rep)
}
