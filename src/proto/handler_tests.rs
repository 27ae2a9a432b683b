//! Unit tests of `proto::handler`: middleware order, replies, the pub/sub handler.

use super::*;
use std::sync::Mutex;

#[derive(Default)]
struct Recorder {
    to_conn: Vec<Bytes>,
    published: Vec<(String, Bytes)>,
}
impl Effects for Recorder {
    fn to_conn(&mut self, frame: Bytes) {
        self.to_conn.push(frame);
    }
    fn publish(&mut self, p: Outgoing<'_>) -> Result<bool, HandlerError> {
        let frame = envelope::publication(p.topic, p.event, p.data);
        self.published.push((p.topic.to_string(), frame));
        Ok(false)
    }
    fn subscribe(&mut self, _: &str) -> HandlerResult {
        Ok(())
    }
    fn unsubscribe(&mut self, _: &str) {}
}

fn run(h: &dyn Handler, id: Option<u64>) -> (Recorder, Option<ErrorCode>) {
    let mut rec = Recorder::default();
    let data = RawValue::from_string("{\"x\":1}".into()).unwrap();
    let msg = Message::new("chat:a", "say", Some(&data), id);
    let mut ctx = Context {
        conn: ConnId::from_raw(7),
        node: "test",
        user: None,
        remote: "127.0.0.1:1".parse().unwrap(),
        topic: "chat:a",
        id,
        replied: false,
        fx: &mut rec,
    };
    let r = h.call(&mut ctx, &msg);
    let code = ctx.finish(r);
    (rec, code)
}

fn payload(b: &Bytes) -> &str {
    std::str::from_utf8(&b[2..]).unwrap()
}

#[test]
fn middleware_chain_runs_in_order_and_can_stop() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let a = move |c: &mut Context<'_>, m: &Message<'_>, n: Next<'_>| {
        l1.lock().unwrap().push("a");
        n.run(c, m)
    };
    let b = move |c: &mut Context<'_>, m: &Message<'_>, n: Next<'_>| {
        l2.lock().unwrap().push("b");
        n.run(c, m)
    };
    let h: Arc<dyn Handler> = Arc::new(move |_: &mut Context<'_>, _: &Message<'_>| {
        l3.lock().unwrap().push("h");
        Ok(())
    });
    let layered = Layered {
        mw: Arc::new(chain(a, b)),
        inner: h,
    };
    let (rec, code) = run(&layered, Some(5));
    assert_eq!(*log.lock().unwrap(), vec!["a", "b", "h"]);
    assert_eq!(code, None);
    assert_eq!(
        payload(&rec.to_conn[0]),
        r#"{"event":"reply","id":5,"topic":"chat:a"}"#
    );

    let deny =
        |_: &mut Context<'_>, _: &Message<'_>, _: Next<'_>| Err(HandlerError::forbidden("no"));
    let h2: Arc<dyn Handler> = Arc::new(|_: &mut Context<'_>, _: &Message<'_>| -> HandlerResult {
        panic!("must not run")
    });
    let (rec, code) = run(
        &Layered {
            mw: Arc::new(deny),
            inner: h2,
        },
        None,
    );
    assert_eq!(code, Some(ErrorCode::Forbidden));
    assert_eq!(
        payload(&rec.to_conn[0]),
        r#"{"event":"error","topic":"chat:a","data":{"code":"forbidden","message":"no"}}"#
    );
}

#[test]
fn explicit_reply_is_sent_once() {
    let h = |c: &mut Context<'_>, m: &Message<'_>| {
        #[derive(Deserialize)]
        struct D {
            x: u32,
        }
        let d: D = m.data()?;
        c.reply(&d.x)?;
        c.reply(&99)
    };
    let (rec, _) = run(&h, Some(1));
    assert_eq!(rec.to_conn.len(), 1);
    assert_eq!(
        payload(&rec.to_conn[0]),
        r#"{"event":"reply","id":1,"topic":"chat:a","data":1}"#
    );
}

#[test]
fn pubsub_forwards_data_verbatim() {
    let (rec, code) = run(&pubsub, None);
    assert_eq!(code, None);
    assert!(rec.to_conn.is_empty());
    assert_eq!(rec.published[0].0, "chat:a");
    assert_eq!(
        payload(&rec.published[0].1),
        r#"{"topic":"chat:a","event":"say","data":{"x":1}}"#
    );
}

#[test]
fn bad_data_is_bad_request() {
    let h = |_: &mut Context<'_>, m: &Message<'_>| {
        let _: Vec<u8> = m.data()?;
        Ok(())
    };
    let (_, code) = run(&h, Some(2));
    assert_eq!(code, Some(ErrorCode::BadRequest));
}

fn run_msg(h: &dyn Handler, msg: &Message<'_>) -> (Recorder, Option<ErrorCode>) {
    let mut rec = Recorder::default();
    let mut ctx = Context {
        conn: ConnId::from_raw(7),
        node: "test",
        user: None,
        remote: "127.0.0.1:1".parse().unwrap(),
        topic: msg.topic(),
        id: msg.id(),
        replied: false,
        fx: &mut rec,
    };
    let r = h.call(&mut ctx, msg);
    let code = ctx.finish(r);
    (rec, code)
}

#[test]
fn argument_lists_in_and_out() {
    let list = RawValue::from_string(r#"[1,"2"]"#.into()).unwrap();
    let several = Message::new("m", "message", Some(&list), Some(3)).with_spread(true);
    let one = Message::new("m", "message", Some(&list), Some(3));
    let args = |m: &Message<'_>| -> Vec<String> {
        m.args()
            .unwrap()
            .iter()
            .map(|a| a.get().to_owned())
            .collect()
    };
    assert_eq!(args(&several), ["1", "\"2\""]);
    assert_eq!(args(&one), [r#"[1,"2"]"#]);
    assert!(Message::new("m", "message", None, None)
        .args()
        .unwrap()
        .is_empty());

    // Echo every argument back: an emit and an ack, each with the same argument list.
    let echo = |c: &mut Context<'_>, m: &Message<'_>| {
        let a = m.args()?;
        c.send_args_raw(m.topic(), "back", &a);
        c.reply_args_raw(&a);
        c.reply_args(&("ignored", 1))
    };
    let (rec, code) = run_msg(&echo, &several);
    assert_eq!(code, None);
    assert_eq!(rec.to_conn.len(), 2, "only the first reply counts");
    assert_eq!(
        payload(&rec.to_conn[0]),
        r#"{"topic":"m","event":"back","data":[1,"2"],"spread":true}"#
    );
    assert_eq!(
        payload(&rec.to_conn[1]),
        r#"{"event":"reply","id":3,"topic":"m","data":[1,"2"],"spread":true}"#
    );

    // Node-style `ack(err, result)` from a tuple; a non-list is the handler's error.
    let node = |c: &mut Context<'_>, _: &Message<'_>| c.reply_args(&(None::<()>, 42));
    let (rec, _) = run_msg(&node, &one);
    assert_eq!(
        payload(&rec.to_conn[0]),
        r#"{"event":"reply","id":3,"topic":"m","data":[null,42],"spread":true}"#
    );
    let bad = |c: &mut Context<'_>, _: &Message<'_>| c.send_args("m", "e", &5);
    assert_eq!(run_msg(&bad, &one).1, Some(ErrorCode::Internal));

    // `spread` data that is no list is the client's error.
    let obj = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
    let wrong = Message::new("m", "message", Some(&obj), Some(4)).with_spread(true);
    let reads = |_: &mut Context<'_>, m: &Message<'_>| m.args().map(|_| ());
    assert_eq!(run_msg(&reads, &wrong).1, Some(ErrorCode::BadRequest));
}
