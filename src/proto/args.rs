//! Argument lists in the one model (the `spread` convention), sans-IO.
//!
//! Socket.IO events and acks carry any number of arguments (`emit(name, a, b)`, Node-style
//! `ack(err, result)`); an envelope carries one `data`. An envelope with `"spread":true` says
//! its `data` is a JSON array holding the *argument list*, not one argument:
//!
//! - `{"data":[1,"2"],"spread":true}` — two arguments, `1` and `"2"`;
//! - `{"data":[1,"2"]}` — one argument, the array `[1,"2"]`;
//! - no `data` — no argument.
//!
//! A client's multi-argument emit arrives that way, and a handler answers an ack or emits to its
//! own connection with several arguments by sending such an envelope (the encoders below). On
//! `/ws` the envelope goes out as it is; on Socket.IO the arguments are spread into the packet.
//! Publications stay one `data` (their frames are encoded once and shared).

use bytes::{BufMut, Bytes};
use serde_json::value::RawValue;

use super::envelope::{open_publication, open_reply, FrameBuilder};

/// Why `data` marked as an argument list is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("\"spread\" data must be an array of arguments")]
pub struct NotAList;

/// The arguments an envelope's `data` stands for: the elements of the array when `spread`,
/// else `data` itself as the only argument (none without `data`).
pub fn split(data: Option<&RawValue>, spread: bool) -> Result<Vec<&RawValue>, NotAList> {
    match (data, spread) {
        (None, _) => Ok(Vec::new()),
        (Some(d), false) => Ok(vec![d]),
        (Some(d), true) => serde_json::from_str(d.get()).map_err(|_| NotAList),
    }
}

/// The text between the brackets of a JSON array (`" 1, 2 "` for `[ 1, 2 ]`, trimmed), `None`
/// when `json` is not an array. Joined after other items with a comma it spreads the array's
/// elements without parsing them.
pub fn inner(json: &str) -> Option<&str> {
    let t = json.trim();
    let t = t.strip_prefix('[')?.strip_suffix(']')?;
    Some(t.trim())
}

/// Writes `[a,b,...]`.
fn put_list(out: &mut impl BufMut, args: &[&RawValue]) {
    out.put_u8(b'[');
    for (n, a) in args.iter().enumerate() {
        if n > 0 {
            out.put_u8(b',');
        }
        out.put_slice(a.get().as_bytes());
    }
    out.put_u8(b']');
}

fn list_len(args: &[&RawValue]) -> usize {
    args.iter().map(|a| a.get().len() + 1).sum::<usize>() + 2
}

/// Encodes `{"topic":T,"event":E,"data":[args],"spread":true}` as a complete text frame: an
/// event with several arguments for one connection (`emit(E, ...args)` on Socket.IO).
pub fn publication(topic: &str, event: &str, args: &[&RawValue]) -> Bytes {
    let mut f = FrameBuilder::with_capacity(topic.len() + event.len() + list_len(args) + 48);
    let b = f.payload();
    open_publication(b, topic, event);
    b.put_slice(b",\"data\":");
    put_list(b, args);
    b.put_slice(b",\"spread\":true}");
    f.finish(1)
}

/// Encodes `{"event":"reply","id":N,"topic":T,"data":[args],"spread":true}` as a complete text
/// frame: a reply with several arguments (`ack(...args)` on Socket.IO).
pub fn reply(id: u64, topic: &str, args: &[&RawValue]) -> Bytes {
    let mut f = FrameBuilder::with_capacity(topic.len() + list_len(args) + 64);
    let b = f.payload();
    open_reply(b, id, topic);
    b.put_slice(b",\"data\":");
    put_list(b, args);
    b.put_slice(b",\"spread\":true}");
    f.finish(1)
}

/// The JSON text `[args]` (a client's event arguments as one array).
pub fn list(args: &[&RawValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list_len(args));
    put_list(&mut out, args);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envelope;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).expect("json")
    }

    fn texts(v: &[&RawValue]) -> Vec<String> {
        v.iter().map(|r| r.get().to_owned()).collect()
    }

    #[test]
    fn spread_data_is_the_argument_list_and_plain_data_one_argument() {
        let arr = raw(r#"[1,"2",{"3":[true]}]"#);
        assert_eq!(
            texts(&split(Some(arr), true).expect("a list")),
            ["1", "\"2\"", r#"{"3":[true]}"#]
        );
        assert_eq!(texts(&split(Some(arr), false).expect("one")), [arr.get()]);
        assert!(split(None, true).expect("none").is_empty());
        assert!(split(None, false).expect("none").is_empty());
        assert!(split(Some(raw("[]")), true).expect("empty").is_empty());
        assert_eq!(split(Some(raw(r#"{"a":1}"#)), true).err(), Some(NotAList));
        assert_eq!(split(Some(raw("3")), true).err(), Some(NotAList));
    }

    #[test]
    fn inner_spreads_an_array_without_parsing_it() {
        assert_eq!(inner(" [ 1, [2] ] "), Some("1, [2]"));
        assert_eq!(inner("[]"), Some(""));
        assert_eq!(inner("{}"), None);
        assert_eq!(inner("\"[x]\""), None);
    }

    fn payload(frame: &Bytes) -> &[u8] {
        crate::proto::frame::text_payload(frame).expect("a text frame")
    }

    #[test]
    fn encoders_write_envelopes_the_parser_reads_back() {
        let args = [raw("null"), raw(r#"{"ok":true}"#)];
        let f = publication("t\"", "ev", &args);
        let env = envelope::parse(payload(&f)).expect("an envelope");
        assert_eq!((&*env.topic, &*env.event, env.spread), ("t\"", "ev", true));
        let got = split(env.data, env.spread).expect("a list");
        assert_eq!(texts(&got), ["null", r#"{"ok":true}"#]);

        let f = reply(7, "room", &args);
        let text = std::str::from_utf8(payload(&f)).expect("utf8");
        assert_eq!(
            text,
            r#"{"event":"reply","id":7,"topic":"room","data":[null,{"ok":true}],"spread":true}"#
        );
        let f = reply(1, "r", &[]);
        let env = envelope::parse(payload(&f)).expect("an envelope");
        assert!(split(env.data, env.spread).expect("empty").is_empty());
        assert_eq!(list(&args), br#"[null,{"ok":true}]"#);
        assert_eq!(list(&[]), b"[]");
    }
}
