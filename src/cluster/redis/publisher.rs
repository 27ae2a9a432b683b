//! One Redis instance's publisher task: everything queued when it wakes up is written as one
//! pipeline on the instance's multiplexed connection, and the next wake-up takes what queued
//! meanwhile — so under load a round trip carries many publications.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::presence;
use super::{Ev, Out, Setup, Shared, NODE_TTL};
use crate::cluster::{instance_for, topic_channel, wire, ClusterStats};

/// Commands written in one pipeline at most.
const MAX_BATCH: usize = 4096;

/// The instance's command connection, replaced by the manager on reconnect.
pub(crate) struct Link {
    pub conn: Option<MultiplexedConnection>,
    /// Bumped at every connect and loss, so stale failures are ignored.
    pub gen: u64,
}

/// Whether an error means the connection is gone (as opposed to one command refused).
pub(crate) fn is_fatal(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

pub(crate) async fn run(
    i: usize,
    mut rx: mpsc::Receiver<Out>,
    link: Rc<RefCell<Link>>,
    setup: Arc<Setup>,
    shared: Arc<Shared>,
    ev: mpsc::UnboundedSender<Ev>,
) {
    let n = setup.urls.len();
    let ctl = format!("{}:ctl", setup.prefix);
    let ttl = NODE_TTL.as_secs();
    let mut batch: Vec<Out> = Vec::new();
    let mut pipe = redis::Pipeline::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let pubs = batch
            .iter()
            .filter(|o| matches!(o, Out::One { .. } | Out::Many { .. }))
            .count() as u64;
        let (conn, gen) = {
            let l = link.borrow();
            (l.conn.clone(), l.gen)
        };
        let Some(mut conn) = conn else {
            // Reads and flushes are answered (as failed / at once); writes are dropped.
            let (reads, _) = side_requests(&mut batch);
            presence::spawn_reads(None, &setup.prefix, reads);
            batch.clear();
            if pubs > 0 {
                shared.dropped(pubs, "Redis unreachable");
            }
            continue;
        };
        pipe.clear();
        // Commands in the pipeline, and how many of them are publications.
        let (mut cmds, mut sent) = (0u64, 0u64);
        let (reads, flushes) = side_requests(&mut batch);
        for out in batch.drain(..) {
            match out {
                Out::One { seq, topic, frame } => {
                    let payload = wire::publication(&setup.node, seq, &[(&topic, &frame)]);
                    pipe.cmd("PUBLISH")
                        .arg(topic_channel(&setup.prefix, &topic))
                        .arg(payload)
                        .ignore();
                    sent += 1;
                    cmds += 1;
                }
                Out::Many { seq, frames } => {
                    let refs: Vec<(&str, &[u8])> =
                        frames.iter().map(|(t, f)| (&**t, &f[..])).collect();
                    let payload = wire::publication(&setup.node, seq, &refs);
                    for (t, _) in frames.iter().filter(|(t, _)| instance_for(t, n) == i) {
                        pipe.cmd("PUBLISH")
                            .arg(topic_channel(&setup.prefix, t))
                            .arg(&payload[..])
                            .ignore();
                        sent += 1;
                        cmds += 1;
                    }
                }
                Out::Control(payload) => {
                    pipe.cmd("PUBLISH").arg(&ctl).arg(payload).ignore();
                    cmds += 1;
                }
                Out::Register { key, value } => {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(ttl)
                        .ignore();
                    cmds += 1;
                }
                Out::Presence(w) => cmds += presence::write(&mut pipe, &setup.prefix, w),
                Out::Reply { channel, payload } => {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                    cmds += 1;
                }
                Out::PresenceRead(..) | Out::Flush(_) => {}
            }
        }
        if cmds == 0 {
            presence::spawn_reads(Some(conn), &setup.prefix, reads);
            for f in flushes {
                let _ = f.send(());
            }
            continue;
        }
        let r = pipe.query_async::<()>(&mut conn).await;
        // Behind this pipeline: reads see its writes; a flush means "written".
        presence::spawn_reads(Some(conn), &setup.prefix, reads);
        for f in flushes {
            let _ = f.send(());
        }
        match r {
            Ok(()) => {
                let s = &shared.stats;
                ClusterStats::add(&s.publishes_sent, sent);
                ClusterStats::add(&s.pipelines, 1);
                ClusterStats::add(&s.pipelined_commands, cmds);
            }
            Err(e) => {
                ClusterStats::add(&shared.stats.redis_errors, 1);
                if is_fatal(&e) {
                    if pubs > 0 {
                        shared.dropped(pubs, "Redis connection lost");
                    }
                    let _ = ev.send(Ev::Down {
                        i,
                        gen,
                        why: e.to_string(),
                    });
                } else {
                    tracing::warn!(instance = i, error = %e, "cluster: Redis refused a command");
                }
            }
        }
    }
}

/// A presence read waiting for its pipeline.
type Read = (Arc<str>, tokio::sync::oneshot::Sender<presence::Entries>);

/// Takes the presence reads and flushes out of `batch` (they are not pipeline commands).
fn side_requests(batch: &mut Vec<Out>) -> (Vec<Read>, Vec<tokio::sync::oneshot::Sender<()>>) {
    let (mut reads, mut flushes) = (Vec::new(), Vec::new());
    if !batch
        .iter()
        .any(|o| matches!(o, Out::PresenceRead(..) | Out::Flush(_)))
    {
        return (reads, flushes);
    }
    for o in std::mem::take(batch) {
        match o {
            Out::PresenceRead(topic, tx) => reads.push((topic, tx)),
            Out::Flush(tx) => flushes.push(tx),
            o => batch.push(o),
        }
    }
    (reads, flushes)
}
