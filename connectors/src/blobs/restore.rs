//! `tidex decrypt`: restores what tidex wrote encrypted (and compressed)
//! back to the original bytes: one framed `.tenc` file, or a tree such as a
//! blob sink's output, whose manifest also brings back the files stored
//! once as copies. Every restored file is written under a temporary name
//! and renamed only once it fully verified, so the destination never holds
//! partial or unauthenticated plaintext; with a manifest, every restored
//! file's BLAKE3 is checked against it too.

use super::source::{list, BlobFile};
use super::{ManifestEntry, MANIFEST};
use crate::files::io::RangeReader;
use crate::files::location::Location;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tidex_engine::error::Location as RowLocation;
use tidex_engine::stages::frame::{self, FrameError, FrameKey, SUFFIX};
use tidex_engine::{Error, Result};

/// What `tidex decrypt` restored.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Restored {
    /// Files written.
    pub files: u64,
    /// Bytes of plaintext written.
    pub bytes: u64,
    /// Files that were decrypted (the rest were copied or decompressed).
    pub decrypted: u64,
    /// Files restored from a manifest's copies.
    pub copies: u64,
    /// Where the output is.
    pub output: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Decrypt,
    Decompress,
    Copy,
}

fn data_error(file: &str, reason: impl Into<String>) -> Error {
    Error::bad_data(
        RowLocation {
            file: file.to_string(),
            ..Default::default()
        },
        reason,
    )
}

fn frame_error(file: &str, e: FrameError) -> Error {
    match e {
        FrameError::Io(e) => read_error(file, e),
        other => data_error(file, other.to_string()),
    }
}

/// Invalid data from the framed reader or zstd is the file's fault; other
/// I/O errors are storage's.
fn read_error(file: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData || e.kind() == std::io::ErrorKind::UnexpectedEof
    {
        data_error(file, e.to_string())
    } else {
        Error::io(format!("reading {file}"), e)
    }
}

fn temp_name(out: &Path) -> PathBuf {
    let mut t = out.as_os_str().to_os_string();
    t.push(".tidex-partial");
    PathBuf::from(t)
}

/// Restores one object into `out` (via a temporary name); returns its
/// length and BLAKE3.
fn restore_one(
    input: Box<dyn Read + Send + '_>,
    how: How,
    display: &str,
    out: &Path,
    key: Option<&FrameKey>,
) -> Result<(u64, String)> {
    let tmp = temp_name(out);
    let result = (|| -> Result<(u64, String)> {
        let mut reader: Box<dyn Read + Send + '_> = match how {
            How::Decrypt => {
                let key = key.ok_or_else(|| {
                    Error::Config(format!("{display} is encrypted: give its key with --key"))
                })?;
                frame::open(input, key, frame::default_threads())
                    .map_err(|e| frame_error(display, e))?
                    .1
            }
            How::Decompress => Box::new(
                zstd::stream::read::Decoder::new(input)
                    .map_err(|e| Error::io(format!("reading {display}"), e))?,
            ),
            How::Copy => input,
        };
        if let Some(d) = out.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(display, e)),
            };
            hasher.update(&buf[..k]);
            w.write_all(&buf[..k])
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            n += k as u64;
        }
        w.into_inner()
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e.into_error()))?;
        Ok((n, hasher.finalize().to_hex().to_string()))
    })();
    match result {
        Ok(v) => {
            std::fs::rename(&tmp, out)
                .map_err(|e| Error::io(format!("moving output to {}", out.display()), e))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn open_input<'a>(
    loc: &Location,
    io: &tokio::runtime::Handle,
    f: &BlobFile,
) -> Result<Box<dyn Read + Send + 'a>> {
    Ok(match &f.fs {
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| Error::io(format!("opening {}", f.display), e))?,
        ),
        None => Box::new(RangeReader::new(
            io,
            loc.store.clone(),
            f.path.clone(),
            f.size,
        )),
    })
}

/// Restores `src` (a `.tenc` file, or a directory tidex wrote) into the
/// local path `dst`. A tree goes to a staging directory beside `dst`,
/// renamed to `dst` only when every file restored and verified.
pub fn decrypt(
    src: &str,
    dst: &str,
    key: Option<&FrameKey>,
    io: &tokio::runtime::Handle,
) -> Result<Restored> {
    if dst.contains("://") && !dst.starts_with("file://") {
        return Err(Error::Config(format!(
            "{dst}: decrypt writes to a local path (plaintext does not go back to shared storage)"
        )));
    }
    let dst_path = PathBuf::from(dst.strip_prefix("file://").unwrap_or(dst));
    let loc = Location::parse(src)?;
    let files = list(&loc, io)?;
    if !loc.is_dir() {
        let f = &files[0];
        let name = f.rel.strip_suffix(SUFFIX).unwrap_or(&f.rel).to_string();
        let out = if dst.ends_with('/') || dst_path.is_dir() {
            dst_path.join(&name)
        } else {
            dst_path.clone()
        };
        let (bytes, _) = restore_one(
            open_input(&loc, io, f)?,
            How::Decrypt,
            &f.display,
            &out,
            key,
        )?;
        return Ok(Restored {
            files: 1,
            bytes,
            decrypted: 1,
            copies: 0,
            output: out.display().to_string(),
        });
    }
    if dst_path.is_file()
        || (dst_path.is_dir()
            && std::fs::read_dir(&dst_path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false))
    {
        return Err(Error::Config(format!(
            "{}: already exists and is not empty; decrypt a tree into a new directory",
            dst_path.display()
        )));
    }
    let manifest = read_manifest(&loc, io)?;
    // A blob sink stores a file as its first path plus `.zst` when it
    // compressed without encrypting; a `.zst` that is not in the manifest
    // was compressed at the source and stays as it is.
    let zst_stored: HashMap<&str, &str> = manifest
        .iter()
        .filter_map(|e| Some((e.stored.as_str(), e.stored.strip_suffix(".zst")?)))
        .collect();
    let abs = std::path::absolute(&dst_path)
        .map_err(|e| Error::io(format!("resolving {}", dst_path.display()), e))?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let staging = abs
        .parent()
        .unwrap_or(&abs)
        .join(format!(".{name}.tidex-decrypt"));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| -> Result<Restored> {
        let mut r = Restored::default();
        let mut hashes: HashMap<String, String> = HashMap::new();
        for f in &files {
            let (rel, how) = if let Some(orig) = f.rel.strip_suffix(SUFFIX) {
                (orig.to_string(), How::Decrypt)
            } else if let Some(orig) = zst_stored.get(f.rel.as_str()) {
                (orig.to_string(), How::Decompress)
            } else {
                (f.rel.clone(), How::Copy)
            };
            super::check_path(&rel).map_err(|why| data_error(&f.display, why))?;
            let out = rel.split('/').fold(staging.clone(), |p, c| p.join(c));
            let (bytes, hash) = restore_one(open_input(&loc, io, f)?, how, &f.display, &out, key)?;
            r.files += 1;
            r.bytes += bytes;
            r.decrypted += (how == How::Decrypt) as u64;
            hashes.insert(rel, hash);
        }
        for e in &manifest {
            let from = original_of(&e.stored, &zst_stored);
            let got = hashes.get(&from).ok_or_else(|| {
                data_error(
                    &loc.display(&loc.child(MANIFEST)),
                    format!(
                        "the manifest stores {} in {}, which is not in {}",
                        e.path, e.stored, loc.url
                    ),
                )
            })?;
            if *got != e.blake3 {
                return Err(data_error(
                    &format!("{} ({})", e.stored, e.path),
                    format!(
                        "restored content has BLAKE3 {got}, the manifest says {}",
                        e.blake3
                    ),
                ));
            }
            if from != e.path {
                super::check_path(&e.path).map_err(|why| data_error(&e.path, why))?;
                let a = from.split('/').fold(staging.clone(), |p, c| p.join(c));
                let b = e.path.split('/').fold(staging.clone(), |p, c| p.join(c));
                if let Some(d) = b.parent() {
                    std::fs::create_dir_all(d)
                        .map_err(|x| Error::io(format!("creating {}", d.display()), x))?;
                }
                let tmp = temp_name(&b);
                let n = std::fs::copy(&a, &tmp).map_err(|x| {
                    Error::io(format!("copying {} to {}", a.display(), b.display()), x)
                })?;
                std::fs::rename(&tmp, &b)
                    .map_err(|x| Error::io(format!("moving output to {}", b.display()), x))?;
                r.files += 1;
                r.copies += 1;
                r.bytes += n;
            }
        }
        std::fs::create_dir_all(&staging)
            .map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
        if abs.is_dir() {
            std::fs::remove_dir(&abs)
                .map_err(|e| Error::io(format!("replacing {}", abs.display()), e))?;
        }
        if let Some(p) = abs.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        }
        std::fs::rename(&staging, &abs)
            .map_err(|e| Error::io(format!("moving output into {}", abs.display()), e))?;
        r.output = dst_path.display().to_string();
        Ok(r)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// The original path of a stored object: without `.tenc`, or without the
/// `.zst` the blob sink added.
fn original_of(stored: &str, zst: &HashMap<&str, &str>) -> String {
    if let Some(o) = stored.strip_suffix(SUFFIX) {
        return o.to_string();
    }
    zst.get(stored)
        .map_or_else(|| stored.to_string(), |o| o.to_string())
}

fn read_manifest(loc: &Location, io: &tokio::runtime::Handle) -> Result<Vec<ManifestEntry>> {
    let path = loc.child(MANIFEST);
    let display = loc.display(&path);
    let body = match &loc.local {
        Some(l) => match std::fs::read(l.join(MANIFEST)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {display}"), e)),
        },
        None => {
            let store = loc.store.clone();
            let p = path.clone();
            match io.block_on(async move {
                object_store::ObjectStoreExt::get(&store, &p)
                    .await?
                    .bytes()
                    .await
            }) {
                Ok(b) => b.to_vec(),
                Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
                Err(e) => return Err(Error::io(format!("reading {display}"), e)),
            }
        }
    };
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| {
                Error::bad_data(
                    RowLocation {
                        file: display.clone(),
                        row: Some(i as u64 + 1),
                        ..Default::default()
                    },
                    format!("not a tidex manifest line: {e}"),
                )
            })
        })
        .collect()
}
