//! A per-client limit on misses: requests for PINs the service does not know.
//!
//! Nobody with a real PIN misses, so honest clusters never feel this; a client that guesses
//! PINs does. Each client address has a token bucket of `burst` misses, refilled at
//! `per_sec`. While a bucket is empty, the misses of that address answer 429; its lookups of
//! PINs that exist are served, because one address may be a NAT shared by many clusters, and
//! a guesser only ever misses. IPv6 clients are counted per /64, the block one host usually
//! holds.
//!
//! The same buckets bound PIN creations ([`CreationLimiter`]): each creation takes a token,
//! and a client with none left gets 429 before anything is stored. Only creations count:
//! a client that is refused new PINs still reads and writes the PINs it has.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// More client addresses than this are not tracked; full buckets are dropped first.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct MissLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl MissLimiter {
    /// `burst` 0 disables the limit.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        MissLimiter {
            burst: f64::from(burst),
            per_sec: per_sec.max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.burst > 0.0
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.updated = now;
    }

    /// `Err(retry_after)` while `client` has no misses left.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get_mut(&bucket_key(client)) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.retry_after(bucket))
        }
    }

    /// Counts one miss against `client`.
    pub fn record_miss(&self, client: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = self.bucket(&mut buckets, client, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Takes one token from `client`'s bucket, if it has one; `Err(retry_after)` otherwise.
    /// One lock for both, so that concurrent requests cannot spend the same token.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = self.bucket(&mut buckets, client, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.retry_after(bucket))
        }
    }

    /// `client`'s bucket, refilled to `now`; a new, full one for a client not tracked yet,
    /// making room first when [`MAX_TRACKED`] clients are.
    fn bucket<'b>(
        &self,
        buckets: &'b mut HashMap<IpAddr, Bucket>,
        client: IpAddr,
        now: Instant,
    ) -> &'b mut Bucket {
        let key = bucket_key(client);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key) {
            self.forget_full(buckets, now);
            if buckets.len() >= MAX_TRACKED {
                // Under a flood from that many addresses, forgetting is the lesser harm.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        self.refill(bucket, now);
        bucket
    }

    /// How long until `bucket` holds a whole token again, in whole seconds, at least one.
    fn retry_after(&self, bucket: &Bucket) -> Duration {
        let wait = (1.0 - bucket.tokens) / self.per_sec;
        Duration::from_secs_f64(wait.ceil().max(1.0))
    }

    /// Forgets clients whose bucket has refilled: they are as good as new.
    pub fn sweep(&self, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        self.forget_full(&mut buckets, now);
    }

    fn forget_full(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            self.refill(bucket, now);
            bucket.tokens < self.burst
        });
    }

    /// How many client addresses are being tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A per-client limit on PIN creations, on the buckets of [`MissLimiter`].
pub struct CreationLimiter(MissLimiter);

impl CreationLimiter {
    /// `burst` 0 disables the limit.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        CreationLimiter(MissLimiter::new(burst, per_sec))
    }

    /// Counts one creation against `client`; `Err(retry_after)`, and nothing counted, when
    /// its allowance is spent.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        self.0.take(client, now)
    }

    /// Forgets clients whose allowance has refilled.
    pub fn sweep(&self, now: Instant) {
        self.0.sweep(now);
    }
}

/// IPv4 per address (IPv4-mapped IPv6 too), IPv6 per /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = MissLimiter::new(3, 1.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
            limiter.record_miss(ip, t0);
        }
        assert_eq!(limiter.check(ip, t0), Err(Duration::from_secs(1)));
        assert!(limiter.check(other, t0).is_ok());
        assert!(limiter.check(ip, t0 + Duration::from_millis(1100)).is_ok());
        limiter.sweep(t0 + Duration::from_secs(10));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let limiter = MissLimiter::new(1, 0.01);
        let t0 = Instant::now();
        limiter.record_miss("2001:db8::1".parse().unwrap(), t0);
        assert!(limiter
            .check("2001:db8::ffff:2".parse().unwrap(), t0)
            .is_err());
        assert!(limiter
            .check("2001:db8:0:1::1".parse().unwrap(), t0)
            .is_ok());
        limiter.record_miss("::ffff:192.0.2.9".parse().unwrap(), t0);
        assert!(limiter.check("192.0.2.9".parse().unwrap(), t0).is_err());
    }

    #[test]
    fn zero_burst_disables() {
        let limiter = MissLimiter::new(0, 1.0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            limiter.record_miss(ip, Instant::now());
        }
        assert!(limiter.check(ip, Instant::now()).is_ok());
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn creations_take_from_their_own_client_only() {
        let limiter = CreationLimiter::new(2, 0.5);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.take(ip, t0).is_ok());
        assert!(limiter.take(ip, t0).is_ok());
        // One token comes back in 2 s.
        assert_eq!(limiter.take(ip, t0), Err(Duration::from_secs(2)));
        assert!(limiter.take(other, t0).is_ok());
        assert_eq!(
            limiter.take(ip, t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(1))
        );
        assert!(limiter.take(ip, t0 + Duration::from_secs(2)).is_ok());
        assert!(limiter.take(ip, t0 + Duration::from_secs(2)).is_err());
        limiter.sweep(t0 + Duration::from_secs(100));
        assert_eq!(limiter.0.tracked(), 0);
        let unlimited = CreationLimiter::new(0, 0.1);
        for _ in 0..100 {
            assert!(unlimited.take(ip, t0).is_ok());
        }
    }
}
