use super::*;
use crate::proto::engineio_poll::decode_payload;

fn text<'a>(p: &'a Packet<'a>) -> &'a str {
    match &p.data {
        Data::Text(t) => t,
        Data::Binary(_) => panic!("binary"),
    }
}

#[test]
fn every_type_digit_round_trips() {
    for d in b'0'..=b'6' {
        let k = Kind::from_digit(d).expect("known");
        assert_eq!(k.digit(), d);
        let mut out = Vec::new();
        encode_text(k, "x", &mut out);
        let p = decode_text(&out).expect("decodes");
        assert_eq!(p.kind, k);
        assert_eq!(text(&p), "x");
    }
    assert_eq!(Kind::from_digit(b'7'), None);
    assert_eq!(Kind::from_digit(b'a'), None);
}

#[test]
fn text_packets_borrow_their_data() {
    let p = decode_text(b"4hello \xc3\xa9").expect("message");
    assert_eq!(p.kind, Kind::Message);
    assert_eq!(text(&p), "hello é");
    assert_eq!(decode_text(b"2probe").map(|p| p.kind), Ok(Kind::Ping));
    assert_eq!(text(&decode_text(b"3").expect("pong")), "");
}

#[test]
fn malformed_text_packets_are_refused() {
    assert_eq!(decode_text(b""), Err(EngineError::UnknownType));
    assert_eq!(decode_text(b"7"), Err(EngineError::UnknownType));
    assert_eq!(decode_text(b"x4"), Err(EngineError::UnknownType));
    assert_eq!(decode_text(b"4\xff"), Err(EngineError::NotUtf8));
    assert_eq!(decode_text(b"\xc3"), Err(EngineError::NotUtf8));
}

#[test]
fn websocket_binary_frames_are_messages() {
    let p = decode_binary(&[1, 2, 3]);
    assert_eq!(p.kind, Kind::Message);
    assert_eq!(p.data, Data::Binary(Cow::Borrowed(&[1u8, 2, 3][..])));
}

#[test]
fn payload_splits_on_the_record_separator() {
    let body = b"4hello\x1e2\x1ebAQID\x1e6";
    let ps = decode_payload(body, 1000).expect("payload");
    assert_eq!(ps.len(), 4);
    assert_eq!((ps[0].kind, text(&ps[0])), (Kind::Message, "hello"));
    assert_eq!(ps[1].kind, Kind::Ping);
    assert_eq!(ps[2].data, Data::Binary(Cow::Owned(vec![1, 2, 3])));
    assert_eq!(ps[3].kind, Kind::Noop);
}

#[test]
fn payload_round_trips_through_push_payload() {
    let packets = [
        Packet {
            kind: Kind::Message,
            data: Data::Text("42[\"a\",1]"),
        },
        Packet {
            kind: Kind::Message,
            data: Data::Binary(Cow::Owned(vec![0, 255, 7])),
        },
        Packet {
            kind: Kind::Ping,
            data: Data::Text(""),
        },
    ];
    let mut body = Vec::new();
    for p in &packets {
        push_payload(p, &mut body);
    }
    assert_eq!(body, b"442[\"a\",1]\x1ebAP8H\x1e2");
    assert_eq!(decode_payload(&body, 100).expect("decodes"), packets);
}

#[test]
fn malformed_payloads_are_refused() {
    assert_eq!(decode_payload(b"", 10), Err(EngineError::Empty));
    assert_eq!(decode_payload(b"4abc", 3), Err(EngineError::TooLarge));
    assert_eq!(decode_payload(b"4a\x1e", 10), Err(EngineError::UnknownType));
    assert_eq!(
        decode_payload(b"4a\x1e9", 10),
        Err(EngineError::UnknownType)
    );
    assert_eq!(decode_payload(b"b!!!", 10), Err(EngineError::BadBase64));
    assert_eq!(decode_payload(b"bAQI", 10), Err(EngineError::BadBase64));
    let many = vec![b"6\x1e".as_slice(); MAX_PAYLOAD_PACKETS + 1].concat();
    assert_eq!(decode_payload(&many, 1 << 20), Err(EngineError::TooLarge));
    let codes: Vec<_> = [
        EngineError::UnknownType,
        EngineError::NotUtf8,
        EngineError::BadBase64,
        EngineError::TooLarge,
        EngineError::Empty,
    ]
    .iter()
    .map(|e| e.code())
    .collect();
    let mut dedup = codes.clone();
    dedup.dedup();
    assert_eq!(codes, dedup, "codes are distinct");
}

#[test]
fn query_names_transport_version_and_sid() {
    let q = parse_query("EIO=4&transport=websocket").expect("ok");
    assert_eq!((q.transport, q.sid), (Transport::Websocket, None));
    let q = parse_query("t=Nx1&EIO=4&transport=polling&sid=abc-_9.f").expect("ok");
    assert_eq!((q.transport, q.sid), (Transport::Polling, Some("abc-_9.f")));
    assert_eq!(
        parse_query("EIO=4&transport=polling&sid=").map(|q| q.sid),
        Ok(None)
    );
}

#[test]
fn bad_queries_get_engineio_error_codes() {
    let cases = [
        ("EIO=4", RequestError::UnknownTransport),
        ("EIO=4&transport=flash", RequestError::UnknownTransport),
        ("transport=polling", RequestError::UnsupportedVersion),
        ("EIO=3&transport=polling", RequestError::UnsupportedVersion),
        (
            "EIO=4&transport=polling&sid=a%20b",
            RequestError::UnknownSid,
        ),
        ("", RequestError::UnknownTransport),
    ];
    for (q, e) in cases {
        assert_eq!(parse_query(q), Err(e), "{q}");
    }
    let long = format!("EIO=4&transport=polling&sid={}", "a".repeat(65));
    assert_eq!(parse_query(&long), Err(RequestError::UnknownSid));
}

#[test]
fn error_bodies_match_the_reference_server() {
    assert_eq!(
        RequestError::UnknownSid.body(),
        r#"{"code":1,"message":"Session ID unknown"}"#
    );
    assert_eq!(
        RequestError::UnknownTransport.body(),
        r#"{"code":0,"message":"Transport unknown"}"#
    );
    assert_eq!(RequestError::Forbidden.status(), 403);
    assert_eq!(RequestError::BadRequest.status(), 400);
    for e in [
        RequestError::BadHandshakeMethod,
        RequestError::BadRequest,
        RequestError::UnsupportedVersion,
    ] {
        let v: serde_json::Value = serde_json::from_str(&e.body()).expect("JSON");
        assert_eq!(v["code"], e.code());
    }
}

#[test]
fn open_packet_carries_the_handshake() {
    let mut out = Vec::new();
    Open {
        sid: "s1",
        upgrade_to_websocket: true,
        ping_interval_ms: 25000,
        ping_timeout_ms: 20000,
        max_payload: 1_000_000,
    }
    .encode(&mut out);
    assert_eq!(out[0], b'0');
    let v: serde_json::Value = serde_json::from_slice(&out[1..]).expect("JSON");
    assert_eq!(v["sid"], "s1");
    assert_eq!(v["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(v["pingInterval"], 25000);
    assert_eq!(v["pingTimeout"], 20000);
    assert_eq!(v["maxPayload"], 1_000_000);
}

#[test]
fn binary_for_polling_is_padded_base64() {
    let mut out = Vec::new();
    encode_binary_polling(&[1, 2, 3, 4], &mut out);
    assert_eq!(out, b"bAQIDBA==");
    out.clear();
    encode_binary_polling(&[], &mut out);
    assert_eq!(out, b"b");
}
