//! The `/socket.io/` endpoint's input: Engine.IO packets and payloads (long-polling and
//! WebSocket), Socket.IO packets with binary attachments, and connection state recovery.

use super::FRAME_MAX;

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
