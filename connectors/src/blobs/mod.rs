//! Blobs: files of any type and size as Arrow rows. The `blobs` source
//! streams the files under a URL as one row per chunk (path, offset, size,
//! modified, BLAKE3, chunk bytes); the `blobs` sink reassembles the rows
//! into files under its target prefix, optionally zstd-compressed and
//! encrypted per file, deduplicated by content, with a manifest.
//! [`restore`] is `tidex decrypt`: it turns such an output back into the
//! original files.

pub mod restore;
pub mod sink;
pub mod source;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tidex_engine::Registry;

/// Name of the manifest a blob sink writes at the root of its target.
pub const MANIFEST: &str = "_tidex_manifest.jsonl";
/// Name of the content index a `dedupe = true` blob sink keeps at its target.
pub const INDEX: &str = "_tidex_index.jsonl";

/// Registers the blob source and sink.
pub fn register(r: &mut Registry) {
    r.register_source(source::BlobSourceFactory);
    r.register_sink(sink::BlobSinkFactory);
}

/// The schema of blob rows: one row per chunk of a file, chunks of a file
/// in order and together. `blake3` (hex) is set on a file's last row.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("size", DataType::UInt64, false),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("blake3", DataType::Utf8, true),
        Field::new("chunk", DataType::LargeBinary, false),
    ]))
}

/// One delivered file in a manifest (`_tidex_manifest.jsonl`, one JSON
/// object per line, in input order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the target, `/`-separated, as at the source.
    pub path: String,
    /// Size in bytes of the original file.
    pub size: u64,
    /// BLAKE3 of the original content, hex.
    pub blake3: String,
    /// Modification time at the source, microseconds since the epoch (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
    /// The object, relative to the target, that holds this content as
    /// stored: the path plus `.zst` or `.tenc`; or, for a copy, the object
    /// stored for the first file with the same content.
    pub stored: String,
    /// `written` (stored by this run at `stored`), `copy` (same content as
    /// an earlier file of this run, stored once at `stored`) or `delivered`
    /// (content delivered by an earlier run, at `stored`; `dedupe = true`).
    pub status: String,
}

/// Checks that a blob path stays under the sink's prefix: relative, `/`
/// separated, without empty, `.` or `..` components, backslashes, NUL or
/// drive letters.
pub fn check_path(p: &str) -> Result<(), String> {
    let why = if p.is_empty() {
        Some("it is empty")
    } else if p.starts_with('/') {
        Some("it is absolute")
    } else if p.contains('\\') {
        Some("it contains a backslash")
    } else if p.contains('\0') {
        Some("it contains a NUL byte")
    } else if p.len() >= 2 && p.as_bytes()[1] == b':' && p.as_bytes()[0].is_ascii_alphabetic() {
        Some("it starts with a drive letter")
    } else if p.split('/').any(|c| c == "..") {
        Some("it has a `..` component")
    } else if p.split('/').any(|c| c.is_empty() || c == ".") {
        Some("it has an empty or `.` component")
    } else if p == MANIFEST || p == INDEX {
        Some("the name is reserved for tidex's manifest")
    } else {
        None
    };
    match why {
        Some(w) => Err(format!(
            "blob path {p:?} would escape the sink's prefix or is not a plain relative path: {w}"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn paths_that_escape_the_prefix_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "a//b",
            "./a",
            "a\\..\\b",
            "C:x",
            MANIFEST_NAME,
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b.txt", "中文/报告 2026.pdf", "..a/b..", ".hidden"] {
            assert!(check_path(good).is_ok(), "{good:?}");
        }
    }

    const MANIFEST_NAME: &str = super::MANIFEST;
}
