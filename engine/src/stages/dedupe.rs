//! `dedupe`: delivers each key once, within a run and, with `across_runs`,
//! across every run of the job.
//!
//! ```toml
//! [[stage]]
//! type = "dedupe"
//! columns = ["id_card"]          # the key; NULLs compare equal
//! keep = "last"                  # "first" (default) or "last"
//! order_by = "updated_at"        # with keep = "last": the greatest wins (ties: the later row)
//! across_runs = true             # also drop keys delivered by earlier runs
//! ```
//!
//! Keys are never kept as values: each is reduced to a 128-bit keyed
//! BLAKE3 hash (the key is random per job and stage, in the store
//! directory), so memory per key is 16 bytes and nobody can craft
//! colliding keys without it.
//!
//! - Within a run every partition claims its keys in one shared set; a key
//!   claimed already is a duplicate. With `keep = "first"` the first row of
//!   a key to arrive is delivered. With `keep = "last"` each partition holds
//!   its rows back (spilled to a temporary file, so memory holds only a
//!   hash and an order value per key), picks the row with the greatest
//!   `order_by` per key when its input ends, and delivers those whose key
//!   no other partition delivered before. A key whose versions fall into
//!   different partitions of one run is delivered once, from the partition
//!   that finished first: partition the source by the key (or run it as one
//!   partition) when the newest version must win across partitions.
//! - The hashes a partition delivered are stored with its commit in the
//!   state store, so they count exactly when its rows do: a resumed run
//!   reloads those of its committed partitions, and a partition that never
//!   committed leaves nothing behind.
//! - `across_runs = true`: when a run begins, hashes of every delivered
//!   partition of earlier completed runs are merged into a sorted file of
//!   16-byte hashes (`dedupe/<job>-<stage>/keys.idx` beside the state
//!   database), which is memory-mapped and binary-searched: 100 million
//!   keys are 1.6 GB on disk and the process maps only the pages it reads.

use crate::dirty::Rejects;
use crate::error::{Error, Result};
use crate::spec::{SpecError, StageConfig};
use crate::stage::{Stage, StageFactory, StagePlan, StageReport, StageRun};
use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use serde::Deserialize;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// `[[stage]] type = "dedupe"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// Always `"dedupe"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Key columns.
    pub columns: Vec<String>,
    /// `first` (default) or `last`.
    #[serde(default)]
    pub keep: Keep,
    /// With `keep = "last"`: the column whose greatest value wins.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Also drop keys delivered by earlier runs of the job.
    #[serde(default)]
    pub across_runs: bool,
}

/// Which row of a key is delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The first to arrive.
    #[default]
    First,
    /// The one with the greatest `order_by`.
    Last,
}

const MAGIC: &[u8; 8] = b"TXDEDUP1";
const HEADER: usize = 32;
const SHARDS: usize = 64;

/// The hashes are uniformly random already; hashing them again is waste.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type HashSet128 = HashSet<u128, BuildHasherDefault<PassThrough>>;

/// Keys claimed in this run, by every partition.
struct Claims(Vec<Mutex<HashSet128>>);

impl Claims {
    fn new() -> Self {
        Claims(
            (0..SHARDS)
                .map(|_| Mutex::new(HashSet128::default()))
                .collect(),
        )
    }

    /// Whether `h` was unclaimed (and is now claimed).
    fn claim(&self, h: u128) -> bool {
        self.0[(h >> 122) as usize % SHARDS]
            .lock()
            .expect("claims lock")
            .insert(h)
    }
}

/// The sorted file of hashes delivered by earlier runs.
struct Index {
    map: Option<memmap2::Mmap>,
    count: usize,
}

impl Index {
    fn contains(&self, h: u128) -> bool {
        let Some(map) = &self.map else { return false };
        let at = |i: usize| {
            let o = HEADER + i * 16;
            u128::from_be_bytes(map[o..o + 16].try_into().expect("16 bytes"))
        };
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match at(mid).cmp(&h) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// Header of `keys.idx`: magic, the last run merged, key count, and a
/// fingerprint of the key columns the hashes were made from.
struct IndexHeader {
    watermark: i64,
    count: u64,
    columns: u64,
}

fn read_header(path: &Path) -> Result<Option<IndexHeader>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path.display().to_string(), e)),
    };
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    if &h[..8] != MAGIC {
        return Err(Error::Config(format!(
            "{} is not a tidex dedupe index",
            path.display()
        )));
    }
    let num = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().expect("8 bytes"));
    Ok(Some(IndexHeader {
        watermark: num(8..16) as i64,
        count: num(16..24),
        columns: num(24..32),
    }))
}

/// Sorted big-endian hashes from a reader, one at a time.
struct HashReader<R: Read> {
    r: R,
    left: u64,
}

impl<R: Read> HashReader<R> {
    fn next(&mut self) -> std::io::Result<Option<u128>> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut b = [0u8; 16];
        self.r.read_exact(&mut b)?;
        self.left -= 1;
        Ok(Some(u128::from_be_bytes(b)))
    }
}

/// Merges the old index with sorted runs of new hashes into a new index at
/// `path` (written beside it and renamed into place).
fn merge_index(
    path: &Path,
    old: Option<&IndexHeader>,
    runs: Vec<(File, u64)>,
    watermark: i64,
    columns: u64,
) -> Result<()> {
    let io = |e| Error::io(path.display().to_string(), e);
    let mut sources: Vec<HashReader<Box<dyn Read>>> = Vec::new();
    if let Some(h) = old {
        let mut f = File::open(path).map_err(io)?;
        f.seek(SeekFrom::Start(HEADER as u64)).map_err(io)?;
        sources.push(HashReader {
            r: Box::new(BufReader::with_capacity(1 << 16, f)),
            left: h.count,
        });
    }
    for (mut f, n) in runs {
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        sources.push(HashReader {
            r: Box::new(BufReader::with_capacity(1 << 16, f)),
            left: n,
        });
    }
    let tmp = path.with_extension("idx.tmp");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
    out.write_all(&[0u8; HEADER]).map_err(io)?;
    let mut heap = BinaryHeap::new();
    for (i, s) in sources.iter_mut().enumerate() {
        if let Some(h) = s.next().map_err(io)? {
            heap.push(std::cmp::Reverse((h, i)));
        }
    }
    let (mut count, mut last) = (0u64, None);
    while let Some(std::cmp::Reverse((h, i))) = heap.pop() {
        if last != Some(h) {
            out.write_all(&h.to_be_bytes()).map_err(io)?;
            count += 1;
            last = Some(h);
        }
        if let Some(n) = sources[i].next().map_err(io)? {
            heap.push(std::cmp::Reverse((n, i)));
        }
    }
    let mut f = out.into_inner().map_err(|e| io(e.into_error()))?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&watermark.to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&columns.to_le_bytes());
    f.write_all(&header).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn decode_hashes(data: &[u8]) -> impl Iterator<Item = u128> + '_ {
    data.chunks_exact(16)
        .map(|c| u128::from_be_bytes(c.try_into().expect("16 bytes")))
}

/// Registers `type = "dedupe"`.
pub struct DedupeFactory;

fn check(cfg: &StageConfig) -> Result<DedupeConfig, SpecError> {
    let c: DedupeConfig = cfg.parse()?;
    if c.columns.is_empty() {
        return Err(cfg.error("columns", "name the key columns, e.g. columns = [\"id\"]"));
    }
    match (c.keep, &c.order_by) {
        (Keep::Last, None) => Err(cfg.error(
            "order_by",
            "keep = \"last\" needs order_by = \"COLUMN\" (the greatest value wins)",
        )),
        (Keep::First, Some(_)) => {
            Err(cfg.error("order_by", "order_by only applies with keep = \"last\""))
        }
        _ => Ok(c),
    }
}

impl StageFactory for DedupeFactory {
    fn kind(&self) -> &'static str {
        "dedupe"
    }

    fn validate(&self, cfg: &StageConfig) -> Result<(), SpecError> {
        check(cfg).map(|_| ())
    }

    fn plan(&self, cfg: &StageConfig, input: SchemaRef) -> Result<Arc<dyn StagePlan>> {
        let c = check(cfg)?;
        let key_idx = super::column_indexes(cfg, "dedupe", &input, &c.columns)?;
        let order_idx = match &c.order_by {
            Some(o) => {
                Some(super::column_indexes(cfg, "dedupe", &input, std::slice::from_ref(o))?[0])
            }
            None => None,
        };
        let sort_fields = |idx: &[usize]| -> Vec<SortField> {
            idx.iter()
                .map(|i| SortField::new(input.field(*i).data_type().clone()))
                .collect()
        };
        // Reject key types the row format cannot encode now, not mid-run.
        RowConverter::new(sort_fields(&key_idx)).map_err(|e| {
            Error::Config(format!("stage {} (dedupe): key columns: {e}", cfg.index()))
        })?;
        let order_fields = order_idx.map(|i| sort_fields(&[i]));
        if let Some(f) = &order_fields {
            RowConverter::new(f.clone()).map_err(|e| {
                Error::Config(format!("stage {} (dedupe): order_by: {e}", cfg.index()))
            })?;
        }
        let mut fp = blake3::Hasher::new();
        for col in &c.columns {
            fp.update(col.as_bytes());
            fp.update(b"\0");
            fp.update(
                input
                    .field_with_name(col)
                    .map_or(String::new(), |f| f.data_type().to_string())
                    .as_bytes(),
            );
            fp.update(b"\n");
        }
        let columns_fp = u64::from_le_bytes(fp.finalize().as_bytes()[..8].try_into().expect("8"));
        Ok(Arc::new(DedupePlan {
            schema: input.clone(),
            stage: cfg.index(),
            key_fields: sort_fields(&key_idx),
            key_idx,
            order_idx,
            order_fields,
            across_runs: c.across_runs,
            columns_fp,
            run: RwLock::new(None),
            dropped: Arc::new(AtomicU64::new(0)),
        }))
    }
}

/// What every partition of a run shares.
struct RunShared {
    hash_key: [u8; 32],
    claims: Claims,
    index: Index,
    spill_dir: PathBuf,
}

struct DedupePlan {
    schema: SchemaRef,
    stage: usize,
    key_idx: Vec<usize>,
    key_fields: Vec<SortField>,
    order_idx: Option<usize>,
    order_fields: Option<Vec<SortField>>,
    across_runs: bool,
    columns_fp: u64,
    run: RwLock<Option<Arc<RunShared>>>,
    dropped: Arc<AtomicU64>,
}

impl DedupePlan {
    fn store_dir(&self, run: &StageRun<'_>) -> PathBuf {
        let base = run
            .state
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let readable: String = run
            .job
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let tag = &blake3::hash(run.job.as_bytes()).to_hex()[..12];
        base.join("dedupe")
            .join(format!("{readable}-{tag}-stage{}", self.stage))
    }

    fn hash_key(dir: &Path) -> Result<[u8; 32]> {
        let path = dir.join("hash.key");
        let io = |e| Error::io(path.display().to_string(), e);
        match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => Ok(k.try_into().expect("32 bytes")),
            Ok(_) => Err(Error::Config(format!(
                "{} is damaged (expected 32 bytes)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k)
                    .map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
                let tmp = dir.join("hash.key.tmp");
                let mut f = File::create(&tmp).map_err(io)?;
                f.write_all(&k).map_err(io)?;
                f.sync_all().map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                Ok(k)
            }
            Err(e) => Err(io(e)),
        }
    }
}

impl StagePlan for DedupePlan {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn begin(&self, run: &StageRun<'_>) -> Result<()> {
        let dir = self.store_dir(run);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        let hash_key = Self::hash_key(&dir)?;
        let idx_path = dir.join("keys.idx");
        let claims = Claims::new();
        let mut old = read_header(&idx_path)?;
        if let Some(h) = &old {
            if h.columns != self.columns_fp {
                return Err(Error::Config(format!(
                    "stage {} (dedupe): the keys earlier runs delivered were made from other key columns; \
                     delete {} to start deduplicating afresh",
                    self.stage,
                    dir.display()
                )));
            }
        }
        let watermark = old.as_ref().map_or(0, |h| h.watermark);
        // Earlier runs' hashes go to sorted temporary files, then one merge;
        // this run's committed partitions (a resume) go into the claims.
        let mut runs: Vec<(File, u64)> = Vec::new();
        let mut newest = watermark;
        run.state.for_each_part_data(
            run.job,
            self.stage,
            watermark,
            run.run_id,
            |run_id, data| {
                if run_id == run.run_id {
                    for h in decode_hashes(data) {
                        claims.claim(h);
                    }
                } else if self.across_runs {
                    let mut f = tempfile::tempfile_in(&dir)
                        .map_err(|e| Error::io(dir.display().to_string(), e))?;
                    f.write_all(data)
                        .map_err(|e| Error::io(dir.display().to_string(), e))?;
                    runs.push((f, data.len() as u64 / 16));
                    newest = newest.max(run_id);
                }
                Ok(())
            },
        )?;
        let delivered = run
            .state
            .last_delivered_run(run.job, run.run_id)?
            .unwrap_or(0);
        if self.across_runs && (!runs.is_empty() || old.is_none()) {
            merge_index(
                &idx_path,
                old.as_ref(),
                runs,
                delivered.max(newest),
                self.columns_fp,
            )?;
            old = read_header(&idx_path)?;
        }
        // Folded into the index (or, without across_runs, of no further use).
        run.state.drop_part_data(run.job, self.stage, delivered)?;
        let index = match (&old, self.across_runs) {
            (Some(h), true) if h.count > 0 => {
                let f = File::open(&idx_path)
                    .map_err(|e| Error::io(idx_path.display().to_string(), e))?;
                // SAFETY: the index is only ever replaced by rename, never
                // written in place, so the mapped file does not change.
                let map = unsafe { memmap2::Mmap::map(&f) }
                    .map_err(|e| Error::io(idx_path.display().to_string(), e))?;
                if map.len() < HEADER + h.count as usize * 16 {
                    return Err(Error::Config(format!(
                        "{} is truncated; delete {} to start deduplicating afresh",
                        idx_path.display(),
                        dir.display()
                    )));
                }
                Index {
                    map: Some(map),
                    count: h.count as usize,
                }
            }
            _ => Index {
                map: None,
                count: 0,
            },
        };
        self.dropped.store(0, Ordering::Relaxed);
        *self.run.write().expect("dedupe lock") = Some(Arc::new(RunShared {
            hash_key,
            claims,
            index,
            spill_dir: dir,
        }));
        Ok(())
    }

    fn start(&self) -> Result<Box<dyn Stage>> {
        let shared = self
            .run
            .read()
            .expect("dedupe lock")
            .clone()
            .ok_or_else(|| Error::Internal("dedupe stage started before its run began".into()))?;
        Ok(Box::new(Deduper {
            shared,
            schema: self.schema.clone(),
            stage: self.stage,
            keys: RowConverter::new(self.key_fields.clone())
                .map_err(|e| Error::Internal(e.to_string()))?,
            key_idx: self.key_idx.clone(),
            last: match (&self.order_fields, self.order_idx) {
                (Some(f), Some(i)) => Some(KeepLast {
                    order: RowConverter::new(f.clone())
                        .map_err(|e| Error::Internal(e.to_string()))?,
                    order_idx: i,
                    best: HashMap::default(),
                    spill: None,
                    seq: 0,
                }),
                _ => None,
            },
            delivered: Vec::new(),
            dropped: self.dropped.clone(),
        }))
    }

    fn report(&self) -> Option<StageReport> {
        Some(StageReport {
            kind: "dedupe",
            dropped: self.dropped.load(Ordering::Relaxed),
            note: None,
        })
    }
}

/// A partition's rows held back until its input ends (`keep = "last"`).
struct KeepLast {
    order: RowConverter,
    order_idx: usize,
    /// Key hash → (order value in row format, sequence number of the row).
    best: HashMap<u128, (Box<[u8]>, u64), BuildHasherDefault<PassThrough>>,
    spill: Option<arrow::ipc::writer::StreamWriter<BufWriter<File>>>,
    seq: u64,
}

struct Deduper {
    shared: Arc<RunShared>,
    schema: SchemaRef,
    stage: usize,
    keys: RowConverter,
    key_idx: Vec<usize>,
    last: Option<KeepLast>,
    delivered: Vec<u128>,
    dropped: Arc<AtomicU64>,
}

impl Deduper {
    fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u128>> {
        let cols: Vec<ArrayRef> = self
            .key_idx
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let rows: Rows = self
            .keys
            .convert_columns(&cols)
            .map_err(|e| Error::Internal(format!("stage {} (dedupe): {e}", self.stage)))?;
        Ok(rows
            .iter()
            .map(|r| {
                let h = blake3::keyed_hash(&self.shared.hash_key, r.as_ref());
                u128::from_be_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
            })
            .collect())
    }

    /// Keeps the rows whose key nobody delivered yet, claiming them.
    fn deliver(
        &mut self,
        batch: &RecordBatch,
        hashes: &[u128],
        candidate: &[bool],
    ) -> Result<RecordBatch> {
        let mut keep = Vec::with_capacity(hashes.len());
        let mut dropped = 0u64;
        for (h, c) in hashes.iter().zip(candidate) {
            let k = *c && !self.shared.index.contains(*h) && self.shared.claims.claim(*h);
            if k {
                self.delivered.push(*h);
            } else {
                dropped += 1;
            }
            keep.push(k);
        }
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        if dropped == 0 {
            return Ok(batch.clone());
        }
        arrow::compute::filter_record_batch(batch, &BooleanArray::from(keep))
            .map_err(|e| Error::Internal(format!("stage {} (dedupe): {e}", self.stage)))
    }

    fn spill_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!(
            "stage {} (dedupe): spilling held rows under {}: {e}",
            self.stage,
            self.shared.spill_dir.display()
        ))
    }
}

impl Stage for Deduper {
    fn process(&mut self, batch: RecordBatch, _rejects: &mut Rejects) -> Result<RecordBatch> {
        let hashes = self.hashes(&batch)?;
        let Some(last) = &mut self.last else {
            return self.deliver(&batch, &hashes, &vec![true; hashes.len()]);
        };
        let order = last
            .order
            .convert_columns(&[batch.column(last.order_idx).clone()])
            .map_err(|e| Error::Internal(format!("dedupe order_by: {e}")))?;
        for (i, h) in hashes.iter().enumerate() {
            let seq = last.seq + i as u64;
            let o = order.row(i);
            match last.best.get_mut(h) {
                Some((best, s)) if o.as_ref() >= best.as_ref() => {
                    *best = o.as_ref().into();
                    *s = seq;
                }
                Some(_) => {}
                None => {
                    last.best.insert(*h, (o.as_ref().into(), seq));
                }
            }
        }
        last.seq += batch.num_rows() as u64;
        if last.spill.is_none() {
            let f = tempfile::tempfile_in(&self.shared.spill_dir)
                .map_err(|e| Error::io(self.shared.spill_dir.display().to_string(), e))?;
            let w = arrow::ipc::writer::StreamWriter::try_new(BufWriter::new(f), &self.schema)
                .map_err(|e| Error::Internal(format!("dedupe spill: {e}")))?;
            self.last.as_mut().expect("keep last").spill = Some(w);
        }
        let last = self.last.as_mut().expect("keep last");
        if let Err(e) = last.spill.as_mut().expect("spill").write(&batch) {
            return Err(self.spill_error(e));
        }
        Ok(batch.slice(0, 0))
    }

    fn finish(&mut self, _rejects: &mut Rejects) -> Result<Vec<RecordBatch>> {
        let Some(mut last) = self.last.take() else {
            return Ok(Vec::new());
        };
        let Some(mut w) = last.spill.take() else {
            return Ok(Vec::new());
        };
        let file = (|| -> std::result::Result<File, String> {
            w.finish().map_err(|e| e.to_string())?;
            let mut f = w
                .into_inner()
                .map_err(|e| e.to_string())?
                .into_inner()
                .map_err(|e| e.to_string())?;
            f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            Ok(f)
        })()
        .map_err(|e| self.spill_error(e))?;
        let reader = arrow::ipc::reader::StreamReader::try_new(BufReader::new(file), None)
            .map_err(|e| self.spill_error(e))?;
        let mut out = Vec::new();
        let mut seq = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| self.spill_error(e))?;
            let hashes = self.hashes(&batch)?;
            let winners: Vec<bool> = hashes
                .iter()
                .enumerate()
                .map(|(i, h)| last.best.get(h).is_some_and(|(_, s)| *s == seq + i as u64))
                .collect();
            seq += batch.num_rows() as u64;
            let kept = self.deliver(&batch, &hashes, &winners)?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        Ok(out)
    }

    fn commit_data(&mut self) -> Result<Option<Vec<u8>>> {
        self.delivered.sort_unstable();
        self.delivered.dedup();
        let mut data = Vec::with_capacity(self.delivered.len() * 16);
        for h in &self.delivered {
            data.extend_from_slice(&h.to_be_bytes());
        }
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_index_is_sorted_unique_and_found_by_binary_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.idx");
        let run = |v: &[u128]| {
            let mut f = tempfile::tempfile().unwrap();
            for h in v {
                f.write_all(&h.to_be_bytes()).unwrap();
            }
            (f, v.len() as u64)
        };
        merge_index(&path, None, vec![run(&[1, 5, 9]), run(&[2, 5, 7])], 3, 42).unwrap();
        let h = read_header(&path).unwrap().unwrap();
        assert_eq!((h.watermark, h.count, h.columns), (3, 5, 42));
        merge_index(&path, Some(&h), vec![run(&[0, 9, u128::MAX])], 4, 42).unwrap();
        let h = read_header(&path).unwrap().unwrap();
        assert_eq!((h.watermark, h.count), (4, 7));
        let f = File::open(&path).unwrap();
        let idx = Index {
            map: Some(unsafe { memmap2::Mmap::map(&f) }.unwrap()),
            count: h.count as usize,
        };
        for k in [0, 1, 2, 5, 7, 9, u128::MAX] {
            assert!(idx.contains(k), "{k}");
        }
        for k in [3, 4, 6, 8, 10, u128::MAX - 1] {
            assert!(!idx.contains(k), "{k}");
        }
    }
}
