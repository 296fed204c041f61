//! tidex-connectors: one module per connector family, each behind a cargo
//! feature. [`registry`] returns a registry with every connector this build
//! has.

#![warn(missing_docs)]

#[cfg(feature = "blobs")]
pub mod blobs;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod db;
#[cfg(feature = "files")]
pub mod files;

use tidex_engine::Registry;

/// A registry holding every connector compiled into this build.
pub fn registry() -> Registry {
    #[allow(unused_mut)]
    let mut r = Registry::new();
    #[cfg(feature = "files")]
    files::register(&mut r);
    #[cfg(feature = "blobs")]
    blobs::register(&mut r);
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    db::register(&mut r);
    r
}

/// The connector type for a URL in `tidex copy`: by scheme, then by
/// extension; a directory sink (`out/`) is Parquet parts.
pub fn kind_for_url(url: &str, is_sink: bool) -> Option<&'static str> {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    if let Some(k) = db::kind_for_url(url) {
        return Some(k);
    }
    #[cfg(feature = "files")]
    if let Some(k) = files::kind_for_url(url) {
        return Some(k);
    }
    let dir = std::path::Path::new(url);
    if is_sink && (url.ends_with('/') || dir.is_dir()) {
        return Some("parquet");
    }
    #[cfg(feature = "files")]
    if !is_sink && dir.is_dir() {
        // A local directory source: the format of the files in it.
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        return names
            .iter()
            .filter(|n| !n.starts_with(['.', '_']))
            .find_map(|n| files::kind_for_url(n));
    }
    None
}

/// The source type for a directory URL on any store (`s3://b/people/`):
/// the format of the first file in it with a known extension.
pub fn detect_dir_kind(
    url: &str,
    io: &tokio::runtime::Handle,
) -> tidex_engine::Result<Option<&'static str>> {
    #[cfg(feature = "files")]
    {
        let loc = files::location::Location::parse(url)?;
        for meta in loc.list_under(io, &loc.path)? {
            let name = meta.location.filename().unwrap_or("");
            if name.starts_with(['.', '_']) {
                continue;
            }
            if let Some(k) = files::kind_for_url(name) {
                return Ok(Some(k));
            }
        }
    }
    let _ = (url, io);
    Ok(None)
}

/// The file format an extension names (`people.csv` → `csv`), ignoring
/// schemes and directories.
pub fn files_kind_for_name(url: &str) -> Option<&'static str> {
    #[cfg(feature = "files")]
    return files::kind_for_url(url);
    #[cfg(not(feature = "files"))]
    {
        let _ = url;
        None
    }
}

/// Whether `tidex copy` copies `url` as files of any type (the blobs
/// source) rather than as records: a single file without a tabular
/// extension (`scan.pdf`), or a directory whose visible files are not all
/// of one tabular format (`docs/` with PDFs and spreadsheets, or CSV and
/// Parquet mixed). Globs are blobs when their pattern names no tabular
/// extension. Database URLs never are.
pub fn is_blob_source(url: &str, io: &tokio::runtime::Handle) -> tidex_engine::Result<bool> {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    if db::kind_for_url(url).is_some() {
        return Ok(false);
    }
    #[cfg(feature = "blobs")]
    {
        let loc = files::location::Location::parse(url)?;
        if loc.glob.is_some() {
            return Ok(files::kind_for_url(url).is_none());
        }
        if !loc.is_dir() {
            // Only a file that is there: a missing one is reported as such.
            if files::kind_for_url(url).is_some() {
                return Ok(false);
            }
            if let Some(l) = &loc.local {
                return Ok(l.is_file());
            }
            let (store, path) = (loc.store.clone(), loc.path.clone());
            return Ok(io
                .block_on(async move { object_store::ObjectStoreExt::head(&store, &path).await })
                .is_ok());
        }
        let base = loc.path.parts().count();
        let mut kinds = std::collections::BTreeSet::new();
        for meta in loc.list_under(io, &loc.path)? {
            let rel: Vec<_> = meta.location.parts().skip(base).collect();
            if rel.iter().any(|p| p.as_ref().starts_with(['.', '_'])) {
                continue;
            }
            match files::kind_for_url(meta.location.filename().unwrap_or("")) {
                Some(k) => kinds.insert(k),
                None => return Ok(true),
            };
        }
        Ok(kinds.len() > 1)
    }
    #[cfg(not(feature = "blobs"))]
    {
        let _ = (url, io);
        Ok(false)
    }
}
