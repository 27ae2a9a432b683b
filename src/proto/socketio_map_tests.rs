use super::*;
use crate::proto::envelope;
use crate::ErrorCode;

fn nsps() -> Vec<String> {
    vec!["/".into(), "/chat".into()]
}

/// The frames' payloads: (opcode, bytes) per frame.
fn frames(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let op = b[at] & 0x0f;
        let (len, hl) = match b[at + 1] {
            126 => (u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(b[at + 2..at + 10].try_into().expect("8")) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        out.push((op, b[at + hl..at + hl + len].to_vec()));
        at += hl + len;
    }
    out
}

fn text_of(b: &Bytes) -> String {
    let f = frames(b);
    assert_eq!(f[0].0, OP_TEXT);
    String::from_utf8(f[0].1.clone()).expect("utf8")
}

#[test]
fn ids_carry_the_namespace_above_the_ack() {
    let id = request_id(3, 17);
    assert_eq!(split_id(id), (3, 17));
    assert_eq!(split_id(request_id(0, (1 << 53) - 1)), (0, (1 << 53) - 1));
    assert_eq!(split_id(request_id(127, 0)), (127, 0));
}

#[test]
fn events_become_envelopes_routed_by_name() {
    let a: &RawValue = serde_json::from_str(r#"{"t":"hi"}"#).expect("json");
    let b: &RawValue = serde_json::from_str("2").expect("json");
    let one = envelope_from_event("chat:message", &[a], Some(5));
    let env = envelope::parse(&one).expect("an envelope");
    assert_eq!(
        (&*env.topic, &*env.event, env.id),
        ("chat:message", "message", Some(5))
    );
    assert_eq!(env.data.map(|d| d.get()), Some(r#"{"t":"hi"}"#));
    assert!(!env.spread, "one argument is not a list");
    let two = envelope_from_event("x", &[a, b], None);
    let env = envelope::parse(&two).expect("an envelope");
    assert_eq!(env.data.map(|d| d.get()), Some(r#"[{"t":"hi"},2]"#));
    assert!(env.spread, "several arguments are marked as a list");
    assert_eq!(env.id, None);
    // One array argument and several arguments differ.
    let arr: &RawValue = serde_json::from_str(r#"[{"t":"hi"},2]"#).expect("json");
    let env = envelope::parse(&envelope_from_event("x", &[arr], None))
        .map(|e| (e.data.map(|d| d.get().to_owned()), e.spread))
        .expect("an envelope");
    assert_eq!(env, (Some(r#"[{"t":"hi"},2]"#.to_owned()), false));
    let none = envelope_from_event("q\"", &[], None);
    let env = envelope::parse(&none).expect("an envelope");
    assert_eq!((&*env.topic, env.data.is_none()), ("q\"", true));
}

#[test]
fn publications_are_emitted_on_the_home_namespace() {
    let p = envelope::publication("room:1", "news", Some(br#"{"a":1}"#));
    let f = frame_from_envelope(&p, &nsps(), 0).expect("converted");
    assert_eq!(text_of(&f), r#"42["news",{"a":1}]"#);
    let f = frame_from_envelope(&p, &nsps(), 1).expect("converted");
    assert_eq!(text_of(&f), r#"42/chat,["news",{"a":1}]"#);
    let bare = envelope::publication("room:1", "ping", None);
    let f = frame_from_envelope(&bare, &nsps(), 0).expect("converted");
    assert_eq!(text_of(&f), r#"42["ping"]"#);
}

#[test]
fn replies_and_errors_answer_the_ack_on_its_namespace() {
    let r = envelope::reply(request_id(1, 7), "t", Some(br#"{"ok":true}"#));
    let f = frame_from_envelope(&r, &nsps(), 0).expect("converted");
    assert_eq!(text_of(&f), r#"43/chat,7[{"ok":true}]"#);
    let r = envelope::reply(request_id(0, 8), "t", None);
    assert_eq!(
        text_of(&frame_from_envelope(&r, &nsps(), 0).expect("c")),
        "438[]"
    );
    let e = envelope::error(Some(request_id(0, 9)), "t", ErrorCode::Forbidden, "no");
    assert_eq!(
        text_of(&frame_from_envelope(&e, &nsps(), 0).expect("c")),
        r#"439[{"error":{"code":"forbidden","message":"no"}}]"#
    );
    let e = envelope::error(None, "t", ErrorCode::BadRequest, "bad");
    assert_eq!(
        text_of(&frame_from_envelope(&e, &nsps(), 1).expect("c")),
        r#"42/chat,["error",{"code":"bad_request","message":"bad"}]"#
    );
}

#[test]
fn bytes_travel_as_attachments() {
    let p = envelope::publication("r", "file", Some(br#"{"name":"a","body":{"$bin":"AQID"}}"#));
    let f = frame_from_envelope(&p, &nsps(), 0).expect("converted");
    let fs = frames(&f);
    assert_eq!(fs.len(), 2);
    assert_eq!(
        String::from_utf8(fs[0].1.clone()).expect("utf8"),
        r#"451-["file",{"name":"a","body":{"_placeholder":true,"num":0}}]"#
    );
    assert_eq!(fs[1], (OP_BINARY, vec![1, 2, 3]));
    let r = envelope::reply(request_id(1, 2), "t", Some(br#"{"$bin":"/w=="}"#));
    let fs = frames(&frame_from_envelope(&r, &nsps(), 0).expect("converted"));
    assert_eq!(
        String::from_utf8(fs[0].1.clone()).expect("utf8"),
        r#"461-/chat,2[{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(fs[1], (OP_BINARY, vec![255]));
}

#[test]
fn control_frames_and_non_envelopes_pass_unchanged() {
    assert!(frame_from_envelope(&envelope::raw_frame(9, b""), &nsps(), 0).is_none());
    assert!(frame_from_envelope(&envelope::close_frame(1000, ""), &nsps(), 0).is_none());
    assert!(frame_from_envelope(&envelope::raw_frame(1, b"not json"), &nsps(), 0).is_none());
    assert!(frame_from_envelope(&[], &nsps(), 0).is_none());
    assert_eq!(engine_frame(b"2").as_ref(), &[0x81, 1, b'2']);
}

#[test]
fn large_payloads_get_extended_lengths() {
    let data = format!("\"{}\"", "x".repeat(70_000));
    let p = envelope::publication("r", "big", Some(data.as_bytes()));
    let f = frame_from_envelope(&p, &nsps(), 0).expect("converted");
    let t = text_of(&f);
    assert!(t.starts_with(r#"42["big","xxx"#) && t.ends_with(r#"x"]"#));
}

fn raw(s: &str) -> &RawValue {
    serde_json::from_str(s).expect("json")
}

#[test]
fn argument_lists_are_spread_into_acks_and_emits() {
    let (a, b, c) = (raw("1"), raw(r#""2""#), raw(r#"{"3":[true]}"#));
    let r = crate::proto::args::reply(request_id(0, 456), "t", &[a, b, c]);
    let f = frame_from_envelope(&r, &nsps(), 1).expect("converted");
    assert_eq!(text_of(&f), r#"43456[1,"2",{"3":[true]}]"#);
    // One array argument stays one argument.
    let one = envelope::reply(request_id(1, 3), "t", Some(br#"[1,"2"]"#));
    let f = frame_from_envelope(&one, &nsps(), 0).expect("converted");
    assert_eq!(text_of(&f), r#"43/chat,3[[1,"2"]]"#);
    let none = crate::proto::args::reply(request_id(0, 4), "t", &[]);
    assert_eq!(
        text_of(&frame_from_envelope(&none, &nsps(), 0).expect("c")),
        "434[]"
    );

    let e = crate::proto::args::publication("t", "message-back", &[a, b, c]);
    let f = frame_from_envelope(&e, &nsps(), 1).expect("converted");
    assert_eq!(
        text_of(&f),
        r#"42/chat,["message-back",1,"2",{"3":[true]}]"#
    );
    let e = crate::proto::args::publication("t", "bare", &[]);
    let f = frame_from_envelope(&e, &nsps(), 0).expect("converted");
    assert_eq!(text_of(&f), r#"42["bare"]"#);
}

#[test]
fn argument_lists_with_bytes_become_binary_packets() {
    let (x, y) = (raw(r#"{"$bin":"AQID"}"#), raw(r#"{"$bin":"BAUG"}"#));
    let r = crate::proto::args::reply(request_id(0, 789), "t", &[x, y]);
    let fs = frames(&frame_from_envelope(&r, &nsps(), 0).expect("converted"));
    assert_eq!(
        String::from_utf8(fs[0].1.clone()).expect("utf8"),
        r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(
        fs[1..],
        [(OP_BINARY, vec![1, 2, 3]), (OP_BINARY, vec![4, 5, 6])]
    );
    let e = crate::proto::args::publication("t", "message-back", &[x, y]);
    let fs = frames(&frame_from_envelope(&e, &nsps(), 0).expect("converted"));
    assert_eq!(
        String::from_utf8(fs[0].1.clone()).expect("utf8"),
        r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(fs.len(), 3);
}
