//! sqlite source and sink.

use tidex_engine::Registry;

/// Registers the sqlite source and sink.
pub fn register(r: &mut Registry) {
    let _ = r;
}
