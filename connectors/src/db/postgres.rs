//! postgres source and sink.

use tidex_engine::Registry;

/// Registers the postgres source and sink.
pub fn register(r: &mut Registry) {
    let _ = r;
}
