//! The io_uring shell, on the `io-uring` crate: one ring per shard, no task per connection.
//!
//! - Multishot accept on the shard's `SO_REUSEPORT` listener.
//! - One provided-buffer ring per shard and a multishot receive per connection, re-armed when
//!   the kernel ends it (ENOBUFS included): frames are decoded straight out of the kernel-filled
//!   buffer, which goes back to the ring at once; only an incomplete frame is copied to the
//!   connection. An idle connection holds no buffer at all.
//! - Corked sends: at the end of each iteration every connection with output gets one
//!   `SENDMSG` over iovecs of its queued frames (the shared `Bytes`, no copy), at most one in
//!   flight per socket, and all of them reach the kernel in one `io_uring_enter`.
//! - `SINGLE_ISSUER` + `DEFER_TASKRUN` (completions are processed only when the loop asks), or
//!   `COOP_TASKRUN`, where the kernel has them; the choice is logged once.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{apply_io, FdReserve, RateLog, Stopping};
use crate::shard::shared::HubShared;
use crate::shard::{Rewatch, ShardState};

use super::bufring::BufRing;

const KIND_SHIFT: u32 = 56;
const ACCEPT: u64 = 1 << KIND_SHIFT;
const WAKE: u64 = 2 << KIND_SHIFT;
const RECV: u64 = 3 << KIND_SHIFT;
const SEND: u64 = 4 << KIND_SHIFT;
const CANCEL: u64 = 5 << KIND_SHIFT;
/// A one-shot poll on a socket a polling session borrowed (readiness only: nothing is read).
const POLL: u64 = 6 << KIND_SHIFT;

/// Submission queue entries; the completion queue is four times larger.
const SQ_ENTRIES: u32 = 4096;
/// Sends submitted per loop iteration, at most (a quarter of the completion queue).
const MAX_SENDS: usize = SQ_ENTRIES as usize;
/// The provided-buffer ring: buffers of this size, this many per shard.
const BUF_SIZE: usize = 16 * 1024;
const BUF_COUNT: u16 = 256;
const BGID: u16 = 0;

static LOGGED: AtomicBool = AtomicBool::new(false);

/// Checks that this process may create a ring with provided buffers (seccomp, kernel version).
pub(crate) fn probe() -> io::Result<()> {
    std::thread::spawn(|| {
        let (ring, _) = new_ring()?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (op, name) in [
            (opcode::AcceptMulti::CODE, "multishot accept"),
            (opcode::RecvMulti::CODE, "multishot receive"),
            (opcode::SendMsg::CODE, "sendmsg"),
        ] {
            if !probe.is_supported(op) {
                return Err(io::Error::other(format!("io_uring lacks {name}")));
            }
        }
        BufRing::new(&ring, 2, 64, BGID).map(drop)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("io_uring probe panicked")))
}

/// A ring with the best setup flags this kernel takes.
fn new_ring() -> io::Result<(IoUring, &'static str)> {
    type Setup = fn(&mut io_uring::Builder);
    let attempts: [(&str, Setup); 3] = [
        ("SINGLE_ISSUER+DEFER_TASKRUN", |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        ("COOP_TASKRUN", |b| {
            b.setup_coop_taskrun();
        }),
        ("no setup flags", |_| {}),
    ];
    let mut last = None;
    for (name, f) in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(SQ_ENTRIES * 4);
        f(&mut b);
        match b.build(SQ_ENTRIES) {
            Ok(r) => return Ok((r, name)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("io_uring setup failed")))
}

/// Per-connection send state the kernel reads until the send completes: boxed, so its address
/// is stable, and pooled, so an idle connection holds none.
struct SendSlot {
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

struct Loop {
    ring: IoUring,
    bufs: BufRing,
    /// The send in flight of each connection slot.
    sends: Vec<Option<Box<SendSlot>>>,
    /// Boxes, not slots: a pooled slot keeps the address the kernel was given.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<SendSlot>>,
    wake_buf: Box<u64>,
}

impl Loop {
    /// Queues a submission, submitting first if the queue is full.
    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points at (iovecs and msghdr in a boxed `SendSlot`,
            // the wake-up word, ring buffers) stays alive and unmoved until its completion.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            if self.ring.submit().is_err() {
                // The kernel could not take entries now: let it complete some first.
                let _ = self.ring.submit_and_wait(1);
            }
        }
    }

    fn arm_recv(&mut self, st: &mut ShardState, slot: u32) {
        let Some(fd) = st.fd(slot) else { return };
        if let Some(ops) = st.ops_mut(slot) {
            *ops += 1;
        }
        let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(RECV | slot as u64);
        self.push(e);
    }

    /// Sockets that changed entries (a polling session borrowing or giving back its parked GET's
    /// socket): a receive to cancel before the move, or to arm after it.
    fn rewatch(&mut self, st: &mut ShardState, list: &mut Vec<Rewatch>) {
        // Giving a socket back asks for more: until none is left.
        loop {
            st.take_rewatch(list);
            if list.is_empty() {
                return;
            }
            self.rewatch_once(st, list);
        }
    }

    fn rewatch_once(&mut self, st: &mut ShardState, list: &mut Vec<Rewatch>) {
        for r in list.drain(..) {
            match r {
                Rewatch::Cancel(id) if st.live_fd(id).is_some() => {
                    let e = opcode::AsyncCancel::new(RECV | id.slot() as u64)
                        .build()
                        .user_data(CANCEL);
                    self.push(e);
                }
                Rewatch::Watch(id) if st.live_fd(id).is_some() => {
                    if st.lent(id.slot()) {
                        self.arm_poll(st, id.slot());
                    } else if st.wants_input(id.slot()) {
                        self.arm_recv(st, id.slot());
                    }
                }
                Rewatch::Unpoll(id) if st.ops_of(id) > 0 => {
                    let e = opcode::AsyncCancel::new(POLL | id.slot() as u64)
                        .build()
                        .user_data(CANCEL);
                    self.push(e);
                }
                _ => {}
            }
        }
    }

    /// Watches a borrowed socket for input or EOF, which give it back (`lent_ready`).
    fn arm_poll(&mut self, st: &mut ShardState, slot: u32) {
        let Some(fd) = st.fd(slot) else { return };
        if let Some(ops) = st.ops_mut(slot) {
            *ops += 1;
        }
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let e = opcode::PollAdd::new(types::Fd(fd), mask)
            .build()
            .user_data(POLL | slot as u64);
        self.push(e);
    }

    fn arm_wake(&mut self, efd: RawFd) {
        let ptr = &mut *self.wake_buf as *mut u64 as *mut u8;
        let e = opcode::Read::new(types::Fd(efd), ptr, 8)
            .build()
            .user_data(WAKE);
        self.push(e);
    }

    fn arm_accept(&mut self, lfd: RawFd) {
        let e = opcode::AcceptMulti::new(types::Fd(lfd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT);
        self.push(e);
    }

    /// One send per connection with output (corked: all of them go in the next submit).
    ///
    /// At most [`MAX_SENDS`] per iteration: their completions must fit the completion queue
    /// (the kernel refuses submissions while it overflows); the rest wait for the next
    /// iteration, which then does not sleep.
    fn flush(&mut self, st: &mut ShardState, dirty: &mut Vec<u32>) {
        st.take_dirty(dirty);
        let mut sends = 0;
        for (i, &slot) in dirty.iter().enumerate() {
            if sends == MAX_SENDS {
                st.requeue_dirty(&dirty[i..]);
                break;
            }
            let Some(fd) = st.fd(slot) else { continue };
            let mut s = self.pool.pop().unwrap_or_else(|| {
                Box::new(SendSlot {
                    iov: Vec::new(),
                    // SAFETY: an all-zero msghdr is a valid empty one.
                    msg: unsafe { std::mem::zeroed() },
                })
            });
            if !st.next_send(slot, &mut s.iov) {
                self.pool.push(s);
                continue;
            }
            s.msg.msg_iov = s.iov.as_mut_ptr();
            s.msg.msg_iovlen = s.iov.len() as _;
            let e = opcode::SendMsg::new(types::Fd(fd), &s.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(SEND | slot as u64);
            let i = slot as usize;
            if self.sends.len() <= i {
                self.sends.resize_with(i + 1, || None);
            }
            self.sends[i] = Some(s);
            if let Some(ops) = st.ops_mut(slot) {
                *ops += 1;
            }
            self.push(e);
            sends += 1;
        }
        dirty.clear();
    }

    fn send_done(&mut self, slot: u32) {
        if let Some(mut s) = self.sends.get_mut(slot as usize).and_then(Option::take) {
            s.iov.clear();
            // Keep a few for reuse; big iovec arrays of a burst are not worth keeping.
            if self.pool.len() < 1024 && s.iov.capacity() <= 64 {
                self.pool.push(s);
            }
        }
    }
}

/// Runs shard `index` until it has shut down.
pub(crate) fn run(
    index: usize,
    hub: Arc<HubShared>,
    listener: std::net::TcpListener,
) -> io::Result<()> {
    let (ring, setup) = new_ring()?;
    let bufs = BufRing::new(&ring, BUF_COUNT, BUF_SIZE, BGID)?;
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::info!(
            setup,
            buffers = BUF_COUNT,
            buffer_size = BUF_SIZE,
            "io_uring ring: multishot accept and receive, provided buffers"
        );
    }
    let mut lp = Loop {
        ring,
        bufs,
        sends: Vec::new(),
        pool: Vec::new(),
        wake_buf: Box::new(0),
    };
    let inbox = &hub.inboxes[index];
    let efd = inbox.eventfd();
    let mut listener = Some(listener);
    let lfd = listener.as_ref().map_or(-1, |l| l.as_raw_fd());
    lp.arm_accept(lfd);
    lp.arm_wake(efd);
    let mut st = ShardState::new(index, hub.clone());
    let (mut dirty, mut io, mut cut, mut adopted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut moved = Vec::new();
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
    let mut stopping = Stopping::default();
    let mut accept_log = RateLog::new();
    let mut reserve = FdReserve::new();
    let mut accept_retry: Option<Instant> = None;
    let mut accepting = true;
    loop {
        lp.flush(&mut st, &mut dirty);
        apply_io(&mut st, &mut io, &mut cut);
        cut.clear();
        lp.rewatch(&mut st, &mut moved);
        let now = Instant::now();
        let mut wake = st.next_tick();
        for t in [accept_retry, stopping.wake_at()].into_iter().flatten() {
            wake = wake.min(t);
        }
        let wait = if inbox.arm() && !st.has_dirty() {
            wake.saturating_duration_since(now)
        } else {
            Duration::ZERO
        };
        let ts = types::Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        // Always asks for one completion (with a timeout, zero when busy): with DEFER_TASKRUN
        // completions are only produced when the loop enters the kernel to wait for them.
        if let Err(e) = lp.ring.submitter().submit_with_args(1, &args) {
            match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY) => {}
                _ => return Err(e),
            }
        }
        st.set_now(Instant::now());
        cqes.clear();
        cqes.extend(
            lp.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            let slot = (ud & ((1 << KIND_SHIFT) - 1)) as u32;
            match ud & !((1 << KIND_SHIFT) - 1) {
                RECV => {
                    if res > 0 {
                        if let Some(bid) = cqueue::buffer_select(flags) {
                            let data = lp.bufs.get_mut(bid, res as usize);
                            st.on_input(slot, data);
                            lp.bufs.recycle(bid);
                        }
                    } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        // 0: EOF; other errors (reset): no more input either. A cancelled
                        // receive is one whose socket moves to another entry (`Rewatch`).
                        st.on_eof(slot);
                    }
                    if !cqueue::more(flags) {
                        if let Some(ops) = st.ops_mut(slot) {
                            *ops = ops.saturating_sub(1);
                        }
                        if st.recv_ended(slot) {
                            lp.arm_recv(&mut st, slot);
                        }
                    }
                }
                POLL => {
                    if let Some(ops) = st.ops_mut(slot) {
                        *ops = ops.saturating_sub(1);
                    }
                    if res > 0 {
                        st.lent_ready(slot);
                    }
                    // A session that ended while the poll was armed goes now.
                    st.release_if_done(slot);
                }
                SEND => {
                    lp.send_done(slot);
                    if let Some(ops) = st.ops_mut(slot) {
                        *ops = ops.saturating_sub(1);
                    }
                    if res >= 0 {
                        if st.on_sent(slot, res as usize) {
                            st.flush_later(slot);
                        }
                    } else {
                        st.on_send_error(slot);
                    }
                }
                ACCEPT => {
                    if res >= 0 {
                        let fd = res as RawFd;
                        let slot = st.accept(fd, super::peer_addr(fd));
                        lp.arm_recv(&mut st, slot);
                    } else if res != -libc::ECANCELED {
                        let now = Instant::now();
                        let shed = if FdReserve::is_exhaustion(-res) && listener.is_some() {
                            reserve.shed(lfd, 64)
                        } else {
                            0
                        };
                        if let Some(skipped) = accept_log.allow(now) {
                            let e = io::Error::from_raw_os_error(-res);
                            tracing::warn!(error = %e, shed, skipped, "accept failed; clients waiting were answered 503; pausing accepts for 100 ms");
                        }
                        accept_retry = Some(now + Duration::from_millis(100));
                    }
                    if !cqueue::more(flags) {
                        accepting = false;
                    }
                }
                WAKE => lp.arm_wake(efd),
                _ => {}
            }
        }
        lp.bufs.commit();
        while let Some(msg) = inbox.pop() {
            st.handle_msg(msg);
        }
        // Sockets adopted from an embedding server: watched like accepted ones.
        st.take_adopted(&mut adopted);
        for slot in adopted.drain(..) {
            if st.wants_input(slot) {
                lp.arm_recv(&mut st, slot);
            }
        }
        lp.rewatch(&mut st, &mut moved);
        st.tick();
        if !accepting && listener.is_some() && accept_retry.is_none_or(|t| Instant::now() >= t) {
            accept_retry = None;
            accepting = true;
            lp.arm_accept(lfd);
        }
        if st.is_shutting_down() {
            if let Some(l) = listener.take() {
                // The pending multishot accept holds a reference to the listening socket: take
                // it out of LISTEN now (the accept completes with an error), then cancel.
                // SAFETY: shuts down the listener we still own; it is closed right after.
                unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
                drop(l);
                let e = opcode::AsyncCancel::new(ACCEPT).build().user_data(CANCEL);
                lp.push(e);
                stopping.begin(Instant::now(), hub.config.shutdown_timeout);
            }
            if stopping.check(&mut st, Instant::now()) {
                let _ = lp.ring.submit();
                // The ring goes first: the kernel may still point at frames the state owns.
                drop(lp);
                drop(st);
                return Ok(());
            }
        }
    }
}
