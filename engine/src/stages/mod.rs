//! Built-in stage types.

pub mod crypt;
pub mod dedupe;
pub mod frame;
pub mod keys;
pub mod mask;
#[cfg(feature = "sql")]
pub mod sql;

use crate::connector::Registry;
use crate::error::{Error, Result};
use crate::spec::StageConfig;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// Registers every built-in stage type.
pub fn register(r: &mut Registry) {
    r.register_stage(mask::MaskFactory);
    r.register_stage(crypt::EncryptFactory);
    r.register_stage(crypt::DecryptFactory);
    r.register_stage(dedupe::DedupeFactory);
    #[cfg(feature = "sql")]
    r.register_stage(sql::SqlFactory);
}

/// Positions of `cols` in `input`; a missing column is an error naming the
/// stage and listing the columns there are.
pub(crate) fn column_indexes(
    cfg: &StageConfig,
    what: &str,
    input: &SchemaRef,
    cols: &[String],
) -> Result<Vec<usize>> {
    cols.iter()
        .map(|c| {
            input.index_of(c).map_err(|_| {
                Error::Config(format!(
                    "stage {} ({what}): no column `{c}` in the input; columns are {}",
                    cfg.index(),
                    input
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        })
        .collect()
}

/// `input` with the columns at `idx` turned into nullable `to` columns.
pub(crate) fn retyped(input: &SchemaRef, idx: &[usize], to: DataType) -> SchemaRef {
    let fields: Vec<Field> = input
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if idx.contains(&i) {
                Field::new(f.name(), to.clone(), true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}
