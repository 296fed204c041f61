//! The streaming runtime: runs one job from its built source and sink.
//!
//! ```text
//!  partitions ─► work-stealing pool ─► worker: read + parse ─► bounded channel ─► writer thread: encode + commit
//!                                        (one per partition)        (2 batches)       (temp name, then rename)
//! ```
//!
//! Each partition is read on a worker thread, its batches pass a bounded
//! channel (back pressure: a slow sink slows the reader) to a writer thread
//! that encodes them, and the partition is committed atomically and recorded
//! in the state store. Committed partitions of an interrupted run are
//! skipped on resume; once all are committed the sink publishes the run.

pub mod cut;
pub mod pool;
pub mod ratelimit;

use crate::connector::{CommittedPart, PartitionWriter, RunInfo, Sink, Source, Splitter};
use crate::dirty::{ErrorBudget, Rejects};
use crate::error::{Error, Result};
use crate::spec::JobSpec;
use crate::stage::{Chain, StagePlan, StageReport, StageRun};
use crate::state::{NewRun, RunStatus, StateStore, Totals};
use arrow::record_batch::RecordBatch;
use ratelimit::TokenBucket;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Live counters of a run, read by progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    /// Rows delivered so far.
    pub rows: AtomicU64,
    /// Input bytes read so far.
    pub bytes_in: AtomicU64,
    /// Input bytes in all partitions.
    pub total_bytes: AtomicU64,
    /// Partitions committed.
    pub partitions_done: AtomicU64,
    /// Partitions planned.
    pub partitions_total: AtomicU64,
    /// Rows rejected.
    pub dirty: AtomicU64,
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Discard an interrupted run instead of resuming it.
    pub restart: bool,
    /// Set to stop taking new partitions; the run stays resumable.
    pub cancel: Arc<AtomicBool>,
    /// When set, every partition waits for a worker from this gate (the
    /// scheduler's shared pool) before it starts, and holds it until it
    /// is committed or abandoned.
    pub gate: Option<Arc<dyn PartitionGate>>,
    /// When set, rate limits shared with other runs replace the job's own
    /// token buckets (the throttle applies the job's limits itself).
    pub throttle: Option<Arc<dyn Throttle>>,
    /// Never split a lagging partition while it runs, whatever the job's
    /// `[limits] split_lagging_after` (the scheduler's static strategy).
    pub never_split: bool,
}

/// Hands workers to a run's partitions; see [`RunOptions::gate`].
pub trait PartitionGate: Send + Sync + std::fmt::Debug {
    /// Blocks until the next partition may start; the returned guard is
    /// held while it runs. `None` when `cancel` was set first.
    fn acquire(&self, cancel: &AtomicBool) -> Option<Box<dyn std::any::Any + Send>>;
    /// How many partitions the run has left to start.
    fn pending(&self, n: usize);
    /// `n` partitions were added to those left to start (a lagging
    /// partition was split while it ran).
    fn added(&self, n: usize) {
        let _ = n;
    }
}

/// Rate limits shared between runs; see [`RunOptions::throttle`].
pub trait Throttle: Send + Sync + std::fmt::Debug {
    /// Accounts for `bytes` and `rows` just read, sleeping as needed.
    fn acquire(&self, bytes: u64, rows: u64);
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Job name.
    pub job: String,
    /// Run id.
    pub run_id: i64,
    /// Whether an interrupted run was resumed.
    pub resumed: bool,
    /// Where the data came from.
    pub source: String,
    /// Where the output is.
    pub output: String,
    /// Rows delivered.
    pub rows: u64,
    /// Input bytes read.
    pub bytes_in: u64,
    /// Output bytes written.
    pub bytes_out: u64,
    /// Partitions in the plan.
    pub partitions: usize,
    /// Partitions skipped because an earlier attempt committed them.
    pub partitions_skipped: usize,
    /// Partitions cut in two while they ran because they lagged.
    #[serde(skip_serializing_if = "is_zero")]
    pub partitions_split: usize,
    /// Rows rejected to the dead-letter output.
    pub dirty_rows: u64,
    /// Dead-letter directory, when rows were rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Wall time of this attempt.
    pub duration_secs: f64,
    /// Input throughput of this attempt.
    pub mb_per_sec: f64,
    /// Row throughput of this attempt.
    pub rows_per_sec: f64,
    /// What stages did on purpose, such as duplicates removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageReport>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn plan_hash(source: &dyn Source) -> String {
    let mut h = blake3::Hasher::new();
    for p in source.partitions() {
        h.update(p.label.as_bytes());
        h.update(&p.bytes.to_le_bytes());
        h.update(b"\n");
    }
    h.update(format!("{:?}", source.schema()).as_bytes());
    h.finalize().to_hex()[..16].to_string()
}

/// A partition being read, as the lag monitor sees it.
#[derive(Clone)]
struct Running {
    /// Since it started or was last cut.
    since: Instant,
    splitter: Option<Arc<dyn Splitter>>,
    /// Held by the monitor while it cuts the partition and records the
    /// cut, and by the worker while it commits the partition: a partition
    /// that stopped early is committed only after its cut is recorded.
    commit: Arc<Mutex<Option<Error>>>,
}

struct Shared<'a> {
    stages: &'a [Arc<dyn StagePlan>],
    schema: arrow::datatypes::SchemaRef,
    spec: &'a JobSpec,
    /// The plan, which grows when a lagging partition is split.
    source: RwLock<Arc<dyn Source>>,
    running: Mutex<HashMap<usize, Running>>,
    /// Seconds each partition finished in this attempt took.
    finished_secs: Mutex<Vec<f64>>,
    queue: pool::Queue<usize>,
    gate: Option<&'a dyn PartitionGate>,
    splits: AtomicU64,
    sink: &'a dyn Sink,
    state: &'a StateStore,
    run: RunInfo,
    budget: Arc<ErrorBudget>,
    progress: &'a Progress,
    cancel: &'a AtomicBool,
    bytes_limit: Option<TokenBucket>,
    rows_limit: Option<TokenBucket>,
    throttle: Option<&'a dyn Throttle>,
    committed: Mutex<Vec<(CommittedPart, u64, u64)>>,
}

/// Runs a job to completion (or to its first fatal error).
pub fn run_job(
    spec: &JobSpec,
    source: Arc<dyn Source>,
    stages: &[Arc<dyn StagePlan>],
    sink: Arc<dyn Sink>,
    state: &StateStore,
    opts: &RunOptions,
    progress: &Progress,
) -> Result<RunSummary> {
    let started = Instant::now();
    let base_partitions = source.partitions().len();
    // What the sink receives: the last stage's output, or the source's.
    let schema = stages
        .last()
        .map_or_else(|| source.schema(), |s| s.output_schema());
    let spec_hash = spec.fingerprint();
    let plan = plan_hash(source.as_ref());
    let source_state = source.state();
    let begin = state.begin(
        &NewRun {
            job: &spec.job.name,
            spec_hash: &spec_hash,
            plan_hash: &plan,
            owner: spec.job.owner.as_deref(),
            purpose: spec.job.purpose.as_deref(),
            partitions: base_partitions,
            source_state: source_state.as_deref(),
        },
        opts.restart,
    )?;
    let mut run = begin.run;
    let mut source = source;
    // A resumed run cuts the partitions its interrupted attempt cut.
    let replayed = if run.resumed {
        state.run_splits(run.run_id)?
    } else {
        Vec::new()
    };
    for (p, at) in &replayed {
        source = source.split_at(*p, *at).ok_or_else(|| {
            Error::Internal(format!(
                "the interrupted run cut partition {p} at {at}, which the source cannot repeat"
            ))
        })?;
    }
    run.partitions = source.partitions().len();
    let partitions = source.partitions().to_vec();
    if let Some(old) = begin.discarded {
        tracing::info!(job = %spec.job.name, run = old, "discarding interrupted run");
        sink.discard(old)?;
    }
    let mut begin_committed = begin.committed;
    if run.resumed {
        // Partitions the target committed in its own transaction while the
        // state store did not get to record them.
        for part in sink.committed_at_target(&run)? {
            if part.index < partitions.len()
                && !begin_committed
                    .iter()
                    .any(|(p, _, _)| p.index == part.index)
            {
                tracing::info!(job = %spec.job.name, partition = part.index, "partition found committed at the target");
                state.commit_part(run.run_id, &part, 0, 0)?;
                begin_committed.push((part, 0, 0));
            }
        }
    }
    let committed_indexes: Vec<usize> = begin_committed.iter().map(|(p, _, _)| p.index).collect();
    for (i, plan) in stages.iter().enumerate() {
        plan.begin(&StageRun {
            state,
            job: &spec.job.name,
            run_id: run.run_id,
            stage: i,
            committed: &committed_indexes,
        })?;
    }
    let done: HashMap<usize, _> = begin_committed
        .iter()
        .map(|(p, bi, d)| (p.index, (p.clone(), *bi, *d)))
        .collect();
    let already_dirty: u64 = done.values().map(|(_, _, d)| *d).sum();
    progress
        .partitions_total
        .store(partitions.len() as u64, Ordering::Relaxed);
    progress
        .total_bytes
        .store(partitions.iter().map(|p| p.bytes).sum(), Ordering::Relaxed);
    for (p, bytes_in, dirty) in done.values() {
        progress.rows.fetch_add(p.rows, Ordering::Relaxed);
        progress.bytes_in.fetch_add(*bytes_in, Ordering::Relaxed);
        progress.dirty.fetch_add(*dirty, Ordering::Relaxed);
        progress.partitions_done.fetch_add(1, Ordering::Relaxed);
    }
    if run.resumed {
        tracing::info!(job = %spec.job.name, run = run.run_id, skipped = done.len(), "resuming interrupted run");
    }
    let pending: Vec<usize> = partitions
        .iter()
        .map(|p| p.index)
        .filter(|i| !done.contains_key(i))
        .collect();
    let split_after = spec
        .limits
        .split_lagging_after
        .0
        .filter(|_| !opts.never_split);
    let shared = Shared {
        stages,
        schema: schema.clone(),
        spec,
        source: RwLock::new(source.clone()),
        running: Mutex::new(HashMap::new()),
        finished_secs: Mutex::new(Vec::new()),
        queue: pool::Queue::new(pending.clone()),
        gate: opts.gate.as_deref(),
        splits: AtomicU64::new(replayed.len() as u64),
        sink: sink.as_ref(),
        state,
        run: run.clone(),
        budget: Arc::new(ErrorBudget::new(&spec.errors, already_dirty)),
        progress,
        cancel: &opts.cancel,
        bytes_limit: spec
            .limits
            .max_bytes_per_sec
            .filter(|_| opts.throttle.is_none())
            .map(|b| TokenBucket::new(b.0)),
        rows_limit: spec
            .limits
            .max_rows_per_sec
            .filter(|_| opts.throttle.is_none())
            .map(TokenBucket::new),
        throttle: opts.throttle.as_deref(),
        committed: Mutex::new(begin_committed),
    };
    let attempt_bytes_before = progress.bytes_in.load(Ordering::Relaxed);
    let attempt_rows_before = progress.rows.load(Ordering::Relaxed);

    let result = (|| -> Result<String> {
        let already: Vec<CommittedPart> = done.values().map(|(p, _, _)| p.clone()).collect();
        sink.prepare(&run, &schema, &already)?;
        if let Some(gate) = &opts.gate {
            gate.pending(pending.len());
        }
        // With splitting on, every worker stays while partitions run, to
        // take the rest of one that is cut.
        let workers = match split_after {
            Some(_) => spec.limits.parallelism,
            None => spec.limits.parallelism.min(pending.len().max(1)),
        };
        let stop_monitor = Stop::default();
        std::thread::scope(|s| {
            if let Some(after) = split_after {
                let (sh, stop) = (&shared, &stop_monitor);
                std::thread::Builder::new()
                    .name("tidex-lag-monitor".into())
                    .spawn_scoped(s, move || monitor_lag(sh, after, stop))
                    .expect("spawning the lag monitor");
            }
            let result = pool::run_queue(&shared.queue, workers, &opts.cancel, |_, idx| {
                // Workers change hands only here, between partitions.
                let _grant = match &opts.gate {
                    Some(gate) => Some(gate.acquire(&opts.cancel).ok_or(Error::Cancelled)?),
                    None => None,
                };
                process_partition(&shared, idx)
            });
            stop_monitor.set();
            result
        })?;
        let committed = shared
            .committed
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?
            .clone();
        let rows: u64 = committed.iter().map(|(p, _, _)| p.rows).sum();
        shared.budget.check_final(rows + shared.budget.dirty())?;
        state.set_status(run.run_id, RunStatus::Publishing)?;
        let mut parts: Vec<CommittedPart> = committed.into_iter().map(|(p, _, _)| p).collect();
        parts.sort_by_key(|p| p.index);
        sink.publish(&run, &schema, &parts, &state.journal(run.run_id))
    })();

    let committed = shared
        .committed
        .lock()
        .map_err(|_| Error::Internal("poisoned".into()))?
        .clone();
    let partitions_now = shared.source.read().map_or(0, |s| s.partitions().len());
    let partitions_split = shared.splits.load(Ordering::Relaxed) as usize;
    let totals = Totals {
        rows: committed.iter().map(|(p, _, _)| p.rows).sum(),
        bytes_in: committed.iter().map(|(_, b, _)| *b).sum(),
        bytes_out: committed.iter().map(|(p, _, _)| p.bytes).sum(),
        dirty: committed.iter().map(|(_, _, d)| *d).sum(),
    };
    match result {
        Ok(output) => {
            state.finish(
                run.run_id,
                RunStatus::Completed,
                &totals,
                Some(&output),
                None,
            )?;
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let attempt_bytes = progress.bytes_in.load(Ordering::Relaxed) - attempt_bytes_before;
            let attempt_rows = progress.rows.load(Ordering::Relaxed) - attempt_rows_before;
            Ok(RunSummary {
                job: spec.job.name.clone(),
                run_id: run.run_id,
                resumed: run.resumed,
                source: source.describe(),
                output,
                rows: totals.rows,
                bytes_in: totals.bytes_in,
                bytes_out: totals.bytes_out,
                partitions: partitions_now,
                partitions_skipped: done.len(),
                partitions_split,
                dirty_rows: totals.dirty,
                dead_letter: (totals.dirty > 0)
                    .then(|| spec.errors.dead_letter.clone())
                    .flatten(),
                duration_secs: secs,
                mb_per_sec: attempt_bytes as f64 / 1e6 / secs,
                rows_per_sec: attempt_rows as f64 / secs,
                stages: stages.iter().filter_map(|s| s.report()).collect(),
            })
        }
        Err(e) => {
            let _ = state.finish(
                run.run_id,
                RunStatus::Failed,
                &totals,
                None,
                Some(&e.to_string()),
            );
            Err(e)
        }
    }
}

/// Removes a partition from the monitor's view when it ends, however.
struct Tracked<'a, 'b>(&'a Shared<'b>, usize);

impl Drop for Tracked<'_, '_> {
    fn drop(&mut self) {
        if let Ok(mut r) = self.0.running.lock() {
            r.remove(&self.1);
        }
    }
}

fn process_partition(sh: &Shared<'_>, idx: usize) -> Result<()> {
    let started = Instant::now();
    let source = sh
        .source
        .read()
        .map_err(|_| Error::Internal("poisoned".into()))?
        .clone();
    let info = &source.partitions()[idx];
    let mut reader = source.open(idx)?;
    let commit_lock = Arc::new(Mutex::new(None));
    sh.running
        .lock()
        .map_err(|_| Error::Internal("poisoned".into()))?
        .insert(
            idx,
            Running {
                since: started,
                splitter: reader.splitter(),
                commit: commit_lock.clone(),
            },
        );
    let _tracked = Tracked(sh, idx);
    let mut rejects = Rejects::new(sh.budget.clone(), &sh.spec.job.name, sh.run.run_id, idx);
    let mut chain = Chain::start(sh.stages)?;
    let writer = sh.sink.open(&sh.run, info, sh.schema.clone())?;
    let (tx, rx) = crossbeam_channel::bounded::<RecordBatch>(2);
    let mut bytes_seen = 0u64;
    let mut rows_seen = 0u64;
    let dirty_before = 0u64;
    let (read_result, writer) = std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name(format!("tidex-writer-{idx}"))
            .spawn_scoped(
                s,
                move || -> std::result::Result<Box<dyn PartitionWriter>, Error> {
                    let mut w = writer;
                    for batch in rx {
                        if let Err(e) = w.write(&batch) {
                            w.abort();
                            return Err(e);
                        }
                    }
                    Ok(w)
                },
            )
            .expect("spawning a writer thread");
        let read_result = (|| -> Result<()> {
            // Every batch on its way to the writer, whether read or held
            // back by a stage until the end, is counted and rate-limited.
            let mut deliver = |batch: RecordBatch, db: u64| -> bool {
                let dr = batch.num_rows() as u64;
                rows_seen += dr;
                if let Some(l) = &sh.bytes_limit {
                    l.acquire(db);
                }
                if let Some(l) = &sh.rows_limit {
                    l.acquire(dr);
                }
                if let Some(t) = sh.throttle {
                    t.acquire(db, dr);
                }
                sh.progress.bytes_in.fetch_add(db, Ordering::Relaxed);
                sh.progress.rows.fetch_add(dr, Ordering::Relaxed);
                sh.progress
                    .dirty
                    .store(sh.budget.dirty(), Ordering::Relaxed);
                // A failed send means the writer failed; its error is reported below.
                dr == 0 || tx.send(batch).is_ok()
            };
            loop {
                if sh.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                let Some(batch) = reader.next_batch(&mut rejects)? else {
                    break;
                };
                let batch = chain.process(batch, &mut rejects)?;
                let bytes = reader.bytes_read();
                let db = bytes - bytes_seen;
                bytes_seen = bytes;
                if !deliver(batch, db) {
                    break;
                }
            }
            let db = reader.bytes_read() - bytes_seen;
            bytes_seen += db;
            sh.progress.bytes_in.fetch_add(db, Ordering::Relaxed);
            for batch in chain.finish(&mut rejects)? {
                if !deliver(batch, 0) {
                    break;
                }
            }
            Ok(())
        })();
        drop(tx);
        let writer = handle
            .join()
            .map_err(|_| Error::Internal(format!("writer thread of partition {idx} panicked")));
        (read_result, writer)
    });
    let undo_progress = || {
        sh.progress.rows.fetch_sub(rows_seen, Ordering::Relaxed);
        sh.progress
            .bytes_in
            .fetch_sub(bytes_seen, Ordering::Relaxed);
    };
    let writer = match (read_result, writer) {
        (Ok(()), Ok(Ok(w))) => w,
        (Err(e), Ok(Ok(w))) => {
            w.abort();
            undo_progress();
            return Err(e);
        }
        (_, Ok(Err(e))) | (_, Err(e)) => {
            undo_progress();
            return Err(e);
        }
    };
    // Stage data is stored before the sink commits and counts once the
    // partition is recorded as committed (or found committed at the target).
    let stage_data = match chain.commit_data() {
        Ok(d) => d,
        Err(e) => {
            writer.abort();
            undo_progress();
            return Err(e);
        }
    };
    // A cut being recorded finishes first; one that failed to be recorded
    // must not leave a partition committed short.
    let cut = commit_lock
        .lock()
        .map_err(|_| Error::Internal("poisoned".into()))?;
    if let Some(e) = cut.as_ref() {
        writer.abort();
        undo_progress();
        return Err(Error::Internal(format!(
            "partition {idx} was cut but the cut could not be recorded: {e}"
        )));
    }
    for (stage, data) in &stage_data {
        sh.state.put_part_data(sh.run.run_id, idx, *stage, data)?;
    }
    let part = writer.commit()?;
    if part.rows != rows_seen {
        return Err(Error::Internal(format!(
            "partition {idx}: read {rows_seen} rows but the sink wrote {}",
            part.rows
        )));
    }
    let dirty = rejects.commit()? - dirty_before;
    sh.budget.add_good(rows_seen);
    sh.state
        .commit_part(sh.run.run_id, &part, bytes_seen, dirty)?;
    let secs = started.elapsed().as_secs_f64();
    sh.state.set_part_secs(sh.run.run_id, idx, secs)?;
    drop(cut);
    if let Ok(mut f) = sh.finished_secs.lock() {
        f.push(secs);
    }
    sh.progress.partitions_done.fetch_add(1, Ordering::Relaxed);
    sh.progress
        .dirty
        .store(sh.budget.dirty(), Ordering::Relaxed);
    tracing::debug!(partition = idx, label = %info.label, rows = part.rows, "partition committed");
    sh.committed
        .lock()
        .map_err(|_| Error::Internal("poisoned".into()))?
        .push((part, bytes_seen, dirty));
    Ok(())
}

/// Tells the lag monitor to stop, waking it at once.
#[derive(Default)]
struct Stop {
    set: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Stop {
    fn set(&self) {
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits up to `d`; true once stopped.
    fn wait(&self, d: Duration) -> bool {
        let g = self.set.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// Watches the running partitions and cuts one that lags: running for at
/// least `after` seconds and more than [`LAG_FACTOR`] times the median of
/// the partitions finished so far (the rule the scheduler's simulator
/// applies). Its reader stops halfway through what it has left, and the
/// rest becomes a new partition at the end of the plan.
///
/// [`LAG_FACTOR`]: crate::scheduler::rebalance::LAG_FACTOR
fn monitor_lag(sh: &Shared<'_>, after: f64, stop: &Stop) {
    use crate::scheduler::rebalance::{lagging_after, median, RunningPart};
    let tick = Duration::from_secs_f64((after / 4.0).clamp(0.01, 1.0));
    while !stop.wait(tick) && !sh.cancel.load(Ordering::Relaxed) {
        let Some(expected) = sh.finished_secs.lock().ok().and_then(|f| median(&f)) else {
            continue;
        };
        let snapshot: Vec<(usize, Running)> = match sh.running.lock() {
            Ok(r) => r.iter().map(|(i, p)| (*i, p.clone())).collect(),
            Err(_) => return,
        };
        let views: Vec<RunningPart> = snapshot
            .iter()
            .map(|(_, p)| RunningPart {
                run: 0,
                elapsed: p.since.elapsed().as_secs_f64(),
                expected,
                splittable: p.splitter.is_some(),
            })
            .collect();
        for i in lagging_after(&views, after) {
            let (idx, p) = &snapshot[i];
            let splitter = p.splitter.as_ref().expect("only splittable parts lag");
            if let Some(at) = cut(sh, *idx, splitter.as_ref(), &p.commit) {
                tracing::info!(job = %sh.spec.job.name, partition = idx, at, secs = views[i].elapsed, median = expected, "partition lagged its siblings; its rest is a new partition");
            }
            // Counted from now whether or not it was cut, so a partition
            // that cannot be cut is not asked every tick.
            if let Ok(mut r) = sh.running.lock() {
                if let Some(p) = r.get_mut(idx) {
                    p.since = Instant::now();
                }
            }
        }
    }
}

/// Cuts partition `idx` at a point its splitter proposes; the position, or
/// `None` when it was not cut.
fn cut(
    sh: &Shared<'_>,
    idx: usize,
    splitter: &dyn Splitter,
    commit: &Mutex<Option<Error>>,
) -> Option<u64> {
    let at = match splitter.propose() {
        Ok(Some(at)) => at,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(partition = idx, error = %e, "could not find where to cut a lagging partition");
            return None;
        }
    };
    let mut failed = commit.lock().ok()?;
    let current = sh.source.read().ok()?.clone();
    let next = current.split_at(idx, at)?;
    if !splitter.apply(at) {
        return None;
    }
    // From here the reader stops at `at`: the cut must be recorded before
    // the partition commits (it waits for this lock), or the run fails.
    let new_index = next.partitions().len() - 1;
    if let Err(e) = sh
        .state
        .add_run_split(sh.run.run_id, idx, at, next.partitions().len())
    {
        *failed = Some(e);
        return None;
    }
    match sh.source.write() {
        Ok(mut s) => *s = next,
        Err(_) => {
            *failed = Some(Error::Internal("poisoned".into()));
            return None;
        }
    }
    sh.splits.fetch_add(1, Ordering::Relaxed);
    sh.progress.partitions_total.fetch_add(1, Ordering::Relaxed);
    if let Some(g) = sh.gate {
        g.added(1);
    }
    sh.queue.push(new_index);
    Some(at)
}
