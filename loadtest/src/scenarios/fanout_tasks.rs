//! Per-connection tasks of the fanout scenario: WebSocket subscribers (receive, hand each
//! delivery to the accounting, answer pings) and publishers (open-loop schedule or closed-loop
//! window, coalesced writes).

use super::classify::{Classifier, Incoming};
use super::fanout_accounting::{close_code, count_code, error_code, Sub, ThreadResult, Track};
use super::fanout_shared::Shared;
use super::join;
use super::payload::{Header, Template};
use crate::client::{self, Target, WsReader, WsWriter};
use crate::runner::{self, Phase};
use crate::stats;
use fastwebsockets::OpCode;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connects (bounded by the semaphore) or records the failure.
/// socket.io connections also connect the default namespace here.
async fn open(
    sh: &Shared,
    target: &Target,
    conn: usize,
    sem: &Semaphore,
) -> Option<(WsReader, WsWriter)> {
    let _permit = sem.acquire().await.ok()?;
    let src = sh.ctx.sources.pick(conn);
    let (mut rd, mut wr) = match client::connect(target, src, sh.ctx.connect_timeout).await {
        Ok(c) => c,
        Err(e) => {
            sh.fail(format!("connection {conn}: {e:#}"));
            return None;
        }
    };
    if sh.ctx.socketio {
        if let Err(e) = join::socketio_connect(&mut rd, &mut wr).await {
            sh.fail(format!("connection {conn}: {e}"));
            return None;
        }
    }
    Some((rd, wr))
}

/// One subscriber connection: receives until the run is `Done` (then it is aborted).
pub async fn subscriber(
    sh: Arc<Shared>,
    tid: usize,
    idx: usize,
    sem: Arc<Semaphore>,
    acc: Rc<RefCell<ThreadResult>>,
    track: Rc<RefCell<Track>>,
) {
    let (target, cross) = sh.sub_target(idx);
    let Some((mut rd, mut wr)) = open(&sh, target, idx, &sem).await else {
        return;
    };
    let topics = sh.args.topics;
    let topic = idx % topics;
    let name = format!("{}{topic}", sh.args.topic_prefix);
    let joined = if sh.ctx.ringhub {
        join::ringhub_subscribe(&mut rd, &mut wr, &name).await
    } else if sh.ctx.socketio {
        join::socketio_subscribe(&mut rd, &mut wr, &name).await
    } else {
        Ok(())
    };
    if let Err(e) = joined {
        sh.fail(format!("subscriber {idx}: {e}"));
        return;
    }
    Sub::new(&sh, idx, cross).start(&sh, &track);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    sh.phases.wait_for(Phase::Running).await;
    let m_start = sh.measure_start_ns.load(Ordering::Relaxed);
    let m_end = sh.measure_end_ns.load(Ordering::Relaxed);
    let mut cls = Classifier::new(sh.ctx.dialect());
    let mut sub = Sub::new(&sh, idx, cross);
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let mut heartbeats = 0usize;
    loop {
        if let Err(e) = rd.fill().await {
            if sh.phases.get() < Phase::Done {
                acc.borrow_mut().disconnects += 1;
                sh.first_error.set(format!("subscriber {idx}: {e:#}"));
            }
            return;
        }
        // One clock read per batch: every frame in it had arrived by now.
        let now = stats::now_ns();
        let in_window = now >= m_start && now < m_end;
        let (mut fresh, mut counted) = (0u64, 0u64);
        {
            let mut a = acc.borrow_mut();
            let mut tr = track.borrow_mut();
            loop {
                let (op, payload) = match rd.next_buffered() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        a.disconnects += 1;
                        sh.first_error.set(format!("subscriber {idx}: {e:#}"));
                        return;
                    }
                };
                let body = match op {
                    OpCode::Text | OpCode::Binary => match cls.classify(payload) {
                        Incoming::Data(d) => d,
                        Incoming::Reply => continue,
                        Incoming::Heartbeat => {
                            heartbeats += 1;
                            continue;
                        }
                        Incoming::Error => {
                            a.server_errors += 1;
                            count_code(&mut a.error_codes, error_code(payload));
                            sh.first_error
                                .set(String::from_utf8_lossy(payload).into_owned());
                            continue;
                        }
                        Incoming::Malformed => {
                            a.malformed += 1;
                            continue;
                        }
                    },
                    OpCode::Ping => {
                        pongs.push(payload.to_vec());
                        continue;
                    }
                    OpCode::Close => {
                        a.disconnects += 1;
                        count_code(&mut a.error_codes, close_code(payload));
                        return;
                    }
                    _ => continue,
                };
                match sub.on_data(&sh, &mut a, &mut tr, body, now, in_window) {
                    Some(true) => (fresh, counted) = (fresh + 1, counted + 1),
                    Some(false) => fresh += 1,
                    None => {}
                }
            }
            a.in_window += counted;
        }
        runner::bump(&sh.unique[tid], fresh);
        runner::bump(&sh.in_window[tid], counted);
        if !pongs.is_empty() || heartbeats > 0 {
            for p in pongs.drain(..) {
                wr.push(OpCode::Pong, &p);
            }
            for _ in 0..std::mem::take(&mut heartbeats) {
                wr.push(OpCode::Text, b"3");
            }
            if wr.flush().await.is_err() {
                return;
            }
        }
    }
}

/// The `code` of a refused Socket.IO publish's ack (`43<id>[{"error":{"code":..}}]`).
fn sio_ack_error(frame: &[u8]) -> String {
    let json = frame
        .iter()
        .position(|b| *b == b'[')
        .map_or(&[][..], |i| &frame[i..]);
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.pointer("/0/error/code")?.as_str().map(String::from))
        .unwrap_or_else(|| "ack error (no code)".into())
}

/// Reads and discards what a publisher receives (raw peers broadcast to it too);
/// counts server errors and answers pings through `pongs`.
async fn drain_publisher(
    sh: Arc<Shared>,
    mut rd: WsReader,
    acc: Rc<RefCell<ThreadResult>>,
    pongs: Rc<RefCell<Vec<Vec<u8>>>>,
) {
    let mut cls = Classifier::new(sh.ctx.dialect());
    'conn: while rd.fill().await.is_ok() {
        loop {
            match rd.next_buffered() {
                Ok(Some((OpCode::Text | OpCode::Binary, payload))) => match cls.classify(payload) {
                    Incoming::Error => {
                        let mut a = acc.borrow_mut();
                        a.server_errors += 1;
                        count_code(&mut a.error_codes, error_code(payload));
                        drop(a);
                        sh.first_error
                            .set(String::from_utf8_lossy(payload).into_owned());
                    }
                    // A Socket.IO ack (`43<id>[...]`) of a publish; `[{"error":...}]` if refused.
                    Incoming::Reply if payload.starts_with(b"43") => {
                        let mut a = acc.borrow_mut();
                        a.acks += 1;
                        if memchr::memmem::find(payload, b"{\"error\"").is_some() {
                            a.server_errors += 1;
                            count_code(&mut a.error_codes, sio_ack_error(payload));
                            drop(a);
                            sh.first_error
                                .set(String::from_utf8_lossy(payload).into_owned());
                        }
                    }
                    // Answered like a pong: the writer sends `3` for an empty entry.
                    Incoming::Heartbeat => pongs.borrow_mut().push(Vec::new()),
                    _ => {}
                },
                Ok(Some((OpCode::Ping, payload))) => pongs.borrow_mut().push(payload.to_vec()),
                Ok(Some((OpCode::Close, payload))) => {
                    if sh.phases.get() < Phase::Done {
                        count_code(&mut acc.borrow_mut().error_codes, close_code(payload));
                    }
                    break 'conn;
                }
                Err(_) => break 'conn,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
    }
    if sh.phases.get() < Phase::Done {
        acc.borrow_mut().disconnects += 1;
    }
}

/// One publisher connection: sends its streams until the measured window ends.
pub async fn publisher(
    sh: Arc<Shared>,
    _tid: usize,
    p: usize,
    conn: usize,
    sem: Arc<Semaphore>,
    acc: Rc<RefCell<ThreadResult>>,
) {
    let Some((rd, mut wr)) = open(&sh, &sh.ctx.target, conn, &sem).await else {
        return;
    };
    let pongs = Rc::new(RefCell::new(Vec::new()));
    let reader =
        tokio::task::spawn_local(drain_publisher(sh.clone(), rd, acc.clone(), pongs.clone()));
    let _abort = AbortOnDrop(reader);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    sh.phases.wait_for(Phase::Running).await;

    let mine = &sh.pub_streams[p];
    let templates: Vec<Template> = mine
        .iter()
        .map(|&s| {
            let topic = format!("{}{}", sh.args.topic_prefix, sh.streams[s].topic);
            if sh.ctx.ringhub {
                Template::ringhub_publish(&topic, sh.args.payload)
            } else if sh.ctx.socketio {
                Template::socketio_publish(&topic, sh.args.payload)
            } else {
                Template::raw(sh.args.payload)
            }
        })
        .collect();
    let start = sh.start_ns.load(Ordering::Relaxed);
    let m_start = sh.measure_start_ns.load(Ordering::Relaxed);
    let end = sh.measure_end_ns.load(Ordering::Relaxed);
    let end_at = tokio::time::Instant::from_std(stats::epoch() + Duration::from_nanos(end));
    // Open loop: nanoseconds between two messages of one stream.
    let interval = sh
        .args
        .rate
        .map(|r| 1e9 * sh.streams.len() as f64 / r)
        .unwrap_or(0.0);
    let window = sh.args.window as u64;
    let mut max_lag = 0u64;

    loop {
        let now = stats::now_ns();
        if now >= end {
            break;
        }
        for pong in pongs.borrow_mut().drain(..) {
            if sh.ctx.socketio && pong.is_empty() {
                wr.push(OpCode::Text, b"3");
            } else {
                wr.push(OpCode::Pong, &pong);
            }
        }
        let mut next_due = u64::MAX;
        for (k, &s) in mine.iter().enumerate() {
            let st = &sh.streams[s];
            let mut seq = st.published.load(Ordering::Relaxed);
            let allowed = if sh.args.max {
                window - (seq - st.completed.load(Ordering::Acquire)).min(window)
            } else {
                let due = ((now - start) as f64 / interval) as u64 + 1;
                if due > seq {
                    let sched = start + (seq as f64 * interval) as u64;
                    max_lag = max_lag.max(now.saturating_sub(sched));
                }
                let n = due.saturating_sub(seq);
                next_due = next_due.min(start + ((seq + n) as f64 * interval) as u64);
                n
            };
            let record_lag = !sh.args.max && now >= m_start;
            for _ in 0..allowed {
                if sh.args.max {
                    st.slots[(seq % window) as usize].store(0, Ordering::Relaxed);
                }
                if record_lag {
                    let sched = start + (seq as f64 * interval) as u64;
                    acc.borrow_mut().send_lag.record(now.saturating_sub(sched));
                }
                let h = Header {
                    stream: s as u32,
                    seq,
                    ts_ns: now,
                };
                let t = &templates[k];
                wr.push_with(OpCode::Text, t.bytes.len(), |dst| t.fill(dst, &h));
                seq += 1;
            }
            st.published.store(seq, Ordering::Relaxed);
        }
        let sent = wr.pending() > 0;
        if let Err(e) = wr.flush().await {
            sh.first_error.set(format!("publisher {p}: {e}"));
            break;
        }
        if sh.args.max {
            if !sent {
                let _ = tokio::time::timeout_at(end_at, sh.pub_notify[p].notified()).await;
            }
        } else if next_due != u64::MAX {
            let at = stats::epoch() + Duration::from_nanos(next_due);
            tokio::time::sleep_until(tokio::time::Instant::from_std(at).min(end_at)).await;
        }
    }
    sh.max_lag_ns.fetch_max(max_lag, Ordering::Relaxed);
    sh.pubs_stopped.fetch_add(1, Ordering::Relaxed);
    // Stay connected (and keep draining) until the run is over.
    sh.phases.wait_for(Phase::Done).await;
}

/// Aborts a spawned task when dropped (publisher reader lives as long as its writer).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
