//! Turning a URL from a spec into an object store, a path and a listing.
//!
//! Accepted forms: a local path (relative or absolute), `file:///abs/path`,
//! `memory://path` (a store shared within this process, for tests and
//! embedding), and `s3://bucket/key` configured from the usual `AWS_*`
//! environment variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …). Any of them
//! may end in `/` (a directory) or contain a glob (`data/*.jsonl`).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tidex_engine::{Error, Result};

/// A resolved URL.
#[derive(Debug, Clone)]
pub struct Location {
    /// The store holding the data.
    pub store: Arc<dyn ObjectStore>,
    /// The URL as the user wrote it.
    pub url: String,
    /// Path of the file, or of the directory / glob base.
    pub path: Path,
    /// Glob over paths relative to `path`, when the URL has one.
    pub glob: Option<globset::GlobMatcher>,
    /// The URL ends in `/`.
    pub trailing_slash: bool,
    /// Filesystem path for local URLs.
    pub local: Option<PathBuf>,
    local_fs: Option<Arc<object_store::local::LocalFileSystem>>,
    prefix: String,
}

/// One listed file.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// Store path.
    pub path: Path,
    /// Size in bytes.
    pub size: u64,
    /// Name shown to people (the local path or the URL).
    pub display: String,
}

fn memory_store() -> Arc<dyn ObjectStore> {
    static MEM: OnceLock<Arc<InMemory>> = OnceLock::new();
    MEM.get_or_init(|| Arc::new(InMemory::new())).clone()
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Lexically normalises an absolute path (no symlink resolution, so paths
/// that do not exist yet work too).
fn normalize(p: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn store_path(parts: &str) -> Path {
    Path::from_iter(parts.split('/').filter(|s| !s.is_empty()))
}

impl Location {
    /// Resolves a URL.
    pub fn parse(url: &str) -> Result<Location> {
        let trailing_slash = url.ends_with('/');
        let mut local_fs = None;
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r.to_string()),
            None => ("file".to_string(), url.to_string()),
        };
        let (store, prefix, rel, local): (Arc<dyn ObjectStore>, String, String, Option<PathBuf>) = match scheme.as_str() {
            "file" => {
                let raw = if url.starts_with("file://") { rest.clone() } else { url.to_string() };
                if raw.is_empty() {
                    return Err(Error::Config("empty path".into()));
                }
                let abs = std::path::absolute(&raw).map_err(|e| Error::io(format!("resolving path {raw}"), e))?;
                let abs = normalize(&abs);
                let s = abs.to_str().ok_or_else(|| Error::Config(format!("path {raw:?} is not valid UTF-8")))?.to_string();
                let fs = Arc::new(object_store::local::LocalFileSystem::new());
                local_fs = Some(fs.clone());
                (fs, String::new(), s, Some(abs))
            }
            "memory" => (memory_store(), "memory://".into(), rest.clone(), None),
            "s3" | "s3a" => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
                if bucket.is_empty() {
                    return Err(Error::Config(format!("{url}: missing bucket name")));
                }
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| Error::io(format!("configuring S3 for {url}"), e))?;
                (Arc::new(store), format!("s3://{bucket}/"), key.to_string(), None)
            }
            other => {
                return Err(Error::Config(format!(
                    "{url}: unsupported URL scheme `{other}`; use a local path, file://, memory:// or s3://"
                )))
            }
        };
        // Split off a glob: the base is everything before the first glob component.
        let comps: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let first_glob = comps.iter().position(|c| has_glob(c));
        let (base, glob) = match first_glob {
            Some(i) => {
                let pattern = comps[i..].join("/");
                let glob = globset::GlobBuilder::new(&pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::Config(format!("{url}: invalid glob: {e}")))?
                    .compile_matcher();
                (comps[..i].join("/"), Some(glob))
            }
            None => (comps.join("/"), None),
        };
        let local = local.map(|l| {
            if first_glob.is_some() {
                PathBuf::from(format!("/{base}"))
            } else {
                l
            }
        });
        Ok(Location {
            store,
            url: url.to_string(),
            path: store_path(&base),
            glob,
            trailing_slash,
            local,
            local_fs,
            prefix,
        })
    }

    /// Name of a store path for people.
    pub fn display(&self, path: &Path) -> String {
        if self.prefix.is_empty() {
            let abs = PathBuf::from(format!("/{path}"));
            let cwd = std::env::current_dir().ok();
            match cwd.as_ref().and_then(|c| abs.strip_prefix(c).ok()) {
                Some(rel) => rel.display().to_string(),
                None => abs.display().to_string(),
            }
        } else {
            format!("{}{}", self.prefix, path)
        }
    }

    /// The filesystem path of a store path, for local URLs.
    pub fn fs_path(&self, path: &Path) -> Option<PathBuf> {
        self.local_fs
            .as_ref()
            .and_then(|fs| fs.path_to_filesystem(path).ok())
    }

    /// How a source over `files` of this URL is named in summaries.
    pub fn describe_files(&self, files: &[FileMeta]) -> String {
        match files {
            [one] => one.display.clone(),
            _ => format!("{} ({} files)", self.url, files.len()),
        }
    }

    /// Whether the URL names a directory: it ends in `/`, has a glob, or is
    /// an existing local directory.
    pub fn is_dir(&self) -> bool {
        self.trailing_slash
            || self.glob.is_some()
            || self.local.as_ref().is_some_and(|l| l.is_dir())
    }

    /// Lists everything under `dir` (recursively), sorted by path.
    pub fn list_under(
        &self,
        io: &tokio::runtime::Handle,
        dir: &Path,
    ) -> Result<Vec<object_store::ObjectMeta>> {
        let store = self.store.clone();
        let prefix = dir.clone();
        let mut v: Vec<object_store::ObjectMeta> = io
            .block_on(async move { store.list(Some(&prefix)).try_collect().await })
            .map_err(|e| Error::io(format!("listing {}", self.url), e))?;
        v.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(v)
    }

    /// The files this URL names: the file itself, or the files under the
    /// directory (or matching the glob) whose extension is in `exts`.
    /// Hidden files (`.x`, `_x`) are skipped. Errors when nothing matches.
    pub fn list_files(&self, io: &tokio::runtime::Handle, exts: &[&str]) -> Result<Vec<FileMeta>> {
        if !self.is_dir() {
            let store = self.store.clone();
            let path = self.path.clone();
            return match io.block_on(async move { store.head(&path).await }) {
                Ok(meta) => Ok(vec![FileMeta {
                    display: self.display(&meta.location),
                    path: meta.location,
                    size: meta.size,
                }]),
                Err(object_store::Error::NotFound { .. }) => {
                    Err(Error::Config(format!("{}: no such file", self.url)))
                }
                Err(e) => Err(Error::io(format!("reading {}", self.url), e)),
            };
        }
        let base_parts = self.path.parts().count();
        let mut files = Vec::new();
        for meta in self.list_under(io, &self.path)? {
            let rel: Vec<String> = meta
                .location
                .parts()
                .skip(base_parts)
                .map(|p| p.as_ref().to_string())
                .collect();
            if rel.iter().any(|p| p.starts_with('.') || p.starts_with('_')) {
                continue;
            }
            let rel = rel.join("/");
            let keep = match &self.glob {
                Some(g) => g.is_match(&rel),
                None => {
                    let ext = super::compress::strip_zstd(&rel)
                        .rsplit_once('.')
                        .map(|(_, e)| e.to_ascii_lowercase())
                        .unwrap_or_default();
                    exts.is_empty() || exts.contains(&ext.as_str())
                }
            };
            if keep {
                files.push(FileMeta {
                    display: self.display(&meta.location),
                    path: meta.location,
                    size: meta.size,
                });
            }
        }
        if files.is_empty() {
            let what = if self.glob.is_some() {
                "no files match".to_string()
            } else {
                format!(
                    "no {} files found",
                    exts.iter()
                        .map(|e| format!(".{e}"))
                        .collect::<Vec<_>>()
                        .join("/")
                )
            };
            return Err(Error::Config(format!("{}: {what}", self.url)));
        }
        Ok(files)
    }

    /// Reads a byte range of a file.
    pub fn get_range(
        &self,
        io: &tokio::runtime::Handle,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        let store = self.store.clone();
        let p = path.clone();
        io.block_on(async move { store.get_range(&p, range).await })
            .map_err(|e| Error::io(format!("reading {}", self.display(path)), e))
    }

    /// A child path of this location (for sinks).
    pub fn child(&self, name: &str) -> Path {
        self.path.clone().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_paths_and_globs() {
        let l = Location::parse("data/../data/*.jsonl").unwrap();
        assert!(l.glob.as_ref().unwrap().is_match("a.jsonl"));
        assert!(!l.glob.as_ref().unwrap().is_match("sub/a.jsonl"));
        assert!(l.path.as_ref().ends_with("data"), "{}", l.path);
        let f = Location::parse("out/people.parquet").unwrap();
        assert!(!f.is_dir());
        assert!(Location::parse("out/people/").unwrap().is_dir());
        assert!(Location::parse("ftp://x/y").is_err());
    }
}
