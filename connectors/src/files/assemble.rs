//! Concatenating committed parts into one file, for single-file targets.
//!
//! Parquet parts are joined by copying their column chunks byte for byte
//! into one file with a new footer (no decoding or re-encoding); Arrow IPC
//! parts are re-framed batch by batch; CSV and JSON-lines parts are joined
//! as bytes (only the first CSV part carries the header). The output is a
//! multipart upload, invisible until [`Assembler::finish`].

use super::io::{ChunkStream, RangeReader, UploadWriter, CHUNK};
use super::location::Location;
use super::sink::Format;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::ParquetMetaDataReader;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::TypePtr;
use std::io::{Read, Write};
use std::sync::Arc;
use tidex_engine::{Error, Result};

/// What an assembler needs from its sink.
pub(crate) struct AsmContext {
    pub(crate) format: Format,
    pub(crate) loc: Location,
    pub(crate) io: tokio::runtime::Handle,
    /// Properties for a Parquet file with no parts at all.
    pub(crate) empty_parquet: WriterProperties,
    pub(crate) ipc: IpcWriteOptions,
    /// CSV header, written only when there are no parts (parts carry it).
    pub(crate) csv_header: Option<Vec<u8>>,
}

enum State {
    Start(UploadWriter),
    Parquet(SerializedFileWriter<UploadWriter>, TypePtr),
    Arrow(FileWriter<UploadWriter>),
    Raw(UploadWriter),
}

/// Appends parts, in order, to one output object.
pub(crate) struct Assembler {
    ctx: AsmContext,
    schema: SchemaRef,
    display: String,
    state: Option<State>,
    inputs: usize,
}

impl Assembler {
    /// Starts the output at `out`.
    pub(crate) fn create(ctx: AsmContext, out: &Path, schema: SchemaRef) -> Result<Self> {
        let display = ctx.loc.display(out);
        let w = UploadWriter::create(&ctx.io, &ctx.loc.store, out, display.clone())?;
        Ok(Assembler {
            ctx,
            schema,
            display,
            state: Some(State::Start(w)),
            inputs: 0,
        })
    }

    fn werr(&self, e: impl std::fmt::Display) -> Error {
        Error::io(format!("writing {}", self.display), e.to_string())
    }

    fn rerr(&self, input: &Path, e: impl Into<tidex_engine::error::BoxError>) -> Error {
        Error::io(format!("reading {}", self.ctx.loc.display(input)), e)
    }

    fn mismatch(&self) -> Error {
        Error::Config(format!(
            "cannot append to {}: it has a different schema than this run's output",
            self.ctx.loc.url
        ))
    }

    fn size_of(&self, path: &Path) -> Result<u64> {
        let store = self.ctx.loc.store.clone();
        let p = path.clone();
        self.ctx
            .io
            .block_on(async move { store.head(&p).await })
            .map(|m| m.size)
            .map_err(|e| self.rerr(path, e))
    }

    fn chunk_source(&self, path: &Path) -> Result<Src> {
        if let Some(fs) = self.ctx.loc.fs_path(path) {
            if let Ok(f) = std::fs::File::open(fs) {
                return Ok(Src::File(f));
            }
        }
        let store = self.ctx.loc.store.clone();
        let p = path.clone();
        let b = self
            .ctx
            .io
            .block_on(async move { store.get(&p).await?.bytes().await })
            .map_err(|e| self.rerr(path, e))?;
        Ok(Src::Mem(b))
    }

    /// Appends one input after everything appended so far.
    pub(crate) fn append(&mut self, input: &Path) -> Result<()> {
        let state = self
            .state
            .take()
            .ok_or_else(|| Error::Internal("assembler used after an error".into()))?;
        let next = self.append_inner(state, input)?;
        self.state = Some(next);
        self.inputs += 1;
        Ok(())
    }

    fn append_inner(&mut self, state: State, input: &Path) -> Result<State> {
        match (self.ctx.format, state) {
            (Format::Parquet, State::Start(w)) => {
                let src = self.chunk_source(input)?;
                let meta = ParquetMetaDataReader::new()
                    .parse_and_finish(&src)
                    .map_err(|e| self.rerr(input, e))?;
                let fm = meta.file_metadata();
                let root = fm.schema_descr().root_schema_ptr();
                let props = WriterProperties::builder()
                    .set_key_value_metadata(fm.key_value_metadata().cloned())
                    .set_created_by(format!("tidex {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let writer = SerializedFileWriter::new(w, root.clone(), Arc::new(props))
                    .map_err(|e| self.werr(e))?;
                self.copy_row_groups(State::Parquet(writer, root), &src, &meta, input)
            }
            (Format::Parquet, State::Parquet(writer, root)) => {
                let src = self.chunk_source(input)?;
                let meta = ParquetMetaDataReader::new()
                    .parse_and_finish(&src)
                    .map_err(|e| self.rerr(input, e))?;
                if meta.file_metadata().schema_descr().root_schema_ptr() != root {
                    return Err(self.mismatch());
                }
                self.copy_row_groups(State::Parquet(writer, root), &src, &meta, input)
            }
            (Format::Arrow, State::Start(w)) => {
                let enc = FileWriter::try_new_with_options(w, &self.schema, self.ctx.ipc.clone())
                    .map_err(|e| self.werr(e))?;
                self.append_inner(State::Arrow(enc), input)
            }
            (Format::Arrow, State::Arrow(mut enc)) => {
                let size = self.size_of(input)?;
                let r = arrow::ipc::reader::FileReader::try_new(
                    RangeReader::new(
                        &self.ctx.io,
                        self.ctx.loc.store.clone(),
                        input.clone(),
                        size,
                    ),
                    None,
                )
                .map_err(|e| self.rerr(input, e))?;
                if r.schema().fields() != self.schema.fields() {
                    return Err(self.mismatch());
                }
                for b in r {
                    let b = b.map_err(|e| self.rerr(input, e))?;
                    enc.write(&b).map_err(|e| self.werr(e))?;
                }
                Ok(State::Arrow(enc))
            }
            (Format::Csv | Format::Jsonl, State::Start(w) | State::Raw(w)) => {
                let mut w = w;
                let size = self.size_of(input)?;
                let mut chunks = ChunkStream::spawn(
                    &self.ctx.io,
                    self.ctx.loc.store.clone(),
                    input.clone(),
                    self.ctx.loc.display(input),
                    0..size,
                    CHUNK,
                );
                while let Some(c) = chunks.next_chunk()? {
                    w.write_all(&c).map_err(|e| self.werr(e))?;
                }
                Ok(State::Raw(w))
            }
            _ => Err(Error::Internal(
                "assembler state does not match its format".into(),
            )),
        }
    }

    fn copy_row_groups(
        &self,
        state: State,
        src: &Src,
        meta: &parquet::file::metadata::ParquetMetaData,
        input: &Path,
    ) -> Result<State> {
        let State::Parquet(mut writer, root) = state else {
            unreachable!("called with a Parquet state")
        };
        for rg in meta.row_groups() {
            let mut rg_out = writer.next_row_group().map_err(|e| self.werr(e))?;
            for column in rg.columns() {
                let result = ColumnCloseResult {
                    bytes_written: column.compressed_size() as _,
                    rows_written: rg.num_rows() as _,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                rg_out
                    .append_column(src, result)
                    .map_err(|e| self.rerr(input, e))?;
            }
            rg_out.close().map_err(|e| self.werr(e))?;
        }
        Ok(State::Parquet(writer, root))
    }

    /// Completes the output, making it visible.
    pub(crate) fn finish(mut self) -> Result<()> {
        let state = self
            .state
            .take()
            .ok_or_else(|| Error::Internal("assembler used after an error".into()))?;
        let w = match state {
            State::Start(mut w) => match self.ctx.format {
                Format::Parquet => {
                    let enc = ArrowWriter::try_new(
                        w,
                        self.schema.clone(),
                        Some(self.ctx.empty_parquet.clone()),
                    )
                    .map_err(|e| self.werr(e))?;
                    enc.into_inner().map_err(|e| self.werr(e))?
                }
                Format::Arrow => {
                    let mut enc =
                        FileWriter::try_new_with_options(w, &self.schema, self.ctx.ipc.clone())
                            .map_err(|e| self.werr(e))?;
                    enc.finish().map_err(|e| self.werr(e))?;
                    enc.into_inner().map_err(|e| self.werr(e))?
                }
                Format::Csv | Format::Jsonl => {
                    if let Some(h) = &self.ctx.csv_header {
                        w.write_all(h).map_err(|e| self.werr(e))?;
                    }
                    w
                }
            },
            State::Parquet(writer, _) => writer.into_inner().map_err(|e| self.werr(e))?,
            State::Arrow(mut enc) => {
                enc.finish().map_err(|e| self.werr(e))?;
                enc.into_inner().map_err(|e| self.werr(e))?
            }
            State::Raw(w) => w,
        };
        w.finish()?;
        Ok(())
    }
}

/// A part to copy Parquet column chunks from: a local file, or an object
/// read into memory (parts are bounded by the partition size).
enum Src {
    File(std::fs::File),
    Mem(Bytes),
}

impl Length for Src {
    fn len(&self) -> u64 {
        match self {
            Src::File(f) => f.len(),
            Src::Mem(b) => b.len() as u64,
        }
    }
}

impl ChunkReader for Src {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Src::File(f) => Box::new(f.get_read(start)?),
            Src::Mem(b) => Box::new(b.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Src::File(f) => f.get_bytes(start, length),
            Src::Mem(b) => b.get_bytes(start, length),
        }
    }
}
