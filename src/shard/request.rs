//! A connection's plain HTTP requests (API, probes, metrics, pages): the body's length, the
//! keep-alive decision, the hand-off to the API thread (or the answer here, for a publish the
//! shard serves itself: `fastapi`), and the answer — after which the connection closes, or
//! reads its next request (HTTP/1.1 keep-alive and pipelining: one request at a time, so the
//! answers keep the requests' order).

use bytes::Bytes;

use super::{flag, Phase, ShardState};
use crate::proto::handshake::{HttpError, RequestHead};
use crate::ConnId;

impl ShardState {
    /// Whether the connection stays open after this request's response: the client asks for it,
    /// keep-alive is on, the server is not stopping, and the connection holds (or now takes) a
    /// slot in the connection caps. At the caps the request is still answered, then closed.
    pub(super) fn decide_keep_alive(&mut self, id: ConnId, head: &RequestHead) {
        let hub = self.hub.clone();
        let Some(c) = self.conn_mut(id) else { return };
        c.clear(flag::KEEP_ALIVE);
        if !head.wants_keep_alive()
            || hub.config.http_keepalive_timeout.is_zero()
            || hub.is_stopping()
        {
            return;
        }
        if self.take_permit(id).is_ok() {
            if let Some(c) = self.conn_mut(id) {
                c.set(flag::KEEP_ALIVE);
                if head.version == 0 {
                    c.set(flag::HTTP10);
                } else {
                    c.clear(flag::HTTP10);
                }
            }
        }
    }

    /// Serves a whole request: here when the shard can (a plain publish), else on the API
    /// thread. The connection is in [`Phase::Api`] until the answer.
    pub(super) fn submit_api(&mut self, id: ConnId, head: RequestHead, body: Bytes) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        let peer = c.remote.ip();
        if let Some(json) = self.local_publish(&head, &body, peer) {
            self.answer_here(id, 200, json.as_bytes());
            return;
        }
        if self.local_send(id, &head, &body, peer) || self.local_batch(id, &head, &body, peer) {
            return;
        }
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        use crate::shard::shared::KeepAlive;
        let keep = match (c.has(flag::KEEP_ALIVE), c.has(flag::HTTP10)) {
            (false, _) => KeepAlive::Close,
            (true, true) => KeepAlive::Http10,
            (true, false) => KeepAlive::Http11,
        };
        let job = crate::shard::shared::ApiJob {
            conn: id,
            head,
            body,
            peer: c.remote.ip(),
            keep,
        };
        if !self
            .hub
            .submit_api(crate::shard::shared::ControlJob::Http(job))
        {
            self.http_error(id, &HttpError::new(503, "API unavailable"));
        }
    }

    /// Queues bytes as they are (HTTP responses), bypassing the queue bound.
    pub(super) fn push_raw(&mut self, id: ConnId, bytes: Bytes) {
        let Some(c) = self.conn_mut(id) else { return };
        c.queued += bytes.len();
        c.out.push_back(super::Frame::new(bytes));
        self.mark_dirty(id.slot());
    }

    /// Answers an HTTP error and closes once it is written.
    pub(super) fn http_error(&mut self, id: ConnId, e: &HttpError) {
        let now = self.stamp;
        let Some(c) = self.conn_mut(id) else { return };
        if !matches!(c.phase, Phase::Head | Phase::Body(..) | Phase::Api) {
            return;
        }
        let took = now.since(c.accepted);
        c.phase = Phase::Discard;
        tracing::debug!(peer = %c.remote, status = e.status, reason = %e.message, "HTTP request refused");
        self.stats().handshake(e.status, took);
        self.push_raw(id, Bytes::from(e.response()));
        self.begin_close(id);
    }

    /// Answers the request in flight on `id` with 200 and `json`, served on this shard. Called
    /// while its input is being processed: the caller goes on to the next pipelined request.
    fn answer_here(&mut self, id: ConnId, status: u16, json: &[u8]) {
        if let Some(bytes) = self.json_response(id, status, json) {
            self.answered(id, bytes);
        }
    }

    /// Answers the request in flight on `id` with `status` and `json` later, as a response of
    /// the API thread is (e.g. a durable send, once stored): then reads a pipelined request.
    pub(super) fn answer_json(&mut self, id: ConnId, status: u16, json: &[u8]) {
        if let Some(bytes) = self.json_response(id, status, json) {
            self.http_response(id, bytes);
        }
    }

    /// The response to the request in flight on `id`, its `Connection` header as the
    /// connection continues; `None` when the connection is gone.
    pub(super) fn json_response(&mut self, id: ConnId, status: u16, json: &[u8]) -> Option<Bytes> {
        use crate::shard::shared::KeepAlive;
        let stopping = self.hub.is_stopping();
        let c = self.conn_mut(id)?;
        let keep = match (c.has(flag::KEEP_ALIVE) && !stopping, c.has(flag::HTTP10)) {
            (false, _) => KeepAlive::Close,
            (true, true) => KeepAlive::Http10,
            (true, false) => KeepAlive::Http11,
        };
        let bytes = crate::proto::handshake::response_bytes(
            status,
            "application/json",
            "",
            keep.header(),
            json,
        );
        Some(Bytes::from(bytes))
    }

    /// The API thread's response for `id`: then the connection closes, or, kept alive, reads
    /// the next request — perhaps one that is already here (pipelined).
    pub(super) fn http_response(&mut self, id: ConnId, bytes: Bytes) {
        if !self.answered(id, bytes) {
            return;
        }
        let Some(c) = self.conn_mut(id) else { return };
        let pipelined = c.bufs().map(|b| std::mem::take(&mut b.inbuf));
        let pipelined = pipelined.unwrap_or_default();
        if !pipelined.is_empty() {
            self.resume_input(id.slot(), pipelined);
        }
    }

    /// Queues the response to the request in flight on `id`, then closes the connection or
    /// readies it for the next request; true when it stays open for one.
    fn answered(&mut self, id: ConnId, bytes: Bytes) -> bool {
        let now = self.stamp;
        let stopping = self.hub.is_stopping();
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        if !matches!(c.phase, Phase::Api) {
            return false;
        }
        let keep = c.has(flag::KEEP_ALIVE) && !stopping;
        c.clear(flag::KEEP_ALIVE);
        c.phase = Phase::Discard;
        let took = now.since(c.accepted);
        let status = bytes
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
            .unwrap_or(0);
        if status >= 400 {
            self.stats().handshake(status, took);
        }
        if !keep {
            self.push_raw(id, bytes);
            self.begin_close(id);
            return false;
        }
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        c.phase = Phase::Head;
        // FRESH: the queue's buffer goes once the response is out, so an idle kept-alive
        // connection holds no more than an idle WebSocket.
        c.set(flag::KEPT | flag::FRESH);
        c.accepted = now;
        c.last_seen = now;
        self.push_raw(id, bytes);
        true
    }

    /// Processes input that waited in `inbuf` (the phase changed), keeping what is left.
    fn resume_input(&mut self, slot: u32, mut buf: Vec<u8>) {
        let used = self.process(slot, &mut buf);
        buf.drain(..used);
        if let Some(c) = self.conns.get_mut(slot as usize) {
            if let Some(b) = c.bufs().filter(|b| !buf.is_empty() && b.inbuf.is_empty()) {
                b.inbuf = buf;
            }
        }
    }
}

/// The body length an API request announces (`Content-Length`, validated with the head);
/// refuses what the API cannot take.
pub(super) fn body_len(head: &RequestHead, max: usize) -> Result<usize, HttpError> {
    if head.header("Transfer-Encoding").is_some() {
        return Err(HttpError::new(411, "send the body with Content-Length"));
    }
    match head.content_length {
        Some(n) if n > max => Err(HttpError::new(413, "body larger than max_message_size")),
        n => Ok(n.unwrap_or(0)),
    }
}
