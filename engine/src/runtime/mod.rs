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

pub mod pool;
pub mod ratelimit;

use crate::connector::{CommittedPart, PartitionWriter, RunInfo, Sink, Source};
use crate::dirty::{ErrorBudget, Rejects};
use crate::error::{Error, Result};
use crate::spec::JobSpec;
use crate::stage::{Chain, StagePlan, StageReport, StageRun};
use crate::state::{NewRun, RunStatus, StateStore, Totals};
use arrow::record_batch::RecordBatch;
use ratelimit::TokenBucket;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
}

/// Hands workers to a run's partitions; see [`RunOptions::gate`].
pub trait PartitionGate: Send + Sync + std::fmt::Debug {
    /// Blocks until the next partition may start; the returned guard is
    /// held while it runs. `None` when `cancel` was set first.
    fn acquire(&self, cancel: &AtomicBool) -> Option<Box<dyn std::any::Any + Send>>;
    /// How many partitions the run has left to start.
    fn pending(&self, n: usize);
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

struct Shared<'a> {
    stages: &'a [Arc<dyn StagePlan>],
    schema: arrow::datatypes::SchemaRef,
    spec: &'a JobSpec,
    source: &'a dyn Source,
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
    let partitions = source.partitions().to_vec();
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
            partitions: partitions.len(),
            source_state: source_state.as_deref(),
        },
        opts.restart,
    )?;
    if let Some(old) = begin.discarded {
        tracing::info!(job = %spec.job.name, run = old, "discarding interrupted run");
        sink.discard(old)?;
    }
    let run = begin.run;
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
    let shared = Shared {
        stages,
        schema: schema.clone(),
        spec,
        source: source.as_ref(),
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
        pool::run(pending, spec.limits.parallelism, &opts.cancel, |_, idx| {
            // Workers change hands only here, between partitions.
            let _grant = match &opts.gate {
                Some(gate) => Some(gate.acquire(&opts.cancel).ok_or(Error::Cancelled)?),
                None => None,
            };
            process_partition(&shared, idx)
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
                partitions: partitions.len(),
                partitions_skipped: done.len(),
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

fn process_partition(sh: &Shared<'_>, idx: usize) -> Result<()> {
    let started = Instant::now();
    let info = &sh.source.partitions()[idx];
    let mut reader = sh.source.open(idx)?;
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
    sh.state
        .set_part_secs(sh.run.run_id, idx, started.elapsed().as_secs_f64())?;
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
