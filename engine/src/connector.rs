//! The traits connectors implement, and the registry that finds them by
//! their `type` name.
//!
//! A [`Source`] describes its schema, splits its work into partitions and
//! opens a [`SourceReader`] per partition. A [`Sink`] opens a
//! [`PartitionWriter`] per partition, whose `commit` makes that partition's
//! output durable under a staging name, and `publish`es a run's committed
//! partitions once all are in. All methods are blocking and run on worker
//! threads; connectors do their async I/O through [`BuildContext::io`].

use crate::dirty::Rejects;
use crate::error::Result;
use crate::spec::{JobSpec, Policy, SpecError, StageConfig};
use crate::stage::{StageFactory, StagePlan};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

pub use crate::spec::ConnectorConfig;

/// One unit of work: read, staged and committed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Position in the source's partition list.
    pub index: usize,
    /// Stable, human-readable description, e.g. `people.csv[0..67108864]`.
    /// The list of labels fingerprints the plan for resume.
    pub label: String,
    /// Input bytes, for progress and ETA (0 when unknown).
    pub bytes: u64,
}

/// Reads one partition as Arrow batches.
pub trait SourceReader: Send {
    /// The next batch, or `None` at the end of the partition. Rows that
    /// cannot be read go to `rejects`, which decides (by the job's error
    /// policy) whether the run goes on.
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>>;
    /// Input bytes consumed so far.
    fn bytes_read(&self) -> u64;
    /// A handle through which the runtime may cut this partition short
    /// while it is being read, so its unread rest becomes a new partition
    /// (see [`Source::split_at`]); `None` when the reader cannot stop early.
    fn splitter(&self) -> Option<Arc<dyn Splitter>> {
        None
    }
}

/// Cuts a partition that is being read (see [`SourceReader::splitter`]).
/// Positions are the source's own (a byte offset at a record boundary, a
/// row group); they are stored with the run, so a resumed run replays the
/// cut with [`Source::split_at`].
pub trait Splitter: Send + Sync {
    /// A position about halfway through the part not read yet at which
    /// the partition can be cut, or `None` when too little is left. May do
    /// I/O (finding a record boundary) but never disturbs the reader.
    fn propose(&self) -> Result<Option<u64>>;
    /// Makes the reader stop just before `at`. `false` when it has read
    /// past `at` (or finished) already; then nothing changed.
    fn apply(&self, at: u64) -> bool;
}

/// A source of records.
pub trait Source: Send + Sync {
    /// The schema of every batch this source yields.
    fn schema(&self) -> SchemaRef;
    /// The partitions, in a stable order.
    fn partitions(&self) -> &[PartitionInfo];
    /// Opens a reader over one partition.
    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>>;
    /// Where the data comes from, for logs and summaries.
    fn describe(&self) -> String;
    /// What this source must remember about the run: the bounds it
    /// planned (key ranges, an incremental high-water mark), stored with
    /// the run. A resumed run gets it back in
    /// [`SourceState::interrupted`] and must plan the same partitions; the
    /// next run gets the last completed run's in [`SourceState::previous`].
    fn state(&self) -> Option<String> {
        None
    }
    /// Splits partition `partition` in two (halving its key or byte
    /// range) and returns this source with the two halves in its place
    /// (later partitions move up by one), or `None` when it cannot be
    /// split. The scheduler splits a partition that lagged far behind its
    /// siblings before the job's next run starts. A source whose plan is
    /// resumed from [`Source::state`] must keep the split in that state.
    fn split(&self, partition: usize) -> Option<Arc<dyn Source>> {
        let _ = partition;
        None
    }
    /// This source with partition `partition` ending just before `at` (a
    /// position its [`Splitter`] proposed) and a new partition, from `at`
    /// to where `partition` used to end, appended after all others. The
    /// runtime calls it for a cut made while the partition ran, and again
    /// when the run resumes, so it must give the same partitions each time.
    fn split_at(&self, partition: usize, at: u64) -> Option<Arc<dyn Source>> {
        let _ = (partition, at);
        None
    }
}

/// What earlier runs of the job left for its source (see [`Source::state`]).
#[derive(Debug, Clone, Default)]
pub struct SourceState {
    /// The state of the job's last completed run.
    pub previous: Option<String>,
    /// The state of the interrupted run this run resumes (`None` under
    /// `--restart`).
    pub interrupted: Option<String>,
}

/// The identity of a run, handed to sinks.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Job name.
    pub job: String,
    /// Run id from the state store.
    pub run_id: i64,
    /// True when this run resumes an interrupted one.
    pub resumed: bool,
    /// Partitions in the run's plan.
    pub partitions: usize,
}

/// A partition's committed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedPart {
    /// Partition index.
    pub index: usize,
    /// Where the staged output lives.
    pub location: String,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Writes one partition's output.
pub trait PartitionWriter: Send {
    /// Writes a batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes the output durable under its staging name, atomically.
    fn commit(self: Box<Self>) -> Result<CommittedPart>;
    /// Throws away what was written.
    fn abort(self: Box<Self>);
}

/// Lets a sink record the steps of a multi-step publish, so a publish
/// interrupted by a crash resumes without repeating a step that is not
/// idempotent (such as appending to a file).
pub trait PublishJournal {
    /// The last recorded step, if any.
    fn step(&self) -> Result<Option<String>>;
    /// Records that `step` is done.
    fn record(&self, step: &str) -> Result<()>;
}

/// A destination for records.
pub trait Sink: Send + Sync {
    /// Checks the target before a run starts (e.g. `mode = "fail"`). A
    /// resumed run passes the parts its interrupted attempt committed.
    fn prepare(&self, run: &RunInfo, schema: &SchemaRef, committed: &[CommittedPart])
        -> Result<()>;
    /// Partitions of a resumed run that the target itself records as
    /// committed. A sink that commits a partition inside the target's own
    /// transaction (a database) records it there too; if the process died
    /// between that commit and the state store's, the run must not deliver
    /// the partition again. File sinks return nothing.
    fn committed_at_target(&self, run: &RunInfo) -> Result<Vec<CommittedPart>> {
        let _ = run;
        Ok(Vec::new())
    }
    /// Opens a writer for one partition.
    fn open(
        &self,
        run: &RunInfo,
        partition: &PartitionInfo,
        schema: SchemaRef,
    ) -> Result<Box<dyn PartitionWriter>>;
    /// Makes a completed run's committed parts visible at the target.
    /// Returns where the output is.
    fn publish(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        parts: &[CommittedPart],
        journal: &dyn PublishJournal,
    ) -> Result<String>;
    /// Removes the staged output of a run that will not be resumed.
    fn discard(&self, run_id: i64) -> Result<()>;
    /// Where the data goes, for logs and summaries.
    fn describe(&self) -> String;
}

/// What a connector gets when it is built.
#[derive(Clone)]
pub struct BuildContext {
    /// Runtime for async I/O; CPU work must not run on it.
    pub io: tokio::runtime::Handle,
    /// Rows per batch.
    pub batch_rows: usize,
    /// The job's error policy.
    pub policy: Policy,
    /// Worker threads the job runs with (sources size partitions by it).
    pub parallelism: usize,
    /// Job name.
    pub job: String,
    /// What earlier runs of the job recorded for the source.
    pub source_state: SourceState,
}

impl BuildContext {
    /// The context for running `spec`: its limits and error policy, with
    /// what earlier runs left for the source.
    pub fn for_spec(
        spec: &crate::spec::JobSpec,
        io: tokio::runtime::Handle,
        source_state: SourceState,
    ) -> Self {
        BuildContext {
            io,
            batch_rows: spec.limits.batch_rows,
            policy: spec.errors.policy,
            parallelism: spec.limits.parallelism,
            job: spec.job.name.clone(),
            source_state,
        }
    }
}

/// Builds sources of one `type`.
pub trait SourceFactory: Send + Sync {
    /// The `type` name in specs.
    fn kind(&self) -> &'static str;
    /// Checks the section without touching any data.
    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError>;
    /// Builds the source: lists files, infers schemas, plans partitions.
    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>>;
}

/// Builds sinks of one `type`.
pub trait SinkFactory: Send + Sync {
    /// The `type` name in specs.
    fn kind(&self) -> &'static str;
    /// Checks the section without touching any data.
    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError>;
    /// Builds the sink.
    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Sink>>;
}

/// Connectors and stages by `type` name.
#[derive(Default)]
pub struct Registry {
    sources: Vec<Box<dyn SourceFactory>>,
    sinks: Vec<Box<dyn SinkFactory>>,
    stages: Vec<Box<dyn StageFactory>>,
}

impl Registry {
    /// A registry with the built-in stage types and no connectors.
    pub fn new() -> Self {
        let mut r = Self::default();
        crate::stages::register(&mut r);
        r
    }

    /// Adds a stage type.
    pub fn register_stage(&mut self, f: impl StageFactory + 'static) {
        self.stages.push(Box::new(f));
    }

    /// Known stage types.
    pub fn stage_kinds(&self) -> Vec<&'static str> {
        self.stages.iter().map(|f| f.kind()).collect()
    }

    fn stage(&self, spec: &JobSpec, cfg: &StageConfig) -> Result<&dyn StageFactory, SpecError> {
        self.stages
            .iter()
            .find(|f| f.kind() == cfg.kind())
            .map(|f| f.as_ref())
            .ok_or_else(|| {
                let known = self.stage_kinds();
                let known = if known.is_empty() {
                    "this build has no stage types".to_string()
                } else {
                    format!("known stage types: {}", known.join(", "))
                };
                let _ = spec;
                cfg.error(
                    "type",
                    format!("unknown stage type `{}`; {known}", cfg.kind()),
                )
            })
    }

    /// Plans the spec's stages for batches of the source's schema.
    pub fn build_stages(
        &self,
        spec: &JobSpec,
        input: SchemaRef,
    ) -> Result<Vec<Arc<dyn StagePlan>>> {
        let mut schema = input;
        let mut plans = Vec::new();
        for cfg in &spec.stages {
            let plan = self.stage(spec, cfg)?.plan(cfg, schema.clone())?;
            schema = plan.output_schema();
            plans.push(plan);
        }
        Ok(plans)
    }

    /// Adds a source type.
    pub fn register_source(&mut self, f: impl SourceFactory + 'static) {
        self.sources.push(Box::new(f));
    }

    /// Adds a sink type.
    pub fn register_sink(&mut self, f: impl SinkFactory + 'static) {
        self.sinks.push(Box::new(f));
    }

    /// Known source types.
    pub fn source_kinds(&self) -> Vec<&'static str> {
        self.sources.iter().map(|f| f.kind()).collect()
    }

    /// Known sink types.
    pub fn sink_kinds(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|f| f.kind()).collect()
    }

    fn source(&self, spec: &JobSpec) -> Result<&dyn SourceFactory, SpecError> {
        self.sources
            .iter()
            .find(|f| f.kind() == spec.source.kind())
            .map(|f| f.as_ref())
            .ok_or_else(|| spec.unknown_connector(&spec.source, &self.source_kinds()))
    }

    fn sink(&self, spec: &JobSpec) -> Result<&dyn SinkFactory, SpecError> {
        self.sinks
            .iter()
            .find(|f| f.kind() == spec.sink.kind())
            .map(|f| f.as_ref())
            .ok_or_else(|| spec.unknown_connector(&spec.sink, &self.sink_kinds()))
    }

    /// Checks everything a spec names without touching data: connector
    /// types and their fields, stage types.
    pub fn validate(&self, spec: &JobSpec) -> Result<(), SpecError> {
        self.source(spec)?.validate(&spec.source)?;
        self.sink(spec)?.validate(&spec.sink)?;
        for cfg in &spec.stages {
            self.stage(spec, cfg)?.validate(cfg)?;
        }
        Ok(())
    }

    /// Builds the source of a spec.
    pub fn build_source(&self, spec: &JobSpec, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        self.source(spec)?.build(&spec.source, ctx)
    }

    /// Builds the sink of a spec.
    pub fn build_sink(&self, spec: &JobSpec, ctx: &BuildContext) -> Result<Arc<dyn Sink>> {
        self.sink(spec)?.build(&spec.sink, ctx)
    }
}
