//! A shard's inbox: a lock-free MPMC queue plus a wake-up flag, so producers on other threads wake
//! the shard at most once per batch and the shard drains everything queued in one go.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_queue::SegQueue;

use crate::ConnId;

/// What a connection's owner shard is asked to do on behalf of a handler on the pool.
#[derive(Debug)]
pub(crate) enum Action {
    /// Queue this frame to the connection.
    Send(Bytes),
    /// Publish this frame (fan out from the connection's shard).
    Publish { topic: Arc<str>, frame: Bytes },
    /// Subscribe the connection.
    Subscribe(Box<str>),
    /// Unsubscribe the connection.
    Unsubscribe(Box<str>),
    /// Count a handler error on the connection's shard.
    CountError(crate::ErrorCode),
}

/// Messages between shards, and from the pool and the outside to a shard.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// A publication to deliver to this shard's local subscribers.
    Publish { topic: Arc<str>, frame: Bytes },
    /// Shard `shard` gained (`add`) or lost its first/last subscriber to `pattern`. With `ack`,
    /// the receiver answers `InterestAck(ack)` to `shard` once the table is updated.
    Interest {
        pattern: Arc<str>,
        shard: usize,
        add: bool,
        ack: Option<u64>,
    },
    /// Another shard applied the interest change with this token.
    InterestAck(u64),
    /// Act on one of this shard's connections.
    Conn(ConnId, Action),
    /// An HTTP API operation; the shard answers on the channel.
    Api(
        crate::http::api::ApiOp,
        tokio::sync::oneshot::Sender<crate::http::api::ApiReply>,
    ),
    /// Stop accepting, close every connection with 1001, drain, exit.
    Shutdown,
}

/// One shard's inbox.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: SegQueue<ShardMsg>,
    waker: AtomicWaker,
    scheduled: AtomicBool,
}

impl Inbox {
    /// Queues a message and wakes the shard unless a wake-up is already pending.
    pub(crate) fn push(&self, msg: ShardMsg) {
        self.queue.push(msg);
        if !self.scheduled.swap(true, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// Takes the next message, if any.
    pub(crate) fn pop(&self) -> Option<ShardMsg> {
        self.queue.pop()
    }

    /// Waits until something may be queued. Call [`pop`](Self::pop) until empty afterwards.
    pub(crate) async fn ready(&self) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            self.scheduled.store(false, Ordering::SeqCst);
            if self.queue.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }
}
