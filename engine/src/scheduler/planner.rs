//! The static planner for tides: before scheduled runs start, it reads
//! each job's history (rows, bytes and seconds per partition of earlier
//! runs), predicts the work, and chooses a partition count and a worker
//! allotment so each job ends inside its window. Jobs that share a window
//! get workers by predicted cost: what each needs to meet its deadline
//! first, spare workers to the longest, runs packed earliest deadline
//! first and longest first. Predicted start and finish come from running
//! the scheduler itself ([`super::sim::Engine`]) on a virtual clock.

use super::clock::secs_between;
use super::rebalance::Strategy;
use super::sim::{Engine, Profile, RunSpec};
use crate::spec::Priority;
use chrono::{DateTime, Utc};

/// Work assumed for a job with neither history nor a size hint.
pub const DEFAULT_WORK_SECS: f64 = 60.0;
/// Most partitions the planner asks for.
pub const MAX_PARTITIONS: usize = 256;
/// Longest partition the planner aims for: short partitions are what lets
/// urgent work take a worker soon (workers change hands at partition
/// boundaries) and what keeps one slow partition from deciding the finish.
pub const TARGET_PARTITION_SECS: f64 = 300.0;

/// One partition of an earlier run, from the state store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartRecord {
    /// Rows delivered.
    pub rows: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// Seconds it took on one worker.
    pub secs: f64,
}

/// What history predicts for a job's next run.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Runs the estimate is based on.
    pub runs: usize,
    /// Predicted worker-seconds (sum of partition seconds).
    pub work_secs: f64,
    /// Predicted input bytes.
    pub bytes: f64,
    /// Predicted rows.
    pub rows: f64,
    /// Partitions of the newest run.
    pub last_partitions: usize,
}

impl Estimate {
    /// An estimate from the partitions of earlier runs, newest run first;
    /// runs without timed partitions are skipped. Newer runs weigh more
    /// (exponentially weighted, alpha 0.5).
    pub fn from_history(runs: &[Vec<PartRecord>]) -> Option<Estimate> {
        let timed: Vec<&Vec<PartRecord>> = runs
            .iter()
            .filter(|r| !r.is_empty() && r.iter().any(|p| p.secs > 0.0))
            .collect();
        let newest = timed.first()?;
        let mut est: Option<(f64, f64, f64)> = None;
        for run in timed.iter().rev() {
            let w: f64 = run.iter().map(|p| p.secs).sum();
            let b = run.iter().map(|p| p.bytes as f64).sum::<f64>();
            let r = run.iter().map(|p| p.rows as f64).sum::<f64>();
            est = Some(match est {
                None => (w, b, r),
                Some((ew, eb, er)) => (0.5 * ew + 0.5 * w, 0.5 * eb + 0.5 * b, 0.5 * er + 0.5 * r),
            });
        }
        let (work_secs, bytes, rows) = est?;
        Some(Estimate {
            runs: timed.len(),
            work_secs,
            bytes,
            rows,
            last_partitions: newest.len(),
        })
    }
}

/// A scheduled run to plan.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Job name.
    pub job: String,
    /// Priority.
    pub priority: Priority,
    /// Fire time.
    pub fire: DateTime<Utc>,
    /// Start of its window, if it has one.
    pub window_start: Option<DateTime<Utc>>,
    /// End of its window.
    pub deadline: Option<DateTime<Utc>>,
    /// Most workers the job may use (its `parallelism`).
    pub max_workers: usize,
    /// What its history predicts.
    pub estimate: Option<Estimate>,
    /// Worker-seconds to assume without history (e.g. the source's size at
    /// a nominal rate).
    pub size_hint_secs: Option<f64>,
}

/// The plan for one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanEntry {
    /// Job name.
    pub job: String,
    /// Priority.
    pub priority: Priority,
    /// Fire time.
    pub fire: DateTime<Utc>,
    /// Deadline (end of window).
    pub deadline: Option<DateTime<Utc>>,
    /// Partitions to cut the input into.
    pub partitions: usize,
    /// Workers allotted.
    pub workers: usize,
    /// Predicted worker-seconds.
    pub work_secs: f64,
    /// Earlier runs the prediction is based on (0: size hint or default).
    pub history_runs: usize,
    /// Predicted start.
    pub start: DateTime<Utc>,
    /// Predicted finish.
    pub finish: DateTime<Utc>,
    /// Predicted to end after its deadline.
    pub misses_window: bool,
}

/// Plans runs that share a pool of `workers`. Entries come back in packing
/// order (earliest deadline first, then longest first), which is the order
/// their runs should be submitted in.
pub fn plan(inputs: &[PlanInput], workers: usize) -> Vec<PlanEntry> {
    let workers = workers.max(1);
    let work: Vec<f64> = inputs
        .iter()
        .map(|i| {
            i.estimate
                .as_ref()
                .map(|e| e.work_secs)
                .or(i.size_hint_secs)
                .unwrap_or(DEFAULT_WORK_SECS)
                .max(1e-3)
        })
        .collect();
    let avail: Vec<Option<f64>> = inputs
        .iter()
        .map(|i| {
            let from = i.window_start.map_or(i.fire, |w| w.max(i.fire));
            i.deadline
                .map(|d| secs_between(from, d))
                .filter(|s| *s > 0.0)
        })
        .collect();
    let cap = |i: usize| inputs[i].max_workers.clamp(1, workers);
    // What each needs to make its deadline alone, granted smallest need
    // first so that as many runs as possible make theirs; a run that does
    // not fit gets what is left (at least one worker: it queues)…
    let need: Vec<usize> = (0..inputs.len())
        .map(|i| {
            let need = avail[i].map_or(1.0, |a| (work[i] / a).ceil());
            (need as usize).clamp(1, cap(i))
        })
        .collect();
    let mut by_need: Vec<usize> = (0..inputs.len()).collect();
    by_need.sort_by_key(|&i| (need[i], inputs[i].job.clone()));
    let mut alloc = vec![0usize; inputs.len()];
    let mut left = workers;
    for &i in &by_need {
        alloc[i] = need[i].min(left).max(1);
        left = left.saturating_sub(alloc[i]);
    }
    // …then spare workers to the longest predicted duration.
    let mut total: usize = alloc.iter().sum();
    while total < workers {
        let Some(j) = (0..inputs.len())
            .filter(|&j| alloc[j] < cap(j))
            .max_by(|&a, &b| (work[a] / alloc[a] as f64).total_cmp(&(work[b] / alloc[b] as f64)))
        else {
            break;
        };
        alloc[j] += 1;
        total += 1;
    }
    let partitions: Vec<usize> = (0..inputs.len())
        .map(|i| {
            let target = avail[i].map_or(TARGET_PARTITION_SECS, |a| {
                (a / 12.0).clamp(5.0, TARGET_PARTITION_SECS)
            });
            ((work[i] / target).ceil() as usize)
                .max(2 * alloc[i])
                .clamp(1, MAX_PARTITIONS)
        })
        .collect();
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by(|&a, &b| {
        let (ia, ib) = (&inputs[a], &inputs[b]);
        (ia.fire, ia.priority, ia.deadline.is_none(), ia.deadline)
            .cmp(&(ib.fire, ib.priority, ib.deadline.is_none(), ib.deadline))
            .then(work[b].total_cmp(&work[a]))
            .then(ia.job.cmp(&ib.job))
    });
    // Predict start and finish with the scheduler itself.
    let start = inputs.iter().map(|i| i.fire).min();
    let Some(start) = start else {
        return Vec::new();
    };
    let mut engine = Engine::new(Strategy::Static, workers, start);
    for &i in &order {
        engine.run_until(inputs[i].fire);
        engine.submit(RunSpec {
            job: inputs[i].job.clone(),
            priority: inputs[i].priority,
            deadline: inputs[i].deadline,
            partitions: partitions[i],
            allot: alloc[i],
            max_workers: cap(i),
            actual_work: work[i],
            predicted_work: work[i],
            profile: Profile::UNIFORM,
            splittable: false,
            tide: true,
        });
    }
    engine.run_to_end();
    let outcomes = engine.outcomes();
    order
        .iter()
        .zip(outcomes)
        .map(|(&i, o)| PlanEntry {
            job: inputs[i].job.clone(),
            priority: inputs[i].priority,
            fire: inputs[i].fire,
            deadline: inputs[i].deadline,
            partitions: partitions[i],
            workers: alloc[i],
            work_secs: work[i],
            history_runs: inputs[i].estimate.as_ref().map_or(0, |e| e.runs),
            start: o.first_start.unwrap_or(o.finish),
            finish: o.finish,
            misses_window: inputs[i].deadline.is_some_and(|d| o.finish > d),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn input(job: &str, est: Option<Estimate>, hours: i64) -> PlanInput {
        let fire = Utc.with_ymd_and_hms(2026, 11, 21, 2, 0, 0).unwrap();
        PlanInput {
            job: job.into(),
            priority: Priority::Bulk,
            fire,
            window_start: Some(fire),
            deadline: Some(fire + chrono::Duration::hours(hours)),
            max_workers: 8,
            estimate: est,
            size_hint_secs: None,
        }
    }

    fn run_of(parts: usize, secs: f64) -> Vec<PartRecord> {
        vec![
            PartRecord {
                rows: 1000,
                bytes: 1 << 20,
                secs
            };
            parts
        ]
    }

    #[test]
    fn plan_adapts_to_history() {
        // No history: the default guess, one worker's worth.
        let first = plan(&[input("a", None, 4)], 8);
        assert_eq!(first[0].history_runs, 0);
        assert_eq!(first[0].work_secs, DEFAULT_WORK_SECS);
        // The first run measured 4 partitions of 9000 s: 10 worker-hours,
        // which needs 3 workers to end inside a 4-hour window.
        let est = Estimate::from_history(&[run_of(4, 9000.0)]).unwrap();
        assert_eq!(est.work_secs, 36000.0);
        let second = plan(&[input("a", Some(est), 4)], 8);
        assert_eq!(second[0].history_runs, 1);
        assert_eq!(second[0].work_secs, 36000.0);
        assert!(second[0].workers >= 3, "{second:?}");
        assert!(second[0].partitions >= 2 * second[0].workers);
        assert!(!second[0].misses_window, "{second:?}");
        // Newer runs weigh more.
        let grown = Estimate::from_history(&[run_of(4, 18000.0), run_of(4, 9000.0)]).unwrap();
        assert_eq!(grown.work_secs, 54000.0);
        assert_eq!(grown.runs, 2);
    }

    #[test]
    fn shared_window_packs_by_cost_and_flags_misses() {
        let est = |w: f64| {
            Some(Estimate {
                runs: 3,
                work_secs: w,
                bytes: 0.0,
                rows: 0.0,
                last_partitions: 4,
            })
        };
        let p = plan(
            &[
                input("small", est(3600.0), 4),
                input("big", est(7.0 * 3600.0), 4),
                input("huge", est(40.0 * 3600.0), 4),
            ],
            8,
        );
        let by = |n: &str| p.iter().find(|e| e.job == n).unwrap();
        assert!(by("huge").workers > by("big").workers);
        assert!(by("big").workers >= by("small").workers);
        assert_eq!(p[0].job, "huge", "longest first");
        // 48 worker-hours on 8 workers cannot fit 4 hours; the small
        // and big runs still get what they need.
        assert!(p.iter().any(|e| e.misses_window));
        assert!(!by("small").misses_window, "{p:?}");
        assert!(!by("big").misses_window, "{p:?}");
        assert!(by("huge").misses_window);
    }
}
