//! Time for the scheduler: the real clock for `tidex serve`, a virtual one
//! for `tidex simulate`, `tidex plan` and tests, so every decision that
//! depends on time is deterministic and fast to test.

use chrono::{DateTime, Duration, Utc};
use std::sync::Mutex;

/// A source of the current time that can also wait.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Waits `d` (a virtual clock just moves forward).
    fn sleep(&self, d: std::time::Duration);
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: std::time::Duration) {
        std::thread::sleep(d)
    }
}

/// Time that moves only when told to.
#[derive(Debug)]
pub struct VirtualClock {
    now: Mutex<DateTime<Utc>>,
}

impl VirtualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        VirtualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: DateTime<Utc>) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if t > *now {
            *now = t;
        }
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: f64) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += secs_to_duration(secs);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn sleep(&self, d: std::time::Duration) {
        self.advance(d.as_secs_f64());
    }
}

/// Seconds (fractional) as a chrono duration, to the microsecond.
pub fn secs_to_duration(secs: f64) -> Duration {
    Duration::microseconds((secs.max(0.0) * 1e6).round() as i64)
}

/// `b - a` in fractional seconds.
pub fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}
