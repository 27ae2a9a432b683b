//! Telling a received frame apart: a measured publication (and where its payload starts), a
//! reply, an error, a heartbeat — for ringhub's JSON and MessagePack envelopes, raw broadcast
//! peers and socket.io.

use memchr::memmem::Finder;

#[cfg(test)]
use super::payload::{Header, Template};

/// What a received text frame turned out to be.
pub enum Incoming<'a> {
    Data(&'a [u8]),
    Reply,
    Error,
    Malformed,
    /// An Engine.IO heartbeat (`2`): answer with the text `3`.
    Heartbeat,
}

/// The wire dialect a [`Classifier`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// ringhub's JSON envelope.
    Ringhub,
    /// Raw broadcast peers: the whole frame is the payload.
    Raw,
    /// socket.io v4 (Engine.IO v4): publications are `42["m","<payload>"]`.
    SocketIo,
}

/// How a socket.io publication starts (event `m`, one string argument).
const SIO_DATA: &[u8] = b"42[\"m\",\"";

/// Classifies a frame from a ringhub server (`{"topic":..,"data":"..."}`, replies, errors)
/// or, for raw servers, treats the whole frame as the payload.
///
/// Locating `"data":"` in every delivered frame was a visible share of the generator's time,
/// so the classifier remembers the bytes in front of the payload of the last data frame (for
/// one subscriber they are the same in every publication of its topic) and checks new frames
/// against that prefix first: one short comparison instead of a search. The result is always
/// the same as the search's: the prefix ends at the first `"data":"` of the frame it was taken
/// from, so a frame that starts with it has its first `"data":"` at the same place.
pub struct Classifier {
    dialect: Dialect,
    data: Finder<'static>,
    prefix: Vec<u8>,
}

/// `{"event":` — the start of replies and errors, which are never data.
const EVENT: &[u8] = b"{\"event\":";
const DATA: &[u8] = b"\"data\":\"";

impl Classifier {
    pub fn new(dialect: Dialect) -> Classifier {
        Classifier {
            dialect,
            data: Finder::new(DATA),
            prefix: Vec::new(),
        }
    }

    pub fn classify<'a>(&mut self, frame: &'a [u8]) -> Incoming<'a> {
        match self.dialect {
            Dialect::Ringhub => {}
            Dialect::Raw => return Incoming::Data(frame),
            Dialect::SocketIo => return classify_socketio(frame),
        }
        if !self.prefix.is_empty() && frame.starts_with(&self.prefix) {
            return Incoming::Data(&frame[self.prefix.len()..]);
        }
        if let Some(0x80..=0x8f) = frame.first() {
            return classify_msgpack(frame);
        }
        if frame.starts_with(b"{\"event\":\"error\"") {
            return Incoming::Error;
        }
        if frame.starts_with(EVENT) {
            return Incoming::Reply;
        }
        match self.data.find(frame) {
            Some(i) => {
                let end = i + DATA.len();
                // The frame does not start with `{"event":`, so neither does a prefix longer
                // than that: a reply or an error never matches it.
                if end > EVENT.len() && end <= 256 {
                    self.prefix.clear();
                    self.prefix.extend_from_slice(&frame[..end]);
                }
                Incoming::Data(&frame[end..])
            }
            None => Incoming::Malformed,
        }
    }
}

/// A MessagePack envelope (`--msgpack`): a map whose first key is `event` is a reply or an
/// error; else the string after the `data` key holds the header, as in JSON.
fn classify_msgpack(frame: &[u8]) -> Incoming<'_> {
    let body = &frame[1..];
    if body.starts_with(b"\xa5event\xa5error") {
        return Incoming::Error;
    }
    if body.starts_with(b"\xa5event") {
        return Incoming::Reply;
    }
    let Some(i) = memchr::memmem::find(body, b"\xa4data") else {
        return Incoming::Malformed;
    };
    let at = i + 5;
    let skip = match body.get(at) {
        Some(0xa0..=0xbf) => 1,
        Some(0xd9) => 2,
        Some(0xda) => 3,
        Some(0xdb) => 5,
        _ => return Incoming::Malformed,
    };
    body.get(at + skip..)
        .map_or(Incoming::Malformed, Incoming::Data)
}

/// socket.io frames: a publication, the heartbeat, an error (`44…` connect error) or
/// anything else the protocol sends (open packet, acks), which is a reply.
fn classify_socketio(frame: &[u8]) -> Incoming<'_> {
    if let Some(d) = frame.strip_prefix(SIO_DATA) {
        return Incoming::Data(d);
    }
    match frame {
        b"2" => Incoming::Heartbeat,
        [b'4', b'4', ..] => Incoming::Error,
        [b'0' | b'4', ..] => Incoming::Reply,
        _ => Incoming::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgpack_frames_are_classified() {
        let h = Header {
            stream: 3,
            seq: 42,
            ts_ns: 123_456_789,
        };
        let t = Template::ringhub_publish("t3", 64);
        let mut json = vec![0u8; t.bytes.len()];
        t.fill(&mut json, &h);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let data = v["data"].as_str().unwrap().as_bytes();
        // {"topic":"t3","event":..,"data":<str 8>} as the server converts it.
        let mut f = vec![0x83, 0xa5];
        f.extend_from_slice(b"topic\xa2t3\xa5event\xa1e\xa4data\xd9");
        f.push(data.len() as u8);
        f.extend_from_slice(data);
        let mut cls = Classifier::new(Dialect::Ringhub);
        match cls.classify(&f) {
            Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
            _ => panic!("not data"),
        }
        assert!(matches!(
            cls.classify(b"\x83\xa5event\xa5reply\xa2id\x01"),
            Incoming::Reply
        ));
        assert!(matches!(
            cls.classify(b"\x83\xa5event\xa5error\xa2id\x01"),
            Incoming::Error
        ));
        assert!(matches!(
            cls.classify(b"\x81\xa1x\xc0"),
            Incoming::Malformed
        ));
    }

    /// What the classifier answered before it learned prefixes: a search in every frame.
    fn reference(frame: &[u8]) -> Option<(u8, &[u8])> {
        if frame.starts_with(b"{\"event\":\"error\"") {
            return Some((b'e', frame));
        }
        if frame.starts_with(b"{\"event\":") {
            return Some((b'r', frame));
        }
        memchr::memmem::find(frame, DATA).map(|i| (b'd', &frame[i + 8..]))
    }

    fn kind(i: Incoming<'_>) -> Option<(u8, &[u8])> {
        match i {
            Incoming::Data(d) => Some((b'd', d)),
            Incoming::Reply => Some((b'r', b"")),
            Incoming::Error => Some((b'e', b"")),
            Incoming::Malformed => None,
            Incoming::Heartbeat => Some((b'h', b"")),
        }
    }

    #[test]
    fn learned_prefix_answers_like_a_search() {
        let t0 = Template::ringhub_publish("t0", 48);
        let t1 = Template::ringhub_publish("t12", 48);
        let frames: Vec<Vec<u8>> = vec![
            t0.bytes.clone(),
            t1.bytes.clone(),
            br#"{"event":"reply","id":1,"topic":"t0"}"#.to_vec(),
            br#"{"event":"error","code":"bad","data":"x"}"#.to_vec(),
            br#"{"event":"m","topic":"t0","data":"0123"}"#.to_vec(),
            br#"{"topic":"t0","event":"m","data":"#.to_vec(),
            br#"{"topic":"t0","event":"m","data":""}"#.to_vec(),
            br#"{"topic":"t0","event":"m"}"#.to_vec(),
            br#""data":"abc"#.to_vec(),
            br#"{"topic":"t0","event":"m","x":"\"data\":\"","data":"z"}"#.to_vec(),
            b"".to_vec(),
        ];
        // Every ordered pair, then every frame after each other one as the learning frame.
        for a in &frames {
            for b in &frames {
                let mut c = Classifier::new(Dialect::Ringhub);
                for f in [a, b, a, b] {
                    let got = kind(c.classify(f));
                    let want = reference(f).map(|(k, d)| (k, if k == b'd' { d } else { &b""[..] }));
                    assert_eq!(
                        got,
                        want,
                        "after {:?}: {:?}",
                        String::from_utf8_lossy(a),
                        String::from_utf8_lossy(f)
                    );
                }
            }
        }
        let mut c = Classifier::new(Dialect::Ringhub);
        let mut buf = t0.bytes.clone();
        for seq in 0..3 {
            let h = Header {
                stream: 0,
                seq,
                ts_ns: seq * 7,
            };
            t0.fill(&mut buf, &h);
            match c.classify(&buf) {
                Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
                _ => panic!("not data"),
            }
        }
        assert_eq!(c.prefix, &t0.bytes[..t0.offset]);
    }

    #[test]
    fn socketio_publication_round_trip() {
        let t = Template::socketio_publish("t0", 64);
        let mut buf = t.bytes.clone();
        let h = Header {
            stream: 3,
            seq: 99,
            ts_ns: 12_345,
        };
        t.fill(&mut buf, &h);
        // `42` + the 7-digit ack id of sequence 99, then the event.
        assert_eq!(&buf[..9], b"421000099");
        let v: serde_json::Value = serde_json::from_slice(&buf[9..]).expect("valid JSON");
        assert_eq!(v[0], "publish");
        assert_eq!(v[1]["topic"], "t0");
        assert_eq!(v[1]["event"], "m");
        // What the server emits to the room: the same payload as event `m`.
        let emitted = format!("42{}", serde_json::json!(["m", v[1]["data"]]));
        let mut c = Classifier::new(Dialect::SocketIo);
        match c.classify(emitted.as_bytes()) {
            Incoming::Data(d) => assert_eq!(Header::parse(d), Some(h)),
            _ => panic!("not data"),
        }
        assert!(matches!(c.classify(b"2"), Incoming::Heartbeat));
        assert!(matches!(c.classify(b"431[]"), Incoming::Reply));
        assert!(matches!(c.classify(br#"0{"sid":"x"}"#), Incoming::Reply));
        assert!(matches!(
            c.classify(br#"44{"message":"no"}"#),
            Incoming::Error
        ));
        assert!(matches!(c.classify(b"3"), Incoming::Malformed));
        assert!(matches!(c.classify(b""), Incoming::Malformed));
    }
}
