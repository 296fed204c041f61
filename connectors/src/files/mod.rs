//! File connectors over object_store: CSV, JSON lines, Parquet and Arrow
//! IPC sources; Parquet, Arrow IPC, CSV and JSON-lines sinks. Local paths,
//! `file://`, `memory://` and `s3://` URLs all work the same way.

mod assemble;
pub mod csv;
pub mod io;
pub mod ipc_source;
pub mod jsonl;
pub mod location;
pub mod parquet_source;
pub mod sink;
pub mod types;

use tidex_engine::Registry;

/// Registers every file source and sink.
pub fn register(r: &mut Registry) {
    r.register_source(csv::CsvSourceFactory);
    r.register_source(jsonl::JsonlSourceFactory);
    r.register_source(parquet_source::ParquetSourceFactory);
    r.register_source(ipc_source::ArrowSourceFactory);
    for s in sink::FileSinkFactory::all() {
        r.register_sink(s);
    }
}

/// Partition size when a spec sets none: about sixteen partitions per
/// worker, so the last partition of a run leaves the other workers idle only
/// briefly, between 8 MiB and 128 MiB.
pub fn auto_split(total_bytes: u64, parallelism: usize) -> u64 {
    (total_bytes / (parallelism.max(1) as u64 * 16)).clamp(8 << 20, 128 << 20)
}

/// The file connector type for a URL, from its extension (`people.csv`,
/// `data/*.jsonl`, `out.parquet`). `None` when the URL has no known one.
pub fn kind_for_url(url: &str) -> Option<&'static str> {
    let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "csv" | "tsv" => "csv",
        "jsonl" | "ndjson" | "json" => "jsonl",
        "parquet" | "pq" => "parquet",
        "arrow" | "arrows" | "feather" | "ipc" => "arrow",
        _ => return None,
    })
}
