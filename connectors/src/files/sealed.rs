//! Per-file compression and encryption of sink output: the `encrypt`
//! option that file and blob sinks share, and the writer chain
//! (block zstd, then the framed encryption format of
//! `tidex_engine::stages::frame`) that wraps a file's bytes on their way out.

use serde::Deserialize;
use std::io::Write;
use tidex_engine::stages::crypt::Algorithm;
use tidex_engine::stages::frame::{self, FrameKey, FrameOptions, FrameWriter, ZstdBlockWriter};
use tidex_engine::stages::keys;
use tidex_engine::{ConnectorConfig, Error, Result, SpecError};

/// `encrypt = { algorithm = "sm4-gcm", key_id = "civil-2026", key = "file:k.key" }`
/// on a sink: every output file is encrypted whole, in the framed format
/// (named `….tenc`), which `tidex decrypt` restores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptOption {
    /// `aes-256-gcm` or `sm4-gcm`.
    pub algorithm: String,
    /// Names the key; written into every file header so the receiver picks
    /// the right key.
    pub key_id: String,
    /// `env:NAME` or `file:PATH`: 32 bytes for AES-256, 16 for SM4, raw or
    /// hex. Never logged.
    pub key: String,
}

impl EncryptOption {
    /// Checks the option without loading the key.
    pub fn check(&self, cfg: &ConnectorConfig) -> Result<Algorithm, SpecError> {
        let alg = Algorithm::parse(&self.algorithm).ok_or_else(|| {
            cfg.error(
                "encrypt",
                format!(
                    "unknown algorithm `{}`; expected aes-256-gcm or sm4-gcm",
                    self.algorithm
                ),
            )
        })?;
        if self.key_id.is_empty() || self.key_id.len() > 255 {
            return Err(cfg.error("encrypt", "key_id: expected a name of 1 to 255 bytes"));
        }
        if !keys::well_formed(&self.key) {
            return Err(cfg.error("encrypt", "key: expected `env:NAME` or `file:PATH`"));
        }
        Ok(alg)
    }

    /// Loads the key and checks its length against the algorithm.
    pub fn load(&self, cfg: &ConnectorConfig) -> Result<Sealing> {
        let alg = self.check(cfg)?;
        let key = FrameKey::load(&self.key_id, &self.key)
            .map_err(|e| Error::Config(format!("{}.encrypt: {e}", cfg.section())))?;
        // A wrong length is found now, not at the first file.
        let probe = FrameWriter::new(std::io::sink(), &key, FrameOptions::new(alg));
        if let Err(e) = probe {
            return Err(Error::Config(format!("{}.encrypt: {e}", cfg.section())));
        }
        Ok(Sealing { alg, key })
    }
}

/// A loaded `encrypt` option.
#[derive(Debug, Clone)]
pub struct Sealing {
    /// The cipher.
    pub alg: Algorithm,
    /// The key and its id.
    pub key: FrameKey,
}

/// How a sink encodes each output file.
#[derive(Debug, Clone, Default)]
pub struct FileEncoding {
    /// zstd level, when compressing.
    pub zstd: Option<i32>,
    /// Framed encryption, when encrypting.
    pub seal: Option<Sealing>,
    /// Threads for compression and sealing.
    pub threads: usize,
}

impl FileEncoding {
    /// The suffix the encoding adds to a file name: `.zst`, `.tenc` (which
    /// records compression in its header) or nothing.
    pub fn suffix(&self) -> &'static str {
        match (&self.seal, self.zstd) {
            (Some(_), _) => frame::SUFFIX,
            (None, Some(_)) => ".zst",
            (None, None) => "",
        }
    }

    /// Wraps `w`. `display` names the file in errors.
    pub fn wrap<W: Write>(&self, w: W, display: &str) -> Result<Encoded<W>> {
        let threads = self.threads.max(1);
        let zerr = |e: std::io::Error| Error::io(format!("starting zstd for {display}"), e);
        Ok(match (&self.seal, self.zstd) {
            (None, None) => Encoded::Plain(w),
            (None, Some(l)) => Encoded::Zstd(ZstdBlockWriter::new(w, l, threads).map_err(zerr)?),
            (Some(s), z) => {
                let opts = FrameOptions {
                    threads,
                    compressed: z.is_some(),
                    ..FrameOptions::new(s.alg)
                };
                let f = FrameWriter::new(w, &s.key, opts)
                    .map_err(|e| Error::Config(format!("encrypting {display}: {e}")))?;
                match z {
                    Some(l) => {
                        Encoded::ZstdSealed(ZstdBlockWriter::new(f, l, threads).map_err(zerr)?)
                    }
                    None => Encoded::Sealed(f),
                }
            }
        })
    }
}

/// A file's writer chain.
pub enum Encoded<W: Write> {
    /// As is.
    Plain(W),
    /// zstd.
    Zstd(ZstdBlockWriter<W>),
    /// Encrypted.
    Sealed(FrameWriter<W>),
    /// zstd, then encrypted.
    ZstdSealed(ZstdBlockWriter<FrameWriter<W>>),
}

impl<W: Write> Encoded<W> {
    /// Finishes every layer and returns the inner writer.
    pub fn finish(self) -> std::io::Result<W> {
        Ok(match self {
            Encoded::Plain(mut w) => {
                w.flush()?;
                w
            }
            Encoded::Zstd(z) => z.finish()?.0,
            Encoded::Sealed(f) => f.finish()?.0,
            Encoded::ZstdSealed(z) => z.finish()?.0.finish()?.0,
        })
    }
}

impl<W: Write> Write for Encoded<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoded::Plain(w) => w.write(data),
            Encoded::Zstd(w) => w.write(data),
            Encoded::Sealed(w) => w.write(data),
            Encoded::ZstdSealed(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
