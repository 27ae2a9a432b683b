//! A dead or silent Redis: operations fail quickly with `Unavailable`, and Redis is used again
//! once it is back.

use std::time::Instant;

use super::*;

fn unavailable<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(e @ StoreError::Unavailable(_)) => {
            assert_eq!(e.code(), crate::ErrorCode::NotAvailable)
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn redis_down_fails_fast_and_back_works() {
    let Some(mut r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r, "n1");
    let l = hl(10, 0);
    let before = s.append("t", l, "e", None, T0).unwrap();
    r.kill();
    unavailable(s.append("t", l, "e", None, T0));
    unavailable(s.position("t"));
    unavailable(s.read("t", l, 0, 10, T0));
    unavailable(s.inbox_put("u", msg("e", b"1"), il(10, 60), T0));
    unavailable(s.inbox_list("u", T0));
    unavailable(s.status(1));
    unavailable(s.expire(il(10, 60), T0));
    let req = AppendReq {
        topic: "t",
        limits: l,
        event: "e",
        data: None,
        exclude: 0,
    };
    for res in s.append_batch(&[req, req], T0) {
        unavailable(res);
    }
    // Back on the same port, without the data: the store reconnects by itself, and the lost
    // stream has a new epoch.
    let _back = RedisServer::on(r.port);
    let until = Instant::now() + DEADLINE;
    let p = loop {
        match s.append("t", l, "e", None, T0) {
            Ok(p) => break p,
            Err(StoreError::Unavailable(_)) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("Redis is back but the store still fails: {e}"),
        }
    };
    assert_eq!(p.offset, 1);
    assert_ne!(p.epoch, before.epoch);
}

#[test]
fn restart_under_an_open_connection_is_retried_once() {
    let Some(mut r) = RedisServer::start() else {
        return;
    };
    let mut s = store(&r, "n1");
    s.append("t", hl(10, 0), "e", None, T0).unwrap();
    r.kill();
    let _back = RedisServer::on(r.port);
    // The store's connection is to the dead process: the first operation finds it closed and
    // runs on a fresh one.
    assert_eq!(s.position("t").unwrap().offset, 0);
}

#[test]
fn silent_server_times_out() {
    // Accepts connections (the kernel does) and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", l.local_addr().unwrap());
    let timeout = Duration::from_millis(200);
    match RedisStore::connect_with(&[url], PREFIX, "n1", timeout) {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.to_string().contains("127.0.0.1")),
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to a server that never answers"),
    }
}
