//! Property tests for the parsers that face the network, where a coverage fuzzer is weak: inputs
//! with structure (valid frames split arbitrarily, headers with arbitrary values) and exact
//! expectations.

mod common;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use ringhub::auth::{AuthError, Authenticator};
use ringhub::error::{quote, MAX_QUOTE};
use ringhub::fuzz_support::{self as fz, FRAME_MAX};
use ringhub::settings::Secret;

/// A masked client frame.
fn frame(op: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    common::masked_frame((fin as u8) << 7 | op, payload, mask)
}

/// Splits `msg` into fragments at the given cut points (as frames, first opcode `op`).
fn fragments(op: u8, msg: &[u8], cuts: &[usize], mask: [u8; 4]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (msg.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    let mut first = true;
    for p in points.into_iter().chain([msg.len()]) {
        let last = p == msg.len();
        out.extend(frame(
            if first { op } else { 0 },
            last,
            &msg[start..p],
            mask,
        ));
        first = false;
        start = p;
        if last {
            break;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        for (_, run) in fz::TARGETS {
            run(&data);
        }
    }

    #[test]
    fn fragmented_messages_reassemble(
        text in "\\PC{0,200}",
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        mask in any::<[u8; 4]>(),
        ping_between in any::<bool>(),
    ) {
        let mut stream = fragments(1, text.as_bytes(), &cuts, mask);
        if ping_between {
            // A control frame may come between fragments (RFC 6455 §5.4).
            let f = frame(1, false, b"", mask);
            let mut s = f;
            s.extend(frame(9, true, b"p", mask));
            s.extend(frame(0, true, text.as_bytes(), mask));
            stream = s;
        }
        let out = fz::frames(&stream);
        prop_assert_eq!(out.failed, None);
        prop_assert_eq!(out.consumed, stream.len());
        prop_assert_eq!(out.messages, vec![(1u8, text.into_bytes())]);
    }

    #[test]
    fn endless_empty_continuations_are_cut(n in 1025usize..3000, mask in any::<[u8; 4]>()) {
        let mut stream = frame(2, false, b"x", mask);
        for _ in 0..n {
            stream.extend(frame(0, false, b"", mask));
        }
        let out = fz::frames(&stream);
        prop_assert_eq!(out.failed, Some((1009, "too many fragments in one message")));
        prop_assert!(out.messages.is_empty());
    }

    #[test]
    fn oversized_messages_are_refused(extra in 1usize..100, cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let msg = vec![b'a'; FRAME_MAX + extra];
        let out = fz::frames(&fragments(2, &msg, &cuts, [9, 8, 7, 6]));
        prop_assert_eq!(out.failed.map(|f| f.0), Some(1009));
    }

    #[test]
    fn quote_is_short_and_escaped(s in "\\PC{0,300}|[\\x00-\\x1f\"\\\\]{0,100}") {
        let q = quote(&s);
        prop_assert!(q.chars().count() <= MAX_QUOTE * 10 + 40, "{}", q);
        prop_assert!(!q.chars().any(|c| c.is_control()), "{:?}", q);
        if s.chars().count() <= MAX_QUOTE {
            // Not cut: no ellipsis added (the input may hold some of its own).
            prop_assert_eq!(q.matches('…').count(), s.matches('…').count(), "{:?}", q);
        }
    }

    #[test]
    fn content_length_digits_parse_exactly(n in any::<u32>(), pad in "[ \\t]{0,3}") {
        let req = format!("POST /api/v1/publish HTTP/1.1\r\nContent-Length:{pad}{n}{pad}\r\n\r\n");
        fz::http_head(req.as_bytes());
        let twice = format!("POST / HTTP/1.1\r\nContent-Length: {n}\r\nContent-Length: {n}\r\n\r\n");
        fz::http_head(twice.as_bytes());
    }

    #[test]
    fn header_values_never_panic(
        name in "[A-Za-z-]{1,20}",
        value in "[\\x20-\\x7e]{0,80}",
        version in "1\\.[01]",
    ) {
        let req = format!(
            "GET /ws?topics=a,b&token=t HTTP/{version}\r\n{name}: {value}\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        fz::http_head(req.as_bytes());
    }

    #[test]
    fn envelopes_with_any_strings(topic in "\\PC{0,400}", event in "\\PC{0,20}", id in any::<Option<u64>>()) {
        let v = serde_json::json!({"topic": topic, "event": event, "id": id, "data": [1, "x"]});
        fz::envelope(v.to_string().as_bytes());
    }

    /// Signed tokens (which a coverage fuzzer cannot forge) with arbitrary claims: the claim
    /// rules hold whatever the values, and `crit` is always refused.
    #[test]
    fn signed_tokens_with_any_claims(
        sub in proptest::option::of("\\PC{0,140}|[a*:\\x00-\\x1f]{0,4}"),
        exp_delta in -100_000i64..100_000,
        subscribe in proptest::option::of(proptest::collection::vec("[a-z:*]{0,6}", 0..4)),
        crit in any::<bool>(),
    ) {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let mut claims = serde_json::json!({"exp": now + exp_delta});
        if let Some(s) = &sub {
            claims["sub"] = s.clone().into();
        }
        if let Some(l) = &subscribe {
            claims["subscribe"] = l.clone().into();
        }
        let mut h = Header::new(Algorithm::HS256);
        if crit {
            h.crit = Some(vec!["exp".into()]);
        }
        let key = EncodingKey::from_secret(fz::JWT_SECRET.as_bytes());
        let token = encode(&h, &claims, &key).unwrap();
        let auth = Authenticator::from_keys(Some(&Secret::new(fz::JWT_SECRET)), None, false).unwrap();
        let r = auth.authenticate(Some(&token));
        fz::jwt(token.as_bytes());
        if crit {
            prop_assert_eq!(r, Err(AuthError::CriticalExtension));
        } else if exp_delta < -30 {
            prop_assert_eq!(r, Err(AuthError::Expired));
        } else if let Ok(id) = r {
            let ok_sub = |s: &str| {
                !s.is_empty() && s.len() <= 128 && !s.contains('*') && !s.chars().any(char::is_control)
            };
            prop_assert!(sub.as_deref().is_none_or(ok_sub));
            prop_assert_eq!(id.user.as_deref(), sub.as_deref());
            for p in id.subscribe.iter().flatten() {
                prop_assert!(ringhub::pattern::Pattern::parse(p).is_ok());
            }
        } else {
            let bad_sub = sub.as_deref().is_some_and(|s| {
                s.is_empty() || s.len() > 128 || s.contains('*') || s.chars().any(char::is_control)
            });
            let bad_pattern = subscribe
                .iter()
                .flatten()
                .any(|p| ringhub::pattern::Pattern::parse(p).is_err());
            prop_assert!(bad_sub || bad_pattern || exp_delta < 30, "refused: {:?}", r);
        }
    }

    /// Socket.IO packets built from valid and invalid parts (type, attachment count, namespace,
    /// ack id, JSON-ish payload, attachments) through the `socketio` fuzz entry point: its
    /// round-trip assertions hold and nothing panics.
    #[test]
    fn socketio_packets_round_trip(
        kind in 0u8..8,
        att in proptest::option::of(0usize..70),
        nsp in proptest::option::of("/[a-z,]{0,6}"),
        id in proptest::option::of(any::<u64>()),
        json in r#"\[?"[a-z_]{0,6}"?(,\{"(_placeholder|num|\$bin|a)":(true|[0-9]|"AQID"|\[\])\}){0,3}\]?"#,
        bins in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6), 0..3),
    ) {
        use base64::Engine;
        let mut body = format!("4{kind}");
        if let Some(a) = att {
            body.push_str(&format!("{a}-"));
        }
        if let Some(n) = nsp {
            body.push_str(&n);
            body.push(',');
        }
        if let Some(i) = id {
            body.push_str(&i.to_string());
        }
        body.push_str(&json);
        for b in &bins {
            body.push('\x1e');
            body.push('b');
            body.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
        }
        fz::socketio(body.as_bytes());
    }
}
