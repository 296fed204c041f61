//! The scheduler on a virtual clock: an event-driven engine that hands
//! partitions to a fixed pool of workers with the rebalancer's decisions
//! ([`super::rebalance::choose`], [`super::rebalance::lagging`]), and the
//! workload traces `tidex simulate` replays on it.
//!
//! The same engine predicts start and finish times for the planner
//! ([`super::planner::plan`]), so a plan, a simulation and `tidex serve`
//! all follow one set of rules.
//!
//! A run's input is modelled as a key space `[0, 1)` whose work is spread
//! by a [`Profile`] (uniform, or with a hot range holding a share of the
//! work, as a skewed primary key or one huge file would). Partitions are
//! key ranges; a worker processes its range at a constant rate of work, so
//! a partition over the hot range lags its siblings. Splitting a running
//! partition halves the key range it has not read yet: the worker keeps
//! the first half, the second goes back to the front of the run's queue.

use super::clock::{secs_between, secs_to_duration};
use super::cron::Schedule;
use super::planner::{self, Estimate, PartRecord, PlanInput};
use super::rebalance::{choose, lagging, median, RunView, RunningPart, Strategy};
use super::surge::SurgeDetector;
use crate::error::{Error, Result};
use crate::spec::{CatchUp, Priority, ScheduleSection};
use chrono::{DateTime, Datelike, Utc};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// How a run's work is spread over its key space `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Where the hot range starts.
    pub hot_at: f64,
    /// Width of the hot range.
    pub hot_width: f64,
    /// Share of all work inside the hot range (0: uniform).
    pub hot_share: f64,
}

impl Profile {
    /// Work spread evenly.
    pub const UNIFORM: Profile = Profile {
        hot_at: 0.0,
        hot_width: 1.0,
        hot_share: 0.0,
    };

    /// Share of the work in keys `[a, b)`.
    pub fn mass(&self, a: f64, b: f64) -> f64 {
        let (a, b) = (a.clamp(0.0, 1.0), b.clamp(0.0, 1.0));
        if b <= a {
            return 0.0;
        }
        let base = (1.0 - self.hot_share) * (b - a);
        let lo = self.hot_at.max(a);
        let hi = (self.hot_at + self.hot_width).min(b);
        let hot = if hi > lo && self.hot_width > 0.0 {
            self.hot_share * (hi - lo) / self.hot_width
        } else {
            0.0
        };
        base + hot
    }

    /// The key `x` in `[a, b]` with `mass(a, x) = m`.
    pub fn key_after(&self, a: f64, b: f64, m: f64) -> f64 {
        let (mut lo, mut hi) = (a, b);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if self.mass(a, mid) < m {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

/// A run handed to the engine.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Job name.
    pub job: String,
    /// Priority.
    pub priority: Priority,
    /// End of its window, if any.
    pub deadline: Option<DateTime<Utc>>,
    /// Partitions to cut it into (equal key ranges).
    pub partitions: usize,
    /// Workers allotted by the plan (its `max_workers` when unplanned).
    pub allot: usize,
    /// Most workers it may use at once.
    pub max_workers: usize,
    /// Worker-seconds it really takes (hidden from the scheduler).
    pub actual_work: f64,
    /// Worker-seconds the scheduler expects.
    pub predicted_work: f64,
    /// How its work is spread over its keys.
    pub profile: Profile,
    /// Whether its source can split partitions.
    pub splittable: bool,
    /// A scheduled (tide) run rather than an ad-hoc one.
    pub tide: bool,
}

/// A finished partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartDone {
    /// Key range start.
    pub lo: f64,
    /// Key range end.
    pub hi: f64,
    /// Seconds on its worker.
    pub secs: f64,
}

/// What happened to a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Job name.
    pub job: String,
    /// Priority.
    pub priority: Priority,
    /// A scheduled (tide) run.
    pub tide: bool,
    /// When it arrived.
    pub arrival: DateTime<Utc>,
    /// Its deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// When its first partition started.
    pub first_start: Option<DateTime<Utc>>,
    /// When its last partition finished (the engine's time if unfinished).
    pub finish: DateTime<Utc>,
    /// Partitions planned.
    pub partitions: usize,
    /// Workers allotted.
    pub allot: usize,
    /// Lagging partitions split.
    pub splits: usize,
    /// Finished partitions.
    pub parts: Vec<PartDone>,
}

#[derive(Debug)]
struct Part {
    lo: f64,
    hi: f64,
    est: f64,
    depth: u32,
}

#[derive(Debug)]
struct RunState {
    spec: RunSpec,
    arrival: DateTime<Utc>,
    queue: VecDeque<Part>,
    running: usize,
    done: Vec<PartDone>,
    first_start: Option<DateTime<Utc>>,
    finish: Option<DateTime<Utc>>,
    splits: usize,
}

#[derive(Debug)]
struct Busy {
    run: usize,
    lo: f64,
    hi: f64,
    started: DateTime<Utc>,
    seg_lo: f64,
    seg_start: DateTime<Utc>,
    lag_since: DateTime<Utc>,
    expected: f64,
    depth: u32,
    gen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Done { worker: usize, gen: u64 },
    Tick,
}

/// Seconds between lag checks.
pub const LAG_CHECK_SECS: f64 = 30.0;
/// Most times a partition is halved.
pub const MAX_SPLIT_DEPTH: u32 = 12;

/// Counters of an engine.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    /// Worker-seconds spent on partitions.
    pub busy_secs: f64,
    /// Most partitions queued at once.
    pub max_queue: usize,
    /// Partitions split.
    pub splits: usize,
}

/// The event-driven scheduler on a virtual clock.
pub struct Engine {
    strategy: Strategy,
    now: DateTime<Utc>,
    runs: Vec<RunState>,
    active: Vec<usize>,
    busy: Vec<Option<Busy>>,
    events: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
    tick_pending: bool,
    /// Counters.
    pub stats: EngineStats,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl Engine {
    /// An idle pool of `workers` at time `start`.
    pub fn new(strategy: Strategy, workers: usize, start: DateTime<Utc>) -> Self {
        Engine {
            strategy,
            now: start,
            runs: Vec::new(),
            active: Vec::new(),
            busy: (0..workers.max(1)).map(|_| None).collect(),
            events: BinaryHeap::new(),
            seq: 0,
            tick_pending: false,
            stats: EngineStats::default(),
        }
    }

    /// The engine's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Partitions waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.active.iter().map(|&r| self.runs[r].queue.len()).sum()
    }

    /// Workers processing a partition.
    pub fn busy_workers(&self) -> usize {
        self.busy.iter().filter(|b| b.is_some()).count()
    }

    /// Submits a run arriving now; returns its key.
    pub fn submit(&mut self, spec: RunSpec) -> u64 {
        let n = spec.partitions.max(1);
        let queue = (0..n)
            .map(|i| {
                let (lo, hi) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                Part {
                    lo,
                    hi,
                    est: spec.predicted_work * (hi - lo),
                    depth: 0,
                }
            })
            .collect();
        self.runs.push(RunState {
            spec,
            arrival: self.now,
            queue,
            running: 0,
            done: Vec::new(),
            first_start: None,
            finish: None,
            splits: 0,
        });
        self.active.push(self.runs.len() - 1);
        self.stats.max_queue = self.stats.max_queue.max(self.queue_depth());
        (self.runs.len() - 1) as u64
    }

    fn push(&mut self, at: DateTime<Utc>, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((micros(at), self.seq, ev)));
    }

    fn view(&self, r: usize) -> RunView {
        let run = &self.runs[r];
        let queued: f64 = run.queue.iter().map(|p| p.est).sum();
        let running: f64 = self
            .busy
            .iter()
            .flatten()
            .filter(|b| b.run == r)
            .map(|b| (b.expected - secs_between(b.lag_since, self.now)).max(0.0))
            .sum();
        RunView {
            key: r as u64,
            priority: run.spec.priority,
            arrival: run.arrival,
            deadline: run.spec.deadline,
            allot: run.spec.allot,
            max_workers: run.spec.max_workers,
            queued: run.queue.len(),
            running: run.running,
            remaining_secs: queued + running,
        }
    }

    fn assign(&mut self) {
        while let Some(w) = self.busy.iter().position(Option::is_none) {
            let views: Vec<RunView> = self.active.iter().map(|&r| self.view(r)).collect();
            let Some(i) = choose(self.strategy, &views, self.now) else {
                break;
            };
            let r = self.active[i];
            let Some(part) = self.runs[r].queue.pop_front() else {
                break;
            };
            let run = &mut self.runs[r];
            run.running += 1;
            run.first_start.get_or_insert(self.now);
            let secs = run.spec.actual_work * run.spec.profile.mass(part.lo, part.hi);
            self.seq += 1;
            let gen = self.seq;
            self.busy[w] = Some(Busy {
                run: r,
                lo: part.lo,
                hi: part.hi,
                started: self.now,
                seg_lo: part.lo,
                seg_start: self.now,
                lag_since: self.now,
                expected: part.est,
                depth: part.depth,
                gen,
            });
            let end = self.now + secs_to_duration(secs);
            self.push(end, Ev::Done { worker: w, gen });
        }
    }

    fn ensure_tick(&mut self) {
        if self.strategy.splits() && !self.tick_pending && self.busy_workers() > 0 {
            self.tick_pending = true;
            let at = self.now + secs_to_duration(LAG_CHECK_SECS);
            self.push(at, Ev::Tick);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Done { worker, gen } => {
                let Some(b) = self.busy[worker].take_if(|b| b.gen == gen) else {
                    return; // superseded by a split
                };
                let secs = secs_between(b.started, self.now);
                self.stats.busy_secs += secs;
                let run = &mut self.runs[b.run];
                run.running -= 1;
                run.done.push(PartDone {
                    lo: b.lo,
                    hi: b.hi,
                    secs,
                });
                if run.running == 0 && run.queue.is_empty() {
                    run.finish = Some(self.now);
                    self.active.retain(|&r| r != b.run);
                }
            }
            Ev::Tick => {
                self.tick_pending = false;
                self.split_laggards();
            }
        }
    }

    fn split_laggards(&mut self) {
        let now = self.now;
        let mut who = Vec::new();
        let mut parts = Vec::new();
        for (w, b) in self.busy.iter().enumerate() {
            let Some(b) = b else { continue };
            let run = &self.runs[b.run];
            // Seconds per unit of key range, as the finished siblings ran.
            let rates: Vec<f64> = run
                .done
                .iter()
                .filter(|d| d.hi > d.lo)
                .map(|d| d.secs / (d.hi - d.lo))
                .collect();
            let expected = median(&rates).map_or(b.expected, |r| r * (b.hi - b.seg_lo));
            who.push(w);
            parts.push(RunningPart {
                run: b.run as u64,
                elapsed: secs_between(b.lag_since, now),
                expected,
                splittable: run.spec.splittable
                    && b.depth < MAX_SPLIT_DEPTH
                    && b.hi - b.seg_lo > 1e-6,
            });
        }
        for i in lagging(&parts) {
            let w = who[i];
            let Some(b) = self.busy[w].as_mut() else {
                continue;
            };
            let run = &mut self.runs[b.run];
            let prof = run.spec.profile;
            let done = secs_between(b.seg_start, now) / run.spec.actual_work.max(1e-9);
            let x = prof.key_after(b.seg_lo, b.hi, done);
            if b.hi - x < 1e-9 {
                continue;
            }
            let m = 0.5 * (x + b.hi);
            let rest = Part {
                lo: m,
                hi: b.hi,
                est: run.spec.predicted_work * (b.hi - m),
                depth: b.depth + 1,
            };
            b.hi = m;
            b.seg_lo = x;
            b.seg_start = now;
            b.lag_since = now;
            b.depth += 1;
            b.expected = run.spec.predicted_work * (m - x);
            self.seq += 1;
            b.gen = self.seq;
            let gen = b.gen;
            let end = now + secs_to_duration(run.spec.actual_work * prof.mass(x, m));
            run.queue.push_front(rest);
            run.splits += 1;
            self.stats.splits += 1;
            tracing::debug!(job = %run.spec.job, at = x, "split a lagging partition");
            self.push(end, Ev::Done { worker: w, gen });
        }
    }

    fn step(&mut self, until: Option<i64>) -> bool {
        self.assign();
        self.ensure_tick();
        self.stats.max_queue = self.stats.max_queue.max(self.queue_depth());
        match self.events.peek() {
            Some(Reverse((at, _, _))) if until.is_none_or(|u| *at <= u) => {
                let Some(Reverse((at, _, ev))) = self.events.pop() else {
                    return false;
                };
                self.now = self.now.max(from_micros(at));
                self.handle(ev);
                true
            }
            _ => false,
        }
    }

    /// Processes everything that happens up to `t`, then stands at `t`.
    pub fn run_until(&mut self, t: DateTime<Utc>) {
        while self.step(Some(micros(t))) {}
        self.now = self.now.max(t);
    }

    /// Processes until every submitted run has finished.
    pub fn run_to_end(&mut self) {
        while self.step(None) {}
    }

    /// Timed partitions of the job's finished runs, newest first.
    pub fn history(&self, job: &str, limit: usize) -> Vec<Vec<PartRecord>> {
        self.runs
            .iter()
            .rev()
            .filter(|r| r.spec.job == job && r.finish.is_some())
            .take(limit)
            .map(|r| {
                r.done
                    .iter()
                    .map(|d| PartRecord {
                        rows: 0,
                        bytes: 0,
                        secs: d.secs,
                    })
                    .collect()
            })
            .collect()
    }

    /// Every run's outcome, in submission order.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.runs
            .iter()
            .map(|r| Outcome {
                job: r.spec.job.clone(),
                priority: r.spec.priority,
                tide: r.spec.tide,
                arrival: r.arrival,
                deadline: r.spec.deadline,
                first_start: r.first_start,
                finish: r.finish.unwrap_or(self.now),
                partitions: r.spec.partitions,
                allot: r.spec.allot,
                splits: r.splits,
                parts: r.done.clone(),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Traces

/// A workload trace: tide jobs on cron schedules, random urgent queries and
/// bursts of unplanned work, replayed deterministically from `seed`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    /// Workers in the pool (overridden by `--workers`).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Start of the simulated period (RFC 3339).
    pub start: String,
    /// End of arrivals (RFC 3339); the simulation runs until all work is done.
    pub end: String,
    /// Seed of the random parts (sizes, urgent arrivals).
    #[serde(default)]
    pub seed: u64,
    /// Partitions of a run nobody planned.
    #[serde(default = "default_partitions")]
    pub default_partitions: usize,
    /// Recurring tide jobs.
    #[serde(default, rename = "job")]
    pub jobs: Vec<TraceJob>,
    /// Random urgent queries.
    #[serde(default)]
    pub urgent: Option<UrgentGen>,
    /// Bursts of unplanned work (a backlog after an outage…).
    #[serde(default, rename = "surge")]
    pub surges: Vec<SurgeGen>,
}

fn default_workers() -> usize {
    16
}
fn default_partitions() -> usize {
    8
}
fn default_max_workers() -> usize {
    4
}
fn one() -> f64 {
    1.0
}
fn default_jitter() -> f64 {
    0.1
}
fn yes() -> bool {
    true
}

/// A tide job of a trace.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceJob {
    /// Job name.
    pub name: String,
    /// Cron expression, as in `[schedule]`.
    pub cron: String,
    /// IANA zone (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Window, as in `[schedule]`.
    #[serde(default)]
    pub window: Option<String>,
    /// Priority.
    #[serde(default)]
    pub priority: Priority,
    /// Worker-seconds of a usual run.
    pub work_secs: f64,
    /// Run-to-run variation (0.1: ±10%).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Size multiplier of runs on the last day of a month.
    #[serde(default = "one")]
    pub month_end_factor: f64,
    /// Most workers at once.
    #[serde(default = "default_max_workers")]
    pub max_workers: usize,
    /// Skew: `[at, width, share]`, a key range holding a share of the work.
    #[serde(default)]
    pub hot: Option<[f64; 3]>,
    /// Whether its source can split partitions.
    #[serde(default = "yes")]
    pub splittable: bool,
}

/// Random urgent queries: a Poisson stream.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrgentGen {
    /// Mean arrivals per day.
    pub per_day: f64,
    /// Worker-seconds, `[min, max]`, uniform.
    pub work_secs: [f64; 2],
    /// Partitions of each.
    #[serde(default = "default_max_workers")]
    pub partitions: usize,
    /// Most workers at once.
    #[serde(default = "default_max_workers")]
    pub max_workers: usize,
}

/// A burst of unplanned runs.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurgeGen {
    /// When it starts (RFC 3339).
    pub at: String,
    /// How many runs.
    pub runs: usize,
    /// Over how many seconds they arrive.
    #[serde(default)]
    pub spread_secs: f64,
    /// Worker-seconds of each, `[min, max]`, uniform.
    pub work_secs: [f64; 2],
    /// Priority.
    #[serde(default)]
    pub priority: Priority,
    /// Most workers at once.
    #[serde(default = "default_max_workers")]
    pub max_workers: usize,
}

/// SplitMix64: small, seedable, good enough for workload generation.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, r: [f64; 2]) -> f64 {
        r[0] + (r[1] - r[0]) * self.next()
    }
}

#[derive(Debug, Clone)]
struct Arrival {
    at: DateTime<Utc>,
    job: String,
    priority: Priority,
    tide: bool,
    window_start: Option<DateTime<Utc>>,
    deadline: Option<DateTime<Utc>>,
    actual: f64,
    nominal: f64,
    max_workers: usize,
    partitions: usize,
    profile: Profile,
    splittable: bool,
}

fn rfc3339(field: &str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| {
            Error::Config(format!(
                "trace `{field}`: {s:?} is not an RFC 3339 time: {e}"
            ))
        })
}

impl Trace {
    /// Parses a trace file's text.
    pub fn parse(text: &str) -> Result<Trace> {
        let t: Trace =
            toml::from_str(text).map_err(|e| Error::Config(format!("invalid trace: {e}")))?;
        rfc3339("start", &t.start)?;
        rfc3339("end", &t.end)?;
        Ok(t)
    }

    fn arrivals(&self) -> Result<Vec<Arrival>> {
        let start = rfc3339("start", &self.start)?;
        let end = rfc3339("end", &self.end)?;
        let mut rng = Rng(self.seed);
        let mut out = Vec::new();
        for j in &self.jobs {
            let sched = Schedule::compile(&ScheduleSection {
                cron: Some(j.cron.clone()),
                timezone: j.timezone.clone().or(Some("UTC".into())),
                window: j.window.clone(),
                priority: j.priority,
                catch_up: CatchUp::None,
            })
            .map_err(|(f, m)| Error::Config(format!("trace job `{}`: `{f}`: {m}", j.name)))?;
            let profile = j
                .hot
                .map_or(Profile::UNIFORM, |[at, width, share]| Profile {
                    hot_at: at,
                    hot_width: width,
                    hot_share: share,
                });
            for fire in sched.fires_between(start - chrono::Duration::seconds(1), end, usize::MAX) {
                let local = fire.with_timezone(&sched.tz);
                let month_end =
                    (local.date_naive() + chrono::Days::new(1)).month() != local.month();
                let factor = if month_end { j.month_end_factor } else { 1.0 };
                let jitter = 1.0 + j.jitter * (2.0 * rng.next() - 1.0);
                out.push(Arrival {
                    at: fire,
                    job: j.name.clone(),
                    priority: j.priority,
                    tide: true,
                    window_start: sched.window_start(fire),
                    deadline: sched.deadline(fire),
                    actual: j.work_secs * factor * jitter,
                    nominal: j.work_secs,
                    max_workers: j.max_workers,
                    partitions: self.default_partitions,
                    profile,
                    splittable: j.splittable,
                });
            }
        }
        if let Some(u) = &self.urgent {
            let mean_gap = 86_400.0 / u.per_day.max(1e-9);
            let mut t = start;
            let mut n = 0;
            loop {
                t += secs_to_duration(-mean_gap * (1.0 - rng.next()).ln());
                if t >= end {
                    break;
                }
                n += 1;
                let w = rng.range(u.work_secs);
                out.push(Arrival {
                    at: t,
                    job: format!("urgent-{n}"),
                    priority: Priority::Urgent,
                    tide: false,
                    window_start: None,
                    deadline: None,
                    actual: w,
                    nominal: w,
                    max_workers: u.max_workers,
                    partitions: u.partitions,
                    profile: Profile::UNIFORM,
                    splittable: true,
                });
            }
        }
        for (k, s) in self.surges.iter().enumerate() {
            let at = rfc3339("surge.at", &s.at)?;
            for i in 0..s.runs {
                let w = rng.range(s.work_secs);
                let off = s.spread_secs * i as f64 / s.runs.max(1) as f64;
                out.push(Arrival {
                    at: at + secs_to_duration(off),
                    job: format!("surge-{k}-{i}"),
                    priority: s.priority,
                    tide: false,
                    window_start: None,
                    deadline: None,
                    actual: w,
                    nominal: w,
                    max_workers: s.max_workers,
                    partitions: self.default_partitions,
                    profile: Profile::UNIFORM,
                    splittable: true,
                });
            }
        }
        out.sort_by(|a, b| a.at.cmp(&b.at).then(a.job.cmp(&b.job)));
        Ok(out)
    }
}

/// The result of replaying a trace with one strategy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// `static`, `dynamic` or `combined`.
    pub strategy: &'static str,
    /// Workers in the pool.
    pub workers: usize,
    /// Runs simulated.
    pub runs: usize,
    /// Seconds from the trace's start until the last run finished.
    pub makespan_secs: f64,
    /// Scheduled runs with a window.
    pub tide_runs: usize,
    /// Scheduled runs that finished after their window.
    pub window_misses: usize,
    /// Urgent runs.
    pub urgent_runs: usize,
    /// 95th percentile of urgent runs' completion time (arrival to finish).
    pub urgent_p95_secs: f64,
    /// Busy worker-seconds over worker-seconds available until the makespan.
    pub utilisation: f64,
    /// Lagging partitions split.
    pub splits: usize,
    /// Hours whose arrivals exceeded the forecast (surges detected).
    pub surges: u64,
    /// Most partitions queued at once.
    pub max_queue_depth: usize,
}

/// Replays `trace` on `workers` with `strategy` on a virtual clock.
pub fn simulate(trace: &Trace, workers: usize, strategy: Strategy) -> Result<Report> {
    let start = rfc3339("start", &trace.start)?;
    let arrivals = trace.arrivals()?;
    let mut engine = Engine::new(strategy, workers, start);
    let mut surge = SurgeDetector::default();
    let bucket = chrono::Duration::hours(1);
    let mut bucket_end = start + bucket;
    let mut bucket_work = 0.0;
    let mut i = 0;
    while i < arrivals.len() {
        let at = arrivals[i].at;
        let mut j = i;
        while j < arrivals.len() && arrivals[j].at == at {
            j += 1;
        }
        let batch = &arrivals[i..j];
        i = j;
        engine.run_until(at);
        while at >= bucket_end {
            let v = surge.observe(bucket_work);
            if v.surge {
                tracing::info!(at = %bucket_end, arrived = v.arrived, forecast = v.forecast, "surge detected");
            }
            bucket_work = 0.0;
            bucket_end += bucket;
        }
        // Tides are planned; a surge is unplanned work above its forecast.
        bucket_work += batch
            .iter()
            .filter(|a| !a.tide)
            .map(|a| a.nominal)
            .sum::<f64>();
        let (tides, adhoc): (Vec<&Arrival>, Vec<&Arrival>) = batch.iter().partition(|a| a.tide);
        let spec = |a: &Arrival, partitions: usize, allot: usize, predicted: f64| RunSpec {
            job: a.job.clone(),
            priority: a.priority,
            deadline: a.deadline,
            partitions,
            allot,
            max_workers: a.max_workers,
            actual_work: a.actual,
            predicted_work: predicted,
            profile: a.profile,
            splittable: a.splittable,
            tide: a.tide,
        };
        if strategy.plans() && !tides.is_empty() {
            let inputs: Vec<PlanInput> = tides
                .iter()
                .map(|a| PlanInput {
                    job: a.job.clone(),
                    priority: a.priority,
                    fire: a.at,
                    window_start: a.window_start,
                    deadline: a.deadline,
                    max_workers: a.max_workers,
                    estimate: Estimate::from_history(&engine.history(&a.job, 5)),
                    size_hint_secs: Some(a.nominal),
                })
                .collect();
            for entry in planner::plan(&inputs, workers) {
                let Some(a) = tides.iter().find(|a| a.job == entry.job) else {
                    continue;
                };
                engine.submit(spec(a, entry.partitions, entry.workers, entry.work_secs));
            }
        } else {
            for a in &tides {
                engine.submit(spec(a, a.partitions, a.max_workers, a.nominal));
            }
        }
        for a in &adhoc {
            engine.submit(spec(a, a.partitions, a.max_workers, a.nominal));
        }
    }
    engine.run_to_end();
    let outcomes = engine.outcomes();
    let makespan = outcomes
        .iter()
        .map(|o| secs_between(start, o.finish))
        .fold(0.0, f64::max);
    let tide: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.tide && o.deadline.is_some())
        .collect();
    let misses = tide
        .iter()
        .filter(|o| o.deadline.is_some_and(|d| o.finish > d))
        .count();
    let mut urgent: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.priority == Priority::Urgent && !o.tide)
        .map(|o| secs_between(o.arrival, o.finish))
        .collect();
    urgent.sort_by(f64::total_cmp);
    let p95 = if urgent.is_empty() {
        0.0
    } else {
        urgent[((urgent.len() as f64 * 0.95).ceil() as usize).clamp(1, urgent.len()) - 1]
    };
    Ok(Report {
        strategy: strategy.as_str(),
        workers,
        runs: outcomes.len(),
        makespan_secs: makespan,
        tide_runs: tide.len(),
        window_misses: misses,
        urgent_runs: urgent.len(),
        urgent_p95_secs: p95,
        utilisation: engine.stats.busy_secs / (workers as f64 * makespan.max(1e-9)),
        splits: engine.stats.splits,
        surges: surge.surges,
        max_queue_depth: engine.stats.max_queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 1, 0, 0).unwrap()
    }

    fn run(job: &str, priority: Priority, partitions: usize, work: f64) -> RunSpec {
        RunSpec {
            job: job.into(),
            priority,
            deadline: None,
            partitions,
            allot: 4,
            max_workers: 4,
            actual_work: work,
            predicted_work: work,
            profile: Profile::UNIFORM,
            splittable: true,
            tide: false,
        }
    }

    #[test]
    fn urgent_submitted_during_a_bulk_tide_finishes_first() {
        for strategy in [Strategy::Dynamic, Strategy::Combined] {
            let mut e = Engine::new(strategy, 4, t0());
            // Two hours of bulk work on four workers, 60 s partitions.
            e.submit(run("bulk", Priority::Bulk, 480, 8.0 * 3600.0));
            e.run_until(t0() + chrono::Duration::minutes(30));
            assert_eq!(e.busy_workers(), 4);
            e.submit(run("urgent", Priority::Urgent, 4, 240.0));
            e.run_to_end();
            let o = e.outcomes();
            let (bulk, urgent) = (&o[0], &o[1]);
            // Workers change hands at partition boundaries: within one
            // bulk partition (60 s) plus the urgent work (60 s each).
            let took = secs_between(urgent.arrival, urgent.finish);
            assert!(took <= 121.0, "{strategy:?}: {took}");
            assert!(urgent.finish < bulk.finish);
            assert_eq!(bulk.parts.len() + urgent.parts.len(), 484);
        }
        // Static has no priorities: the urgent run waits for the tide.
        let mut e = Engine::new(Strategy::Static, 4, t0());
        e.submit(run("bulk", Priority::Bulk, 480, 8.0 * 3600.0));
        e.run_until(t0() + chrono::Duration::minutes(30));
        e.submit(run("urgent", Priority::Urgent, 4, 240.0));
        e.run_to_end();
        let o = e.outcomes();
        assert!(o[1].finish >= o[0].finish - chrono::Duration::seconds(61));
    }

    #[test]
    fn a_lagging_partition_is_split_and_finishes_sooner() {
        // 8 partitions; the keys in [0.5, 0.51) hold 60% of the work, all
        // inside partition 4.
        let hot = Profile {
            hot_at: 0.5,
            hot_width: 0.01,
            hot_share: 0.6,
        };
        let mut spec = run("skewed", Priority::Normal, 8, 8000.0);
        spec.allot = 8;
        spec.max_workers = 8;
        spec.profile = hot;
        let finish = |strategy, splittable| {
            let mut s = spec.clone();
            s.splittable = splittable;
            let mut e = Engine::new(strategy, 8, t0());
            e.submit(s);
            e.run_to_end();
            let o = e.outcomes().remove(0);
            let work: f64 = o.parts.iter().map(|p| p.secs).sum();
            // Splitting never loses or repeats work: every key read once.
            assert!((work - 8000.0).abs() < 1e-3, "{work}");
            let mut keys: Vec<(f64, f64)> = o.parts.iter().map(|p| (p.lo, p.hi)).collect();
            keys.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(keys[0].0, 0.0);
            for w in keys.windows(2) {
                assert!((w[0].1 - w[1].0).abs() < 1e-12, "{keys:?}");
            }
            (secs_between(t0(), o.finish), o.splits)
        };
        let (unsplit, n) = finish(Strategy::Dynamic, false);
        assert_eq!(n, 0);
        // The hot partition alone takes 60% + 1/8 of 40% of the work.
        assert!((unsplit - 5200.0).abs() < 1.0, "{unsplit}");
        let (split, n) = finish(Strategy::Dynamic, true);
        assert!(n >= 3, "{n}");
        assert!(split < 0.5 * unsplit, "{split} vs {unsplit}");
        let (stat, n) = finish(Strategy::Static, true);
        assert_eq!((stat, n), (unsplit, 0), "static never splits");
    }

    #[test]
    fn trace_errors_and_determinism() {
        let text = r#"
workers = 4
start = "2026-11-20T00:00:00Z"
end = "2026-11-22T00:00:00Z"
seed = 7
[[job]]
name = "nightly"
cron = "0 1 * * *"
window = "01:00-03:00"
work_secs = 14400
[urgent]
per_day = 10
work_secs = [30, 300]
"#;
        let t = Trace::parse(text).unwrap();
        let a = simulate(&t, 4, Strategy::Combined).unwrap();
        let b = simulate(&t, 4, Strategy::Combined).unwrap();
        assert_eq!(a.makespan_secs, b.makespan_secs);
        assert_eq!(a.tide_runs, 2);
        assert!(a.urgent_runs > 5);
        let bad = text.replace("0 1 * * *", "0 1 * *");
        let err = Trace::parse(&bad)
            .and_then(|t| simulate(&t, 4, Strategy::Static))
            .unwrap_err();
        assert!(err.to_string().contains("nightly"), "{err}");
    }
}
