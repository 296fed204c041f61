//! Rate limits for `tidex serve`: a global cap (bytes/s or rows/s) shared
//! fairly between the running jobs, and each job's own cap
//! (`[limits] max_bytes_per_sec`, `max_rows_per_sec`).
//!
//! Shares are max-min fair: a job whose own cap is below an equal share
//! gets its cap, and what it leaves is split between the others. Each
//! share is a token bucket holding at most one second of tokens; time
//! comes from a [`Clock`], so the limits are tested on a virtual clock.

use super::clock::{secs_between, Clock};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A token bucket on a clock.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: DateTime<Utc>,
}

impl Bucket {
    /// An empty bucket refilled at `rate` tokens per second.
    pub fn new(rate: f64, now: DateTime<Utc>) -> Self {
        Bucket {
            rate: rate.max(1e-9),
            tokens: 0.0,
            last: now,
        }
    }

    /// Changes the rate from now on.
    pub fn set_rate(&mut self, rate: f64, now: DateTime<Utc>) {
        self.refill(now);
        self.rate = rate.max(1e-9);
        self.tokens = self.tokens.min(self.rate);
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        let dt = secs_between(self.last, now).max(0.0);
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens; returns the seconds to wait before using them
    /// (a request larger than the bucket goes into debt).
    pub fn reserve(&mut self, n: u64, now: DateTime<Utc>) -> f64 {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens < 0.0 {
            -self.tokens / self.rate
        } else {
            0.0
        }
    }
}

#[derive(Debug)]
struct Member {
    cap: Option<f64>,
    bucket: Bucket,
}

/// One limited quantity (bytes or rows) across all running jobs.
#[derive(Debug)]
pub struct FairLimiter {
    global: Option<f64>,
    jobs: BTreeMap<String, Member>,
}

impl FairLimiter {
    /// A limiter with an optional global rate.
    pub fn new(global: Option<u64>) -> Self {
        FairLimiter {
            global: global.map(|g| g as f64),
            jobs: BTreeMap::new(),
        }
    }

    /// A job starts, with its own cap if it has one.
    pub fn join(&mut self, job: &str, cap: Option<u64>, now: DateTime<Utc>) {
        let cap = cap.map(|c| c as f64);
        self.jobs.insert(
            job.to_string(),
            Member {
                cap,
                bucket: Bucket::new(cap.unwrap_or(f64::MAX), now),
            },
        );
        self.rerate(now);
    }

    /// A job ends; the others share what it had.
    pub fn leave(&mut self, job: &str, now: DateTime<Utc>) {
        self.jobs.remove(job);
        self.rerate(now);
    }

    /// The rate each running job gets now.
    pub fn shares(&self) -> BTreeMap<String, f64> {
        self.jobs
            .iter()
            .map(|(k, m)| (k.clone(), m.bucket.rate))
            .collect()
    }

    fn rerate(&mut self, now: DateTime<Utc>) {
        let mut caps: Vec<(String, f64)> = self
            .jobs
            .iter()
            .map(|(k, m)| (k.clone(), m.cap.unwrap_or(f64::INFINITY)))
            .collect();
        caps.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut left = self.global.unwrap_or(f64::INFINITY);
        let n = caps.len();
        for (i, (job, cap)) in caps.into_iter().enumerate() {
            let equal = left / (n - i) as f64;
            let rate = cap.min(equal);
            left -= rate;
            if let Some(m) = self.jobs.get_mut(&job) {
                m.bucket
                    .set_rate(if rate.is_finite() { rate } else { f64::MAX }, now);
            }
        }
    }

    /// `job` uses `n` units now; returns the seconds it must wait.
    pub fn reserve(&mut self, job: &str, n: u64, now: DateTime<Utc>) -> f64 {
        match self.jobs.get_mut(job) {
            Some(m) if m.bucket.rate < f64::MAX => m.bucket.reserve(n, now),
            _ => 0.0,
        }
    }
}

/// A [`FairLimiter`] shared by worker threads, sleeping on a clock.
pub struct SharedLimiter {
    inner: Mutex<FairLimiter>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter").finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A shared limiter with an optional global rate.
    pub fn new(global: Option<u64>, clock: Arc<dyn Clock>) -> Self {
        SharedLimiter {
            inner: Mutex::new(FairLimiter::new(global)),
            clock,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FairLimiter, DateTime<Utc>) -> T) -> T {
        let now = self.clock.now();
        f(
            &mut self.inner.lock().unwrap_or_else(|p| p.into_inner()),
            now,
        )
    }

    /// A job starts.
    pub fn join(&self, job: &str, cap: Option<u64>) {
        self.with(|l, now| l.join(job, cap, now))
    }

    /// A job ends.
    pub fn leave(&self, job: &str) {
        self.with(|l, now| l.leave(job, now))
    }

    /// Takes `n` units for `job`, sleeping as long as its share requires.
    pub fn acquire(&self, job: &str, n: u64) {
        let wait = self.with(|l, now| l.reserve(job, n, now));
        if wait > 0.0 {
            self.clock.sleep(std::time::Duration::from_secs_f64(wait));
        }
    }
}

/// A run's view of the shared bytes/s and rows/s limits; joins them when
/// created and leaves them when dropped.
#[derive(Debug)]
pub struct JobThrottle {
    job: String,
    bytes: Arc<SharedLimiter>,
    rows: Arc<SharedLimiter>,
}

impl JobThrottle {
    /// Joins `job` to both limiters with its own caps.
    pub fn join(
        job: &str,
        bytes: Arc<SharedLimiter>,
        bytes_cap: Option<u64>,
        rows: Arc<SharedLimiter>,
        rows_cap: Option<u64>,
    ) -> Self {
        bytes.join(job, bytes_cap);
        rows.join(job, rows_cap);
        JobThrottle {
            job: job.to_string(),
            bytes,
            rows,
        }
    }
}

impl crate::runtime::Throttle for JobThrottle {
    fn acquire(&self, bytes: u64, rows: u64) {
        self.bytes.acquire(&self.job, bytes);
        self.rows.acquire(&self.job, rows);
    }
}

impl Drop for JobThrottle {
    fn drop(&mut self) {
        self.bytes.leave(&self.job);
        self.rows.leave(&self.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::clock::VirtualClock;
    use chrono::TimeZone;

    /// Jobs that always have data ready: each takes `chunk` units whenever
    /// its previous wait is over; returns units moved per job in `secs`.
    fn drive(l: &mut FairLimiter, jobs: &[&str], chunk: u64, secs: f64) -> Vec<f64> {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let clock = VirtualClock::new(t0);
        let mut ready: Vec<DateTime<Utc>> = vec![t0; jobs.len()];
        let mut moved = vec![0.0; jobs.len()];
        loop {
            let (i, at) = ready
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .map(|(i, t)| (i, *t))
                .unwrap();
            if secs_between(t0, at) >= secs {
                break;
            }
            clock.set(at);
            let wait = l.reserve(jobs[i], chunk, clock.now());
            // The chunk is delivered once its wait is over.
            let done = at + super::super::clock::secs_to_duration(wait);
            if secs_between(t0, done) <= secs {
                moved[i] += chunk as f64;
            }
            ready[i] = done;
        }
        moved.iter().map(|m| m / secs).collect()
    }

    #[test]
    fn global_limit_is_shared_fairly_and_holds_within_ten_percent() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let mut l = FairLimiter::new(Some(1000));
        for j in ["a", "b", "c"] {
            l.join(j, None, t0);
        }
        let rates = drive(&mut l, &["a", "b", "c"], 37, 120.0);
        let total: f64 = rates.iter().sum();
        assert!((total - 1000.0).abs() <= 100.0, "{rates:?}");
        for r in &rates {
            assert!((r - 333.3).abs() <= 33.3, "{rates:?}");
        }
    }

    #[test]
    fn own_caps_hold_and_the_rest_goes_to_the_others() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let mut l = FairLimiter::new(Some(1000));
        l.join("capped", Some(200), t0);
        l.join("free", None, t0);
        assert_eq!(l.shares()["capped"], 200.0);
        assert_eq!(l.shares()["free"], 800.0);
        let rates = drive(&mut l, &["capped", "free"], 50, 120.0);
        assert!((rates[0] - 200.0).abs() <= 20.0, "{rates:?}");
        assert!((rates[1] - 800.0).abs() <= 80.0, "{rates:?}");
        l.leave("capped", t0);
        assert_eq!(l.shares()["free"], 1000.0);
        // Without a global limit a job's own cap still holds.
        let mut l = FairLimiter::new(None);
        l.join("solo", Some(300), t0);
        let rates = drive(&mut l, &["solo"], 64, 60.0);
        assert!((rates[0] - 300.0).abs() <= 30.0, "{rates:?}");
    }
}
