use std::borrow::Cow;

use super::*;
use crate::proto::engineio_poll::{push_frame, server_frame};
use crate::proto::envelope;
use crate::proto::socketio_map::engine_frame;

/// The opcode and payload of a single server frame.
fn one(frame: &[u8]) -> (u8, Vec<u8>) {
    let (op, payload, rest) = server_frame(frame).expect("a whole frame");
    assert!(rest.is_empty(), "one frame");
    (op, payload.to_vec())
}

/// What the client sends comes back as it was, through a handler that sends the message's data
/// to its connection (the echo): text, escapes and non-ASCII included, and bytes.
#[test]
fn messages_round_trip_through_envelopes() {
    let texts = [
        "hello",
        "",
        "quote \" back\\slash \u{1e} tab\t",
        "héllo ✓",
        "{\"x\":1}",
        "42",
    ];
    for text in texts {
        let env = envelope_from_message("eio", &Data::Text(text));
        let v: serde_json::Value = serde_json::from_slice(&env).expect("JSON");
        assert_eq!(v["topic"], "eio");
        assert_eq!(v["event"], EVENT);
        assert_eq!(v["data"], text, "the text as a JSON string");
        let out: Out<'_> = serde_json::from_slice(&env).expect("envelope");
        let data = out.data.expect("data");
        let back = envelope::publication("eio", EVENT, Some(data.get().as_bytes()));
        let (op, payload) = one(&frame_from_envelope(&back).expect("an envelope"));
        assert_eq!(op, OP_TEXT);
        assert_eq!(payload, [b"4", text.as_bytes()].concat());
    }
    let bytes = [1u8, 2, 3, 4, 0, 255];
    let env = envelope_from_message("eio", &Data::Binary(Cow::Borrowed(&bytes)));
    assert_eq!(
        std::str::from_utf8(&env).expect("UTF-8"),
        r#"{"topic":"eio","event":"message","data":{"$bin":"AQIDBAD/"}}"#
    );
    let back = envelope::publication("eio", EVENT, Some(br#"{"$bin":"AQIDBAD/"}"#));
    let (op, payload) = one(&frame_from_envelope(&back).expect("an envelope"));
    assert_eq!((op, payload), (OP_BINARY, bytes.to_vec()));
}

/// Data that is neither a string nor bytes goes as its JSON text; none as an empty message;
/// the server's errors whole; `{"$bin"}` with other keys or bad base64 is JSON.
#[test]
fn other_envelopes_are_their_json() {
    let cases: [(Option<&[u8]>, &[u8]); 5] = [
        (Some(br#"{"n":1}"#), br#"4{"n":1}"#),
        (Some(b"[1,2]"), b"4[1,2]"),
        (None, b"4"),
        (
            Some(br#"{"$bin":"AQID","x":1}"#),
            br#"4{"$bin":"AQID","x":1}"#,
        ),
        (Some(br#"{"$bin":"!!"}"#), br#"4{"$bin":"!!"}"#),
    ];
    for (data, want) in cases {
        let f = envelope::publication("t", "e", data);
        assert_eq!(
            one(&frame_from_envelope(&f).expect("envelope")),
            (OP_TEXT, want.to_vec())
        );
    }
    let err = envelope::error(None, "eio", crate::ErrorCode::Forbidden, "no");
    let (op, payload) = one(&frame_from_envelope(&err).expect("envelope"));
    let json = crate::proto::frame::text_payload(&err).expect("text");
    assert_eq!((op, payload), (OP_TEXT, [b"4", json].concat()));
}

/// The shard's own Engine.IO packets (ping, OPEN, probe answers) and control frames are not
/// envelopes: they go as they are.
#[test]
fn engine_packets_are_not_envelopes() {
    for text in [&b"2"[..], b"3probe", b"6", br#"0{"sid":"a","upgrades":[]}"#] {
        assert_eq!(frame_from_envelope(&engine_frame(text)), None);
    }
    assert_eq!(frame_from_envelope(&envelope::close_frame(1000, "")), None);
}

/// Over long-polling the converted frames become the GET body's packets as the protocol
/// suite expects: `4hello\x1ebAQIDBA==`.
#[test]
fn converted_frames_make_the_polling_body() {
    let text = envelope::publication("eio", EVENT, Some(br#""hello""#));
    let bin = envelope::publication("eio", EVENT, Some(br#"{"$bin":"AQIDBA=="}"#));
    let mut body = Vec::new();
    for f in [&text, &bin] {
        push_frame(&frame_from_envelope(f).expect("envelope"), &mut body);
    }
    assert_eq!(body, b"4hello\x1ebAQIDBA==");
}
