//! Cutting a text file's byte range while it is read (see
//! `tidex_engine::Splitter`): the part shared by the CSV and JSON-lines
//! sources. Each brings how it finds a record boundary; the reader calls
//! [`ByteCut::poll`] between records and [`ByteCut::cap`] on every chunk.

use super::compress::{range_info, WHOLE_ZSTD};
use super::location::FileMeta;
use bytes::Bytes;
use std::sync::Arc;
use tidex_engine::runtime::cut::LiveCut;
use tidex_engine::{PartitionInfo, Result, Splitter};

/// Less than this left to read is not worth a new partition.
pub const MIN_CUT_BYTES: u64 = 256 << 10;

/// Finds the first record boundary at or after `nominal`, reading from a
/// record boundary at `from` (the reader's position) if it must scan.
pub type FindBoundary = Box<dyn Fn(u64, u64) -> Result<Option<u64>> + Send + Sync>;

/// A byte range being read, which the runtime may cut at a record
/// boundary halfway through what is left.
pub struct ByteSplitter {
    cut: LiveCut,
    find: FindBoundary,
}

impl ByteSplitter {
    /// For a reader of `start..end`.
    pub fn new(start: u64, end: u64, find: FindBoundary) -> Arc<Self> {
        Arc::new(ByteSplitter {
            cut: LiveCut::new(start, end),
            find,
        })
    }
}

impl Splitter for ByteSplitter {
    fn propose(&self) -> Result<Option<u64>> {
        let (pos, end) = (self.cut.position(), self.cut.end());
        if end.saturating_sub(pos) < MIN_CUT_BYTES {
            return Ok(None);
        }
        let found = (self.find)(pos, pos + (end - pos) / 2)?;
        Ok(found.filter(|b| *b > pos && *b < end))
    }

    fn apply(&self, at: u64) -> bool {
        self.cut.request(at)
    }
}

/// The reader's side: where it stops, and the splitter it answers to.
pub struct ByteCut {
    splitter: Option<Arc<ByteSplitter>>,
    /// Where reading stops once cut (`u64::MAX` until then).
    limit: u64,
}

impl ByteCut {
    /// `None` for a range that cannot be cut (a zstd stream).
    pub fn new(splitter: Option<Arc<ByteSplitter>>) -> Self {
        ByteCut {
            splitter,
            limit: u64::MAX,
        }
    }

    /// Between records, `offset` being where the next one starts: takes a
    /// cut asked for meanwhile, dropping the bytes of `buf[pos..]` past it
    /// (they are the next partition's), as if the range ended there.
    pub fn poll(&mut self, offset: u64, buf: &mut Bytes, pos: usize) {
        if let Some(end) = self.splitter.as_ref().and_then(|s| s.cut.poll(offset)) {
            self.limit = end;
            let room = (end - offset) as usize;
            if buf.len() - pos > room {
                buf.truncate(pos + room);
            }
        }
    }

    /// Whether reading has reached the cut (no more chunks are wanted).
    pub fn reached(&self, offset: u64) -> bool {
        offset >= self.limit
    }

    /// A new chunk starting at `offset`, without the bytes past the cut.
    pub fn cap(&self, offset: u64, chunk: &mut Bytes) {
        if self.limit != u64::MAX {
            chunk.truncate((self.limit - offset) as usize);
        }
    }

    /// Publishes `offset`, a record boundary, as the reader's position.
    pub fn publish(&self, offset: u64) {
        if let Some(s) = &self.splitter {
            s.cut.publish(offset);
        }
    }

    /// The range is read to its end: later cuts are refused.
    pub fn finish(&self) {
        if let Some(s) = &self.splitter {
            s.cut.finish();
        }
    }

    /// For `SourceReader::splitter`.
    pub fn splitter(&self) -> Option<Arc<dyn Splitter>> {
        self.splitter.clone().map(|s| s as Arc<dyn Splitter>)
    }
}

/// A partition of a CSV or JSON-lines source: a byte range of one file
/// (`end` is `WHOLE_ZSTD` for a compressed file read whole).
#[derive(Debug, Clone)]
pub struct RangePart {
    /// Index of the file in the source's file list.
    pub file: usize,
    /// First byte of the range.
    pub start: u64,
    /// End of the range (exclusive), or `WHOLE_ZSTD`.
    pub end: u64,
    /// Row (or line) number of the first record, when the partition starts
    /// a file: error locations count from it.
    pub first_row: Option<u64>,
    /// Where input bytes are counted from: 0 for a CSV file's first
    /// partition, so its header counts too; `start` otherwise.
    pub counted_from: u64,
}

/// `parts` with part `partition` ending at `at` and a new part from `at`
/// to its old end appended; `None` when `at` is not inside it (or the part
/// is a compressed file, which is read whole).
pub fn cut_parts(parts: &[RangePart], partition: usize, at: u64) -> Option<Vec<RangePart>> {
    let p = parts.get(partition)?;
    if p.end == WHOLE_ZSTD || at <= p.start || at >= p.end {
        return None;
    }
    let mut out = parts.to_vec();
    out.push(RangePart {
        file: p.file,
        start: at,
        end: p.end,
        first_row: None,
        counted_from: at,
    });
    out[partition].end = at;
    Some(out)
}

/// The partition infos of `parts`, in order.
pub fn range_infos(parts: &[RangePart], files: &[FileMeta]) -> Vec<PartitionInfo> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| range_info(i, &files[p.file], p.start, p.end, p.counted_from))
        .collect()
}
