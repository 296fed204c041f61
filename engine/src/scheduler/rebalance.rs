//! The rebalancer: which run a free worker serves next, and which running
//! partitions lag so far behind their siblings that they should be split.
//!
//! These two decisions are the whole dynamic side of the scheduler. They
//! are pure functions of a snapshot of the runs, so `tidex serve` (real
//! workers, real time) and `tidex simulate` / `tidex plan` (virtual time)
//! call exactly the same code.

use crate::spec::Priority;
use chrono::{DateTime, Utc};

/// How free workers are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Plan only: each run keeps the workers the plan allotted, runs start
    /// in plan order (first come, first served for unplanned work), and
    /// partitions are never split.
    Static,
    /// Rebalance only: no plan (default partition counts, no allotments);
    /// free workers take the highest-priority queued partition of any run,
    /// oldest run first; lagging partitions are split.
    Dynamic,
    /// Plans for tides, rebalancing for surges: planned partition counts
    /// and allotments, priorities first, then runs inside their allotment,
    /// then the run with the least slack before its deadline; idle workers
    /// steal beyond allotments; lagging partitions are split.
    Combined,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "static" => Ok(Strategy::Static),
            "dynamic" => Ok(Strategy::Dynamic),
            "combined" => Ok(Strategy::Combined),
            _ => Err(format!(
                "unknown strategy {s:?}; expected static, dynamic or combined"
            )),
        }
    }
}

impl Strategy {
    /// Whether runs are sized and allotted by the planner.
    pub fn plans(self) -> bool {
        matches!(self, Strategy::Static | Strategy::Combined)
    }
    /// Whether lagging partitions are split.
    pub fn splits(self) -> bool {
        matches!(self, Strategy::Dynamic | Strategy::Combined)
    }
    /// `static`, `dynamic` or `combined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Static => "static",
            Strategy::Dynamic => "dynamic",
            Strategy::Combined => "combined",
        }
    }
}

/// What the rebalancer knows about one run.
#[derive(Debug, Clone)]
pub struct RunView {
    /// Unique key of the run (also its arrival order).
    pub key: u64,
    /// Priority.
    pub priority: Priority,
    /// When the run was submitted or fired.
    pub arrival: DateTime<Utc>,
    /// When it must be finished (end of its window), if anything.
    pub deadline: Option<DateTime<Utc>>,
    /// Workers the plan allotted (the run's parallelism when unplanned).
    pub allot: usize,
    /// Most workers the run may use at once (its `parallelism`).
    pub max_workers: usize,
    /// Partitions waiting for a worker.
    pub queued: usize,
    /// Partitions being processed.
    pub running: usize,
    /// Predicted worker-seconds of work left, running partitions included.
    pub remaining_secs: f64,
}

impl RunView {
    fn slack(&self, now: DateTime<Utc>) -> f64 {
        match self.deadline {
            Some(d) => {
                let left = super::clock::secs_between(now, d);
                left - self.remaining_secs / self.allot.max(1) as f64
            }
            None => f64::INFINITY,
        }
    }
}

/// The index in `runs` of the run whose queued partition the next free
/// worker should take, or `None` when no run may take a worker now.
pub fn choose(strategy: Strategy, runs: &[RunView], now: DateTime<Utc>) -> Option<usize> {
    let eligible = |r: &RunView| r.queued > 0 && r.running < r.max_workers.max(1);
    match strategy {
        Strategy::Static => runs
            .iter()
            .enumerate()
            .filter(|(_, r)| eligible(r) && r.running < r.allot.max(1))
            .min_by_key(|(_, r)| (r.arrival, r.key))
            .map(|(i, _)| i),
        Strategy::Dynamic => runs
            .iter()
            .enumerate()
            .filter(|(_, r)| eligible(r))
            .min_by_key(|(_, r)| (r.priority, r.arrival, r.key))
            .map(|(i, _)| i),
        Strategy::Combined => runs
            .iter()
            .enumerate()
            .filter(|(_, r)| eligible(r))
            .min_by(|(_, a), (_, b)| {
                let tier = |r: &RunView| usize::from(r.running >= r.allot.max(1));
                (a.priority, tier(a))
                    .cmp(&(b.priority, tier(b)))
                    .then(a.slack(now).total_cmp(&b.slack(now)))
                    .then((a.arrival, a.key).cmp(&(b.arrival, b.key)))
            })
            .map(|(i, _)| i),
    }
}

/// A partition being processed, as the lag detector sees it.
#[derive(Debug, Clone)]
pub struct RunningPart {
    /// The run it belongs to.
    pub run: u64,
    /// Seconds it has been running (since it was last split).
    pub elapsed: f64,
    /// Seconds it should take: its key range at the rate its finished
    /// siblings were measured at, or the plan's estimate before any
    /// sibling finished.
    pub expected: f64,
    /// Whether its source can split it (and it is not too small to split).
    pub splittable: bool,
}

/// A partition lags when it has run this many times longer than expected…
pub const LAG_FACTOR: f64 = 2.0;
/// …and for at least this long (short partitions are not worth splitting).
pub const MIN_LAG_SECS: f64 = 30.0;

/// Indices in `parts` of the partitions to split now.
pub fn lagging(parts: &[RunningPart]) -> Vec<usize> {
    lagging_after(parts, MIN_LAG_SECS)
}

/// [`lagging`] with another least lag than [`MIN_LAG_SECS`] (a job's
/// `[limits] split_lagging_after`).
pub fn lagging_after(parts: &[RunningPart], min_secs: f64) -> Vec<usize> {
    parts
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.splittable && p.elapsed >= min_secs && p.elapsed > LAG_FACTOR * p.expected
        })
        .map(|(i, _)| i)
        .collect()
}

/// Partitions of a finished run that lagged far behind their siblings,
/// by the seconds each took: the same rule as [`lagging`], with the median
/// of the run's partitions as what each should have taken.
pub fn laggards_in(secs: &[f64]) -> Vec<usize> {
    let Some(med) = median(secs) else {
        return Vec::new();
    };
    let parts: Vec<RunningPart> = secs
        .iter()
        .map(|&s| RunningPart {
            run: 0,
            elapsed: s,
            expected: med,
            splittable: true,
        })
        .collect();
    lagging(&parts)
}

/// The median of some durations.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn view(key: u64, priority: Priority, queued: usize, running: usize) -> RunView {
        RunView {
            key,
            priority,
            arrival: Utc
                .with_ymd_and_hms(2026, 11, 21, 1, 0, key as u32)
                .unwrap(),
            deadline: None,
            allot: 2,
            max_workers: 4,
            queued,
            running,
            remaining_secs: 100.0,
        }
    }

    #[test]
    fn urgent_takes_the_next_worker_unless_static() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap();
        let runs = [
            view(1, Priority::Bulk, 10, 1),
            view(2, Priority::Urgent, 3, 0),
        ];
        assert_eq!(choose(Strategy::Dynamic, &runs, now), Some(1));
        assert_eq!(choose(Strategy::Combined, &runs, now), Some(1));
        // Static serves in plan order: the bulk run came first.
        assert_eq!(choose(Strategy::Static, &runs, now), Some(0));
    }

    #[test]
    fn combined_prefers_least_slack_and_static_respects_allotments() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap();
        let mut a = view(1, Priority::Bulk, 5, 0);
        a.deadline = Some(now + chrono::Duration::hours(4));
        let mut b = view(2, Priority::Bulk, 5, 0);
        b.deadline = Some(now + chrono::Duration::minutes(10));
        b.remaining_secs = 1000.0;
        assert_eq!(
            choose(Strategy::Combined, &[a.clone(), b.clone()], now),
            Some(1)
        );
        assert_eq!(
            choose(Strategy::Dynamic, &[a.clone(), b.clone()], now),
            Some(0)
        );
        a.running = 2;
        b.running = 2;
        assert_eq!(choose(Strategy::Static, &[a.clone(), b.clone()], now), None);
        // Idle workers steal beyond allotments in combined.
        assert_eq!(choose(Strategy::Combined, &[a, b], now), Some(1));
    }

    #[test]
    fn lagging_partition_is_found() {
        let p = |elapsed, expected, splittable| RunningPart {
            run: 1,
            elapsed,
            expected,
            splittable,
        };
        let parts = [
            p(300.0, 60.0, true),
            p(100.0, 60.0, true),
            p(300.0, 60.0, false),
            p(20.0, 5.0, true),
            p(121.0, 60.0, true),
        ];
        assert_eq!(lagging(&parts), vec![0, 4]);
    }
}
