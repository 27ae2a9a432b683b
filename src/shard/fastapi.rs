//! `POST /api/v1/publish` answered on the shard that read it, without the API thread, in the
//! common case: a valid request with the right API key, to topics without history that no other
//! shard of this node has subscribers for. The publication then goes where a WebSocket publish
//! goes (the cluster, then the local fan-out), and the answer's `delivered` is exact: only this
//! shard could have delivered it. Every other request — another endpoint, a wrong or missing
//! key, a throttled address, a body the API would refuse, a topic with history, a topic another
//! shard is interested in — goes to the API thread as before, which answers it (errors included)
//! exactly as it always did. The saving is the hop shard → API thread → every shard → API thread
//! → shard: four cross-thread wake-ups per request.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ShardState;
use crate::proto::envelope;
use crate::proto::handshake::RequestHead;
use crate::proto::pattern::validate_topic;

/// The publish endpoint's body, borrowed from the request (a string with escapes does not
/// borrow: such a request goes to the API thread, which parses it into owned strings).
#[derive(Deserialize)]
struct PublishBody<'a> {
    #[serde(borrow, default)]
    topic: Option<&'a str>,
    #[serde(borrow, default)]
    topics: Option<Vec<&'a str>>,
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    exclude_client: Option<&'a str>,
}

/// The path the shard may answer itself.
const PUBLISH_PATH: &str = "/api/v1/publish";

impl ShardState {
    /// Serves `head` + `body` here when it is a publish this shard can answer alone (see the
    /// module docs): publishes it and returns the answer's JSON body (status 200). `None`: the
    /// API thread serves the request, and nothing was done.
    pub(super) fn local_publish(
        &mut self,
        head: &RequestHead,
        body: &[u8],
        peer: IpAddr,
    ) -> Option<String> {
        if !self.api_post_ok(head, PUBLISH_PATH, body, peer) {
            return None;
        }
        let hub = self.hub.clone();
        let p: PublishBody<'_> = serde_json::from_slice(body).ok()?;
        let mut topics = p.topics.unwrap_or_default();
        topics.extend(p.topic);
        if topics.is_empty() {
            return None;
        }
        let others = !(1u64 << self.index);
        for t in &topics {
            if validate_topic(t).is_err()
                || hub.namespaces.history(t).is_some()
                || self.interest.shards_for(t) & others != 0
            {
                return None;
            }
        }
        let exclude = match p.exclude_client {
            None => None,
            Some(c) => Some(hub.parse_client(c)?),
        };
        let data = p.data.map(|d| d.get().as_bytes());
        let frames: Vec<(Arc<str>, Bytes)> = topics
            .iter()
            .map(|t| (Arc::from(*t), envelope::publication(t, p.event, data)))
            .collect();
        if hub.cluster.clustered {
            hub.cluster.broker.publish(&frames);
        }
        let delivered = self.deliver_many(&frames, exclude);
        // The API thread's answer to the same publish, key order and all.
        Some(serde_json::json!({"success": true, "data": {"delivered": delivered}}).to_string())
    }

    /// Whether the request is a `POST` to `path` that the shard may serve: it passes the checks
    /// the API thread makes before any endpoint (not a page path, a `Content-Length`, the right
    /// key from an address not throttled for wrong keys, a body not nested too deep). Reads
    /// state only. False: leave it to the API thread.
    pub(super) fn api_post_ok(
        &self,
        head: &RequestHead,
        path: &str,
        body: &[u8],
        peer: IpAddr,
    ) -> bool {
        let cfg = &self.hub.config;
        if head.method != "POST"
            || head.path != path
            || cfg.serves_ui(&head.path)
            || head.header("Content-Length").is_none()
        {
            return false;
        }
        let Some(key) = cfg.api_key.as_deref() else {
            return false;
        };
        // As the API thread reads it (RFC 7235: the scheme is case-insensitive).
        let given = head
            .header("Authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, k)| k.trim_start());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            key.as_bytes(),
        )) {
            return false;
        }
        !self.hub.api_keys.blocked(peer, std::time::Instant::now())
            && envelope::within_depth(body, envelope::MAX_DEPTH + 4)
    }
}
