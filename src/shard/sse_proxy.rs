//! SSE streams and the subscribe proxy: a stream's topics (`?topics=`) that a subscribe proxy
//! covers are asked one after the other before the stream starts; a refused topic gets an
//! `error` event naming it and the stream goes on with the others.

use bytes::Bytes;

use super::proxied::{outcome, Outcome};
use super::proxy::{ProxyFailure, Step};
use super::ShardState;
use crate::config::proxy::ProxyKind;
use crate::proto::envelope;
use crate::proto::proxy::CallResult;
use crate::ConnId;

impl ShardState {
    /// Opens an SSE stream on `topics` (permissions checked already), asking the subscribe
    /// proxy first for those it covers; `then` (the `connected` frame) follows the start.
    pub(super) fn sse_open(&mut self, id: ConnId, topics: Vec<String>, then: Option<Bytes>) {
        let (mut ask, allowed): (Vec<String>, Vec<String>) = topics
            .into_iter()
            .partition(|t| self.proxy_for(ProxyKind::Subscribe, t).is_some());
        // Asked from the end: the first topic first.
        ask.reverse();
        self.sse_ask(id, ask, allowed, then);
    }

    /// Asks about the last topic of `left`, or starts the stream when none is left.
    fn sse_ask(
        &mut self,
        id: ConnId,
        left: Vec<String>,
        allowed: Vec<String>,
        then: Option<Bytes>,
    ) {
        let ep = left
            .last()
            .and_then(|t| self.proxy_for(ProxyKind::Subscribe, t));
        let (Some(topic), Some(ep)) = (left.last(), ep) else {
            self.sse_start(id, &allowed);
            if let Some(frame) = then {
                self.enqueue(id, frame);
            }
            return;
        };
        let body = self.conn_request(id, Some(topic), None, None, None);
        let step = Step::SseTopics {
            left,
            allowed,
            then,
        };
        self.proxy_wait(id, ProxyKind::Subscribe, ep, step, body, Vec::new());
    }

    /// The subscribe proxy answered about the last topic of `left`.
    pub(super) fn sse_topic_answer(
        &mut self,
        id: ConnId,
        result: Result<Bytes, ProxyFailure>,
        mut left: Vec<String>,
        mut allowed: Vec<String>,
        then: Option<Bytes>,
        allow_down: bool,
    ) {
        let Some(topic) = left.pop() else { return };
        match outcome::<CallResult>(result, allow_down) {
            Outcome::Go(r) => {
                if let Some(d) = r.and_then(|r| r.data) {
                    let frame =
                        envelope::publication(&topic, "subscribed", Some(d.get().as_bytes()));
                    self.enqueue(id, frame);
                }
                allowed.push(topic);
            }
            Outcome::Refuse(code, msg) => self.error(id, None, &topic, code, &msg),
            Outcome::Close(code, reason) => return self.close(id, code, &reason),
        }
        self.sse_ask(id, left, allowed, then);
    }
}
