//! Stages transform the batch stream between source and sink. Stage types
//! (sql, mask, dedupe, encrypt, compress) are registered here as they are
//! built; a spec naming a type this build does not have is refused by
//! `tidex validate` before anything runs.

use crate::spec::{JobSpec, SpecError};

/// Stage types this build provides.
pub const KNOWN_STAGES: &[&str] = &[];

/// Checks the `[[stage]]` entries of a spec.
pub fn validate(spec: &JobSpec) -> Result<(), SpecError> {
    if let Some(kind) = spec.stages.first() {
        let known = if KNOWN_STAGES.is_empty() {
            "this build has no stage types yet".to_string()
        } else {
            format!("known stage types: {}", KNOWN_STAGES.join(", "))
        };
        let span = spec.text.find("[[stage]]").map(|s| s..s + 9);
        return Err(SpecError::at(
            &spec.text,
            span,
            "stage.type",
            format!("unknown stage type `{kind}`; {known}"),
        ));
    }
    Ok(())
}
