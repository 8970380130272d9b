//! The `Packages` index (what Portage's binhost clients read): parse, write, incremental update.
//!
//! Output is what Portage 3.0.83's `emaint binhost --fix` writes for the same PKGDIR
//! (TIMESTAMP aside): same header and entry keys, values, order and omissions; see
//! [`packages`] for the format rules and [`update`] for how entries are made.
//!
//! Differences from Portage, on purpose:
//! - packages with the same CPV that are new in this run are ordered by BUILD_ID
//!   (Portage uses directory order); entries kept from the existing index keep their
//!   order, as in Portage;
//! - TIMESTAMP always increases (clients keep a cached index with an unchanged one);
//! - a package is not re-read when its PATH, SIZE and MTIME match (Portage re-reads
//!   every package on each run);
//! - header profile keys come from the existing index and the caller
//!   ([`IndexOptions::header_overrides`]), not from a Portage configuration.
//! - `Packages.gz` decompresses to `Packages` and has Portage's gzip header, but the
//!   deflate stream is not zlib's byte for byte.

pub mod depstr;
pub mod packages;
mod quick;
pub mod update;
mod write;

use std::path::PathBuf;

pub use packages::{repo_revisions_json, Entry, PackagesIndex};
pub use update::{
    update_pkgdir, update_pkgdir_using, BinpkgFiles, IndexOptions, IndexReport, MetadataSource,
    Rejected,
};
pub use write::{write_index_files, PACKAGES_FILE, PACKAGES_GZ_FILE};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A `Packages` file that is not in the format (1-based line number).
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Header keys Portage fills from its configuration (`_update_pkgindex_header`), besides
/// `PROFILE`, `VERSION`, `URI`, `TTL`: the fixed list, plus each variable named in
/// USE_EXPAND_IMPLICIT and USE_EXPAND_UNPREFIXED, plus `USE_EXPAND_VALUES_<X>` for each X
/// in USE_EXPAND_IMPLICIT. A new index also gets `CHOST`. Callers pass these values in
/// [`IndexOptions::header_overrides`].
pub const PROFILE_HEADER_KEYS: [&str; 16] = [
    "ACCEPT_KEYWORDS",
    "ACCEPT_LICENSE",
    "ACCEPT_PROPERTIES",
    "ACCEPT_RESTRICT",
    "CBUILD",
    "CONFIG_PROTECT",
    "CONFIG_PROTECT_MASK",
    "FEATURES",
    "GENTOO_MIRRORS",
    "INSTALL_MASK",
    "IUSE_IMPLICIT",
    "USE",
    "USE_EXPAND",
    "USE_EXPAND_HIDDEN",
    "USE_EXPAND_IMPLICIT",
    "USE_EXPAND_UNPREFIXED",
];
