//! Retries with exponential backoff and full jitter, as documented data.
//!
//! Defaults: 6 attempts in all for network and 5xx failures, backoff starting at 100 ms,
//! doubling, capped at 10 s; a store that throttles (S3 `SlowDown`, 429, Azure `ServerBusy`)
//! gets 10 attempts (rclone's low-level retries) with the cap rising to 30 s. Each sleep is
//! drawn uniformly from `[0, cap]` ("full jitter") so many agents that hit the same throttle
//! do not retry in lockstep. Everything else surfaces at once. A store opened with [`crate::open`]
//! also has its own [`AdaptiveLimit`]: every attempt holds one of its permits, and throttling
//! halves them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use crate::error::{ErrorKind, Result, StoreError};
use crate::pace::Pacer;
use crate::throttle::AdaptiveLimit;

/// How hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Attempts in all while the store throttles.
    pub throttled_attempts: u32,
    /// The backoff cap while the store throttles.
    pub throttled_max_backoff: Duration,
    /// The store's adaptive concurrency, when it has one (see [`RetryPolicy::with_own_limit`]).
    pub limit: Option<Arc<AdaptiveLimit>>,
    /// At most this many attempts per second to the store (`--tpslimit`), paced by
    /// `pacer` once the store has its own limits.
    pub requests_per_second: Option<f64>,
    pub pacer: Option<Arc<Pacer>>,
    /// Backoff cap of the first retry.
    pub initial_backoff: Duration,
    /// Factor applied to the cap after each retry.
    pub multiplier: f64,
    /// The cap never exceeds this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            throttled_attempts: 10,
            throttled_max_backoff: Duration::from_secs(30),
            limit: None,
            requests_per_second: None,
            pacer: None,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Policies are the same when their numbers are; a limit is state, not policy.
impl PartialEq for RetryPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.max_attempts == other.max_attempts
            && self.throttled_attempts == other.throttled_attempts
            && self.throttled_max_backoff == other.throttled_max_backoff
            && self.initial_backoff == other.initial_backoff
            && self.multiplier == other.multiplier
            && self.max_backoff == other.max_backoff
            && self.requests_per_second == other.requests_per_second
    }
}

/// The most requests one store gets at once before it throttles; callers bound theirs too.
pub const MAX_CONCURRENCY: usize = 256;

impl RetryPolicy {
    /// No retries at all (tests of error paths).
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            throttled_attempts: 1,
            ..Default::default()
        }
    }

    /// This policy with an adaptive concurrency limit and a request pacer of its own (one per
    /// store).
    pub fn with_own_limit(mut self) -> Self {
        self.limit = Some(Arc::new(AdaptiveLimit::new(1, MAX_CONCURRENCY)));
        self.pacer = self.requests_per_second.map(|r| Arc::new(Pacer::new(r)));
        self
    }

    /// The upper bound of the sleep before retry number `retry` (0-based).
    pub fn cap(&self, retry: u32) -> Duration {
        let factor = self.multiplier.powi(retry.min(63) as i32);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        Duration::from_secs_f64(secs.min(self.max_backoff.as_secs_f64()))
    }

    /// The sleep before retry number `retry`, drawn with full jitter from `rng`.
    pub fn backoff(&self, retry: u32, rng: &mut impl RngCore) -> Duration {
        let cap = self.cap(retry).as_secs_f64();
        Duration::from_secs_f64(rng.random_range(0.0..=cap))
    }

    /// As [`RetryPolicy::backoff`], for a store that throttles: the cap rises further.
    pub fn throttled_backoff(&self, retry: u32, rng: &mut impl RngCore) -> Duration {
        let slower = RetryPolicy {
            max_backoff: self.throttled_max_backoff,
            ..self.clone()
        };
        slower.backoff(retry, rng)
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or attempts run out.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retry = 0;
        loop {
            if let Some(p) = &self.pacer {
                p.take(1.0).await;
            }
            let permit = match &self.limit {
                Some(l) => Some(l.acquire().await),
                None => None,
            };
            let result = op().await;
            drop(permit);
            match result {
                Ok(v) => {
                    if let Some(l) = &self.limit {
                        l.on_success();
                    }
                    return Ok(v);
                }
                Err(e) if e.kind == ErrorKind::Throttled => {
                    if let Some(l) = &self.limit {
                        l.on_throttled(Instant::now());
                    }
                    if retry + 1 >= self.throttled_attempts {
                        return Err(annotate_attempts(e, retry + 1));
                    }
                    let sleep = self.throttled_backoff(retry, &mut rand::rng());
                    tracing::debug!(error = %e, retry, ?sleep, "throttled; retrying");
                    tokio::time::sleep(sleep).await;
                    retry += 1;
                }
                Err(e) if e.is_retryable() && retry + 1 < self.max_attempts => {
                    let sleep = self.backoff(retry, &mut rand::rng());
                    tracing::debug!(error = %e, retry, ?sleep, "retrying store operation");
                    tokio::time::sleep(sleep).await;
                    retry += 1;
                }
                Err(e) => return Err(annotate_attempts(e, retry + 1)),
            }
        }
    }
}

/// Riding out a store's outage: after the store's own retries (a [`RetryPolicy`]) give up on a
/// failure that may pass, the caller waits and tries again while the next wait still ends
/// within `window` of the start (the attempt after it may run longer: it has the store's own
/// retries), with backoff from 500 ms doubling to 8 s, without jitter: the store's own
/// retries inside each attempt are jittered. The sink uses it for chunk writes and the gateway for
/// the completions and checks that follow, so an outage shorter than the window costs time,
/// never an object.
#[derive(Debug)]
pub struct RideOut {
    window: Duration,
    // Tokio's clock, so tests can run a window with time paused.
    started: tokio::time::Instant,
    backoff: Duration,
    failures: u32,
}

impl RideOut {
    /// The first backoff.
    pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    /// The most any backoff grows to.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

    /// Starts the window now.
    pub fn new(window: Duration) -> Self {
        RideOut {
            window,
            started: tokio::time::Instant::now(),
            backoff: Self::FIRST_BACKOFF,
            failures: 0,
        }
    }

    /// How long to wait before trying again after `error`, or `None` to give up: at once for
    /// an error that cannot pass, else once the next wait would end past the window.
    pub fn after(&mut self, error: &StoreError) -> Option<Duration> {
        self.failures += 1;
        if !error.is_retryable() || self.started.elapsed() + self.backoff > self.window {
            return None;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
        Some(wait)
    }

    /// Failures seen so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Runs `op` until it succeeds, fails for good, or the window runs out; the last error
    /// is returned.
    pub async fn run<T, F, Fut>(window: Duration, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut ride = RideOut::new(window);
        loop {
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match ride.after(&e) {
                Some(wait) => {
                    tracing::warn!(error = %e, ?wait, "store failure; riding it out");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            }
        }
    }
}

fn annotate_attempts(mut e: StoreError, attempts: u32) -> StoreError {
    if attempts > 1 {
        e.message = format!("{} (after {attempts} attempts)", e.message);
    }
    e
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn caps_grow_exponentially_and_stop_at_the_max() {
        let p = RetryPolicy::default();
        assert_eq!(p.cap(0), Duration::from_millis(100));
        assert_eq!(p.cap(3), Duration::from_millis(800));
        assert_eq!(p.cap(20), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_the_cap_and_varies() {
        let p = RetryPolicy::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let draws: Vec<Duration> = (0..50).map(|_| p.backoff(4, &mut rng)).collect();
        assert!(draws.iter().all(|d| *d <= p.cap(4)));
        assert!(
            draws.windows(2).any(|w| w[0] != w[1]),
            "full jitter must vary"
        );
    }

    fn err(kind: ErrorKind) -> StoreError {
        StoreError::new(kind, "test://", "get", "k", "boom")
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_shorter_than_the_window_is_ridden_out() {
        let started = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let out = RideOut::run(Duration::from_secs(60), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            if started.elapsed() < Duration::from_secs(20) {
                Err(err(ErrorKind::Transient))
            } else {
                Ok(7)
            }
        })
        .await
        .unwrap();
        assert_eq!(out, 7);
        // 0.5 + 1 + 2 + 4 + 8 + 8 s of waits, then the try that succeeds.
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_outage_ends_within_the_window_and_a_permanent_error_at_once() {
        let started = tokio::time::Instant::now();
        let e = RideOut::run(Duration::from_secs(10), || async {
            Err::<(), _>(err(ErrorKind::Transient))
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        assert!(started.elapsed() <= Duration::from_secs(10));
        assert!(
            started.elapsed() >= Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );

        let calls = AtomicU32::new(0);
        let e = RideOut::run(Duration::from_secs(60), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(err(ErrorKind::PermissionDenied))
        })
        .await
        .unwrap_err();
        assert_eq!(
            (e.kind, calls.load(Ordering::SeqCst)),
            (ErrorKind::PermissionDenied, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_throttling_then_succeeds() {
        let calls = AtomicU32::new(0);
        let out = RetryPolicy::default()
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(err(ErrorKind::Throttled))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((out, calls.load(Ordering::SeqCst)), (7, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_permanent_errors_and_counts_attempts() {
        let calls = AtomicU32::new(0);
        let e = RetryPolicy::default()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(err(ErrorKind::NotFound))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.kind, ErrorKind::NotFound);

        let calls = AtomicU32::new(0);
        let e = RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        }
        .run(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(err(ErrorKind::Transient))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(e.message.contains("after 3 attempts"), "{e}");
    }

    #[tokio::test]
    async fn a_throttling_store_gets_more_attempts_and_fewer_requests_at_once() {
        let quick = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            throttled_max_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        }
        .with_own_limit();
        let calls = AtomicU32::new(0);
        let r: Result<()> = quick
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(err(ErrorKind::Throttled))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 10, "throttled: 10 attempts");
        let limit = quick.limit.as_ref().unwrap();
        assert!(
            limit.lowest() < MAX_CONCURRENCY,
            "throttling lowered the limit"
        );
        let calls = AtomicU32::new(0);
        let _ = quick
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(err(ErrorKind::Transient))
            })
            .await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            6,
            "network failures: 6 attempts"
        );
    }
}
