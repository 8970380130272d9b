//! Benchmarks that need real tools (Portage, gpg) beside binfarm's own code.

pub mod index;
pub mod mirror;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Binpkg(#[from] crate::binpkg::BinpkgError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Sign(#[from] crate::sign::SignError),
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// An external command that failed or could not start.
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
    /// A result that is not what the benchmark needs to be meaningful.
    #[error("{0}")]
    Check(String),
}
