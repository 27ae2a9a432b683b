//! Thread-per-core execution: N OS threads, each with its own current-thread tokio
//! runtime and `LocalSet`; plus phase signalling and a progress spinner for the
//! coordinating (main) thread.

use indicatif::{ProgressBar, ProgressStyle};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Spawns `threads` worker threads; thread `i` runs `f(i)` to completion on a
/// current-thread runtime with a `LocalSet` (so `spawn_local` works).
pub fn spawn_workers<F, Fut, R>(threads: usize, f: F) -> Vec<JoinHandle<anyhow::Result<R>>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<R>> + 'static,
    R: Send + 'static,
{
    let f = std::sync::Arc::new(f);
    (0..threads)
        .map(|i| {
            let f = f.clone();
            std::thread::Builder::new()
                .name(format!("lt-worker-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, f(i))
                })
                .expect("spawn worker thread")
        })
        .collect()
}

/// Joins all workers, turning panics into errors.
pub fn join_workers<R>(handles: Vec<JoinHandle<anyhow::Result<R>>>) -> anyhow::Result<Vec<R>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.join() {
            Ok(r) => out.push(r?),
            Err(_) => anyhow::bail!("a worker thread panicked"),
        }
    }
    Ok(out)
}

/// Run phases, broadcast from the main thread to every task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Setup = 0,
    Running = 1,
    Draining = 2,
    Done = 3,
}

/// Phase broadcast: an atomic for cheap polling plus a watch channel for waiting.
pub struct Phases {
    atomic: AtomicU8,
    tx: watch::Sender<Phase>,
}

impl Default for Phases {
    fn default() -> Self {
        Phases {
            atomic: AtomicU8::new(Phase::Setup as u8),
            tx: watch::channel(Phase::Setup).0,
        }
    }
}

impl Phases {
    pub fn set(&self, p: Phase) {
        self.atomic.store(p as u8, Ordering::Release);
        self.tx.send_replace(p);
    }

    pub fn get(&self) -> Phase {
        match self.atomic.load(Ordering::Acquire) {
            0 => Phase::Setup,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Done,
        }
    }

    /// Waits until the phase is at least `p`.
    pub async fn wait_for(&self, p: Phase) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|cur| *cur >= p).await;
    }
}

/// A counter written by one thread only, padded to its own cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct Padded(pub AtomicU64);

/// Per-thread counters summed by the main thread.
pub fn sum(counters: &[Padded]) -> u64 {
    counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

/// Adds to a single-writer counter.
pub fn bump(c: &Padded, n: u64) {
    c.0.fetch_add(n, Ordering::Relaxed);
}

/// A spinner on stderr (hidden when stderr is not a terminal).
pub fn spinner() -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Polls `done` every 100 ms, refreshing the spinner with `msg()`, until `done()`
/// returns true or `deadline` passes. Returns whether `done()` became true.
pub fn wait_until(
    pb: &ProgressBar,
    deadline: Instant,
    mut done: impl FnMut() -> bool,
    mut msg: impl FnMut() -> String,
) -> bool {
    loop {
        if done() {
            return true;
        }
        pb.set_message(msg());
        let now = Instant::now();
        if now >= deadline {
            return done();
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// Default worker count: the CPUs this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
