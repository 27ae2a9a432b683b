//! One connection's life: HTTP upgrade, the reader (fastwebsockets frames → messages → shard), and
//! the writer (shard queue → batched writes). Generic over the transport, so both shells share it.

use std::convert::Infallible;
use std::future::{poll_fn, ready};
use std::rc::Rc;

use fastwebsockets::{after_handshake_split, Frame, OpCode, Role, WebSocketError};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::envelope;
use crate::http::{self, HttpError};
use crate::shard::{ConnKind, Outbound, Shard};
use crate::stats::ShardStats;
use crate::transport::{shutdown_fd, Accepted, Prefixed, Writer};
use crate::ConnId;

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve<R, W>(shard: Rc<Shard>, acc: Accepted<R, W>)
where
    R: AsyncRead + Unpin + 'static,
    W: Writer,
{
    let Accepted { mut read, mut write, fd, peer } = acc;
    let accepted = std::time::Instant::now();
    let cfg = &shard.hub.config;
    let head = match tokio::time::timeout(cfg.handshake_timeout, http::read_head(&mut read)).await {
        Err(_) => Err(HttpError::new(408, "request head not received in time")),
        Ok(r) => r,
    };
    let route = head.and_then(|(head, rest)| {
        if shard.is_shutting_down() && !crate::api::is_api_path(&head.path) {
            return Err(HttpError::new(503, "server is shutting down"));
        }
        let kind = if head.path == cfg.ws_path {
            Route::Ws(ConnKind::PubSub, http::accept_upgrade(&head)?)
        } else if cfg.echo_path.as_deref() == Some(head.path.as_str()) {
            Route::Ws(ConnKind::Echo, http::accept_upgrade(&head)?)
        } else if head.path == "/sse" {
            Route::Sse(sse_topics(&head)?)
        } else if crate::api::is_api_path(&head.path) {
            Route::Api
        } else {
            return Err(HttpError::new(404, format!("no route for {}", head.path)));
        };
        Ok((kind, head, rest))
    });
    let (route, head, rest) = match route {
        Ok(r) => r,
        Err(e) => {
            shard.stats().handshake(e.status, accepted.elapsed());
            tracing::debug!(%peer, status = e.status, reason = %e.message, "HTTP request refused");
            let _ = write.write_all(e.response()).await;
            shutdown_fd(fd, libc::SHUT_WR);
            return;
        }
    };
    let (kind, response) = match route {
        Route::Ws(kind, response) => (kind, response),
        Route::Api => {
            let mut reader = Prefixed::new(Bytes::new(), read);
            let resp = crate::api::handle(&shard.hub, &head, rest, &mut reader).await;
            if resp.status >= 400 {
                shard.stats().handshake(resp.status, accepted.elapsed());
            }
            let _ = write.write_all(resp.into_bytes()).await;
            shutdown_fd(fd, libc::SHUT_WR);
            return;
        }
        Route::Sse(topics) => return serve_sse(shard, Accepted { read, write, fd, peer }, topics, accepted).await,
    };
    if write.write_all(response).await.0.is_err() {
        return;
    }
    shard.stats().handshake(101, accepted.elapsed());
    let id = shard.register(fd, peer, None, false);
    tracing::debug!(conn = %id, %peer, "connected");
    tokio::task::spawn_local(write_loop(shard.clone(), id, fd, write));
    let mut reader = Prefixed::new(rest, read);
    let drain = read_loop(&shard, id, kind, &mut reader).await;
    shard.reader_done(id);
    if drain {
        // We closed on a protocol error: read until the peer closes too, so unread input does
        // not turn our close into a reset that could destroy the close frame in flight.
        let mut scratch = vec![0u8; 4096];
        let cut = shard.hub.config.close_timeout;
        let _ = tokio::time::timeout(cut, async {
            while let Ok(n) = reader.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!(conn = %id, "disconnected");
    shard.task_done(id);
}

/// What an HTTP request asks for.
enum Route {
    /// A WebSocket upgrade, with its 101 response.
    Ws(ConnKind, Vec<u8>),
    /// An SSE stream of these patterns.
    Sse(Vec<String>),
    /// An API, health or metrics request.
    Api,
}

/// The validated `topics=a,b` of an SSE request.
fn sse_topics(head: &http::RequestHead) -> Result<Vec<String>, HttpError> {
    if head.method != "GET" {
        return Err(HttpError::new(405, "SSE requires GET"));
    }
    let topics: Vec<String> = head
        .query_param("topics")
        .map(|t| t.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if topics.is_empty() {
        return Err(HttpError::new(400, "give topics=a,b"));
    }
    for t in &topics {
        crate::pattern::Pattern::parse(t).map_err(|e| HttpError::new(400, format!("topic '{t}': {e}")))?;
    }
    Ok(topics)
}

/// Streams publications of `topics` as Server-Sent Events until the client goes away.
async fn serve_sse<R, W>(shard: Rc<Shard>, acc: Accepted<R, W>, topics: Vec<String>, accepted: std::time::Instant)
where
    R: AsyncRead + Unpin + 'static,
    W: Writer,
{
    let Accepted { mut read, mut write, fd, peer } = acc;
    let id = shard.register(fd, peer, None, true);
    let mut tokens = Vec::new();
    for t in &topics {
        match shard.subscribe(id, t) {
            Ok(token) => tokens.extend(token),
            Err(e) => tracing::debug!(conn = %id, error = %e, "SSE subscription refused"),
        }
    }
    // As with a WebSocket subscribe reply: the stream starts once every shard knows about it.
    for token in tokens {
        poll_fn(|cx| shard.poll_interest_settled(token, cx)).await;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\r\n";
    if write.write_all(head.as_bytes().to_vec()).await.0.is_err() {
        shard.reader_done(id);
        shard.task_done(id);
        shard.task_done(id);
        return;
    }
    shard.stats().handshake(101, accepted.elapsed());
    tracing::debug!(conn = %id, %peer, ?topics, "SSE stream opened");
    tokio::task::spawn_local(write_loop(shard.clone(), id, fd, write));
    // The client sends nothing; a read completes when it goes away (or the server cuts it).
    let mut scratch = [0u8; 512];
    while let Ok(n) = read.read(&mut scratch).await {
        if n == 0 {
            break;
        }
    }
    shard.reader_done(id);
    shard.task_done(id);
}

/// Reads messages until the connection closes; returns true when input should be drained.
async fn read_loop<R: AsyncRead + Unpin>(shard: &Rc<Shard>, id: ConnId, kind: ConnKind, reader: &mut R) -> bool {
    let max = shard.hub.config.max_message_size;
    let (mut ws, _) = after_handshake_split(reader, tokio::io::sink(), Role::Server);
    ws.set_max_message_size(max);
    let mut asm = Assembler::new(max);
    let mut obligated = |f: Frame<'_>| {
        if f.opcode == OpCode::Close && f.payload.len() > 125 {
            // Control frames carry at most 125 bytes (RFC 6455 §5.5); fastwebsockets only checks pings.
            shard.close(id, 1002, "control frame too long");
        } else if f.opcode == OpCode::Close {
            shard.close_with_frame(id, envelope::raw_frame(8, &f.payload));
        } else {
            shard.enqueue(id, envelope::raw_frame(f.opcode as u8, &f.payload));
        }
        ready(Ok::<(), Infallible>(()))
    };
    loop {
        let frame = match ws.read_frame(&mut obligated).await {
            Ok(f) => f,
            Err(e) => {
                let Some((code, reason)) = close_code(&e) else {
                    tracing::debug!(conn = %id, error = %e, "read ended");
                    return false;
                };
                ShardStats::add(&shard.stats().protocol_errors, 1);
                tracing::debug!(conn = %id, error = %e, code, "protocol error");
                shard.close(id, code, reason);
                return true;
            }
        };
        shard.touch(id);
        let complete = match frame.opcode {
            OpCode::Close => return false,
            OpCode::Pong if frame.payload.len() > 125 => {
                shard.close(id, 1002, "control frame too long");
                return true;
            }
            OpCode::Ping | OpCode::Pong => continue,
            _ => asm.push(frame.opcode, frame.fin, &frame.payload),
        };
        let (opcode, payload) = match complete {
            Err((code, reason)) => {
                ShardStats::add(&shard.stats().protocol_errors, 1);
                shard.close(id, code, reason);
                return true;
            }
            Ok(None) => continue,
            Ok(Some(done)) => done,
        };
        let stats = shard.stats();
        ShardStats::add(&stats.messages_in, 1);
        ShardStats::add(&stats.bytes_in, payload.len() as u64);
        match (kind, opcode) {
            (ConnKind::Echo, op) => shard.enqueue(id, envelope::raw_frame(op as u8, payload)),
            (ConnKind::PubSub, OpCode::Text) => shard.dispatch(id, payload),
            (ConnKind::PubSub, _) => {
                stats.error(crate::ErrorCode::BadRequest);
                let msg = "binary frames are not supported: send JSON envelopes as text";
                shard.enqueue(id, envelope::error(None, "", crate::ErrorCode::BadRequest, msg));
            }
        }
        asm.reset();
    }
}

/// The close code for a read error, or `None` when the peer is simply gone.
fn close_code(e: &WebSocketError) -> Option<(u16, &'static str)> {
    match e {
        WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) | WebSocketError::ConnectionClosed => None,
        WebSocketError::FrameTooLarge => Some((1009, "message too big")),
        WebSocketError::InvalidUTF8 => Some((1007, "invalid UTF-8")),
        // fastwebsockets already queued the 1002 reply through the obligated-send callback.
        WebSocketError::InvalidCloseCode => Some((1002, "invalid close code")),
        _ => Some((1002, "protocol error")),
    }
}

/// Reassembles fragmented messages under the size limit, validating UTF-8 as fragments arrive.
struct Assembler {
    max: usize,
    opcode: Option<OpCode>,
    buf: Vec<u8>,
    utf8_ok: usize,
}

type Complete<'a> = Result<Option<(OpCode, &'a [u8])>, (u16, &'static str)>;

impl Assembler {
    fn new(max: usize) -> Self {
        Self {
            max,
            opcode: None,
            buf: Vec::new(),
            utf8_ok: 0,
        }
    }

    fn reset(&mut self) {
        if self.opcode.take().is_some() {
            self.buf = Vec::new();
            self.utf8_ok = 0;
        }
    }

    /// Adds a data frame; returns the whole message when complete (borrowing the frame's payload
    /// when it was not fragmented).
    fn push<'a>(&'a mut self, op: OpCode, fin: bool, payload: &'a [u8]) -> Complete<'a> {
        match (op, self.opcode) {
            (OpCode::Text | OpCode::Binary, None) if fin => Ok(Some((op, payload))),
            (OpCode::Text | OpCode::Binary, None) => {
                self.opcode = Some(op);
                self.append(payload)?;
                Ok(None)
            }
            (OpCode::Continuation, Some(start)) => {
                self.append(payload)?;
                if !fin {
                    return Ok(None);
                }
                if start == OpCode::Text && self.utf8_ok != self.buf.len() {
                    return Err((1007, "invalid UTF-8"));
                }
                Ok(Some((start, &self.buf)))
            }
            (OpCode::Continuation, None) => Err((1002, "continuation without a message")),
            _ => Err((1002, "new message inside a fragmented message")),
        }
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), (u16, &'static str)> {
        if self.buf.len() + payload.len() > self.max {
            return Err((1009, "message too big"));
        }
        self.buf.extend_from_slice(payload);
        if self.opcode == Some(OpCode::Text) {
            match std::str::from_utf8(&self.buf[self.utf8_ok..]) {
                Ok(_) => self.utf8_ok = self.buf.len(),
                Err(e) if e.error_len().is_none() => self.utf8_ok += e.valid_up_to(),
                Err(_) => return Err((1007, "invalid UTF-8")),
            }
        }
        Ok(())
    }
}

/// Writes queued frames in batches until the connection is done, then shuts the socket down.
async fn write_loop<W: Writer>(shard: Rc<Shard>, id: ConnId, fd: std::os::fd::RawFd, mut w: W) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let batch = poll_fn(|cx| shard.poll_outbound(id, cx, &mut buf)).await;
        let Outbound::Batch { frames, last } = batch else { break };
        let len = buf.len() as u64;
        let (res, b) = w.write_all(std::mem::take(&mut buf)).await;
        buf = b;
        if res.is_err() {
            break;
        }
        let stats = shard.stats();
        ShardStats::add(&stats.messages_out, frames);
        ShardStats::add(&stats.bytes_out, len);
        if last {
            break;
        }
        if buf.capacity() > 1 << 20 {
            buf = Vec::new();
        }
    }
    shutdown_fd(fd, libc::SHUT_WR);
    shard.reader_done(id);
    shard.task_done(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_joins_fragments_and_checks_utf8_across_boundaries() {
        let mut a = Assembler::new(100);
        let snow = "☃".as_bytes();
        assert_eq!(a.push(OpCode::Text, false, &snow[..1]), Ok(None));
        assert_eq!(a.push(OpCode::Continuation, false, &snow[1..]), Ok(None));
        assert_eq!(a.push(OpCode::Continuation, true, b"!"), Ok(Some((OpCode::Text, "☃!".as_bytes()))));
        a.reset();
        assert_eq!(a.push(OpCode::Text, false, b"ok"), Ok(None));
        assert_eq!(a.push(OpCode::Continuation, true, &[0xff]), Err((1007, "invalid UTF-8")));
        a.reset();
        assert_eq!(a.push(OpCode::Text, false, &snow[..2]), Ok(None));
        assert_eq!(a.push(OpCode::Continuation, true, b""), Err((1007, "invalid UTF-8")));
    }

    #[test]
    fn assembler_enforces_order_and_size() {
        let mut a = Assembler::new(4);
        assert_eq!(a.push(OpCode::Continuation, true, b"x"), Err((1002, "continuation without a message")));
        assert_eq!(a.push(OpCode::Binary, false, b"abc"), Ok(None));
        assert_eq!(a.push(OpCode::Text, true, b"x"), Err((1002, "new message inside a fragmented message")));
        assert_eq!(a.push(OpCode::Continuation, true, b"de"), Err((1009, "message too big")));
        a.reset();
        assert_eq!(a.push(OpCode::Binary, true, b"whole"), Ok(Some((OpCode::Binary, &b"whole"[..]))));
    }
}
