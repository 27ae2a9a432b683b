//! The properties the sequencing tests check on what each connection received (see the
//! module docs of `seq_tests`).

use std::collections::HashMap;

use serde_json::Value;

use super::{topic_index, Hub, Mark, Req, HISTORY, TOPICS};

/// Where a connection's subscription to a topic stands, as its frames tell.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seg {
    /// Not subscribed.
    Off,
    /// Subscribed, waiting for the reply to this request (nothing may arrive before it).
    Awaiting(u64),
    /// Answered: the next offset must be this one.
    Live(u64),
}

/// The per-connection, per-topic properties of the module docs.
pub(super) fn check_gapless(h: &Hub) -> Result<(), String> {
    for (ci, c) in h.conns.iter().enumerate() {
        let mut seg = [Seg::Off; 2];
        // Plain subscribes while subscribed: their reply must find the stream caught up.
        let mut cont: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        let mut marks = c.marks.iter().peekable();
        let ctx = |i: usize, msg: String| format!("conn {ci} frame {i}: {msg}");
        let end = Value::Null;
        for (i, v) in c.got.iter().enumerate().chain([(c.got.len(), &end)]) {
            while let Some((_, m)) = marks.next_if(|(pos, _)| *pos <= i) {
                match *m {
                    Mark::Sub { rid, topic, since } => match seg[topic] {
                        Seg::Off => seg[topic] = Seg::Awaiting(rid),
                        _ if since => seg[topic] = Seg::Awaiting(rid),
                        _ => cont[topic].push(rid),
                    },
                    Mark::Unsub { topic } => {
                        seg[topic] = Seg::Off;
                        cont[topic].clear();
                    }
                }
            }
            if v.is_null() {
                break;
            }
            if v["event"] == "error" {
                return Err(ctx(i, format!("error {v}")));
            }
            let Some(t) = topic_index(v) else {
                return Err(ctx(i, format!("unexpected frame {v}")));
            };
            if v["event"] != "reply" {
                let o = v["offset"].as_u64().ok_or_else(|| ctx(i, format!("{v}")))?;
                match seg[t] {
                    Seg::Live(next) if next == o => seg[t] = Seg::Live(o + 1),
                    s => return Err(ctx(i, format!("offset {o} received in state {s:?}: {v}"))),
                }
                continue;
            }
            let rid = v["id"].as_u64().ok_or_else(|| ctx(i, format!("{v}")))?;
            let Some(Req::Sub { since, topic }) = h.reqs.get(&rid) else {
                continue;
            };
            if *topic != t {
                return Err(ctx(i, format!("reply on the wrong topic: {v}")));
            }
            let d = &v["data"];
            let (Some(epoch), Some(pos)) = (d["epoch"].as_str(), d["offset"].as_u64()) else {
                return Err(ctx(i, format!("no position in {v}")));
            };
            if seg[t] == Seg::Awaiting(rid) {
                // A recovery holds since+1..=pos; either way the live stream goes on at pos+1.
                if let Some((e, s)) = since {
                    let pubs = d["publications"].as_array().cloned().unwrap_or_default();
                    let offsets: Vec<u64> =
                        pubs.iter().filter_map(|p| p["offset"].as_u64()).collect();
                    let recoverable = e == epoch && *s <= pos && pos - *s <= HISTORY;
                    match d["recovered"].as_bool() {
                        Some(true) => {
                            let want: Vec<u64> = (*s + 1..=pos).collect();
                            if offsets != want || !recoverable {
                                return Err(ctx(i, format!("recovery from {s} wrong: {v}")));
                            }
                        }
                        Some(false) if !recoverable && pubs.is_empty() => {}
                        _ => return Err(ctx(i, format!("recovery from ({e}, {s}) wrong: {v}"))),
                    }
                }
                seg[t] = Seg::Live(pos + 1);
            } else if let Some(k) = cont[t].iter().position(|r| *r == rid) {
                cont[t].remove(k);
                if let Seg::Live(next) = seg[t] {
                    if next != pos + 1 {
                        return Err(ctx(i, format!("expected {next} next, reply says {pos}")));
                    }
                }
            }
        }
        for t in 0..2 {
            match seg[t] {
                Seg::Off => {}
                Seg::Live(next) if next == h.published[t] + 1 => {}
                s => {
                    let n = h.published[t];
                    return Err(format!(
                        "conn {ci} {}: ends {s:?}, {n} published",
                        TOPICS[t]
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every connection sees the same payload at an offset, the one its publisher was told of.
pub(super) fn check_same_order(h: &Hub) -> Result<(), String> {
    let mut at: HashMap<(usize, u64), u64> = HashMap::new();
    let mut note = |t: usize, o: u64, n: Option<u64>, who: &str| -> Result<(), String> {
        let n = n.ok_or_else(|| format!("{who}: no payload at {} {o}", TOPICS[t]))?;
        if o == 0 || o > h.published[t] {
            return Err(format!("{who}: offset {o} of {}", TOPICS[t]));
        }
        match at.insert((t, o), n) {
            Some(m) if m != n => Err(format!("{who}: {} {o} is {n}, was {m}", TOPICS[t])),
            _ => Ok(()),
        }
    };
    for (ci, c) in h.conns.iter().enumerate() {
        let who = format!("conn {ci}");
        for v in &c.got {
            let Some(t) = topic_index(v) else { continue };
            if v["event"] != "reply" {
                if let Some(o) = v["offset"].as_u64() {
                    note(t, o, v["data"]["n"].as_u64(), &who)?;
                }
                continue;
            }
            match v["id"].as_u64().and_then(|r| h.reqs.get(&r)) {
                Some(Req::Pub { topic, n }) if *topic == t => {
                    let o = v["data"]["offset"].as_u64().unwrap_or(0);
                    note(t, o, Some(*n), &who)?;
                }
                _ => {
                    for p in v["data"]["publications"].as_array().into_iter().flatten() {
                        let o = p["offset"].as_u64().unwrap_or(0);
                        note(t, o, p["data"]["n"].as_u64(), &who)?;
                    }
                }
            }
        }
    }
    let mut seen: HashMap<(usize, u64), u64> = HashMap::new();
    for ((t, o), n) in at {
        if let Some(p) = seen.insert((t, n), o) {
            return Err(format!(
                "payload {n} of {} at offsets {o} and {p}",
                TOPICS[t]
            ));
        }
    }
    Ok(())
}
