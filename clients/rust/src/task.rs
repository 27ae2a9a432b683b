//! The connection task: owns the socket, connects and reconnects with backoff, resubscribes and
//! recovers, matches replies to requests, routes publications and durable messages.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::codec::{self, Incoming, Kind};
use crate::command::{next_id, Command, Handle, Reply};
use crate::error::Error;
use crate::messages::UserMessage;
use crate::options::Options;
use crate::router::{null, AfterReply, Inbox, Router, Sub};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the connection stands; watch it with [`Client::state`](crate::Client::state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first connection is being made.
    Connecting,
    /// Connected, and every subscription is active (re-established after a reconnect).
    Connected,
    /// The connection dropped; reconnecting with backoff (or resubscribing).
    Reconnecting,
    /// [`Client::close`](crate::Client::close) was called or every `Client` was dropped.
    Closed,
}

enum Pending {
    Reply(Reply),
    /// A subscribe request of this topic.
    Subscribe(String),
}

pub(crate) struct Task {
    pub(crate) url: String,
    pub(crate) opts: Arc<Options>,
    pub(crate) cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) ids: Arc<AtomicU64>,
    pub(crate) messages: mpsc::UnboundedSender<UserMessage>,
    pub(crate) handle: Handle,
    pub(crate) router: Router,
    pending: HashMap<u64, Pending>,
    /// Requests made while disconnected, sent after the resubscriptions.
    queued: Vec<(u64, String)>,
    /// Frames to write on the open connection.
    out: Vec<String>,
    online: bool,
    /// Resubscribe requests of this connection not answered yet.
    awaiting: HashSet<u64>,
    closing: Option<oneshot::Sender<()>>,
}

fn utf8(b: Vec<u8>) -> String {
    String::from_utf8(b).expect("the codec writes UTF-8")
}

async fn open(url: String, opts: Arc<Options>) -> Result<Ws, Error> {
    let token = opts.current_token().await.map_err(Error::Token)?;
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Connect(e.to_string()))?;
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| Error::Token("the token is not a valid header value".into()))?;
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    if opts.format == crate::Format::MessagePack {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static(
                crate::msgpack::SUBPROTOCOL,
            ),
        );
    }
    let connect = tokio_tungstenite::connect_async_with_config(req, None, true);
    match tokio::time::timeout(opts.request_timeout, connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(Error::Connect(e.to_string())),
        Err(_) => Err(Error::Connect("handshake timed out".into())),
    }
}

impl Task {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        url: String,
        opts: Arc<Options>,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        state: watch::Sender<ConnectionState>,
        ids: Arc<AtomicU64>,
        messages: mpsc::UnboundedSender<UserMessage>,
        handle: Handle,
    ) -> Self {
        Task {
            url,
            opts,
            cmd_rx,
            state,
            ids,
            messages,
            handle,
            router: Router::default(),
            pending: HashMap::new(),
            queued: Vec::new(),
            out: Vec::new(),
            online: false,
            awaiting: HashSet::new(),
            closing: None,
        }
    }

    /// Connects, then keeps the connection up until closed. `first` learns how the first attempt
    /// went; when it fails the task ends.
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<(), Error>>) {
        let mut first = Some(first);
        let mut attempt: u32 = 0;
        loop {
            if first.is_none() {
                let delay = self.opts.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                if self.offline(tokio::time::sleep(delay)).await.is_none() {
                    break;
                }
            }
            let opening = open(self.url.clone(), self.opts.clone());
            let Some(outcome) = self.offline(opening).await else {
                break;
            };
            match outcome {
                Ok(ws) => {
                    if let Some(f) = first.take() {
                        let _ = f.send(Ok(()));
                    }
                    attempt = 0;
                    let flow = self.online(ws).await;
                    self.disconnected();
                    if flow.is_break() {
                        break;
                    }
                }
                Err(e) => {
                    if let Some(f) = first.take() {
                        let _ = f.send(Err(e));
                        break;
                    }
                    tracing::debug!(error = %e, attempt, "ringhub: reconnect failed");
                }
            }
        }
        self.state.send_replace(ConnectionState::Closed);
        for (_, p) in self.pending.drain() {
            if let Pending::Reply(r) = p {
                let _ = r.send(Err(Error::Closed));
            }
        }
        let closing = self.closing.take();
        drop(self); // ends every subscription and the messages receiver
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Runs `fut` while serving commands; `None` when the client is closing.
    async fn offline<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                cmd = self.cmd_rx.recv() => if !self.command(cmd) {
                    return None;
                },
            }
        }
    }

    async fn online(&mut self, mut ws: Ws) -> ControlFlow<()> {
        self.online = true;
        let topics: Vec<String> = self.router.subs.keys().cloned().collect();
        for topic in topics {
            let id = self.send_subscribe(&topic);
            self.awaiting.insert(id);
        }
        for (_, frame) in std::mem::take(&mut self.queued) {
            self.out.push(frame);
        }
        self.mark_connected();
        let deadline = Instant::now() + self.opts.request_timeout;
        let ping = self.opts.ping_interval;
        let mut last_rx = Instant::now();
        let mut pinged = false;
        loop {
            let packed = self.opts.format == crate::Format::MessagePack;
            for frame in self.out.drain(..) {
                let msg = match packed {
                    true => match crate::msgpack::from_json(&frame) {
                        Ok(b) => Message::Binary(b),
                        Err(_) => Message::Text(frame),
                    },
                    false => Message::Text(frame),
                };
                if ws.feed(msg).await.is_err() {
                    return ControlFlow::Continue(());
                }
            }
            if ws.flush().await.is_err() {
                return ControlFlow::Continue(());
            }
            let ping_at = last_rx + if pinged { ping * 2 } else { ping };
            tokio::select! {
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else {
                        return ControlFlow::Continue(());
                    };
                    last_rx = Instant::now();
                    pinged = false;
                    match msg {
                        Message::Text(t) => self.frame(t.as_bytes()),
                        Message::Binary(b) => match crate::msgpack::to_json(&b) {
                            Ok(json) => self.frame(json.as_bytes()),
                            Err(e) => tracing::debug!(error = %e, "ringhub: undecodable binary frame"),
                        },
                        Message::Close(c) => {
                            tracing::debug!(close = ?c, "ringhub: server closed the connection");
                            let _ = ws.flush().await; // the close reply
                            return ControlFlow::Continue(());
                        }
                        _ => {}
                    }
                }
                cmd = self.cmd_rx.recv() => if !self.command(cmd) {
                    let _ = ws.close(None).await;
                    return ControlFlow::Break(());
                },
                _ = tokio::time::sleep_until(ping_at) => {
                    if pinged {
                        tracing::debug!("ringhub: server silent; reconnecting");
                        return ControlFlow::Continue(());
                    }
                    pinged = true;
                    if ws.send(Message::Ping(Vec::new())).await.is_err() {
                        return ControlFlow::Continue(());
                    }
                }
                _ = tokio::time::sleep_until(deadline), if !self.awaiting.is_empty() => {
                    tracing::warn!("ringhub: resubscriptions not answered; reconnecting");
                    return ControlFlow::Continue(());
                }
            }
        }
    }

    fn mark_connected(&mut self) {
        if self.awaiting.is_empty() {
            self.state.send_if_modified(|s| {
                let changed = *s != ConnectionState::Connected;
                *s = ConnectionState::Connected;
                changed
            });
        }
    }

    fn disconnected(&mut self) {
        self.online = false;
        self.out.clear();
        self.awaiting.clear();
        for (_, p) in self.pending.drain() {
            if let Pending::Reply(r) = p {
                let _ = r.send(Err(Error::Disconnected));
            }
        }
        for sub in self.router.subs.values_mut() {
            sub.pending = None;
            sub.pending_since = false;
        }
        self.state.send_replace(ConnectionState::Reconnecting);
    }

    /// Sends a subscribe request for `topic` (with `since` when its position is known).
    fn send_subscribe(&mut self, topic: &str) -> u64 {
        let id = next_id(&self.ids);
        let Some(sub) = self.router.subs.get_mut(topic) else {
            return id;
        };
        let since = if Sub::wildcard(topic) {
            None
        } else {
            sub.since()
        };
        let mut b = Vec::with_capacity(64 + topic.len());
        codec::encode_subscribe_with(&mut b, topic, Some(id), since, sub.delta);
        sub.pending_since = since.is_some();
        sub.pending = Some(id);
        sub.base = None;
        self.pending
            .insert(id, Pending::Subscribe(topic.to_string()));
        self.out.push(utf8(b));
        id
    }

    /// Serves one command; false when the client is closing.
    fn command(&mut self, cmd: Option<Command>) -> bool {
        let Some(cmd) = cmd else {
            return false; // every Client dropped
        };
        match cmd {
            Command::Send { frame, id, reply } => match (id, reply) {
                (Some(id), Some(reply)) => {
                    self.pending.insert(id, Pending::Reply(reply));
                    if self.online {
                        self.out.push(frame);
                    } else {
                        self.queued.push((id, frame));
                    }
                }
                _ if self.online => self.out.push(frame),
                _ => {}
            },
            Command::Cancel(id) => {
                self.pending.remove(&id);
                self.queued.retain(|(i, _)| *i != id);
            }
            Command::Subscribe {
                topic,
                gen,
                since,
                delta,
                events,
                ready,
            } => match self
                .router
                .add(topic.clone(), gen, since, delta, events, ready)
            {
                Err(ready) => {
                    let _ = ready.send(Err(Error::AlreadySubscribed(topic)));
                }
                Ok(()) if self.online => {
                    self.send_subscribe(&topic);
                }
                Ok(()) => {}
            },
            Command::Unsubscribe { topic, gen, reply } => {
                let removed = self.router.remove(&topic, gen);
                let id = match reply {
                    Some((id, reply)) if removed && self.online => {
                        self.pending.insert(id, Pending::Reply(reply));
                        Some(id)
                    }
                    Some((_, reply)) => {
                        let _ = reply.send(Ok(None));
                        return true;
                    }
                    None => None,
                };
                if removed && self.online {
                    let mut b = Vec::with_capacity(64 + topic.len());
                    codec::encode(&mut b, "unsubscribe", &topic, id, None);
                    self.out.push(utf8(b));
                }
            }
            Command::Ack {
                topic,
                offset,
                reply,
            } => {
                self.router.acked(&topic, offset);
                if !self.online {
                    // Recorded: acknowledged again when the server redelivers it.
                    if let Some((_, reply)) = reply {
                        let _ = reply.send(Ok(None));
                    }
                    return true;
                }
                let id = reply.map(|(id, reply)| {
                    self.pending.insert(id, Pending::Reply(reply));
                    id
                });
                let mut b = Vec::with_capacity(64 + topic.len());
                codec::encode_ack(&mut b, &topic, offset, id);
                self.out.push(utf8(b));
            }
            Command::Close(done) => {
                self.closing = Some(done);
                return false;
            }
        }
        true
    }

    /// Handles one text message from the server.
    fn frame(&mut self, bytes: &[u8]) {
        let f = match codec::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "ringhub: undecodable frame ignored");
                return;
            }
        };
        match f.kind() {
            kind @ (Kind::Reply | Kind::Error) => {
                let outcome = if kind == Kind::Reply {
                    Ok(f.data.map(|d| d.to_owned()))
                } else {
                    Err(f.error_body().map_or_else(
                        || Error::server("internal", "malformed error frame"),
                        |b| Error::server(&b.code, &b.message),
                    ))
                };
                let Some(id) = f.id else {
                    if let Err(e) = outcome {
                        tracing::warn!(topic = %f.topic, error = %e, "ringhub: error from server");
                    }
                    return;
                };
                match self.pending.remove(&id) {
                    Some(Pending::Reply(r)) => {
                        let _ = r.send(outcome);
                    }
                    Some(Pending::Subscribe(topic)) => {
                        let was_awaiting = self.awaiting.remove(&id);
                        let after = self.router.subscribe_reply(&topic, id, outcome);
                        if after == AfterReply::ResubscribeWithoutSince {
                            let again = self.send_subscribe(&topic);
                            if was_awaiting {
                                self.awaiting.insert(again);
                            }
                        }
                        self.mark_connected();
                    }
                    None => {}
                }
            }
            Kind::UserMessage => self.user_message(&f),
            Kind::Publication => {
                // A delta that did not apply: recover the publication (and what follows) in
                // full by subscribing again from the last delivered offset.
                for topic in self.router.publication(&f) {
                    self.send_subscribe(&topic);
                }
            }
        }
    }

    fn user_message(&mut self, f: &Incoming<'_>) {
        let Some(offset) = f.offset else {
            for topic in self.router.publication(f) {
                self.send_subscribe(&topic);
            }
            return;
        };
        match self
            .router
            .user_message(&f.topic, f.epoch.as_deref(), offset)
        {
            Inbox::New => {
                let _ = self.messages.send(UserMessage {
                    topic: f.topic.to_string(),
                    event: f.event.to_string(),
                    data: f.data.map_or_else(null, |d| d.to_owned()),
                    offset,
                    handle: self.handle.clone(),
                });
            }
            Inbox::Duplicate => {}
            Inbox::Reack => {
                let mut b = Vec::with_capacity(64 + f.topic.len());
                codec::encode_ack(&mut b, &f.topic, offset, None);
                self.out.push(utf8(b));
            }
        }
    }
}
