//! Adaptive concurrency per store (AIMD, as TCP does it): every request to a store holds a
//! permit; a throttling answer (S3 `SlowDown`/503, HTTP 429, Azure `ServerBusy`) halves the
//! number of permits, each success adds back one permit's worth spread over a window
//! (`+1/limit`). A store that never throttles is never limited below `max`; one that does
//! settles near what it accepts instead of being hammered by retries at full concurrency.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Two halvings closer together than this count as one: the requests already in flight when
/// the store started refusing all come back throttled, and they are one signal, not many.
const DECREASE_SPACING: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    last_decrease: Option<Instant>,
    /// The lowest the limit has been, for reports.
    lowest: f64,
}

/// The permits of one store.
#[derive(Debug)]
pub struct AdaptiveLimit {
    state: Mutex<State>,
    freed: Notify,
    min: f64,
    max: f64,
}

/// One request's hold on the store; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit<'a> {
    owner: &'a AdaptiveLimit,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.owner.state.lock().expect("limit lock").in_flight -= 1;
        self.owner.freed.notify_one();
    }
}

impl AdaptiveLimit {
    /// Starts unthrottled at `max` permits and never goes below `min` (at least 1).
    pub fn new(min: usize, max: usize) -> Self {
        let (min, max) = (min.max(1) as f64, max.max(min.max(1)) as f64);
        AdaptiveLimit {
            state: Mutex::new(State {
                limit: max,
                in_flight: 0,
                last_decrease: None,
                lowest: max,
            }),
            freed: Notify::new(),
            min,
            max,
        }
    }

    /// Waits for a free permit.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.state.lock().expect("limit lock");
                if (s.in_flight as f64) < s.limit.floor().max(1.0) {
                    s.in_flight += 1;
                    return Permit { owner: self };
                }
            }
            freed.await;
        }
    }

    /// A request succeeded: additive increase.
    pub fn on_success(&self) {
        let mut s = self.state.lock().expect("limit lock");
        s.limit = (s.limit + 1.0 / s.limit).min(self.max);
        drop(s);
        self.freed.notify_one();
    }

    /// The store throttled a request: multiplicative decrease (once per spacing).
    pub fn on_throttled(&self, now: Instant) {
        let mut s = self.state.lock().expect("limit lock");
        if s.last_decrease
            .is_some_and(|t| now.duration_since(t) < DECREASE_SPACING)
        {
            return;
        }
        s.last_decrease = Some(now);
        s.limit = (s.limit / 2.0).max(self.min);
        s.lowest = s.lowest.min(s.limit);
        tracing::info!(
            limit = s.limit,
            "the store is throttling; fewer requests at once"
        );
    }

    /// The permits now.
    pub fn limit(&self) -> usize {
        self.state.lock().expect("limit lock").limit.floor() as usize
    }

    /// The fewest permits there have been.
    pub fn lowest(&self) -> usize {
        self.state.lock().expect("limit lock").lowest.floor() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_and_success_climbs_back_slowly() {
        let l = AdaptiveLimit::new(1, 64);
        let t0 = Instant::now();
        l.on_throttled(t0);
        assert_eq!(l.limit(), 32);
        // Answers to requests already in flight are the same signal.
        l.on_throttled(t0 + Duration::from_millis(50));
        assert_eq!(l.limit(), 32);
        l.on_throttled(t0 + Duration::from_millis(300));
        assert_eq!(l.limit(), 16);
        // About +1 per window of successes.
        for _ in 0..17 {
            l.on_success();
        }
        assert_eq!(l.limit(), 17);
        for n in 0..20 {
            l.on_throttled(t0 + Duration::from_secs(1 + n));
        }
        assert_eq!((l.limit(), l.lowest()), (1, 1), "never below the minimum");
        for _ in 0..10_000 {
            l.on_success();
        }
        assert_eq!(l.limit(), 64, "never above the maximum");
    }

    #[tokio::test]
    async fn permits_hold_requests_to_the_limit() {
        let l = AdaptiveLimit::new(1, 2);
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let third = tokio::time::timeout(Duration::from_millis(50), l.acquire()).await;
        assert!(third.is_err(), "a third permit while two are held");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), l.acquire()).await;
        assert!(third.is_ok(), "a freed permit is handed on");
    }
}
