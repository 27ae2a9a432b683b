//! Protocol v2 on a shard: subscriptions to topics with history (held until the store answers),
//! history and presence requests, join/leave, durable user messages (delivery, acks, retries),
//! server-side subscriptions, and what happens when a connection arrives.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::hooks::{guarded, SubscribeInfo};
use super::inbox::Target;
use super::jobs::{HistoryTo, Since, StoreJob};
use super::shared::ControlJob;
use super::ShardState;
use crate::proto::envelope;
use crate::proto::error::ErrorCode;
use crate::ConnId;

#[derive(Deserialize)]
struct SinceIn {
    epoch: String,
    offset: u64,
}

impl From<SinceIn> for Since {
    fn from(s: SinceIn) -> Self {
        Since {
            epoch: s.epoch.into(),
            offset: s.offset,
        }
    }
}

#[derive(Deserialize, Default)]
struct SubscribeData {
    #[serde(default)]
    since: Option<SinceIn>,
    /// `"fossil"`: publications as deltas against the previous one (see `shard::delta`).
    #[serde(default)]
    delta: Option<String>,
}

#[derive(Deserialize, Default)]
struct HistoryData {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    since: Option<SinceIn>,
    /// The rest of a paged answer (the `next` of a reply with `more`).
    #[serde(default)]
    until: Option<u64>,
}

/// Reads `data` as `T`; absent (or `null`) data is `T::default()`.
pub(super) fn data_as<'a, T: Deserialize<'a> + Default>(
    data: Option<&'a RawValue>,
) -> Result<T, String> {
    match data.map(RawValue::get) {
        None | Some("null") => Ok(T::default()),
        Some(raw) => serde_json::from_str(raw).map_err(|e| {
            format!(
                "invalid data: {}",
                crate::proto::error::shorten(&e.to_string())
            )
        }),
    }
}

/// Fuzzing: parses `payload` as a client envelope and its `data` as the v2 request its event
/// names, the way the shard does; every error frame it can cause stays within its bound.
pub(crate) fn fuzz_v2_request(payload: &[u8]) {
    let bound =
        2 * crate::proto::pattern::MAX_TOPIC_LEN + crate::proto::error::MAX_ERROR_MESSAGE + 256;
    let Ok(e) = envelope::parse(payload) else {
        return;
    };
    let refused = |m: &str| {
        let f = envelope::error(e.id, &e.topic, ErrorCode::BadRequest, m);
        assert!(f.len() <= bound, "error frame of {} bytes", f.len());
    };
    match &*e.event {
        "subscribe" => match data_as::<SubscribeData>(e.data) {
            Ok(d) => {
                if let Some(s) = d.since {
                    let _ = Since::from(s);
                }
            }
            Err(m) => refused(&m),
        },
        "history" => match data_as::<HistoryData>(e.data) {
            Ok(d) => {
                let _ = (d.limit, d.since.map(Since::from));
            }
            Err(m) => refused(&m),
        },
        "ack" => {
            let ok = e
                .data
                .map(|d| serde_json::from_str::<super::durable::AckData>(d.get()));
            if !matches!(ok, Some(Ok(_))) {
                refused("ack needs data {\"offset\": N}");
            }
        }
        _ => {}
    }
    if let Err(err) = crate::proto::pattern::validate_topic(&e.topic) {
        refused(&err.to_string());
    }
}

impl ShardState {
    /// `subscribe`, with protocol v2's history position and `since` recovery.
    pub(super) fn client_subscribe(
        &mut self,
        id: ConnId,
        topic: &str,
        req: Option<u64>,
        data: Option<&RawValue>,
    ) {
        let (since, delta) = match data_as::<SubscribeData>(data) {
            Ok(d) => (d.since, d.delta),
            Err(m) => return self.error(id, req, topic, ErrorCode::BadRequest, &m),
        };
        let exact = !topic.ends_with('*');
        let history = self
            .hub
            .namespaces
            .get(topic)
            .is_some_and(|n| n.has_history());
        if let Some((code, msg)) = super::delta::refusal(delta.as_deref(), exact, history) {
            return self.error(id, req, topic, code, msg);
        }
        if since.is_some() {
            let refusal = if !exact {
                Some((
                    ErrorCode::BadRequest,
                    "since needs an exact topic, not a pattern",
                ))
            } else if !history {
                Some((ErrorCode::NotAvailable, "this topic keeps no history"))
            } else if req.is_none() {
                Some((
                    ErrorCode::BadRequest,
                    "since needs a request id (the reply carries the publications)",
                ))
            } else {
                None
            };
            if let Some((code, msg)) = refusal {
                return self.error(id, req, topic, code, msg);
            }
        }
        if let Some(hook) = self.hub.hooks.on_subscribe.clone() {
            let Some(c) = self.conn_mut(id) else { return };
            let user = c.user.clone();
            let client = self.hub.client_id(id);
            let info = SubscribeInfo {
                client: &client,
                user: user.as_deref(),
                topic,
            };
            if let Err(e) = guarded(|| hook(&info)) {
                return self.error(id, req, topic, e.code, &e.message);
            }
        }
        let fresh = !self
            .conn_mut(id)
            .is_some_and(|c| c.subs.iter().any(|s| &**s == topic));
        let token = match self.subscribe(id, topic) {
            Ok(t) => t,
            Err(e) => return self.error(id, req, topic, e.code, &e.message),
        };
        if fresh && exact {
            self.joined(id, topic);
        }
        match delta {
            Some(_) => self.delta_subscribe(id, topic),
            None => self.delta_unsubscribe(id, topic),
        }
        if history && exact {
            self.watch_stream(topic);
        }
        if history && exact && (req.is_some() || since.is_some()) {
            // Publications of this topic stored before the store answers are covered by the
            // answer (position or recovery): hold them back from this connection until then.
            // A plain subscribe of a connection already subscribed holds nothing back (its
            // answer is a position, which the live stream has reached when it arrives), so its
            // answer must not end the hold of another subscribe still waiting for the store.
            let t: Arc<str> = topic.into();
            let held = fresh || since.is_some();
            if held {
                self.hold(id, t.clone());
            }
            let job = StoreJob::Subscribe {
                topic: t,
                conn: id,
                rid: req,
                since: since.map(Since::from),
                held,
            };
            match token.and_then(|k| self.pending.get_mut(&k)) {
                Some(p) => p.then.push(job),
                None => self.submit_held(job),
            }
            return;
        }
        match token {
            Some(token) => {
                if let (Some(rid), Some(p)) = (req, self.pending.get_mut(&token)) {
                    p.waiters.push((id, rid, topic.into()));
                }
            }
            None => {
                if let Some(rid) = req {
                    self.enqueue(id, envelope::reply(rid, topic, None));
                }
            }
        }
    }

    /// Sends a held subscribe to the store; on failure releases the hold with an error.
    pub(super) fn submit_held(&mut self, job: StoreJob) {
        let StoreJob::Subscribe {
            topic,
            conn,
            rid,
            held,
            ..
        } = &job
        else {
            let _ = self.submit_history(job, false);
            return;
        };
        let (topic, conn, rid, held) = (topic.clone(), *conn, *rid, *held);
        if let Err(e) = self.submit_history(job, false) {
            if held {
                self.release(conn, &topic);
            }
            self.error(conn, rid, &topic, e.code, &e.message);
        }
    }

    /// `history`: answered by the store thread.
    pub(super) fn client_history(
        &mut self,
        id: ConnId,
        topic: &str,
        req: Option<u64>,
        data: Option<&RawValue>,
    ) {
        let d = match data_as::<HistoryData>(data) {
            Ok(d) => d,
            Err(m) => return self.error(id, req, topic, ErrorCode::BadRequest, &m),
        };
        let Some(rid) = req else {
            return self.error(
                id,
                req,
                topic,
                ErrorCode::BadRequest,
                "history needs a request id",
            );
        };
        if let Err(e) = crate::proto::pattern::validate_topic(topic) {
            return self.error(id, req, topic, ErrorCode::BadRequest, &e.to_string());
        }
        if self.hub.namespaces.history(topic).is_none() {
            return self.error(
                id,
                req,
                topic,
                ErrorCode::NotAvailable,
                "this topic keeps no history",
            );
        }
        let max = self.hub.config.store.max_recover;
        // The default never exceeds what the server allows.
        let limit = d.limit.unwrap_or(50.min(max));
        if limit > max {
            let msg = format!("limit is at most {max}");
            return self.error(id, req, topic, ErrorCode::TooMany, &msg);
        }
        let job = StoreJob::History {
            topic: topic.into(),
            limit,
            since: d.since.map(Since::from),
            until: d.until,
            to: HistoryTo::Conn(id, rid),
        };
        if let Err(e) = self.submit_history(job, false) {
            self.error(id, req, topic, e.code, &e.message);
        }
    }

    /// `presence` / `presence_stats`: gathered from every shard by the API thread.
    pub(super) fn client_presence(
        &mut self,
        id: ConnId,
        topic: &str,
        req: Option<u64>,
        stats: bool,
    ) {
        if let Err(e) = crate::proto::pattern::validate_topic(topic) {
            return self.error(id, req, topic, ErrorCode::BadRequest, &e.to_string());
        }
        if !self.hub.namespaces.get(topic).is_some_and(|n| n.presence) {
            return self.error(
                id,
                req,
                topic,
                ErrorCode::NotAvailable,
                "presence is not enabled for this topic",
            );
        }
        let job = ControlJob::Presence {
            conn: id,
            rid: req,
            topic: topic.into(),
            stats,
        };
        if !self.hub.submit_api(job) {
            self.error(
                id,
                req,
                topic,
                ErrorCode::Internal,
                "presence is unavailable",
            );
        }
    }

    /// `info`: the connection's client id, user and node.
    pub(super) fn client_info(&mut self, id: ConnId, topic: &str, req: Option<u64>) {
        if topic.len() > crate::proto::pattern::MAX_TOPIC_LEN {
            let msg = format!(
                "topic is longer than {} bytes",
                crate::proto::pattern::MAX_TOPIC_LEN
            );
            return self.error(id, req, topic, ErrorCode::BadRequest, &msg);
        }
        let Some(rid) = req else { return };
        let Some(c) = self.conn_mut(id) else { return };
        let user = c.user.clone();
        let body = serde_json::json!({
            "client": self.hub.client_id(id),
            "user": user.as_deref().unwrap_or(""),
            "node": &*self.hub.cluster.node,
        })
        .to_string();
        self.enqueue(id, envelope::reply(rid, topic, Some(body.as_bytes())));
    }

    /// `/api/v1/subscribe` and `/unsubscribe`: silently, for every matching local connection.
    /// Returns the connections changed and those refused, with the reason (client id, why).
    pub(super) fn server_subscription(
        &mut self,
        target: &Target,
        topic: &str,
        add: bool,
    ) -> (usize, Vec<(String, String)>) {
        let ids: Vec<ConnId> = match target {
            Target::User(u) => self.users.get(u).cloned().unwrap_or_default(),
            Target::Client(c) if c.shard() == self.index => vec![*c],
            Target::Client(_) => Vec::new(),
        };
        let mut n = 0;
        let mut refused = Vec::new();
        for id in ids {
            let Some(c) = self.conn_mut(id) else { continue };
            if c.closing.is_some() {
                continue;
            }
            let had = c.subs.iter().any(|s| &**s == topic);
            if add {
                match self.subscribe(id, topic) {
                    Ok(_) => {
                        n += 1;
                        if !had {
                            self.join_if_announced(id, topic);
                        }
                    }
                    Err(e) => refused.push((self.hub.client_id(id).to_string(), e.message)),
                }
            } else if had {
                self.unsubscribe(id, topic);
                n += 1;
            }
        }
        (n, refused)
    }

    /// A WebSocket connection was accepted: server-side topics (JWT `topics` claim,
    /// `on_connect`), then its user's unacknowledged durable messages.
    pub(super) fn connected(&mut self, id: ConnId, topics: &[String]) {
        for t in topics {
            match self.subscribe(id, t) {
                Ok(_) => self.join_if_announced(id, t),
                Err(e) => {
                    tracing::debug!(conn = %id, topic = t.as_str(), error = %e.message, "server-side subscription refused")
                }
            }
        }
        // Durable messages: Socket.IO clients answer them as emits with an ack (bare Engine.IO
        // clients have no ack: they get none).
        let Some(user) = self
            .conn_mut(id)
            .filter(|c| !c.eio_bare())
            .and_then(|c| c.user.clone())
        else {
            return;
        };
        if self.hub.links.store.is_none() {
            return;
        }
        self.start_sync(id, user);
    }

    /// Forgets a removed connection's holds and metadata.
    pub(super) fn forget(&mut self, id: ConnId) {
        self.held.remove(&id);
        self.meta.remove(&id);
        // Before the Socket.IO state goes: a polling session's is in it.
        self.poll_forget(id);
        self.sio.remove(&id);
        self.deflater.forget(id.raw());
        self.cancel_sync(id);
        self.deltas.retain(|_, t| t.forget(id));
        self.forget_proxied(id);
    }
}
