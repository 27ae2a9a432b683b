//! Entry points for the fuzz targets (`fuzz/`), the proptest properties and the corpus replay
//! test: each takes arbitrary bytes from the network or an operator, drives one sans-IO parser the
//! way the server does, and checks invariants with `assert!`. None may panic on any input other
//! than through a broken invariant. Not a stable API.

use crate::config::settings::{Secret, Settings};
use crate::policy::auth::{token_from_request, Authenticator};
use crate::proto::frame as decode;
use crate::proto::handshake as http;
use decode::{Assembler, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// The message limit the frame target runs with (small, so the limits are reachable).
pub const FRAME_MAX: usize = 4096;

/// What [`frames`] saw: complete messages, control frames, and how the stream ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrameOutcome {
    /// Complete data messages (opcode, payload).
    pub messages: Vec<(u8, Vec<u8>)>,
    /// Pings, pongs and closes seen.
    pub controls: usize,
    /// The close code and reason of a protocol failure, if the stream failed.
    pub failed: Option<(u16, &'static str)>,
    /// Bytes consumed.
    pub consumed: usize,
}

/// Decodes a client byte stream as the connection reader does: frame headers, unmasking,
/// control frames, close payloads and message reassembly under [`FRAME_MAX`].
pub fn frames(data: &[u8]) -> FrameOutcome {
    let mut buf = data.to_vec();
    let mut asm = Assembler::new(FRAME_MAX);
    let mut out = FrameOutcome::default();
    let mut at = 0;
    loop {
        let h = match decode::head(&buf[at..], FRAME_MAX) {
            Ok(Some(h)) if h.total() <= buf.len() - at => h,
            Ok(_) => break,
            Err(f) => {
                out.failed = Some(f);
                break;
            }
        };
        assert!(h.len <= FRAME_MAX, "a frame over the limit was accepted");
        let payload = h.unmask(&mut buf[at..at + h.total()]);
        at += h.total();
        match h.opcode {
            OP_PING | OP_PONG => {
                assert!(payload.len() <= 125);
                out.controls += 1;
            }
            OP_CLOSE => {
                out.controls += 1;
                if let Err(f) = decode::close_code(payload) {
                    out.failed = Some(f);
                }
                break;
            }
            op => match asm.push(op, h.fin, payload) {
                Err(f) => {
                    out.failed = Some(f);
                    break;
                }
                Ok(None) => {}
                Ok(Some((op, msg))) => {
                    assert!(
                        msg.len() <= FRAME_MAX,
                        "a message over the limit was delivered"
                    );
                    if op == OP_TEXT {
                        assert!(std::str::from_utf8(msg).is_ok(), "invalid UTF-8 delivered");
                    }
                    out.messages.push((op, msg.to_vec()));
                    asm.reset();
                }
            },
        }
    }
    if let Some((code, reason)) = out.failed {
        assert!(
            matches!(code, 1002 | 1007 | 1008 | 1009),
            "close code {code}"
        );
        assert!(
            reason.len() <= 123,
            "a close reason must fit a control frame"
        );
    }
    out.consumed = at;
    out
}

/// permessage-deflate on arbitrary bytes: the first byte picks a message limit, the rest is a
/// compressed message, inflated as a shard does (never more than the limit comes out, failures
/// are 1007 or 1009); the same bytes as an extension offer negotiate a window of 9..=15 or
/// nothing; and as a server frame payload they survive compression and inflation unchanged.
pub fn inflate(data: &[u8]) {
    use crate::proto::deflate::{negotiate, Deflater, Inflater};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(first) * 64;
    let mut inf = Inflater::default();
    match inf.inflate(rest, max) {
        Ok(msg) => assert!(msg.len() <= max, "inflated past the limit"),
        Err((code, _)) => assert!(matches!(code, 1007 | 1009), "close code {code}"),
    }
    if let Some(a) = negotiate([rest], first % 2 == 0, 9 + first % 7) {
        assert!((9..=9 + first % 7).contains(&a.window_bits));
    }
    let frame = crate::proto::envelope::raw_frame(2, rest);
    let mut d = Deflater::new(u32::from(first % 10), 0);
    let bits = 9 + first % 7;
    if let Some(z) = d.frame_always(&frame, bits) {
        let at = match z[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        assert_eq!(z[0], 0xC2, "FIN, RSV1, binary");
        let back = inf.inflate(&z[at..], rest.len()).expect("inflates");
        assert_eq!(back, rest, "round trip");
    }
}

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

/// Parses an HTTP request head and runs every check the server makes on one: the upgrade, the
/// SSE topics, the token lookup.
pub fn http_head(data: &[u8]) {
    match http::parse_head(data, http::MAX_HEAD) {
        Err(e) => {
            assert!((400..=599).contains(&e.status));
            let r = e.response();
            assert!(r.starts_with(b"HTTP/1.1 "));
            assert!(
                e.message.len() <= 512,
                "error message of {} bytes",
                e.message.len()
            );
        }
        Ok(None) => assert!(data.len() < http::MAX_HEAD),
        Ok(Some((head, used))) => {
            assert!(used <= data.len());
            if let Ok(resp) = http::accept_upgrade(&head) {
                assert!(resp.starts_with(b"HTTP/1.1 101 "));
                assert!(head.version >= 1 && head.method == "GET");
            }
            if let Err(e) = http::sse_topics(&head, 16) {
                assert!(
                    e.message.len() <= 512,
                    "error message of {} bytes",
                    e.message.len()
                );
            } else {
                assert!(http::sse_topics(&head, 16).unwrap().len() <= 16);
            }
            let _ = token_from_request(head.query.as_deref(), head.header("Authorization"));
            let _ = head.query_param("token");
        }
    }
}

/// The HS256 secret the JWT target verifies with.
pub const JWT_SECRET: &str = "fuzz-secret-0123456789abcdef0123";

thread_local! {
    static AUTH: Authenticator =
        Authenticator::from_keys(Some(&Secret::new(JWT_SECRET)), None, false)
            .expect("HS256 authenticator");
}

/// Verifies `data` as a connection token with a fixed HS256 key, as the upgrade does. Only a
/// token signed with [`JWT_SECRET`] (the fuzzer cannot forge one) may be accepted.
pub fn jwt(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    AUTH.with(|a| {
        if let Ok(id) = a.authenticate(Some(&token)) {
            if let Some(u) = &id.user {
                assert!(!u.is_empty() && u.len() <= crate::policy::auth::MAX_USER_LEN);
            }
        }
        // Also through the request paths a token arrives by.
        let q = format!("token={token}");
        let _ = token_from_request(Some(&q), None);
        let _ = token_from_request(None, Some(&format!("Bearer {token}")));
    });
}

/// Loads TOML text as a settings file. When it loads and names no file (so validation reads
/// nothing from disk) it is validated, and the printed effective configuration — what
/// `check-config` shows — must read back as the same settings.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut s = Settings::default();
    if s.merge_toml(text, "fuzz.toml").is_err() {
        return;
    }
    let _ = s.warnings();
    let files = s.auth.jwt_public_key_file.is_some()
        || s.tls.cert_file.is_some()
        || s.tls.key_file.is_some();
    if !files && s.validate().is_ok() {
        let _ = s.engine_config();
        let _ = crate::policy::guard::Guard::from_settings(&s);
    }
    let secrets = s.auth.jwt_secret.is_some() || s.api.key.is_some();
    if !secrets {
        let printed = s.to_string();
        let mut back = Settings::default();
        back.merge_toml(&printed, "printed")
            .unwrap_or_else(|e| panic!("printed settings do not re-read: {e}\n{printed}"));
        assert_eq!(
            back, s,
            "printed settings read back differently:\n{printed}"
        );
    }
}

/// Decodes arbitrary bytes as every value the stores read back: the redb store's hand-rolled
/// encodings (stream metas, history entries, inbox entries, status rows — each that decodes must
/// re-encode to the same bytes) and, parsed as a RESP reply, every Redis script answer the Redis
/// store decodes. Stored data can be damaged; decoding it must fail cleanly, never panic.
pub fn store_codecs(data: &[u8]) {
    crate::store::redb::fuzz_decode_all(data);
    if let Ok(v) = ::redis::parse_redis_value(data) {
        crate::store::redis::fuzz_decode(&v);
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

/// Bytes as a Redis subscriber connection of the cluster thread receives them: the RESP push
/// parser over the whole input must find the same frames as over the input cut into reads of
/// the size the first byte picks (a frame split across reads waits for the rest), never take
/// more than it was given, and never panic; every publication found goes through the cluster
/// receive path (wire decoding, de-duplication, the per-shard hand-off) of a 2-shard node.
pub fn cluster_recv(data: &[u8]) {
    use crate::proto::resp;
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let whole = frames_of(data, data.len().max(1));
    let cut = frames_of(data, usize::from(first % 64) + 1);
    assert_eq!(whole, cut, "frames depend on how the bytes were read");

    let hub = crate::shard::shared::HubShared::for_bench(2);
    let mut interest = crate::proto::registry::Interest::new();
    for (p, shard) in [("a", 0), ("b*", 1), ("c", 1)] {
        if let Ok(p) = crate::proto::pattern::Pattern::parse(p) {
            interest.add(p, shard);
        }
    }
    let stats = crate::cluster::ClusterStats::default();
    let mut fanin = crate::cluster::redis::recv::Fanin::new("me".into(), 2);
    let mut partial: Vec<u8> = Vec::new();
    for chunk in data.chunks(usize::from(first % 64) + 1) {
        partial.extend_from_slice(chunk);
        match fanin.feed(&partial, &interest) {
            Ok(n) => {
                assert!(n <= partial.len(), "took more than it was given");
                partial.drain(..n);
            }
            Err(_) => break,
        }
        fanin.flush(&hub.inboxes, &stats);
    }
    fanin.flush(&hub.inboxes, &stats);
    for inbox in hub.inboxes.iter() {
        while inbox.pop().is_some() {}
    }

    /// Debug renderings of the frames parsed from `data` read `step` bytes at a time, then the
    /// error if one ended the stream.
    fn frames_of(data: &[u8], step: usize) -> Vec<String> {
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        for chunk in data.chunks(step) {
            buf.extend_from_slice(chunk);
            loop {
                match resp::parse(&buf) {
                    Ok(Some((p, n))) => {
                        assert!(n > 0 && n <= buf.len(), "frame length {n} of {}", buf.len());
                        out.push(format!("{p:?}"));
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        out.push(format!("error {e}"));
                        return out;
                    }
                }
            }
        }
        out
    }
}

/// The payload of the first `message` frame of `data` and the frame's length, as the cluster
/// thread's RESP parser reads it (for tests that check it against a real `redis-server`).
pub fn resp_frame(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    match crate::proto::resp::parse(data) {
        Ok(Some((crate::proto::resp::Push::Message { payload, .. }, n))) => {
            Some((payload.to_vec(), n))
        }
        _ => None,
    }
}

/// A CONNECT auth payload's `{pid, offset}`: an offset read back encodes to one that reads the
/// same.
fn resume_round_trip(auth: Option<&serde_json::value::RawValue>) {
    use crate::proto::socketio_recover as rec;
    let Some(r) = rec::resume(auth) else { return };
    let Some(o) = r.offset.as_deref().and_then(rec::parse_offset) else {
        return;
    };
    let arg = rec::offset_arg(o.epoch, o.offset, o.topic);
    let text: String = serde_json::from_str(&arg).expect("an offset is a JSON string");
    assert_eq!(rec::parse_offset(&text), Some(o));
}

/// Engine.IO and Socket.IO input as the `/socket.io/` endpoint reads it: the bytes as a
/// long-polling body (and, for each text packet, as a WebSocket text frame) under a 4 KiB limit;
/// every Socket.IO packet decoded from a `message` re-encodes to a packet that decodes the same;
/// a binary packet's placeholders are resolved against attachments cut from the input, and the
/// result converts back to placeholders and again to the same JSON; a CONNECT's recovery
/// `{pid, offset}` and a recovery reply are read without panicking. Long-polling: the input as
/// a query string and a session id parses without panicking; a POST body splits into the same
/// packets as it decodes into, and those packets, queued as the WebSocket frames a session
/// holds, make the same GET body as the payload encoder.
pub fn socketio(data: &[u8]) {
    use crate::proto::engineio as eio;
    use crate::proto::engineio_poll as poll;
    use crate::proto::socketio as sio;
    use crate::proto::socketio_binary as bin;
    let _ = eio::decode_text(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = eio::parse_query(text);
        if let Some((client, secret)) = poll::split_sid(text) {
            assert_eq!(
                poll::split_sid(&poll::make_sid(client, secret)),
                Some((client, secret))
            );
        }
    }
    let split = poll::split_payload(data, FRAME_MAX);
    let Ok(packets) = poll::decode_payload(data, FRAME_MAX) else {
        assert!(split.is_err(), "split and decoded alike");
        return;
    };
    let split = split.expect("split and decoded alike");
    assert_eq!(split.len(), packets.len());
    assert!(packets.len() <= eio::MAX_PAYLOAD_PACKETS);
    let mut body = Vec::new();
    for p in &packets {
        eio::push_payload(p, &mut body);
    }
    assert_eq!(
        poll::decode_payload(&body, usize::MAX).ok(),
        Some(packets.clone())
    );
    let mut queued = Vec::new();
    for part in &split {
        let frame = crate::proto::envelope::raw_frame(part.opcode(), part.bytes());
        assert!(!poll::push_frame(&frame, &mut queued) || part.bytes() == b"1");
    }
    assert_eq!(queued, body, "a GET body as the payload encoder makes it");
    for p in &packets {
        let eio::Data::Text(text) = p.data else {
            continue;
        };
        // A recovery reply is read without panicking, whatever it holds.
        let _ = crate::proto::socketio_recover::replay(text.as_bytes(), "/");
        let Ok(pk) = sio::decode(text) else { continue };
        assert!(pk.attachments <= sio::MAX_ATTACHMENTS);
        resume_round_trip(pk.data);
        let mut out = Vec::new();
        sio::encode_header(pk.kind, pk.nsp, pk.attachments, pk.id, &mut out);
        if let Some(d) = pk.data {
            out.extend_from_slice(d.get().as_bytes());
        }
        let again = std::str::from_utf8(&out).expect("encoded packets are UTF-8");
        let q = sio::decode(again).expect("an encoded packet decodes");
        assert_eq!(
            (q.kind, q.nsp, q.id, q.attachments),
            (pk.kind, pk.nsp, pk.id, pk.attachments)
        );
        assert_eq!(q.data.map(|d| d.get()), pk.data.map(|d| d.get()));
        let (Some(d), true) = (pk.data, pk.kind.is_binary()) else {
            continue;
        };
        let parts: Vec<Vec<u8>> = text
            .as_bytes()
            .chunks(3)
            .take(pk.attachments)
            .map(<[u8]>::to_vec)
            .collect();
        let Ok(json) = bin::reconstruct(d, &parts) else {
            continue;
        };
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&json).expect("reconstructed JSON is JSON");
        if let Ok(Some((text2, parts2))) = bin::deconstruct(raw) {
            let raw2: &serde_json::value::RawValue =
                serde_json::from_str(&text2).expect("deconstructed JSON is JSON");
            assert_eq!(
                bin::reconstruct(raw2, &parts2).as_deref(),
                Ok(&*json),
                "round trip"
            );
        }
    }
}

/// A fuzz entry point with its name.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name (the corpus directories under `fuzz/corpus/`).
pub const TARGETS: [Target; 12] = [
    ("frames", |d| {
        frames(d);
    }),
    ("envelope", envelope),
    ("http_head", http_head),
    ("jwt", jwt),
    ("settings", settings),
    ("store_codecs", store_codecs),
    ("v2_requests", v2_requests),
    ("inflate", inflate),
    ("delta", delta),
    ("msgpack", msgpack),
    ("cluster_recv", cluster_recv),
    ("socketio", socketio),
];
