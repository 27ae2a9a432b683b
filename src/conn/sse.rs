//! Server-Sent Events: `GET /sse?topics=a,b` streams publications of those patterns through the
//! same queues and fan-out as WebSocket connections (the writer renders frames as events).

use std::future::poll_fn;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::guard::Admitted;
use crate::http::{self, HttpError};
use crate::shard::Shard;
use crate::transport::{Accepted, Writer};

/// The validated `topics=a,b` of an SSE request (at most `max_subscriptions` of them).
pub(super) fn topics(
    head: &http::RequestHead,
    max_subscriptions: usize,
) -> Result<Vec<String>, HttpError> {
    http::sse_topics(head, max_subscriptions)
}

/// Streams publications of `topics` as Server-Sent Events until the client goes away.
pub(super) async fn serve<R, W>(
    shard: Rc<Shard>,
    acc: Accepted<R, W>,
    topics: Vec<String>,
    admitted: Admitted,
    accepted: Instant,
) where
    R: AsyncRead + Unpin + 'static,
    W: Writer,
{
    let Accepted {
        mut read,
        mut write,
        fd,
        peer,
    } = acc;
    let id = shard.register(fd, peer, admitted, true);
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
    tokio::task::spawn_local(super::writer::write_loop(shard.clone(), id, fd, write));
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
