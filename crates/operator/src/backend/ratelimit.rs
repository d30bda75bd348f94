//! Per-store rate limiting of backend reads (`SecretStore.spec.rateLimit`), so a refresh
//! storm — a restart after downtime, a store edit waking thousands of SecretSyncs — reaches
//! the backend at a pace it was promised. The event listener refuses requests over its own
//! bucket ([`RateLimiter::try_acquire`]).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `burst` reads at once, refilled at `qps` per second. Callers over the
/// budget reserve a future token and sleep until it is theirs, so waiting is fair (first
/// come, first served) and costs no polling.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May go negative: tokens already promised to waiting callers.
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// `qps` ≥ 1; `burst` defaults to `qps` and is at least 1.
    pub fn new(qps: u32, burst: Option<u32>) -> Self {
        let qps = f64::from(qps.max(1));
        let burst = f64::from(burst.unwrap_or(qps as u32).max(1));
        Self {
            qps,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Waits until a read may go out.
    pub async fn acquire(&self) {
        let wait = {
            let mut bucket = self.refilled();
            bucket.tokens -= 1.0;
            (bucket.tokens < 0.0).then(|| Duration::from_secs_f64(-bucket.tokens / self.qps))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token if one is there now; never waits, and reserves none.
    pub fn try_acquire(&self) -> bool {
        let mut bucket = self.refilled();
        let taken = bucket.tokens >= 1.0;
        if taken {
            bucket.tokens -= 1.0;
        }
        taken
    }

    /// The bucket, refilled up to now. The lock is never held across an await.
    fn refilled(&self) -> MutexGuard<'_, Bucket> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.qps).min(self.burst);
        bucket.refilled_at = now;
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces_at_qps() {
        let limiter = Arc::new(RateLimiter::new(10, Some(5)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..25 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now()
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap().duration_since(start));
        }
        done.sort();
        // 5 at once, then 20 more at 10/s: the last one after 2 s.
        assert!(done[4] < Duration::from_millis(1), "{:?}", done[4]);
        assert!(done[5] >= Duration::from_millis(99), "{:?}", done[5]);
        let last = done[24];
        assert!(
            last >= Duration::from_millis(1999) && last <= Duration::from_millis(2001),
            "{last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn trying_takes_the_burst_then_the_rate_and_reserves_nothing() {
        let limiter = RateLimiter::new(100, Some(200));
        let taken = (0..1000).filter(|_| limiter.try_acquire()).count();
        assert_eq!(taken, 200);
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!((0..10).filter(|_| limiter.try_acquire()).count(), 2);
        // Nothing was reserved by the refusals: a waiting read goes after 10 ms.
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(
            Instant::now().duration_since(start),
            Duration::from_millis(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_to_its_burst_only() {
        let limiter = RateLimiter::new(2, Some(3));
        tokio::time::advance(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire().await;
        }
        // 3 from the burst, the 4th waits half a second: idle time does not bank more.
        assert_eq!(
            Instant::now().duration_since(start),
            Duration::from_millis(500)
        );
    }
}
