//! The handler pool: worker threads for handlers registered as blocking, fed by a bounded
//! crossbeam MPMC channel. Their effects travel back to the connection's shard through its inbox.

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::envelope;
use crate::proto::error::HandlerResult;
use crate::proto::handler::{Context, Effects, Message, Outgoing};
use crate::shard::inbox::{Action, ShardMsg};
use crate::shard::shared::{HubShared, Job};
use crate::ConnId;

/// Runs jobs until `stop` disconnects, then finishes what is already queued.
pub(crate) fn worker(
    hub: Arc<HubShared>,
    jobs: crossbeam_channel::Receiver<Job>,
    stop: crossbeam_channel::Receiver<()>,
) {
    loop {
        crossbeam_channel::select! {
            recv(jobs) -> job => match job {
                Ok(job) => run(&hub, job),
                Err(_) => return,
            },
            recv(stop) -> _ => break,
        }
    }
    while let Ok(job) = jobs.try_recv() {
        run(&hub, job);
    }
}

fn run(hub: &HubShared, job: Job) {
    // The shard parsed and routed this payload already, so it parses again here.
    let Ok(env) = envelope::parse(&job.payload) else {
        return;
    };
    let msg = Message::new(&env.topic, &env.event, env.data, env.id)
        .with_exclude_sender(env.exclude_sender)
        .with_spread(env.spread);
    let mut fx = Remote {
        hub,
        conn: job.conn,
    };
    let mut ctx = Context {
        conn: job.conn,
        node: &hub.cluster.node,
        user: job.user,
        remote: job.remote,
        topic: &env.topic,
        id: env.id,
        replied: false,
        fx: &mut fx,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        job.handler.call(&mut ctx, &msg)
    }))
    .unwrap_or_else(|_| Err(crate::HandlerError::internal("handler panicked")));
    if let Some(code) = ctx.finish(result) {
        fx.act(Action::CountError(code));
    }
}

/// Effects of a pooled handler: sent to the connection's shard.
struct Remote<'a> {
    hub: &'a HubShared,
    conn: ConnId,
}

impl Remote<'_> {
    fn act(&self, a: Action) {
        if let Some(inbox) = self.hub.inboxes.get(self.conn.shard()) {
            inbox.push(ShardMsg::Conn(self.conn, a));
        }
    }
}

impl Effects for Remote<'_> {
    fn to_conn(&mut self, frame: Bytes) {
        self.act(Action::HandlerSend(frame));
    }
    fn publish(&mut self, p: Outgoing<'_>) -> Result<bool, crate::HandlerError> {
        if let Some(r) = self.hub.publish_stored(&p, Some(self.conn)) {
            return r;
        }
        self.act(Action::Publish {
            topic: p.topic.into(),
            frame: envelope::publication(p.topic, p.event, p.data),
            exclude: p.exclude_sender.then_some(self.conn),
        });
        self.hub.cluster_down().map_or(Ok(false), Err)
    }
    fn subscribe(&mut self, pattern: &str) -> HandlerResult {
        self.act(Action::Subscribe(pattern.into()));
        Ok(())
    }
    fn unsubscribe(&mut self, pattern: &str) {
        self.act(Action::Unsubscribe(pattern.into()));
    }
}
