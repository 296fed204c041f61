//! File connectors over object_store: CSV, JSON lines, Parquet and Arrow
//! IPC sources; Parquet, Arrow IPC, CSV and JSON-lines sinks. Local paths,
//! `file://`, `memory://` and `s3://` URLs all work the same way.

mod assemble;
pub mod compress;
pub mod csv;
pub mod cut;
mod direct;
pub mod io;
pub mod ipc_source;
pub mod jsonl;
pub mod location;
pub mod parquet_source;
mod scan;
pub mod sealed;
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

/// Nominal cut positions splitting `start..end` into pieces of about
/// `split` bytes. With `taper > 0` the last `taper` pieces are a quarter and
/// the `taper` before them half that size, so a run's last partitions are
/// short and no worker waits long for the others to finish.
pub fn nominal_cuts(start: u64, end: u64, split: u64, taper: usize) -> Vec<u64> {
    if split == 0 || end.saturating_sub(start) <= split + split / 4 {
        return Vec::new();
    }
    let mut cuts = Vec::new();
    let mut pos = end;
    let mut k = 0;
    loop {
        let size = match k {
            k if k < taper => split / 4,
            k if k < 2 * taper => split / 2,
            _ => split,
        }
        .max(1);
        if pos < start + size + size / 4 {
            break;
        }
        pos -= size;
        cuts.push(pos);
        k += 1;
    }
    cuts.reverse();
    cuts
}

/// The file connector type for a URL, from its extension (`people.csv`,
/// `data/*.jsonl`, `out.parquet`). `None` when the URL has no known one.
pub fn kind_for_url(url: &str) -> Option<&'static str> {
    let name = compress::strip_zstd(url.trim_end_matches('/').rsplit('/').next().unwrap_or(""));
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "csv" | "tsv" => "csv",
        "jsonl" | "ndjson" | "json" => "jsonl",
        "parquet" | "pq" => "parquet",
        "arrow" | "arrows" | "feather" | "ipc" => "arrow",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::nominal_cuts;

    #[test]
    fn cuts_are_even_or_tapered_at_the_end() {
        assert_eq!(nominal_cuts(0, 100, 0, 0), Vec::<u64>::new());
        assert_eq!(nominal_cuts(0, 100, 40, 0), vec![20, 60]);
        let c = nominal_cuts(0, 1000, 100, 2);
        let sizes: Vec<u64> = c
            .iter()
            .chain([1000].iter())
            .zip([0].iter().chain(c.iter()))
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(&sizes[sizes.len() - 4..], &[50, 50, 25, 25]);
        assert!(
            sizes[..sizes.len() - 4].iter().skip(1).all(|s| *s == 100),
            "{sizes:?}"
        );
    }
}
