//! File sinks: Parquet, Arrow IPC, CSV and JSON lines, to a single file or
//! a directory of parts, on any object store.
//!
//! Every partition is written as a multipart upload to a staging directory
//! beside the target (`.NAME.tidex/run-ID/part-00003.parquet`), which
//! becomes visible only when the upload completes: that is the partition's
//! atomic commit. Publishing a finished run:
//!
//! * directory, `overwrite`: local directories are swapped by two renames,
//!   so a reader sees the old run or the new one, never a mix; on object
//!   stores the old parts are deleted before the new ones move in.
//! * directory, `append`: parts move in under run-unique names.
//! * single file: the parts are concatenated (Parquet row groups are copied
//!   without re-encoding) into one staged file that is renamed over the
//!   target; `append` puts the existing target first. A single local Parquet
//!   file (not appended to) is assembled directly instead, without part
//!   files: each partition appends its encoded row groups to one staging
//!   file as it commits (the `direct` module).
//!
//! Each step is recorded in the publish journal, so a publish cut short by
//! a crash finishes on resume without repeating a step.

use super::assemble::{AsmContext, Assembler};
use super::direct::Direct;
use super::io::UploadWriter;
use super::location::Location;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::ipc::CompressionType;
use arrow::record_batch::RecordBatch;

use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tidex_engine::{
    BuildContext, CommittedPart, ConnectorConfig, Error, PartitionInfo, PartitionWriter,
    PublishJournal, Result, RunInfo, Sink, SinkFactory, SpecError,
};

/// What to do with output already at the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace it: once the run completes the target holds exactly its output.
    #[default]
    Overwrite,
    /// Add this run's output to it.
    Append,
    /// Refuse to run if the target exists.
    Fail,
}

fn row_group_rows() -> usize {
    1 << 20
}

/// `[sink] type = "parquet" | "arrow" | "csv" | "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The output format.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file (`out.parquet`) or a directory of parts (`out/people/`).
    pub url: String,
    /// `overwrite` (default), `append` or `fail`.
    #[serde(default)]
    pub mode: Mode,
    /// Parquet: `zstd` (default), `snappy`, `lz4`, `none`. Arrow: `zstd`
    /// (default), `lz4`, `none`. CSV and JSON lines: `none`.
    #[serde(default)]
    pub compression: Option<String>,
    /// zstd level, 1–22 (default 1).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Parquet: rows per row group (default 1048576).
    #[serde(default = "row_group_rows")]
    pub row_group_rows: usize,
    /// Parquet: `compact` (default) writes delta encodings where they
    /// shrink a column (DELTA_LENGTH_BYTE_ARRAY for mostly distinct strings,
    /// DELTA_BINARY_PACKED for mostly distinct integer-like values whose
    /// differences are narrow; see `column_encoding`);
    /// `plain` keeps to the encodings every Parquet reader knows (PLAIN and
    /// dictionaries), for old readers.
    #[serde(default)]
    pub parquet_encodings: Option<String>,
    /// CSV: write a header row (default true).
    #[serde(default)]
    pub header: Option<bool>,
    /// CSV: field delimiter (default `,`).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Encrypt every part file whole, in the framed format (parts become
    /// `part-00000.parquet.tenc`; `tidex decrypt` restores them):
    /// `{ algorithm = "sm4-gcm", key_id = "…", key = "file:…" }`. Needs a
    /// directory sink.
    #[serde(default)]
    pub encrypt: Option<super::sealed::EncryptOption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Parquet,
    Arrow,
    Csv,
    Jsonl,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    None,
    Zstd(i32),
    Snappy,
    Lz4,
}

impl FileSinkConfig {
    fn check(&self, cfg: &ConnectorConfig, format: Format) -> Result<Codec, SpecError> {
        let level = super::compress::zstd_level(cfg, self.compression_level)?;
        let name = self.compression.as_deref().map(str::to_ascii_lowercase);
        let codec = match (format, name.as_deref()) {
            (Format::Parquet | Format::Arrow, None | Some("zstd")) => Codec::Zstd(level),
            // CSV and JSON lines: zstd when asked, or when the file is named `….zst`.
            (Format::Csv | Format::Jsonl, Some("zstd")) => Codec::Zstd(level),
            (Format::Csv | Format::Jsonl, None) if super::compress::is_zstd(&self.url) => {
                Codec::Zstd(level)
            }
            (_, Some("none" | "uncompressed")) | (Format::Csv | Format::Jsonl, None) => Codec::None,
            (Format::Parquet, Some("snappy")) => Codec::Snappy,
            (Format::Parquet | Format::Arrow, Some("lz4")) => Codec::Lz4,
            (f, Some(other)) => {
                let known = match f {
                    Format::Parquet => "zstd, snappy, lz4, none",
                    Format::Arrow => "zstd, lz4, none",
                    _ => "zstd, none",
                };
                return Err(cfg.error(
                    "compression",
                    format!(
                        "unknown compression `{other}` for {}; expected {known}",
                        f.ext()
                    ),
                ));
            }
        };
        if format != Format::Csv && (self.header.is_some() || self.delimiter.is_some()) {
            let field = if self.header.is_some() {
                "header"
            } else {
                "delimiter"
            };
            return Err(cfg.error(
                field,
                format!("only applies to csv sinks, not {}", format.ext()),
            ));
        }
        if self.delimiter.is_some_and(|d| !d.is_ascii()) {
            return Err(cfg.error("delimiter", "expected a single ASCII character"));
        }
        if self.row_group_rows == 0 {
            return Err(cfg.error("row_group_rows", "must be at least 1"));
        }
        match (format, self.parquet_encodings.as_deref()) {
            (_, None) | (Format::Parquet, Some("compact" | "plain")) => {}
            (Format::Parquet, Some(other)) => {
                return Err(cfg.error(
                    "parquet_encodings",
                    format!("unknown value `{other}`; expected compact or plain"),
                ))
            }
            (f, Some(_)) => {
                return Err(cfg.error(
                    "parquet_encodings",
                    format!("only applies to parquet sinks, not {}", f.ext()),
                ))
            }
        }
        if let Some(e) = &self.encrypt {
            e.check(cfg)?;
        }
        Ok(codec)
    }
}

/// Registers one file sink format.
pub struct FileSinkFactory(&'static str);

impl FileSinkFactory {
    /// All file sink factories.
    pub fn all() -> [FileSinkFactory; 4] {
        [
            FileSinkFactory("parquet"),
            FileSinkFactory("arrow"),
            FileSinkFactory("csv"),
            FileSinkFactory("jsonl"),
        ]
    }

    fn format(&self) -> Format {
        match self.0 {
            "parquet" => Format::Parquet,
            "arrow" => Format::Arrow,
            "csv" => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

impl SinkFactory for FileSinkFactory {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: FileSinkConfig = cfg.parse()?;
        c.check(cfg, self.format()).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Sink>> {
        let c: FileSinkConfig = cfg.parse()?;
        let codec = c.check(cfg, self.format())?;
        let loc = Location::parse(&c.url)?;
        if loc.glob.is_some() {
            return Err(cfg.error("url", "a sink URL cannot contain a glob").into());
        }
        let is_dir = loc.is_dir() || !c.url.rsplit('/').next().unwrap_or("").contains('.');
        if c.encrypt.is_some() && !is_dir {
            return Err(cfg
                .error(
                    "encrypt",
                    "encrypts each part file of a directory sink; name a directory (out/) as the url",
                )
                .into());
        }
        let seal = c.encrypt.as_ref().map(|e| e.load(cfg)).transpose()?;
        let name = loc.path.filename().unwrap_or("").to_string();
        let parent = Path::from_iter(
            loc.path
                .parts()
                .take(loc.path.parts().count().saturating_sub(1)),
        );
        let staging = parent.clone().join(if name.is_empty() {
            ".tidex-staging".to_string()
        } else {
            format!(".{name}.tidex")
        });
        let staging_fs = loc.local.as_ref().map(|l| {
            let p = l.parent().unwrap_or(l).to_path_buf();
            p.join(if name.is_empty() {
                ".tidex-staging".to_string()
            } else {
                format!(".{name}.tidex")
            })
        });
        let direct = self.format() == Format::Parquet
            && !is_dir
            && loc.local.is_some()
            && c.mode != Mode::Append;
        Ok(Arc::new(FileSink {
            format: self.format(),
            seal,
            codec,
            cfg: c,
            loc,
            is_dir,
            staging,
            staging_fs,
            io: ctx.io.clone(),
            parts_without_header: AtomicBool::new(false),
            live: Default::default(),
            direct,
            direct_state: Default::default(),
        }))
    }
}

/// A file sink.
pub struct FileSink {
    format: Format,
    /// Per-file encryption of parts.
    seal: Option<super::sealed::Sealing>,
    codec: Codec,
    cfg: FileSinkConfig,
    loc: Location,
    is_dir: bool,
    staging: Path,
    staging_fs: Option<std::path::PathBuf>,
    io: tokio::runtime::Handle,
    /// CSV into a single file: only partition 0 carries the header, and none
    /// does when appending to an existing file.
    parts_without_header: AtomicBool,
    /// Single-file targets: the output assembled as partitions commit.
    live: LiveSlot,
    /// A single local Parquet file (not appended to) is assembled directly:
    /// parts are encoded in memory and only their bodies are written, once.
    direct: bool,
    direct_state: DirectSlot,
}

impl FileSink {
    fn run_dir(&self, run_id: i64) -> Path {
        self.staging.clone().join(format!("run-{run_id}"))
    }

    fn part_path(&self, run_id: i64, index: usize) -> Path {
        self.run_dir(run_id)
            .join(format!("part-{index:05}.{}", self.part_ext()))
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        let store = self.loc.store.clone();
        let p = path.clone();
        match self.io.block_on(async move { store.head(&p).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::io(format!("checking {}", self.loc.display(path)), e)),
        }
    }

    fn target_exists(&self) -> Result<bool> {
        if self.is_dir {
            if let Some(l) = &self.loc.local {
                return Ok(l.is_dir()
                    && std::fs::read_dir(l)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(false));
            }
            Ok(!self.loc.list_under(&self.io, &self.loc.path)?.is_empty())
        } else {
            self.exists(&self.loc.path)
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let store = self.loc.store.clone();
        let (f, t) = (from.clone(), to.clone());
        self.io
            .block_on(async move { store.rename(&f, &t).await })
            .map_err(|e| {
                Error::io(
                    format!(
                        "moving {} to {}",
                        self.loc.display(from),
                        self.loc.display(to)
                    ),
                    e,
                )
            })
    }

    fn delete(&self, path: &Path) -> Result<()> {
        let store = self.loc.store.clone();
        let p = path.clone();
        match self.io.block_on(async move { store.delete(&p).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::io(format!("deleting {}", self.loc.display(path)), e)),
        }
    }

    fn remove_tree(&self, dir: &Path, dir_fs: Option<std::path::PathBuf>) -> Result<()> {
        if let Some(fs) = dir_fs {
            return match std::fs::remove_dir_all(&fs) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("removing {}", fs.display()), e)),
            };
        }
        for meta in self.loc.list_under(&self.io, dir)? {
            self.delete(&meta.location)?;
        }
        Ok(())
    }

    fn cleanup(&self, run_id: i64) -> Result<()> {
        let run_fs = self
            .staging_fs
            .as_ref()
            .map(|s| s.join(format!("run-{run_id}")));
        self.remove_tree(&self.run_dir(run_id), run_fs)?;
        if let Some(s) = &self.staging_fs {
            let _ = std::fs::remove_dir_all(s.join(format!("old-{run_id}")));
            let _ = std::fs::remove_dir(s); // only when empty
        }
        Ok(())
    }

    fn parquet_props(&self) -> WriterProperties {
        self.parquet_props_builder().build()
    }

    fn parquet_props_builder(&self) -> parquet::file::properties::WriterPropertiesBuilder {
        let compression = match self.codec {
            Codec::None => Compression::UNCOMPRESSED,
            Codec::Zstd(l) => Compression::ZSTD(ZstdLevel::try_new(l).unwrap_or_default()),
            Codec::Snappy => Compression::SNAPPY,
            Codec::Lz4 => Compression::LZ4_RAW,
        };
        WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.cfg.row_group_rows))
            .set_created_by(format!("tidex {}", env!("CARGO_PKG_VERSION")))
    }

    fn ipc_options(&self) -> Result<IpcWriteOptions> {
        let c = match self.codec {
            Codec::Zstd(_) => Some(CompressionType::ZSTD),
            Codec::Lz4 => Some(CompressionType::LZ4_FRAME),
            _ => None,
        };
        IpcWriteOptions::default()
            .try_with_compression(c)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Extension of part files: `csv.zst` for compressed text formats,
    /// `….tenc` when encrypted.
    fn part_ext(&self) -> &'static str {
        match (self.format, self.codec, self.seal.is_some()) {
            (Format::Csv, Codec::Zstd(_), false) => "csv.zst",
            (Format::Jsonl, Codec::Zstd(_), false) => "jsonl.zst",
            (Format::Csv, Codec::Zstd(_), true) => "csv.zst.tenc",
            (Format::Jsonl, Codec::Zstd(_), true) => "jsonl.zst.tenc",
            (Format::Parquet, _, true) => "parquet.tenc",
            (Format::Arrow, _, true) => "arrow.tenc",
            (Format::Csv, _, true) => "csv.tenc",
            (Format::Jsonl, _, true) => "jsonl.tenc",
            (f, _, false) => f.ext(),
        }
    }

    fn delimiter(&self) -> u8 {
        self.cfg.delimiter.map_or(b',', |c| c as u8)
    }

    fn encoder(&self, w: Target, schema: &SchemaRef, header: bool) -> Result<Encoder> {
        let w = match (self.format, w) {
            (Format::Parquet, t) => {
                let mut props = self.parquet_props_builder();
                if matches!(t, Target::Memory(_)) {
                    // Page indexes hold absolute page offsets, which would be
                    // wrong once the part's body moves into the assembled file.
                    props = props
                        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
                        .set_offset_index_disabled(true);
                }
                // Created at the first batch, whose values decide which columns get dictionaries.
                let compact = self.cfg.parquet_encodings.as_deref() != Some("plain");
                return Ok(Encoder::PendingParquet(Box::new((
                    t,
                    schema.clone(),
                    props,
                    compact,
                ))));
            }
            (_, Target::Memory(_)) => {
                return Err(Error::Internal(
                    "only Parquet parts are assembled in memory".into(),
                ))
            }
            (_, t) => t,
        };
        let e = |e: &dyn std::fmt::Display| {
            Error::Internal(format!("opening {} writer: {e}", self.format.ext()))
        };
        Ok(match self.format {
            Format::Parquet => unreachable!("handled above"),
            Format::Arrow => Encoder::Arrow(
                FileWriter::try_new_with_options(w, schema, self.ipc_options()?)
                    .map_err(|x| e(&x))?,
            ),
            Format::Csv => Encoder::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(header)
                    .with_delimiter(self.delimiter())
                    .build(w),
            ),
            Format::Jsonl => Encoder::Jsonl(arrow::json::LineDelimitedWriter::new(w)),
        })
    }

    fn csv_header(&self, schema: &SchemaRef) -> Vec<u8> {
        let d = self.delimiter() as char;
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                let n = f.name();
                if n.contains([d, '"', '\n', '\r']) {
                    format!("\"{}\"", n.replace('"', "\"\""))
                } else {
                    n.clone()
                }
            })
            .collect();
        let mut h = names.join(&d.to_string()).into_bytes();
        h.push(b'\n');
        h
    }

    fn assembler(&self, out: &Path, schema: &SchemaRef) -> Result<Assembler> {
        let header = (self.format == Format::Csv && self.cfg.header.unwrap_or(true))
            .then(|| self.csv_header(schema));
        Assembler::create(
            AsmContext {
                format: self.format,
                loc: self.loc.clone(),
                io: self.io.clone(),
                empty_parquet: self.parquet_props(),
                ipc: self.ipc_options()?,
                csv_header: header,
            },
            out,
            schema.clone(),
        )
    }

    /// Writes `inputs` one after another into `out`.
    fn assemble(&self, out: &Path, inputs: &[Path], schema: &SchemaRef) -> Result<()> {
        let mut a = self.assembler(out, schema)?;
        for input in inputs {
            a.append(input)?;
        }
        a.finish()
    }

    fn publish_file(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        parts: &[CommittedPart],
        journal: &dyn PublishJournal,
    ) -> Result<()> {
        let assembled = self
            .run_dir(run.run_id)
            .join(format!("assembled.{}", self.format.ext()));
        let step = journal.step()?;
        if self.direct && !parts.is_empty() {
            let target =
                self.loc.local.as_ref().ok_or_else(|| {
                    Error::Internal("direct assembly needs a local target".into())
                })?;
            if step.as_deref() != Some("renamed") {
                let state = self
                    .direct_state
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?
                    .take();
                match state.filter(|d| d.run_id == run.run_id) {
                    Some(d) => {
                        let staged = d.finish(parts)?;
                        journal.record("renaming")?;
                        if let Some(dir) = target.parent() {
                            std::fs::create_dir_all(dir)
                                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                        }
                        std::fs::rename(&staged, target).map_err(|e| {
                            Error::io(format!("moving output to {}", target.display()), e)
                        })?;
                    }
                    // The staging file was renamed into place before a crash.
                    None if step.as_deref() == Some("renaming") => {}
                    None => {
                        return Err(Error::Config(format!(
                            "the staged output of run {} is gone; run again with --restart",
                            run.run_id
                        )))
                    }
                }
                journal.record("renamed")?;
            }
            return Ok(());
        }
        let live = self
            .live
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?
            .take()
            .filter(|l| l.run_id == run.run_id);
        if let (None, Some(mut l)) = (&step, live) {
            // Most parts were appended as they committed; add the rest in order.
            for p in parts.iter().filter(|p| p.index >= l.next) {
                l.asm.append(&self.part_path(run.run_id, p.index))?;
            }
            l.asm.finish()?;
            journal.record("assembled")?;
        } else if step.is_none() {
            let append = self.cfg.mode == Mode::Append && self.exists(&self.loc.path)?;
            let mut inputs: Vec<Path> = Vec::new();
            if append {
                inputs.push(self.loc.path.clone());
            }
            inputs.extend(parts.iter().map(|p| self.part_path(run.run_id, p.index)));
            if inputs.len() == 1 && !append {
                self.rename(&inputs[0], &assembled)?;
            } else {
                self.assemble(&assembled, &inputs, schema)?;
            }
            journal.record("assembled")?;
        }
        if step.as_deref() != Some("renamed") {
            if self.exists(&assembled)? {
                self.rename(&assembled, &self.loc.path)?;
            }
            journal.record("renamed")?;
        }
        Ok(())
    }

    fn publish_dir(
        &self,
        run: &RunInfo,
        parts: &[CommittedPart],
        journal: &dyn PublishJournal,
    ) -> Result<()> {
        let run_dir = self.run_dir(run.run_id);
        let ext = self.part_ext();
        let step = journal.step()?;
        if self.cfg.mode == Mode::Append {
            for p in parts {
                let from = self.part_path(run.run_id, p.index);
                let to = self
                    .loc
                    .child(&format!("part-{:05}-run{}.{ext}", p.index, run.run_id));
                if self.exists(&from)? {
                    self.rename(&from, &to)?;
                }
            }
            return Ok(());
        }
        if let (Some(target), Some(staging)) = (&self.loc.local, &self.staging_fs) {
            let run_fs = staging.join(format!("run-{}", run.run_id));
            let old_fs = staging.join(format!("old-{}", run.run_id));
            let io_err = |what: &str, e: std::io::Error| Error::io(what.to_string(), e);
            if step.is_none() {
                std::fs::create_dir_all(&run_fs)
                    .map_err(|e| io_err(&format!("creating {}", run_fs.display()), e))?;
                // Leave only committed parts: an interrupted upload may have left a temporary file.
                let keep: std::collections::HashSet<String> = parts
                    .iter()
                    .map(|p| format!("part-{:05}.{ext}", p.index))
                    .collect();
                for entry in std::fs::read_dir(&run_fs)
                    .map_err(|e| io_err(&format!("listing {}", run_fs.display()), e))?
                {
                    let entry =
                        entry.map_err(|e| io_err(&format!("listing {}", run_fs.display()), e))?;
                    if !keep.contains(&entry.file_name().to_string_lossy().to_string()) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
                journal.record("swapping")?;
            }
            if step.as_deref() != Some("swapped") {
                if run_fs.exists() {
                    if target.exists() {
                        std::fs::rename(target, &old_fs).map_err(|e| {
                            io_err(&format!("moving {} aside", target.display()), e)
                        })?;
                    }
                    if let Some(p) = target.parent() {
                        std::fs::create_dir_all(p)
                            .map_err(|e| io_err(&format!("creating {}", p.display()), e))?;
                    }
                    std::fs::rename(&run_fs, target).map_err(|e| {
                        io_err(&format!("moving output into {}", target.display()), e)
                    })?;
                }
                journal.record("swapped")?;
            }
            return Ok(());
        }
        if step.is_none() {
            for meta in self.loc.list_under(&self.io, &self.loc.path)? {
                self.delete(&meta.location)?;
            }
            journal.record("cleared")?;
        }
        for p in parts {
            let from = self.part_path(run.run_id, p.index);
            let to = self.loc.child(&format!("part-{:05}.{ext}", p.index));
            if self.exists(&from)? {
                self.rename(&from, &to)?;
            }
        }
        let _ = run_dir;
        Ok(())
    }
}

/// How a Parquet column is encoded, decided from its first values.
#[derive(Debug, PartialEq)]
enum ColumnEncoding {
    /// A dictionary (the writer's default; it falls back to PLAIN pages
    /// when the dictionary grows too large).
    Dictionary,
    /// No dictionary: this encoding, or PLAIN for `None`.
    Fallback(Option<parquet::basic::Encoding>),
}

/// Mostly distinct values get no dictionary: hashing them would only cost
/// time before the writer fell back to plain pages. With `compact`, such
/// strings are written DELTA_LENGTH_BYTE_ARRAY (their lengths delta-packed
/// apart from the bytes, instead of a 4-byte length before every value) and
/// such integers, decimals, dates and timestamps DELTA_BINARY_PACKED when
/// their differences fit in three quarters of the bits PLAIN stores (see
/// `narrow_deltas`). Both leave less
/// for the compressor to do: on the bench's people data they cut the bytes
/// zstd sees by a quarter.
fn column_encoding(col: &arrow::array::ArrayRef, compact: bool) -> ColumnEncoding {
    use arrow::datatypes::DataType as D;
    use parquet::basic::Encoding;
    if !high_cardinality(col) {
        return ColumnEncoding::Dictionary;
    }
    if !compact {
        return ColumnEncoding::Fallback(None);
    }
    let e = match col.data_type() {
        D::Utf8 | D::LargeUtf8 | D::Binary | D::LargeBinary => {
            Some(Encoding::DELTA_LENGTH_BYTE_ARRAY)
        }
        _ if narrow_deltas(col) => Some(Encoding::DELTA_BINARY_PACKED),
        _ => None,
    };
    ColumnEncoding::Fallback(e)
}

/// Whether the differences between an integer-like column's first values
/// span at most three quarters of the bits Parquet stores them in (INT32 or
/// INT64): DELTA_BINARY_PACKED then stores each difference in that many bits
/// where PLAIN stores all of them. Sequences and sorted keys need a few
/// bits, phone numbers 34, amounts under a million 27. Timestamps spread over
/// a few years in microseconds (about 50) and values spread over the whole
/// range (hashes) stay PLAIN: delta-packing them would cost more time than
/// the compressor saves.
fn narrow_deltas(col: &arrow::array::ArrayRef) -> bool {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType as D, Decimal128Type, Int64Type};
    let sample = col.slice(0, col.len().min(2048));
    let (v, bits): (Vec<i128>, u32) = match col.data_type() {
        D::Decimal128(p, _) if *p <= 18 => (
            sample
                .as_primitive::<Decimal128Type>()
                .iter()
                .flatten()
                .collect(),
            if *p <= 9 { 32 } else { 64 },
        ),
        D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 | D::UInt32 | D::Date32 => {
            (int64_values(&sample), 32)
        }
        D::Int64 | D::Date64 | D::Timestamp(..) => (int64_values(&sample), 64),
        _ => return false,
    };
    fn int64_values(a: &arrow::array::ArrayRef) -> Vec<i128> {
        arrow::compute::cast(a, &D::Int64)
            .map(|c| {
                c.as_primitive::<Int64Type>()
                    .iter()
                    .flatten()
                    .map(i128::from)
                    .collect()
            })
            .unwrap_or_default()
    }
    let deltas = v.windows(2).map(|w| w[1] - w[0]);
    let (Some(lo), Some(hi)) = (deltas.clone().min(), deltas.max()) else {
        return false;
    };
    let width = 128 - (hi - lo).leading_zeros();
    width * 4 <= bits * 3
}

/// Whether a column's first values are mostly distinct.
fn high_cardinality(col: &arrow::array::ArrayRef) -> bool {
    use arrow::row::{RowConverter, SortField};
    let n = col.len().min(2048);
    if n < 1024 || col.data_type().is_nested() {
        return false;
    }
    let sample = col.slice(0, n);
    let Ok(conv) = RowConverter::new(vec![SortField::new(sample.data_type().clone())]) else {
        return false;
    };
    let Ok(rows) = conv.convert_columns(&[sample]) else {
        return false;
    };
    let distinct: std::collections::HashSet<&[u8]> = rows.iter().map(|r| r.data()).collect();
    distinct.len() * 2 > n
}

/// Where a part's encoded bytes go: a multipart upload (object stores), a
/// local file written under a temporary name, or memory (for direct
/// assembly of a single local Parquet file).
enum Target {
    /// zstd around another target (CSV and JSON-lines parts).
    Zstd(Box<zstd::stream::write::Encoder<'static, Target>>),
    /// Per-file encryption around another target.
    Sealed(Box<tidex_engine::stages::frame::FrameWriter<Target>>),
    Upload(UploadWriter),
    Local(LocalPart),
    Memory(Vec<u8>),
}

/// A local part: written as `NAME.partial`, renamed to `NAME` on commit.
/// Plain file writes cost a fraction of the object store's multipart
/// machinery on a local disk.
struct LocalPart {
    file: Option<std::io::BufWriter<std::fs::File>>,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
    written: u64,
}

impl LocalPart {
    fn create(path: std::path::PathBuf) -> Result<Self> {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".partial");
        let tmp = std::path::PathBuf::from(tmp);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(LocalPart {
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            tmp,
            path,
            written: 0,
        })
    }

    fn finish(mut self) -> Result<u64> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Internal("part finished twice".into()))?;
        file.into_inner()
            .map_err(|e| Error::io(format!("writing {}", self.tmp.display()), e.into_error()))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::io(format!("committing {}", self.path.display()), e))?;
        Ok(self.written)
    }
}

impl Drop for LocalPart {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp); // not committed
        }
    }
}

impl std::io::Write for Target {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Zstd(z) => z.write(data),
            Target::Sealed(s) => s.write(data),
            Target::Upload(w) => w.write(data),
            Target::Local(l) => {
                let n = l
                    .file
                    .as_mut()
                    .ok_or_else(|| std::io::Error::other("part already finished"))?
                    .write(data)?;
                l.written += n as u64;
                Ok(n)
            }
            Target::Memory(v) => {
                v.extend_from_slice(data);
                Ok(data.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The target, schema, properties, and whether delta encodings may be chosen.
type PendingParquet = (
    Target,
    SchemaRef,
    parquet::file::properties::WriterPropertiesBuilder,
    bool,
);

enum Encoder {
    /// A Parquet writer not yet created: it waits for the first batch.
    PendingParquet(Box<PendingParquet>),
    Parquet(ArrowWriter<Target>),
    Arrow(FileWriter<Target>),
    Csv(arrow::csv::Writer<Target>),
    Jsonl(arrow::json::LineDelimitedWriter<Target>),
}

impl Encoder {
    /// Turns a pending Parquet encoder into a writer, choosing each
    /// column's encoding from the first batch (see [`column_encoding`]).
    fn start(self, first: Option<&RecordBatch>) -> std::result::Result<Encoder, String> {
        let Encoder::PendingParquet(pending) = self else {
            return Ok(self);
        };
        let (w, schema, mut props, compact) = *pending;
        if let Some(b) = first {
            for (field, col) in schema.fields().iter().zip(b.columns()) {
                let path = parquet::schema::types::ColumnPath::from(field.name().as_str());
                match column_encoding(col, compact) {
                    ColumnEncoding::Dictionary => {}
                    ColumnEncoding::Fallback(None) => {
                        props = props.set_column_dictionary_enabled(path, false);
                    }
                    ColumnEncoding::Fallback(Some(e)) => {
                        props = props
                            .set_column_dictionary_enabled(path.clone(), false)
                            .set_column_encoding(path, e);
                    }
                }
            }
        }
        ArrowWriter::try_new(w, schema, Some(props.build()))
            .map(Encoder::Parquet)
            .map_err(|e| e.to_string())
    }

    fn write(&mut self, b: &RecordBatch) -> std::result::Result<(), String> {
        match self {
            Encoder::PendingParquet(_) => Err("internal: parquet writer not started".into()),
            Encoder::Parquet(w) => w.write(b).map_err(|e| e.to_string()),
            Encoder::Arrow(w) => w.write(b).map_err(|e| e.to_string()),
            Encoder::Csv(w) => w.write(b).map_err(|e| e.to_string()),
            Encoder::Jsonl(w) => w.write(b).map_err(|e| e.to_string()),
        }
    }

    fn finish(self) -> std::result::Result<Target, String> {
        match self.start(None)? {
            Encoder::PendingParquet(_) => Err("internal: parquet writer not started".into()),
            Encoder::Parquet(w) => w.into_inner().map_err(|e| e.to_string()),
            Encoder::Arrow(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                w.into_inner().map_err(|e| e.to_string())
            }
            Encoder::Csv(w) => Ok(w.into_inner()),
            Encoder::Jsonl(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                Ok(w.into_inner())
            }
        }
    }
}

/// The single-file output being assembled while a run's partitions commit.
struct Live {
    run_id: i64,
    asm: Assembler,
    /// The next partition to append.
    next: usize,
    /// Committed partitions waiting for those before them.
    committed: std::collections::BTreeSet<usize>,
}

type LiveSlot = Arc<std::sync::Mutex<Option<Live>>>;
type DirectSlot = Arc<std::sync::Mutex<Option<Direct>>>;

struct FilePartWriter {
    /// Direct assembly: the run's staging file.
    direct: Option<(DirectSlot, i64)>,
    /// The sink's live assembly and this partition's staged path maker.
    live: Option<(LiveSlot, i64, Path, &'static str)>,
    enc: Option<Encoder>,
    schema: SchemaRef,
    index: usize,
    rows: u64,
    display: String,
    location: String,
}

impl PartitionWriter for FilePartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut enc = self
            .enc
            .take()
            .ok_or_else(|| Error::Internal("write after commit".into()))?;
        if matches!(enc, Encoder::PendingParquet(_)) {
            enc = enc
                .start(Some(batch))
                .map_err(|e| Error::io(format!("writing {}", self.display), e))?;
        }
        let enc = self.enc.insert(enc);
        enc.write(batch)
            .map_err(|e| Error::io(format!("writing {}", self.display), e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<CommittedPart> {
        let mut enc = self
            .enc
            .take()
            .ok_or_else(|| Error::Internal("commit twice".into()))?;
        if self.rows == 0 && matches!(enc, Encoder::Csv(_)) {
            // So that an empty CSV part still carries its header.
            enc.write(&RecordBatch::new_empty(self.schema.clone()))
                .map_err(|e| Error::io(format!("writing {}", self.display), e))?;
        }
        let w = enc
            .finish()
            .map_err(|e| Error::io(format!("writing {}", self.display), e))?;
        let w = match w {
            Target::Zstd(z) => z
                .finish()
                .map_err(|e| Error::io(format!("writing {}", self.display), e))?,
            other => other,
        };
        let w = match w {
            Target::Sealed(s) => {
                s.finish()
                    .map_err(|e| Error::io(format!("writing {}", self.display), e))?
                    .0
            }
            other => other,
        };
        let (bytes, location) = match w {
            Target::Zstd(_) | Target::Sealed(_) => {
                return Err(Error::Internal("nested part encodings".into()))
            }
            Target::Upload(w) => (w.finish()?, self.location.clone()),
            Target::Local(l) => (l.finish()?, self.location.clone()),
            Target::Memory(encoded) => {
                let (slot, run_id) = self.direct.as_ref().ok_or_else(|| {
                    Error::Internal("in-memory part without direct assembly".into())
                })?;
                let mut guard = slot
                    .lock()
                    .map_err(|_| Error::Internal("poisoned".into()))?;
                let d = guard.as_mut().filter(|d| d.run_id == *run_id).ok_or_else(|| {
                    Error::Config("the staged output of the interrupted run is gone; run again with --restart".into())
                })?;
                let (location, len) = d.append(&encoded)?;
                (len, location)
            }
        };
        if let Some((slot, run_id, dir, ext)) = &self.live {
            let mut guard = slot
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            if let Some(l) = guard.as_mut().filter(|l| l.run_id == *run_id) {
                l.committed.insert(self.index);
                while l.committed.remove(&l.next) {
                    let part = dir.clone().join(format!("part-{:05}.{ext}", l.next));
                    if let Err(e) = l.asm.append(&part) {
                        *guard = None;
                        return Err(e);
                    }
                    l.next += 1;
                }
            }
        }
        Ok(CommittedPart {
            index: self.index,
            location,
            rows: self.rows,
            bytes,
        })
    }

    fn abort(mut self: Box<Self>) {
        // Dropping the encoder drops its UploadWriter, which aborts the upload.
        self.enc.take();
    }
}

impl Sink for FileSink {
    fn prepare(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        committed: &[CommittedPart],
    ) -> Result<()> {
        let exists = self.target_exists()?;
        if !run.resumed && self.cfg.mode == Mode::Fail && exists {
            return Err(Error::Config(format!(
                "{} already exists and the sink's mode is \"fail\"",
                self.loc.url
            )));
        }
        let headerless =
            self.format == Format::Csv && !self.is_dir && self.cfg.mode == Mode::Append && exists;
        self.parts_without_header
            .store(headerless, Ordering::Relaxed);
        // A single-file target of a fresh run is assembled while partitions
        // commit, so publishing only adds the last parts. A resumed run
        // assembles at publish time, from every committed part.
        let mut live = self
            .live
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?;
        *live = None;
        if self.direct {
            let staging = self
                .staging_fs
                .as_ref()
                .ok_or_else(|| Error::Internal("direct assembly needs a local target".into()))?;
            let path = staging
                .join(format!("run-{}", run.run_id))
                .join("assembled.parquet.partial");
            *self
                .direct_state
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))? =
                Direct::open(run.run_id, path, run.resumed, committed)?;
            return Ok(());
        }
        if !self.is_dir && !run.resumed && run.partitions > 1 {
            let out = self
                .run_dir(run.run_id)
                .join(format!("assembled.{}", self.format.ext()));
            let mut asm = self.assembler(&out, schema)?;
            if self.cfg.mode == Mode::Append && exists {
                asm.append(&self.loc.path)?;
            }
            *live = Some(Live {
                run_id: run.run_id,
                asm,
                next: 0,
                committed: Default::default(),
            });
        }
        Ok(())
    }

    fn open(
        &self,
        run: &RunInfo,
        partition: &PartitionInfo,
        schema: SchemaRef,
    ) -> Result<Box<dyn PartitionWriter>> {
        let path = self.part_path(run.run_id, partition.index);
        let display = self.loc.display(&path);
        let w = if self.direct {
            Target::Memory(Vec::with_capacity(partition.bytes as usize / 3 + 4096))
        } else if let Some(fs) = self.loc.fs_path(&path) {
            Target::Local(LocalPart::create(fs)?)
        } else {
            Target::Upload(UploadWriter::create(
                &self.io,
                &self.loc.store,
                &path,
                display.clone(),
            )?)
        };
        let w = match &self.seal {
            Some(s) => Target::Sealed(Box::new(
                tidex_engine::stages::frame::FrameWriter::new(
                    w,
                    &s.key,
                    tidex_engine::stages::frame::FrameOptions::new(s.alg),
                )
                .map_err(|e| Error::Config(format!("encrypting {display}: {e}")))?,
            )),
            None => w,
        };
        let header = self.cfg.header.unwrap_or(true)
            && (self.is_dir
                || (partition.index == 0 && !self.parts_without_header.load(Ordering::Relaxed)));
        let w = match (self.format, self.codec) {
            (Format::Csv | Format::Jsonl, Codec::Zstd(level)) => {
                let mut z = zstd::stream::write::Encoder::new(w, level)
                    .map_err(|e| Error::io(format!("starting zstd for {display}"), e))?;
                // A frame checksum makes a corrupted byte a read error, not wrong data.
                z.include_checksum(true)
                    .map_err(|e| Error::io(format!("starting zstd for {display}"), e))?;
                Target::Zstd(Box::new(z))
            }
            _ => w,
        };
        let enc = self.encoder(w, &schema, header)?;
        let live = (!self.is_dir && !self.direct).then(|| {
            (
                self.live.clone(),
                run.run_id,
                self.run_dir(run.run_id),
                self.part_ext(),
            )
        });
        Ok(Box::new(FilePartWriter {
            live,
            direct: self.direct.then(|| (self.direct_state.clone(), run.run_id)),
            enc: Some(enc),
            schema,
            index: partition.index,
            rows: 0,
            location: path.to_string(),
            display,
        }))
    }

    fn publish(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        parts: &[CommittedPart],
        journal: &dyn PublishJournal,
    ) -> Result<String> {
        if self.is_dir {
            self.publish_dir(run, parts, journal)?;
        } else {
            self.publish_file(run, schema, parts, journal)?;
        }
        self.cleanup(run.run_id)?;
        Ok(self.loc.url.clone())
    }

    fn discard(&self, run_id: i64) -> Result<()> {
        self.cleanup(run_id)
    }

    fn describe(&self) -> String {
        self.loc.url.clone()
    }
}
