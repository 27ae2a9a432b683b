//! A connection waiting for the backend: its later messages are held, then handled in order
//! after the answer; other connections are not held.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::super::inbox::Action;
use super::super::proxy::{ProxyAnswer, ProxyCall, ProxyClient, ProxyFailure};
use super::super::shared::HubShared;
use super::super::ShardState;
use super::{frame, upgraded, written};
use crate::config::proxy::{ProxyEndpoint, ProxyKind};

#[derive(Default)]
struct Recorder(Mutex<Vec<ProxyCall>>);

impl ProxyClient for Recorder {
    fn call(&self, call: ProxyCall) {
        self.0.lock().unwrap().push(call);
    }
}

fn shard_with_subscribe_proxy() -> (ShardState, Arc<Recorder>) {
    let mut hub = HubShared::for_bench_pubsub(1);
    hub.config.proxy.subscribe = Some(Arc::new(ProxyEndpoint::new("http://backend/s")));
    let rec = Arc::new(Recorder::default());
    hub.links.proxy = Some(rec.clone());
    (ShardState::new(0, Arc::new(hub)), rec)
}

fn text(st: &mut ShardState, slot: u32) -> String {
    String::from_utf8_lossy(&written(st, slot)).into_owned()
}

#[test]
fn messages_wait_behind_a_call_then_go_in_order() {
    let (mut st, rec) = shard_with_subscribe_proxy();
    let a = upgraded(&mut st);
    let b = upgraded(&mut st);
    let id = st.conns[a as usize].id;
    let mut input = frame(1, br#"{"event":"subscribe","topic":"t","id":1}"#);
    input.extend(frame(1, br#"{"event":"m","topic":"t","data":1,"id":2}"#));
    st.on_input(a, &mut input);
    assert_eq!(text(&mut st, a), "", "held while the backend decides");
    {
        let calls = rec.0.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].kind, ProxyKind::Subscribe);
        let body: serde_json::Value = serde_json::from_slice(&calls[0].body).unwrap();
        assert_eq!(body["topic"], "t");
    }
    // Another connection is not held (its publish has no proxy).
    st.on_input(b, &mut frame(1, br#"{"event":"m","topic":"u","id":9}"#));
    assert!(text(&mut st, b).contains(r#""id":9"#));
    let answer = ProxyAnswer {
        kind: ProxyKind::Subscribe,
        result: Ok(Bytes::from_static(br#"{"result":{}}"#)),
    };
    st.conn_action(id, Action::Proxied(Box::new(answer)));
    let out = text(&mut st, a);
    let (r1, r2) = (out.find(r#""id":1"#), out.find(r#""id":2"#));
    assert!(r1.is_some() && r2.is_some() && r1 < r2, "{out}");
    assert!(st.proxied.is_empty());
}

#[test]
fn a_failed_call_answers_not_available_and_releases_the_rest() {
    let (mut st, _rec) = shard_with_subscribe_proxy();
    let a = upgraded(&mut st);
    let id = st.conns[a as usize].id;
    let mut input = frame(1, br#"{"event":"subscribe","topic":"t","id":1}"#);
    input.extend(frame(1, br#"{"event":"subscribe","topic":"v","id":2}"#));
    st.on_input(a, &mut input);
    let answer = ProxyAnswer {
        kind: ProxyKind::Subscribe,
        result: Err(ProxyFailure::Timeout),
    };
    st.conn_action(id, Action::Proxied(Box::new(answer)));
    let out = text(&mut st, a);
    assert!(
        out.contains(r#""code":"not_available","message":"backend timed out""#),
        "{out}"
    );
    // The second subscribe waits for its own call now.
    assert!(st.proxied.contains_key(&id));
    let answer = ProxyAnswer {
        kind: ProxyKind::Subscribe,
        result: Ok(Bytes::from_static(br#"{"error":{"message":"no"}}"#)),
    };
    st.conn_action(id, Action::Proxied(Box::new(answer)));
    let out = text(&mut st, a);
    assert!(
        out.contains(r#""id":2"#) && out.contains(r#""code":"forbidden""#),
        "{out}"
    );
}
