//! zstd for CSV and JSON-lines files: `people.csv.zst` is read and written
//! like `people.csv`. Compressed files are one partition each (a zstd
//! stream cannot be entered in the middle); compressed output parts are
//! independent zstd frames, so concatenating them is itself a valid file.

use super::io::{ChunkStream, CHUNK};
use super::location::{FileMeta, Location};
use bytes::Bytes;
use tidex_engine::{ConnectorConfig, Error, PartitionInfo, Result, SpecError};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// A sink's `compression_level`: 1 by default, else checked to be a zstd
/// level (1–22).
pub fn zstd_level(cfg: &ConnectorConfig, level: Option<i32>) -> Result<i32, SpecError> {
    let level = level.unwrap_or(1);
    if !(1..=22).contains(&level) {
        return Err(cfg.error("compression_level", "expected a zstd level from 1 to 22"));
    }
    Ok(level)
}

/// Whether a file name ends in `.zst` or `.zstd`.
pub fn is_zstd(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".zst") || n.ends_with(".zstd")
}

/// The name without a trailing `.zst`/`.zstd`.
pub fn strip_zstd(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".zstd") {
        &name[..name.len() - 5]
    } else if lower.ends_with(".zst") {
        &name[..name.len() - 4]
    } else {
        name
    }
}

/// The `end` of a partition that is a whole zstd file: its decompressed
/// length is unknown until it has been read.
pub const WHOLE_ZSTD: u64 = u64::MAX;

/// A byte-range partition of a text file: `file[start..end]`, or
/// `file[zstd]` for a whole compressed file (whose stored size it counts).
/// Input bytes are counted from `counted_from`.
pub fn range_info(
    index: usize,
    file: &FileMeta,
    start: u64,
    end: u64,
    counted_from: u64,
) -> PartitionInfo {
    if end == WHOLE_ZSTD {
        PartitionInfo {
            index,
            label: format!("{}[zstd]", file.display),
            bytes: file.size,
        }
    } else {
        PartitionInfo {
            index,
            label: format!("{}[{start}..{end}]", file.display),
            bytes: end - counted_from,
        }
    }
}

/// The chunks of a byte-range partition: the range as stored, or for
/// [`WHOLE_ZSTD`] the whole file decompressed from its start.
pub fn open_range(
    loc: &Location,
    io: &tokio::runtime::Handle,
    file: &FileMeta,
    start: u64,
    end: u64,
) -> Result<Chunks> {
    let zst = end == WHOLE_ZSTD;
    let range = if zst { 0..file.size } else { start..end };
    let stream = ChunkStream::spawn_file(
        io,
        loc.store.clone(),
        file.path.clone(),
        loc.fs_path(&file.path),
        file.display.clone(),
        range,
        CHUNK,
    );
    Ok(if zst {
        Chunks::Zstd(ZstdChunks::new(stream, file.display.clone())?)
    } else {
        Chunks::Plain(stream)
    })
}

/// Chunks of a file's bytes, decompressed when the file is zstd.
pub enum Chunks {
    /// As stored.
    Plain(ChunkStream),
    /// Decompressed on the reader's thread.
    Zstd(ZstdChunks),
}

impl Chunks {
    /// The next chunk, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        match self {
            Chunks::Plain(c) => c.next_chunk(),
            Chunks::Zstd(z) => z.next_chunk(),
        }
    }

    /// Stored bytes consumed so far, when they differ from the bytes
    /// returned (for progress and rate limits).
    pub fn stored_consumed(&self) -> Option<u64> {
        match self {
            Chunks::Plain(_) => None,
            Chunks::Zstd(z) => Some(z.consumed),
        }
    }
}

/// A zstd stream decoded chunk by chunk.
pub struct ZstdChunks {
    inner: ChunkStream,
    dec: Decoder<'static>,
    input: Bytes,
    pos: usize,
    eof: bool,
    consumed: u64,
    /// The decoder's last hint: 0 when it stands at the end of a frame.
    hint: usize,
    display: String,
}

impl ZstdChunks {
    /// Decodes the compressed chunks of `inner`.
    pub fn new(inner: ChunkStream, display: String) -> Result<Self> {
        let dec =
            Decoder::new().map_err(|e| Error::io(format!("starting zstd for {display}"), e))?;
        Ok(ZstdChunks {
            inner,
            dec,
            input: Bytes::new(),
            pos: 0,
            eof: false,
            consumed: 0,
            hint: 0,
            display,
        })
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        const OUT: usize = 4 << 20;
        let mut out = vec![0u8; OUT];
        let mut filled = 0;
        while filled < OUT {
            if self.pos >= self.input.len() {
                if self.eof {
                    if self.hint == 0 {
                        break; // the last frame is complete
                    }
                    // Drain what the decoder still holds; nothing left means
                    // the input stopped inside a frame.
                    let mut ob = OutBuffer::around(&mut out[filled..]);
                    let mut ib = InBuffer::around(&[]);
                    self.hint = self
                        .dec
                        .run(&mut ib, &mut ob)
                        .map_err(|e| self.corrupt(e))?;
                    if ob.pos() == 0 {
                        return Err(Error::bad_data(
                            tidex_engine::error::Location {
                                file: self.display.clone(),
                                ..Default::default()
                            },
                            "zstd data ends in the middle of a frame (truncated file)",
                        ));
                    }
                    filled += ob.pos();
                    continue;
                }
                match self.inner.next_chunk()? {
                    Some(b) => {
                        self.input = b;
                        self.pos = 0;
                    }
                    None => {
                        self.eof = true;
                        continue;
                    }
                }
            }
            let mut ib = InBuffer::around(&self.input[self.pos..]);
            let mut ob = OutBuffer::around(&mut out[filled..]);
            self.hint = self
                .dec
                .run(&mut ib, &mut ob)
                .map_err(|e| self.corrupt(e))?;
            self.pos += ib.pos();
            self.consumed += ib.pos() as u64;
            filled += ob.pos();
        }
        if filled == 0 {
            return Ok(None);
        }
        out.truncate(filled);
        Ok(Some(Bytes::from(out)))
    }

    fn corrupt(&self, e: std::io::Error) -> Error {
        Error::bad_data(
            tidex_engine::error::Location {
                file: self.display.clone(),
                byte_offset: Some(self.consumed),
                ..Default::default()
            },
            format!("not valid zstd data: {e}"),
        )
    }
}

/// Decompresses the start of a zstd file (for schema inference), up to
/// `max` bytes. `display` names the file in errors.
pub fn decompress_prefix(compressed: &[u8], max: usize, display: &str) -> Result<Vec<u8>> {
    let bad = |why: String| {
        Error::bad_data(
            tidex_engine::error::Location {
                file: display.to_string(),
                ..Default::default()
            },
            why,
        )
    };
    let mut dec =
        Decoder::new().map_err(|e| Error::io(format!("starting zstd for {display}"), e))?;
    let mut out = vec![0u8; max];
    let mut ib = InBuffer::around(compressed);
    let mut filled = 0;
    while filled < max && ib.pos() < compressed.len() {
        let mut ob = OutBuffer::around(&mut out[filled..]);
        dec.run(&mut ib, &mut ob)
            .map_err(|e| bad(format!("not valid zstd data: {e}")))?;
        if ob.pos() == 0 {
            break;
        }
        filled += ob.pos();
    }
    if filled == 0 && !compressed.is_empty() {
        return Err(bad(
            "no complete zstd block at the start of the file (truncated, or not zstd)".into(),
        ));
    }
    out.truncate(filled);
    Ok(out)
}
