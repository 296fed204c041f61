//! Built-in stage types.

pub mod mask;

use crate::connector::Registry;

/// Registers every built-in stage type.
pub fn register(r: &mut Registry) {
    r.register_stage(mask::MaskFactory);
}
