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
