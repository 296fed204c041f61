//! Stages transform the batch stream between source and sink.
//!
//! A stage type is a [`StageFactory`] registered by its `type` name. From a
//! `[[stage]]` section and the schema flowing into it, the factory builds a
//! [`StagePlan`] once per job; the plan starts one [`Stage`] per partition,
//! which runs on that partition's worker thread. Built-in stage types live in
//! [`crate::stages`].

use crate::dirty::Rejects;
use crate::error::Result;
use crate::spec::{SpecError, StageConfig};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// One partition's instance of a stage.
pub trait Stage: Send {
    /// Transforms a batch. Rows it cannot process go to `rejects`.
    fn process(&mut self, batch: RecordBatch, rejects: &mut Rejects) -> Result<RecordBatch>;
}

/// A stage planned for one job.
pub trait StagePlan: Send + Sync {
    /// The schema of the batches this stage emits.
    fn output_schema(&self) -> SchemaRef;
    /// A fresh instance for one partition.
    fn start(&self) -> Result<Box<dyn Stage>>;
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
