//! Server context takeover (`[compression] context_takeover = true`) on both shells: a client
//! that allows it keeps one inflater for the whole connection and decodes publications and
//! its own replies interleaved; a client that refuses it, and one without compression, get the
//! same content as before.

use super::*;

const KEPT: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";

fn kept(threshold: usize) -> CompressionConfig {
    CompressionConfig {
        context_takeover: true,
        ..on(threshold)
    }
}

/// Publications (fan-out) and replies to one connection, interleaved, all compressed (a
/// threshold of 0): the kept client inflates every one with the same window, and the stream
/// costs it fewer bytes than the same stream to a client that refused context takeover.
fn publications_and_replies_decode_with_a_kept_window(io: IoMode) {
    let Some(h) = server(io, kept(0)) else { return };
    let (mut k, head) = Raw::open(&h, "/ws", Some(OFFER));
    assert!(head.contains(KEPT), "{head}");
    assert!(k.window.is_some());
    let (mut shared, head) = Raw::open(
        &h,
        "/ws",
        Some("permessage-deflate; server_no_context_takeover"),
    );
    assert!(head.contains(AGREED), "{head}");
    let (mut plain, _) = Raw::open(&h, "/ws", None);
    for c in [&mut k, &mut shared, &mut plain] {
        subscribe(c, "dm:alice");
    }
    let (mut kept_bytes, mut shared_bytes) = (0, 0);
    for i in 0..40u64 {
        let text = format!(
            "message {i}: are we still on for the meeting tomorrow at ten? {}",
            "the usual room, bring the report ".repeat(i as usize % 5)
        );
        h.publish("dm:alice", "message", &json!({ "text": text }))
            .unwrap();
        let (compressed, got) = k.message();
        assert!(compressed);
        assert_eq!(json(&got)["data"]["text"], text, "publication {i}");
        kept_bytes += k.wire;
        assert_eq!(shared.message().1, got);
        shared_bytes += shared.wire;
        assert_eq!(plain.frame().1, got);
        // Between two publications, a reply to this connection alone, then an error.
        let topic = format!("dm:alice:thread-{i}");
        let req = json!({"event":"subscribe","topic":topic,"id":i});
        k.send(0x81, req.to_string().as_bytes());
        let (compressed, reply) = k.message();
        assert!(compressed);
        assert_eq!(json(&reply), json!({"event":"reply","id":i,"topic":topic}));
        let bad = json!({"event":"subscribe","topic":"a*b","id":i});
        k.send(0x81, bad.to_string().as_bytes());
        let (_, err) = k.message();
        assert_eq!(
            json(&err)["event"],
            "error",
            "{}",
            String::from_utf8_lossy(&err)
        );
    }
    assert!(
        kept_bytes * 2 < shared_bytes,
        "a kept window: {kept_bytes} B for what costs {shared_bytes} B message by message"
    );
    h.shutdown();
}
per_shell!(fn publications_and_replies_decode_with_a_kept_window);

/// The echo route with a kept window: every echo is compressed with it, whatever its size.
fn echoes_decode_with_a_kept_window(io: IoMode) {
    let Some(h) = server(io, kept(1000)) else {
        return;
    };
    let (mut c, head) = Raw::open(&h, "/echo", Some(OFFER));
    assert!(head.contains(KEPT), "{head}");
    for i in 0..20 {
        let text = format!("echo {i}: {}", "hello again ".repeat(i));
        if i % 2 == 0 {
            c.send(0x81, text.as_bytes());
        } else {
            c.send(0xC1, &deflate(text.as_bytes()));
        }
        assert_eq!(c.message(), (true, text.into_bytes()), "echo {i}");
    }
    // Off by default: the same offer gets no context takeover.
    let Some(off) = server(io, on(0)) else { return };
    let (_, head) = Raw::open(&off, "/echo", Some(OFFER));
    assert!(head.contains(AGREED), "{head}");
    h.shutdown();
    off.shutdown();
}
per_shell!(fn echoes_decode_with_a_kept_window);
