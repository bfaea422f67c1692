//! Pacing to a rate: `--tpslimit` (requests per second to a store) and `--bwlimit` (bytes per
//! second a source reads). Each amount taken occupies `amount / rate` seconds of the pacer's
//! timeline, starting when the previous one ended or now, whichever is later, and may go at
//! that start: over any span the amount let through stays within `rate × span` plus the last
//! amount taken, with no burst after an idle spell beyond that one amount.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pacer {
    per_second: f64,
    /// When the amounts taken so far have all gone.
    free_at: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer of `per_second` (more than 0).
    pub fn new(per_second: f64) -> Self {
        Pacer {
            per_second: per_second.max(f64::MIN_POSITIVE),
            free_at: Mutex::new(None),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// When `amount` may go, asked at `now` (it is then counted as gone at that time).
    pub fn reserve_at(&self, amount: f64, now: Instant) -> Instant {
        let mut free_at = self.free_at.lock().expect("pacer lock");
        let start = free_at.map_or(now, |t| t.max(now));
        *free_at = Some(start + Duration::from_secs_f64(amount.max(0.0) / self.per_second));
        start
    }

    /// Waits until `amount` may go.
    pub async fn take(&self, amount: f64) {
        let at = self.reserve_at(amount, Instant::now());
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_go_no_faster_than_the_rate_and_idle_time_buys_no_burst() {
        let pacer = Pacer::new(10.0);
        let t0 = Instant::now();
        let s = Duration::from_secs_f64;
        // Ten requests at once: one every 100 ms.
        let starts: Vec<Duration> = (0..10).map(|_| pacer.reserve_at(1.0, t0) - t0).collect();
        for (i, start) in starts.iter().enumerate() {
            assert!(
                (start.as_secs_f64() - i as f64 * 0.1).abs() < 1e-9,
                "{starts:?}"
            );
        }
        // A big amount occupies its share of the timeline.
        assert_eq!(pacer.reserve_at(5.0, t0), t0 + s(1.0));
        assert_eq!(pacer.reserve_at(1.0, t0), t0 + s(1.5));
        // After a long pause, the next goes at once, and the one after waits again.
        let later = t0 + s(60.0);
        assert_eq!(pacer.reserve_at(1.0, later), later);
        assert_eq!(pacer.reserve_at(1.0, later), later + s(0.1));
    }
}
