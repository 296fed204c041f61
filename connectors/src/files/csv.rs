//! CSV source.
//!
//! Files are tokenized with `csv-core` straight into one flat buffer per
//! batch and converted column by column with arrow's parsers, so a bad
//! value costs one row (routed by the error policy), never the batch.
//! Large files are split into byte ranges cut at record boundaries; the
//! boundaries are found at plan time, so a resumed run sees the same
//! partitions.
//!
//! Schema inference never loses information: integers with leading zeros
//! or more than 15 digits (id-card, account and postal codes), values with
//! an `X` check digit and anything mixed stay strings; decimals keep their
//! exact scale as `decimal(p,s)` instead of becoming floats.

use super::compress::{open_range, Chunks, WHOLE_ZSTD};
use super::cut::{cut_parts, range_infos, ByteCut, ByteSplitter, RangePart};
use super::io::{ChunkStream, CHUNK};
use super::location::{FileMeta, Location};
use super::scan::Scan3;
use super::types::parse_schema;
use arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, Decimal128Builder, PrimitiveBuilder, StringArray,
    StringBuilder,
};
use arrow::compute::kernels::cast_utils::{parse_decimal, string_to_datetime, Parser};
use arrow::datatypes::*;
use arrow::record_batch::RecordBatch;
use csv_core::{ReadRecordResult, Reader, ReaderBuilder};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location as RowLocation;
use tidex_engine::spec::ByteSize;
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError, Splitter,
};

fn yes() -> bool {
    true
}
fn comma() -> char {
    ','
}
fn dquote() -> char {
    '"'
}
fn empty_null() -> Vec<String> {
    vec![String::new()]
}
fn infer_rows() -> usize {
    10_000
}

/// `[source] type = "csv"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// Always `"csv"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file, a directory (every `.csv`/`.tsv` in it) or a glob.
    pub url: String,
    /// The first record names the columns (default true).
    #[serde(default = "yes")]
    pub header: bool,
    /// Field delimiter (default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
    /// Quote character (default `"`).
    #[serde(default = "dquote")]
    pub quote: char,
    /// Escape character inside quotes; by default quotes are doubled (`""`).
    #[serde(default)]
    pub escape: Option<char>,
    /// Lines starting with this character are skipped.
    #[serde(default)]
    pub comment: Option<char>,
    /// Values read as NULL (default `[""]`).
    #[serde(default = "empty_null")]
    pub null_values: Vec<String>,
    /// The full schema, in column order: `["id:int64", "name:utf8", …]`.
    /// Without it the schema is inferred from a sample.
    #[serde(default)]
    pub schema: Option<Vec<String>>,
    /// Types for some columns, overriding inference: `{ phone = "utf8" }`.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// Rows sampled for inference (default 10000).
    #[serde(default = "infer_rows")]
    pub infer_rows: usize,
    /// Files larger than this are split into partitions of about this
    /// size; `0` never splits. Default: about sixteen partitions per worker,
    /// between 8 MiB and 128 MiB.
    #[serde(default)]
    pub split_size: Option<ByteSize>,
}

fn ascii(cfg: &ConnectorConfig, field: &str, c: char) -> Result<u8, SpecError> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(cfg.error(
            field,
            format!("expected a single ASCII character, found {c:?}"),
        ))
    }
}

impl CsvSourceConfig {
    fn check(&self, cfg: &ConnectorConfig) -> Result<Dialect, SpecError> {
        let d = Dialect {
            delimiter: ascii(cfg, "delimiter", self.delimiter)?,
            quote: ascii(cfg, "quote", self.quote)?,
            escape: self.escape.map(|c| ascii(cfg, "escape", c)).transpose()?,
            comment: self.comment.map(|c| ascii(cfg, "comment", c)).transpose()?,
        };
        if let Some(s) = &self.schema {
            parse_schema(s).map_err(|e| cfg.error("schema", e))?;
        }
        for (col, ty) in &self.types {
            if super::types::parse_type(ty).is_none() {
                return Err(cfg.error(
                    "types",
                    format!(
                        "column `{col}`: unknown type `{ty}`; expected one of {}",
                        super::types::TYPE_NAMES
                    ),
                ));
            }
        }
        Ok(d)
    }
}

#[derive(Debug, Clone, Copy)]
struct Dialect {
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    comment: Option<u8>,
}

impl Dialect {
    fn reader(&self) -> Reader {
        ReaderBuilder::new()
            .delimiter(self.delimiter)
            .quote(self.quote)
            .escape(self.escape)
            .double_quote(self.escape.is_none())
            .comment(self.comment)
            .build()
    }
}

/// Parses complete records from `input`; the last record counts only when
/// `eof`. Returns the records and the bytes consumed by them.
fn parse_records(d: &Dialect, input: &[u8], eof: bool, max: usize) -> (Vec<Vec<Vec<u8>>>, usize) {
    let mut rdr = d.reader();
    let mut out = vec![0u8; input.len() + 16];
    let mut ends = vec![0usize; 1024];
    let mut records = Vec::new();
    let (mut pos, mut consumed, mut olen, mut elen) = (0, 0, 0, 0);
    while records.len() < max {
        let inp = if pos < input.len() {
            &input[pos..]
        } else {
            &[][..]
        };
        if inp.is_empty() && !eof {
            break;
        }
        let (res, nin, nout, nend) = rdr.read_record(inp, &mut out[olen..], &mut ends[elen..]);
        pos += nin;
        olen += nout;
        elen += nend;
        match res {
            ReadRecordResult::InputEmpty => {
                if !eof {
                    break;
                }
            }
            ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
            ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            ReadRecordResult::Record => {
                let mut start = 0;
                let rec = ends[..elen]
                    .iter()
                    .map(|&e| {
                        let f = out[start..e].to_vec();
                        start = e;
                        f
                    })
                    .collect();
                records.push(rec);
                consumed = pos;
                out.iter_mut().take(olen).for_each(|b| *b = 0);
                olen = 0;
                elen = 0;
            }
            ReadRecordResult::End => break,
        }
    }
    (records, consumed)
}

/// Type inference over sampled values of one column.
#[derive(Debug)]
struct Guess {
    nonnull: usize,
    int: bool,
    dec: bool,
    dec_int_digits: usize,
    dec_scale: usize,
    float: bool,
    boolean: bool,
    date: bool,
    ts: bool,
    ts_tz: bool,
    ts_naive: bool,
    /// Some value is an identifier-like number: leading zeros, or more than
    /// 15 digits. Such columns stay strings.
    code: bool,
}

impl Default for Guess {
    fn default() -> Self {
        Guess {
            nonnull: 0,
            int: true,
            dec: true,
            dec_int_digits: 0,
            dec_scale: 0,
            float: true,
            boolean: true,
            date: true,
            ts: true,
            ts_tz: false,
            ts_naive: false,
            code: false,
        }
    }
}

/// `(integer digits, fraction digits)` of a plain decimal literal without
/// superfluous leading zeros, or `None`.
fn plain_number(s: &str) -> Option<(usize, Option<usize>)> {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(p) => (&b[..p], Some(&b[p + 1..])),
        None => (b, None),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    match frac {
        Some(f) if f.is_empty() || !f.iter().all(u8::is_ascii_digit) => None,
        Some(f) => Some((int.len(), Some(f.len()))),
        None => Some((int.len(), None)),
    }
}

fn has_offset(s: &str) -> bool {
    if s.ends_with('Z') || s.ends_with('z') {
        return true;
    }
    // An offset such as +08:00 or -0500 after the time part.
    let time = s.rsplit_once([' ', 'T']).map_or("", |(_, t)| t);
    time.contains('+') || time.contains('-')
}

impl Guess {
    fn add(&mut self, s: &str) {
        self.nonnull += 1;
        let num = plain_number(s);
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && ((digits.len() > 1 && digits.starts_with('0')) || digits.len() > 15)
        {
            self.code = true;
        }
        self.int &= matches!(num, Some((d, None)) if d <= 15);
        match num {
            Some((i, f)) if i + f.unwrap_or(0) <= 38 => {
                self.dec_int_digits = self.dec_int_digits.max(i);
                self.dec_scale = self.dec_scale.max(f.unwrap_or(0));
            }
            _ => self.dec = false,
        }
        self.float &= Float64Type::parse(s).is_some();
        self.boolean &= s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false");
        self.date &= s.len() == 10 && Date32Type::parse(s).is_some();
        if self.ts {
            self.ts =
                s.len() >= 16 && s.contains(':') && string_to_datetime(&chrono::Utc, s).is_ok();
            if has_offset(s) {
                self.ts_tz = true;
            } else {
                self.ts_naive = true;
            }
        }
    }

    fn data_type(&self) -> DataType {
        if self.nonnull == 0 || self.code {
            DataType::Utf8
        } else if self.boolean {
            DataType::Boolean
        } else if self.int {
            DataType::Int64
        } else if self.dec && self.dec_scale > 0 && self.dec_int_digits + self.dec_scale <= 38 {
            let p = if self.dec_int_digits + self.dec_scale <= 16 {
                18
            } else {
                38
            };
            DataType::Decimal128(p, self.dec_scale as i8)
        } else if self.float && !self.dec && !self.int {
            // Only when some value is not a plain decimal (exponents, NaN…).
            DataType::Float64
        } else if self.date {
            DataType::Date32
        } else if self.ts && !(self.ts_tz && self.ts_naive) {
            DataType::Timestamp(TimeUnit::Microsecond, self.ts_tz.then(|| "UTC".into()))
        } else {
            DataType::Utf8
        }
    }
}

/// Infers column types from sampled records.
fn infer_types(records: &[Vec<Vec<u8>>], ncols: usize, nulls: &[Vec<u8>]) -> Vec<DataType> {
    let mut guesses: Vec<Guess> = (0..ncols).map(|_| Guess::default()).collect();
    for rec in records.iter().filter(|r| r.len() == ncols) {
        for (g, f) in guesses.iter_mut().zip(rec) {
            if nulls.iter().any(|n| n == f) {
                continue;
            }
            match std::str::from_utf8(f) {
                Ok(s) => g.add(s),
                Err(_) => {
                    g.nonnull += 1;
                    g.int = false;
                    g.dec = false;
                    g.float = false;
                    g.boolean = false;
                    g.date = false;
                    g.ts = false;
                }
            }
        }
    }
    guesses.iter().map(Guess::data_type).collect()
}

/// A planned CSV source.
#[derive(Clone)]
pub struct CsvSource {
    loc: Location,
    files: Vec<FileMeta>,
    parts: Vec<RangePart>,
    infos: Vec<PartitionInfo>,
    schema: SchemaRef,
    dialect: Dialect,
    nulls: Arc<Vec<Vec<u8>>>,
    io: tokio::runtime::Handle,
    batch_rows: usize,
    /// Quoted fields hold line breaks (cuts need an exact quoting scan).
    multiline: bool,
}

/// Registers `type = "csv"`.
pub struct CsvSourceFactory;

impl SourceFactory for CsvSourceFactory {
    fn kind(&self) -> &'static str {
        "csv"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: CsvSourceConfig = cfg.parse()?;
        c.check(cfg)?;
        Ok(())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: CsvSourceConfig = cfg.parse()?;
        let dialect = c.check(cfg)?;
        let loc = Location::parse(&c.url)?;
        let files = loc.list_files(&ctx.io, &["csv", "tsv", "txt"])?;
        let nulls: Vec<Vec<u8>> = c
            .null_values
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();

        // Header and sample from the first file.
        let first = &files[0];
        let sample_len = first.size.min(4 << 20);
        let stored = loc.get_range(&ctx.io, &first.path, 0..sample_len)?;
        let (sample, eof) = if super::compress::is_zstd(&first.display) {
            let d = super::compress::decompress_prefix(&stored, 4 << 20, &first.display)?;
            let eof = sample_len == first.size && d.len() < 4 << 20;
            (bytes::Bytes::from(d), eof)
        } else {
            (stored, sample_len == first.size)
        };
        let (records, _) = parse_records(&dialect, &sample, eof, c.infer_rows + 1);
        let ncols_sample = records.first().map_or(0, |r| r.len());
        let header: Option<Vec<String>> = if c.header {
            let h = records.first().ok_or_else(|| {
                Error::bad_data(
                    RowLocation {
                        file: first.display.clone(),
                        row: Some(1),
                        ..Default::default()
                    },
                    "file is empty: expected a header row",
                )
            })?;
            Some(dedupe_names(
                h.iter()
                    .map(|f| String::from_utf8_lossy(f).trim().to_string())
                    .collect(),
            ))
        } else {
            None
        };
        // Line breaks inside quoted fields make a newline an unreliable cut:
        // then cuts come from an exact scan of the quoting state instead.
        let multiline = records
            .iter()
            .any(|r| r.iter().any(|f| f.contains(&b'\n') || f.contains(&b'\r')));
        let data_records = if c.header {
            &records[1.min(records.len())..]
        } else {
            &records[..]
        };
        let schema = if let Some(entries) = &c.schema {
            let s = parse_schema(entries).map_err(|e| cfg.error("schema", e))?;
            if ncols_sample != 0 && s.fields().len() != ncols_sample {
                return Err(Error::Config(format!(
                    "{}: the spec's schema has {} columns but the file has {ncols_sample}",
                    first.display,
                    s.fields().len()
                )));
            }
            s
        } else {
            let names = header
                .clone()
                .unwrap_or_else(|| (1..=ncols_sample).map(|i| format!("column_{i}")).collect());
            let types = infer_types(data_records, names.len(), &nulls);
            Schema::new(
                names
                    .iter()
                    .zip(types)
                    .map(|(n, t)| Field::new(n, t, true))
                    .collect::<Vec<_>>(),
            )
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (col, ty) in &c.types {
            let f = fields.iter_mut().find(|f| f.name() == col).ok_or_else(|| {
                cfg.error(
                    "types",
                    format!("no column named `{col}` in {}", first.display),
                )
            })?;
            *f = Field::new(col, super::types::parse_type(ty).expect("checked"), true);
        }
        let schema = Arc::new(Schema::new(fields));
        let ncols = schema.fields().len();
        if ncols == 0 {
            return Err(Error::bad_data(
                RowLocation {
                    file: first.display.clone(),
                    ..Default::default()
                },
                "no columns found",
            ));
        }

        // Plan partitions per file.
        let mut parts = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            let zst = super::compress::is_zstd(&f.display);
            let head_len = f.size.min(1 << 20);
            let head = if fi == 0 && (zst || head_len <= sample.len() as u64) {
                sample.slice(0..(head_len as usize).min(sample.len()))
            } else if zst {
                let stored = loc.get_range(&ctx.io, &f.path, 0..head_len)?;
                bytes::Bytes::from(super::compress::decompress_prefix(
                    &stored,
                    1 << 20,
                    &f.display,
                )?)
            } else {
                loc.get_range(&ctx.io, &f.path, 0..head_len)?
            };
            let head_complete = !zst && head_len == f.size;
            let data_start = if c.header {
                let (recs, consumed) = parse_records(
                    &dialect,
                    &head,
                    head_complete || (zst && head.len() < 1 << 20),
                    1,
                );
                let h = recs.first().ok_or_else(|| {
                    Error::bad_data(
                        RowLocation {
                            file: f.display.clone(),
                            row: Some(1),
                            ..Default::default()
                        },
                        "file is empty: expected a header row",
                    )
                })?;
                let names = dedupe_names(
                    h.iter()
                        .map(|x| String::from_utf8_lossy(x).trim().to_string())
                        .collect(),
                );
                if Some(&names) != header.as_ref() {
                    return Err(Error::bad_data(
                        RowLocation {
                            file: f.display.clone(),
                            row: Some(1),
                            ..Default::default()
                        },
                        format!(
                            "header {names:?} differs from {:?} in {}",
                            header.clone().unwrap_or_default(),
                            files[0].display
                        ),
                    ));
                }
                consumed as u64
            } else {
                0
            };
            if zst {
                // A zstd stream is read from its start: one partition, offsets
                // in decompressed bytes; `end` is unknown until read.
                parts.push(RangePart {
                    file: fi,
                    start: data_start,
                    end: WHOLE_ZSTD,
                    first_row: Some(if c.header { 2 } else { 1 }),
                    counted_from: 0,
                });
                continue;
            }
            let mut cuts = vec![data_start];
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
            let nominal = super::nominal_cuts(data_start, f.size, split, taper);
            if !nominal.is_empty() {
                let found = if multiline {
                    scan_boundaries(&loc, &ctx.io, f, data_start, &nominal, &dialect)?
                } else {
                    let mut v = Vec::new();
                    for n in nominal {
                        v.extend(find_boundary(&loc, &ctx.io, f, n, &dialect, ncols)?);
                    }
                    v
                };
                for b in found {
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
                    first_row: (k == 0).then_some(if c.header { 2 } else { 1 }),
                    counted_from: if k == 0 { 0 } else { w[0] },
                });
            }
        }
        let infos = range_infos(&parts, &files);
        Ok(Arc::new(CsvSource {
            loc,
            files,
            parts,
            infos,
            schema,
            dialect,
            nulls: Arc::new(nulls),
            io: ctx.io.clone(),
            batch_rows: ctx.batch_rows,
            multiline,
        }))
    }
}

fn dedupe_names(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let base = if n.is_empty() {
                format!("column_{}", i + 1)
            } else {
                n
            };
            let mut name = base.clone();
            let mut k = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{k}");
                k += 1;
            }
            name
        })
        .collect()
}

/// The first record boundary at or after `nominal`: just after a newline
/// from which the following records parse with the expected field count
/// (so a cut never lands inside a quoted field that spans lines).
fn find_boundary(
    loc: &Location,
    io: &tokio::runtime::Handle,
    f: &FileMeta,
    nominal: u64,
    d: &Dialect,
    ncols: usize,
) -> Result<Option<u64>> {
    let end = (nominal + (1 << 20)).min(f.size);
    let window = loc.get_range(io, &f.path, nominal..end)?;
    let eof = end == f.size;
    let newlines = window
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i)
        .take(64);
    for nl in newlines {
        let rest = &window[nl + 1..];
        if rest.is_empty() {
            continue;
        }
        if quoted_at_start(d, rest) == Some(true) {
            continue; // this newline is inside a quoted field
        }
        let (recs, _) = parse_records(d, rest, eof, 50);
        if !recs.is_empty() && recs.iter().all(|r| r.len() == ncols) {
            return Ok(Some(nominal + nl as u64 + 1));
        }
    }
    Ok(None)
}

/// Whether the start of `text` lies inside a quoted field, read from the
/// first quote whose neighbours tell whether it opens a field (after a
/// delimiter or line break, not before one) or closes it (before a
/// delimiter or line break, not after one), and the parity of the quotes
/// before it. `None` when no quote in `text` tells, or with an escape
/// character (whose quotes do not pair up).
fn quoted_at_start(d: &Dialect, text: &[u8]) -> Option<bool> {
    if d.escape.is_some() {
        return None;
    }
    let sep =
        |b: Option<&u8>| matches!(b, Some(&c) if c == d.delimiter || c == b'\n' || c == b'\r');
    let mut before = 0usize;
    for i in memchr::memchr_iter(d.quote, text) {
        let after_sep = i == 0 || sep(text.get(i - 1));
        let before_sep = i + 1 == text.len() || sep(text.get(i + 1));
        match (after_sep, before_sep) {
            // Opens a field: outside quotes just before it.
            (true, false) => return Some(!before.is_multiple_of(2)),
            // Closes a field: inside quotes just before it.
            (false, true) => return Some(before.is_multiple_of(2)),
            _ => before += 1,
        }
    }
    None
}

/// Exact record boundaries after each nominal cut, from one pass over the
/// file tracking whether each byte is inside quotes.
fn scan_boundaries(
    loc: &Location,
    io: &tokio::runtime::Handle,
    f: &FileMeta,
    start: u64,
    nominal: &[u64],
    d: &Dialect,
) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut next = nominal.iter().copied().peekable();
    let mut chunks = ChunkStream::spawn(
        io,
        loc.store.clone(),
        f.path.clone(),
        f.display.clone(),
        start..f.size,
        CHUNK,
    );
    let (mut in_quotes, mut escaped) = (false, false);
    let mut pos = start;
    let mut want: Option<u64> = next.next();
    while let Some(chunk) = chunks.next_chunk()? {
        if want.is_none() {
            break;
        }
        for (i, &b) in chunk.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if in_quotes && Some(b) == d.escape {
                escaped = true;
            } else if b == d.quote {
                in_quotes = !in_quotes;
            } else if b == b'\n' && !in_quotes && want.is_some_and(|w| pos + i as u64 >= w) {
                let boundary = pos + i as u64 + 1;
                out.push(boundary);
                want = next.find(|n| *n > boundary);
            }
        }
        pos += chunk.len() as u64;
    }
    Ok(out)
}

impl Source for CsvSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let p = self.parts[partition].clone();
        let f = &self.files[p.file];
        let chunks = open_range(&self.loc, &self.io, f, p.start, p.end)?;
        // A zstd stream is read from its start and cannot be cut.
        let splitter = (p.end != WHOLE_ZSTD).then(|| {
            let (loc, io, file) = (self.loc.clone(), self.io.clone(), f.clone());
            let (dialect, ncols, multiline) =
                (self.dialect, self.schema.fields().len(), self.multiline);
            ByteSplitter::new(
                p.start,
                p.end,
                Box::new(move |from, nominal| {
                    if multiline {
                        let found = scan_boundaries(&loc, &io, &file, from, &[nominal], &dialect)?;
                        Ok(found.first().copied())
                    } else {
                        find_boundary(&loc, &io, &file, nominal, &dialect, ncols)
                    }
                }),
            )
        });
        Ok(Box::new(CsvReader {
            cut: ByteCut::new(splitter),
            chunks,
            // A zstd file is decompressed from its start, header included.
            skip: if p.end == WHOLE_ZSTD { p.start } else { 0 },
            file: f.display.clone(),
            rdr: self.dialect.reader(),
            schema: self.schema.clone(),
            nulls: self.nulls.clone(),
            batch_rows: self.batch_rows,
            buf: bytes::Bytes::new(),
            pos: 0,
            eof: false,
            done: false,
            start: p.counted_from,
            offset: p.start,
            rec_start: p.start,
            first_row: p.first_row,
            records: 0,
            data: vec![0; 1 << 20],
            // Room for a batch of field ends up front (they grow on demand).
            ends: vec![
                0;
                (self.batch_rows.saturating_mul(self.schema.fields().len()) + 2)
                    .clamp(1 << 16, 1 << 20)
            ],
            starts: Vec::new(),
            core_active: false,
            doubled: Vec::new(),
            unseparated: Vec::new(),
            fused: false,
            dialect: self.dialect,
            data_len: 0,
            ends_len: 1,
            rows: Vec::new(),
            malformed: Vec::new(),
        }))
    }

    fn describe(&self) -> String {
        self.loc.describe_files(&self.files)
    }

    /// The byte range ends at `at` (a record boundary the reader's
    /// splitter found) and `at..` to the old end becomes the last partition.
    fn split_at(&self, partition: usize, at: u64) -> Option<Arc<dyn Source>> {
        let mut s = self.clone();
        s.parts = cut_parts(&self.parts, partition, at)?;
        s.infos = range_infos(&s.parts, &s.files);
        Some(Arc::new(s))
    }
}

struct CsvReader {
    /// Lets the runtime cut the partition short (plain files).
    cut: ByteCut,
    chunks: Chunks,
    /// Decompressed bytes to skip before the first record (a zstd file's header).
    skip: u64,
    file: String,
    rdr: Reader,
    schema: SchemaRef,
    nulls: Arc<Vec<Vec<u8>>>,
    batch_rows: usize,
    buf: bytes::Bytes,
    pos: usize,
    eof: bool,
    done: bool,
    start: u64,
    offset: u64,
    rec_start: u64,
    first_row: Option<u64>,
    records: u64,
    /// Field bytes of the batch, back to back.
    data: Vec<u8>,
    /// `ends[0] = 0`, then the end of every field in `data`.
    ends: Vec<usize>,
    /// The start of every field in `data` (fields split on the fast path
    /// keep their delimiters between them, so starts are not previous ends).
    starts: Vec<usize>,
    /// csv-core is in the middle of a record.
    core_active: bool,
    /// Fields of the current record that hold doubled quotes, by index.
    doubled: Vec<usize>,
    /// Field indexes of the batch's records that were not split in place
    /// (csv-core's, whose fields are back to back): their boundaries are
    /// checked to lie on character boundaries before the fast UTF-8 path.
    unseparated: Vec<std::ops::Range<usize>>,
    /// The current chunk suits the fused scan (no stray carriage returns,
    /// no comment character configured).
    fused: bool,
    dialect: Dialect,
    data_len: usize,
    ends_len: usize,
    /// Byte offset and record number of each row in the batch.
    rows: Vec<(u64, u64)>,
    /// Records with the wrong field count, with the number of good rows before them.
    malformed: Vec<(usize, DirtyRow)>,
}

/// Splits the record at the start of `rest` in place, when it is complete
/// there and every field is either unquoted (a quote inside it is a plain
/// byte, as for csv-core) or quoted and followed directly by a delimiter or
/// the line end, with no escape character inside (quotes doubled inside it
/// are fine). Calls `field(start, end, doubled)` for each field's value, as
/// positions in `rest` (a quoted value lies between its quotes; `doubled`:
/// it holds doubled quotes, still to be undoubled), and returns the bytes
/// taken (through the newline) and the record's length without its
/// terminator (0: a blank line). `None`: csv-core must take the record, and
/// the fields already reported are to be dropped. The caller makes sure that
/// every carriage return in `rest` comes before a newline and that no
/// comment character is configured.
#[inline(always)]
fn split_simple(
    rest: &[u8],
    d: &Dialect,
    mut field: impl FnMut(usize, usize, bool),
) -> Option<(usize, usize)> {
    let (delim, quote) = (d.delimiter, d.quote);
    let mut field_start = 0;
    let mut scan = Scan3::new(rest, delim, b'\n', quote);
    loop {
        let p = scan.next()?;
        let b = rest[p];
        if b == delim {
            field(field_start, p, false);
            field_start = p + 1;
        } else if b == b'\n' {
            let end = if p > field_start && rest[p - 1] == b'\r' {
                p - 1
            } else {
                p
            };
            field(field_start, end, false);
            return Some((p + 1, end));
        } else if p != field_start {
            // A quote inside an unquoted field is kept as is.
        } else {
            // The closing quote: the first one not doubled (quotes are
            // doubled inside a field only when no escape is configured).
            let (mut q, mut doubled) = (p + 1 + memchr::memchr(quote, &rest[p + 1..])?, false);
            if let Some(e) = d.escape {
                if memchr::memchr(e, &rest[p + 1..q]).is_some() {
                    return None;
                }
            } else {
                while rest.get(q + 1) == Some(&quote) {
                    doubled = true;
                    q = q + 2 + memchr::memchr(quote, &rest[q + 2..])?;
                }
            }
            match rest.get(q + 1) {
                Some(&c) if c == delim => {
                    field(p + 1, q, doubled);
                    field_start = q + 2;
                    scan.seek(q + 2);
                }
                Some(b'\n') => {
                    field(p + 1, q, doubled);
                    return Some((q + 2, q + 1));
                }
                Some(b'\r') if rest.get(q + 2) == Some(&b'\n') => {
                    field(p + 1, q, doubled);
                    return Some((q + 3, q + 1));
                }
                _ => return None,
            }
        }
    }
}

impl CsvReader {
    fn location(&self, offset: u64, record: u64, column: Option<String>) -> RowLocation {
        RowLocation {
            file: self.file.clone(),
            row: self.first_row.map(|r| r + record - 1),
            byte_offset: Some(offset),
            column,
        }
    }

    fn field_values(&self, range: std::ops::Range<usize>, base: usize) -> Vec<String> {
        let mut start = 0;
        self.ends[range]
            .iter()
            .map(|&e| {
                let v = String::from_utf8_lossy(&self.data[base + start..base + e]).into_owned();
                start = e;
                v
            })
            .collect()
    }

    /// Tokenizes up to `batch_rows` records into `data`/`ends`.
    /// Splits the next record with one scan when it is complete in the
    /// buffer and simple (see [`split_simple`]). `Some(true)`: a row (or a
    /// malformed record, routed aside) was taken; `Some(false)`: a blank
    /// line was skipped; `None`: csv-core must take this record.
    fn fused_record(&mut self, ncols: usize) -> Result<Option<bool>> {
        let rest = &self.buf[self.pos..];
        let base = self.data_len;
        let (starts_before, ends_before) = (self.starts.len(), self.ends_len);
        let (starts, ends, ends_len) = (&mut self.starts, &mut self.ends, &mut self.ends_len);
        let doubled = &mut self.doubled;
        doubled.clear();
        let split = split_simple(rest, &self.dialect, |s, e, d| {
            if *ends_len + 1 > ends.len() {
                let n = ends.len() * 2;
                ends.resize(n, 0);
            }
            if d {
                doubled.push(starts.len());
            }
            starts.push(base + s);
            ends[*ends_len] = base + e;
            *ends_len += 1;
        });
        let Some((consumed, line_len)) = split else {
            self.starts.truncate(starts_before);
            self.ends_len = ends_before;
            return Ok(None);
        };
        let rec_offset = self.offset;
        let line_start = self.pos;
        self.pos += consumed;
        self.offset += consumed as u64;
        self.rec_start = self.offset;
        if line_len == 0 {
            self.starts.truncate(starts_before);
            self.ends_len = ends_before;
            return Ok(Some(false)); // blank lines are skipped, as csv-core does
        }
        // The terminator is copied too: every field then lies between
        // ASCII bytes, so it starts and ends on a character boundary when
        // the whole buffer is valid UTF-8 (see `convert`).
        if base + consumed > self.data.len() {
            let n = (self.data.len() * 2).max(base + consumed);
            self.data.resize(n, 0);
        }
        self.data[base..base + consumed]
            .copy_from_slice(&self.buf[line_start..line_start + consumed]);
        self.data_len += consumed;
        for &i in &self.doubled {
            // Undouble the quotes in place; the bytes freed at the end of
            // the value become spaces, so the buffer stays valid UTF-8.
            let (start, end) = (self.starts[i], self.ends[i + 1]);
            let (mut w, mut r) = (start, start);
            while r < end {
                let b = self.data[r];
                self.data[w] = b;
                w += 1;
                r += if b == self.dialect.quote { 2 } else { 1 };
            }
            self.data[w..end].fill(b' ');
            self.ends[i + 1] = w;
        }
        self.records += 1;
        let nfields = self.ends_len - ends_before;
        if nfields != ncols {
            let values = self.starts[starts_before..]
                .iter()
                .zip(&self.ends[ends_before..self.ends_len])
                .map(|(&s, &e)| String::from_utf8_lossy(&self.data[s..e]).into_owned())
                .collect();
            self.data_len = base;
            self.ends_len = ends_before;
            self.starts.truncate(starts_before);
            let loc = self.location(rec_offset, self.records, None);
            let row = DirtyRow::row(loc, format!("expected {ncols} fields, found {nfields}"))
                .with_values(values);
            self.malformed.push((self.rows.len(), row));
        } else {
            self.rows.push((rec_offset, self.records));
        }
        Ok(Some(true))
    }

    fn fill(&mut self) -> Result<()> {
        let ncols = self.schema.fields().len();
        self.data_len = 0;
        self.ends_len = 1;
        self.starts.clear();
        self.unseparated.clear();
        self.rows.clear();
        self.malformed.clear();
        let (mut rec_data, mut rec_ends) = (0usize, 1usize);
        while self.rows.len() < self.batch_rows && !self.done {
            if !self.core_active {
                self.cut.poll(self.offset, &mut self.buf, self.pos);
            }
            if self.pos >= self.buf.len() && !self.eof {
                if self.cut.reached(self.offset) {
                    self.eof = true;
                    continue;
                }
                match self.chunks.next_chunk()? {
                    Some(mut b) => {
                        self.cut.cap(self.offset, &mut b);
                        // A carriage return anywhere but before a newline
                        // ends a record for csv-core; such chunks skip the
                        // fused scan below.
                        self.fused = self.dialect.comment.is_none()
                            && memchr::memchr_iter(b'\r', &b).all(|i| b.get(i + 1) == Some(&b'\n'));
                        // The first chunk of a zstd file still holds the header.
                        self.pos = (std::mem::take(&mut self.skip) as usize).min(b.len());
                        self.buf = b;
                    }
                    None => self.eof = true,
                }
                continue;
            }
            // Fused fast path: one scan for delimiters, newlines and quotes
            // splits a plain record; a quote sends it to csv-core instead.
            if self.fused && !self.core_active && !self.eof {
                if let Some(done) = self.fused_record(ncols)? {
                    if done {
                        rec_data = self.data_len;
                        rec_ends = self.ends_len;
                    }
                    continue;
                }
            }
            // Fast path: a whole line in the buffer with no quote and no
            // stray carriage return is split on the delimiter directly.
            // Everything else (quoted fields, comments, a record cut by the
            // end of a chunk) goes through csv-core.
            if !self.core_active && !self.eof {
                let rest = &self.buf[self.pos..];
                if let Some(nl) = memchr::memchr(b'\n', rest) {
                    let mut line = &rest[..nl];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    let plain = memchr::memchr2(self.dialect.quote, b'\r', line).is_none()
                        && !(self.dialect.comment.is_some()
                            && line.first() == self.dialect.comment.as_ref());
                    if plain {
                        let rec_offset = self.offset;
                        self.pos += nl + 1;
                        self.offset += nl as u64 + 1;
                        self.rec_start = self.offset;
                        if line.is_empty() {
                            continue; // blank lines are skipped, as csv-core does
                        }
                        self.records += 1;
                        let line = &self.buf[self.pos - nl - 1..self.pos - nl - 1 + line.len()];
                        let base = self.data_len;
                        if base + line.len() > self.data.len() {
                            let n = (self.data.len() * 2).max(base + line.len());
                            self.data.resize(n, 0);
                        }
                        self.data[base..base + line.len()].copy_from_slice(line);
                        self.data_len += line.len();
                        if self.ends_len + line.len() + 2 > self.ends.len() {
                            let n = (self.ends.len() * 2).max(self.ends_len + line.len() + 2);
                            self.ends.resize(n, 0);
                        }
                        let (starts_before, ends_before) = (self.starts.len(), self.ends_len);
                        let mut start = base;
                        for p in memchr::memchr_iter(self.dialect.delimiter, line) {
                            self.starts.push(start);
                            self.ends[self.ends_len] = base + p;
                            self.ends_len += 1;
                            start = base + p + 1;
                        }
                        self.starts.push(start);
                        self.ends[self.ends_len] = base + line.len();
                        self.ends_len += 1;
                        let nfields = self.ends_len - ends_before;
                        if nfields != ncols {
                            let values = line
                                .split(|&b| b == self.dialect.delimiter)
                                .map(|f| String::from_utf8_lossy(f).into_owned())
                                .collect();
                            self.data_len = base;
                            self.ends_len = ends_before;
                            self.starts.truncate(starts_before);
                            let loc = self.location(rec_offset, self.records, None);
                            let row = DirtyRow::row(
                                loc,
                                format!("expected {ncols} fields, found {nfields}"),
                            )
                            .with_values(values);
                            self.malformed.push((self.rows.len(), row));
                        } else {
                            self.rows.push((rec_offset, self.records));
                            self.unseparated.push(starts_before..self.starts.len());
                        }
                        rec_data = self.data_len;
                        rec_ends = self.ends_len;
                        continue;
                    }
                }
            }
            let input = if self.eof {
                &[][..]
            } else {
                &self.buf[self.pos..]
            };
            let (res, nin, nout, nend) = self.rdr.read_record(
                input,
                &mut self.data[self.data_len..],
                &mut self.ends[self.ends_len..],
            );
            self.pos += nin;
            self.offset += nin as u64;
            self.data_len += nout;
            self.ends_len += nend;
            self.core_active = true;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let n = self.data.len() * 2;
                    self.data.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => {
                    self.core_active = false;
                    let rec_offset = self.rec_start;
                    self.rec_start = self.offset;
                    self.records += 1;
                    let nfields = self.ends_len - rec_ends;
                    if nfields != ncols {
                        let values = self.field_values(rec_ends..self.ends_len, rec_data);
                        self.data_len = rec_data;
                        self.ends_len = rec_ends;
                        let loc = self.location(rec_offset, self.records, None);
                        let row =
                            DirtyRow::row(loc, format!("expected {ncols} fields, found {nfields}"))
                                .with_values(values);
                        // Reported in file order together with the batch's type errors.
                        self.malformed.push((self.rows.len(), row));
                        continue;
                    }
                    // csv-core writes field ends relative to the record, fields back to back.
                    let mut start = rec_data;
                    let first = self.starts.len();
                    for e in &mut self.ends[rec_ends..self.ends_len] {
                        *e += rec_data;
                        self.starts.push(start);
                        start = *e;
                    }
                    self.unseparated.push(first..self.starts.len());
                    rec_data = self.data_len;
                    rec_ends = self.ends_len;
                    self.rows.push((rec_offset, self.records));
                }
                ReadRecordResult::End => {
                    self.core_active = false;
                    self.done = true;
                }
            }
        }
        Ok(())
    }

    /// Converts the tokenized batch into typed columns; rows with a value
    /// that does not parse are rejected and filtered out.
    fn convert(&self, rejects: &mut Rejects) -> Result<RecordBatch> {
        let ncols = self.schema.fields().len();
        let nrows = self.rows.len();
        let data = &self.data[..self.data_len];
        let bounds = &self.ends[..self.ends_len];
        // Fast path: one validation of the whole buffer. That makes every
        // field valid UTF-8 when its start and end are character
        // boundaries: true of fields split in place, which lie between
        // ASCII delimiters, quotes or terminators (all ASCII), and checked
        // here for the others, whose fields are back to back.
        let starts = &self.starts[..];
        let text = simdutf8::basic::from_utf8(data).ok().filter(|t| {
            self.unseparated.iter().all(|r| {
                r.clone()
                    .all(|i| t.is_char_boundary(starts[i]) && t.is_char_boundary(bounds[i + 1]))
            })
        });
        if let Some(t) = text {
            debug_assert!(
                (0..starts.len())
                    .all(|i| t.is_char_boundary(starts[i]) && t.is_char_boundary(bounds[i + 1])),
                "a field split in place does not lie between ASCII bytes"
            );
        }
        let mut bad: Vec<(usize, usize, String)> = Vec::new();
        let only_empty_null = self.nulls.len() == 1 && self.nulls[0].is_empty();
        let field = |r: usize, c: usize| -> &[u8] {
            let k = r * ncols + c;
            &data[starts[k]..bounds[k + 1]]
        };
        let is_null = |f: &[u8]| {
            if only_empty_null {
                f.is_empty()
            } else {
                self.nulls.iter().any(|n| n.as_slice() == f)
            }
        };
        let as_str = |s: usize, e: usize| -> Result<&str, String> {
            match text {
                // SAFETY: `t` is valid UTF-8 and every field start and end
                // lies on a char boundary of it (see `text` above).
                Some(t) => Ok(unsafe { t.get_unchecked(s..e) }),
                None => {
                    std::str::from_utf8(&data[s..e]).map_err(|e| format!("invalid UTF-8 ({e})"))
                }
            }
        };
        // Start and end of column `c`'s field in each row, in row order: a
        // strided walk, without an index computation and check per field.
        let spans = |c: usize| {
            starts
                .get(c..)
                .unwrap_or_default()
                .iter()
                .step_by(ncols)
                .zip(
                    bounds
                        .get(c + 1..)
                        .unwrap_or_default()
                        .iter()
                        .step_by(ncols),
                )
                .map(|(&s, &e)| (s, e))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(ncols);
        for (c, f) in self.schema.fields().iter().enumerate() {
            let mut fail = |r: usize, msg: String| bad.push((r, c, msg));
            macro_rules! num {
                ($t:ty, $what:expr) => {
                    num!($t, $what, |_| None)
                };
                ($t:ty, $what:expr, $fast:expr) => {
                    prim::<$t>(
                        nrows,
                        spans(c),
                        data,
                        &as_str,
                        &is_null,
                        &mut fail,
                        $what,
                        $fast,
                    )
                };
            }
            let arr: ArrayRef = match f.data_type() {
                DataType::Utf8 if text.is_some() => {
                    // Every field is known to be valid UTF-8: build the
                    // array's buffers directly instead of value by value.
                    let bytes: usize = spans(c).map(|(s, e)| e - s).sum();
                    let mut values: Vec<u8> = Vec::with_capacity(bytes);
                    let mut offsets: Vec<i32> = Vec::with_capacity(nrows + 1);
                    let mut nulls = arrow::array::NullBufferBuilder::new(nrows);
                    offsets.push(0);
                    for (s, e) in spans(c) {
                        let f = &data[s..e];
                        if is_null(f) {
                            nulls.append_null();
                        } else {
                            values.extend_from_slice(f);
                            nulls.append_non_null();
                        }
                        offsets.push(values.len() as i32);
                    }
                    if values.len() > i32::MAX as usize {
                        return Err(Error::Internal(
                            "a batch's string column exceeds 2 GiB; lower batch_rows".into(),
                        ));
                    }
                    // SAFETY: offsets start at 0 and never decrease; every
                    // field is a char-boundary slice of `text`, checked valid
                    // UTF-8 above, so the values are valid UTF-8 at every offset.
                    let arr = unsafe {
                        StringArray::new_unchecked(
                            arrow::buffer::OffsetBuffer::new_unchecked(offsets.into()),
                            values.into(),
                            nulls.finish(),
                        )
                    };
                    Arc::new(arr)
                }
                DataType::Utf8 => {
                    let bytes: usize = spans(c).map(|(s, e)| e - s).sum();
                    let mut b = StringBuilder::with_capacity(nrows, bytes);
                    for (r, (s, e)) in spans(c).enumerate() {
                        if is_null(&data[s..e]) {
                            b.append_null();
                            continue;
                        }
                        match as_str(s, e) {
                            Ok(s) => b.append_value(s),
                            Err(e) => {
                                b.append_null();
                                fail(r, e);
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
                DataType::Boolean => {
                    let mut b = BooleanBuilder::with_capacity(nrows);
                    for (r, (s, e)) in spans(c).enumerate() {
                        if is_null(&data[s..e]) {
                            b.append_null();
                            continue;
                        }
                        match as_str(s, e).ok().and_then(parse_bool) {
                            Some(v) => b.append_value(v),
                            None => {
                                b.append_null();
                                fail(
                                    r,
                                    format!(
                                        "{:?} is not a boolean",
                                        String::from_utf8_lossy(&data[s..e])
                                    ),
                                );
                            }
                        }
                    }
                    Arc::new(b.finish())
                }
                DataType::Int8 => num!(Int8Type, "int8"),
                DataType::Int16 => num!(Int16Type, "int16"),
                DataType::Int32 => num!(Int32Type, "int32"),
                // Plain digits take a direct loop; anything else (a sign
                // other than `-`, 19 digits or more) arrow's parser.
                DataType::Int64 => num!(Int64Type, "int64", fast_int64),
                DataType::UInt8 => num!(UInt8Type, "uint8"),
                DataType::UInt16 => num!(UInt16Type, "uint16"),
                DataType::UInt32 => num!(UInt32Type, "uint32"),
                DataType::UInt64 => num!(UInt64Type, "uint64"),
                DataType::Float32 => num!(Float32Type, "float32"),
                DataType::Float64 => num!(Float64Type, "float64"),
                DataType::Date32 => num!(Date32Type, "date (YYYY-MM-DD)"),
                DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                    let mut b = PrimitiveBuilder::<TimestampMicrosecondType>::with_capacity(nrows);
                    for (r, (s, e)) in spans(c).enumerate() {
                        if is_null(&data[s..e]) {
                            b.append_null();
                            continue;
                        }
                        match as_str(s, e).ok().and_then(timestamp_micros) {
                            Some(v) => b.append_value(v),
                            None => {
                                b.append_null();
                                fail(
                                    r,
                                    format!(
                                        "{:?} is not a timestamp",
                                        String::from_utf8_lossy(&data[s..e])
                                    ),
                                );
                            }
                        }
                    }
                    Arc::new(b.finish().with_timezone_opt(tz.clone()))
                }
                DataType::Decimal128(p, s) => {
                    let (p, s) = (*p, *s);
                    let mut b = Decimal128Builder::with_capacity(nrows);
                    for (r, (start, end)) in spans(c).enumerate() {
                        if is_null(&data[start..end]) {
                            b.append_null();
                            continue;
                        }
                        match as_str(start, end).and_then(|v| decimal(v, p, s)) {
                            Ok(v) => b.append_value(v),
                            Err(e) => {
                                b.append_null();
                                fail(r, e);
                            }
                        }
                    }
                    Arc::new(
                        b.finish()
                            .with_precision_and_scale(p, s)
                            .map_err(|e| Error::Internal(e.to_string()))?,
                    )
                }
                other => {
                    return Err(Error::Config(format!(
                        "csv source: column `{}` has unsupported type {other}",
                        f.name()
                    )))
                }
            };
            columns.push(arr);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(e.to_string()))?;
        if bad.is_empty() && self.malformed.is_empty() {
            return Ok(batch);
        }
        bad.sort_by_key(|(r, c, _)| (*r, *c));
        bad.dedup_by_key(|(r, _, _)| *r);
        let mut keep = vec![true; nrows];
        // Every rejected row in file order: (good rows before it, tie-break, row).
        let mut all: Vec<(usize, usize, DirtyRow)> = Vec::new();
        for (r, c, msg) in bad {
            keep[r] = false;
            let (off, rec) = self.rows[r];
            let values = (0..ncols)
                .map(|k| String::from_utf8_lossy(field(r, k)).into_owned())
                .collect();
            let col = self.schema.field(c).name().clone();
            all.push((
                r,
                1,
                DirtyRow::row(self.location(off, rec, Some(col)), msg).with_values(values),
            ));
        }
        for (before, row) in &self.malformed {
            all.push((*before, 0, row.clone()));
        }
        all.sort_by_key(|(r, t, _)| (*r, *t));
        for (_, _, row) in all {
            rejects.reject(row)?;
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch);
        }
        arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

/// Microseconds since the epoch (UTC) of a timestamp string. The common
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` form (or with `T`) is parsed directly;
/// anything else (offsets, `Z`, other layouts) goes through arrow's parser.
fn timestamp_micros(s: &str) -> Option<i64> {
    fast_timestamp(s.as_bytes()).or_else(|| {
        string_to_datetime(&chrono::Utc, s)
            .ok()
            .map(|dt| dt.timestamp_micros())
    })
}

fn fast_timestamp(b: &[u8]) -> Option<i64> {
    let (head, _) = b.split_first_chunk::<19>()?;
    if !(head[10] == b' ' || head[10] == b'T')
        || head[4] != b'-'
        || head[7] != b'-'
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    // Every other place holds a digit: check them all at once, without
    // a branch per digit.
    let mut digit = [0i64; 19];
    let mut bad = false;
    for i in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] {
        let v = head[i].wrapping_sub(b'0');
        bad |= v > 9;
        digit[i] = i64::from(v);
    }
    if bad {
        return None;
    }
    let two = |i: usize| digit[i] * 10 + digit[i + 1];
    let (y, mo, d, h, mi, sec) = (
        two(0) * 100 + two(2),
        two(5),
        two(8),
        two(11),
        two(14),
        two(17),
    );
    let mut micros = 0i64;
    if b.len() > 19 {
        // Only a fraction may follow; offsets and zones take the slow path.
        let frac = &b[20..];
        if b[19] != b'.'
            || frac.is_empty()
            || frac.len() > 6
            || !frac.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let f = frac
            .iter()
            .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'));
        micros = f * 10i64.pow(6 - frac.len() as u32);
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > dim[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after H. Hinnant.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000) + micros)
}

/// `[-]digits` with 1 to 18 digits (which cannot overflow an i64), or
/// `None` for anything else.
fn fast_int64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
    }
    Some(if neg { -v } else { v })
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// `[-]digits[.digits]` with at most 18 digits in all, scaled to `s`, or
/// `None` for anything else (which takes arrow's general parser).
fn fast_decimal(b: &[u8], p: u8, s: i8) -> Option<i128> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let (int, frac) = match memchr::memchr(b'.', digits) {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &b""[..]),
    };
    if int.is_empty() || int.len() + frac.len() > 18 || frac.len() > s as usize {
        return None;
    }
    let mut v: u64 = 0;
    for &c in int.iter().chain(frac) {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    let significant = int.iter().skip_while(|&&c| c == b'0').count();
    if significant + s as usize > p as usize {
        return None; // let the general parser produce the overflow error
    }
    let v = i128::from(v) * 10i128.pow((s as usize - frac.len()) as u32);
    Some(if neg { -v } else { v })
}

fn decimal(v: &str, p: u8, s: i8) -> Result<i128, String> {
    if let Some(x) = fast_decimal(v.as_bytes(), p, s) {
        return Ok(x);
    }
    let t = v.trim();
    let frac = t.split_once('.').map_or(0, |(_, f)| f.len());
    if frac > s as usize {
        return Err(format!(
            "{v:?} has {frac} decimal places; the column is decimal({p},{s})"
        ));
    }
    parse_decimal::<Decimal128Type>(t, p, s).map_err(|_| format!("{v:?} is not a decimal({p},{s})"))
}

/// One primitive column of the batch: `fast` parses the common form of a
/// value from its bytes, arrow's parser takes whatever it returns `None` for.
#[allow(clippy::too_many_arguments)]
fn prim<'a, T: ArrowPrimitiveType + Parser>(
    nrows: usize,
    spans: impl Iterator<Item = (usize, usize)>,
    data: &'a [u8],
    as_str: &impl Fn(usize, usize) -> Result<&'a str, String>,
    is_null: &impl Fn(&[u8]) -> bool,
    fail: &mut impl FnMut(usize, String),
    what: &str,
    fast: impl Fn(&[u8]) -> Option<T::Native>,
) -> ArrayRef {
    let mut b = PrimitiveBuilder::<T>::with_capacity(nrows);
    for (r, (s, e)) in spans.enumerate() {
        let f = &data[s..e];
        if is_null(f) {
            b.append_null();
            continue;
        }
        match fast(f).or_else(|| as_str(s, e).ok().and_then(T::parse)) {
            Some(v) => b.append_value(v),
            None => {
                b.append_null();
                fail(
                    r,
                    format!("{:?} is not a valid {what}", String::from_utf8_lossy(f)),
                );
            }
        }
    }
    Arc::new(b.finish())
}

impl SourceReader for CsvReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        loop {
            if self.done {
                self.cut.finish();
                return Ok(None);
            }
            self.fill()?;
            if !self.core_active {
                self.cut.publish(self.offset);
            }
            if self.rows.is_empty() {
                for (_, row) in std::mem::take(&mut self.malformed) {
                    rejects.reject(row)?;
                }
                if self.done {
                    return Ok(None);
                }
                continue;
            }
            return self.convert(rejects).map(Some);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn types(rows: &[&[&str]]) -> Vec<DataType> {
        let recs: Vec<Vec<Vec<u8>>> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.as_bytes().to_vec()).collect())
            .collect();
        infer_types(&recs, rows[0].len(), &[vec![]])
    }

    #[test]
    fn inference_keeps_codes_as_strings() {
        let t = types(&[
            &[
                "1",
                "13812345678",
                "110101199003071234",
                "01000",
                "11010119900307123X",
                "12.50",
                "2024-01-02 03:04:05",
                "2024-01-02",
                "true",
            ],
            &[
                "2",
                "13912345678",
                "110101199003071235",
                "10000",
                "110101199003071234",
                "7",
                "2024-01-02 03:04:06",
                "2024-01-03",
                "false",
            ],
        ]);
        assert_eq!(
            t,
            vec![
                DataType::Int64,
                DataType::Int64,
                DataType::Utf8,
                DataType::Utf8,
                DataType::Utf8,
                DataType::Decimal128(18, 2),
                DataType::Timestamp(TimeUnit::Microsecond, None),
                DataType::Date32,
                DataType::Boolean,
            ]
        );
    }

    #[test]
    fn inference_floats_and_tz() {
        let t = types(&[
            &["1e5", "2024-01-02T03:04:05Z", ""],
            &["NaN", "2024-01-02T03:04:05+08:00", ""],
        ]);
        assert_eq!(
            t,
            vec![
                DataType::Float64,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                DataType::Utf8
            ]
        );
    }

    #[test]
    fn fast_timestamps_agree_with_arrow() {
        let cases = [
            "1970-01-01 00:00:00",
            "2024-02-29 23:59:59",
            "1900-03-01T00:00:00.5",
            "1969-12-31 23:59:59.999999",
            "0001-01-01 00:00:00",
            "9999-12-31 23:59:59.123",
            "2023-06-15 12:34:56.000001",
        ];
        for c in cases {
            let slow = string_to_datetime(&chrono::Utc, c)
                .unwrap()
                .timestamp_micros();
            assert_eq!(fast_timestamp(c.as_bytes()), Some(slow), "{c}");
        }
        for bad in [
            "2023-02-29 00:00:00",
            "2024-13-01 00:00:00",
            "2024-01-01 24:00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01 00:00:00+08:00",
        ] {
            assert_eq!(fast_timestamp(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            timestamp_micros("2024-01-01 08:00:00+08:00"),
            timestamp_micros("2024-01-01 00:00:00")
        );
        assert_eq!(timestamp_micros("2024-13-01 00:00:00"), None);
    }

    #[test]
    fn fast_int64_agrees_with_arrow() {
        for s in [
            "0",
            "-0",
            "7",
            "007",
            "-42",
            "18295310485",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "+5",
            "",
            "-",
            "1.5",
            "12a",
            " 1",
        ] {
            let fast = fast_int64(s.as_bytes());
            if let Some(v) = fast {
                assert_eq!(Some(v), Int64Type::parse(s), "{s:?}");
            } else {
                // Not taken by the fast path: arrow's parser decides.
                assert!(
                    s.len() >= 19 || !s.bytes().all(|c| c.is_ascii_digit()) || s.is_empty(),
                    "{s:?} should have taken the fast path"
                );
            }
        }
        assert_eq!(fast_int64(b"18295310485"), Some(18_295_310_485));
        assert_eq!(fast_int64(b"-42"), Some(-42));
        assert_eq!(fast_int64(b"1000000000000000000"), None);
    }

    #[test]
    fn fast_decimals_agree_with_arrow() {
        for (v, p, s) in [
            ("12.5", 18, 2),
            ("-0.01", 10, 2),
            ("0", 5, 0),
            ("123456789012345678", 38, 0),
            ("99999999.99", 10, 2),
            ("007.10", 6, 3),
        ] {
            let slow = parse_decimal::<Decimal128Type>(v, p, s).unwrap();
            assert_eq!(fast_decimal(v.as_bytes(), p, s), Some(slow), "{v}");
        }
        for v in [
            "1e5",
            "+1.0",
            " 1.0",
            ".5",
            "--1",
            "1.2.3",
            "12345678901234567890",
        ] {
            assert_eq!(fast_decimal(v.as_bytes(), 38, 2), None, "{v}");
        }
        assert_eq!(
            fast_decimal(b"123.45", 4, 2),
            None,
            "overflow goes to the general parser"
        );
        assert!(decimal("123.45", 4, 2).is_err());
    }

    #[test]
    fn split_simple_agrees_with_csv_core() {
        // Random records over the bytes that matter to the tokenizer; each
        // one that split_simple takes must come out as csv-core reads it.
        let dialects = [
            Dialect {
                delimiter: b',',
                quote: b'"',
                escape: None,
                comment: None,
            },
            Dialect {
                delimiter: b';',
                quote: b'\'',
                escape: Some(b'\\'),
                comment: None,
            },
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for d in &dialects {
            let (mut taken, mut quoted, mut undoubled) = (0, 0, 0);
            for _ in 0..20_000 {
                let mut rec = Vec::new();
                let (delim, quote, pair) = ([d.delimiter], [d.quote], [d.quote; 2]);
                for _ in 0..next(40) {
                    rec.extend_from_slice(match next(12) {
                        0 => &delim[..],
                        1 => &quote[..],
                        8 => &pair[..],
                        2 => b"\n",
                        3 => b"\r\n",
                        4 => b"\\",
                        5 => "中".as_bytes(),
                        6 => b",",
                        7 => b"a longer run of text",
                        _ => b"ab",
                    });
                }
                rec.extend_from_slice(if next(2) == 0 { b"\n" } else { b"\r\n" });
                rec.extend_from_slice(b"x,y\n");
                let mut fields = Vec::new();
                let Some((consumed, len)) = split_simple(&rec, d, |s, e, doubled| {
                    let mut v = rec[s..e].to_vec();
                    if doubled {
                        undoubled += 1;
                        let pair = [d.quote; 2];
                        let mut out = Vec::new();
                        let mut i = 0;
                        while i < v.len() {
                            out.push(v[i]);
                            i += if v[i..].starts_with(&pair) { 2 } else { 1 };
                        }
                        v = out;
                    }
                    fields.push(v)
                }) else {
                    continue;
                };
                let ((records, _), rest) = (parse_records(d, &rec, true, 1), &rec[consumed..]);
                if len == 0 {
                    assert!(matches!(&rec[..consumed], b"\n" | b"\r\n"), "{rec:?}");
                    continue;
                }
                assert_eq!(records[0], fields, "{:?}", String::from_utf8_lossy(&rec));
                // The rest starts at the next record: csv-core reads the same from there.
                assert_eq!(
                    parse_records(d, rest, true, usize::MAX).0,
                    parse_records(d, &rec, true, usize::MAX).0[1..],
                    "{rec:?}"
                );
                taken += 1;
                quoted += usize::from(rec[..len].contains(&d.quote));
            }
            assert!(taken > 5_000 && quoted > 1_000, "{taken} {quoted}");
            // Doubled quotes are undoubled in place only without an escape.
            assert_eq!(undoubled > 100, d.escape.is_none(), "{undoubled}");
        }
    }

    #[test]
    fn quote_context_tells_whether_a_cut_is_inside_a_field() {
        let d = Dialect {
            delimiter: b',',
            quote: b'"',
            escape: None,
            comment: None,
        };
        // Cut right after a newline inside "line one\nline two": the next quote closes.
        assert_eq!(
            quoted_at_start(&d, b"line two, x\",7\n8,\"a\"\n"),
            Some(true)
        );
        // Cut at a record start: the next quote opens a field.
        assert_eq!(quoted_at_start(&d, b"8,\"a, b\",9\n"), Some(false));
        // Doubled quotes inside a field are paired before the telling one.
        assert_eq!(
            quoted_at_start(&d, b"7,\"say \"\"hi\"\"\",9\n"),
            Some(false)
        );
        assert_eq!(quoted_at_start(&d, b"plain,text\n"), None);
    }

    #[test]
    fn decimal_refuses_to_round() {
        assert_eq!(
            decimal("12.345", 18, 2).unwrap_err(),
            "\"12.345\" has 3 decimal places; the column is decimal(18,2)"
        );
        assert_eq!(decimal("-12.3", 18, 2).unwrap(), -1230);
    }
}
