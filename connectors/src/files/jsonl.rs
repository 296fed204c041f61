//! JSON lines source: one JSON object per line, decoded with `arrow-json`.
//!
//! A batch of lines is decoded in one go; if any line in it is bad, the
//! batch is decoded again line by line so only the bad lines are rejected.
//! Unknown fields are errors (strict mode), so no value is silently dropped.

use super::compress::{open_range, Chunks, WHOLE_ZSTD};
use super::cut::{cut_parts, range_infos, ByteCut, ByteSplitter, RangePart};
use super::location::{FileMeta, Location};
use super::types::parse_schema;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::reader::{infer_json_schema_from_iterator, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use std::sync::Arc;
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location as RowLocation;
use tidex_engine::spec::ByteSize;
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError, Splitter,
};

fn infer_rows() -> usize {
    10_000
}

/// `[source] type = "jsonl"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSourceConfig {
    /// Always `"jsonl"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file, a directory (every `.jsonl`/`.ndjson`/`.json`) or a glob.
    pub url: String,
    /// The full schema: `["id:int64", "name:utf8", …]`; inferred when absent.
    #[serde(default)]
    pub schema: Option<Vec<String>>,
    /// Lines sampled for inference (default 10000).
    #[serde(default = "infer_rows")]
    pub infer_rows: usize,
    /// Files larger than this are split into partitions of about this size;
    /// `0` never splits. Default: about sixteen per worker, 8–128 MiB.
    #[serde(default)]
    pub split_size: Option<ByteSize>,
}

/// Registers `type = "jsonl"`.
pub struct JsonlSourceFactory;

/// A planned JSON-lines source.
#[derive(Clone)]
pub struct JsonlSource {
    loc: Location,
    files: Vec<FileMeta>,
    parts: Vec<RangePart>,
    infos: Vec<PartitionInfo>,
    schema: SchemaRef,
    io: tokio::runtime::Handle,
    batch_rows: usize,
}

fn null_to_utf8(dt: &DataType) -> DataType {
    match dt {
        DataType::Null => DataType::Utf8,
        DataType::List(f) => DataType::List(Arc::new(
            f.as_ref()
                .clone()
                .with_data_type(null_to_utf8(f.data_type())),
        )),
        DataType::Struct(fs) => DataType::Struct(
            fs.iter()
                .map(|f| {
                    Arc::new(
                        f.as_ref()
                            .clone()
                            .with_data_type(null_to_utf8(f.data_type())),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

impl SourceFactory for JsonlSourceFactory {
    fn kind(&self) -> &'static str {
        "jsonl"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: JsonlSourceConfig = cfg.parse()?;
        if let Some(s) = &c.schema {
            parse_schema(s).map_err(|e| cfg.error("schema", e))?;
        }
        Ok(())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: JsonlSourceConfig = cfg.parse()?;
        let loc = Location::parse(&c.url)?;
        let files = loc.list_files(&ctx.io, &["jsonl", "ndjson", "json"])?;
        let schema = match &c.schema {
            Some(s) => parse_schema(s).map_err(|e| cfg.error("schema", e))?,
            None => {
                let first = &files[0];
                let stored = loc.get_range(&ctx.io, &first.path, 0..first.size.min(4 << 20))?;
                let zst = super::compress::is_zstd(&first.display);
                let sample = if zst {
                    bytes::Bytes::from(super::compress::decompress_prefix(
                        &stored,
                        4 << 20,
                        &first.display,
                    )?)
                } else {
                    stored
                };
                let complete = if !zst && sample.len() as u64 == first.size {
                    &sample[..]
                } else {
                    &sample[..sample
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1)]
                };
                let values = complete
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.trim_ascii().is_empty())
                    .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                    .filter(|v| v.is_object())
                    .take(c.infer_rows);
                let s = infer_json_schema_from_iterator(values.map(Ok)).map_err(|e| {
                    Error::bad_data(
                        RowLocation {
                            file: first.display.clone(),
                            ..Default::default()
                        },
                        format!("cannot infer a schema: {e}"),
                    )
                })?;
                if s.fields().is_empty() {
                    return Err(Error::bad_data(
                        RowLocation {
                            file: first.display.clone(),
                            ..Default::default()
                        },
                        "no JSON objects found to infer a schema from",
                    ));
                }
                Schema::new(
                    s.fields()
                        .iter()
                        .map(|f| Field::new(f.name(), null_to_utf8(f.data_type()), true))
                        .collect::<Vec<_>>(),
                )
            }
        };
        let mut parts = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            if super::compress::is_zstd(&f.display) {
                // A zstd stream is read from its start: one partition.
                parts.push(RangePart {
                    file: fi,
                    start: 0,
                    end: WHOLE_ZSTD,
                    first_row: Some(1),
                    counted_from: 0,
                });
                continue;
            }
            let mut cuts = vec![0u64];
            let (split, taper) = match c.split_size {
                Some(s) => (s.0, 0),
                None => (
                    super::auto_split(files.iter().map(|f| f.size).sum(), ctx.parallelism),
                    if fi + 1 == files.len() {
                        ctx.parallelism
                    } else {
                        0
                    },
                ),
            };
            for nominal in super::nominal_cuts(0, f.size, split, taper) {
                if let Some(b) = line_after(&loc, &ctx.io, f, nominal)? {
                    if b > *cuts.last().expect("non-empty") && b < f.size {
                        cuts.push(b);
                    }
                }
            }
            cuts.push(f.size);
            for (k, w) in cuts.windows(2).enumerate() {
                parts.push(RangePart {
                    file: fi,
                    start: w[0],
                    end: w[1],
                    first_row: (k == 0).then_some(1),
                    counted_from: w[0],
                });
            }
        }
        let infos = range_infos(&parts, &files);
        Ok(Arc::new(JsonlSource {
            loc,
            files,
            parts,
            infos,
            schema: Arc::new(schema),
            io: ctx.io.clone(),
            batch_rows: ctx.batch_rows,
        }))
    }
}

/// The start of the first line after `nominal`.
fn line_after(
    loc: &Location,
    io: &tokio::runtime::Handle,
    f: &FileMeta,
    nominal: u64,
) -> Result<Option<u64>> {
    let end = (nominal + (1 << 20)).min(f.size);
    let w = loc.get_range(io, &f.path, nominal..end)?;
    Ok(memchr::memchr(b'\n', &w).map(|i| nominal + i as u64 + 1))
}

impl Source for JsonlSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let p = self.parts[partition].clone();
        let f = &self.files[p.file];
        // A zstd stream is read from its start and cannot be cut.
        let splitter = (p.end != WHOLE_ZSTD).then(|| {
            let (loc, io, file) = (self.loc.clone(), self.io.clone(), f.clone());
            ByteSplitter::new(
                p.start,
                p.end,
                Box::new(move |_, nominal| line_after(&loc, &io, &file, nominal)),
            )
        });
        Ok(Box::new(JsonlReader {
            cut: ByteCut::new(splitter),
            chunks: open_range(&self.loc, &self.io, f, p.start, p.end)?,
            file: f.display.clone(),
            schema: self.schema.clone(),
            batch_rows: self.batch_rows,
            buf: bytes::Bytes::new(),
            pos: 0,
            carry: Vec::new(),
            eof: false,
            start: p.start,
            offset: p.start,
            first_line: p.first_row,
            line_no: 0,
            batch: Vec::new(),
            lines: Vec::new(),
        }))
    }

    fn describe(&self) -> String {
        self.loc.describe_files(&self.files)
    }

    /// The byte range ends at `at` (a line start) and `at..` to the old
    /// end becomes the last partition.
    fn split_at(&self, partition: usize, at: u64) -> Option<Arc<dyn Source>> {
        let mut s = self.clone();
        s.parts = cut_parts(&self.parts, partition, at)?;
        s.infos = range_infos(&s.parts, &s.files);
        Some(Arc::new(s))
    }
}

struct JsonlReader {
    /// Lets the runtime cut the partition short (plain files).
    cut: ByteCut,
    chunks: Chunks,
    file: String,
    schema: SchemaRef,
    batch_rows: usize,
    buf: bytes::Bytes,
    pos: usize,
    carry: Vec<u8>,
    eof: bool,
    start: u64,
    offset: u64,
    first_line: Option<u64>,
    line_no: u64,
    batch: Vec<u8>,
    /// (start, end) in `batch`, byte offset in the file, line number in the partition.
    lines: Vec<(usize, usize, u64, u64)>,
}

impl JsonlReader {
    fn push_line(&mut self, line_offset: u64, from_carry: bool, slice: std::ops::Range<usize>) {
        self.line_no += 1;
        let start = self.batch.len();
        if from_carry {
            self.batch.extend_from_slice(&self.carry);
            self.carry.clear();
        }
        self.batch.extend_from_slice(&self.buf[slice]);
        if self.batch[start..].trim_ascii().is_empty() {
            self.batch.truncate(start);
            return;
        }
        self.batch.push(b'\n');
        self.lines
            .push((start, self.batch.len() - 1, line_offset, self.line_no));
    }

    fn fill(&mut self) -> Result<()> {
        self.batch.clear();
        self.lines.clear();
        while self.lines.len() < self.batch_rows {
            if self.carry.is_empty() {
                self.cut.poll(self.offset, &mut self.buf, self.pos);
            }
            if self.pos >= self.buf.len() {
                if self.eof {
                    break;
                }
                let next = if self.cut.reached(self.offset) {
                    None
                } else {
                    self.chunks.next_chunk()?
                };
                match next {
                    Some(mut b) => {
                        self.cut.cap(self.offset, &mut b);
                        self.buf = b;
                        self.pos = 0;
                    }
                    None => {
                        self.eof = true;
                        if !self.carry.is_empty() {
                            let off = self.offset - self.carry.len() as u64;
                            self.buf = bytes::Bytes::new();
                            self.push_line(off, true, 0..0);
                        }
                        break;
                    }
                }
                continue;
            }
            let rest = &self.buf[self.pos..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let line_off = self.offset - self.carry.len() as u64;
                    let from_carry = !self.carry.is_empty();
                    let range = self.pos..self.pos + i;
                    self.pos += i + 1;
                    self.offset += i as u64 + 1;
                    self.push_line(line_off, from_carry, range);
                }
                None => {
                    self.carry.extend_from_slice(rest);
                    self.offset += rest.len() as u64;
                    self.pos = self.buf.len();
                }
            }
        }
        Ok(())
    }

    fn decode(
        &self,
        bytes: &[u8],
        rows: usize,
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        let mut d = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.max(1))
            .with_strict_mode(true)
            .with_coerce_primitive(true)
            .build_decoder()?;
        let mut consumed = 0;
        while consumed < bytes.len() {
            let n = d.decode(&bytes[consumed..])?;
            if n == 0 {
                break;
            }
            consumed += n;
        }
        d.flush()
    }
}

impl SourceReader for JsonlReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        loop {
            self.fill()?;
            if self.carry.is_empty() {
                self.cut.publish(self.offset);
            }
            if self.lines.is_empty() {
                self.cut.finish();
                return Ok(None);
            }
            if let Ok(Some(b)) = self.decode(&self.batch, self.lines.len()) {
                if b.num_rows() == self.lines.len() {
                    return Ok(Some(b));
                }
            }
            // Slow path: find the bad lines one by one.
            let mut good = Vec::new();
            for &(s, e, off, line) in &self.lines {
                let text = &self.batch[s..e];
                let err = match self.decode(text, 1) {
                    Ok(Some(b)) if b.num_rows() == 1 => {
                        good.push(b);
                        continue;
                    }
                    Ok(_) => "not a JSON object".to_string(),
                    Err(e) => e.to_string(),
                };
                let loc = RowLocation {
                    file: self.file.clone(),
                    row: self.first_line.map(|f| f + line - 1),
                    byte_offset: Some(off),
                    column: None,
                };
                rejects.reject(
                    DirtyRow::row(loc, err)
                        .with_values(vec![String::from_utf8_lossy(text).into_owned()]),
                )?;
            }
            if good.is_empty() {
                continue;
            }
            return arrow::compute::concat_batches(&self.schema, &good)
                .map(Some)
                .map_err(|e| Error::Internal(e.to_string()));
        }
    }

    fn bytes_read(&self) -> u64 {
        self.chunks
            .stored_consumed()
            .unwrap_or(self.offset - self.start)
    }

    fn splitter(&self) -> Option<Arc<dyn Splitter>> {
        self.cut.splitter()
    }
}
