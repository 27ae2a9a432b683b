//! Per-connection tasks of the fanout scenario: subscribers (receive, check, time) and
//! publishers (open-loop schedule or closed-loop window, coalesced writes).

use super::fanout::Shared;
use super::join;
use super::payload::{Classifier, Header, Incoming, Template};
use crate::client::{self, Target, WsReader, WsWriter};
use crate::runner::{self, Phase};
use crate::stats::{self, Latency};
use fastwebsockets::OpCode;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Counters and latency gathered by one worker thread.
#[derive(Default)]
pub struct ThreadResult {
    pub latency: Latency,
    /// With `--sub-targets`: deliveries to subscribers on the publisher's server / on others.
    pub latency_same: Latency,
    pub latency_cross: Latency,
    /// Open loop: how late each publication sent in the measured window left, against its
    /// schedule (coordinated omission: latency is timed from the actual send).
    pub send_lag: Latency,
    pub delivered: u64,
    pub in_window: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub missing: u64,
    pub server_errors: u64,
    /// Per server error code (`rate_limited`, ...) and close code (`close 1008`): what the
    /// server said when it refused something, so a failed run explains itself.
    pub error_codes: BTreeMap<String, u64>,
    pub malformed: u64,
    pub disconnects: u64,
    /// Socket.IO acks of publications received by publishers.
    pub acks: u64,
    /// `--offsets`: deliveries whose `offset` was missing or not the previous one plus 1.
    pub offset_errors: u64,
    /// `--max`: per stream, this thread's subscribers of the stream's topic.
    pub local_subs: Vec<u32>,
    /// `--max`: per stream and window slot, deliveries to this thread's subscribers not yet
    /// added to the shared slot counter (one atomic add per thread and message, not one per
    /// delivery: the `lock xadd` per delivery was ~20% of the subscriber loop's samples).
    pub pending: Vec<Vec<u32>>,
}

impl ThreadResult {
    /// Prepares the `--max` completion counters of thread `tid` of `threads`.
    pub fn init_window(&mut self, sh: &Shared, tid: usize, threads: usize) {
        let mut per_topic = vec![0u32; sh.args.topics];
        for c in (tid..sh.args.subscribers).step_by(threads) {
            per_topic[c % sh.args.topics] += 1;
        }
        self.local_subs = sh.streams.iter().map(|s| per_topic[s.topic]).collect();
        self.pending = sh.streams.iter().map(|_| vec![0; sh.args.window]).collect();
    }
}

/// Most sequence gaps remembered per stream (beyond that, late arrivals count as duplicates).
const MAX_HOLES: usize = 100_000;

/// Per subscriber, per stream of its topic: what arrived so far.
#[derive(Default)]
pub struct StreamTrack {
    next: u64,
    got: u64,
    holes: BTreeSet<u64>,
}

/// A subscriber's view of every stream on its topic (index `stream / topics`).
#[derive(Default)]
pub struct Track(Vec<StreamTrack>);

impl Track {
    /// Deliveries this subscriber should have had but did not (after the drain).
    pub fn missing(&self, sh: &Shared, sub: usize) -> u64 {
        let topics = sh.args.topics;
        sh.streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.topic == sub % topics)
            .map(|(i, s)| {
                let got = self.0.get(i / topics).map_or(0, |t| t.got);
                s.published.load(Ordering::Relaxed).saturating_sub(got)
            })
            .sum()
    }
}

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

/// What one subscriber does with each delivery, whatever the transport: exactly-once
/// tracking, `--max` completion, latency, `--offsets`.
pub struct Sub {
    topic: usize,
    window: u64,
    split: bool,
    cross: bool,
    check_offsets: bool,
    payload_len: usize,
    last_offset: Option<u64>,
}

impl Sub {
    /// Subscriber `idx`; `cross`: it is on another server than the publishers.
    pub fn new(sh: &Shared, idx: usize, cross: bool) -> Sub {
        Sub {
            topic: idx % sh.args.topics,
            window: if sh.args.max {
                sh.args.window as u64
            } else {
                0
            },
            split: !sh.sub_targets.is_empty(),
            cross,
            check_offsets: sh.args.offsets,
            payload_len: sh.args.payload,
            last_offset: None,
        }
    }

    /// Prepares the per-stream tracking once the subscriber has joined its topic.
    pub fn start(&self, sh: &Shared, track: &RefCell<Track>) {
        let per_topic = sh.streams.iter().filter(|s| s.topic == self.topic).count();
        track.borrow_mut().0 = (0..per_topic).map(|_| StreamTrack::default()).collect();
    }

    /// Accounts one delivered payload `body` that arrived by `now`: `None` if it was a
    /// duplicate or malformed, `Some(counted)` for a first delivery (`counted`: inside the
    /// measured window, its latency recorded).
    pub fn on_data(
        &mut self,
        sh: &Shared,
        a: &mut ThreadResult,
        tr: &mut Track,
        body: &[u8],
        now: u64,
        in_window: bool,
    ) -> Option<bool> {
        let topics = sh.args.topics;
        a.delivered += 1;
        if self.check_offsets {
            match body.get(self.payload_len..).and_then(parse_offset) {
                Some(o) if self.last_offset.is_none_or(|l| o == l + 1) => {
                    self.last_offset = Some(o)
                }
                other => {
                    a.offset_errors += 1;
                    self.last_offset = other.or(self.last_offset);
                }
            }
        }
        let Some(h) = Header::parse(body) else {
            a.malformed += 1;
            return None;
        };
        match sh.streams.get(h.stream as usize) {
            Some(st) if st.topic == self.topic => {}
            _ => {
                a.malformed += 1;
                return None;
            }
        }
        let Some(st) = tr.0.get_mut(h.stream as usize / topics) else {
            a.malformed += 1;
            return None;
        };
        if !st.accept(h.seq, a) {
            return None;
        }
        if self.window > 0 {
            complete(sh, a, h.stream as usize, h.seq % self.window);
        }
        if !in_window {
            return Some(false);
        }
        let ns = now.saturating_sub(h.ts_ns);
        a.latency.record(ns);
        if self.split {
            if self.cross {
                a.latency_cross.record(ns);
            } else {
                a.latency_same.record(ns);
            }
        }
        Some(true)
    }
}

/// The `N` of a frame tail `","offset":N}` (what follows the data string of a publication on
/// a topic with history).
fn parse_offset(tail: &[u8]) -> Option<u64> {
    let digits = tail.strip_prefix(b"\",\"offset\":")?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    Some(
        digits[..n]
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0')),
    )
}

/// `--max`: counts one delivery of a stream's message. When every subscriber of this thread
/// has it, the thread adds their number to the shared slot counter; the thread that brings it
/// to the stream's subscriber count completes the message and wakes the publisher.
///
/// The local counter of a slot is back at 0 before the slot is reused: message `seq + window`
/// is published only after `seq` completed, i.e. after every thread flushed `seq`.
fn complete(sh: &Shared, a: &mut ThreadResult, stream: usize, slot: u64) {
    let need = a.local_subs[stream];
    let pending = &mut a.pending[stream][slot as usize];
    *pending += 1;
    if *pending < need {
        return;
    }
    *pending = 0;
    let st = &sh.streams[stream];
    if st.slots[slot as usize].fetch_add(need, Ordering::AcqRel) + need == st.nsubs {
        st.completed.fetch_add(1, Ordering::AcqRel);
        sh.pub_notify[st.publisher].notify_one();
    }
}

impl StreamTrack {
    /// Records `seq`; returns whether it is a first delivery (not a duplicate).
    fn accept(&mut self, seq: u64, a: &mut ThreadResult) -> bool {
        if seq == self.next {
            self.next += 1;
        } else if seq > self.next {
            let room = MAX_HOLES.saturating_sub(self.holes.len()) as u64;
            self.holes.extend(self.next..seq.min(self.next + room));
            self.next = seq + 1;
        } else if self.holes.remove(&seq) {
            a.out_of_order += 1;
        } else {
            a.duplicates += 1;
            return false;
        }
        self.got += 1;
        true
    }
}

/// The `code` of an error envelope (`{"event":"error",...,"data":{"code":"rate_limited",...}}`).
pub fn error_code(frame: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(frame)
        .ok()
        .and_then(|v| {
            let c = v.pointer("/data/code").or_else(|| v.get("code"))?;
            c.as_str().map(String::from)
        });
    code.unwrap_or_else(|| "error (no code)".into())
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

/// A close frame's status code, as `close 1008`.
pub fn close_code(payload: &[u8]) -> String {
    match payload {
        [a, b, ..] => format!("close {}", u16::from_be_bytes([*a, *b])),
        _ => "close (no code)".into(),
    }
}

pub fn count_code(codes: &mut BTreeMap<String, u64>, code: String) {
    *codes.entry(code).or_default() += 1;
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

#[cfg(test)]
mod tests {
    use super::parse_offset;

    #[test]
    fn offsets_after_the_data_string() {
        assert_eq!(parse_offset(br#"","offset":17}"#), Some(17));
        assert_eq!(parse_offset(br#"","offset":}"#), None);
        assert_eq!(parse_offset(br#""}"#), None);
    }
}
