//! Throttling of wrong API keys per client address: a guesser gets 429 after a few failures
//! instead of thousands of tries a second, and the log says who (the address, never the key).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong keys one address may present per window before it gets 429.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (expired ones are forgotten first when full).
const MAX_TRACKED: usize = 10_000;

/// Failure counts of wrong API keys, one per server (the hub's shared state holds it behind a
/// mutex: the API thread and the shards that answer a publish themselves both check and count).
#[derive(Default)]
pub(crate) struct KeyGuard {
    fails: HashMap<IpAddr, (Instant, u32)>,
}

impl KeyGuard {
    /// Whether `ip` is throttled now.
    pub(crate) fn blocked(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.fails.get(&ip) {
            Some((since, n)) if now.duration_since(*since) < WINDOW => *n >= MAX_FAILURES,
            Some(_) => {
                self.fails.remove(&ip);
                false
            }
            None => false,
        }
    }

    /// Counts a wrong key from `ip`; logs the start of a burst and the start of throttling.
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.fails.len() >= MAX_TRACKED && !self.fails.contains_key(&ip) {
            self.fails
                .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if self.fails.len() >= MAX_TRACKED {
                self.fails.clear();
            }
        }
        let e = self.fails.entry(ip).or_insert((now, 0));
        e.1 += 1;
        if e.1 == 1 {
            tracing::warn!(peer = %ip, "API: missing or wrong API key");
        } else if e.1 == MAX_FAILURES {
            tracing::warn!(
                peer = %ip,
                failures = MAX_FAILURES,
                "API: too many wrong API keys: answering 429 for {}s",
                WINDOW.as_secs()
            );
        }
    }
}

/// The [`KeyGuard`] the API thread and the shards share. Its lock is taken only within
/// [`WINDOW`] of the latest wrong key: every record is older than that after it, so a shard
/// answering a publish takes no lock shared with the other shards in the common case.
pub(crate) struct SharedKeyGuard {
    base: Instant,
    /// Milliseconds after `base` from which no record can still count (0: none yet).
    quiet_after: std::sync::atomic::AtomicU64,
    inner: std::sync::Mutex<KeyGuard>,
}

impl Default for SharedKeyGuard {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            quiet_after: Default::default(),
            inner: Default::default(),
        }
    }
}

impl SharedKeyGuard {
    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyGuard> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` is throttled now (without the lock when no record can still count).
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        if self.ms(now) >= self.quiet_after.load(Acquire) {
            return false;
        }
        self.lock().blocked(ip, now)
    }

    /// Counts a wrong key from `ip` (see [`KeyGuard::failed`]).
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        use std::sync::atomic::Ordering::Release;
        let mut g = self.lock();
        g.failed(ip, now);
        let until = self.ms(now).saturating_add(WINDOW.as_millis() as u64 + 1);
        self.quiet_after.fetch_max(until, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Throttled after MAX_FAILURES wrong keys, for the window; other addresses never; and
    /// once the window has passed, the answer comes without the lock (a held lock would block).
    #[test]
    fn shared_guard_throttles_then_goes_quiet() {
        let g = SharedKeyGuard::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = g.base;
        assert!(!g.blocked(a, t0), "nothing on record");
        for _ in 0..MAX_FAILURES {
            g.failed(a, t0);
        }
        assert!(g.blocked(a, t0 + Duration::from_secs(1)));
        assert!(!g.blocked(b, t0 + Duration::from_secs(1)));
        let held = g.lock();
        assert!(
            !g.blocked(a, t0 + WINDOW + Duration::from_secs(1)),
            "quiet: no lock taken"
        );
        drop(held);
    }
}
