//! Per-client token buckets, in memory, driven by the injected clock's readings.
//!
//! Each client id has a bucket of `burst` tokens refilled at `per_sec` tokens a second; a
//! request takes one. State is per process: a restart forgets it, which is acceptable for a
//! limit meant to stop runaway scripts, not to meter billing.
//!
//! Keys are bare client ids on bearer-authenticated routes, and prefixed ones on the token
//! endpoint (`token:` for issuance, `token-fail:` for refusals; see `auth.rs`). The token
//! endpoint only makes a bucket for a client that exists (plus one shared bucket for every
//! unknown id), yet the map is pruned all the same: a bucket that has refilled to full is
//! the same as no bucket, and is dropped once the map grows past a threshold.

use std::collections::HashMap;
use std::sync::Mutex;

use ivrauth_core::time::UnixMillis;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: UnixMillis,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<String, Bucket>,
    /// Prune when the map grows past this; doubles when pruning frees too little, so a
    /// sustained flood costs amortised O(1) per request.
    prune_at: usize,
}

const PRUNE_AT: usize = 4_096;

impl RateLimiter {
    /// `per_sec` and `burst` below 1 are treated as 1.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        RateLimiter {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    /// `per_sec` tokens a second (fractions allowed, e.g. 60 an hour), up to `burst`.
    pub fn with_rate(per_sec: f64, burst: f64) -> Self {
        RateLimiter {
            per_sec: per_sec.max(1e-9),
            burst: burst.max(1.0),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    /// Take one token from `key`'s bucket at time `now`. `Err(secs)` says how many whole
    /// seconds (at least 1) until a token will be there.
    pub fn check(&self, key: &str, now: UnixMillis) -> Result<(), u64> {
        let mut buckets = match self.buckets.lock() {
            Ok(g) => g,
            // A panic while holding the lock cannot leave a bucket half-written.
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.map.len() >= buckets.prune_at && !buckets.map.contains_key(key) {
            buckets.map.retain(|_, b| {
                let elapsed = (now.0 - b.last.0).max(0) as f64;
                b.tokens + elapsed * self.per_sec / 1000.0 < self.burst
            });
            buckets.prune_at = (buckets.map.len() * 2).max(PRUNE_AT);
        }
        let bucket = buckets.map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        // A clock that went backwards refills nothing (and does not drain either).
        let elapsed_ms = (now.0 - bucket.last.0).max(0);
        if elapsed_ms > 0 {
            bucket.tokens =
                (bucket.tokens + elapsed_ms as f64 * self.per_sec / 1000.0).min(self.burst);
            bucket.last = now;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            let secs = (missing / self.per_sec).ceil();
            Err(if secs < 1.0 { 1 } else { secs as u64 })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn idle_buckets_are_pruned_without_changing_any_answer() {
        let rl = RateLimiter::new(10, 2);
        let t = UnixMillis(1_000_000);
        // A flood of one-off keys (each takes one of its two tokens).
        for i in 0..(PRUNE_AT - 1) {
            assert_eq!(rl.check(&format!("flood-{i}"), t), Ok(()));
        }
        // An active client, drained.
        assert_eq!(rl.check("busy", t), Ok(()));
        assert_eq!(rl.check("busy", t), Ok(()));
        assert_eq!(rl.check("busy", t), Err(1));
        // 100 ms later the flood's buckets are full again (indistinguishable from new ones);
        // busy has refilled one token only.
        let later = UnixMillis(t.0 + 100);
        assert_eq!(rl.check("new-key", later), Ok(()));
        let len = rl.buckets.lock().unwrap().map.len();
        assert_eq!(len, 2, "only busy and new-key remain");
        // busy kept its state: one token, then refused (a fresh bucket would allow two).
        assert_eq!(rl.check("busy", later), Ok(()));
        assert_eq!(rl.check("busy", later), Err(1));
    }

    #[test]
    fn burst_then_refill() {
        let rl = RateLimiter::new(2, 3);
        let t = UnixMillis(1_000_000);
        for _ in 0..3 {
            assert_eq!(rl.check("a", t), Ok(()));
        }
        assert_eq!(rl.check("a", t), Err(1));
        // Other clients have their own bucket.
        assert_eq!(rl.check("b", t), Ok(()));
        // Half a second refills one token at 2/s.
        assert_eq!(rl.check("a", t.plus_millis(500)), Ok(()));
        assert_eq!(rl.check("a", t.plus_millis(500)), Err(1));
        assert_eq!(rl.check("a", t.plus_secs(10)), Ok(()));
    }

    #[test]
    fn slow_rate_reports_whole_seconds() {
        let rl = RateLimiter::new(1, 1);
        let t = UnixMillis(0);
        assert_eq!(rl.check("a", t), Ok(()));
        assert_eq!(rl.check("a", t), Err(1));
        assert_eq!(rl.check("a", t.plus_millis(1)), Err(1));
    }

    #[test]
    fn clock_going_back_does_not_panic_or_refill() {
        let rl = RateLimiter::new(1, 1);
        assert_eq!(rl.check("a", UnixMillis(10_000)), Ok(()));
        assert_eq!(rl.check("a", UnixMillis(0)), Err(1));
    }
}
