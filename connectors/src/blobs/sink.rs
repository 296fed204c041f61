//! `[sink] type = "blobs"`: reassembles blob rows into files under a target
//! prefix, each optionally zstd-compressed (`.zst`) and/or encrypted
//! (`.tenc`, the framed format), and writes a manifest.
//!
//! Exactly once: a partition's files are written under the run's staging
//! directory beside the target (`.NAME.tidex/run-ID/data/…`), and the
//! partition commits by writing its manifest part (`part-00003.jsonl`)
//! atomically; a resumed run skips committed partitions and rewrites the
//! files of the others. Publishing reads the manifest parts in input order
//! and decides, per file, by content hash:
//!
//! * the first file with some content is `written` at its path;
//! * a later file of the same run with the same content is a `copy`: its
//!   staged bytes are dropped and the manifest points it at the first;
//! * with `dedupe = true`, content that an earlier run already delivered
//!   (recorded in the target's `_tidex_index.jsonl`) is `delivered`: not
//!   written again, the manifest points at where it already is.
//!
//! Then, as for file sinks: `overwrite` swaps a local directory in by two
//! renames (object stores: the old objects are deleted, the new moved in);
//! `append` moves the run's files in, replacing files at the same paths.
//! `_tidex_manifest.jsonl` always describes the latest run.
//!
//! A file's BLAKE3 is computed once: by the source (rows with a `blake3`
//! column carry it on each file's last row, and the sink takes it) or, for
//! rows without one, by the sink. The receiver checks it on restore
//! (`tidex decrypt`), end to end.

use super::{check_path, ManifestEntry, INDEX, MANIFEST};
use crate::files::io::UploadWriter;
use crate::files::location::Location;
use crate::files::sealed::{Encoded, EncryptOption, FileEncoding};
use crate::files::sink::Mode;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tidex_engine::error::Location as RowLocation;
use tidex_engine::{
    BuildContext, CommittedPart, ConnectorConfig, Error, PartitionInfo, PartitionWriter,
    PublishJournal, Result, RunInfo, Sink, SinkFactory, SpecError,
};

/// `[sink] type = "blobs"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobSinkConfig {
    /// Always `"blobs"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The target prefix: a directory (`out/docs/`) or `s3://bucket/prefix/`.
    pub url: String,
    /// `overwrite` (default), `append` (default and required with
    /// `dedupe = true`) or `fail`.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// `zstd` or `none` (default): compress each file (as `NAME.zst`, or
    /// inside `NAME.tenc` when encrypting).
    #[serde(default)]
    pub compression: Option<String>,
    /// zstd level, 1–22 (default 1).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Encrypt each file: `{ algorithm, key_id, key }` (see `tidex decrypt`).
    #[serde(default)]
    pub encrypt: Option<EncryptOption>,
    /// Skip content that earlier runs of this sink already delivered to the
    /// target (by BLAKE3, recorded in `_tidex_index.jsonl` there).
    #[serde(default)]
    pub dedupe: bool,
}

impl BlobSinkConfig {
    fn check(&self, cfg: &ConnectorConfig) -> Result<(Mode, Option<i32>), SpecError> {
        let level = crate::files::compress::zstd_level(cfg, self.compression_level)?;
        let zstd = match self
            .compression
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("none") => None,
            Some("zstd") => Some(level),
            Some(other) => {
                return Err(cfg.error(
                    "compression",
                    format!("unknown compression `{other}` for blobs; expected zstd or none"),
                ))
            }
        };
        if let Some(e) = &self.encrypt {
            e.check(cfg)?;
        }
        let mode = match (self.mode, self.dedupe) {
            (None, true) | (Some(Mode::Append), true) => Mode::Append,
            (Some(_), true) => return Err(cfg.error(
                "mode",
                "dedupe = true keeps what earlier runs delivered, so it needs mode = \"append\"",
            )),
            (m, false) => m.unwrap_or_default(),
        };
        Ok((mode, zstd))
    }
}

/// Registers `type = "blobs"` sinks.
pub struct BlobSinkFactory;

impl SinkFactory for BlobSinkFactory {
    fn kind(&self) -> &'static str {
        "blobs"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: BlobSinkConfig = cfg.parse()?;
        c.check(cfg).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Sink>> {
        let c: BlobSinkConfig = cfg.parse()?;
        let (mode, zstd) = c.check(cfg)?;
        let seal = c.encrypt.as_ref().map(|e| e.load(cfg)).transpose()?;
        let loc = Location::parse(&c.url)?;
        if loc.glob.is_some() {
            return Err(cfg.error("url", "a sink URL cannot contain a glob").into());
        }
        let name = loc.path.filename().unwrap_or("").to_string();
        let staging_name = if name.is_empty() {
            ".tidex-staging".to_string()
        } else {
            format!(".{name}.tidex")
        };
        let parent = Path::from_iter(
            loc.path
                .parts()
                .take(loc.path.parts().count().saturating_sub(1)),
        );
        let staging_fs = loc
            .local
            .as_ref()
            .map(|l| l.parent().unwrap_or(l).join(&staging_name));
        Ok(Arc::new(BlobSink {
            inner: Arc::new(Inner {
                mode,
                dedupe: c.dedupe,
                encoding: FileEncoding {
                    zstd,
                    seal,
                    threads: tidex_engine::stages::frame::default_threads(),
                },
                staging: parent.join(staging_name),
                staging_fs,
                io: ctx.io.clone(),
                loc,
            }),
        }))
    }
}

struct Inner {
    mode: Mode,
    dedupe: bool,
    encoding: FileEncoding,
    loc: Location,
    staging: Path,
    staging_fs: Option<PathBuf>,
    io: tokio::runtime::Handle,
}

/// The blob sink.
pub struct BlobSink {
    inner: Arc<Inner>,
}

fn join_rel(base: &Path, rel: &str) -> Path {
    rel.split('/').fold(base.clone(), |p, c| p.join(c))
}

fn join_rel_fs(base: &std::path::Path, rel: &str) -> PathBuf {
    rel.split('/').fold(base.to_path_buf(), |p, c| p.join(c))
}

impl Inner {
    fn run_dir(&self, run_id: i64) -> Path {
        self.staging.clone().join(format!("run-{run_id}"))
    }

    fn run_dir_fs(&self, run_id: i64) -> Option<PathBuf> {
        self.staging_fs
            .as_ref()
            .map(|s| s.join(format!("run-{run_id}")))
    }

    fn part_manifest(&self, run_id: i64, index: usize) -> Path {
        self.run_dir(run_id).join(format!("part-{index:05}.jsonl"))
    }

    fn staged(&self, run_id: i64, stored: &str) -> Path {
        join_rel(&self.run_dir(run_id).join("data"), stored)
    }

    fn staged_fs(&self, run_id: i64, stored: &str) -> Option<PathBuf> {
        self.run_dir_fs(run_id)
            .map(|d| join_rel_fs(&d.join("data"), stored))
    }

    fn io_err(&self, what: &str, e: impl Into<tidex_engine::error::BoxError>) -> Error {
        Error::io(what.to_string(), e)
    }

    /// Writes a small object atomically: a temporary name renamed into
    /// place locally; one put (atomic by itself) on object stores.
    fn put_atomic(&self, path: &Path, fs: Option<PathBuf>, body: Vec<u8>) -> Result<()> {
        if let Some(fs) = fs {
            if let Some(d) = fs.parent() {
                std::fs::create_dir_all(d)
                    .map_err(|e| self.io_err(&format!("creating {}", d.display()), e))?;
            }
            let mut tmp = fs.clone().into_os_string();
            tmp.push(".partial");
            std::fs::write(&tmp, &body)
                .map_err(|e| self.io_err(&format!("writing {}", fs.display()), e))?;
            return std::fs::rename(&tmp, &fs)
                .map_err(|e| self.io_err(&format!("committing {}", fs.display()), e));
        }
        let store = self.loc.store.clone();
        let p = path.clone();
        self.io
            .block_on(async move { store.put(&p, PutPayload::from(body)).await })
            .map(|_| ())
            .map_err(|e| self.io_err(&format!("writing {}", self.loc.display(path)), e))
    }

    /// Reads a small object; `None` when it does not exist.
    fn read_small(&self, path: &Path, fs: Option<PathBuf>) -> Result<Option<Vec<u8>>> {
        if let Some(fs) = fs {
            return match std::fs::read(&fs) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.io_err(&format!("reading {}", fs.display()), e)),
            };
        }
        let store = self.loc.store.clone();
        let p = path.clone();
        match self
            .io
            .block_on(async move { store.get(&p).await?.bytes().await })
        {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.io_err(&format!("reading {}", self.loc.display(path)), e)),
        }
    }

    fn exists(&self, path: &Path) -> Result<bool> {
        let store = self.loc.store.clone();
        let p = path.clone();
        match self.io.block_on(async move { store.head(&p).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.io_err(&format!("checking {}", self.loc.display(path)), e)),
        }
    }

    fn delete(&self, path: &Path) -> Result<()> {
        let store = self.loc.store.clone();
        let p = path.clone();
        match self.io.block_on(async move { store.delete(&p).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io_err(&format!("deleting {}", self.loc.display(path)), e)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let store = self.loc.store.clone();
        let (f, t) = (from.clone(), to.clone());
        self.io
            .block_on(async move { store.rename(&f, &t).await })
            .map_err(|e| {
                self.io_err(
                    &format!(
                        "moving {} to {}",
                        self.loc.display(from),
                        self.loc.display(to)
                    ),
                    e,
                )
            })
    }

    fn target_exists(&self) -> Result<bool> {
        if let Some(l) = &self.loc.local {
            return Ok(l.is_dir()
                && std::fs::read_dir(l)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false));
        }
        Ok(!self.loc.list_under(&self.io, &self.loc.path)?.is_empty())
    }

    fn cleanup(&self, run_id: i64) -> Result<()> {
        if let Some(s) = &self.staging_fs {
            let run = s.join(format!("run-{run_id}"));
            match std::fs::remove_dir_all(&run) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_err(&format!("removing {}", run.display()), e)),
            }
            let _ = std::fs::remove_dir_all(s.join(format!("old-{run_id}")));
            let _ = std::fs::remove_dir(s); // only when empty
            return Ok(());
        }
        for meta in self.loc.list_under(&self.io, &self.run_dir(run_id))? {
            self.delete(&meta.location)?;
        }
        Ok(())
    }

    /// The content index of earlier runs: BLAKE3 → stored object.
    fn load_index(&self) -> Result<HashMap<String, String>> {
        let path = self.loc.child(INDEX);
        let fs = self.loc.local.as_ref().map(|l| l.join(INDEX));
        let Some(body) = self.read_small(&path, fs)? else {
            return Ok(HashMap::new());
        };
        let mut map = HashMap::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let e: IndexEntry = serde_json::from_slice(line).map_err(|e| {
                Error::bad_data(
                    RowLocation {
                        file: self.loc.display(&self.loc.child(INDEX)),
                        row: Some(i as u64 + 1),
                        ..Default::default()
                    },
                    format!("not a tidex content index line: {e}"),
                )
            })?;
            map.insert(e.blake3, e.stored);
        }
        Ok(map)
    }
}

#[derive(serde::Serialize, Deserialize)]
struct IndexEntry {
    blake3: String,
    stored: String,
}

/// What publishing does with one staged file.
struct Decision {
    entry: ManifestEntry,
    /// Move the staged object to `entry.stored` (else drop it).
    keep: bool,
}

impl BlobSink {
    fn decide(&self, run: &RunInfo, parts: &[CommittedPart]) -> Result<Vec<Decision>> {
        let inner = &self.inner;
        let mut entries = Vec::new();
        for p in parts {
            let path = inner.part_manifest(run.run_id, p.index);
            let fs = inner
                .run_dir_fs(run.run_id)
                .map(|d| d.join(format!("part-{:05}.jsonl", p.index)));
            let body = inner.read_small(&path, fs)?.ok_or_else(|| {
                Error::Config(format!(
                    "the staged manifest of partition {} ({}) is gone; run again with --restart",
                    p.index,
                    inner.loc.display(&path)
                ))
            })?;
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let e: ManifestEntry = serde_json::from_slice(line).map_err(|e| {
                    Error::Internal(format!("staged manifest {}: {e}", inner.loc.display(&path)))
                })?;
                entries.push(e);
            }
        }
        let mut index = if inner.dedupe {
            inner.load_index()?
        } else {
            HashMap::new()
        };
        // Objects this run writes replace what earlier runs stored under
        // the same names, so the index must not point at them any more.
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut rewritten = HashSet::new();
        for e in &entries {
            if !index.contains_key(&e.blake3)
                && seen.insert(e.blake3.clone(), e.stored.clone()).is_none()
            {
                rewritten.insert(e.stored.clone());
            }
        }
        index.retain(|_, stored| !rewritten.contains(stored));
        seen.clear();
        let mut out = Vec::with_capacity(entries.len());
        for mut e in entries {
            let keep = if let Some(stored) = index.get(&e.blake3) {
                e.stored = stored.clone();
                e.status = "delivered".into();
                false
            } else if let Some(stored) = seen.get(&e.blake3) {
                e.stored = stored.clone();
                e.status = "copy".into();
                false
            } else {
                seen.insert(e.blake3.clone(), e.stored.clone());
                true
            };
            out.push(Decision { entry: e, keep });
        }
        Ok(out)
    }

    fn manifest_body(decisions: &[Decision]) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        for d in decisions {
            serde_json::to_writer(&mut body, &d.entry)
                .map_err(|e| Error::Internal(e.to_string()))?;
            body.push(b'\n');
        }
        Ok(body)
    }

    /// The index after this run: earlier content still in place plus what
    /// this run wrote.
    fn index_body(&self, decisions: &[Decision]) -> Result<Vec<u8>> {
        let mut index = self.inner.load_index()?;
        let written: HashSet<&str> = decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.entry.stored.as_str())
            .collect();
        index.retain(|_, s| !written.contains(s.as_str()));
        for d in decisions.iter().filter(|d| d.keep) {
            index.insert(d.entry.blake3.clone(), d.entry.stored.clone());
        }
        let mut v: Vec<_> = index.into_iter().collect();
        v.sort();
        let mut body = Vec::new();
        for (blake3, stored) in v {
            serde_json::to_writer(&mut body, &IndexEntry { blake3, stored })
                .map_err(|e| Error::Internal(e.to_string()))?;
            body.push(b'\n');
        }
        Ok(body)
    }

    /// Local `overwrite`: settle the staged data directory (drop copies and
    /// leftovers of interrupted attempts, add the manifest), then swap it in.
    fn publish_local_swap(
        &self,
        run: &RunInfo,
        decisions: &[Decision],
        journal: &dyn PublishJournal,
    ) -> Result<()> {
        let inner = &self.inner;
        let (Some(target), Some(run_fs)) = (&inner.loc.local, inner.run_dir_fs(run.run_id)) else {
            return Err(Error::Internal("local swap without local paths".into()));
        };
        let data = run_fs.join("data");
        let old = inner
            .staging_fs
            .as_ref()
            .map(|s| s.join(format!("old-{}", run.run_id)))
            .ok_or_else(|| Error::Internal("no staging directory".into()))?;
        let step = journal.step()?;
        if step.is_none() {
            std::fs::create_dir_all(&data)
                .map_err(|e| inner.io_err(&format!("creating {}", data.display()), e))?;
            let keep: HashSet<PathBuf> = decisions
                .iter()
                .filter(|d| d.keep)
                .map(|d| join_rel_fs(&data, &d.entry.stored))
                .collect();
            remove_unlisted(&data, &keep)?;
            inner.put_atomic(
                &Path::from(MANIFEST),
                Some(data.join(MANIFEST)),
                Self::manifest_body(decisions)?,
            )?;
            journal.record("swapping")?;
        }
        if step.as_deref() != Some("swapped") {
            if data.exists() {
                if target.exists() {
                    std::fs::rename(target, &old).map_err(|e| {
                        inner.io_err(&format!("moving {} aside", target.display()), e)
                    })?;
                }
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p)
                        .map_err(|e| inner.io_err(&format!("creating {}", p.display()), e))?;
                }
                std::fs::rename(&data, target).map_err(|e| {
                    inner.io_err(&format!("moving output into {}", target.display()), e)
                })?;
            }
            journal.record("swapped")?;
        }
        Ok(())
    }

    /// `append`, and `overwrite` on object stores: move the run's files in
    /// one by one, then write the manifest (and index).
    fn publish_moves(
        &self,
        run: &RunInfo,
        decisions: &[Decision],
        journal: &dyn PublishJournal,
    ) -> Result<()> {
        let inner = &self.inner;
        let step = journal.step()?;
        if step.as_deref() == Some("published") {
            return Ok(());
        }
        if step.is_none() && inner.mode == Mode::Overwrite {
            for meta in inner.loc.list_under(&inner.io, &inner.loc.path)? {
                inner.delete(&meta.location)?;
            }
            journal.record("cleared")?;
        }
        // The index is read before anything moves: moving changes nothing
        // it records until it is rewritten at the end.
        let index = if inner.dedupe {
            Some(self.index_body(decisions)?)
        } else {
            None
        };
        for d in decisions {
            let stored = &d.entry.stored;
            if !d.keep {
                // Its own staged bytes, under its own name, are not needed.
                let own = format!("{}{}", d.entry.path, inner.encoding.suffix());
                self.drop_staged(run.run_id, &own)?;
                continue;
            }
            match (inner.staged_fs(run.run_id, stored), &inner.loc.local) {
                (Some(from), Some(target)) => {
                    let to = join_rel_fs(target, stored);
                    if from.exists() {
                        if let Some(p) = to.parent() {
                            std::fs::create_dir_all(p).map_err(|e| {
                                inner.io_err(&format!("creating {}", p.display()), e)
                            })?;
                        }
                        std::fs::rename(&from, &to).map_err(|e| {
                            inner.io_err(&format!("moving output to {}", to.display()), e)
                        })?;
                    }
                }
                _ => {
                    let from = inner.staged(run.run_id, stored);
                    if inner.exists(&from)? {
                        inner.rename(&from, &join_rel(&inner.loc.path, stored))?;
                    }
                }
            }
        }
        let local = inner.loc.local.clone();
        inner.put_atomic(
            &inner.loc.child(MANIFEST),
            local.as_ref().map(|l| l.join(MANIFEST)),
            Self::manifest_body(decisions)?,
        )?;
        if let Some(body) = index {
            inner.put_atomic(
                &inner.loc.child(INDEX),
                local.as_ref().map(|l| l.join(INDEX)),
                body,
            )?;
        }
        journal.record("published")?;
        Ok(())
    }

    fn drop_staged(&self, run_id: i64, stored: &str) -> Result<()> {
        let inner = &self.inner;
        match inner.staged_fs(run_id, stored) {
            Some(fs) => match std::fs::remove_file(&fs) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(inner.io_err(&format!("removing {}", fs.display()), e)),
            },
            None => inner.delete(&inner.staged(run_id, stored)),
        }
    }
}

/// Removes every file under `dir` that is not in `keep`, and the
/// directories left empty.
fn remove_unlisted(dir: &std::path::Path, keep: &HashSet<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let p = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            remove_unlisted(&p, keep)?;
            let _ = std::fs::remove_dir(&p); // only when empty
        } else if !keep.contains(&p) {
            std::fs::remove_file(&p)
                .map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
        }
    }
    Ok(())
}

impl Sink for BlobSink {
    fn prepare(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        _committed: &[CommittedPart],
    ) -> Result<()> {
        for (name, ok) in [
            ("path", &[DataType::Utf8, DataType::LargeUtf8][..]),
            ("offset", &[DataType::UInt64, DataType::Int64][..]),
            ("size", &[DataType::UInt64, DataType::Int64][..]),
            ("chunk", &[DataType::LargeBinary, DataType::Binary][..]),
        ] {
            let found = schema.field_with_name(name).ok().map(|f| f.data_type());
            if !found.is_some_and(|t| ok.contains(t)) {
                return Err(Error::Config(format!(
                    "the blobs sink needs the column `{name}` ({}) that the blobs source writes; the input has {}",
                    ok.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
                    schema
                        .fields()
                        .iter()
                        .map(|f| format!("{}: {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let inner = &self.inner;
        if !run.resumed && inner.mode == Mode::Fail && inner.target_exists()? {
            return Err(Error::Config(format!(
                "{} already exists and the sink's mode is \"fail\"",
                inner.loc.url
            )));
        }
        if let Some(d) = inner.run_dir_fs(run.run_id) {
            std::fs::create_dir_all(d.join("data"))
                .map_err(|e| inner.io_err(&format!("creating {}", d.display()), e))?;
        }
        Ok(())
    }

    fn open(
        &self,
        run: &RunInfo,
        partition: &PartitionInfo,
        _schema: SchemaRef,
    ) -> Result<Box<dyn PartitionWriter>> {
        Ok(Box::new(BlobPartWriter {
            inner: self.inner.clone(),
            run_id: run.run_id,
            index: partition.index,
            rows: 0,
            bytes: 0,
            cur: None,
            entries: Vec::new(),
            last_dir: None,
        }))
    }

    fn publish(
        &self,
        run: &RunInfo,
        _schema: &SchemaRef,
        parts: &[CommittedPart],
        journal: &dyn PublishJournal,
    ) -> Result<String> {
        let decisions = self.decide(run, parts)?;
        let local_swap = self.inner.mode == Mode::Overwrite && self.inner.loc.local.is_some();
        if local_swap {
            self.publish_local_swap(run, &decisions, journal)?;
        } else {
            self.publish_moves(run, &decisions, journal)?;
        }
        self.inner.cleanup(run.run_id)?;
        let copies = decisions.iter().filter(|d| !d.keep).count();
        tracing::info!(
            files = decisions.len(),
            stored_once = copies,
            "blobs published"
        );
        Ok(self.inner.loc.url.clone())
    }

    fn discard(&self, run_id: i64) -> Result<()> {
        self.inner.cleanup(run_id)
    }

    fn describe(&self) -> String {
        self.inner.loc.url.clone()
    }
}

/// Where a staged file's bytes go.
enum Out {
    Local(std::io::BufWriter<std::fs::File>, PathBuf),
    Upload(UploadWriter),
}

impl Write for Out {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::Local(f, _) => f.write(data),
            Out::Upload(u) => u.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Local(f, _) => f.flush(),
            Out::Upload(u) => u.flush(),
        }
    }
}

/// Counts the bytes that reach storage.
struct Counted<W: Write>(W, u64);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(data)?;
        self.1 += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

struct OpenFile {
    rel: String,
    size: u64,
    modified: Option<i64>,
    next: u64,
    /// `None` when the rows carry the hash.
    hasher: Option<blake3::Hasher>,
    out: Encoded<Counted<Out>>,
    stored: String,
    display: String,
}

struct BlobPartWriter {
    inner: Arc<Inner>,
    run_id: i64,
    index: usize,
    rows: u64,
    bytes: u64,
    cur: Option<OpenFile>,
    entries: Vec<ManifestEntry>,
    /// The staging folder created last.
    last_dir: Option<PathBuf>,
}

fn bad(file: &str, offset: Option<u64>, reason: String) -> Error {
    Error::bad_data(
        RowLocation {
            file: file.to_string(),
            byte_offset: offset,
            ..Default::default()
        },
        reason,
    )
}

impl BlobPartWriter {
    fn open_file(
        &mut self,
        rel: &str,
        size: u64,
        modified: Option<i64>,
        hashed: bool,
    ) -> Result<OpenFile> {
        let inner = self.inner.clone();
        let stored = format!("{rel}{}", inner.encoding.suffix());
        let path = inner.staged(self.run_id, &stored);
        let display = rel.to_string();
        let out = match inner.staged_fs(self.run_id, &stored) {
            Some(fs) => {
                // Files come sorted by path: most share the last one's folder.
                if let Some(d) = fs.parent().filter(|d| self.last_dir.as_deref() != Some(*d)) {
                    std::fs::create_dir_all(d)
                        .map_err(|e| inner.io_err(&format!("creating {}", d.display()), e))?;
                    self.last_dir = Some(d.to_path_buf());
                }
                let f = std::fs::File::create(&fs)
                    .map_err(|e| inner.io_err(&format!("creating {}", fs.display()), e))?;
                // Encoders write whole blocks; the buffer only gathers tags
                // and the small writes of small files.
                Out::Local(std::io::BufWriter::with_capacity(128 << 10, f), fs)
            }
            None => Out::Upload(UploadWriter::create(
                &inner.io,
                &inner.loc.store,
                &path,
                inner.loc.display(&path),
            )?),
        };
        let out = inner.encoding.wrap(Counted(out, 0), &display)?;
        Ok(OpenFile {
            rel: rel.to_string(),
            size,
            modified,
            next: 0,
            hasher: (!hashed).then(blake3::Hasher::new),
            out,
            stored,
            display,
        })
    }

    fn finish_file(&mut self, declared: Option<&str>) -> Result<()> {
        let f = self.cur.take().expect("a file is open");
        let hash = match (&f.hasher, declared) {
            (Some(h), _) => h.finalize().to_hex().to_string(),
            (None, Some(d)) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                d.to_ascii_lowercase()
            }
            (None, d) => {
                return Err(bad(
                    &f.display,
                    None,
                    format!(
                        "the last row of this blob has {} in its blake3 column, not a BLAKE3 hash",
                        d.map_or("NULL".to_string(), |d| format!("{d:?}"))
                    ),
                ))
            }
        };
        let counted = f
            .out
            .finish()
            .map_err(|e| self.inner.io_err(&format!("writing {}", f.display), e))?;
        self.bytes += counted.1;
        match counted.0 {
            Out::Local(w, fs) => {
                w.into_inner().map_err(|e| {
                    self.inner
                        .io_err(&format!("writing {}", fs.display()), e.into_error())
                })?;
            }
            Out::Upload(u) => {
                u.finish()?;
            }
        }
        self.entries.push(ManifestEntry {
            path: f.rel,
            size: f.size,
            blake3: hash,
            modified: f.modified,
            stored: f.stored,
            status: "written".into(),
        });
        Ok(())
    }
}

fn write_run(cur: &mut OpenFile, bytes: &[u8]) -> Result<()> {
    cur.out
        .write_all(bytes)
        .map_err(|e| Error::io(format!("writing {}", cur.display), e))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Config(format!("the blobs sink needs a `{name}` column")))
}

fn cast(col: &arrow::array::ArrayRef, to: &DataType) -> Result<arrow::array::ArrayRef> {
    arrow::compute::cast(col, to).map_err(|e| Error::Internal(format!("blob column: {e}")))
}

impl PartitionWriter for BlobPartWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let path = cast(column(batch, "path")?, &DataType::Utf8)?;
        let path = path.as_string::<i32>();
        let offset = cast(column(batch, "offset")?, &DataType::UInt64)?;
        let offset = offset.as_primitive::<arrow::datatypes::UInt64Type>();
        let size = cast(column(batch, "size")?, &DataType::UInt64)?;
        let size = size.as_primitive::<arrow::datatypes::UInt64Type>();
        let chunk = column(batch, "chunk")?;
        let chunk = if chunk.data_type() == &DataType::LargeBinary {
            chunk.clone()
        } else {
            cast(chunk, &DataType::LargeBinary)?
        };
        let chunk = chunk.as_binary::<i64>();
        let hash = match batch.column_by_name("blake3") {
            Some(c) => Some(cast(c, &DataType::Utf8)?),
            None => None,
        };
        let hash = hash.as_ref().map(|h| h.as_string::<i32>());
        let modified = match batch.column_by_name("modified") {
            Some(c) => Some(cast(
                c,
                &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )?),
            None => None,
        };
        let modified = modified
            .as_ref()
            .map(|m| m.as_primitive::<arrow::datatypes::TimestampMicrosecondType>());
        let (values, offs) = (chunk.value_data(), chunk.value_offsets());
        let mut run: Option<(usize, usize)> = None;
        for r in 0..batch.num_rows() {
            if path.is_null(r) || offset.is_null(r) || size.is_null(r) || chunk.is_null(r) {
                return Err(bad(
                    "blob rows",
                    None,
                    format!("row {r} of a batch has a NULL path, offset, size or chunk"),
                ));
            }
            let (p, off, sz, data) = (
                path.value(r),
                offset.value(r),
                size.value(r),
                chunk.value(r),
            );
            if let Some(cur) = &self.cur {
                if cur.rel != p {
                    return Err(bad(
                        &cur.display,
                        Some(cur.next),
                        format!(
                            "the rows of this blob end at byte {} of its {} bytes ({p} follows)",
                            cur.next, cur.size
                        ),
                    ));
                }
            } else {
                check_path(p).map_err(|why| bad(p, None, why))?;
                if off != 0 {
                    return Err(bad(
                        p,
                        Some(off),
                        format!("the first row of this blob is at offset {off}, not 0 (rows missing or out of order)"),
                    ));
                }
                let m = modified.and_then(|m| (!m.is_null(r)).then(|| m.value(r)));
                self.cur = Some(self.open_file(p, sz, m, hash.is_some())?);
            }
            let cur = self.cur.as_mut().expect("a file is open");
            if off != cur.next || sz != cur.size || off + data.len() as u64 > sz {
                return Err(bad(
                    &cur.display,
                    Some(off),
                    format!(
                        "row out of sequence: {} bytes at offset {off} of a {sz}-byte blob, expected offset {} of {}",
                        data.len(),
                        cur.next,
                        cur.size
                    ),
                ));
            }
            if let Some(h) = &mut cur.hasher {
                h.update(data);
            }
            // A file's consecutive rows lie back to back in the value
            // buffer: they go to the encoder in one write, which lets block
            // zstd compress them in place, in parallel.
            let (a, b) = (offs[r] as usize, offs[r + 1] as usize);
            run = match run {
                Some((s, e)) if e == a => Some((s, b)),
                Some((s, e)) => {
                    write_run(cur, &values[s..e])?;
                    Some((a, b))
                }
                None => Some((a, b)),
            };
            cur.next += data.len() as u64;
            self.rows += 1;
            if cur.next == cur.size {
                if let Some((s, e)) = run.take() {
                    write_run(cur, &values[s..e])?;
                }
                let declared = hash.and_then(|h| (!h.is_null(r)).then(|| h.value(r)));
                self.finish_file(declared)?;
            }
        }
        if let (Some(cur), Some((s, e))) = (self.cur.as_mut(), run) {
            write_run(cur, &values[s..e])?;
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<CommittedPart> {
        if let Some(cur) = &self.cur {
            return Err(bad(
                &cur.display,
                Some(cur.next),
                format!(
                    "the input ended inside this blob, at byte {} of {}",
                    cur.next, cur.size
                ),
            ));
        }
        let mut body = Vec::new();
        for e in &self.entries {
            serde_json::to_writer(&mut body, e).map_err(|e| Error::Internal(e.to_string()))?;
            body.push(b'\n');
        }
        let inner = &self.inner;
        let path = inner.part_manifest(self.run_id, self.index);
        let fs = inner
            .run_dir_fs(self.run_id)
            .map(|d| d.join(format!("part-{:05}.jsonl", self.index)));
        inner.put_atomic(&path, fs, body)?;
        Ok(CommittedPart {
            index: self.index,
            location: path.to_string(),
            rows: self.rows,
            bytes: self.bytes,
        })
    }

    fn abort(mut self: Box<Self>) {
        // An unfinished upload aborts when dropped; local files are left to
        // the run's cleanup.
        self.cur.take();
    }
}
