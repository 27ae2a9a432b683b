//! Socket.IO connection state recovery (socket.io ≥ 4.6 `connectionStateRecovery`), sans-IO:
//! the offset a server emit carries, the `{pid, offset}` a reconnecting client puts in its
//! CONNECT auth payload, and the recovery answer turned into the events the client missed.
//!
//! socket.io appends an offset as the **last argument** of every broadcast event; the client
//! keeps the last string argument it saw and sends it back with the private session id (`pid`)
//! it got in the CONNECT answer. Here a room with history is a topic with offsets, so the offset
//! names the publication's place in its own stream: `"<offset>:<epoch>:<topic>"` (the epoch is
//! an opaque token without `:`; the topic is the rest, `:` included). It is the same for every
//! subscriber of the publication, so the encoded frame stays shared on fan-out.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::socketio_map::event_frames;
pub use super::socketio_map::offset_arg;

/// The ack part of the request id of a recovery subscribe (`socketio_map::request_id`): the
/// largest ack id, which a client would reach only after 2^53 acks on one connection.
pub const RECOVER_ACK: u64 = (1 << 53) - 1;

/// A publication's place, read back from the offset a client returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset<'a> {
    /// Its offset in the topic's stream.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: &'a str,
    /// The topic (room).
    pub topic: &'a str,
}

/// Reads an offset made by [`offset_arg`]; `None` for anything else (a client's own string).
pub fn parse_offset(s: &str) -> Option<Offset<'_>> {
    let mut it = s.splitn(3, ':');
    let offset = it.next()?.parse().ok()?;
    let epoch = it.next().filter(|e| !e.is_empty())?;
    let topic = it.next().filter(|t| !t.is_empty())?;
    Some(Offset {
        offset,
        epoch,
        topic,
    })
}

/// What a reconnecting client asks for in its CONNECT auth payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The private session id the previous CONNECT answer gave.
    pub pid: String,
    /// The last offset the client saw (none when it saw no event with one).
    pub offset: Option<String>,
}

#[derive(Deserialize)]
struct ResumeAuth {
    #[serde(default)]
    pid: Option<String>,
    #[serde(default)]
    offset: Option<String>,
}

/// The `{pid, offset}` of an auth payload, when it names a pid (a string of at most 64 bytes).
pub fn resume(auth: Option<&RawValue>) -> Option<Resume> {
    let a: ResumeAuth = serde_json::from_str(auth?.get()).ok()?;
    let pid = a.pid.filter(|p| !p.is_empty() && p.len() <= 64)?;
    Some(Resume {
        pid,
        offset: a.offset.filter(|o| o.len() <= 1024),
    })
}

/// A dropped session as a store keeps it (see `Store::sio_session_put`): its user, namespace,
/// rooms, and for each room with history the last position (room, epoch, offset) queued to the
/// connection. JSON, so the encoding is readable in Redis and stable across builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// The connection's user (`None`: anonymous).
    pub user: Option<String>,
    /// The namespace's name.
    pub nsp: String,
    /// The rooms it had joined.
    pub rooms: Vec<String>,
    /// Rooms with history: (room, epoch, offset) of the last publication queued.
    pub positions: Vec<(String, String, u64)>,
    /// When the store forgets it (ms since the Unix epoch): a session taken by a CONNECT that
    /// turns out not to be its user's is put back with it. 0 in sessions kept before it was
    /// recorded (never put back).
    #[serde(default)]
    pub expires_ms: u64,
}

impl StoredSession {
    /// The bytes a store keeps.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads [`encode`](Self::encode)'s bytes; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }
}

/// The fields of a subscribe reply that a replay reads.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<ReplyData<'a>>,
}

#[derive(Deserialize)]
struct ReplyData<'a> {
    #[serde(borrow, default)]
    epoch: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    recovered: bool,
    #[serde(borrow, default)]
    publications: Vec<Pub<'a>>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Pub<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    offset: u64,
}

/// The answer of a recovery subscribe (`{"event":"reply","topic":T,"data":{"epoch","offset",
/// "recovered","publications":[..]}}`) as the events the client missed on namespace `nsp`,
/// oldest first, each with its offset as the last argument; `complete` is false when the
/// history did not cover the gap (`recovered: false`, an error, or a reply cut into pages).
pub struct Replay {
    /// The Engine.IO frames of the missed events, in one buffer (empty when none).
    pub frames: Bytes,
    /// Every missed publication is in `frames`.
    pub complete: bool,
}

/// Turns a recovery subscribe's reply (its JSON text) into a [`Replay`].
pub fn replay(json: &[u8], nsp: &str) -> Replay {
    let incomplete = Replay {
        frames: Bytes::new(),
        complete: false,
    };
    let Ok(r) = serde_json::from_slice::<Reply<'_>>(json) else {
        return incomplete;
    };
    let Some(d) = r
        .data
        .filter(|d| r.event == "reply" && d.recovered && !d.more)
    else {
        return incomplete;
    };
    let Some(epoch) = d.epoch else {
        return incomplete;
    };
    let mut all = BytesMut::new();
    for p in &d.publications {
        let offset = offset_arg(&epoch, p.offset, &r.topic);
        match event_frames(nsp, None, &p.event, p.data, Some(&offset)) {
            Some(f) => all.extend_from_slice(&f),
            None => return incomplete,
        }
    }
    Replay {
        frames: all.freeze(),
        complete: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::text_payload;

    #[test]
    fn a_stored_session_round_trips_and_garbage_is_refused() {
        let s = StoredSession {
            user: Some("u1".into()),
            nsp: "/chat".into(),
            rooms: vec!["chat:1".into(), "news:*".into()],
            positions: vec![("chat:1".into(), "e1".into(), 7)],
            expires_ms: 1_800_000_000_000,
        };
        assert_eq!(StoredSession::decode(&s.encode()), Some(s));
        // Kept before `expires_ms` was recorded: still read.
        let old = br#"{"user":null,"nsp":"/","rooms":[],"positions":[]}"#;
        assert_eq!(StoredSession::decode(old).map(|s| s.expires_ms), Some(0));
        assert_eq!(StoredSession::decode(b"{}"), None);
        assert_eq!(StoredSession::decode(b"\xff"), None);
    }

    #[test]
    fn offsets_round_trip_with_colons_in_the_topic() {
        let a = offset_arg("9f2c", 42, "chat:room:1");
        assert_eq!(a, r#""42:9f2c:chat:room:1""#);
        let s: String = serde_json::from_str(&a).unwrap();
        let o = parse_offset(&s).unwrap();
        assert_eq!((o.offset, o.epoch, o.topic), (42, "9f2c", "chat:room:1"));
        for bad in ["", "x:e:t", "1::t", "1:e:", "1:e", "hello"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn resume_reads_pid_and_offset_and_ignores_the_rest() {
        let raw = |s: &str| serde_json::from_str::<&RawValue>(s).unwrap().to_owned();
        let r = resume(Some(&raw(r#"{"token":"t","pid":"p1","offset":"3:e:t"}"#))).unwrap();
        assert_eq!(r.pid, "p1");
        assert_eq!(r.offset.as_deref(), Some("3:e:t"));
        let r = resume(Some(&raw(r#"{"pid":"p1"}"#))).unwrap();
        assert_eq!(r.offset, None);
        assert_eq!(resume(Some(&raw(r#"{"token":"t"}"#))), None);
        assert_eq!(resume(Some(&raw(r#"{"pid":7}"#))), None);
        assert_eq!(resume(Some(&raw(r#"{"pid":""}"#))), None);
        assert_eq!(resume(None), None);
    }

    fn texts(frames: &Bytes) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = &frames[..];
        while !rest.is_empty() {
            // Server frames: 2-byte header for payloads under 126 bytes (enough here).
            let len = usize::from(rest[1] & 0x7f);
            out.push(String::from_utf8(text_payload(&rest[..2 + len]).unwrap().to_vec()).unwrap());
            rest = &rest[2 + len..];
        }
        out
    }

    #[test]
    fn a_recovery_reply_becomes_the_missed_events_with_their_offsets() {
        let reply = br#"{"event":"reply","id":9,"topic":"chat:1","data":{"epoch":"e1","offset":4,"recovered":true,"publications":[{"event":"message","data":{"n":3},"offset":3},{"event":"typing","offset":4}]}}"#;
        let r = replay(reply, "/chat");
        assert!(r.complete);
        assert_eq!(
            texts(&r.frames),
            [
                r#"42/chat,["message",{"n":3},"3:e1:chat:1"]"#,
                r#"42/chat,["typing","4:e1:chat:1"]"#
            ]
        );
        let none = br#"{"event":"reply","topic":"t","data":{"epoch":"e","offset":4,"recovered":true,"publications":[]}}"#;
        let r = replay(none, "/");
        assert!(r.complete && r.frames.is_empty());
    }

    #[test]
    fn a_gap_the_history_does_not_cover_is_incomplete() {
        for reply in [
            &br#"{"event":"reply","topic":"t","data":{"epoch":"e","offset":9,"recovered":false,"publications":[]}}"#[..],
            br#"{"event":"reply","topic":"t","data":{"epoch":"e","offset":9,"recovered":true,"publications":[{"event":"m","offset":8}],"more":true}}"#,
            br#"{"event":"error","topic":"t","data":{"code":"not_available","message":"x"}}"#,
            b"not json",
        ] {
            assert!(!replay(reply, "/").complete);
        }
    }
}
