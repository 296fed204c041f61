//! tidex-connectors: one module per connector family, each behind a cargo
//! feature. [`registry`] returns a registry with every connector this build
//! has.

#[cfg(feature = "files")]
pub mod files;

use tidex_engine::Registry;

/// A registry holding every connector compiled into this build.
pub fn registry() -> Registry {
    #[allow(unused_mut)]
    let mut r = Registry::new();
    #[cfg(feature = "files")]
    files::register(&mut r);
    r
}

/// The connector type for a URL in `tidex copy`: by scheme, then by
/// extension; a directory sink (`out/`) is Parquet parts.
pub fn kind_for_url(url: &str, is_sink: bool) -> Option<&'static str> {
    #[cfg(feature = "files")]
    if let Some(k) = files::kind_for_url(url) {
        return Some(k);
    }
    if is_sink && (url.ends_with('/') || std::path::Path::new(url).is_dir()) {
        return Some("parquet");
    }
    None
}
