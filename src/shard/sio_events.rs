//! Socket.IO client events turned into the hub's envelopes: the default events `join`, `leave`,
//! `publish` and `rpc`, any other event as a message to the topic named like it, and a client's
//! ACK of a server emit as the acknowledgement of a durable message. Once built, the envelope is
//! dispatched exactly as a `/ws` message is.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ShardState;
use crate::proto::socketio as sio;
use crate::proto::socketio_map::{self as map, request_id};
use crate::ConnId;

/// The argument of the default event `publish`.
#[derive(Deserialize)]
struct Publish<'a> {
    #[serde(borrow)]
    topic: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    exclude_sender: bool,
}

impl ShardState {
    /// A client's ACK of the server emit with ack id `offset`: the durable message at that
    /// offset of its user's inbox is acknowledged.
    pub(super) fn sio_ack(&mut self, id: ConnId, offset: u64) {
        let Some(user) = self.conn(id).and_then(|c| c.user.clone()) else {
            return;
        };
        let topic = format!("{}{user}", crate::policy::security::PRIVATE_PREFIX);
        let data = format!("{{\"offset\":{offset}}}");
        if let Ok(d) = serde_json::from_str::<&RawValue>(&data) {
            self.client_ack(id, &topic, None, Some(d));
        }
    }

    /// A client event, as the envelope a `/ws` client would send: the default events `join`,
    /// `leave` and `publish`, else a message to the topic named like the event.
    pub(super) fn sio_event(&mut self, id: ConnId, nsp: usize, ack: Option<u64>, data: &RawValue) {
        let ev = match sio::event(data) {
            Ok(e) => e,
            Err(e) => return self.sio_fail(id, e.code()),
        };
        let rid = ack.map(|a| request_id(nsp, a));
        let room = || {
            ev.args
                .first()
                .and_then(|a| serde_json::from_str::<std::borrow::Cow<'_, str>>(a.get()).ok())
        };
        let env = match &*ev.name {
            "join" | "leave" => {
                let Some(room) = room() else {
                    return self.sio_bad(id, rid, "join/leave take the room name");
                };
                let event = if ev.name == "join" {
                    "subscribe"
                } else {
                    "unsubscribe"
                };
                control(&room, event, None, rid, false)
            }
            // `emit('rpc', {method, data}, ack)` when an RPC proxy serves the method.
            "rpc" => match self.sio_rpc(&ev.args) {
                Some((method, data)) => control(&method, "rpc", data, rid, false),
                None => map::envelope_from_event("rpc", &ev.args, rid),
            },
            "publish" => {
                let p = ev
                    .args
                    .first()
                    .and_then(|a| serde_json::from_str::<Publish<'_>>(a.get()).ok());
                let Some(p) = p else {
                    return self.sio_bad(id, rid, "publish takes {topic, event, data}");
                };
                let event = p.event.as_deref().unwrap_or("message");
                control(&p.topic, event, p.data, rid, p.exclude_sender)
            }
            name => map::envelope_from_event(name, &ev.args, rid),
        };
        // Rooms joined or left while handling it are this namespace's.
        self.sio_in_nsp(id, Some(nsp), |st| st.dispatch(id, &env));
    }

    fn sio_bad(&mut self, id: ConnId, rid: Option<u64>, msg: &str) {
        self.error(id, rid, "", crate::ErrorCode::BadRequest, msg);
    }
}

/// An envelope `{"topic","event"[,"data"][,"id"][,"exclude_sender"]}`.
pub(super) fn control(
    topic: &str,
    event: &str,
    data: Option<&RawValue>,
    id: Option<u64>,
    exclude: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(topic.len() + event.len() + 64);
    out.extend_from_slice(b"{\"topic\":");
    sio::push_json_string(topic, &mut out);
    out.extend_from_slice(b",\"event\":");
    sio::push_json_string(event, &mut out);
    if let Some(d) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(d.get().as_bytes());
    }
    if let Some(id) = id {
        out.extend_from_slice(format!(",\"id\":{id}").as_bytes());
    }
    if exclude {
        out.extend_from_slice(b",\"exclude_sender\":true");
    }
    out.push(b'}');
    out
}
