//! The writing side of a connection: queued frames drained in batches, one write per batch.

use std::future::poll_fn;
use std::rc::Rc;

use crate::proto::stats::ShardStats;
use crate::shard::{Outbound, Shard};
use crate::transport::{shutdown_fd, Writer};
use crate::ConnId;

/// Largest batch buffer a connection keeps while it has nothing to write.
const IDLE_BUF: usize = 4096;

/// Writes queued frames in batches until the connection is done, then shuts the socket down.
pub(super) async fn write_loop<W: Writer>(
    shard: Rc<Shard>,
    id: ConnId,
    fd: std::os::fd::RawFd,
    mut w: W,
) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let batch = poll_fn(|cx| shard.poll_outbound(id, cx, &mut buf)).await;
        let Outbound::Batch { frames, last } = batch else {
            break;
        };
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
        // A connection about to wait keeps no batch buffer: thousands of subscribers that each
        // once received a burst would otherwise each pin a burst-sized allocation.
        if buf.capacity() > IDLE_BUF && !shard.has_outbound(id) {
            buf = Vec::new();
        }
    }
    shutdown_fd(fd, libc::SHUT_WR);
    shard.reader_done(id);
    shard.task_done(id);
}
