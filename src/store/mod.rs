//! The store: content-addressed blobs on disk plus SQLite metadata (migrations in order).
//!
//! A state directory holds `binfarm.sqlite` (WAL mode) and `blobs/`. [`Store::open`] creates
//! it, applies the migrations and cleans temp files a crash left behind; [`Store::connect`]
//! gives a [`Db`] (one SQLite connection: one per thread) with typed operations for workers,
//! requests, steps and builds. Every state change runs in one `BEGIN IMMEDIATE` transaction,
//! so concurrent connections (threads or processes) never hand out the same step twice.
//!
//! Times are Unix seconds passed in by the caller (`now`), so the scheduler can also run on a
//! simulated clock (see `plan::bench`).

mod blobs;
mod db;
mod farm_binpkgs;
mod gauges;
pub mod migrate;
mod snapshots;
mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use thiserror::Error;

pub use blobs::{is_sha512_hex, BlobError, BlobRef, BlobStore};
pub use db::{
    new_token, token_hash, BuildResult, CancelSummary, Completion, Db, ExpiredLease,
    HeartbeatReply, InitialState, KnownBuild, Lease, NewRequest, NewStep, NewWorker, RequestKind,
    RequestRow, RequestState, StepOutcome, StepResultFile, StepRow, StepState, WorkerCapabilities,
    WorkerRow,
};
pub use farm_binpkgs::{binhost_path, RequestPackage, StepAttempt, StoredBinpkg};
pub use gauges::FarmGauges;
pub use snapshots::{
    BlobRow, ChannelAction, ChannelHistoryRow, ChannelRow, MirrorTreeRow, NewSnapshot,
    RequestPublished, Rollback, SnapshotEntry, SnapshotOrigin, SnapshotRow, UnpublishedRequest,
};
pub use status::StateCounts;

use crate::plan::RetryPolicy;

/// Errors from the SQLite side of the store, each naming the database and the operation.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this binfarm knows ({known}); it was written by a newer binfarm: upgrade binfarm or use another state directory")]
    SchemaTooNew {
        path: PathBuf,
        found: String,
        known: String,
    },
    #[error("database {path}: migration {version} failed: {source}")]
    Migration {
        path: PathBuf,
        version: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: {op} failed: {source}")]
    Sql {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("blob store: {0}")]
    Blob(#[from] BlobError),
    #[error("worker {name:?} already exists")]
    WorkerExists { name: String },
    #[error("no worker {what}")]
    NoSuchWorker { what: String },
    #[error("no request {id}")]
    NoSuchRequest { id: i64 },
    #[error("no step {id}")]
    NoSuchStep { id: i64 },
    #[error("request {id} is {state}, not {expected}")]
    RequestState {
        id: i64,
        state: String,
        expected: &'static str,
    },
    #[error("step {step_id}: lease {lease_id} is unknown or belongs to another step")]
    UnknownLease { step_id: i64, lease_id: i64 },
    #[error("step {step_id}: lease {lease_id} is held by worker {holder}, not worker {worker_id}")]
    NotLeaseHolder {
        step_id: i64,
        lease_id: i64,
        holder: i64,
        worker_id: i64,
    },
    #[error("step {step_id}: lease {lease_id} was already completed as {recorded}, now reported as {reported}")]
    ConflictingCompletion {
        step_id: i64,
        lease_id: i64,
        recorded: String,
        reported: &'static str,
    },
    #[error("step {step_id}: blob {sha512} is not recorded in the store (record it after storing the file)")]
    MissingBlob { step_id: i64, sha512: String },
    #[error("new step {index} ({cpv}) has a dependency index {dep} outside the {count} steps")]
    BadStepDep {
        index: usize,
        cpv: String,
        dep: usize,
        count: usize,
    },
    #[error("database {path}: column {column} holds {value:?}, which is not a valid value")]
    BadValue {
        path: PathBuf,
        column: &'static str,
        value: String,
    },
    #[error("{what} is not valid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Settings of the queue: leases, retries, pausing workers.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    /// A lease not renewed by a heartbeat for this long goes back to the queue.
    pub lease_timeout_secs: i64,
    /// Attempts per step (first try included) and the backoff between them.
    pub retry: RetryPolicy,
    /// A worker whose builds fail this many times in a row is paused.
    pub pause_worker_after_failures: u32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            lease_timeout_secs: 60,
            retry: RetryPolicy::default(),
            // More than the attempts of one step, so one broken package cannot pause a worker.
            pause_worker_after_failures: 5,
        }
    }
}

/// The state directory: database and blobs.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    blobs: BlobStore,
    policy: QueuePolicy,
}

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "binfarm.sqlite";

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Store {
    /// Open the state directory with the default queue policy.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, QueuePolicy::default())
    }

    /// Open (creating if needed) the state directory: apply pending migrations, refuse a
    /// database from a newer binfarm, remove blob temp files left by a crash.
    pub fn open_with(dir: &Path, policy: QueuePolicy) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::StateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = Store {
            dir: dir.to_path_buf(),
            db_path: dir.join(DB_FILE),
            blobs: BlobStore::open(&dir.join("blobs"))?,
            policy,
        };
        let mut conn = store.raw_connection()?;
        migrate::apply(&mut conn, &store.db_path)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    /// A new database connection (not shareable across threads: open one per thread).
    pub fn connect(&self) -> Result<Db, StoreError> {
        let conn = self.raw_connection()?;
        // Refuse a database that a newer binfarm migrated after this Store was opened.
        let newest: Option<String> = conn
            .query_row("SELECT max(version) FROM schema_migrations", [], |row| {
                row.get(0)
            })
            .map_err(|source| StoreError::Sql {
                path: self.db_path.clone(),
                op: "read schema version",
                source,
            })?;
        if let Some(found) = newest {
            if found.as_str() > migrate::latest_version() {
                return Err(StoreError::SchemaTooNew {
                    path: self.db_path.clone(),
                    found,
                    known: migrate::latest_version().to_string(),
                });
            }
        }
        Ok(Db::new(conn, self.db_path.clone(), self.policy.clone()))
    }

    fn raw_connection(&self) -> Result<Connection, StoreError> {
        let open_err = |source| StoreError::Open {
            path: self.db_path.clone(),
            source,
        };
        let conn = Connection::open(&self.db_path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // In WAL mode NORMAL loses no committed data on a process crash (only, at worst, the
        // last transactions on a power loss) and avoids an fsync per commit.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        Ok(conn)
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
