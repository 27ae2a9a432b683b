//! What the fanout subscribers count, whatever their transport: per-thread tallies, exactly-once
//! tracking per stream, `--max` completion, latency, `--offsets`, and the codes the server gave
//! when it refused something.

use super::fanout_shared::Shared;
use super::payload::Header;
use crate::stats::Latency;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

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

/// A close frame's status code, as `close 1008`.
pub fn close_code(payload: &[u8]) -> String {
    match payload {
        [a, b, ..] => format!("close {}", u16::from_be_bytes([*a, *b])),
        _ => "close (no code)".into(),
    }
}

/// Counts one occurrence of `code`.
pub fn count_code(codes: &mut BTreeMap<String, u64>, code: String) {
    *codes.entry(code).or_default() += 1;
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
