//! Stages transform the batch stream between source and sink.
//!
//! A stage type is a [`StageFactory`] registered by its `type` name. From a
//! `[[stage]]` section and the schema flowing into it, the factory builds a
//! [`StagePlan`] once per job; the plan starts one [`Stage`] per partition,
//! which runs on that partition's worker thread. Built-in stage types live in
//! [`crate::stages`].
//!
//! A stage that must remember something across partitions or runs (dedupe
//! keys) gets two hooks: [`StagePlan::begin`] before the first partition of a
//! run, with the state store, and [`Stage::commit_data`], bytes stored with
//! the partition's commit so that they count exactly when its rows do.

use crate::dirty::Rejects;
use crate::error::Result;
use crate::spec::{SpecError, StageConfig};
use crate::state::StateStore;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// One partition's instance of a stage.
pub trait Stage: Send {
    /// Transforms a batch. Rows it cannot process go to `rejects`.
    fn process(&mut self, batch: RecordBatch, rejects: &mut Rejects) -> Result<RecordBatch>;

    /// Called once the partition's input has ended, before the sink
    /// commits: the rows a stage held back (for example to keep the last
    /// version of a key).
    fn finish(&mut self, _rejects: &mut Rejects) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// Bytes to keep with this partition's commit. They are written to the
    /// state store before the sink commits and count only once the
    /// partition is recorded as committed, so a partition that never
    /// commits leaves nothing behind.
    fn commit_data(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

/// What a stage plan learns when a run begins.
pub struct StageRun<'a> {
    /// The state store of the run.
    pub state: &'a StateStore,
    /// Job name.
    pub job: &'a str,
    /// The run (a resumed run keeps its id).
    pub run_id: i64,
    /// Position of this stage in the job's chain (0-based).
    pub stage: usize,
    /// Partitions of this run already committed (a resumed run skips them).
    pub committed: &'a [usize],
}

/// Counters a stage reports at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageReport {
    /// Stage type.
    pub kind: &'static str,
    /// Rows the stage removed on purpose (duplicates), not dirty rows.
    pub dropped: u64,
    /// A note for the run summary, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A stage planned for one job.
pub trait StagePlan: Send + Sync {
    /// The schema of the batches this stage emits.
    fn output_schema(&self) -> SchemaRef;
    /// A fresh instance for one partition.
    fn start(&self) -> Result<Box<dyn Stage>>;

    /// Called once per run before any partition starts.
    fn begin(&self, _run: &StageRun<'_>) -> Result<()> {
        Ok(())
    }

    /// What the stage did in this process's share of the run.
    fn report(&self) -> Option<StageReport> {
        None
    }
}

/// Builds stages of one `type`.
pub trait StageFactory: Send + Sync {
    /// The `type` name in specs.
    fn kind(&self) -> &'static str;
    /// Checks the section without touching data.
    fn validate(&self, cfg: &StageConfig) -> Result<(), SpecError>;
    /// Plans the stage for batches of `input` schema.
    fn plan(&self, cfg: &StageConfig, input: SchemaRef) -> Result<Arc<dyn StagePlan>>;
}

/// Runs batches through a chain of stage instances.
pub struct Chain(Vec<Box<dyn Stage>>);

impl Chain {
    /// Starts an instance of every plan.
    pub fn start(plans: &[Arc<dyn StagePlan>]) -> Result<Chain> {
        plans
            .iter()
            .map(|p| p.start())
            .collect::<Result<Vec<_>>>()
            .map(Chain)
    }

    /// Ends the partition: rows each stage held back, passed through the
    /// stages after it.
    pub fn finish(&mut self, rejects: &mut Rejects) -> Result<Vec<RecordBatch>> {
        let mut carry: Vec<RecordBatch> = Vec::new();
        for s in &mut self.0 {
            let mut next = Vec::with_capacity(carry.len());
            for b in carry {
                next.push(s.process(b, rejects)?);
            }
            next.extend(s.finish(rejects)?);
            carry = next;
        }
        Ok(carry)
    }

    /// Each stage's bytes to keep with the partition's commit, by position.
    pub fn commit_data(&mut self) -> Result<Vec<(usize, Vec<u8>)>> {
        let mut out = Vec::new();
        for (i, s) in self.0.iter_mut().enumerate() {
            if let Some(d) = s.commit_data()? {
                out.push((i, d));
            }
        }
        Ok(out)
    }

    /// Passes a batch through every stage, in order.
    pub fn process(
        &mut self,
        mut batch: RecordBatch,
        rejects: &mut Rejects,
    ) -> Result<RecordBatch> {
        for s in &mut self.0 {
            batch = s.process(batch, rejects)?;
        }
        Ok(batch)
    }
}
