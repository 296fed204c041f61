//! `[source] type = "blobs"`: every file under a URL (a directory, a glob,
//! one file; local, `memory://` or `s3://`), of any type and size, as rows
//! of chunks. Files are sorted by path and grouped into partitions of about
//! `partition_size` bytes (a larger file is a partition of its own); a
//! reader holds one chunk of one file at a time, so a 5 GB file streams in
//! bounded memory.

use super::schema;
use crate::files::io::ChunkStream;
use crate::files::location::Location;
use arrow::array::{
    ArrayRef, LargeBinaryArray, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use tidex_engine::dirty::Rejects;
use tidex_engine::error::Location as RowLocation;
use tidex_engine::spec::ByteSize;
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError,
};

/// `[source] type = "blobs"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSourceConfig {
    /// Always `"blobs"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A directory (`docs/`, `s3://bucket/prefix/`), a glob
    /// (`scans/**/*.pdf`) or one file. Every file under a directory is
    /// taken, hidden ones too, except tidex's own manifest and staging
    /// directories.
    pub url: String,
    /// Bytes per row (default `"1MiB"`, 4KiB to 64MiB).
    #[serde(default)]
    pub chunk_size: Option<ByteSize>,
    /// Bytes of files per partition (default `"64MiB"`); a larger file is
    /// a partition of its own.
    #[serde(default)]
    pub partition_size: Option<ByteSize>,
}

impl BlobSourceConfig {
    fn check(&self, cfg: &ConnectorConfig) -> Result<(usize, u64), SpecError> {
        let chunk = self.chunk_size.map_or(1 << 20, |b| b.0);
        if !(4 << 10..=64 << 20).contains(&chunk) {
            return Err(cfg.error("chunk_size", "expected 4KiB to 64MiB"));
        }
        let part = self.partition_size.map_or(64 << 20, |b| b.0);
        if part == 0 {
            return Err(cfg.error("partition_size", "must be at least 1 byte"));
        }
        Ok((chunk as usize, part))
    }
}

/// Registers `type = "blobs"` sources.
pub struct BlobSourceFactory;

impl SourceFactory for BlobSourceFactory {
    fn kind(&self) -> &'static str {
        "blobs"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: BlobSourceConfig = cfg.parse()?;
        c.check(cfg).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: BlobSourceConfig = cfg.parse()?;
        let (chunk, part_size) = c.check(cfg)?;
        let loc = Location::parse(&c.url)?;
        let files = list(&loc, &ctx.io)?;
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (i, f) in files.iter().enumerate() {
            if i > start && (bytes + f.size > part_size || i - start >= 10_000) {
                groups.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += f.size;
        }
        if start < files.len() {
            groups.push(start..files.len());
        }
        let parts = groups
            .iter()
            .enumerate()
            .map(|(index, g)| {
                let fs = &files[g.clone()];
                PartitionInfo {
                    index,
                    label: match fs {
                        [one] => format!("blobs:{}", one.rel),
                        _ => format!(
                            "blobs:{}..{} ({} files)",
                            fs[0].rel,
                            fs[fs.len() - 1].rel,
                            fs.len()
                        ),
                    },
                    bytes: fs.iter().map(|f| f.size).sum(),
                }
            })
            .collect();
        Ok(Arc::new(BlobSource {
            loc,
            files: Arc::new(files),
            groups,
            parts,
            chunk,
            batch_rows: ctx.batch_rows.max(1),
            io: ctx.io.clone(),
        }))
    }
}

/// One listed file.
#[derive(Debug, Clone)]
pub(crate) struct BlobFile {
    /// Path relative to the URL's base, `/`-separated.
    pub(crate) rel: String,
    pub(crate) path: object_store::path::Path,
    /// Filesystem path, for local files.
    pub(crate) fs: Option<PathBuf>,
    pub(crate) size: u64,
    modified: Option<i64>,
    pub(crate) display: String,
}

/// Whether a relative path is tidex's own bookkeeping: the manifest and
/// index at the root, staging directories (`.NAME.tidex`).
fn is_ours(rel: &str) -> bool {
    rel == super::MANIFEST
        || rel == super::INDEX
        || rel.split('/').any(|c| {
            (c.starts_with('.') && c.ends_with(".tidex")) || c == ".tidex-staging" || c == ".tidex"
        })
}

/// The files a URL names, sorted by relative path, without tidex's own
/// bookkeeping files.
pub(crate) fn list(loc: &Location, io: &tokio::runtime::Handle) -> Result<Vec<BlobFile>> {
    let mut files = Vec::new();
    if let Some(root) = &loc.local {
        if !loc.is_dir() {
            let meta =
                std::fs::metadata(root).map_err(|e| Error::Config(format!("{}: {e}", loc.url)))?;
            let name = root
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Config(format!("{}: not a file name", loc.url)))?;
            files.push(local_file(name.to_string(), root.clone(), &meta));
        } else {
            walk(root, "", &mut files)?;
        }
    } else if loc.is_dir() {
        let base = loc.path.parts().count();
        for meta in loc.list_under(io, &loc.path)? {
            // object_store percent-encodes non-ASCII and reserved bytes of
            // the names it writes; blob paths are the names themselves.
            let rel = meta
                .location
                .parts()
                .skip(base)
                .map(|p| decoded(p.as_ref()))
                .collect::<Vec<_>>()
                .join("/");
            files.push(BlobFile {
                display: loc.display(&meta.location),
                rel,
                path: meta.location,
                fs: None,
                size: meta.size,
                modified: Some(meta.last_modified.timestamp_micros()),
            });
        }
    } else {
        let store = loc.store.clone();
        let p = loc.path.clone();
        let meta = io
            .block_on(async move { object_store::ObjectStoreExt::head(&store, &p).await })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    Error::Config(format!("{}: no such file", loc.url))
                }
                e => Error::io(format!("reading {}", loc.url), e),
            })?;
        files.push(BlobFile {
            display: loc.display(&meta.location),
            rel: decoded(meta.location.filename().unwrap_or("blob")),
            path: meta.location,
            fs: None,
            size: meta.size,
            modified: Some(meta.last_modified.timestamp_micros()),
        });
    }
    files.retain(|f| !is_ours(&f.rel) && loc.glob.as_ref().is_none_or(|g| g.is_match(&f.rel)));
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    if files.is_empty() {
        return Err(Error::Config(format!("{}: no files found", loc.url)));
    }
    Ok(files)
}

/// A store path part as the name it stands for; a part that does not
/// decode to UTF-8 stays as it is rather than be altered.
fn decoded(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map_or_else(|_| part.to_string(), |c| c.into_owned())
}

fn local_file(rel: String, fs: PathBuf, meta: &std::fs::Metadata) -> BlobFile {
    BlobFile {
        display: fs.display().to_string(),
        path: object_store::path::Path::from(rel.as_str()),
        modified: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as i64),
        size: meta.len(),
        fs: Some(fs),
        rel,
    }
}

/// Lists a local tree. Symbolic links to files are followed; links to
/// directories are not (they could loop), and neither they nor sockets or
/// pipes are silently dropped: each is logged as skipped.
fn walk(dir: &std::path::Path, rel: &str, out: &mut Vec<BlobFile>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name().into_string().map_err(|n| {
            Error::Config(format!(
                "{}: the file name {:?} is not UTF-8, which blob paths must be",
                dir.display(),
                n
            ))
        })?;
        let path = entry.path();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if ft.is_dir() {
            if !is_ours(&child) {
                walk(&path, &child, out)?;
            }
            continue;
        }
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if meta.is_file() {
            out.push(local_file(child, path, &meta));
        } else {
            tracing::warn!(path = %path.display(), "skipped: not a regular file (a link to a directory, a socket or a pipe)");
        }
    }
    Ok(())
}

/// The blob source.
pub struct BlobSource {
    loc: Location,
    files: Arc<Vec<BlobFile>>,
    groups: Vec<std::ops::Range<usize>>,
    parts: Vec<PartitionInfo>,
    chunk: usize,
    batch_rows: usize,
    io: tokio::runtime::Handle,
}

impl Source for BlobSource {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.parts
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let range = self
            .groups
            .get(partition)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no partition {partition}")))?;
        Ok(Box::new(BlobReader {
            files: self.files.clone(),
            next: range.start,
            end: range.end,
            cur: None,
            chunk: self.chunk,
            batch_rows: self.batch_rows,
            bytes: 0,
            loc: self.loc.clone(),
            io: self.io.clone(),
        }))
    }

    fn describe(&self) -> String {
        format!("{} ({} files, blobs)", self.loc.url, self.files.len())
    }
}

enum Input {
    Local(std::fs::File),
    Remote(ChunkStream),
    Empty,
}

struct Current {
    file: usize,
    off: u64,
    hasher: blake3::Hasher,
    input: Input,
}

struct BlobReader {
    files: Arc<Vec<BlobFile>>,
    next: usize,
    end: usize,
    cur: Option<Current>,
    chunk: usize,
    batch_rows: usize,
    bytes: u64,
    loc: Location,
    io: tokio::runtime::Handle,
}

impl BlobReader {
    fn start(&mut self, i: usize) -> Result<Current> {
        let f = &self.files[i];
        let input = if f.size == 0 {
            Input::Empty
        } else if let Some(p) = &f.fs {
            Input::Local(
                std::fs::File::open(p)
                    .map_err(|e| Error::io(format!("opening {}", f.display), e))?,
            )
        } else {
            Input::Remote(ChunkStream::spawn(
                &self.io,
                self.loc.store.clone(),
                f.path.clone(),
                f.display.clone(),
                0..f.size,
                self.chunk as u64,
            ))
        };
        Ok(Current {
            file: i,
            off: 0,
            hasher: blake3::Hasher::new(),
            input,
        })
    }

    /// Appends the next chunk of the current file to `values`; returns its
    /// length. Chunks go straight into the batch's value buffer: no copy
    /// between the file and the Arrow array.
    fn read_chunk(&mut self, values: &mut Vec<u8>) -> Result<usize> {
        let cur = self.cur.as_mut().expect("a file is open");
        let f = &self.files[cur.file];
        let len = (f.size - cur.off).min(self.chunk as u64) as usize;
        let short = || {
            Error::bad_data(
                RowLocation {
                    file: f.display.clone(),
                    byte_offset: Some(cur.off),
                    ..Default::default()
                },
                format!(
                    "the file is shorter than the {} bytes it had when listed (changed while being read)",
                    f.size
                ),
            )
        };
        let start = values.len();
        match &mut cur.input {
            Input::Empty => {}
            Input::Local(file) => {
                (&mut *file)
                    .take(len as u64)
                    .read_to_end(values)
                    .map_err(|e| Error::io(format!("reading {}", f.display), e))?;
            }
            Input::Remote(stream) => match stream.next_chunk()? {
                Some(b) if b.len() == len => values.extend_from_slice(&b),
                _ => return Err(short()),
            },
        }
        if values.len() - start < len {
            return Err(short());
        }
        Ok(len)
    }
}

impl SourceReader for BlobReader {
    fn next_batch(&mut self, _rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        let cap = (4usize << 20).max(self.chunk);
        let mut path = StringBuilder::new();
        let mut offset = UInt64Builder::new();
        let mut size = UInt64Builder::new();
        let mut modified = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut hash = StringBuilder::new();
        let mut values: Vec<u8> = Vec::with_capacity(cap + self.chunk);
        let mut offsets: Vec<i64> = vec![0];
        let mut rows = 0usize;
        while rows < self.batch_rows && values.len() < cap {
            if self.cur.is_none() {
                if self.next >= self.end {
                    break;
                }
                let c = self.start(self.next)?;
                self.cur = Some(c);
                self.next += 1;
            }
            let start = values.len();
            let n = self.read_chunk(&mut values)?;
            let cur = self.cur.as_mut().expect("a file is open");
            let f = &self.files[cur.file];
            cur.hasher.update(&values[start..]);
            path.append_value(&f.rel);
            offset.append_value(cur.off);
            size.append_value(f.size);
            modified.append_option(f.modified);
            offsets.push(values.len() as i64);
            cur.off += n as u64;
            rows += 1;
            self.bytes += n as u64;
            if cur.off == f.size {
                hash.append_value(cur.hasher.finalize().to_hex().as_str());
                if let Some(p) = &f.fs {
                    // A file that grew while it was read would otherwise be
                    // delivered cut short without a word.
                    let now = std::fs::metadata(p)
                        .map_err(|e| Error::io(format!("reading {}", f.display), e))?
                        .len();
                    if now != f.size {
                        return Err(Error::bad_data(
                            RowLocation {
                                file: f.display.clone(),
                                ..Default::default()
                            },
                            format!(
                                "the file changed while being read ({} bytes when listed, {now} now)",
                                f.size
                            ),
                        ));
                    }
                }
                self.cur = None;
            } else {
                hash.append_null();
            }
        }
        if rows == 0 {
            return Ok(None);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(path.finish()),
            Arc::new(offset.finish()),
            Arc::new(size.finish()),
            Arc::new(modified.finish()),
            Arc::new(hash.finish()),
            Arc::new(LargeBinaryArray::new(
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                Buffer::from_vec(values),
                None,
            )),
        ];
        RecordBatch::try_new(schema(), cols)
            .map(Some)
            .map_err(|e| Error::Internal(format!("blob batch: {e}")))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}
