//! Client messages inside a connection: JSON and MessagePack envelopes, the v2 requests their
//! `data` carries, and the Fossil deltas of stored publications.

/// MessagePack envelopes (subprotocol `ringhub.msgpack`): a client message converted to JSON
/// as a shard does (valid JSON, or a `bad_request` error frame that stays small), then the JSON
/// converted back (every converted message converts back, and bytes survive the trip: the
/// MessagePack value read again equals the first one, up to f32 widening).
pub fn msgpack(data: &[u8]) {
    use crate::proto::msgpack as mp;
    let mut json = Vec::new();
    match mp::to_json(data, &mut json) {
        Err(e) => {
            let f =
                crate::proto::envelope::error(None, "", crate::ErrorCode::BadRequest, &e.message);
            assert!(f.len() <= 1024, "error frame of {} bytes", f.len());
            assert!(mp::frame_from_json(&f).is_some(), "an error frame converts");
        }
        Ok(()) => {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&json).is_ok(),
                "not JSON"
            );
            let back = mp::from_json(&json).expect("converted JSON converts back");
            let mut again = Vec::new();
            mp::to_json(&back, &mut again).expect("re-converted MessagePack converts");
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&again).ok(),
                serde_json::from_slice::<serde_json::Value>(&json).ok(),
                "round trip"
            );
        }
    }
}

/// Parses a client envelope as a shard does, and encodes the replies it could cause: every
/// error frame stays small, whatever the input.
pub fn envelope(data: &[u8]) {
    use crate::proto::envelope as env;
    let bound =
        2 * crate::proto::pattern::MAX_TOPIC_LEN + crate::proto::error::MAX_ERROR_MESSAGE + 256;
    match env::parse(data) {
        Err(e) => {
            let f = env::error(e.id, "", crate::ErrorCode::BadRequest, &e.message);
            assert!(f.len() <= bound, "parse error frame of {} bytes", f.len());
        }
        Ok(e) => {
            let topic = &*e.topic;
            let f = env::error(e.id, topic, crate::ErrorCode::BadRequest, "x");
            assert!(f.len() <= bound, "error frame of {} bytes", f.len());
            let msg = match crate::proto::pattern::Pattern::parse(topic) {
                Ok(_) => format!("no handler for topic {}", crate::proto::error::quote(topic)),
                Err(e) => e.to_string(),
            };
            let f = env::error(e.id, topic, crate::ErrorCode::HandlerNotFound, &msg);
            assert!(f.len() <= bound, "error frame of {} bytes", f.len());
            let data = e.data.map(|d| d.get().as_bytes());
            let p = env::publication(topic, &e.event, data);
            // The frame's payload is an envelope that round-trips topic, event and data. (Parsed
            // with the envelope parser: `data` may hold numbers like 1e999 that are valid JSON
            // but out of range for serde_json::Value.)
            let at = match p[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            let back = env::parse(&p[at..]).expect("publication is a valid envelope");
            assert_eq!(back.topic, e.topic);
            assert_eq!(back.event, e.event);
            assert_eq!(back.data.map(|d| d.get()), e.data.map(|d| d.get()));
        }
    }
}

/// Parses a client envelope as a shard does and then its `data` as the v2 request its event
/// names (`subscribe` with `since`, `history`, `ack`, `presence`…), as the shard reads them;
/// every error frame the request can cause stays small.
pub fn v2_requests(data: &[u8]) {
    crate::shard::fuzz_v2_request(data);
}

/// Fossil deltas (`proto::delta`): the bytes after the first are cut in two at a point the
/// first byte picks, a source and a delta: applying never panics and never yields more than
/// its limit; encoding the source into the rest round-trips, and a UTF-8 target gives a UTF-8
/// delta; the whole input as a stored frame splits without panicking.
pub fn delta(data: &[u8]) {
    use crate::proto::delta::{apply, encode, split_stored};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(first).min(rest.len());
    let (src, d) = rest.split_at(at);
    let max = 4 * rest.len() + 64;
    if let Ok(out) = apply(src, d, max) {
        assert!(out.len() <= max, "applied past the limit");
    }
    let enc = encode(src, d);
    assert_eq!(apply(src, &enc, d.len()).as_deref(), Ok(d), "round trip");
    if std::str::from_utf8(d).is_ok() {
        assert!(
            std::str::from_utf8(&enc).is_ok(),
            "a UTF-8 target's delta is UTF-8"
        );
    }
    let _ = split_stored(&bytes::Bytes::copy_from_slice(data));
}
