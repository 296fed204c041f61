//! The framed file format: per-file authenticated encryption (AES-256-GCM
//! or SM4-GCM) that streams a file of any size in bounded memory, and the
//! parallel block zstd that compresses before it. Blob sinks, tabular file
//! sinks with `encrypt = { … }` and `tidex decrypt` all use it.
//!
//! # Format (version 1)
//!
//! ```text
//! header   "TXEF"            4  magic
//!          version = 1       1
//!          algorithm         1  1 = AES-256-GCM, 2 = SM4-GCM
//!          flags             1  bit 0: the plaintext is zstd (concatenated frames); other bits 0
//!          chunk_log2        1  plaintext bytes per chunk = 2^chunk_log2, 10..=24 (default 20: 1 MiB)
//!          salt             16  random per file
//!          key_check         8  HMAC-SHA256(key, "tidex-frame-v1 check" ‖ salt)[..8]
//!          key_id_len        1  1..=255
//!          key_id            n  UTF-8, names the key
//! chunks   ciphertext ‖ tag  every chunk but the last holds exactly 2^chunk_log2
//!                            plaintext bytes; the last holds 0..=2^chunk_log2
//! ```
//!
//! Each file is sealed under its own key and nonce prefix, derived from the
//! key and the salt with HMAC-SHA256 (`"tidex-frame-v1 key" ‖ salt`, first
//! 16 or 32 bytes; `"tidex-frame-v1 nonce" ‖ salt`, first 7 bytes), so
//! nonces never repeat across files encrypted with one key. Chunk `i` is
//! sealed with the 96-bit nonce `prefix(7) ‖ i as u32 big-endian ‖ last`,
//! where `last` is 1 for the final chunk and 0 otherwise, and the whole
//! header as associated data: the STREAM construction (Hoang, Reyhanitabar,
//! Rogaway, Vizár 2015). A changed header byte fails every chunk; a
//! reordered, dropped or duplicated chunk fails at its position; truncation
//! (even at a chunk boundary) leaves no chunk sealed as last; appended bytes
//! change the last chunk's length. An empty file is one empty last chunk
//! (16 bytes of tag). The key check tells a wrong key from tampering in
//! error messages; it is authenticated like the rest of the header.
//!
//! A reader releases a chunk's plaintext only after its tag verified, but a
//! truncated file is only known to be truncated at its end: writers of
//! plaintext (`tidex decrypt`) must write under a temporary name and rename
//! once the reader reached the end without error.
//!
//! Chunks are sealed and opened on up to `threads` scoped threads, a few
//! chunks per thread at a time, so SM4 (about 55 MB/s per core) keeps both
//! cores busy while memory stays at a few chunks per thread.

use super::crypt::{Algorithm, Cipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};

/// First bytes of every framed file.
pub const MAGIC: &[u8; 4] = b"TXEF";
/// Format version written and read.
pub const VERSION: u8 = 1;
/// Name suffix of framed files written by tidex.
pub const SUFFIX: &str = ".tenc";
/// Default chunk size: 2^20 = 1 MiB of plaintext.
pub const DEFAULT_CHUNK_LOG2: u8 = 20;
const FLAG_ZSTD: u8 = 1;
const TAG: usize = 16;
/// Chunks each thread seals or opens per round.
const PER_THREAD: usize = 2;
/// zstd input block: each block is an independent frame, compressed in parallel.
pub const ZSTD_BLOCK: usize = 1 << 20;

/// Why a framed file cannot be read. Callers add the file's name.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The data does not start with the framed format's magic.
    #[error("not a file encrypted by tidex (no TXEF header)")]
    NotFramed,
    /// The header is malformed or from a newer tidex.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// The file names another key id than the key given.
    #[error("encrypted with key id `{file}`, but the key given is `{given}`")]
    KeyId {
        /// Key id in the file.
        file: String,
        /// Key id of the key given.
        given: String,
    },
    /// The key does not match the file's key check.
    #[error("wrong key: the key given as `{key_id}` is not the key this file was encrypted with")]
    WrongKey {
        /// Key id.
        key_id: String,
    },
    /// A chunk failed authentication.
    #[error("authentication failed at chunk {chunk} (byte {offset}): the file was modified, truncated, reordered or extended")]
    Tampered {
        /// 0-based chunk index.
        chunk: u64,
        /// Byte offset of the chunk in the file.
        offset: u64,
    },
    /// The file ends before its last chunk.
    #[error("truncated: the file ends before its last chunk (byte {offset})")]
    Truncated {
        /// File length read.
        offset: u64,
    },
    /// The file holds more chunks than the format can number.
    #[error("too large for the framed format (more than 2^32 chunks)")]
    TooLarge,
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// A key by id. Its bytes never appear in `Debug` output, logs or errors.
#[derive(Clone)]
pub struct FrameKey {
    /// Names the key; written into every file header.
    pub key_id: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrameKey({}, {} bytes)", self.key_id, self.key.len())
    }
}

impl FrameKey {
    /// A key named `key_id` (1 to 255 bytes).
    pub fn new(key_id: &str, key: Vec<u8>) -> Result<Self, String> {
        if key_id.is_empty() || key_id.len() > 255 {
            return Err(format!(
                "key id {key_id:?}: expected a name of 1 to 255 bytes"
            ));
        }
        Ok(FrameKey {
            key_id: key_id.to_string(),
            key,
        })
    }

    /// Loads a key by reference (`env:NAME`, `file:PATH`; see
    /// [`super::keys::load`]).
    pub fn load(key_id: &str, spec: &str) -> Result<Self, String> {
        Self::new(key_id, super::keys::load(spec)?)
    }

    fn derive(&self, label: &str, salt: &[u8; 16]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        m.update(b"tidex-frame-v1 ");
        m.update(label.as_bytes());
        m.update(salt);
        m.finalize().into_bytes().into()
    }

    /// The file cipher, nonce prefix and key check for one file's salt.
    fn file_keys(
        &self,
        alg: Algorithm,
        salt: &[u8; 16],
    ) -> Result<(Cipher, [u8; 7], [u8; 8]), String> {
        if self.key.len() != alg.key_len() {
            return Err(format!(
                "key `{}` is {} bytes; {alg:?} needs {}",
                self.key_id,
                self.key.len(),
                alg.key_len()
            ));
        }
        let k = self.derive("key", salt);
        let cipher = Cipher::new(alg, &k[..alg.key_len()])?;
        let n = self.derive("nonce", salt);
        let c = self.derive("check", salt);
        Ok((
            cipher,
            n[..7].try_into().expect("7 bytes"),
            c[..8].try_into().expect("8 bytes"),
        ))
    }
}

/// A parsed file header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The cipher.
    pub algorithm: Algorithm,
    /// The plaintext is zstd (concatenated frames).
    pub compressed: bool,
    /// Plaintext bytes per chunk.
    pub chunk_size: usize,
    /// The key's name.
    pub key_id: String,
    salt: [u8; 16],
    check: [u8; 8],
    bytes: Vec<u8>,
}

impl Header {
    fn build(
        alg: Algorithm,
        compressed: bool,
        chunk_log2: u8,
        key_id: &str,
        salt: [u8; 16],
        check: [u8; 8],
    ) -> Vec<u8> {
        let mut h = Vec::with_capacity(33 + key_id.len());
        h.extend_from_slice(MAGIC);
        h.push(VERSION);
        h.push(alg.code());
        h.push(if compressed { FLAG_ZSTD } else { 0 });
        h.push(chunk_log2);
        h.extend_from_slice(&salt);
        h.extend_from_slice(&check);
        h.push(key_id.len() as u8);
        h.extend_from_slice(key_id.as_bytes());
        h
    }

    /// Reads and checks a header (not yet its authenticity: that comes
    /// with the first chunk).
    pub fn read(r: &mut impl Read) -> Result<Header, FrameError> {
        let mut fixed = [0u8; 33];
        let n = read_full(r, &mut fixed)?;
        if n < 4 || &fixed[..4] != MAGIC {
            return Err(FrameError::NotFramed);
        }
        if n < fixed.len() {
            return Err(FrameError::Truncated { offset: n as u64 });
        }
        if fixed[4] != VERSION {
            return Err(FrameError::BadHeader(format!(
                "format version {} (this tidex reads version {VERSION})",
                fixed[4]
            )));
        }
        let algorithm = Algorithm::from_code(fixed[5])
            .ok_or_else(|| FrameError::BadHeader(format!("unknown algorithm {}", fixed[5])))?;
        if fixed[6] & !FLAG_ZSTD != 0 {
            return Err(FrameError::BadHeader(format!(
                "unknown flags {:#04x}",
                fixed[6]
            )));
        }
        let log2 = fixed[7];
        if !(10..=24).contains(&log2) {
            return Err(FrameError::BadHeader(format!("chunk size 2^{log2}")));
        }
        let id_len = fixed[32] as usize;
        let mut id = vec![0u8; id_len];
        let got = read_full(r, &mut id)?;
        if got < id_len || id_len == 0 {
            return Err(if id_len == 0 {
                FrameError::BadHeader("empty key id".into())
            } else {
                FrameError::Truncated {
                    offset: (33 + got) as u64,
                }
            });
        }
        let key_id = String::from_utf8(id.clone())
            .map_err(|_| FrameError::BadHeader("key id is not UTF-8".into()))?;
        let mut bytes = fixed.to_vec();
        bytes.extend_from_slice(&id);
        Ok(Header {
            algorithm,
            compressed: fixed[6] & FLAG_ZSTD != 0,
            chunk_size: 1 << log2,
            key_id,
            salt: fixed[8..24].try_into().expect("16 bytes"),
            check: fixed[24..32].try_into().expect("8 bytes"),
            bytes,
        })
    }

    /// Header length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a header has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn nonce(prefix: &[u8; 7], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = last as u8;
    n
}

/// Threads to use for sealing and compressing: one per core. Asked once:
/// `available_parallelism` reads three cgroup files on every call, and
/// writers are made per file.
pub fn default_threads() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `f(index, item, state)` over `items`, on one scoped thread per
/// element of `states`, each taking a contiguous run of items. With one
/// state (or one item) it runs inline: spawning costs more than it saves.
fn par_each<T: Send, S: Send, R: Send>(
    items: &mut [T],
    states: &mut [S],
    f: impl Fn(usize, &mut T, &mut S) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    if n == 0 {
        return Vec::new();
    }
    let threads = states.len().clamp(1, n);
    if threads == 1 {
        let s = &mut states[0];
        return items
            .iter_mut()
            .enumerate()
            .map(|(i, it)| f(i, it, s))
            .collect();
    }
    let per = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(per)
            .zip(states.iter_mut())
            .enumerate()
            .map(|(t, (run, s))| {
                scope.spawn(move || {
                    run.iter_mut()
                        .enumerate()
                        .map(|(i, it)| f(t * per + i, it, s))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a sealing thread panicked"))
            .collect()
    })
}

/// Options for [`FrameWriter`].
#[derive(Debug, Clone, Copy)]
pub struct FrameOptions {
    /// The cipher.
    pub algorithm: Algorithm,
    /// Chunk size as a power of two (10..=24).
    pub chunk_log2: u8,
    /// Threads that seal chunks.
    pub threads: usize,
    /// Set the header's zstd flag: the caller writes zstd frames (see
    /// [`ZstdBlockWriter`]), which readers decompress.
    pub compressed: bool,
}

impl FrameOptions {
    /// Defaults: 1 MiB chunks, one thread per core, not compressed.
    pub fn new(algorithm: Algorithm) -> Self {
        FrameOptions {
            algorithm,
            chunk_log2: DEFAULT_CHUNK_LOG2,
            threads: default_threads(),
            compressed: false,
        }
    }
}

/// Encrypts a byte stream into the framed format. Call [`Self::finish`]:
/// dropping the writer leaves a file without its last chunk, which no
/// reader accepts.
pub struct FrameWriter<W: Write> {
    inner: W,
    cipher: Cipher,
    header: Vec<u8>,
    prefix: [u8; 7],
    counter: u32,
    chunk: usize,
    threads: usize,
    pending: Vec<u8>,
    written: u64,
    header_written: bool,
}

impl<W: Write> FrameWriter<W> {
    /// Starts a framed file on `inner` with a fresh random salt.
    pub fn new(inner: W, key: &FrameKey, opts: FrameOptions) -> Result<Self, String> {
        if !(10..=24).contains(&opts.chunk_log2) {
            return Err(format!(
                "chunk size 2^{} is outside 2^10..=2^24",
                opts.chunk_log2
            ));
        }
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
        let (cipher, prefix, check) = key.file_keys(opts.algorithm, &salt)?;
        let chunk = 1usize << opts.chunk_log2;
        let threads = opts.threads.max(1);
        Ok(FrameWriter {
            inner,
            cipher,
            header: Header::build(
                opts.algorithm,
                opts.compressed,
                opts.chunk_log2,
                &key.key_id,
                salt,
                check,
            ),
            prefix,
            counter: 0,
            chunk,
            threads,
            pending: Vec::new(),
            written: 0,
            header_written: false,
        })
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&self.header)?;
            self.written += self.header.len() as u64;
            self.header_written = true;
        }
        Ok(())
    }

    /// Seals the first `n` chunks of `pending`; the last of them is the
    /// file's final chunk when `last` (and may be short).
    fn seal(&mut self, n: usize, last: bool) -> std::io::Result<()> {
        self.write_header()?;
        let plain_len = if last {
            self.pending.len()
        } else {
            n * self.chunk
        };
        let first = self.counter;
        if (first as u64) + n as u64 > u32::MAX as u64 + 1 {
            return Err(FrameError::TooLarge.into());
        }
        // Sealed in place in `pending`; tags are written after each chunk,
        // so no byte is copied on the way out.
        let tags = {
            let mut items: Vec<&mut [u8]> =
                self.pending[..plain_len].chunks_mut(self.chunk).collect();
            if items.is_empty() {
                items.push(&mut []); // the empty last chunk of an empty file
            }
            let mut states = vec![(); self.threads.min(n)];
            let (cipher, header, prefix) = (&self.cipher, &self.header, &self.prefix);
            par_each(&mut items, &mut states, |i, c, _| {
                let is_last = last && i == n - 1;
                cipher.seal_in_place(
                    &nonce(prefix, first.wrapping_add(i as u32), is_last),
                    header,
                    c,
                )
            })
        };
        for (i, tag) in tags.iter().enumerate() {
            let start = i * self.chunk;
            let end = (start + self.chunk).min(plain_len);
            self.inner.write_all(&self.pending[start..end])?;
            self.inner.write_all(tag)?;
            self.written += (end - start + TAG) as u64;
        }
        self.counter = first.wrapping_add(n as u32);
        self.pending.drain(..plain_len);
        Ok(())
    }

    /// Seals the last chunk, flushes, and returns the inner writer and the
    /// bytes written to it.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        // Full chunks still pending go out as non-last first.
        let full = self.pending.len().saturating_sub(1) / self.chunk;
        if full > 0 {
            self.seal(full, false)?;
        }
        self.seal(1, true)?;
        self.inner.flush()?;
        Ok((self.inner, self.written))
    }

    /// Bytes written to the inner writer so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // Take at most one round's worth, so memory stays bounded whatever
        // the caller hands over at once.
        let round = self.chunk * self.threads * PER_THREAD;
        let room = (round + self.chunk)
            .saturating_sub(self.pending.len())
            .max(1);
        let take = data.len().min(room);
        self.pending.extend_from_slice(&data[..take]);
        // Seal full chunks only when more data follows them: the last chunk
        // must be sealed as last.
        let full = self.pending.len().saturating_sub(1) / self.chunk;
        if full >= self.threads * PER_THREAD {
            self.seal(full, false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a framed file as a stream. Each chunk is released only after
/// its tag verified; reaching the end (`read` returning 0) means the whole
/// file verified.
pub struct FrameReader<R: Read> {
    inner: R,
    header: Header,
    cipher: Cipher,
    prefix: [u8; 7],
    counter: u32,
    threads: usize,
    /// Ciphertext read ahead, not yet opened.
    buf: Vec<u8>,
    /// Plaintext not yet handed out, from `pos`.
    plain: Vec<u8>,
    pos: usize,
    /// Offset in the file of `buf[0]`.
    offset: u64,
    done: bool,
}

impl<R: Read> FrameReader<R> {
    /// Reads the header and checks that `key` is the file's key.
    pub fn new(mut inner: R, key: &FrameKey, threads: usize) -> Result<Self, FrameError> {
        let header = Header::read(&mut inner)?;
        if header.key_id != key.key_id {
            return Err(FrameError::KeyId {
                file: header.key_id.clone(),
                given: key.key_id.clone(),
            });
        }
        let (cipher, prefix, check) =
            key.file_keys(header.algorithm, &header.salt)
                .map_err(|_| FrameError::WrongKey {
                    key_id: key.key_id.clone(),
                })?;
        if check != header.check {
            return Err(FrameError::WrongKey {
                key_id: key.key_id.clone(),
            });
        }
        Ok(FrameReader {
            offset: header.len() as u64,
            inner,
            cipher,
            prefix,
            counter: 0,
            threads: threads.max(1),
            buf: Vec::new(),
            plain: Vec::new(),
            pos: 0,
            done: false,
            header,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn fill(&mut self) -> Result<(), FrameError> {
        let chunk = self.header.chunk_size;
        let stride = chunk + TAG;
        let want = stride * self.threads * PER_THREAD + 1;
        let have = self.buf.len();
        self.buf.resize(want.max(have), 0);
        let got = read_full(&mut self.inner, &mut self.buf[have..])?;
        self.buf.truncate(have + got);
        let eof = self.buf.len() < want;
        // Without the end in sight, keep at least one byte back: the chunk
        // before the end must be opened as the last one.
        let n = if eof {
            let len = self.buf.len();
            if len < TAG {
                return Err(FrameError::Truncated {
                    offset: self.offset + len as u64,
                });
            }
            let full = (len - 1) / stride;
            let last_len = len - full * stride;
            if last_len < TAG {
                // Too short to be a chunk: cut inside the last chunk's tag.
                return Err(FrameError::Truncated {
                    offset: self.offset + len as u64,
                });
            }
            full + 1
        } else {
            (self.buf.len() - 1) / stride
        };
        let first = self.counter;
        if (first as u64) + n as u64 > u32::MAX as u64 + 1 {
            return Err(FrameError::TooLarge);
        }
        let used = if eof { self.buf.len() } else { n * stride };
        let (cipher, header, prefix) = (&self.cipher, &self.header.bytes, &self.prefix);
        let ok = {
            let mut items: Vec<&mut [u8]> = self.buf[..used].chunks_mut(stride).collect();
            let mut states = vec![(); self.threads.min(n)];
            par_each(&mut items, &mut states, |i, c, _| {
                let body = c.len() - TAG;
                let tag: [u8; TAG] = c[body..].try_into().expect("16 bytes");
                let is_last = eof && i == n - 1;
                cipher.open_in_place(
                    &nonce(prefix, first.wrapping_add(i as u32), is_last),
                    header,
                    &mut c[..body],
                    &tag,
                )
            })
        };
        if let Some(bad) = ok.iter().position(|ok| !ok) {
            return Err(FrameError::Tampered {
                chunk: first as u64 + bad as u64,
                offset: self.offset + (bad * stride) as u64,
            });
        }
        self.plain.clear();
        self.pos = 0;
        for c in self.buf[..used].chunks(stride) {
            self.plain.extend_from_slice(&c[..c.len() - TAG]);
        }
        self.buf.drain(..used);
        self.offset += used as u64;
        self.counter = first.wrapping_add(n as u32);
        self.done = eof;
        Ok(())
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens a framed file and returns its header and its plaintext as a
/// stream, decompressed when the file says it is zstd.
pub fn open<'a, R: Read + Send + 'a>(
    inner: R,
    key: &FrameKey,
    threads: usize,
) -> Result<(Header, Box<dyn Read + Send + 'a>), FrameError> {
    let r = FrameReader::new(inner, key, threads)?;
    let header = r.header().clone();
    if header.compressed {
        let z = zstd::stream::read::Decoder::new(r)?;
        Ok((header, Box::new(ToTheEnd(z))))
    } else {
        Ok((header, Box::new(r)))
    }
}

/// A zstd decoder that, once the compressed stream ends, reads the framed
/// file to its end: only there is the last chunk verified, so stopping at
/// the last zstd frame would miss a truncated or extended file.
struct ToTheEnd<R: Read>(zstd::stream::read::Decoder<'static, std::io::BufReader<R>>);

impl<R: Read> Read for ToTheEnd<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(out)?;
        if n == 0 && !out.is_empty() {
            let mut rest = [0u8; 512];
            loop {
                match self.0.get_mut().read(&mut rest)? {
                    0 => break,
                    k if rest[..k].iter().any(|b| *b != 0) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "data after the end of the compressed stream",
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(n)
    }
}

/// zstd compression as independent frames of [`ZSTD_BLOCK`] input bytes,
/// compressed on up to `threads` threads at a time. The output is one valid
/// zstd file (frames concatenate); each frame carries a checksum.
pub struct ZstdBlockWriter<W: Write> {
    inner: W,
    level: i32,
    threads: usize,
    /// One per thread, made when a round first has that many blocks.
    compressors: Vec<zstd::bulk::Compressor<'static>>,
    raw: Vec<u8>,
    frames: usize,
    read: u64,
}

fn compressor(level: i32) -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    Ok(c)
}

/// Compresses `data` as frames of [`ZSTD_BLOCK`] bytes on up to `threads`
/// threads; empty `data` is one empty frame.
fn compress_blocks(
    level: i32,
    threads: usize,
    compressors: &mut Vec<zstd::bulk::Compressor<'static>>,
    data: &[u8],
) -> std::io::Result<Vec<Vec<u8>>> {
    let mut blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(ZSTD_BLOCK).collect()
    };
    if blocks.len() == 1 {
        return ONE_BLOCK.with(|pool| {
            let mut pool = pool.borrow_mut();
            if !pool.iter().any(|(l, _)| *l == level) {
                pool.push((level, compressor(level)?));
            }
            let (_, c) = pool.iter_mut().find(|(l, _)| *l == level).expect("added");
            Ok(vec![c.compress(blocks[0])?])
        });
    }
    let want = threads.min(blocks.len());
    while compressors.len() < want {
        compressors.push(compressor(level)?);
    }
    par_each(&mut blocks, &mut compressors[..want], |_, b, c| {
        c.compress(b)
    })
    .into_iter()
    .collect()
}

thread_local! {
    /// A compressor per level for rounds of one block (small files): making
    /// a zstd context per file costs more than compressing most of them.
    static ONE_BLOCK: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl<W: Write> ZstdBlockWriter<W> {
    /// Compresses into `inner` at `level` (1..=22).
    pub fn new(inner: W, level: i32, threads: usize) -> std::io::Result<Self> {
        if !(1..=22).contains(&level) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("zstd level {level} is outside 1..=22"),
            ));
        }
        Ok(ZstdBlockWriter {
            inner,
            level,
            threads: threads.max(1),
            compressors: Vec::new(),
            raw: Vec::new(),
            frames: 0,
            read: 0,
        })
    }

    fn compress(&mut self) -> std::io::Result<()> {
        if self.raw.is_empty() && self.frames > 0 {
            return Ok(());
        }
        let outs = compress_blocks(self.level, self.threads, &mut self.compressors, &self.raw)?;
        for o in outs {
            self.inner.write_all(&o)?;
            self.frames += 1;
        }
        self.raw.clear();
        Ok(())
    }

    /// Compresses what is left and returns the inner writer and the number
    /// of input bytes.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.compress()?;
        self.inner.flush()?;
        Ok((self.inner, self.read))
    }
}

impl<W: Write> Write for ZstdBlockWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let round = ZSTD_BLOCK * self.threads * PER_THREAD;
        if self.raw.is_empty() && data.len() >= ZSTD_BLOCK {
            // Whole blocks are compressed straight from the caller's bytes.
            let take = data.len().min(round) / ZSTD_BLOCK * ZSTD_BLOCK;
            let outs = compress_blocks(
                self.level,
                self.threads,
                &mut self.compressors,
                &data[..take],
            )?;
            for o in outs {
                self.inner.write_all(&o)?;
                self.frames += 1;
            }
            self.read += take as u64;
            return Ok(take);
        }
        let take = data.len().min(round - self.raw.len());
        self.raw.extend_from_slice(&data[..take]);
        self.read += take as u64;
        if self.raw.len() >= round {
            self.compress()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Algorithm) -> FrameKey {
        FrameKey::new("k1", vec![7u8; alg.key_len()]).unwrap()
    }

    fn seal(alg: Algorithm, data: &[u8], log2: u8, threads: usize, zstd: Option<i32>) -> Vec<u8> {
        let opts = FrameOptions {
            algorithm: alg,
            chunk_log2: log2,
            threads,
            compressed: zstd.is_some(),
        };
        let w = FrameWriter::new(Vec::new(), &key(alg), opts).unwrap();
        match zstd {
            Some(level) => {
                let mut z = ZstdBlockWriter::new(w, level, threads).unwrap();
                z.write_all(data).unwrap();
                z.finish().unwrap().0.finish().unwrap().0
            }
            None => {
                let mut w = w;
                w.write_all(data).unwrap();
                w.finish().unwrap().0
            }
        }
    }

    fn unseal(alg: Algorithm, file: &[u8], threads: usize) -> Result<Vec<u8>, std::io::Error> {
        let (_, mut r) = open(file, &key(alg), threads)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_every_size_around_chunk_boundaries() {
        for alg in [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm] {
            for n in [0, 1, 1023, 1024, 1025, 2048, 4096 * 3 + 17, 100_000] {
                for threads in [1, 3] {
                    let d = data(n);
                    let f = seal(alg, &d, 10, threads, None);
                    let chunks = if n == 0 { 1 } else { n.div_ceil(1024) };
                    assert_eq!(f.len(), 33 + 2 + n + 16 * chunks, "{alg:?} {n}");
                    assert_eq!(unseal(alg, &f, 4 - threads).unwrap(), d, "{alg:?} {n}");
                    let z = seal(alg, &d, 10, threads, Some(3));
                    assert_eq!(unseal(alg, &z, threads).unwrap(), d, "{alg:?} {n} zstd");
                }
            }
        }
    }

    #[test]
    fn every_flipped_bit_truncation_and_extension_is_an_error() {
        let alg = Algorithm::Sm4Gcm;
        let f = seal(alg, &data(2500), 10, 2, None);
        for byte in 0..f.len() {
            for bit in [0, 3, 7] {
                let mut t = f.clone();
                t[byte] ^= 1 << bit;
                assert!(unseal(alg, &t, 2).is_err(), "byte {byte} bit {bit}");
            }
        }
        for len in 0..f.len() {
            assert!(unseal(alg, &f[..len], 1).is_err(), "truncated to {len}");
        }
        let mut longer = f.clone();
        longer.push(0);
        assert!(unseal(alg, &longer, 1).is_err());
        let stride = 1024 + 16;
        let body = &f[35..];
        // Swap chunks 0 and 1; drop chunk 1.
        let mut swapped = f[..35].to_vec();
        swapped.extend_from_slice(&body[stride..2 * stride]);
        swapped.extend_from_slice(&body[..stride]);
        swapped.extend_from_slice(&body[2 * stride..]);
        let e = unseal(alg, &swapped, 1).unwrap_err();
        assert!(e.to_string().contains("chunk 0"), "{e}");
        let mut dropped = f[..35].to_vec();
        dropped.extend_from_slice(&body[..stride]);
        dropped.extend_from_slice(&body[2 * stride..]);
        assert!(unseal(alg, &dropped, 1).is_err());
        // Truncated exactly at a chunk boundary: no chunk was sealed as last.
        let e = unseal(alg, &f[..35 + 2 * stride], 1).unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{e}");
    }

    #[test]
    fn wrong_key_and_wrong_key_id_are_named() {
        let f = seal(Algorithm::Aes256Gcm, b"hello", 20, 1, None);
        let other = FrameKey::new("k1", vec![8u8; 32]).unwrap();
        let e = open(&f[..], &other, 1).err().unwrap();
        assert!(matches!(e, FrameError::WrongKey { .. }), "{e}");
        let renamed = FrameKey::new("k2", vec![7u8; 32]).unwrap();
        let e = open(&f[..], &renamed, 1).err().unwrap();
        assert!(e.to_string().contains("key id `k1`"), "{e}");
        assert!(
            !format!("{other:?}").contains("8, 8"),
            "Debug hides the key"
        );
        assert!(matches!(
            open(&b"plain text"[..], &other, 1).err().unwrap(),
            FrameError::NotFramed
        ));
    }

    #[test]
    fn files_with_the_same_key_and_content_differ() {
        let a = seal(Algorithm::Aes256Gcm, b"same", 20, 1, None);
        let b = seal(Algorithm::Aes256Gcm, b"same", 20, 1, None);
        assert_ne!(a, b, "each file has its own salt, key and nonces");
    }

    #[test]
    fn block_zstd_output_is_plain_zstd() {
        let d: Vec<u8> = b"tidex moves data between departments\n".repeat(100_000);
        let mut z = ZstdBlockWriter::new(Vec::new(), 1, 2).unwrap();
        z.write_all(&d).unwrap();
        let (out, n) = z.finish().unwrap();
        assert_eq!(n, d.len() as u64);
        assert!(out.len() < d.len() / 20);
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), d);
        let (empty, _) = ZstdBlockWriter::new(Vec::new(), 1, 2)
            .unwrap()
            .finish()
            .unwrap();
        assert!(zstd::decode_all(&empty[..]).unwrap().is_empty());
    }
}
