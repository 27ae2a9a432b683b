//! When the write-ahead log is synced (`[store] sync`), as plain data (sans-IO: told when a
//! record was written, asked whether to `fdatasync` now).
//!
//! - `always` (`every: None`): every record is synced before its batch is answered (durable
//!   across a kernel crash or power loss).
//! - `interval` (`every: Some(interval)`): a batch is answered once its record is written (in the kernel's
//!   page cache, so a process crash — `kill -9` — loses nothing); the log is synced at the first
//!   batch or idle tick once the oldest unsynced record is `interval` old, at every checkpoint
//!   (redb's commit makes the records durable in the database) and when the store closes. A
//!   kernel crash or power loss can lose the writes answered in about the last `interval`.

use std::time::{Duration, Instant};

/// The sync policy's state: which records are written but not yet durable.
#[derive(Debug, Clone)]
pub(crate) struct SyncPolicy {
    /// `None`: sync every record; else the longest a written record waits for its sync.
    every: Option<Duration>,
    /// When the oldest record written since the last sync was written (none: all durable).
    unsynced_since: Option<Instant>,
    /// Log syncs made (the `store_log_syncs` metric).
    syncs: u64,
}

impl SyncPolicy {
    /// A policy with nothing unsynced.
    pub(crate) fn new(every: Option<Duration>) -> Self {
        Self {
            every,
            unsynced_since: None,
            syncs: 0,
        }
    }

    /// `None`: every record is synced; else the interval.
    pub(crate) fn every(&self) -> Option<Duration> {
        self.every
    }

    /// A record was written at `now`: whether to sync the log before answering its batch.
    pub(crate) fn written(&mut self, now: Instant) -> bool {
        let since = *self.unsynced_since.get_or_insert(now);
        match self.every {
            None => true,
            Some(every) => now.saturating_duration_since(since) >= every,
        }
    }

    /// Whether a sync is due at `now` without a new record (the store thread's idle tick).
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.wait(now) == Some(Duration::ZERO)
    }

    /// How long until a sync is due (zero: now); `None` when everything written is durable.
    pub(crate) fn wait(&self, now: Instant) -> Option<Duration> {
        let since = self.unsynced_since?;
        let every = self.every.unwrap_or(Duration::ZERO);
        Some((since + every).saturating_duration_since(now))
    }

    /// Whether records are written but not durable.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced_since.is_some()
    }

    /// Everything written is durable now: the log was synced (or the database checkpointed).
    pub(crate) fn synced(&mut self) {
        self.unsynced_since = None;
        self.syncs += 1;
    }

    /// Everything written is durable because the database was checkpointed (no log sync).
    pub(crate) fn checkpointed(&mut self) {
        self.unsynced_since = None;
    }

    /// Log syncs made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn always_syncs_every_record() {
        let t = Instant::now();
        let mut p = SyncPolicy::new(None);
        assert_eq!(p.wait(t), None);
        assert!(p.written(t));
        assert!(p.written(t + MS));
        p.synced();
        assert!(!p.unsynced());
        assert!(!p.due(t + 1000 * MS));
    }

    #[test]
    fn interval_syncs_once_the_oldest_unsynced_record_is_interval_old() {
        let t = Instant::now();
        let mut p = SyncPolicy::new(Some(100 * MS));
        // The first record starts the interval; later ones before its end wait.
        assert!(!p.written(t));
        assert!(!p.written(t + 50 * MS));
        assert!(!p.written(t + 99 * MS));
        assert_eq!(p.wait(t + 60 * MS), Some(40 * MS));
        assert!(
            p.written(t + 100 * MS),
            "due: the record at t is 100 ms old"
        );
        p.synced();
        assert_eq!(p.wait(t + 100 * MS), None);
        // A quiet store: the next record starts a new interval, however long the pause.
        assert!(!p.written(t + 10_000 * MS));
        assert!(p.written(t + 10_100 * MS));
        assert_eq!(p.syncs(), 1);
    }

    #[test]
    fn idle_tick_syncs_a_quiet_store_within_the_interval() {
        let t = Instant::now();
        let mut p = SyncPolicy::new(Some(1000 * MS));
        assert!(!p.due(t), "nothing written: nothing to sync");
        assert!(!p.written(t + 5 * MS));
        assert!(!p.due(t + 500 * MS));
        assert_eq!(p.wait(t + 500 * MS), Some(505 * MS));
        assert!(p.due(t + 1005 * MS));
        assert!(p.due(t + 5000 * MS));
        assert_eq!(p.wait(t + 5000 * MS), Some(Duration::ZERO));
        p.synced();
        assert!(!p.due(t + 6000 * MS));
        assert_eq!(p.wait(t + 6000 * MS), None);
    }

    #[test]
    fn a_checkpoint_makes_everything_durable_without_a_log_sync() {
        let t = Instant::now();
        let mut p = SyncPolicy::new(Some(1000 * MS));
        assert!(!p.written(t));
        p.checkpointed();
        assert!(!p.unsynced());
        assert_eq!(p.syncs(), 0);
        // The interval starts again at the next record.
        assert!(!p.written(t + 1500 * MS));
        assert!(p.due(t + 2500 * MS));
    }
}
