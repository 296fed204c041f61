//! Surge detection: arrivals of work per interval against a forecast from
//! history (an exponentially weighted mean and variance). An interval whose
//! arrivals exceed the forecast by `k` standard deviations is a surge: it
//! is logged, counted in the metrics, and lets the rebalancer favour
//! splitting and stealing.

/// Forecasts arrivals per interval and flags surges.
#[derive(Debug, Clone)]
pub struct SurgeDetector {
    /// Weight of the newest interval in the forecast (0..1).
    pub alpha: f64,
    /// Standard deviations above the forecast that make a surge.
    pub k: f64,
    /// Intervals seen before surges are flagged (the forecast warms up).
    pub warmup: u32,
    mean: f64,
    var: f64,
    seen: u32,
    /// Surges detected so far.
    pub surges: u64,
}

/// One closed interval's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Work that arrived in the interval (worker-seconds predicted).
    pub arrived: f64,
    /// What the forecast expected.
    pub forecast: f64,
    /// The surge threshold (forecast + k standard deviations).
    pub threshold: f64,
    /// True when `arrived` exceeded the threshold.
    pub surge: bool,
}

impl Default for SurgeDetector {
    fn default() -> Self {
        Self::new(0.2, 3.0, 6)
    }
}

impl SurgeDetector {
    /// A detector with EWMA weight `alpha` and threshold `k` sigmas.
    pub fn new(alpha: f64, k: f64, warmup: u32) -> Self {
        SurgeDetector {
            alpha,
            k,
            warmup,
            mean: 0.0,
            var: 0.0,
            seen: 0,
            surges: 0,
        }
    }

    /// The forecast for the next interval.
    pub fn forecast(&self) -> f64 {
        self.mean
    }

    /// Closes an interval in which `arrived` work arrived.
    pub fn observe(&mut self, arrived: f64) -> Verdict {
        // A floor on the spread, so a perfectly regular history does not
        // call every small wobble a surge.
        let sd = self.var.sqrt().max(0.1 * self.mean).max(1.0);
        let threshold = self.mean + self.k * sd;
        let surge = self.seen >= self.warmup && arrived > threshold;
        let forecast = self.mean;
        if surge {
            self.surges += 1;
        }
        if self.seen == 0 {
            self.mean = arrived;
        } else {
            let diff = arrived - self.mean;
            self.mean += self.alpha * diff;
            self.var = (1.0 - self.alpha) * (self.var + self.alpha * diff * diff);
        }
        self.seen += 1;
        Verdict {
            arrived,
            forecast,
            threshold,
            surge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_arrivals_are_no_surge_and_a_burst_is() {
        let mut d = SurgeDetector::default();
        for i in 0..30 {
            let v = d.observe(100.0 + (i % 3) as f64 * 5.0);
            assert!(!v.surge, "{i}: {v:?}");
        }
        let v = d.observe(400.0);
        assert!(v.surge, "{v:?}");
        assert_eq!(d.surges, 1);
        // A slow rise is learned, not flagged.
        let mut d = SurgeDetector::default();
        for i in 0..60 {
            assert!(!d.observe(100.0 + i as f64 * 2.0).surge);
        }
    }
}
