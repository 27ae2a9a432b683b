use super::*;
use crate::proto::envelope::{close_frame, raw_frame};
use crate::proto::socketio_map::engine_frame;

#[test]
fn sid_round_trips_and_rejects_others() {
    let sid = make_sid("node-a.0100000000000003", 0xdead_beef);
    assert_eq!(sid, "node-a.0100000000000003~00000000deadbeef");
    assert_eq!(
        split_sid(&sid),
        Some(("node-a.0100000000000003", 0xdead_beef))
    );
    assert_eq!(split_sid("node-a.01"), None, "no secret");
    assert_eq!(split_sid("node-a.01~beef"), None, "short secret");
    assert_eq!(split_sid("~00000000deadbeef"), None, "no client id");
    assert_eq!(split_sid("n.1~zzzzzzzzzzzzzzzz"), None, "not hex");
}

#[test]
fn payload_splits_text_and_binary() {
    let parts = split_payload(b"42[\"a\"]\x1eb AQID\x1e3", 100);
    // A space is not base64.
    assert_eq!(parts, Err(EngineError::BadBase64));
    let parts = split_payload(b"42[\"a\"]\x1ebAQID\x1e3", 100).unwrap();
    assert_eq!(
        parts,
        vec![
            Part::Text(b"42[\"a\"]"),
            Part::Binary(vec![1, 2, 3]),
            Part::Text(b"3")
        ]
    );
    assert_eq!(parts[0].opcode(), OP_TEXT);
    assert_eq!(parts[1].opcode(), OP_BINARY);
    assert_eq!(parts[1].bytes(), &[1, 2, 3]);
}

#[test]
fn payload_refuses_bad_input() {
    assert_eq!(split_payload(b"", 10), Err(EngineError::Empty));
    assert_eq!(split_payload(b"4hello", 3), Err(EngineError::TooLarge));
    assert_eq!(
        split_payload(b"4a\x1e\x1e4b", 100),
        Err(EngineError::UnknownType)
    );
    assert_eq!(split_payload(b"9", 100), Err(EngineError::UnknownType));
    assert_eq!(split_payload(b"4\xff", 100), Err(EngineError::NotUtf8));
    let many = vec!["3"; MAX_PAYLOAD_PACKETS + 1].join("\x1e");
    assert_eq!(
        split_payload(many.as_bytes(), 1 << 20),
        Err(EngineError::TooLarge)
    );
    let enough = vec!["3"; MAX_PAYLOAD_PACKETS].join("\x1e");
    assert_eq!(
        split_payload(enough.as_bytes(), 1 << 20).unwrap().len(),
        256
    );
}

#[test]
fn frames_become_a_get_body() {
    let mut out = Vec::new();
    assert!(!push_frame(&engine_frame(b"0{\"sid\":\"x\"}"), &mut out));
    assert!(!push_frame(&raw_frame(OP_BINARY, &[1, 2, 3]), &mut out));
    assert!(
        !push_frame(&raw_frame(9, b""), &mut out),
        "WebSocket ping left out"
    );
    let long = "4".repeat(70_000);
    assert!(!push_frame(&engine_frame(long.as_bytes()), &mut out));
    assert!(push_frame(&close_frame(1000, ""), &mut out));
    let mut want = b"0{\"sid\":\"x\"}\x1ebAQID\x1e".to_vec();
    want.extend_from_slice(long.as_bytes());
    want.extend_from_slice(b"\x1e1");
    assert_eq!(out, want);
}

#[test]
fn server_frame_needs_whole_unmasked_frames() {
    let f = engine_frame(b"2");
    assert_eq!(server_frame(&f), Some((OP_TEXT, &b"2"[..], &b""[..])));
    assert_eq!(server_frame(&f[..1]), None);
    assert_eq!(server_frame(&f[..f.len() - 1]), None);
    assert_eq!(
        server_frame(&[0x81, 0x81, 0, 0, 0, 0, b'x']),
        None,
        "masked"
    );
    assert_eq!(server_frame(&[0x81, 126, 0]), None);
    let mut buf = Vec::new();
    assert!(!push_frame(b"\x81\x05ab", &mut buf));
    assert!(buf.is_empty(), "a truncated frame adds nothing");
}

#[test]
fn one_queued_buffer_may_hold_several_frames() {
    let mut both = engine_frame(b"451-[\"f\",{\"_placeholder\":true,\"num\":0}]").to_vec();
    both.extend_from_slice(&raw_frame(OP_BINARY, &[1, 2, 3]));
    let mut out = Vec::new();
    assert!(!push_frame(&both, &mut out));
    assert_eq!(
        out,
        b"451-[\"f\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID"
    );
}

#[test]
fn cors_echoes_only_clean_origins() {
    assert_eq!(cors_headers(None), "");
    assert_eq!(cors_headers(Some("https://a\r\nX: y")), "");
    let h = cors_headers(Some("https://app.example"));
    assert!(h.contains("Access-Control-Allow-Origin: https://app.example\r\n"));
    assert!(h.contains("Access-Control-Allow-Credentials: true\r\n"));
    let p = preflight_headers(Some("https://app.example"), Some("content-type, x-token"));
    assert!(p.contains("Access-Control-Allow-Headers: content-type, x-token\r\n"));
    let p = preflight_headers(None, Some("a\r\nb"));
    assert!(p.contains("Access-Control-Allow-Headers: content-type\r\n"));
    assert!(p.contains("Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"));
}
