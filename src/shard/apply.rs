//! Applying the shard's inbox messages: one match from [`ShardMsg`] to the handlers that own
//! each concern (delivery, history, interest, connection actions, the API, shutdown). Kept apart
//! from the queue itself (`inbox`) so that file stays the types other threads share.

use super::inbox::{RemotePub, ShardMsg};
use super::ShardState;
use crate::proto::pattern::Pattern;

impl ShardState {
    /// Applies one inbox message.
    pub(crate) fn handle_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish {
                topic,
                frame,
                exclude,
            } => {
                self.deliver_local(&topic, &frame, exclude);
            }
            ShardMsg::Stored(batch) => {
                for p in batch.iter() {
                    self.deliver_stored(p);
                }
            }
            ShardMsg::History(job) => self.history_job(job),
            ShardMsg::Positions(answer) => self.positions_answered(answer),
            ShardMsg::Remote(batch) => {
                for p in batch {
                    match p {
                        RemotePub::One { topic, frame } => {
                            self.deliver_local(&topic, &frame, None);
                        }
                        RemotePub::Many(frames) => {
                            self.deliver_many(&frames, None);
                        }
                        RemotePub::Stored(p) => {
                            self.deliver_stored(&p);
                        }
                    }
                }
            }
            ShardMsg::InboxGone(list) => self.inbox_gone(&list),
            ShardMsg::ResyncInboxes => self.resync_inboxes(),
            ShardMsg::InboxResync(user, frames) => self.inbox_resync(&user, &frames),
            ShardMsg::Interest {
                pattern,
                shard,
                add,
                ack,
            } => {
                if let Ok(p) = Pattern::parse(&pattern) {
                    if add {
                        self.interest.add(p, shard);
                    } else {
                        self.interest.remove(p, shard);
                    }
                }
                if let Some(token) = ack {
                    self.hub.inboxes[shard].push(ShardMsg::InterestAck(token));
                }
            }
            ShardMsg::InterestAck(token) => self.interest_acked(token),
            ShardMsg::Conn(id, action) => self.conn_action(id, action),
            ShardMsg::Api(op, reply) => {
                let _ = reply.send(self.api(op));
            }
            ShardMsg::HttpResponse(id, bytes) => self.http_response(id, bytes),
            ShardMsg::Durables(run) => self.durable_run(run),
            ShardMsg::DurablesCounted(run) => self.durables_counted(&run),
            ShardMsg::ApiAnswer(id, status, body) => self.answer_json(id, status, &body),
            ShardMsg::BatchResult(id, index, status, body) => {
                self.batch_result(id, index, status, &body)
            }
            ShardMsg::Poll(m) => self.poll_msg(*m),
            #[cfg(feature = "axum")]
            ShardMsg::Adopt(a) => self.adopt(*a),
            ShardMsg::Shutdown => {
                let delay = self.hub.config.drain_delay;
                if delay.is_zero() {
                    self.shut_down();
                } else if self.drain_until.is_none() {
                    self.drain_until = Some(self.now + delay);
                }
            }
        }
    }
}
