//! Arrow IPC source: the file format (`.arrow`, `.feather` v2) and the
//! stream format, one partition per file. A batch that fails to decode is
//! a data error under `fail` and a dead-letter entry under `skip`.

use super::io::RangeReader;
use super::location::{FileMeta, Location};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::record_batch::RecordBatch;
use serde::Deserialize;
use std::io::BufReader;
use std::sync::Arc;
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location as RowLocation;
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError,
};

/// `[source] type = "arrow"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrowSourceConfig {
    /// Always `"arrow"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file, a directory (every `.arrow`/`.arrows`/`.feather`/`.ipc`) or a glob.
    pub url: String,
}

/// Registers `type = "arrow"`.
pub struct ArrowSourceFactory;

/// A planned Arrow IPC source.
pub struct ArrowSource {
    loc: Location,
    files: Vec<FileMeta>,
    infos: Vec<PartitionInfo>,
    schema: SchemaRef,
    io: tokio::runtime::Handle,
}

enum Inner {
    File(FileReader<RangeReader>, usize),
    Stream(StreamReader<BufReader<RangeReader>>),
}

fn open(loc: &Location, io: &tokio::runtime::Handle, f: &FileMeta) -> Result<Inner> {
    let magic = if f.size >= 6 {
        loc.get_range(io, &f.path, 0..6)?
    } else {
        bytes::Bytes::new()
    };
    let reader = RangeReader::new(io, loc.store.clone(), f.path.clone(), f.size);
    let bad = |e: arrow::error::ArrowError| {
        Error::bad_data(
            RowLocation {
                file: f.display.clone(),
                ..Default::default()
            },
            format!("not a readable Arrow IPC file: {e}"),
        )
    };
    if &magic[..] == b"ARROW1" {
        let r = FileReader::try_new(reader, None).map_err(bad)?;
        Ok(Inner::File(r, 0))
    } else {
        Ok(Inner::Stream(
            StreamReader::try_new(BufReader::with_capacity(1 << 20, reader), None).map_err(bad)?,
        ))
    }
}

impl SourceFactory for ArrowSourceFactory {
    fn kind(&self) -> &'static str {
        "arrow"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        cfg.parse::<ArrowSourceConfig>().map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: ArrowSourceConfig = cfg.parse()?;
        let loc = Location::parse(&c.url)?;
        let files = loc.list_files(&ctx.io, &["arrow", "arrows", "feather", "ipc"])?;
        let schema = match open(&loc, &ctx.io, &files[0])? {
            Inner::File(r, _) => r.schema(),
            Inner::Stream(r) => r.schema(),
        };
        let infos = files
            .iter()
            .enumerate()
            .map(|(i, f)| PartitionInfo {
                index: i,
                label: f.display.clone(),
                bytes: f.size,
            })
            .collect();
        Ok(Arc::new(ArrowSource {
            loc,
            files,
            infos,
            schema,
            io: ctx.io.clone(),
        }))
    }
}

impl Source for ArrowSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let f = self.files[partition].clone();
        Ok(Box::new(ArrowReader {
            loc: self.loc.clone(),
            io: self.io.clone(),
            schema: self.schema.clone(),
            file: f,
            inner: None,
            done: false,
        }))
    }

    fn describe(&self) -> String {
        self.loc.describe_files(&self.files)
    }
}

struct ArrowReader {
    loc: Location,
    io: tokio::runtime::Handle,
    schema: SchemaRef,
    file: FileMeta,
    inner: Option<Inner>,
    done: bool,
}

impl SourceReader for ArrowReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        let loc = |batch: Option<usize>, e: String| {
            let reason = match batch {
                Some(b) => format!("record batch {b} is corrupt: {e}"),
                None => e,
            };
            (
                RowLocation {
                    file: self.file.display.clone(),
                    ..Default::default()
                },
                reason,
            )
        };
        if self.done {
            return Ok(None);
        }
        if self.inner.is_none() {
            match open(&self.loc, &self.io, &self.file) {
                Ok(i) => self.inner = Some(i),
                Err(Error::BadData { location, reason }) => {
                    self.done = true;
                    rejects.reject(DirtyRow::row(location, reason))?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            let (res, idx) = match self.inner.as_mut().expect("opened") {
                Inner::File(r, i) => {
                    if *i >= r.num_batches() {
                        self.done = true;
                        return Ok(None);
                    }
                    let idx = *i;
                    *i += 1;
                    if let Err(e) = r.set_index(idx) {
                        (Some(Err(e)), Some(idx))
                    } else {
                        (r.next(), Some(idx))
                    }
                }
                Inner::Stream(r) => (r.next(), None),
            };
            match res {
                Some(Ok(b)) => {
                    let b = RecordBatch::try_new(self.schema.clone(), b.columns().to_vec())
                        .map_err(|e| {
                            Error::bad_data(
                                RowLocation {
                                    file: self.file.display.clone(),
                                    ..Default::default()
                                },
                                format!("schema differs from the first file: {e}"),
                            )
                        })?;
                    return Ok(Some(b));
                }
                Some(Err(e)) => {
                    let (l, reason) = loc(idx, e.to_string());
                    rejects.reject(DirtyRow::row(l, reason))?;
                    if idx.is_none() {
                        // A stream cannot be resynchronised after a bad message.
                        self.done = true;
                        return Ok(None);
                    }
                }
                None => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        if self.done {
            self.file.size
        } else {
            0
        }
    }
}
