//! Limits. Connection counts: [`ConnLimits`] (total and per IP, checked at the upgrade).
//! Message rates (GCRA, via `governor`): [`ConnLimiter`] per connection, owned by its
//! shard, and [`UserLimiter`] per user id, shared by every shard. Both allow
//! `limits.messages_per_second` with bursts of `limits.burst`; `messages_per_second = 0`
//! turns rate limiting off ([`ConnLimiter::from_limits`] returns `None`).
//!
//! Per message the engine calls [`ConnLimiter::check`] (or [`ConnLimiter::check_user`] for an
//! authenticated user) and acts on the [`Verdict`]: handle the message, answer `rate_limited`,
//! or close the connection with 1008.
//!
//! The close rule: a connection is closed after more than `burst` *consecutive* rejected
//! messages, i.e. with no message allowed in between. The bucket refills one message every
//! `1 / messages_per_second` seconds, so a client that waits for its `rate_limited` errors gets
//! a message through soon and resets the count; only one that keeps sending into a full
//! bucket — more than `burst` messages faster than one refill interval — is closed.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use thiserror::Error;

use crate::policy::settings::LimitSettings;

/// Invalid limiter parameters, or a connection refused by [`ConnLimits`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RateLimitError {
    /// `messages_per_second` or `burst` is zero.
    #[error("messages_per_second and burst must be positive")]
    Zero,
    /// The server holds `limits.max_connections` connections (HTTP 503).
    #[error("too many connections")]
    TooManyConnections,
    /// The client's address holds `limits.max_connections_per_ip` connections (HTTP 429).
    #[error("too many connections from this address")]
    TooManyFromIp,
}

impl RateLimitError {
    /// The HTTP status for refusing an upgrade with this error.
    pub fn http_status(&self) -> u16 {
        match self {
            RateLimitError::TooManyFromIp => 429,
            _ => 503,
        }
    }
}

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit: drop it and answer a `rate_limited` error.
    Reject,
    /// Over the limit and past the close threshold: close the connection with 1008.
    Close,
}

/// The quota for `per_second` messages per second with bursts of `burst`.
fn quota(per_second: u32, burst: u32) -> Result<Quota, RateLimitError> {
    let rate = NonZeroU32::new(per_second).ok_or(RateLimitError::Zero)?;
    let burst = NonZeroU32::new(burst).ok_or(RateLimitError::Zero)?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

/// One connection's limiter. Not shared: the shard owning the connection owns it. Cost per
/// message: one atomic compare-and-swap on its own state (uncontended) and a clock read.
pub struct ConnLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    /// Rejections since the last allowed message.
    strikes: u32,
    /// Close once `strikes` exceeds this (the burst).
    close_after: u32,
}

impl<C: Clock> std::fmt::Debug for ConnLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLimiter")
            .field("strikes", &self.strikes)
            .field("close_after", &self.close_after)
            .finish()
    }
}

impl ConnLimiter {
    /// A limiter of `per_second` messages per second with bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Result<Self, RateLimitError> {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }

    /// The limiter for `[limits]`, or `None` when rate limiting is off (`messages_per_second = 0`).
    pub fn from_limits(limits: &LimitSettings) -> Option<Self> {
        Self::new(limits.messages_per_second, limits.burst).ok()
    }
}

impl<C: Clock> ConnLimiter<C> {
    /// As [`ConnLimiter::new`], on the given clock (tests use `governor::clock::FakeRelativeClock`).
    pub fn with_clock(per_second: u32, burst: u32, clock: C) -> Result<Self, RateLimitError> {
        Ok(Self {
            limiter: RateLimiter::direct_with_clock(quota(per_second, burst)?, clock),
            strikes: 0,
            close_after: burst,
        })
    }

    /// Counts one message from the connection and says what to do with it.
    pub fn check(&mut self) -> Verdict {
        let ok = self.limiter.check().is_ok();
        self.verdict(ok)
    }

    /// Counts one message from `user`'s connection against both this connection's limit and
    /// the user's across all its connections; either being exceeded rejects it (and counts
    /// toward the close threshold).
    pub fn check_user(&mut self, users: &UserLimiter, user: &Arc<str>) -> Verdict {
        let ok = self.limiter.check().is_ok() && users.check(user);
        self.verdict(ok)
    }

    fn verdict(&mut self, allowed: bool) -> Verdict {
        if allowed && self.strikes <= self.close_after {
            self.strikes = 0;
            Verdict::Allow
        } else {
            self.strikes = self.strikes.saturating_add(1);
            if self.strikes > self.close_after {
                Verdict::Close
            } else {
                Verdict::Reject
            }
        }
    }
}

/// Per-user limiter shared by every shard (wrap it in an `Arc`), keyed by the token's `sub`.
///
/// Cost per message: a hash of the user id and a read lock on one of the map's shards
/// (`dashmap`), plus a write lock the first time a user is seen. Memory grows with the users
/// seen: call [`UserLimiter::retain_recent`] periodically (e.g. with the stats tick) to drop
/// users whose bucket is full again.
#[derive(Debug)]
pub struct UserLimiter {
    limiter: DefaultKeyedRateLimiter<Arc<str>>,
}

impl UserLimiter {
    /// A limiter of `per_second` messages per second per user with bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Result<Self, RateLimitError> {
        Ok(Self {
            limiter: RateLimiter::dashmap(quota(per_second, burst)?),
        })
    }

    /// The limiter for `[limits]`, or `None` when rate limiting is off.
    pub fn from_limits(limits: &LimitSettings) -> Option<Self> {
        Self::new(limits.messages_per_second, limits.burst).ok()
    }

    /// Counts one message from `user`; false when over the limit.
    pub fn check(&self, user: &Arc<str>) -> bool {
        self.limiter.check_key(user).is_ok()
    }

    /// Forgets users whose bucket has refilled (no information is lost), freeing memory.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Users currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no user is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

const IP_SHARDS: usize = 64;
type IpCounts = HashMap<IpAddr, usize, BuildHasherDefault<ahash::AHasher>>;

/// Open-connection counters shared by every shard: a total (one atomic) and, when a per-IP
/// limit is set, counts per client address in 64 mutex-guarded maps picked by address hash.
/// IPv6 clients are counted per /64 (one subscriber's usual allocation), IPv4 per address.
///
/// Cost per connection open or close: one atomic compare-and-swap, plus with a per-IP limit one
/// uncontended-in-practice lock and hash-map update. Nothing is done per message.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Box<[Mutex<IpCounts>]>,
}

/// A counted connection: dropping it (when the connection closes) releases its slots.
#[derive(Debug)]
#[must_use = "dropping the permit releases the connection slot at once"]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    key: Option<IpAddr>,
}

impl ConnLimits {
    /// Limits from `limits.max_connections` and `limits.max_connections_per_ip` (0 = unlimited).
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: (0..IP_SHARDS)
                .map(|_| Mutex::new(IpCounts::default()))
                .collect(),
        })
    }

    /// Counts a new connection from `ip`, or refuses it when a limit is reached (answer the
    /// upgrade with [`RateLimitError::http_status`]). Keep the permit as long as the connection.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, RateLimitError> {
        let slot = self.count(ip)?;
        Ok(ConnPermit {
            limits: self.clone(),
            key: (slot == Counted::TotalAndIp).then(|| ip_key(ip)),
        })
    }

    /// What [`acquire`](Self::acquire) does, without a permit: the caller keeps what was
    /// counted (a shard keeps it in two bits of the connection's entry instead of a boxed
    /// permit) and gives it back with [`uncount`](Self::uncount) for the same address.
    pub(crate) fn count(&self, ip: IpAddr) -> Result<Counted, RateLimitError> {
        let max = if self.max_total == 0 {
            usize::MAX
        } else {
            self.max_total
        };
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| RateLimitError::TooManyConnections)?;
        if self.max_per_ip > 0 {
            let key = ip_key(ip);
            let mut map = self.shard(key);
            let n = map.entry(key).or_insert(0);
            if *n >= self.max_per_ip {
                drop(map);
                self.uncount(ip, Counted::Total);
                return Err(RateLimitError::TooManyFromIp);
            }
            *n += 1;
            return Ok(Counted::TotalAndIp);
        }
        Ok(Counted::Total)
    }

    /// Releases what [`count`](Self::count) counted for `ip`.
    pub(crate) fn uncount(&self, ip: IpAddr, counted: Counted) {
        if counted == Counted::TotalAndIp {
            self.release_ip(ip_key(ip));
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    fn release_ip(&self, key: IpAddr) {
        let mut map = self.shard(key);
        if let Some(n) = map.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&key);
            }
        }
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections open now from `ip` (its /64 for IPv6); 0 when no per-IP limit is set.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        let key = ip_key(ip);
        self.shard(key).get(&key).copied().unwrap_or(0)
    }

    fn shard(&self, key: IpAddr) -> std::sync::MutexGuard<'_, IpCounts> {
        let i = BuildHasherDefault::<ahash::AHasher>::default().hash_one(key) as usize % IP_SHARDS;
        self.per_ip[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.limits.release_ip(key);
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`ConnLimits::count`] counted for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// The total only (no per-IP limit).
    Total,
    /// The total and the address's count.
    TotalAndIp,
}

/// The per-IP counting key: the IPv4 address, or the /64 of an IPv6 address.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    #[test]
    fn burst_then_reject_then_close() {
        let clock = FakeRelativeClock::default();
        let mut l = ConnLimiter::with_clock(10, 3, clock.clone()).expect("limiter");
        let got: Vec<Verdict> = (0..7).map(|_| l.check()).collect();
        use Verdict::*;
        assert_eq!(got, [Allow, Allow, Allow, Reject, Reject, Reject, Close]);
        // Once closed, stays closed even if tokens come back.
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check(), Close);
    }

    #[test]
    fn a_client_that_backs_off_is_never_closed() {
        let clock = FakeRelativeClock::default();
        let mut l = ConnLimiter::with_clock(10, 2, clock.clone()).expect("limiter");
        for _ in 0..50 {
            // Two messages per 100 ms against a limit of one per 100 ms: half are rejected,
            // but an allowed one always comes before the streak passes the burst.
            let a = l.check();
            let b = l.check();
            assert_ne!(a, Verdict::Close);
            assert_ne!(b, Verdict::Close);
            clock.advance(Duration::from_millis(100));
        }
        assert_eq!(l.check(), Verdict::Allow);
    }

    #[test]
    fn zero_disables() {
        assert_eq!(ConnLimiter::new(0, 5).err(), Some(RateLimitError::Zero));
        assert_eq!(ConnLimiter::new(5, 0).err(), Some(RateLimitError::Zero));
        let mut limits = LimitSettings {
            messages_per_second: 0,
            ..LimitSettings::default()
        };
        assert!(ConnLimiter::from_limits(&limits).is_none());
        assert!(UserLimiter::from_limits(&limits).is_none());
        limits.messages_per_second = 100;
        assert!(ConnLimiter::from_limits(&limits).is_some());
        assert!(UserLimiter::from_limits(&limits).is_some());
    }

    #[test]
    fn user_limit_spans_connections() {
        let users = UserLimiter::new(1, 2).expect("limiter");
        let alice: Arc<str> = Arc::from("alice");
        let bob: Arc<str> = Arc::from("bob");
        let mut c1 = ConnLimiter::new(1000, 1000).expect("limiter");
        let mut c2 = ConnLimiter::new(1000, 1000).expect("limiter");
        assert_eq!(c1.check_user(&users, &alice), Verdict::Allow);
        assert_eq!(c2.check_user(&users, &alice), Verdict::Allow);
        assert_eq!(c2.check_user(&users, &alice), Verdict::Reject);
        assert_eq!(c1.check_user(&users, &alice), Verdict::Reject);
        assert_eq!(c1.check_user(&users, &bob), Verdict::Allow);
        assert_eq!(users.len(), 2);
        users.retain_recent();
        assert!(users.len() <= 2);
    }

    #[test]
    fn conn_limits_count_total_and_per_ip() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let l = ConnLimits::new(3, 2);
        let a1 = l.acquire(ip("1.1.1.1")).expect("1");
        let a2 = l.acquire(ip("::ffff:1.1.1.1")).expect("2");
        assert_eq!(
            l.acquire(ip("1.1.1.1")).map(|_| ()),
            Err(RateLimitError::TooManyFromIp)
        );
        assert_eq!(l.total(), 2);
        let b = l.acquire(ip("2001:db8::1")).expect("3");
        assert_eq!(
            l.acquire(ip("9.9.9.9")).map(|_| ()),
            Err(RateLimitError::TooManyConnections)
        );
        drop(a1);
        assert_eq!(l.from_ip(ip("1.1.1.1")), 1);
        drop(b);
        let b1 = l.acquire(ip("2001:db8::1")).expect("v6");
        let b2 = l.acquire(ip("2001:db8::2")).expect("same /64");
        drop(a2);
        assert_eq!(
            l.acquire(ip("2001:db8::3")).map(|_| ()),
            Err(RateLimitError::TooManyFromIp)
        );
        assert_eq!(l.from_ip(ip("2001:db8::ffff")), 2);
        drop((b1, b2));
        assert_eq!((l.total(), l.from_ip(ip("2001:db8::1"))), (0, 0));
        let unlimited = ConnLimits::new(0, 0);
        let permits: Vec<_> = (0..100)
            .map(|_| unlimited.acquire(ip("1.1.1.1")).expect("ok"))
            .collect();
        assert_eq!(unlimited.total(), 100);
        drop(permits);
        assert_eq!(unlimited.total(), 0);
        assert_eq!(RateLimitError::TooManyFromIp.http_status(), 429);
    }

    #[test]
    fn conn_limits_hold_across_threads() {
        let l = ConnLimits::new(50, 0);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let got: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..40)
                            .filter_map(|_| l.acquire(ip).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let permits: Vec<_> = hs
                .into_iter()
                .flat_map(|h| h.join().expect("thread"))
                .collect();
            permits.len()
        });
        assert_eq!(got, 50);
        assert_eq!(l.total(), 0);
    }
}
