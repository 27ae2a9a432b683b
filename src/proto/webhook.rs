//! Webhooks, sans-IO: the event types, each event's JSON, the batched request body, the
//! HMAC-SHA256 signature (Stripe's scheme: `t=<unix seconds>,v1=<hex of HMAC(secret,
//! "<t>.<body>")>`), its verification as a receiver does it, and the retry backoff. No sockets,
//! no clock: callers pass the time and the randomness.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header carrying the signature: `t=<unix seconds>,v1=<64 hex digits>`.
pub const SIGNATURE_HEADER: &str = "ringhub-signature";

/// What happened, as the `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A topic got its first subscriber (on this node; cluster-wide in a cluster).
    TopicOccupied,
    /// A topic lost its last subscriber.
    TopicVacated,
    /// A connection joined the presence of a topic (a namespace with `presence`).
    PresenceAdded,
    /// A connection left the presence of a topic.
    PresenceRemoved,
    /// A user's first connection.
    UserOnline,
    /// A user's last connection ended.
    UserOffline,
    /// A durable message was acknowledged.
    MessageAcked,
    /// A durable message expired unacknowledged.
    MessageExpired,
    /// A durable message was pushed out of a full inbox.
    MessageDropped,
    /// A client published on a topic the webhooks' `topics` match.
    Publication,
}

impl EventKind {
    /// Every kind, in documentation order.
    pub const ALL: [EventKind; 10] = [
        EventKind::TopicOccupied,
        EventKind::TopicVacated,
        EventKind::PresenceAdded,
        EventKind::PresenceRemoved,
        EventKind::UserOnline,
        EventKind::UserOffline,
        EventKind::MessageAcked,
        EventKind::MessageExpired,
        EventKind::MessageDropped,
        EventKind::Publication,
    ];

    /// The wire spelling (`"topic_occupied"`, …), also the name in `webhooks.events`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TopicOccupied => "topic_occupied",
            EventKind::TopicVacated => "topic_vacated",
            EventKind::PresenceAdded => "presence_added",
            EventKind::PresenceRemoved => "presence_removed",
            EventKind::UserOnline => "user_online",
            EventKind::UserOffline => "user_offline",
            EventKind::MessageAcked => "message_acked",
            EventKind::MessageExpired => "message_expired",
            EventKind::MessageDropped => "message_dropped",
            EventKind::Publication => "publication",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown webhook event {s:?}"))
    }
}

/// A set of event kinds (which ones are sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u16);

impl EventSet {
    /// Every kind.
    pub fn all() -> Self {
        Self::from_kinds(EventKind::ALL)
    }
    /// No kind.
    pub fn none() -> Self {
        Self(0)
    }
    /// The kinds given.
    pub fn from_kinds(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        Self(kinds.into_iter().fold(0, |a, k| a | k.bit()))
    }
    /// Whether `k` is in the set.
    pub fn contains(self, k: EventKind) -> bool {
        self.0 & k.bit() != 0
    }
    /// The kinds in the set, in documentation order.
    pub fn kinds(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

/// One event's JSON object without its id (the outbox assigns that): `{"type":..,"time_ms":..,
/// ...fields}`. `fields` are `(name, raw JSON)` pairs, written as given.
pub fn event_json(kind: EventKind, time_ms: u64, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + fields.iter().map(|f| f.1.len() + 8).sum::<usize>());
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time_ms\":");
    out.extend_from_slice(itoa::Buffer::new().format(time_ms).as_bytes());
    for (name, raw) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(raw);
    }
    out.push(b'}');
    out
}

/// A JSON string literal for `s`.
pub fn json_str(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec())
}

/// The request body of one batch: `{"events":[{"id":"<id>",...event}, ...]}`. Each event is
/// an [`event_json`] object; its id goes first.
pub fn batch_body<'a>(events: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"events\":[");
    let mut first = true;
    for (id, json) in events {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(&json_str(id));
        // `json` is `{...}` with at least `type`: splice the id in front of its fields.
        match json.split_first() {
            Some((b'{', rest)) if rest.first() != Some(&b'}') => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
            _ => out.push(b'}'),
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// HMAC-SHA256 of `"<t>.<body>"` under `secret`, in lowercase hex.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(itoa::Buffer::new().format(t).as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for b in tag {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    hex
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `t` (unix seconds).
pub fn signature_header(secret: &[u8], t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", signature(secret, t, body))
}

/// Why a receiver rejects a request ([`verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// No `v1` matches the body under the secret.
    #[error("signature mismatch")]
    Mismatch,
    /// `t` is further than the tolerance from the receiver's clock: a replay, or a clock skew.
    #[error("timestamp outside the tolerance")]
    Stale,
}

/// Checks a request as a receiver should: parse `t` and every `v1`, recompute the HMAC over
/// `"<t>.<raw body>"`, compare in constant time, and refuse a `t` more than `tolerance` seconds
/// away from `now` (unix seconds) — a captured request replayed later fails there.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.parse::<u64>().map_err(|_| VerifyError::Malformed)?),
            Some(("v1", v)) => sigs.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(VerifyError::Malformed)?;
    if sigs.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let want = signature(secret, t, body);
    use subtle::ConstantTimeEq;
    if !sigs
        .iter()
        .any(|s| bool::from(s.as_bytes().ct_eq(want.as_bytes())))
    {
        return Err(VerifyError::Mismatch);
    }
    if now.abs_diff(t) > tolerance {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

/// The wait before retry number `attempt` (0 = the first retry): `min · 2^attempt` capped at
/// `max`, of which a random half is taken away ("equal jitter": the waits keep growing, and
/// senders that failed together spread out). `random` is any uniformly random `u64`.
pub fn backoff(attempt: u32, min: Duration, max: Duration, random: u64) -> Duration {
    let cap = min
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(max)
        .max(min);
    let half = cap / 2;
    let nanos = half.as_nanos().max(1) as u64;
    half + Duration::from_nanos(random % nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_splices_ids_in_front() {
        let a = event_json(
            EventKind::TopicOccupied,
            5,
            &[("topic", &json_str("chat:\"1"))],
        );
        let body = batch_body([("7", a.as_slice()), ("8", a.as_slice())]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let ev = v["events"].as_array().unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0]["id"], "7");
        assert_eq!(ev[1]["id"], "8");
        assert_eq!(ev[0]["type"], "topic_occupied");
        assert_eq!(ev[0]["topic"], "chat:\"1");
        assert_eq!(ev[0]["time_ms"], 5);
        assert_eq!(batch_body([]), b"{\"events\":[]}");
    }

    #[test]
    fn signature_matches_a_known_vector_and_verifies() {
        // python3: hmac.new(b'secret', b'1700000000.{}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{}"),
            "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        let h = signature_header(b"secret", 100, b"body");
        assert_eq!(verify(b"secret", &h, b"body", 100, 300), Ok(()));
        assert_eq!(
            verify(b"secret", &h, b"body", 450, 300),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(b"other", &h, b"body", 100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &h, b"bodx", 100, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", "v1=00", b"body", 100, 300),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn backoff_grows_and_stays_in_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        for attempt in 0..40 {
            for r in [0, 1, u64::MAX, 123_456_789] {
                let d = backoff(attempt, min, max, r);
                let cap = (min * 2u32.saturating_pow(attempt.min(20))).min(max);
                assert!(d >= cap / 2 && d <= cap, "{attempt} {d:?}");
            }
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
        let s = EventSet::from_kinds([EventKind::UserOnline]);
        assert!(s.contains(EventKind::UserOnline) && !s.contains(EventKind::UserOffline));
        assert_eq!(EventSet::all().kinds().count(), 10);
    }
}
