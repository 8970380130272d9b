//! Publishing: snapshots, channels, mirror targets (local directory, FTP), GC.
//!
//! - [`snapshot`]: a **snapshot** is an immutable set of binpkgs (blobs) of one profile plus
//!   its `Packages` index (stored as a blob). Made from a finished request
//!   ([`snapshot_for_request`]) or from given blobs ([`create_snapshot`]).
//! - [`channel`]: a **channel** (`testing`, `stable`, any name) points at one snapshot of a
//!   profile; every move is kept, so [`rollback`] goes back one move at a time. New snapshots
//!   go to `testing` ([`publish_snapshot_to`]).
//! - [`local`]: the local mirror tree `<root>/<profile>/<channel>/{Packages, Packages.gz,
//!   <cat>/<pn>/<pf>-<build_id>.gpkg.tar}`: package files first (hard links from the blob
//!   store, copies across file systems), the index last by temp name + rename, so a client
//!   sees the old index with all its files or the new one with all of its files.
//! - [`mirrors`]: the FTP mirrors get a channel's tree after it changed.
//! - [`gc`]: retention of snapshots and blobs, grace period for mirror files.
//! - [`diff`], [`resign`], [`client`]: `snapshots diff`, `resign`, `client-config`.
//! - [`cli`]: the command implementations (they return the text to print).

pub mod bench;
pub mod channel;
pub mod cli;
pub mod client;
pub mod config;
pub mod diff;
pub mod ftp;
pub mod gc;
pub mod header;
pub mod local;
pub mod mirrors;
pub mod resign;
pub mod snapshot;

use std::path::{Path, PathBuf};

pub use channel::{
    promote, publish_request, publish_snapshot_to, rollback, sync_channel, PublishOutcome,
    RequestPublication, STABLE, TESTING,
};
pub use client::{client_config, ClientConfigOptions};
pub use diff::{diff_snapshots, Change, ChangeKind, SnapshotDiff};
pub use gc::{run_gc, GcReport, RemoteCleaner, Retention};
pub use local::{publish_tree, tree_dir, verify_tree, LinkMode, TreeReport};
pub use resign::resign;
pub use snapshot::{
    create_snapshot, snapshot_for_request, snapshot_for_request_if_changed, RequestSnapshot,
    RequestSnapshotOptions, SnapshotId, SnapshotOptions,
};

use crate::store::Store;

/// Errors of publishing, each naming the snapshot, channel, package or file involved.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("blob store: {0}")]
    Blob(#[from] crate::store::BlobError),
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("binpkg: {0}")]
    Binpkg(#[from] crate::binpkg::BinpkgError),
    #[error("signing key: {0}")]
    Sign(#[from] crate::sign::SignError),
    #[error("profile: {0}")]
    Profile(#[from] crate::profile::ProfileError),
    #[error("no snapshot {id}")]
    NoSuchSnapshot { id: i64 },
    #[error("snapshot {id} belongs to profile {actual:?}, not {expected:?}")]
    WrongProfile {
        id: i64,
        actual: String,
        expected: String,
    },
    #[error("profile {profile:?} has no channel {channel:?}")]
    NoChannel { profile: String, channel: String },
    #[error("{what} {name:?} is not usable as a path component (letters, digits, . _ + - only, not starting with . or -)")]
    BadName { what: &'static str, name: String },
    #[error("package blob {blob}: {message}")]
    Package { blob: String, message: String },
    #[error("two packages of the snapshot have the same file name {path}")]
    DuplicatePath { path: String },
    #[error("request {request_id} has steps without a package: {missing} (a snapshot of it would lack them; allow it with allow_incomplete)")]
    IncompleteRequest { request_id: i64, missing: String },
    #[error("request {request_id} is of profile {actual:?}, not {expected:?}")]
    RequestProfile {
        request_id: i64,
        actual: String,
        expected: String,
    },
    #[error("channel {channel:?} of profile {profile:?}: {message}")]
    Rollback {
        profile: String,
        channel: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("index of the Packages blob {blob}: {message}")]
    BadIndex { blob: String, message: String },
    #[error("{profile}/{channel}: the local tree is published, but FTP mirrors failed: {failures}; retry with: binfarm publish --profile {profile} --channel {channel}")]
    Mirrors {
        profile: String,
        channel: String,
        failures: String,
    },
}

impl PublishError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
        move |source| PublishError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Everything publishing needs to know besides the database connection: where the store and
/// the mirror trees are, the index TTL, retention and how files get into trees.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub store: Store,
    /// Local mirror trees live under `<mirror_root>/<profile>/<channel>`.
    pub mirror_root: PathBuf,
    /// `TTL` header of published indexes (seconds); None leaves it out.
    pub ttl: Option<u64>,
    pub retention: Retention,
    pub link_mode: LinkMode,
    /// Let unsigned gpkgs into snapshots (nodes that require signatures refuse them).
    pub allow_unsigned: bool,
    /// Told about files placed in trees and packages indexed.
    pub progress: crate::progress::Progress,
}

impl Publisher {
    pub fn new(store: Store, mirror_root: impl Into<PathBuf>) -> Publisher {
        Publisher {
            store,
            mirror_root: mirror_root.into(),
            ttl: None,
            retention: Retention::default(),
            link_mode: LinkMode::Hardlink,
            allow_unsigned: false,
            progress: crate::progress::Progress::none(),
        }
    }

    /// Where a snapshot-in-making is staged (same file system as the blobs: hard links).
    fn staging_dir(&self) -> PathBuf {
        self.store.dir().join("publish-staging")
    }
}

/// A profile or channel name that can be one path component of a mirror tree.
pub fn check_name(what: &'static str, name: &str) -> Result<(), PublishError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PublishError::BadName {
            what,
            name: name.to_string(),
        })
    }
}
