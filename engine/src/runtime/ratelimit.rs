//! Token-bucket rate limits (bytes/s, rows/s), shared by a job's workers.
//! The bucket holds at most one second of tokens, so a pause never turns
//! into a burst above the limit.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket refilled at `rate` tokens per second.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket for `rate` tokens per second, starting empty so a run
    /// cannot open with a burst.
    pub fn new(rate: u64) -> Self {
        TokenBucket {
            rate: rate.max(1) as f64,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `n` tokens, sleeping until they are available. Requests larger
    /// than the bucket go into debt and are paid off by later sleeps.
    pub fn acquire(&self, n: u64) {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, last) = *st;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate)
                .min(self.rate)
                - n as f64;
            *st = (tokens, now);
            if tokens < 0.0 {
                Duration::from_secs_f64(-tokens / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate() {
        let b = TokenBucket::new(1000);
        let t = Instant::now();
        for _ in 0..10 {
            b.acquire(50);
        }
        // 500 tokens at 1000/s from an empty bucket take ~0.5 s.
        let secs = t.elapsed().as_secs_f64();
        assert!((0.45..3.0).contains(&secs), "{secs}");
    }
}
