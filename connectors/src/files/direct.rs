//! Direct assembly of a single local Parquet file, without part files.
//!
//! Each partition encodes a complete small Parquet file in memory; on commit
//! its body (the column chunks between the leading magic and the footer) is
//! appended to one staging file, `assembled.parquet.partial`, and the
//! partition's location records where the body went and its footer:
//! `assembled@START+LEN:HEX`. Parts land in commit order; the final footer
//! lists their row groups in partition order, so readers see rows in input
//! order. A resumed run truncates the staging file after the last recorded
//! body (bytes of a part that was appended but never recorded are cut off,
//! or left unreferenced if later bodies follow them) and appends from there.
//! Publishing writes the footer and renames the file into place.
//!
//! Parts are written without page indexes, whose page locations would be
//! absolute offsets in the part and wrong once the body moves.

use parquet::file::metadata::{
    FileMetaData, ParquetMetaData, ParquetMetaDataBuilder, ParquetMetaDataReader,
    ParquetMetaDataWriter, RowGroupMetaData,
};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tidex_engine::{CommittedPart, Error, Result};

const MAGIC: &[u8; 4] = b"PAR1";
const PREFIX: &str = "assembled@";

/// The staging file of one run.
pub(crate) struct Direct {
    pub(crate) run_id: i64,
    path: PathBuf,
    file: std::fs::File,
    end: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// Where a committed part's body is and its footer metadata.
struct Placed {
    start: u64,
    len: u64,
    meta: Vec<u8>,
}

fn parse_location(loc: &str) -> Option<Placed> {
    let rest = loc.strip_prefix(PREFIX)?;
    let (range, hex) = rest.split_once(':')?;
    let (start, len) = range.split_once('+')?;
    let meta = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(Placed {
        start: start.parse().ok()?,
        len: len.parse().ok()?,
        meta,
    })
}

impl Direct {
    /// Opens the staging file for a run: new for a fresh run, cut back to
    /// the recorded bodies for a resumed one. `None` when a resumed run's
    /// file is gone (its publish may already have renamed it into place).
    pub(crate) fn open(
        run_id: i64,
        path: PathBuf,
        resumed: bool,
        committed: &[CommittedPart],
    ) -> Result<Option<Direct>> {
        let placed: Vec<Placed> = committed
            .iter()
            .filter_map(|p| parse_location(&p.location))
            .collect();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        }
        if resumed && !placed.is_empty() {
            let end = placed.iter().map(|p| p.start + p.len).max().unwrap_or(4);
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io("opening", &path, e)),
            };
            let len = file.metadata().map_err(|e| io("reading", &path, e))?.len();
            if len < end {
                return Err(Error::Config(format!(
                    "the staged output {} is shorter than the interrupted run recorded; run again with --restart",
                    path.display()
                )));
            }
            file.set_len(end).map_err(|e| io("truncating", &path, e))?;
            return Ok(Some(Direct {
                run_id,
                path,
                file,
                end,
            }));
        }
        let mut file = std::fs::File::create(&path).map_err(|e| io("creating", &path, e))?;
        file.write_all(MAGIC).map_err(|e| io("writing", &path, e))?;
        Ok(Some(Direct {
            run_id,
            path,
            file,
            end: 4,
        }))
    }

    /// Appends the body of an encoded part; returns the part's location.
    pub(crate) fn append(&mut self, part: &[u8]) -> Result<(String, u64)> {
        let bad = || Error::Internal("an encoded Parquet part has no valid footer".into());
        let n = part.len();
        if n < 12 || &part[..4] != MAGIC || &part[n - 4..] != MAGIC {
            return Err(bad());
        }
        let meta_len = u32::from_le_bytes(part[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
        let meta_start = n
            .checked_sub(8 + meta_len)
            .filter(|s| *s >= 4)
            .ok_or_else(bad)?;
        let body = &part[4..meta_start];
        let meta = &part[meta_start..n - 8];
        let start = self.end;
        self.file
            .write_all_at(body, start)
            .map_err(|e| io("writing", &self.path, e))?;
        self.end += body.len() as u64;
        let hex: String = meta.iter().map(|b| format!("{b:02x}")).collect();
        Ok((
            format!("{PREFIX}{start}+{}:{hex}", body.len()),
            body.len() as u64,
        ))
    }

    /// Writes the footer for `parts` (in partition order) after the bodies.
    /// Returns the staging file's path.
    pub(crate) fn finish(self, parts: &[CommittedPart]) -> Result<PathBuf> {
        let mut first: Option<ParquetMetaData> = None;
        let mut row_groups: Vec<RowGroupMetaData> = Vec::new();
        for p in parts {
            let placed = parse_location(&p.location).ok_or_else(|| {
                Error::Internal(format!("partition {} has no staged body", p.index))
            })?;
            let meta = ParquetMetaDataReader::decode_metadata(&placed.meta)
                .map_err(|e| Error::Internal(format!("partition {} footer: {e}", p.index)))?;
            let shift = placed.start as i64 - 4;
            for rg in meta.row_groups() {
                row_groups.push(shift_row_group(rg, shift)?);
            }
            if first.is_none() {
                first = Some(meta);
            }
        }
        let first = first.ok_or_else(|| Error::Internal("direct assembly without parts".into()))?;
        let fm = first.file_metadata();
        let num_rows = row_groups.iter().map(|r| r.num_rows()).sum();
        let row_groups: Vec<RowGroupMetaData> = row_groups
            .into_iter()
            .enumerate()
            .map(|(i, rg)| rg.into_builder().set_ordinal(i as i16).build())
            .collect::<parquet::errors::Result<_>>()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let file_meta = FileMetaData::new(
            fm.version(),
            num_rows,
            fm.created_by().map(str::to_string),
            fm.key_value_metadata().cloned(),
            fm.schema_descr_ptr(),
            fm.column_orders().cloned(),
        );
        let meta = ParquetMetaDataBuilder::new(file_meta)
            .set_row_groups(row_groups)
            .build();
        let mut footer = Vec::new();
        ParquetMetaDataWriter::new(&mut footer, &meta)
            .finish()
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.file
            .set_len(self.end)
            .map_err(|e| io("truncating", &self.path, e))?;
        self.file
            .write_all_at(&footer, self.end)
            .map_err(|e| io("writing", &self.path, e))?;
        Ok(self.path)
    }
}

fn shift_row_group(rg: &RowGroupMetaData, by: i64) -> Result<RowGroupMetaData> {
    let err = |e: parquet::errors::ParquetError| Error::Internal(e.to_string());
    // A column chunk's own `file_offset` is deprecated and written as 0
    // by parquet-rs; readers use the page offsets shifted here.
    let mut cols = Vec::with_capacity(rg.num_columns());
    for c in rg.columns() {
        let b = c
            .clone()
            .into_builder()
            .set_data_page_offset(c.data_page_offset() + by)
            .set_dictionary_page_offset(c.dictionary_page_offset().map(|o| o + by))
            .set_index_page_offset(c.index_page_offset().map(|o| o + by))
            .set_bloom_filter_offset(None)
            .set_offset_index_offset(None)
            .set_column_index_offset(None);
        cols.push(b.build().map_err(err)?);
    }
    let mut b = rg.clone().into_builder().set_column_metadata(cols);
    if let Some(o) = rg.file_offset() {
        b = b.set_file_offset(o + by);
    }
    b.build().map_err(err)
}
