//! The log's sync threads: `fdatasync`s of `ringhub.wal` that overlap, so a batch's sync never
//! waits for the previous batch's.
//!
//! # Why
//! On the disk this was built on one thread manages ~2.4k `fdatasync`s a second (~270 µs each)
//! and concurrent ones overlap (BENCHMARKS.md, "Overlapped log syncs"). With one sync at a time
//! on the store thread, a publication that arrives during batch N's sync waits for it to end,
//! then for its own: ~1.5 syncs per answer. Here the store thread writes batch N+1's record and
//! hands its number to an idle sync thread while N's sync is still in flight.
//!
//! # The invariant
//! The store thread asks for a sync of record `lsn` only after `pwrite` returned for it (and for
//! every record before it: it writes them in order). `fdatasync` makes *every* write of the
//! file that completed before it was called durable, whichever thread wrote it, so when a sync
//! asked for `lsn` returns, records `..= lsn` are all on disk: the durable mark is a prefix of
//! the log, whatever order syncs return in. [`SyncState::durable`] is that mark (raised with
//! `fetch_max`: a slower sync of an older target never lowers it). The store thread emits a
//! batch only once the mark reaches its record, so nothing answered can be behind a hole.
//!
//! Before a sync returns, the kernel may write the pages of the log in any order, so a crash can
//! leave record N+1 on disk and N torn or missing. Neither was answered; replay stops at the
//! first record that is cut short, fails its checksum or does not follow its predecessor
//! (`wal::parse`), so it never replays past a hole.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Sync threads per log: a few syncs in flight at once are what the disk overlaps; more only
/// add threads on a 2-core machine.
pub(super) const THREADS: usize = 3;

/// What the sync threads report.
#[derive(Default)]
pub(super) struct SyncState {
    /// The highest record known durable.
    durable: AtomicU64,
    /// Why a sync failed, once one did (every later batch is then refused).
    failed: Mutex<Option<String>>,
}

impl SyncState {
    /// The highest record known durable.
    pub(super) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Records `..= lsn` are durable (a checkpoint, or a sync that returned).
    pub(super) fn mark(&self, lsn: u64) {
        self.durable.fetch_max(lsn, Ordering::AcqRel);
    }

    /// The failure of a sync, once (taken).
    pub(super) fn take_failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|mut f| f.take())
    }
}

/// The pool: requests go to whichever thread is idle.
pub(super) struct Syncer {
    requests: Option<Sender<u64>>,
    state: Arc<SyncState>,
    wake: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Syncer {
    /// Starts [`THREADS`] threads syncing `file` (a handle of the log), durable up to `lsn`.
    pub(super) fn start(file: &File, lsn: u64) -> std::io::Result<Syncer> {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        // One pending wake is enough: the store thread reads the mark, not the messages.
        let (wake_tx, wake) = crossbeam_channel::bounded(1);
        let state = Arc::new(SyncState::default());
        state.mark(lsn);
        let mut threads = Vec::with_capacity(THREADS);
        for i in 0..THREADS {
            let file = file.try_clone()?;
            let rx = rx.clone();
            let state = state.clone();
            let wake_tx: Sender<()> = wake_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("ringhub-walsync-{i}"))
                .spawn(move || sync_loop(&file, &rx, &state, &wake_tx))?;
            threads.push(t);
        }
        Ok(Syncer {
            requests: Some(tx),
            state,
            wake,
            threads,
        })
    }

    /// Asks for record `lsn` (written) to be made durable.
    pub(super) fn request(&self, lsn: u64) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(lsn);
        }
    }

    /// What the threads report.
    pub(super) fn state(&self) -> &SyncState {
        &self.state
    }

    /// Fires when the durable mark may have moved or a sync failed.
    pub(super) fn wake(&self) -> Receiver<()> {
        self.wake.clone()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Closing the channel ends the threads once their sync returns.
        self.requests = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One sync thread: takes the newest request queued (older ones are covered by it), syncs,
/// raises the mark, wakes the store thread.
fn sync_loop(file: &File, rx: &Receiver<u64>, state: &SyncState, wake: &Sender<()>) {
    while let Ok(mut lsn) = rx.recv() {
        while let Ok(newer) = rx.try_recv() {
            lsn = lsn.max(newer);
        }
        if lsn <= state.durable() {
            continue;
        }
        match file.sync_data() {
            Ok(()) => state.mark(lsn),
            Err(e) => {
                if let Ok(mut f) = state.failed.lock() {
                    f.get_or_insert_with(|| format!("syncing the write-ahead log: {e}"));
                }
            }
        }
        let _ = wake.try_send(());
    }
}
