//! The connection's bookkeeping, free of I/O: subscriptions with their stream positions and
//! buffered publications, and the durable inbox's de-duplication.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::codec::Incoming;
use crate::error::{Error, ErrorCode};
use crate::subscription::{ClientInfo, Event, Publication};

/// Acknowledged offsets remembered per inbox (to re-acknowledge a redelivery).
const ACKED_KEPT: usize = 4096;

pub(crate) struct Sub {
    pub(crate) gen: u64,
    events: mpsc::UnboundedSender<Event>,
    pub(crate) epoch: Option<String>,
    pub(crate) offset: Option<u64>,
    /// Id of the subscribe request awaiting its reply.
    pub(crate) pending: Option<u64>,
    /// Whether that request carries `since`.
    pub(crate) pending_since: bool,
    /// Publications that arrived before the reply (delivered after what it recovers).
    buffer: Vec<Publication>,
    /// The caller of `subscribe`, until the first reply.
    ready: Option<oneshot::Sender<Result<(), Error>>>,
    /// Asked for deltas (`delta: "fossil"`).
    pub(crate) delta: bool,
    /// Delta subscriptions: the offset and exact data of the last publication received, the
    /// base of the next delta. Cleared at every subscribe request: the server then starts
    /// with a full publication (and a new epoch may restart the offsets).
    pub(crate) base: Option<(u64, Vec<u8>)>,
}

impl Sub {
    pub(crate) fn wildcard(topic: &str) -> bool {
        topic.ends_with('*')
    }

    /// Where to resume from, when known (exact topics with history only).
    pub(crate) fn since(&self) -> Option<(&str, u64)> {
        Some((self.epoch.as_deref()?, self.offset?))
    }

    fn deliver(&mut self, p: Publication) {
        if let (Some(o), Some(last)) = (p.offset, self.offset) {
            if o <= last {
                return; // already delivered
            }
        }
        if p.offset.is_some() {
            self.offset = p.offset;
        }
        let _ = self.events.send(Event::Publication(p));
    }

    /// A delta subscription's publication at `offset`: its full data (the delta applied to
    /// the base), kept as the next base. `Err` when a delta cannot be applied.
    fn rebuild(&mut self, f: &Incoming<'_>, offset: u64) -> Result<Box<RawValue>, String> {
        let Some(delta) = &f.delta else {
            let data = f.data.map_or_else(null, |d| d.to_owned());
            self.base = f.data.map(|d| (offset, d.get().as_bytes().to_vec()));
            return Ok(data);
        };
        let base = self.base.take();
        let (at, base) = base.ok_or("a delta without a base")?;
        if at + 1 != offset {
            return Err(format!("a delta at offset {offset} on a base at {at}"));
        }
        let out = crate::fossil::apply(&base, delta.as_bytes(), MAX_DATA)?;
        let text = String::from_utf8(out).map_err(|_| "not UTF-8".to_string())?;
        let data = RawValue::from_string(text).map_err(|e| e.to_string())?;
        self.base = Some((offset, data.get().as_bytes().to_vec()));
        Ok(data)
    }
}

/// The largest data a delta may rebuild (the server's default message limit is 1 MiB).
const MAX_DATA: usize = 64 << 20;

#[derive(Default)]
struct InboxState {
    epoch: Option<String>,
    max_delivered: Option<u64>,
    acked: BTreeSet<u64>,
}

#[derive(Deserialize)]
struct SubscribeReply {
    epoch: Option<String>,
    offset: Option<u64>,
    recovered: Option<bool>,
    #[serde(default)]
    publications: Vec<Recovered>,
}

#[derive(Deserialize)]
struct Recovered {
    #[serde(default)]
    event: String,
    data: Option<Box<RawValue>>,
    offset: Option<u64>,
}

/// What the task must do after a subscribe reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterReply {
    Nothing,
    /// The server cannot serve `since` here: subscribe again without it.
    ResubscribeWithoutSince,
}

pub(crate) fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

#[derive(Default)]
pub(crate) struct Router {
    pub(crate) subs: HashMap<String, Sub>,
    inbox: HashMap<String, InboxState>,
}

impl Router {
    pub(crate) fn add(
        &mut self,
        topic: String,
        gen: u64,
        since: Option<(String, u64)>,
        delta: bool,
        events: mpsc::UnboundedSender<Event>,
        ready: oneshot::Sender<Result<(), Error>>,
    ) -> Result<(), oneshot::Sender<Result<(), Error>>> {
        if self.subs.contains_key(&topic) {
            return Err(ready);
        }
        let (epoch, offset) = since.map_or((None, None), |(e, o)| (Some(e), Some(o)));
        let sub = Sub {
            gen,
            events,
            epoch,
            offset,
            pending: None,
            pending_since: false,
            buffer: Vec::new(),
            ready: Some(ready),
            delta,
            base: None,
        };
        self.subs.insert(topic, sub);
        Ok(())
    }

    /// Removes subscription `gen` of `topic`; false when it is not the current one.
    pub(crate) fn remove(&mut self, topic: &str, gen: u64) -> bool {
        if self.subs.get(topic).is_some_and(|s| s.gen == gen) {
            self.subs.remove(topic);
            true
        } else {
            false
        }
    }

    /// Routes a publication (or join/leave) to every subscription matching its topic. Returns
    /// the delta subscriptions whose delta did not apply: subscribe them again (with `since`).
    pub(crate) fn publication(&mut self, f: &Incoming<'_>) -> Vec<String> {
        let mut failed = Vec::new();
        let presence = match (&*f.event, f.offset, f.data) {
            ("join" | "leave", None, Some(d)) => serde_json::from_str::<ClientInfo>(d.get()).ok(),
            _ => None,
        };
        for (pattern, sub) in self.subs.iter_mut() {
            let matches = match pattern.strip_suffix('*') {
                Some(prefix) => f.topic.starts_with(prefix),
                None => *pattern == f.topic,
            };
            if !matches {
                continue;
            }
            if let Some(info) = &presence {
                let ev = if f.event == "join" {
                    Event::Join(info.clone())
                } else {
                    Event::Leave(info.clone())
                };
                let _ = sub.events.send(ev);
                continue;
            }
            let data = match f.offset {
                Some(o) if sub.delta && !Sub::wildcard(pattern) => {
                    if sub.base.as_ref().is_some_and(|b| b.0 >= o) {
                        continue; // a copy of one received already
                    }
                    match sub.rebuild(f, o) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(topic = %f.topic, offset = o, error = %e, "ringhub: delta not applied: recovering");
                            if sub.pending.is_none() {
                                failed.push(pattern.clone());
                            }
                            continue;
                        }
                    }
                }
                _ => f.data.map_or_else(null, |d| d.to_owned()),
            };
            let p = Publication {
                topic: f.topic.to_string(),
                event: f.event.to_string(),
                data,
                offset: f.offset,
            };
            if sub.pending.is_some() {
                sub.buffer.push(p);
            } else if Sub::wildcard(pattern) {
                let _ = sub.events.send(Event::Publication(p));
            } else {
                sub.deliver(p);
            }
        }
        failed
    }

    /// Applies the answer to subscribe request `id` of `topic`.
    pub(crate) fn subscribe_reply(
        &mut self,
        topic: &str,
        id: u64,
        outcome: Result<Option<Box<RawValue>>, Error>,
    ) -> AfterReply {
        let Some(sub) = self.subs.get_mut(topic) else {
            return AfterReply::Nothing;
        };
        if sub.pending != Some(id) {
            return AfterReply::Nothing;
        }
        sub.pending = None;
        let with_since = std::mem::take(&mut sub.pending_since);
        let data = match outcome {
            Ok(data) => data,
            Err(e) => {
                let unservable = matches!(
                    e.code(),
                    Some(ErrorCode::BadRequest | ErrorCode::NotAvailable)
                );
                if with_since && unservable {
                    sub.epoch = None;
                    sub.offset = None;
                    let _ = sub.events.send(Event::RecoveryFailed {
                        epoch: None,
                        offset: None,
                    });
                    return AfterReply::ResubscribeWithoutSince;
                }
                match sub.ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(e));
                    }
                    None => {
                        let _ = sub.events.send(Event::Unsubscribed(e));
                    }
                }
                self.subs.remove(topic);
                return AfterReply::Nothing;
            }
        };
        let reply: Option<SubscribeReply> = data.and_then(|d| serde_json::from_str(d.get()).ok());
        let reply = reply.unwrap_or(SubscribeReply {
            epoch: None,
            offset: None,
            recovered: None,
            publications: Vec::new(),
        });
        let wildcard = Sub::wildcard(topic);
        if with_since {
            if reply.recovered == Some(true) {
                let n = reply.publications.len();
                for r in reply.publications {
                    sub.deliver(Publication {
                        topic: topic.to_string(),
                        event: r.event,
                        data: r.data.unwrap_or_else(null),
                        offset: r.offset,
                    });
                }
                let _ = sub.events.send(Event::Recovered { publications: n });
            } else {
                let _ = sub.events.send(Event::RecoveryFailed {
                    epoch: reply.epoch.clone(),
                    offset: reply.offset,
                });
            }
        }
        if !wildcard {
            sub.epoch = reply.epoch;
            if reply.offset.is_some() {
                sub.offset = reply.offset;
            }
        }
        for p in std::mem::take(&mut sub.buffer) {
            if wildcard {
                let _ = sub.events.send(Event::Publication(p));
            } else {
                sub.deliver(p);
            }
        }
        if let Some(ready) = sub.ready.take() {
            let _ = ready.send(Ok(()));
        }
        AfterReply::Nothing
    }

    /// A durable message: returns it when new (to hand to the application), or the offset to
    /// acknowledge again when it was already acknowledged (the ack was lost).
    pub(crate) fn user_message(&mut self, topic: &str, epoch: Option<&str>, offset: u64) -> Inbox {
        let st = self.inbox.entry(topic.to_string()).or_default();
        // A new inbox epoch: the server lost its inboxes and offsets restart.
        if st.epoch.as_deref() != epoch {
            *st = InboxState {
                epoch: epoch.map(str::to_string),
                ..InboxState::default()
            };
        }
        if st.max_delivered.is_some_and(|m| offset <= m) {
            return if st.acked.contains(&offset) {
                Inbox::Reack
            } else {
                Inbox::Duplicate
            };
        }
        st.max_delivered = Some(offset);
        Inbox::New
    }

    /// Records an acknowledgement (so a redelivery is acknowledged again).
    pub(crate) fn acked(&mut self, topic: &str, offset: u64) {
        let st = self.inbox.entry(topic.to_string()).or_default();
        st.acked.insert(offset);
        while st.acked.len() > ACKED_KEPT {
            st.acked.pop_first();
        }
    }
}

/// What [`Router::user_message`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbox {
    New,
    Duplicate,
    Reack,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;

    fn sub(r: &mut Router, topic: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready, _) = oneshot::channel();
        assert!(r.add(topic.into(), 1, None, false, tx, ready).is_ok());
        rx
    }

    fn offsets(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(match e {
                Event::Publication(p) => format!("{}", p.offset.unwrap_or(0)),
                Event::Recovered { publications } => format!("recovered {publications}"),
                Event::RecoveryFailed { .. } => "failed".into(),
                other => format!("{other:?}"),
            });
        }
        out
    }

    fn live(r: &mut Router, topic: &str, offset: u64) {
        let s = format!(r#"{{"topic":"{topic}","event":"m","data":{offset},"offset":{offset}}}"#);
        r.publication(&decode(s.as_bytes()).unwrap());
    }

    fn raw(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.into()).unwrap())
    }

    #[test]
    fn recovery_then_buffered_live_without_duplicates() {
        let mut r = Router::default();
        let mut rx = sub(&mut r, "chat:a");
        r.subs.get_mut("chat:a").unwrap().pending = Some(1);
        let reply = Ok(raw(r#"{"epoch":"e","offset":3}"#));
        assert_eq!(r.subscribe_reply("chat:a", 1, reply), AfterReply::Nothing);
        live(&mut r, "chat:a", 4);
        live(&mut r, "chat:a", 4);
        // Reconnect: resubscribe with since (e, 4); live 6 and 5 race the reply.
        let s = r.subs.get_mut("chat:a").unwrap();
        assert_eq!(s.since(), Some(("e", 4)));
        s.pending = Some(2);
        s.pending_since = true;
        live(&mut r, "chat:a", 5);
        live(&mut r, "chat:a", 6);
        let reply = r#"{"epoch":"e","offset":5,"recovered":true,"publications":[{"event":"m","data":5,"offset":5}]}"#;
        r.subscribe_reply("chat:a", 2, Ok(raw(reply)));
        assert_eq!(offsets(&mut rx), ["4", "5", "recovered 1", "6"]);
    }

    #[test]
    fn unservable_since_falls_back() {
        let mut r = Router::default();
        let mut rx = sub(&mut r, "t");
        let s = r.subs.get_mut("t").unwrap();
        (s.pending, s.pending_since) = (Some(9), true);
        let e = Err(Error::server("not_available", "no history"));
        assert_eq!(
            r.subscribe_reply("t", 9, e),
            AfterReply::ResubscribeWithoutSince
        );
        assert_eq!(offsets(&mut rx), ["failed"]);
    }

    #[test]
    fn inbox_dedup_and_reack() {
        let mut r = Router::default();
        assert_eq!(r.user_message("user:a", Some("e1"), 7), Inbox::New);
        assert_eq!(r.user_message("user:a", Some("e1"), 7), Inbox::Duplicate);
        r.acked("user:a", 7);
        assert_eq!(r.user_message("user:a", Some("e1"), 7), Inbox::Reack);
        assert_eq!(r.user_message("user:a", Some("e1"), 8), Inbox::New);
        // The server lost its inboxes: offsets restart under a new epoch.
        assert_eq!(r.user_message("user:a", Some("e2"), 1), Inbox::New);
    }

    /// A Fossil delta (`N@O,` copies, `N:` literals) with its checksum.
    fn fossil(size: usize, body: &str, target: &str) -> String {
        const D: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
        let int = |mut v: u64| {
            let mut s = Vec::new();
            loop {
                s.insert(0, D[(v & 63) as usize]);
                v >>= 6;
                if v == 0 {
                    break String::from_utf8(s).unwrap();
                }
            }
        };
        let ck = crate::fossil::checksum(target.as_bytes());
        format!("{}\n{body}{};", int(size as u64), int(u64::from(ck)))
    }

    #[test]
    fn deltas_are_applied_and_a_bad_one_asks_to_resubscribe() {
        let mut r = Router::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (ready, _) = oneshot::channel();
        assert!(r.add("s".into(), 1, None, true, tx, ready).is_ok());
        let frame = |json: serde_json::Value| {
            r#"{"topic":"s","event":"m","#.to_string() + &json.to_string()[1..]
        };
        let full = frame(serde_json::json!({"data": {"a": 1}, "offset": 1}));
        assert!(r.publication(&decode(full.as_bytes()).unwrap()).is_empty());
        // {"a":1} -> {"a":22}: 5 bytes copied, then a literal.
        let d = fossil(8, "5@0,3:22}", r#"{"a":22}"#);
        let delta = frame(serde_json::json!({"delta": d, "offset": 2}));
        assert!(r.publication(&decode(delta.as_bytes()).unwrap()).is_empty());
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| match e {
                Event::Publication(p) => p.data.get().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [r#"{"a":1}"#, r#"{"a":22}"#]);
        // A delta that skips an offset (or is corrupt) is not delivered: resubscribe.
        let skip = frame(serde_json::json!({"delta": d, "offset": 4}));
        assert_eq!(r.publication(&decode(skip.as_bytes()).unwrap()), ["s"]);
        let bad = frame(serde_json::json!({"delta": "8\n5@0,3:22};", "offset": 3}));
        assert_eq!(
            r.publication(&decode(bad.as_bytes()).unwrap()),
            ["s"],
            "no base left"
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(r.subs["s"].offset, Some(2), "recovery resumes after 2");
    }
}
