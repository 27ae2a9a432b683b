//! Server-Sent Events rendering: SSE connections share the WebSocket fan-out path (the same
//! encoded-once frames in the same queues); their writer turns each frame into an event here.

/// Appends the SSE form of a server frame (WebSocket header + JSON payload) to `out`: text frames
/// become `data:` events (one `data:` line per payload line), pings become heartbeat comments,
/// anything else is dropped.
pub(crate) fn render(frame: &[u8], out: &mut Vec<u8>) {
    let Some((opcode, payload)) = split(frame) else {
        return;
    };
    match opcode {
        1 => {
            for line in payload.split(|b| *b == b'\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
                out.push(b'\n');
            }
            out.push(b'\n');
        }
        9 => out.extend_from_slice(b": heartbeat\n\n"),
        _ => {}
    }
}

/// Opcode and payload of an unmasked frame written by this server.
fn split(frame: &[u8]) -> Option<(u8, &[u8])> {
    let opcode = frame.first()? & 0x0f;
    let start = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(start..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envelope;

    #[test]
    fn renders_events_heartbeats_and_multiline_data() {
        let mut out = Vec::new();
        render(&envelope::publication("t", "e", Some(b"1")), &mut out);
        render(&envelope::raw_frame(9, b""), &mut out);
        render(&envelope::publication("t", "e", Some(b"[1,\n2]")), &mut out);
        render(&envelope::close_frame(1001, "bye"), &mut out);
        let big = "x".repeat(70_000);
        render(
            &envelope::publication("t", "e", Some(format!("\"{big}\"").as_bytes())),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        let expected = format!(
            "data: {{\"topic\":\"t\",\"event\":\"e\",\"data\":1}}\n\n: heartbeat\n\ndata: {{\"topic\":\"t\",\"event\":\"e\",\"data\":[1,\ndata: 2]}}\n\ndata: {{\"topic\":\"t\",\"event\":\"e\",\"data\":\"{big}\"}}\n\n"
        );
        assert_eq!(text, expected);
    }
}
