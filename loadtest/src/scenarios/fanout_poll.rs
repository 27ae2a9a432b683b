//! Fan-out subscribers on Engine.IO HTTP long-polling (`--transport polling`, Socket.IO
//! only): each keeps one `GET` pending from the moment it has joined its room, takes every
//! packet of the answer (`\x1e`-separated) and polls again at once; heartbeats are answered
//! with a `POST 3` between two `GET`s. Deliveries are accounted exactly as over WebSocket.

use super::classify::{Classifier, Incoming};
use super::fanout_accounting::{count_code, Sub, ThreadResult, Track};
use super::fanout_shared::Shared;
use super::join;
use crate::client::polling::{packets, PollConn};
use crate::runner::{self, Phase};
use crate::stats;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// One long-polling subscriber: polls until the run is `Done` (then it is aborted).
pub async fn poll_subscriber(
    sh: Arc<Shared>,
    tid: usize,
    idx: usize,
    sem: Arc<Semaphore>,
    acc: Rc<RefCell<ThreadResult>>,
    track: Rc<RefCell<Track>>,
) {
    let (target, cross) = sh.sub_target(idx);
    let name = format!("{}{}", sh.args.topic_prefix, idx % sh.args.topics);
    let mut conn = {
        let Ok(_permit) = sem.acquire().await else {
            return;
        };
        let src = sh.ctx.sources.pick(idx);
        let mut conn = match PollConn::open(target, src, sh.ctx.connect_timeout).await {
            Ok(c) => c,
            Err(e) => {
                sh.fail(format!("subscriber {idx}: {e:#}"));
                return;
            }
        };
        if let Err(e) = join::socketio_poll_join(&mut conn, &name).await {
            sh.fail(format!("subscriber {idx}: {e}"));
            return;
        }
        conn
    };
    let mut sub = Sub::new(&sh, idx, cross);
    sub.start(&sh, &track);
    sh.ready.fetch_add(1, Ordering::Relaxed);
    let mut cls = Classifier::new(sh.ctx.dialect());
    // Poll from now on: a session without a pending GET looks idle to the server (and a
    // kept-alive HTTP connection without a request may be closed) while others still join.
    loop {
        let body = match conn.get().await {
            Ok(b) => b,
            Err(e) => {
                if sh.phases.get() < Phase::Done {
                    acc.borrow_mut().disconnects += 1;
                    sh.first_error.set(format!("subscriber {idx}: {e:#}"));
                }
                return;
            }
        };
        let now = stats::now_ns();
        // Read per answer: the window is fixed only once every subscriber is ready.
        let in_window = now >= sh.measure_start_ns.load(Ordering::Relaxed)
            && now < sh.measure_end_ns.load(Ordering::Relaxed);
        let (mut fresh, mut counted, mut ping) = (0u64, 0u64, false);
        {
            let mut a = acc.borrow_mut();
            let mut tr = track.borrow_mut();
            for p in packets(body) {
                match cls.classify(p) {
                    Incoming::Data(d) => match sub.on_data(&sh, &mut a, &mut tr, d, now, in_window)
                    {
                        Some(true) => (fresh, counted) = (fresh + 1, counted + 1),
                        Some(false) => fresh += 1,
                        None => {}
                    },
                    Incoming::Heartbeat => ping = true,
                    Incoming::Reply => {}
                    Incoming::Error => {
                        a.server_errors += 1;
                        count_code(&mut a.error_codes, String::from_utf8_lossy(p).into_owned());
                    }
                    // `6` (noop) answers a GET the server had to release; `1` closes.
                    Incoming::Malformed if p == b"6" => {}
                    Incoming::Malformed if p == b"1" => {
                        a.disconnects += 1;
                        count_code(&mut a.error_codes, "engine.io close".into());
                        return;
                    }
                    Incoming::Malformed => a.malformed += 1,
                }
            }
            a.in_window += counted;
        }
        runner::bump(&sh.unique[tid], fresh);
        runner::bump(&sh.in_window[tid], counted);
        if ping {
            if let Err(e) = conn.post(b"3").await {
                if sh.phases.get() < Phase::Done {
                    acc.borrow_mut().disconnects += 1;
                    sh.first_error.set(format!("subscriber {idx}: pong: {e:#}"));
                }
                return;
            }
        }
    }
}
