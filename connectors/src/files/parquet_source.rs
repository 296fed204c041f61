//! Parquet source: partitions are groups of row groups, decoded with the
//! `parquet` crate's async reader (I/O on the runtime, decoding on the
//! worker thread that polls it). A file whose footer cannot be read, or a
//! row group that fails to decode, is a data error naming the file (and
//! row range) under `fail`, and a dead-letter entry under `skip`.

use super::location::{FileMeta, Location};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde::Deserialize;
use std::sync::Arc;
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location as RowLocation;
use tidex_engine::runtime::cut::LiveCut;
use tidex_engine::spec::{ByteSize, Policy};
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError, Splitter,
};

fn split_size() -> ByteSize {
    ByteSize(128 << 20)
}

/// `[source] type = "parquet"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// Always `"parquet"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file, a directory (every `.parquet`) or a glob.
    pub url: String,
    /// Row groups are grouped into partitions of about this many
    /// compressed bytes (default 128MiB).
    #[serde(default = "split_size")]
    pub split_size: ByteSize,
}

/// Registers `type = "parquet"`.
pub struct ParquetSourceFactory;

#[derive(Clone)]
enum Part {
    RowGroups { file: usize, groups: Vec<usize> },
    Broken { file: usize, reason: String },
}

/// A planned Parquet source.
#[derive(Clone)]
pub struct ParquetSource {
    loc: Location,
    files: Vec<FileMeta>,
    metas: Vec<Option<ArrowReaderMetadata>>,
    parts: Vec<Part>,
    infos: Vec<PartitionInfo>,
    schema: SchemaRef,
    io: tokio::runtime::Handle,
    batch_rows: usize,
}

/// What the runtime shows of each part: its row groups and their bytes.
fn infos(
    parts: &[Part],
    files: &[FileMeta],
    metas: &[Option<ArrowReaderMetadata>],
) -> Vec<PartitionInfo> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Part::RowGroups { file, groups } => {
                let meta = metas[*file].as_ref().expect("readable");
                let bytes: i64 = groups
                    .iter()
                    .map(|g| meta.metadata().row_group(*g).compressed_size())
                    .sum();
                let label = match (groups.first(), groups.last()) {
                    (Some(a), Some(b)) => {
                        format!("{}[row groups {a}..={b}]", files[*file].display)
                    }
                    _ => format!("{}[empty]", files[*file].display),
                };
                PartitionInfo {
                    index: i,
                    label,
                    bytes: bytes as u64,
                }
            }
            Part::Broken { file, .. } => PartitionInfo {
                index: i,
                label: format!("{}[unreadable]", files[*file].display),
                bytes: 0,
            },
        })
        .collect()
}

fn same_fields(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

impl SourceFactory for ParquetSourceFactory {
    fn kind(&self) -> &'static str {
        "parquet"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        cfg.parse::<ParquetSourceConfig>().map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: ParquetSourceConfig = cfg.parse()?;
        let loc = Location::parse(&c.url)?;
        let files = loc.list_files(&ctx.io, &["parquet", "pq"])?;
        let mut metas = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        let mut parts = Vec::new();
        for (fi, f) in files.iter().enumerate() {
            let mut reader = StoreReader {
                store: loc.store.clone(),
                path: f.path.clone(),
                size: f.size,
            };
            let meta = ctx.io.block_on(async {
                ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await
            });
            let meta = match meta {
                Ok(m) => m,
                Err(e) => {
                    let reason = format!("not a readable Parquet file: {e}");
                    if ctx.policy == Policy::Fail {
                        return Err(Error::bad_data(
                            RowLocation {
                                file: f.display.clone(),
                                ..Default::default()
                            },
                            reason,
                        ));
                    }
                    parts.push(Part::Broken { file: fi, reason });
                    metas.push(None);
                    continue;
                }
            };
            match &schema {
                None => schema = Some(meta.schema().clone()),
                Some(s) if !same_fields(s, meta.schema()) => {
                    return Err(Error::bad_data(
                        RowLocation {
                            file: f.display.clone(),
                            ..Default::default()
                        },
                        format!(
                            "schema differs from {}: {:?} vs {:?}",
                            files[0].display,
                            meta.schema().fields(),
                            s.fields()
                        ),
                    ))
                }
                Some(_) => {}
            }
            let mut group = Vec::new();
            let mut size = 0i64;
            for (i, rg) in meta.metadata().row_groups().iter().enumerate() {
                group.push(i);
                size += rg.compressed_size();
                if size as u64 >= c.split_size.0 {
                    parts.push(Part::RowGroups {
                        file: fi,
                        groups: std::mem::take(&mut group),
                    });
                    size = 0;
                }
            }
            if !group.is_empty() || meta.metadata().num_row_groups() == 0 {
                parts.push(Part::RowGroups {
                    file: fi,
                    groups: group,
                });
            }
            metas.push(Some(meta));
        }
        let schema = schema.ok_or_else(|| {
            let why = parts.iter().find_map(|p| match p {
                Part::Broken { file, reason } => {
                    Some(format!("{}: {reason}", files[*file].display))
                }
                _ => None,
            });
            Error::bad_data(
                RowLocation {
                    file: loc.url.clone(),
                    ..Default::default()
                },
                format!(
                    "no readable Parquet file, so no schema for the output ({})",
                    why.unwrap_or_default()
                ),
            )
        })?;
        let infos = infos(&parts, &files, &metas);
        Ok(Arc::new(ParquetSource {
            loc,
            files,
            metas,
            parts,
            infos,
            schema,
            io: ctx.io.clone(),
            batch_rows: ctx.batch_rows,
        }))
    }
}

impl Source for ParquetSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let (file, groups, broken) = match &self.parts[partition] {
            Part::RowGroups { file, groups } => (*file, groups.clone(), None),
            Part::Broken { file, reason } => (*file, Vec::new(), Some(reason.clone())),
        };
        Ok(Box::new(ParquetReader {
            src: ParquetRef {
                loc: self.loc.clone(),
                file: self.files[file].clone(),
                meta: self.metas[file].clone(),
                schema: self.schema.clone(),
                io: self.io.clone(),
                batch_rows: self.batch_rows,
            },
            cut: match (groups.first(), groups.last()) {
                (Some(a), Some(b)) => Some(Arc::new(GroupSplitter(LiveCut::new(
                    *a as u64,
                    *b as u64 + 1,
                )))),
                _ => None,
            },
            groups: groups.into(),
            current: None,
            broken,
            bytes: 0,
        }))
    }

    fn describe(&self) -> String {
        self.loc.describe_files(&self.files)
    }

    /// The partition keeps its row groups before `at`; those from `at` on
    /// become the last partition.
    fn split_at(&self, partition: usize, at: u64) -> Option<Arc<dyn Source>> {
        let Part::RowGroups { file, groups } = self.parts.get(partition)? else {
            return None;
        };
        let (head, rest): (Vec<usize>, Vec<usize>) = groups.iter().partition(|g| (**g as u64) < at);
        if head.is_empty() || rest.is_empty() {
            return None;
        }
        let mut s = self.clone();
        s.parts[partition] = Part::RowGroups {
            file: *file,
            groups: head,
        };
        s.parts.push(Part::RowGroups {
            file: *file,
            groups: rest,
        });
        s.infos = infos(&s.parts, &s.files, &s.metas);
        Some(Arc::new(s))
    }
}

/// Cuts a partition's row groups halfway through those not started yet
/// (positions are row group numbers).
struct GroupSplitter(LiveCut);

impl Splitter for GroupSplitter {
    fn propose(&self) -> Result<Option<u64>> {
        // `position` is the group being read; the rest start after it.
        let (pos, end) = (self.0.position(), self.0.end());
        if end <= pos + 1 {
            return Ok(None);
        }
        Ok(Some(pos + 1 + (end - pos - 1) / 2))
    }

    fn apply(&self, at: u64) -> bool {
        self.0.request(at)
    }
}

struct ParquetRef {
    loc: Location,
    file: FileMeta,
    meta: Option<ArrowReaderMetadata>,
    schema: SchemaRef,
    io: tokio::runtime::Handle,
    batch_rows: usize,
}

struct Current {
    group: usize,
    stream: ParquetRecordBatchStream<StoreReader>,
    yielded: u64,
}

struct ParquetReader {
    src: ParquetRef,
    /// Lets the runtime cut the partition short between row groups.
    cut: Option<Arc<GroupSplitter>>,
    groups: std::collections::VecDeque<usize>,
    current: Option<Current>,
    broken: Option<String>,
    bytes: u64,
}

impl ParquetReader {
    fn first_row(&self, group: usize) -> u64 {
        let meta = self.src.meta.as_ref().expect("readable");
        meta.metadata().row_groups()[..group]
            .iter()
            .map(|g| g.num_rows() as u64)
            .sum::<u64>()
            + 1
    }
}

impl SourceReader for ParquetReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        if let Some(reason) = self.broken.take() {
            let loc = RowLocation {
                file: self.src.file.display.clone(),
                ..Default::default()
            };
            rejects.reject(DirtyRow::row(loc, reason))?;
            self.bytes = self.src.file.size;
            return Ok(None);
        }
        loop {
            if let Some(c) = &self.cut {
                // The next group to start is where a cut may fall.
                let next = self.groups.front().map_or(c.0.end(), |g| *g as u64);
                if let Some(end) = c.0.poll(next) {
                    self.groups.retain(|g| (*g as u64) < end);
                }
            }
            if self.current.is_none() {
                let Some(group) = self.groups.pop_front() else {
                    if let Some(c) = &self.cut {
                        c.0.finish();
                    }
                    return Ok(None);
                };
                if let Some(c) = &self.cut {
                    c.0.publish(group as u64);
                }
                let meta = self.src.meta.clone().expect("readable");
                let reader = StoreReader {
                    store: self.src.loc.store.clone(),
                    path: self.src.file.path.clone(),
                    size: self.src.file.size,
                };
                let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
                    .with_row_groups(vec![group])
                    .with_batch_size(self.src.batch_rows)
                    .build()
                    .map_err(|e| Error::io(format!("reading {}", self.src.file.display), e))?;
                self.current = Some(Current {
                    group,
                    stream,
                    yielded: 0,
                });
            }
            let first_row = self.first_row(self.current.as_ref().expect("set above").group);
            let cur = self.current.as_mut().expect("set above");
            let next = self.src.io.block_on(cur.stream.next());
            let group = cur.group;
            let meta = self.src.meta.as_ref().expect("readable");
            let rg = meta.metadata().row_group(group);
            match next {
                Some(Ok(batch)) => {
                    cur.yielded += batch.num_rows() as u64;
                    let batch =
                        RecordBatch::try_new(self.src.schema.clone(), batch.columns().to_vec())
                            .map_err(|e| Error::Internal(e.to_string()))?;
                    return Ok(Some(batch));
                }
                Some(Err(e)) => {
                    let remaining = (rg.num_rows() as u64).saturating_sub(cur.yielded);
                    let row = first_row + cur.yielded;
                    self.current = None;
                    self.bytes += rg.compressed_size() as u64;
                    let loc = RowLocation {
                        file: self.src.file.display.clone(),
                        row: Some(row),
                        ..Default::default()
                    };
                    let mut d = DirtyRow::row(loc, format!("row group {group} is corrupt: {e}"));
                    d.rows = remaining.max(1);
                    rejects.reject(d)?;
                }
                None => {
                    self.current = None;
                    self.bytes += rg.compressed_size() as u64;
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn splitter(&self) -> Option<Arc<dyn Splitter>> {
        self.cut.clone().map(|c| c as Arc<dyn Splitter>)
    }
}

/// `AsyncFileReader` over an object store: ranged reads on the I/O runtime.
#[derive(Clone)]
pub struct StoreReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let (store, path) = (self.store.clone(), self.path.clone());
        async move {
            store
                .get_range(&path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let (store, path) = (self.store.clone(), self.path.clone());
        async move {
            store
                .get_ranges(&path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let size = self.size;
        async move {
            let opts = options.map(|o| o.metadata_options().clone());
            let meta = ParquetMetaDataReader::new()
                .with_metadata_options(opts)
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}
