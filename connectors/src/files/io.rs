//! Blocking adapters between worker threads and async object stores.
//!
//! [`ChunkStream`] prefetches a byte range on the I/O runtime into a bounded
//! channel (two chunks ahead), so a reader thread parses one chunk while the
//! next is read. [`UploadWriter`] is a `std::io::Write` that streams into a
//! multipart upload, which becomes visible only on [`UploadWriter::finish`]
//! (for local files: a hidden staging file renamed into place).

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use tidex_engine::{Error, Result};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Default size of one read from storage.
pub const CHUNK: u64 = 8 << 20;

/// Byte chunks of a range of one file, read ahead on the I/O runtime.
pub struct ChunkStream {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    task: JoinHandle<()>,
}

impl ChunkStream {
    /// Starts reading `range` of `path` in chunks of `chunk` bytes.
    pub fn spawn(
        io: &Handle,
        store: Arc<dyn ObjectStore>,
        path: Path,
        display: String,
        range: std::ops::Range<u64>,
        chunk: u64,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let task = io.spawn(async move {
            let mut off = range.start;
            while off < range.end {
                let end = (off + chunk).min(range.end);
                let res = store
                    .get_range(&path, off..end)
                    .await
                    .map_err(|e| Error::io(format!("reading {display} bytes {off}..{end}"), e));
                let failed = res.is_err();
                if tx.send(res).await.is_err() || failed {
                    return;
                }
                off = end;
            }
        });
        ChunkStream { rx, task }
    }

    /// Like [`Self::spawn`], reading a local file directly when `local` is
    /// given: object_store zero-fills every buffer before reading into it,
    /// which costs as much CPU as the read itself.
    pub fn spawn_file(
        io: &Handle,
        store: Arc<dyn ObjectStore>,
        path: Path,
        local: Option<std::path::PathBuf>,
        display: String,
        range: std::ops::Range<u64>,
        chunk: u64,
    ) -> Self {
        let Some(fs_path) = local else {
            return Self::spawn(io, store, path, display, range, chunk);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let task = io.spawn_blocking(move || {
            let read = |file: &mut std::fs::File, off: u64, len: u64| -> std::io::Result<Bytes> {
                file.seek(SeekFrom::Start(off))?;
                let mut buf = Vec::with_capacity(len as usize);
                file.take(len).read_to_end(&mut buf)?;
                if (buf.len() as u64) < len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "file is shorter than when it was listed",
                    ));
                }
                Ok(Bytes::from(buf))
            };
            let mut file = match std::fs::File::open(&fs_path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::io(format!("opening {display}"), e)));
                    return;
                }
            };
            let mut off = range.start;
            while off < range.end {
                let end = (off + chunk).min(range.end);
                let res = read(&mut file, off, end - off)
                    .map_err(|e| Error::io(format!("reading {display} bytes {off}..{end}"), e));
                let failed = res.is_err();
                if tx.blocking_send(res).is_err() || failed {
                    return;
                }
                off = end;
            }
        });
        ChunkStream { rx, task }
    }

    /// The next chunk, or `None` at the end of the range.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        self.rx.blocking_recv().transpose()
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `Write` into a multipart upload; at most two parts in flight.
pub struct UploadWriter {
    io: Handle,
    upload: Option<Box<dyn MultipartUpload>>,
    buf: Vec<u8>,
    part_size: usize,
    inflight: std::collections::VecDeque<JoinHandle<object_store::Result<()>>>,
    written: u64,
    display: String,
}

impl UploadWriter {
    /// Starts an upload to `path`.
    pub fn create(
        io: &Handle,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        display: String,
    ) -> Result<Self> {
        let store = store.clone();
        let p = path.clone();
        let upload = io
            .block_on(async move { store.put_multipart(&p).await })
            .map_err(|e| Error::io(format!("creating {display}"), e))?;
        Ok(UploadWriter {
            io: io.clone(),
            upload: Some(upload),
            buf: Vec::with_capacity(CHUNK as usize),
            part_size: CHUNK as usize,
            inflight: Default::default(),
            written: 0,
            display,
        })
    }

    fn wait_one(&mut self) -> std::io::Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            match self.io.block_on(h) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        Ok(())
    }

    fn flush_part(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        while self.inflight.len() >= 2 {
            self.wait_one()?;
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.part_size));
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload already finished"))?;
        let fut = upload.put_part(PutPayload::from(data));
        self.inflight.push_back(self.io.spawn(fut));
        Ok(())
    }

    /// Completes the upload, making the object visible atomically.
    pub fn finish(mut self) -> Result<u64> {
        let display = self.display.clone();
        let err = |e: std::io::Error| Error::io(format!("writing {display}"), e);
        self.flush_part().map_err(err)?;
        while !self.inflight.is_empty() {
            self.wait_one().map_err(err)?;
        }
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| Error::Internal("upload finished twice".into()))?;
        self.io
            .block_on(async move { upload.complete().await })
            .map_err(|e| Error::io(format!("completing {}", self.display), e))?;
        Ok(self.written)
    }

    /// Abandons the upload; nothing becomes visible.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        for h in self.inflight.drain(..) {
            h.abort();
        }
        if let Some(mut upload) = self.upload.take() {
            let _ = self.io.block_on(async move { upload.abort().await });
        }
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        if self.upload.is_some() {
            self.abort_inner();
        }
    }
}

impl Write for UploadWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= self.part_size {
            self.flush_part()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Read + Seek` over an object, reading ranges of [`CHUNK`] bytes.
pub struct RangeReader {
    io: Handle,
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl RangeReader {
    /// A reader over `path` of `size` bytes.
    pub fn new(io: &Handle, store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        RangeReader {
            io: io.clone(),
            store,
            path,
            size,
            pos: 0,
            buf: Bytes::new(),
            buf_start: 0,
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let in_buf =
            self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            let end = (self.pos + CHUNK.max(out.len() as u64)).min(self.size);
            let (store, path, start) = (self.store.clone(), self.path.clone(), self.pos);
            self.buf = self
                .io
                .block_on(async move { store.get_range(&path, start..end).await })
                .map_err(std::io::Error::other)?;
            self.buf_start = self.pos;
        }
        let off = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - off);
        out[..n].copy_from_slice(&self.buf[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.size as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}
