//! Routing a complete request head: the API and pages, WebSocket upgrades (with the connect hook
//! and connection caps) and SSE streams.

use bytes::Bytes;

use super::{flag, ConnKind, Phase, ShardState};
use crate::config::proxy::ProxyKind;
use crate::policy::guard::Admitted;
use crate::proto::deflate;
use crate::proto::handshake::{self as http, HttpError, RequestHead};
use crate::proto::msgpack;
use crate::ConnId;

/// The paths served by the API thread.
pub(crate) fn is_api_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/api/")
}

impl ShardState {
    /// Routes a complete request head.
    pub(super) fn route(&mut self, id: ConnId, head: RequestHead) {
        if let Err(e) = self.try_route(id, head) {
            if matches!(e.status, 401 | 403) {
                let peer = self.conn_mut(id).map(|c| c.remote);
                tracing::info!(?peer, status = e.status, reason = %e.message, "upgrade refused");
            }
            self.http_error(id, &e);
        }
    }

    fn try_route(&mut self, id: ConnId, head: RequestHead) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let cfg = &hub.config;
        if is_api_path(&head.path) || cfg.serves_ui(&head.path) {
            let need = super::request::body_len(&head, cfg.max_message_size)?;
            self.decide_keep_alive(id, &head);
            let Some(c) = self.conn_mut(id) else {
                return Ok(());
            };
            if need == 0 {
                c.phase = Phase::Api;
                self.submit_api(id, head, Bytes::new());
            } else {
                c.phase = Phase::Body(Box::new((head, need)));
            }
            return Ok(());
        }
        if hub.is_stopping() {
            return Err(HttpError::new(503, "server is shutting down"));
        }
        let kind = if head.path == cfg.ws_path {
            ConnKind::PubSub
        } else if cfg.echo_path.as_deref() == Some(head.path.as_str()) {
            ConnKind::Echo
        } else if head.path == "/sse" {
            return self.route_sse(id, &head);
        } else if self.is_sio_path(&head.path) {
            return self.route_sio(id, &head);
        } else {
            return Err(HttpError::new(404, format!("no route for {}", head.path)));
        };
        let mut response = http::accept_upgrade(&head)?;
        let deflate = cfg
            .compression
            .enabled
            .then(|| {
                let offers = head.header_values("Sec-WebSocket-Extensions");
                deflate::negotiate(
                    offers,
                    cfg.compression.context_takeover,
                    cfg.compression.window,
                )
            })
            .flatten();
        if let Some(d) = &deflate {
            d.add_to(&mut response);
        }
        let packed = kind == ConnKind::PubSub
            && msgpack::offered(head.header_values("Sec-WebSocket-Protocol"));
        if packed {
            msgpack::add_to(&mut response);
        }
        let mut admitted = cfg.guard.admit(&head)?;
        if kind == ConnKind::PubSub {
            let request = (head.path.as_str(), head.query.as_deref(), None);
            self.connect_hook(id, request, &mut admitted)?;
        }
        self.take_permit(id)?;
        let topics = std::mem::take(&mut admitted.topics);
        self.upgrade(id, Phase::Ws(kind), admitted);
        if let (Some(d), Some(c)) = (deflate, self.conn_mut(id)) {
            c.set(u32::from(d.code()) << flag::DEFLATE_SHIFT);
            if d.takeover {
                c.set(flag::DEFLATE_KEPT);
            }
        }
        if let Some(c) = self.conn_mut(id).filter(|_| packed) {
            c.set(flag::MSGPACK);
        }
        self.push_raw(id, Bytes::from(response));
        if kind == ConnKind::PubSub {
            match self.proxy_for(ProxyKind::Connect, "") {
                // Its messages are held until the backend answers (see `proxied`).
                Some(ep) => self.connect_proxy(id, &head, ep, topics, false),
                None => self.connected(id, &topics),
            }
        }
        if let Some(c) = self.conn_mut(id) {
            let user = c.user.as_deref().unwrap_or("-");
            tracing::debug!(conn = %id, peer = %c.remote, user, "connected");
        }
        Ok(())
    }

    fn route_sse(&mut self, id: ConnId, head: &RequestHead) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let topics = http::sse_topics(head, hub.config.max_subscriptions)?;
        let admitted = hub.config.guard.admit(head)?;
        for t in &topics {
            admitted
                .permissions
                .can_subscribe(admitted.user.as_deref(), t)
                .map_err(|e| HttpError::new(403, format!("topic '{t}': {e}")))?;
        }
        self.take_permit(id)?;
        self.upgrade(id, Phase::Sse, admitted);
        let response = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n";
        self.push_raw(id, Bytes::from_static(response.as_bytes()));
        match self.proxy_for(ProxyKind::Connect, "") {
            Some(ep) => self.connect_proxy(id, head, ep, topics, true),
            None => self.sse_open(id, topics, None),
        }
        Ok(())
    }

    /// Asks the connect proxy about a connection just upgraded (WebSocket) or opened (SSE).
    fn connect_proxy(
        &mut self,
        id: ConnId,
        head: &RequestHead,
        ep: std::sync::Arc<crate::config::proxy::ProxyEndpoint>,
        topics: Vec<String>,
        sse: bool,
    ) {
        let Some(c) = self.conn(id) else { return };
        let client = self.hub.client_id(id);
        let mut headers = Vec::new();
        let mut map = serde_json::Map::new();
        for name in &ep.headers {
            if let Some(v) = head.header(name) {
                headers.push((name.clone(), v.to_string()));
                map.insert(name.clone(), v.into());
            }
        }
        let body = crate::proto::proxy::ConnectRequest {
            client: &client,
            transport: if sse { "sse" } else { "websocket" },
            remote: c.remote.to_string(),
            path: &head.path,
            query: head.query.as_deref(),
            user: c.user.as_deref(),
            headers: map,
            data: crate::proto::proxy::connect_data(head.query.as_deref()),
            namespace: None,
        }
        .to_vec();
        let via = if sse {
            super::proxy::Via::Sse
        } else {
            super::proxy::Via::Ws
        };
        let step = super::proxy::Step::Connect { topics, via };
        self.proxy_wait(id, ProxyKind::Connect, ep, step, body, headers);
    }

    /// Subscribes an SSE stream to its topics (checked already) and starts it.
    pub(super) fn sse_start(&mut self, id: ConnId, topics: &[String]) {
        let mut tokens = Vec::new();
        for t in topics {
            match self.subscribe(id, t) {
                Ok(token) => tokens.extend(token),
                Err(e) => tracing::debug!(conn = %id, error = %e, "SSE subscription refused"),
            }
        }
        // As with a WebSocket subscribe reply: the stream starts once every shard knows.
        let mut held = 0;
        for token in tokens {
            if let Some(p) = self.pending.get_mut(&token) {
                p.held.push(id);
                held += 1;
            }
        }
        if let Some(c) = self.conn_mut(id) {
            c.hold = held;
            tracing::debug!(conn = %id, peer = %c.remote, ?topics, "SSE stream opened");
        }
    }

    /// The connection caps apply to WebSocket and SSE clients only: health, metrics and the
    /// API keep answering at the cap.
    /// Runs `on_connect`: a refusal is a 403 with the hook's message; an outcome may replace
    /// the user, add topics and attach metadata.
    pub(super) fn connect_hook(
        &mut self,
        id: ConnId,
        (path, query, auth): (&str, Option<&str>, Option<&str>),
        admitted: &mut Admitted,
    ) -> Result<(), HttpError> {
        let Some(hook) = self.hub.hooks.on_connect.clone() else {
            return Ok(());
        };
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let remote = c.remote.addr();
        let client = self.hub.client_id(id);
        let info = super::hooks::ConnectInfo {
            client: &client,
            user: admitted.user.as_deref(),
            remote,
            path,
            query,
            auth,
        };
        let outcome = super::hooks::guarded(|| hook(&info))
            .map_err(|e| HttpError::new(403, format!("refused: {}", e.message)))?;
        if let Some(u) = outcome.user {
            admitted.user = Some(u.into());
        }
        admitted.topics.extend(outcome.topics);
        if let Some(meta) = outcome.meta {
            self.meta.insert(id, meta.to_string().into());
        }
        Ok(())
    }

    pub(super) fn take_permit(&mut self, id: ConnId) -> Result<(), HttpError> {
        let hub = self.hub.clone();
        let Some(c) = self.conn_mut(id) else {
            return Ok(());
        };
        let Some(limits) = &hub.config.guard.conn_limits else {
            return Ok(());
        };
        if c.has(flag::CAPPED) {
            // Taken already, by a kept-alive request before this upgrade.
            return Ok(());
        }
        use crate::policy::ratelimit::Counted;
        // Counted as a permit would be, kept as two bits (released in `release_if_done`).
        match limits.count(c.remote.ip()) {
            Ok(Counted::Total) => c.set(flag::CAPPED),
            Ok(Counted::TotalAndIp) => c.set(flag::CAPPED | flag::CAPPED_IP),
            Err(e) => return Err(HttpError::new(e.http_status(), e.to_string())),
        }
        Ok(())
    }
}
