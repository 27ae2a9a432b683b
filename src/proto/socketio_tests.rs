use super::*;

fn dec(s: &str) -> Packet<'_> {
    decode(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn connect_packets_with_and_without_auth() {
    let p = dec("0");
    assert_eq!(
        (p.kind, p.nsp, p.id, p.data.is_none()),
        (Kind::Connect, "/", None, true)
    );
    let p = dec(r#"0{"token":"abc"}"#);
    assert_eq!(p.data.map(|d| d.get()), Some(r#"{"token":"abc"}"#));
    let p = dec(r#"0/admin,{"token":"abc"}"#);
    assert_eq!(p.nsp, "/admin");
    assert_eq!(dec("0/admin,").nsp, "/admin");
    // Without a comma the namespace runs to the end, as in the reference parser.
    assert_eq!(dec("0/admin").nsp, "/admin");
}

#[test]
fn events_with_namespaces_and_ack_ids() {
    let p = dec(r#"2["chat:message",{"text":"hi"},2]"#);
    assert_eq!((p.kind, p.nsp, p.id), (Kind::Event, "/", None));
    let e = event(p.data.expect("data")).expect("event");
    assert_eq!(e.name, "chat:message");
    assert!(matches!(e.name, Cow::Borrowed(_)));
    assert_eq!(
        e.args.iter().map(|a| a.get()).collect::<Vec<_>>(),
        [r#"{"text":"hi"}"#, "2"]
    );
    let p = dec(r#"2/chat,17["a"]"#);
    assert_eq!((p.nsp, p.id), ("/chat", Some(17)));
    assert!(event(p.data.expect("data")).expect("event").args.is_empty());
    let p = dec(r#"212["a"]"#);
    assert_eq!(p.id, Some(12));
    let e = event(dec(r#"2["a\"b"]"#).data.expect("data")).expect("escaped");
    assert_eq!(e.name, "a\"b");
}

#[test]
fn acks_disconnects_and_connect_errors() {
    let p = dec(r#"3/chat,5["ok",1]"#);
    assert_eq!((p.kind, p.nsp, p.id), (Kind::Ack, "/chat", Some(5)));
    assert_eq!(ack_args(p.data.expect("data")).expect("args").len(), 2);
    assert_eq!(dec("3[]").id, None);
    assert_eq!(dec("1").kind, Kind::Disconnect);
    assert_eq!(dec("1/chat,").nsp, "/chat");
    assert_eq!(dec(r#"4{"message":"no"}"#).kind, Kind::ConnectError);
    assert_eq!(dec(r#"4"no""#).kind, Kind::ConnectError);
}

#[test]
fn binary_packets_announce_attachments() {
    let p = dec(r#"51-["up",{"_placeholder":true,"num":0}]"#);
    assert_eq!((p.kind, p.attachments, p.nsp), (Kind::BinaryEvent, 1, "/"));
    let p = dec(r#"62-/chat,9[{"_placeholder":true,"num":1}]"#);
    assert_eq!(
        (p.kind, p.attachments, p.nsp, p.id),
        (Kind::BinaryAck, 2, "/chat", Some(9))
    );
    assert_eq!(dec(r#"50-["x"]"#).attachments, 0);
}

#[test]
fn malformed_packets_get_their_error() {
    use SocketError::*;
    let cases: &[(&str, SocketError)] = &[
        ("", UnknownType),
        ("7", UnknownType),
        ("a", UnknownType),
        ("5[\"a\"]", IllegalAttachments),
        ("5-[\"a\"]", IllegalAttachments),
        ("5x-[\"a\"]", IllegalAttachments),
        ("51[\"a\"]", IllegalAttachments),
        ("51234-[\"a\"]", IllegalAttachments),
        ("565-[\"a\"]", IllegalAttachments),
        ("2", InvalidPayload),
        ("2[]", InvalidPayload),
        ("2[1]", InvalidPayload),
        ("2{}", InvalidPayload),
        ("2[\"connect\"]", InvalidPayload),
        ("2[\"disconnect\",1]", InvalidPayload),
        ("2[\"a\"", InvalidPayload),
        ("2[\"a\"]x", InvalidPayload),
        ("0[]", InvalidPayload),
        ("0\"tok\"", InvalidPayload),
        ("1{}", InvalidPayload),
        ("3{}", InvalidPayload),
        ("3", InvalidPayload),
        ("41", InvalidPayload),
        ("2/chat,x", InvalidPayload),
        ("299999999999999999999[\"a\"]", BadId),
        ("29007199254740992[\"a\"]", BadId),
    ];
    for (s, e) in cases {
        assert_eq!(decode(s).err(), Some(*e), "{s:?}");
    }
    let long = format!("0/{},", "n".repeat(MAX_NAMESPACE_LEN));
    assert_eq!(decode(&long).err(), Some(BadNamespace));
    assert_eq!(dec("29007199254740991[\"a\"]").id, Some((1 << 53) - 1));
}

#[test]
fn error_codes_are_distinct_and_prefixed() {
    use SocketError::*;
    let all = [
        UnknownType,
        IllegalAttachments,
        BadNamespace,
        BadId,
        InvalidPayload,
        BadAttachment,
        TooLarge,
    ];
    let mut codes: Vec<_> = all.iter().map(|e| e.code()).collect();
    assert!(codes.iter().all(|c| c.starts_with("sio_")));
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
}

#[test]
fn encoding_matches_the_reference_parser() {
    let mut out = Vec::new();
    encode(Kind::Connect, "/", None, Some(r#"{"sid":"x"}"#), &mut out);
    assert_eq!(out, br#"0{"sid":"x"}"#);
    out.clear();
    encode(
        Kind::Connect,
        "/chat",
        None,
        Some(r#"{"sid":"x"}"#),
        &mut out,
    );
    assert_eq!(out, br#"0/chat,{"sid":"x"}"#);
    out.clear();
    encode(Kind::Disconnect, "/chat", None, None, &mut out);
    assert_eq!(out, b"1/chat,");
    out.clear();
    encode(Kind::Ack, "/", Some(3), Some(r#"["ok"]"#), &mut out);
    assert_eq!(out, br#"33["ok"]"#);
    out.clear();
    encode_event("/", None, "news", &[r#"{"a":1}"#], &mut out);
    assert_eq!(out, br#"2["news",{"a":1}]"#);
    out.clear();
    encode_event("/chat", Some(4), "q\"", &[], &mut out);
    assert_eq!(out, br#"2/chat,4["q\""]"#);
    out.clear();
    encode_header(Kind::BinaryEvent, "/", 2, None, &mut out);
    assert_eq!(out, b"52-");
    out.clear();
    encode_connect_error("/admin", "Invalid namespace", None, &mut out);
    assert_eq!(out, br#"4/admin,{"message":"Invalid namespace"}"#);
    out.clear();
    encode_connect_error("/", "bad", Some(r#"{"code":"forbidden"}"#), &mut out);
    assert_eq!(out, br#"4{"message":"bad","data":{"code":"forbidden"}}"#);
}

#[test]
fn encoded_packets_decode_to_themselves() {
    let mut out = Vec::new();
    encode_event("/p", Some(42), "x:y", &["1", "[true]"], &mut out);
    let text = std::str::from_utf8(&out).expect("utf8");
    let p = dec(text);
    assert_eq!((p.kind, p.nsp, p.id), (Kind::Event, "/p", Some(42)));
    let e = event(p.data.expect("data")).expect("event");
    assert_eq!((&*e.name, e.args.len()), ("x:y", 2));
}
