//! The shard's connection machine without sockets: bytes in, iovecs out.

use std::sync::Arc;

use super::shared::HubShared;
use super::*;
use crate::proto::envelope;

mod bare;
mod history;
pub(in crate::shard) mod holds;
mod polling;
mod proxy;
mod takeover;

pub(super) fn shard() -> ShardState {
    ShardState::new(0, Arc::new(HubShared::for_bench(1)))
}

/// A whole masked client frame.
pub(super) fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    crate::proto::frame::tests::masked(op, true, payload)
}

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Everything `next_send` offers for `slot`, concatenated, acknowledged as fully written.
pub(super) fn written(st: &mut ShardState, slot: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut iov = Vec::new();
    while st.next_send(slot, &mut iov) {
        let mut n = 0;
        for v in &iov {
            // SAFETY: the iovecs point into frames the state keeps until `on_sent`.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
            n += v.iov_len;
        }
        st.on_sent(slot, n);
    }
    out
}

pub(super) fn upgraded(st: &mut ShardState) -> u32 {
    upgraded_with(st, UPGRADE)
}

/// [`UPGRADE`] offering permessage-deflate.
fn deflate_upgrade() -> Vec<u8> {
    let at = UPGRADE.len() - 2;
    [
        &UPGRADE[..at],
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    ]
    .concat()
}

fn upgraded_with(st: &mut ShardState, request: &[u8]) -> u32 {
    let slot = st.accept(-1, ([127, 0, 0, 1], 1).into());
    st.on_input(slot, &mut request.to_vec());
    let resp = written(st, slot);
    assert!(
        resp.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    slot
}

/// Counts the bytes each thread has live on the heap, so a test can see what one connection
/// allocates beside its slab entry (the slab itself is reserved when the shard is built).
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(n: isize) {
        // `try_with`: what a thread frees while its locals are torn down is not counted.
        let _ = LIVE.try_with(|c| c.set(c.get() + n));
    }

    // SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, forwarded.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            // SAFETY: the caller's contract, forwarded.
            let p = unsafe { System.alloc_zeroed(l) };
            if !p.is_null() {
                add(l.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            add(-(l.size() as isize));
            // SAFETY: the caller's contract, forwarded.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            // SAFETY: the caller's contract, forwarded.
            let q = unsafe { System.realloc(p, l, new) };
            if !q.is_null() {
                add(new as isize - l.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Bytes this thread has allocated and not freed.
    pub(super) fn live() -> isize {
        LIVE.with(Cell::get)
    }
}

/// A shard with the binary's default policy: message rate limits and connection caps on.
fn default_shard() -> ShardState {
    let mut hub = HubShared::for_bench(1);
    hub.config.guard =
        crate::policy::guard::Guard::from_settings(&crate::config::settings::Settings::default())
            .expect("default policy");
    ShardState::new(0, Arc::new(hub))
}

#[test]
fn an_idle_connection_allocates_nothing_beside_its_slab_entry() {
    let mut st = default_shard();
    let guard = &st.hub.config.guard;
    assert!(guard.rate.is_some() && guard.conn_limits.is_some());
    // The first connection warms what the shard keeps per address (the per-IP count).
    upgraded(&mut st);
    st.take_dirty(&mut Vec::new());
    let before = heap::live();
    for _ in 0..100 {
        upgraded(&mut st);
        // The shell takes the flush list every iteration (`written` flushed directly).
        st.take_dirty(&mut Vec::new());
    }
    let per_conn = (heap::live() - before) as f64 / 100.0;
    assert_eq!(
        per_conn, 0.0,
        "heap bytes per idle connection beside its slab entry (rate limiter, cap permit, \
         outbound queue must wait until they are needed)"
    );
}

#[test]
fn an_idle_deflate_connection_allocates_nothing_beside_its_slab_entry() {
    let mut st = default_shard();
    let offer = deflate_upgrade();
    let first = upgraded_with(&mut st, &offer);
    // A compressed message in and a compressed reply out: the shard's inflater and compressor
    // are made once, for every connection.
    let sub = br#"{"event":"subscribe","topic":"a-topic-name-long-enough-to-pass-the-threshold-of-128-bytes-so-that-the-reply-is-compressed-too","id":1}"#;
    let z = crate::proto::deflate::tests::client_deflate(sub);
    let mut f = frame(1, &z);
    f[0] |= 0x40;
    st.on_input(first, &mut f);
    let reply = written(&mut st, first);
    assert_eq!(reply[0], 0xC1, "a compressed reply");
    st.take_dirty(&mut Vec::new());
    let before = heap::live();
    for _ in 0..100 {
        let slot = upgraded_with(&mut st, &offer);
        assert_ne!(st.conns[slot as usize].deflate_bits(), 0, "negotiated");
        st.take_dirty(&mut Vec::new());
    }
    let per_conn = (heap::live() - before) as f64 / 100.0;
    assert_eq!(per_conn, 0.0, "heap bytes per idle deflate connection");
}

#[test]
fn deflate_subscribers_share_one_compressed_frame() {
    let mut st = shard();
    let offer = deflate_upgrade();
    let slots = [
        upgraded_with(&mut st, &offer),
        upgraded_with(&mut st, &offer),
        upgraded(&mut st),
    ];
    let ids = slots.map(|s| st.conns[s as usize].id);
    for s in slots {
        st.on_input(s, &mut frame(1, br#"{"event":"subscribe","topic":"t"}"#));
    }
    let data = format!("\"{}\"", "compressible ".repeat(40));
    let pubf = envelope::publication("t", "m", Some(data.as_bytes()));
    st.deliver_local("t", &pubf, None);
    let [a, b, plain] = ids.map(|id| st.take_queued(id).pop().unwrap());
    assert_eq!(a[0], 0xC1, "RSV1 set");
    assert!(a.len() < pubf.len() / 3);
    assert_eq!(a.as_ptr(), b.as_ptr(), "one compressed encoding, shared");
    assert_eq!(plain.as_ptr(), pubf.as_ptr(), "the plain one as before");
    // Under the threshold: the plain frame for everyone.
    let small = envelope::publication("t", "m", Some(b"1"));
    st.deliver_local("t", &small, None);
    for id in ids {
        assert_eq!(st.take_queued(id).pop().unwrap().as_ptr(), small.as_ptr());
    }
}

#[test]
fn an_idle_connection_is_one_small_slab_entry() {
    // What a quiet connection costs the shard: its entry, nothing allocated beside it.
    // Every byte of an idle connection (BENCHMARKS.md, "Idle connections").
    use std::mem::size_of;
    let size = size_of::<ConnEntry>();
    eprintln!("ConnEntry: {size} bytes");
    assert!(size <= 256, "ConnEntry is {size} bytes");
    assert!(size_of::<Phase>() <= 16, "Phase: {}", size_of::<Phase>());
    assert_eq!(size_of::<crate::policy::permissions::Permissions>(), 8);
    assert_eq!(size_of::<Option<Stamp>>(), 4);
    let mut st = shard();
    let slot = upgraded(&mut st);
    let c = &st.conns[slot as usize];
    assert_eq!(c.buffer_capacities().0, 0, "no read buffer while idle");
    assert_eq!(c.buffer_capacities().1, 0, "no write buffer while idle");
    assert!(c.out.is_empty());
}

#[test]
fn an_entrys_peer_address_round_trips_in_19_bytes() {
    use super::entry::Peer;
    assert!(std::mem::size_of::<Peer>() <= 19);
    for a in [
        "1.2.3.4:80",
        "[::1]:443",
        "[::ffff:1.2.3.4]:8080",
        "[2001:db8::7]:65535",
    ] {
        let addr: std::net::SocketAddr = a.parse().expect("an address");
        let p = Peer::from(addr);
        assert_eq!(p.addr(), addr, "{a}");
        assert_eq!(p.ip(), addr.ip(), "{a}");
        assert_eq!(p.to_string(), addr.to_string());
    }
}

#[test]
fn split_frames_are_reassembled_and_whole_ones_decoded_in_place() {
    let mut st = shard();
    let slot = upgraded(&mut st);
    let sub = frame(1, br#"{"event":"subscribe","topic":"t","id":1}"#);
    // Byte by byte: the incomplete frame is kept in the entry's spill buffer.
    for b in &sub {
        st.on_input(slot, &mut [*b]);
    }
    let reply = written(&mut st, slot);
    assert!(
        reply.windows(4).any(|w| w == b"\"id\""),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(
        st.conns[slot as usize].buffer_capacities().0,
        0,
        "spill freed after use"
    );
}

#[test]
fn fan_out_is_corked_one_flush_per_connection_sharing_one_frame() {
    let mut st = shard();
    let a = upgraded(&mut st);
    let b = upgraded(&mut st);
    for s in [a, b] {
        st.on_input(s, &mut frame(1, br#"{"event":"subscribe","topic":"t"}"#));
    }
    let mut dirty = Vec::new();
    st.take_dirty(&mut dirty);
    dirty.clear();
    let pubf = envelope::publication("t", "m", Some(b"1"));
    for _ in 0..3 {
        st.deliver_local("t", &pubf, None);
    }
    st.take_dirty(&mut dirty);
    dirty.sort();
    assert_eq!(
        dirty,
        vec![a, b],
        "each connection is flushed once per iteration"
    );
    let mut iov = Vec::new();
    assert!(st.next_send(a, &mut iov));
    assert_eq!(iov.len(), 3, "one send carries every queued frame");
    assert!(
        iov.iter().all(|v| v.iov_base as *const u8 == pubf.as_ptr()),
        "the iovecs point at the one shared encoding"
    );
}

#[test]
fn partial_writes_resume_mid_frame() {
    let mut st = shard();
    let slot = upgraded(&mut st);
    let f = envelope::publication("t", "m", Some(b"\"0123456789\""));
    st.enqueue(st.conns[slot as usize].id, f.clone());
    let mut iov = Vec::new();
    assert!(st.next_send(slot, &mut iov));
    assert!(st.on_sent(slot, 5), "more to write after a short write");
    assert!(st.next_send(slot, &mut iov));
    assert_eq!(iov[0].iov_len, f.len() - 5);
    assert_eq!(iov[0].iov_base as *const u8, f[5..].as_ptr());
}

#[test]
fn a_slow_consumer_finishes_the_frame_in_flight_then_gets_1008() {
    let mut st = shard();
    let slot = upgraded(&mut st);
    let id = st.conns[slot as usize].id;
    let big = envelope::publication("t", "m", Some(&vec![b'1'; 1000]));
    st.enqueue(id, big.clone());
    let mut iov = Vec::new();
    assert!(st.next_send(slot, &mut iov), "a send is in flight");
    // Overflow the queue while the kernel holds the first frame.
    let limit = st.hub.config.outbound_queue;
    for _ in 0..=(limit / big.len()) {
        st.enqueue(id, big.clone());
    }
    let c = &st.conns[slot as usize];
    assert!(c.closing.is_some(), "cut as a slow consumer");
    assert_eq!(c.out.len(), 2, "the frame in flight and the close frame");
    assert_eq!(c.out[0].as_ptr(), big.as_ptr());
    let close = c.out[1].clone();
    assert_eq!(&close[..2], &[0x88, 2 + "slow consumer".len() as u8]);
    assert_eq!(&close[2..4], &1008u16.to_be_bytes());
}

#[test]
fn oversized_head_in_one_read_is_431() {
    let mut st = shard();
    let slot = st.accept(-1, ([127, 0, 0, 1], 1).into());
    let mut req = b"GET /ws HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 20_000));
    req.extend_from_slice(b"\r\n\r\n");
    st.on_input(slot, &mut req);
    let resp = written(&mut st, slot);
    assert!(
        resp.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
}

#[test]
fn eof_after_the_close_releases_the_entry_and_closes_the_fd() {
    let mut st = shard();
    let slot = st.accept(7, ([127, 0, 0, 1], 1).into());
    st.on_input(slot, &mut UPGRADE.to_vec());
    written(&mut st, slot);
    st.on_input(slot, &mut frame(8, &1000u16.to_be_bytes()));
    let echo = written(&mut st, slot);
    assert_eq!(&echo[..4], &[0x88, 2, 0x03, 0xe8], "close echoed");
    let mut io = Vec::new();
    st.take_io(&mut io);
    assert_eq!(io, vec![IoReq::ShutWr(st.slot_id(slot).unwrap())]);
    assert_eq!(st.len(), 1, "waits for the peer's EOF");
    st.on_eof(slot);
    st.take_io(&mut io);
    assert_eq!(io, vec![IoReq::Close(7)]);
    assert_eq!(st.len(), 0);
}

#[test]
fn a_burst_split_at_every_boundary_is_decoded_without_errors() {
    let hub = Arc::new(HubShared::for_bench_pubsub(1));
    let mut burst = Vec::new();
    for i in 0..64 {
        let env = format!(r#"{{"topic":"t","event":"m","data":"{i:0>60}"}}"#);
        burst.extend(frame(1, env.as_bytes()));
    }
    for split in [1, 7, 100, 333, 1000, 4096] {
        let mut st = ShardState::new(0, hub.clone());
        let publisher = upgraded(&mut st);
        let sub = upgraded(&mut st);
        st.on_input(sub, &mut frame(1, br#"{"event":"subscribe","topic":"t"}"#));
        written(&mut st, sub);
        for chunk in burst.chunks(split) {
            st.on_input(publisher, &mut chunk.to_vec());
        }
        let to_pub = written(&mut st, publisher);
        assert!(
            to_pub.is_empty(),
            "split {split}: {}",
            String::from_utf8_lossy(&to_pub)
        );
        let got = written(&mut st, sub);
        let n = got.windows(7).filter(|w| w == b"\"event\"").count();
        assert_eq!(n, 64, "split {split}");
    }
}

#[test]
fn a_request_body_that_does_not_arrive_in_time_gets_408() {
    let mut st = shard();
    let start = std::time::Instant::now();
    st.set_now(start);
    let slot = st.accept(-1, ([127, 0, 0, 1], 1).into());
    let mut req =
        b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"topic\""
            .to_vec();
    st.on_input(slot, &mut req);
    assert!(
        written(&mut st, slot).is_empty(),
        "waits for the rest of the body"
    );
    let late = start + st.hub.config.handshake_timeout + std::time::Duration::from_secs(2);
    st.set_now(late);
    st.tick();
    let resp = written(&mut st, slot);
    assert!(
        resp.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
}

/// A kept-alive HTTP connection between requests costs what an idle WebSocket does: its slab
/// entry, no read, write or queue buffer beside it (idle keep-alive connections count against
/// the same memory budget).
#[test]
fn a_kept_alive_http_connection_allocates_nothing_between_requests() {
    let mut hub = HubShared::for_bench(1);
    hub.config.guard =
        crate::policy::guard::Guard::from_settings(&crate::config::settings::Settings::default())
            .expect("default policy");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    hub.links.api = Some(tx);
    let mut st = ShardState::new(0, Arc::new(hub));
    let mut served = |st: &mut ShardState| {
        let slot = st.accept(-1, ([127, 0, 0, 1], 1).into());
        st.on_input(
            slot,
            &mut b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        );
        let Ok(crate::shard::shared::ControlJob::Http(job)) = rx.try_recv() else {
            panic!("the request went to the API thread");
        };
        assert_eq!(job.keep, crate::shard::shared::KeepAlive::Http11);
        st.http_response(
            job.conn,
            bytes::Bytes::from_static(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        );
        assert!(written(st, slot).starts_with(b"HTTP/1.1 200"));
        st.take_dirty(&mut Vec::new());
        slot
    };
    // The first connections warm what the shard keeps per address (the per-IP count) and the
    // API channel's blocks (allocated per 32 jobs, then reused).
    for _ in 0..100 {
        served(&mut st);
    }
    let before = heap::live();
    let mut slot = 0;
    for _ in 0..100 {
        slot = served(&mut st);
    }
    assert_eq!(
        (heap::live() - before) as f64 / 100.0,
        0.0,
        "heap bytes per kept-alive connection"
    );
    let c = &st.conns[slot as usize];
    assert!(matches!(c.phase, Phase::Head) && c.has(flag::KEPT));
    assert_eq!(c.buffer_capacities().0, 0, "no read buffer while idle");
    assert_eq!(c.buffer_capacities().1, 0, "no write buffer while idle");
    assert_eq!(c.out.capacity(), 0, "no queue buffer while idle");
}
