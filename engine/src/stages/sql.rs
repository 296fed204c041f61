//! `sql`: a DataFusion query over the stream, which it sees as table `input`.
//!
//! ```toml
//! [[stage]]
//! type = "sql"
//! query = """
//!   SELECT id, upper(name) AS name, CAST(amount AS DOUBLE) AS amount,
//!          CASE WHEN dept_code = '101' THEN 'civil' ELSE 'other' END AS dept,
//!          mask_phone(phone) AS phone, pseudonym(id_card) AS person
//!   FROM input WHERE amount > 0
//! """
//! key = "env:TIDEX_MASK_KEY"   # only for pseudonym()
//! ```
//!
//! The query is parsed, checked and optimised once per job against the
//! schema flowing in, and its physical plan is shared by every partition.
//! Each batch then runs through that plan as it arrives, so the stage holds
//! one batch at a time whatever the input size. That makes it a row-by-row
//! transform: projections, filters, casts, `CASE`, string, date, math and
//! regex functions, and the masking functions below. Queries that need rows
//! from across the whole input (`GROUP BY`, `ORDER BY`, `DISTINCT`, joins,
//! window functions, `LIMIT`) are refused when the job is validated; use
//! the `dedupe` stage for duplicates.
//!
//! Masking functions (the rules of the `mask` stage): `mask_phone(x)`,
//! `mask_id_card(x)`, `mask_bank_card(x)`, `mask_name(x)`, `mask_email(x)`,
//! `mask_address(x)`, `mask_partial(x, keep_prefix, keep_suffix)` and, with
//! `key` set, `pseudonym(x)`.
//!
//! A row the query fails on (say `CAST('abc' AS INT)`) is a dirty row
//! naming the stage and DataFusion's message; the rest of its batch goes on.

use super::mask::{self, Rule};
use crate::dirty::{DirtyRow, Rejects};
use crate::error::{Error, Location, Result};
use crate::spec::{SpecError, StageConfig};
use crate::stage::{Stage, StageFactory, StagePlan};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::ScalarValue;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use serde::Deserialize;
use std::cell::RefCell;
use std::sync::Arc;

/// `[[stage]] type = "sql"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Always `"sql"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The query; it reads table `input`.
    pub query: String,
    /// Key for `pseudonym()`: `env:NAME` or `file:PATH` (at least 16 bytes).
    #[serde(default)]
    pub key: Option<String>,
}

/// Operators that work one batch at a time. Anything else in a plan needs
/// rows from across the input.
const STREAMING_OPERATORS: &[&str] = &[
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "StreamingTableExec",
    "EmptyExec",
];

thread_local! {
    /// The batch the running plan reads as `input`. A stage instance sets
    /// it and executes the plan on its own worker thread, and the plan's
    /// source takes it at once, so partitions on other threads never see
    /// each other's batches.
    static FEED: RefCell<Option<RecordBatch>> = const { RefCell::new(None) };
}

/// Table `input`: whatever batch the current thread put in [`FEED`].
#[derive(Debug)]
struct Feed {
    schema: SchemaRef,
}

impl PartitionStream for Feed {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batch = FEED.with(|f| f.borrow_mut().take());
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batch.map(Ok)),
        ))
    }
}

/// A masking rule as a SQL function.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MaskFn {
    name: &'static str,
    /// `None` for `mask_partial`, whose two numbers come as arguments.
    rule: Option<Rule>,
    key: Option<Vec<u8>>,
    signature: Signature,
}

impl ScalarUDFImpl for MaskFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let rule = match self.rule {
            Some(r) => r,
            None => {
                let keep = |i: usize| -> datafusion::common::Result<usize> {
                    match args.args.get(i) {
                        Some(ColumnarValue::Scalar(v)) => match v.cast_to(&DataType::Int64)? {
                            ScalarValue::Int64(Some(n)) if n >= 0 => Ok(n as usize),
                            _ => datafusion::common::plan_err!(
                                "mask_partial: characters to keep must be a number ≥ 0"
                            ),
                        },
                        _ => datafusion::common::plan_err!(
                            "mask_partial(x, keep_prefix, keep_suffix): the two numbers must be constants"
                        ),
                    }
                };
                Rule::Partial {
                    prefix: keep(1)?,
                    suffix: keep(2)?,
                }
            }
        };
        let input: ArrayRef = args.args[0].to_array(args.number_rows)?;
        let out = mask::mask_array(&input, rule, self.key.as_deref())
            .map_err(|e| datafusion::common::DataFusionError::Execution(e.to_string()))?;
        Ok(ColumnarValue::Array(out))
    }
}

fn mask_functions(key: Option<&[u8]>) -> Vec<ScalarUDF> {
    let one = |name: &'static str, rule: &str| MaskFn {
        name,
        rule: Some(mask::parse_rule(rule).expect("built-in rule")),
        key: None,
        signature: Signature::any(1, Volatility::Immutable),
    };
    let mut fns = vec![
        one("mask_phone", "phone"),
        one("mask_id_card", "id_card"),
        one("mask_bank_card", "bank_card"),
        one("mask_name", "name"),
        one("mask_email", "email"),
        one("mask_address", "address"),
        MaskFn {
            name: "mask_partial",
            rule: None,
            key: None,
            signature: Signature::any(3, Volatility::Immutable),
        },
    ];
    if let Some(k) = key {
        fns.push(MaskFn {
            name: "pseudonym",
            rule: Some(Rule::Pseudonym),
            key: Some(k.to_vec()),
            signature: Signature::any(1, Volatility::Immutable),
        });
    }
    fns.into_iter().map(ScalarUDF::new_from_impl).collect()
}

/// Registers `type = "sql"`.
pub struct SqlFactory;

fn check(cfg: &StageConfig) -> Result<SqlConfig, SpecError> {
    let c: SqlConfig = cfg.parse()?;
    if c.query.trim().is_empty() {
        return Err(cfg.error("query", "the query is empty; it reads table `input`"));
    }
    if let Some(k) = &c.key {
        if !super::keys::well_formed(k) {
            return Err(cfg.error("key", "expected `env:NAME` or `file:PATH`"));
        }
    }
    // Syntax errors are found without the input schema.
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    if let Err(e) = datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, &c.query) {
        return Err(cfg.error("query", format!("SQL syntax: {e}")));
    }
    Ok(c)
}

fn plan_error(cfg: &StageConfig, c: &SqlConfig, e: impl std::fmt::Display) -> Error {
    let mut msg = format!("stage {} (sql): {e}", cfg.index());
    if c.key.is_none() && c.query.to_ascii_lowercase().contains("pseudonym(") {
        msg.push_str(" (pseudonym() needs `key = \"env:NAME\"` or `file:PATH` in the stage)");
    }
    Error::Config(msg)
}

/// Finds an operator the stage cannot run batch by batch.
fn non_streaming(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if !STREAMING_OPERATORS.contains(&plan.name()) {
        return Some(plan.name().to_string());
    }
    // A pushed-down LIMIT would apply to every batch.
    if let Some(n) = plan.fetch() {
        return Some(format!("{} with LIMIT {n}", plan.name()));
    }
    plan.children().into_iter().find_map(non_streaming)
}

fn reads_input(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.name() == "StreamingTableExec" || plan.children().into_iter().any(reads_input)
}

impl StageFactory for SqlFactory {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn validate(&self, cfg: &StageConfig) -> Result<(), SpecError> {
        check(cfg).map(|_| ())
    }

    fn plan(&self, cfg: &StageConfig, input: SchemaRef) -> Result<Arc<dyn StagePlan>> {
        let c = check(cfg)?;
        let key = match &c.key {
            Some(k) => Some(
                mask::load_key(k)
                    .map_err(|e| Error::Config(format!("stage {} (sql): {e}", cfg.index())))?,
            ),
            None => None,
        };
        // One partition: the stage is already run once per source partition.
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let table = StreamingTable::try_new(
            input.clone(),
            vec![Arc::new(Feed {
                schema: input.clone(),
            })],
        )
        .map_err(|e| plan_error(cfg, &c, e))?;
        ctx.register_table("input", Arc::new(table))
            .map_err(|e| plan_error(cfg, &c, e))?;
        for f in mask_functions(key.as_deref()) {
            ctx.register_udf(f);
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let plan = futures::executor::block_on(async {
            let df = ctx.sql_with_options(&c.query, options).await?;
            df.create_physical_plan().await
        })
        .map_err(|e| plan_error(cfg, &c, e))?;
        if !reads_input(&plan) && plan.name() != "EmptyExec" {
            return Err(plan_error(cfg, &c, "the query must read `FROM input`"));
        }
        if let Some(op) = non_streaming(&plan) {
            return Err(plan_error(
                cfg,
                &c,
                format!(
                    "the query needs rows from across the whole input (it plans to `{op}`); \
                     the sql stage works batch by batch: projections, filters, casts, CASE and \
                     functions, not GROUP BY, ORDER BY, DISTINCT, joins, window functions or LIMIT"
                ),
            ));
        }
        Ok(Arc::new(SqlPlan {
            schema: plan.schema(),
            plan,
            task: ctx.task_ctx(),
            stage: cfg.index(),
        }))
    }
}

struct SqlPlan {
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    stage: usize,
}

impl StagePlan for SqlPlan {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn start(&self) -> Result<Box<dyn Stage>> {
        Ok(Box::new(SqlStage {
            schema: self.schema.clone(),
            plan: self.plan.clone(),
            task: self.task.clone(),
            stage: self.stage,
        }))
    }
}

struct SqlStage {
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    stage: usize,
}

impl SqlStage {
    fn run(&self, batch: RecordBatch) -> datafusion::common::Result<Vec<RecordBatch>> {
        FEED.with(|f| *f.borrow_mut() = Some(batch));
        let stream = self.plan.execute(0, self.task.clone());
        // Never leave a batch behind for the next query on this thread.
        FEED.with(|f| f.borrow_mut().take());
        futures::executor::block_on(datafusion::physical_plan::common::collect(stream?))
    }

    fn concat(&self, batches: &[RecordBatch]) -> Result<RecordBatch> {
        arrow::compute::concat_batches(&self.schema, batches)
            .map_err(|e| Error::Internal(format!("stage {} (sql): {e}", self.stage)))
    }
}

impl Stage for SqlStage {
    fn process(&mut self, batch: RecordBatch, rejects: &mut Rejects) -> Result<RecordBatch> {
        match self.run(batch.clone()) {
            Ok(out) => self.concat(&out),
            Err(_) => {
                // Find the rows the query fails on; the others go on.
                let mut out = Vec::new();
                for i in 0..batch.num_rows() {
                    match self.run(batch.slice(i, 1)) {
                        Ok(rows) => out.extend(rows),
                        Err(e) => {
                            let values = (0..batch.num_columns())
                                .map(|c| {
                                    arrow::util::display::array_value_to_string(batch.column(c), i)
                                        .unwrap_or_default()
                                })
                                .collect();
                            let loc = Location {
                                file: format!("stage {} (sql)", self.stage),
                                ..Default::default()
                            };
                            rejects.reject(
                                DirtyRow::row(loc, e.strip_backtrace().to_string())
                                    .with_values(values),
                            )?
                        }
                    }
                }
                self.concat(&out)
            }
        }
    }
}
