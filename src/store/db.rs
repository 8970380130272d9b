//! Typed operations on the coordinator's database: workers, requests, steps, builds, blobs.
//!
//! Every operation that changes state runs in one `BEGIN IMMEDIATE` transaction: it takes the
//! write lock before reading, so two connections can never both see the same step ready and
//! both lease it.

use std::collections::HashMap;
use std::path::PathBuf;

use rand::RngCore;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use super::{QueuePolicy, StoreError};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!(
                        "{:?} is not a valid {}", text, stringify!($name)
                    ).into())
                })
            }
        }
    };
}

text_enum!(
    /// What started a request.
    RequestKind { Nightly => "nightly", Manual => "manual" }
);

text_enum!(
    /// Where a request is in its life.
    RequestState {
        Planning => "planning",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// Where a step is in its life.
    StepState {
        Queued => "queued",
        Ready => "ready",
        Leased => "leased",
        Building => "building",
        Succeeded => "succeeded",
        Failed => "failed",
        Blocked => "blocked",
        Cancelled => "cancelled",
        Cached => "cached",
    }
);

impl StepState {
    /// No further change will happen to a step in this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded
                | StepState::Failed
                | StepState::Blocked
                | StepState::Cancelled
                | StepState::Cached
        )
    }

    /// A worker holds the step.
    pub fn is_leased(self) -> bool {
        matches!(self, StepState::Leased | StepState::Building)
    }
}

text_enum!(
    /// The outcome of a finished build of a fingerprint.
    BuildResult { Succeeded => "succeeded", Failed => "failed" }
);

/// A worker just created: the token is shown once and only its hash is stored.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub worker_id: i64,
    pub token: String,
}

/// What a worker reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerCapabilities {
    /// Profiles the worker can build.
    pub profiles: Vec<String>,
    pub labels: Vec<String>,
    /// Everything else (CPU flags, slots, versions), kept as reported.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: i64,
    pub name: String,
    pub profiles: Vec<String>,
    pub labels: Vec<String>,
    pub capabilities: serde_json::Value,
    pub last_heartbeat: Option<i64>,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub consecutive_failures: u32,
    pub created_at: i64,
    /// The 1-minute load average of the worker's last heartbeat that carried one.
    pub load_1min: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct NewRequest {
    pub kind: RequestKind,
    pub profile: String,
    /// A set (`@world`) or an atom.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub id: i64,
    pub kind: RequestKind,
    pub profile: String,
    pub target: String,
    pub state: RequestState,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// How a planned step starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialState {
    /// To be built (queued until its dependencies are built).
    Build,
    /// Its fingerprint is already built: nothing to do.
    Cached,
    /// Its fingerprint already failed: the step is failed and its dependents blocked.
    CachedFailure { reason: String },
}

/// A step to insert, as the planner made it.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub cpv: String,
    pub slot: String,
    pub repo: String,
    pub use_flags: Vec<String>,
    pub fingerprint: String,
    /// Position in scheduling order (0 goes first), from `plan::ranks`.
    pub sched_rank: i64,
    pub estimated_ms: i64,
    /// Indices into the same list of steps that must be built first.
    pub deps: Vec<usize>,
    pub initial: InitialState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub id: i64,
    pub request_id: i64,
    pub cpv: String,
    pub slot: String,
    pub repo: String,
    pub profile: String,
    pub fingerprint: String,
    pub use_flags: Vec<String>,
    pub state: StepState,
    /// Why the step is blocked or failed.
    pub reason: Option<String>,
    pub sched_rank: i64,
    pub estimated_ms: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub next_attempt_at: i64,
    pub lease_id: Option<i64>,
    pub lease_worker_id: Option<i64>,
    pub lease_expires_at: Option<i64>,
    pub build_id: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub log_blob: Option<String>,
}

/// A step handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Quote this in heartbeats and the completion.
    pub lease_id: i64,
    pub step_id: i64,
    pub request_id: i64,
    pub cpv: String,
    pub slot: String,
    pub repo: String,
    pub profile: String,
    pub fingerprint: String,
    pub use_flags: Vec<String>,
    /// The BUILD_ID the binpkg must carry (reserved once per step, never reused).
    pub build_id: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub expires_at: i64,
}

/// A file a successful step produced, already stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResultFile {
    /// Path in the binhost, e.g. `app-misc/hello/hello-1.0-1.gpkg.tar`.
    pub name: String,
    pub blob: String,
}

/// What a worker reports at the end of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded {
        duration_ms: i64,
        log_blob: Option<String>,
        results: Vec<StepResultFile>,
    },
    Failed {
        duration_ms: i64,
        log_blob: Option<String>,
        error: String,
        /// False when trying again cannot help: the step fails now.
        retryable: bool,
    },
}

impl StepOutcome {
    fn name(&self) -> &'static str {
        match self {
            StepOutcome::Succeeded { .. } => "succeeded",
            StepOutcome::Failed { .. } => "failed",
        }
    }
}

/// The answer to a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The outcome was recorded; the step is now in this state (`Ready` again for a retry).
    Recorded { state: StepState },
    /// This lease was already completed with the same outcome: nothing changed.
    AlreadyRecorded,
    /// The lease had expired or the request was cancelled: the outcome was not used.
    Ignored { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatReply {
    /// Leases the worker quoted that are no longer its own (expired or cancelled): stop them.
    pub revoked: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    pub step_id: i64,
    pub lease_id: i64,
    pub worker_id: i64,
    pub cpv: String,
    /// False when the step had no attempts left and failed.
    pub requeued: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CancelSummary {
    pub cancelled_steps: usize,
    /// Leases that were running: their workers should stop.
    pub revoked_leases: Vec<i64>,
}

/// The latest finished build of a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBuild {
    pub result: BuildResult,
    pub build_id: i64,
    pub cpv: String,
}

/// One database connection with the queue policy.
pub struct Db {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    policy: QueuePolicy,
}

pub(super) const STEP_COLUMNS: &str =
    "id, request_id, cpv, slot, repo, profile, fingerprint, use_flags, \
     state, reason, sched_rank, estimated_ms, attempts, max_attempts, next_attempt_at, lease_id, \
     lease_worker_id, lease_expires_at, build_id, started_at, finished_at, duration_ms, log_blob";

const REQUEST_COLUMNS: &str =
    "id, kind, profile, target, state, cancel_requested, error, created_at, finished_at";

pub(super) fn step_from_row(row: &Row<'_>) -> rusqlite::Result<StepRow> {
    Ok(StepRow {
        id: row.get(0)?,
        request_id: row.get(1)?,
        cpv: row.get(2)?,
        slot: row.get(3)?,
        repo: row.get(4)?,
        profile: row.get(5)?,
        fingerprint: row.get(6)?,
        use_flags: json_list(row, 7)?,
        state: row.get(8)?,
        reason: row.get(9)?,
        sched_rank: row.get(10)?,
        estimated_ms: row.get(11)?,
        attempts: row.get(12)?,
        max_attempts: row.get(13)?,
        next_attempt_at: row.get(14)?,
        lease_id: row.get(15)?,
        lease_worker_id: row.get(16)?,
        lease_expires_at: row.get(17)?,
        build_id: row.get(18)?,
        started_at: row.get(19)?,
        finished_at: row.get(20)?,
        duration_ms: row.get(21)?,
        log_blob: row.get(22)?,
    })
}

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok(RequestRow {
        id: row.get(0)?,
        kind: row.get(1)?,
        profile: row.get(2)?,
        target: row.get(3)?,
        state: row.get(4)?,
        cancel_requested: row.get(5)?,
        error: row.get(6)?,
        created_at: row.get(7)?,
        finished_at: row.get(8)?,
    })
}

/// A JSON array of strings stored in a text column.
fn json_list(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Json {
        what: what.to_string(),
        source,
    })
}

/// sha256 of a worker token, as stored.
/// A fresh random token: 32 bytes from the OS, hex.
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Db {
    pub(super) fn new(conn: Connection, path: PathBuf, policy: QueuePolicy) -> Db {
        conn.set_prepared_statement_cache_capacity(64);
        Db { conn, path, policy }
    }

    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    /// This connection's journal mode and busy timeout (ms), for diagnostics.
    pub fn connection_settings(&self) -> Result<(String, i64), StoreError> {
        let journal: String = self
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(self.err("read journal mode"))?;
        let busy: i64 = self
            .conn
            .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
            .map_err(self.err("read busy timeout"))?;
        Ok((journal, busy))
    }

    pub(super) fn err(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Run `body` in one IMMEDIATE transaction (write lock taken first); commit on Ok.
    pub(super) fn write<T>(
        &mut self,
        op: &'static str,
        body: impl FnOnce(&Transaction<'_>, &QueuePolicy) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sql {
            path: path.clone(),
            op,
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let value = body(&tx, &self.policy)?;
        tx.commit().map_err(err)?;
        Ok(value)
    }

    // ----- blobs -----

    /// Record a blob already stored in the blob directory (file first, row second, so a row
    /// never names a missing file). Recording it again is harmless.
    pub fn record_blob(
        &mut self,
        sha512: &str,
        size: u64,
        kind: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO blobs (sha512, size, kind, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sha512) DO NOTHING",
                params![sha512, size as i64, kind, now],
            )
            .map_err(self.err("record blob"))?;
        Ok(())
    }

    pub fn has_blob(&self, sha512: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM blobs WHERE sha512 = ?1)",
                [sha512],
                |row| row.get(0),
            )
            .map_err(self.err("look up blob"))
    }

    /// Blobs no step, attempt, result or build refers to (candidates for GC).
    pub fn unreferenced_blobs(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT sha512 FROM blobs b WHERE
                   NOT EXISTS (SELECT 1 FROM steps WHERE log_blob = b.sha512)
                   AND NOT EXISTS (SELECT 1 FROM step_attempts WHERE log_blob = b.sha512)
                   AND NOT EXISTS (SELECT 1 FROM step_results WHERE blob = b.sha512)
                   AND NOT EXISTS (SELECT 1 FROM builds WHERE binpkg_blob = b.sha512)
                 ORDER BY sha512",
            )
            .map_err(self.err("list unreferenced blobs"))?;
        let rows = stmt
            .query_map([], |row| row.get(0))
            .map_err(self.err("list unreferenced blobs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list unreferenced blobs"))
    }

    // ----- workers -----

    /// Create a worker with a fresh random token. Only the token's sha256 is stored.
    pub fn create_worker(&mut self, name: &str, now: i64) -> Result<NewWorker, StoreError> {
        let token = new_token();
        let hash = token_hash(&token);
        let worker_id = self.write("create worker", |tx, _| {
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM workers WHERE name = ?1)",
                    [name],
                    |row| row.get(0),
                )
                .map_err(sql_err(tx, "create worker"))?;
            if exists {
                return Err(StoreError::WorkerExists {
                    name: name.to_string(),
                });
            }
            exec(
                tx,
                "INSERT INTO workers (name, token_sha256, created_at) VALUES (?1, ?2, ?3)",
                params![name, hash, now],
            )
            .map_err(sql_err(tx, "create worker"))?;
            Ok(tx.last_insert_rowid())
        })?;
        Ok(NewWorker { worker_id, token })
    }

    /// Replace a worker's token (the old one stops working).
    pub fn rotate_worker_token(&mut self, name: &str) -> Result<NewWorker, StoreError> {
        let token = new_token();
        let hash = token_hash(&token);
        let worker_id = self.write("rotate worker token", |tx, _| {
            tx.query_row(
                "UPDATE workers SET token_sha256 = ?1 WHERE name = ?2 RETURNING id",
                params![hash, name],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_err(tx, "rotate worker token"))?
            .ok_or_else(|| StoreError::NoSuchWorker {
                what: format!("named {name:?}"),
            })
        })?;
        Ok(NewWorker { worker_id, token })
    }

    /// The worker this token belongs to, if any.
    pub fn authenticate_worker(&self, token: &str) -> Result<Option<WorkerRow>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM workers WHERE token_sha256 = ?1",
                [token_hash(token)],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.err("authenticate worker"))?;
        match id {
            Some(id) => self.worker(id).map(Some),
            None => Ok(None),
        }
    }

    /// Replace what the worker reported: profiles, labels, other capabilities.
    pub fn set_worker_capabilities(
        &mut self,
        worker_id: i64,
        capabilities: &WorkerCapabilities,
        now: i64,
    ) -> Result<(), StoreError> {
        let labels = to_json(&capabilities.labels, "worker labels")?;
        let details = to_json(&capabilities.details, "worker capabilities")?;
        self.write("set worker capabilities", |tx, _| {
            let changed = tx
                .execute(
                    "UPDATE workers SET labels = ?1, capabilities = ?2, last_heartbeat = ?3
                     WHERE id = ?4",
                    params![labels, details, now, worker_id],
                )
                .map_err(sql_err(tx, "set worker capabilities"))?;
            if changed == 0 {
                return Err(StoreError::NoSuchWorker {
                    what: format!("with id {worker_id}"),
                });
            }
            exec(
                tx,
                "DELETE FROM worker_profiles WHERE worker_id = ?1",
                [worker_id],
            )
            .map_err(sql_err(tx, "set worker capabilities"))?;
            for profile in &capabilities.profiles {
                exec(
                    tx,
                    "INSERT OR IGNORE INTO worker_profiles (worker_id, profile) VALUES (?1, ?2)",
                    params![worker_id, profile],
                )
                .map_err(sql_err(tx, "set worker capabilities"))?;
            }
            Ok(())
        })
    }

    pub fn worker(&self, worker_id: i64) -> Result<WorkerRow, StoreError> {
        let mut workers = self.query_workers("WHERE id = ?1", params![worker_id])?;
        workers.pop().ok_or_else(|| StoreError::NoSuchWorker {
            what: format!("with id {worker_id}"),
        })
    }

    pub fn worker_by_name(&self, name: &str) -> Result<Option<WorkerRow>, StoreError> {
        Ok(self.query_workers("WHERE name = ?1", params![name])?.pop())
    }

    pub fn list_workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        self.query_workers("", params![])
    }

    fn query_workers(
        &self,
        filter: &str,
        args: &[&dyn ToSql],
    ) -> Result<Vec<WorkerRow>, StoreError> {
        let sql = format!(
            "SELECT id, name, labels, capabilities, last_heartbeat, paused, paused_reason,
                    consecutive_failures, created_at, load_1min,
                    (SELECT json_group_array(profile) FROM
                        (SELECT profile FROM worker_profiles p WHERE p.worker_id = w.id
                         ORDER BY profile))
             FROM workers w {filter} ORDER BY name"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err("read workers"))?;
        let rows = stmt
            .query_map(args, |row| {
                let details: String = row.get(3)?;
                let capabilities = serde_json::from_str(&details).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                Ok(WorkerRow {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    labels: json_list(row, 2)?,
                    capabilities,
                    last_heartbeat: row.get(4)?,
                    paused: row.get(5)?,
                    paused_reason: row.get(6)?,
                    consecutive_failures: row.get(7)?,
                    created_at: row.get(8)?,
                    load_1min: row.get(9)?,
                    profiles: json_list(row, 10)?,
                })
            })
            .map_err(self.err("read workers"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("read workers"))
    }

    /// Pause or resume a worker: a paused worker gets no new leases.
    pub fn set_worker_paused(
        &mut self,
        worker_id: i64,
        paused: bool,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write("pause worker", |tx, _| {
            let changed = tx
                .execute(
                    "UPDATE workers SET paused = ?1, paused_reason = ?2,
                        consecutive_failures = CASE WHEN ?1 THEN consecutive_failures ELSE 0 END
                     WHERE id = ?3",
                    params![paused, if paused { reason } else { None }, worker_id],
                )
                .map_err(sql_err(tx, "pause worker"))?;
            if changed == 0 {
                return Err(StoreError::NoSuchWorker {
                    what: format!("with id {worker_id}"),
                });
            }
            Ok(())
        })
    }

    /// A worker was heard from without a heartbeat (it long-polls for work): only its
    /// `last_heartbeat` moves. Its step leases are left alone, so a restarted worker's
    /// orphaned leases still expire.
    pub fn mark_worker_seen(&mut self, worker_id: i64, now: i64) -> Result<(), StoreError> {
        self.write("mark worker seen", |tx, _| {
            touch_worker(tx, worker_id, now, "mark worker seen")
        })
    }

    /// A worker is alive: renew its leases. `active_leases` are the leases it is working on;
    /// the reply lists those that are no longer its own (expired, cancelled) so it stops them.
    pub fn heartbeat(
        &mut self,
        worker_id: i64,
        active_leases: &[i64],
        now: i64,
    ) -> Result<HeartbeatReply, StoreError> {
        self.write("heartbeat", |tx, policy| {
            touch_worker(tx, worker_id, now, "heartbeat")?;
            exec(
                tx,
                "UPDATE steps SET lease_expires_at = ?1
                 WHERE lease_worker_id = ?2 AND state IN ('leased', 'building')",
                params![now + policy.lease_timeout_secs, worker_id],
            )
            .map_err(sql_err(tx, "heartbeat"))?;
            let mut revoked = Vec::new();
            let mut still_held = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM steps WHERE lease_id = ?1
                       AND lease_worker_id = ?2 AND state IN ('leased', 'building'))",
                )
                .map_err(sql_err(tx, "heartbeat"))?;
            for &lease in active_leases {
                let held: bool = still_held
                    .query_row(params![lease, worker_id], |row| row.get(0))
                    .map_err(sql_err(tx, "heartbeat"))?;
                if !held {
                    revoked.push(lease);
                }
            }
            Ok(HeartbeatReply { revoked })
        })
    }

    // ----- requests -----

    /// A new request, in state `planning` until its steps are added.
    pub fn create_request(&mut self, request: &NewRequest, now: i64) -> Result<i64, StoreError> {
        self.write("create request", |tx, _| {
            exec(
                tx,
                "INSERT INTO requests (kind, profile, target, state, created_at)
                 VALUES (?1, ?2, ?3, 'planning', ?4)",
                params![request.kind, request.profile, request.target, now],
            )
            .map_err(sql_err(tx, "create request"))?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Planning failed: the request fails with this error.
    pub fn fail_request_planning(
        &mut self,
        request_id: i64,
        error: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write("fail request", |tx, _| {
            let request = request_in(tx, request_id)?;
            if request.state != RequestState::Planning {
                return Err(StoreError::RequestState {
                    id: request_id,
                    state: request.state.to_string(),
                    expected: "planning",
                });
            }
            exec(
                tx,
                "UPDATE requests SET state = 'failed', error = ?1, finished_at = ?2 WHERE id = ?3",
                params![error, now, request_id],
            )
            .map_err(sql_err(tx, "fail request"))?;
            Ok(())
        })
    }

    /// Insert a planned request's steps and edges, mark steps with all dependencies done
    /// `ready`, block dependents of cached failures, and start (or, with nothing to build,
    /// finish) the request. Returns the step ids, in the order of `steps`.
    pub fn add_planned_steps(
        &mut self,
        request_id: i64,
        steps: &[NewStep],
        now: i64,
    ) -> Result<Vec<i64>, StoreError> {
        for (index, step) in steps.iter().enumerate() {
            if let Some(&dep) = step.deps.iter().find(|&&d| d >= steps.len()) {
                return Err(StoreError::BadStepDep {
                    index,
                    cpv: step.cpv.clone(),
                    dep,
                    count: steps.len(),
                });
            }
        }
        let use_json: Vec<String> = steps
            .iter()
            .map(|s| to_json(&s.use_flags, &format!("USE of {}", s.cpv)))
            .collect::<Result<_, _>>()?;
        self.write("add planned steps", |tx, policy| {
            let request = request_in(tx, request_id)?;
            if request.state != RequestState::Planning {
                return Err(StoreError::RequestState {
                    id: request_id,
                    state: request.state.to_string(),
                    expected: "planning",
                });
            }
            let op = "add planned steps";
            let mut ids = Vec::with_capacity(steps.len());
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO steps (request_id, cpv, slot, repo, profile, fingerprint,
                            use_flags, state, reason, sched_rank, estimated_ms, max_attempts,
                            finished_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )
                    .map_err(sql_err(tx, op))?;
                for (step, use_flags) in steps.iter().zip(&use_json) {
                    let (state, reason, finished) = match &step.initial {
                        InitialState::Build => (StepState::Queued, None, None),
                        InitialState::Cached => (StepState::Cached, None, Some(now)),
                        InitialState::CachedFailure { reason } => {
                            (StepState::Failed, Some(reason.as_str()), Some(now))
                        }
                    };
                    insert
                        .execute(params![
                            request_id,
                            step.cpv,
                            step.slot,
                            step.repo,
                            request.profile,
                            step.fingerprint,
                            use_flags,
                            state,
                            reason,
                            step.sched_rank,
                            step.estimated_ms,
                            policy.retry.max_attempts,
                            finished,
                        ])
                        .map_err(sql_err(tx, op))?;
                    ids.push(tx.last_insert_rowid());
                }
                let mut edge = tx
                    .prepare_cached("INSERT INTO step_deps (step_id, dep_step_id) VALUES (?1, ?2)")
                    .map_err(sql_err(tx, op))?;
                for (index, step) in steps.iter().enumerate() {
                    let mut deps = step.deps.clone();
                    deps.sort_unstable();
                    deps.dedup();
                    for dep in deps {
                        edge.execute(params![ids[index], ids[dep]])
                            .map_err(sql_err(tx, op))?;
                    }
                }
            }
            for (index, step) in steps.iter().enumerate() {
                if matches!(step.initial, InitialState::CachedFailure { .. }) {
                    block_dependents(tx, ids[index], &step.cpv)?;
                }
            }
            exec(
                tx,
                "UPDATE steps SET state = 'ready' WHERE request_id = ?1 AND state = 'queued'
                   AND NOT EXISTS (SELECT 1 FROM step_deps d JOIN steps s2 ON s2.id = d.dep_step_id
                                   WHERE d.step_id = steps.id
                                     AND s2.state NOT IN ('succeeded', 'cached'))",
                [request_id],
            )
            .map_err(sql_err(tx, op))?;
            exec(
                tx,
                "UPDATE requests SET state = 'running' WHERE id = ?1",
                [request_id],
            )
            .map_err(sql_err(tx, op))?;
            finish_request_if_done(tx, request_id, now)?;
            Ok(ids)
        })
    }

    /// Cancel a request: its unfinished steps are cancelled and running leases revoked.
    pub fn cancel_request(
        &mut self,
        request_id: i64,
        now: i64,
    ) -> Result<CancelSummary, StoreError> {
        self.write("cancel request", |tx, _| {
            let op = "cancel request";
            let request = request_in(tx, request_id)?;
            exec(
                tx,
                "UPDATE requests SET cancel_requested = 1 WHERE id = ?1",
                [request_id],
            )
            .map_err(sql_err(tx, op))?;
            if matches!(
                request.state,
                RequestState::Succeeded | RequestState::Failed | RequestState::Cancelled
            ) {
                return Ok(CancelSummary::default());
            }
            let revoked_leases: Vec<i64> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT lease_id FROM steps WHERE request_id = ?1
                         AND state IN ('leased', 'building') AND lease_id IS NOT NULL",
                    )
                    .map_err(sql_err(tx, op))?;
                let rows = stmt
                    .query_map([request_id], |row| row.get(0))
                    .map_err(sql_err(tx, op))?;
                rows.collect::<Result<_, _>>().map_err(sql_err(tx, op))?
            };
            for &lease in &revoked_leases {
                exec(
                    tx,
                    "UPDATE step_attempts SET outcome = 'cancelled', finished_at = ?1
                     WHERE id = ?2 AND outcome IS NULL",
                    params![now, lease],
                )
                .map_err(sql_err(tx, op))?;
            }
            let cancelled_steps = tx
                .execute(
                    "UPDATE steps SET state = 'cancelled', reason = 'request cancelled',
                        lease_worker_id = NULL, lease_expires_at = NULL, finished_at = ?1
                     WHERE request_id = ?2
                       AND state IN ('queued', 'ready', 'leased', 'building')",
                    params![now, request_id],
                )
                .map_err(sql_err(tx, op))?;
            exec(
                tx,
                "UPDATE requests SET state = 'cancelled', finished_at = ?1 WHERE id = ?2",
                params![now, request_id],
            )
            .map_err(sql_err(tx, op))?;
            Ok(CancelSummary {
                cancelled_steps,
                revoked_leases,
            })
        })
    }

    pub fn request(&self, request_id: i64) -> Result<RequestRow, StoreError> {
        request_in(&self.conn, request_id)
    }

    /// The newest requests first.
    pub fn list_requests(&self, limit: u32) -> Result<Vec<RequestRow>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests ORDER BY id DESC LIMIT ?1");
        let mut stmt = self.conn.prepare(&sql).map_err(self.err("list requests"))?;
        let rows = stmt
            .query_map([limit], request_from_row)
            .map_err(self.err("list requests"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list requests"))
    }

    /// Requests in `planning` or `running`: what a restarted coordinator resumes.
    pub fn unfinished_requests(&self) -> Result<Vec<RequestRow>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE state IN ('planning', 'running')
             ORDER BY id"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(self.err("list unfinished requests"))?;
        let rows = stmt
            .query_map([], request_from_row)
            .map_err(self.err("list unfinished requests"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list unfinished requests"))
    }

    // ----- steps -----

    pub fn step(&self, step_id: i64) -> Result<StepRow, StoreError> {
        step_in(&self.conn, step_id)
    }

    /// A request's steps in scheduling order.
    pub fn request_steps(&self, request_id: i64) -> Result<Vec<StepRow>, StoreError> {
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE request_id = ?1 ORDER BY sched_rank, id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err("list steps"))?;
        let rows = stmt
            .query_map([request_id], step_from_row)
            .map_err(self.err("list steps"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list steps"))
    }

    /// The CPVs of the steps `step_id` depends on.
    pub fn step_dep_cpvs(&self, step_id: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.cpv FROM step_deps d JOIN steps s ON s.id = d.dep_step_id
                 WHERE d.step_id = ?1 ORDER BY s.cpv",
            )
            .map_err(self.err("list step dependencies"))?;
        let rows = stmt
            .query_map([step_id], |row| row.get(0))
            .map_err(self.err("list step dependencies"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list step dependencies"))
    }

    /// The files a succeeded step produced.
    pub fn step_results(&self, step_id: i64) -> Result<Vec<StepResultFile>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, blob FROM step_results WHERE step_id = ?1 ORDER BY name")
            .map_err(self.err("list step results"))?;
        let rows = stmt
            .query_map([step_id], |row| {
                Ok(StepResultFile {
                    name: row.get(0)?,
                    blob: row.get(1)?,
                })
            })
            .map_err(self.err("list step results"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("list step results"))
    }

    /// Lease the first ready step (in scheduling order) of a profile this worker builds, or
    /// `None` when there is none (or the worker is paused).
    pub fn lease_next(&mut self, worker_id: i64, now: i64) -> Result<Option<Lease>, StoreError> {
        self.write("lease step", |tx, policy| {
            let op = "lease step";
            let paused: Option<bool> = tx
                .query_row(
                    "SELECT paused FROM workers WHERE id = ?1",
                    [worker_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_err(tx, op))?;
            match paused {
                None => {
                    return Err(StoreError::NoSuchWorker {
                        what: format!("with id {worker_id}"),
                    })
                }
                Some(true) => return Ok(None),
                Some(false) => {}
            }
            let profiles: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached("SELECT profile FROM worker_profiles WHERE worker_id = ?1")
                    .map_err(sql_err(tx, op))?;
                let rows = stmt
                    .query_map([worker_id], |row| row.get(0))
                    .map_err(sql_err(tx, op))?;
                rows.collect::<Result<_, _>>().map_err(sql_err(tx, op))?
            };
            // One indexed walk per profile (in rank order, no sort), then the best of those.
            let mut candidate: Option<ReadyCandidate> = None;
            {
                let mut first_ready = tx
                    .prepare_cached(
                        "SELECT s.sched_rank, s.request_id, s.id, s.attempts, s.build_id,
                                s.profile, s.cpv
                         FROM steps s JOIN requests r ON r.id = s.request_id
                         WHERE s.state = 'ready' AND s.profile = ?1 AND s.next_attempt_at <= ?2
                           AND r.cancel_requested = 0
                         ORDER BY s.sched_rank, s.request_id, s.id
                         LIMIT 1",
                    )
                    .map_err(sql_err(tx, op))?;
                for profile in &profiles {
                    let found = first_ready
                        .query_row(params![profile, now], |row| {
                            Ok(ReadyCandidate {
                                order: (row.get(0)?, row.get(1)?, row.get(2)?),
                                attempts: row.get(3)?,
                                build_id: row.get(4)?,
                                profile: row.get(5)?,
                                cpv: row.get(6)?,
                            })
                        })
                        .optional()
                        .map_err(sql_err(tx, op))?;
                    if let Some(found) = found {
                        let better = match &candidate {
                            Some(best) => found.order < best.order,
                            None => true,
                        };
                        if better {
                            candidate = Some(found);
                        }
                    }
                }
            }
            let candidate =
                candidate.map(|c| (c.order.2, c.attempts, c.build_id, c.profile, c.cpv));
            let Some((step_id, attempts, build_id, profile, cpv)) = candidate else {
                return Ok(None);
            };
            let build_id = match build_id {
                Some(id) => id,
                None => tx
                    .query_row(
                        "INSERT INTO build_ids (profile, cpv, last_build_id) VALUES (?1, ?2, 1)
                         ON CONFLICT (profile, cpv) DO UPDATE SET last_build_id = last_build_id + 1
                         RETURNING last_build_id",
                        params![profile, cpv],
                        |row| row.get(0),
                    )
                    .map_err(sql_err(tx, op))?,
            };
            exec(
                tx,
                "INSERT INTO step_attempts (step_id, worker_id, leased_at) VALUES (?1, ?2, ?3)",
                params![step_id, worker_id, now],
            )
            .map_err(sql_err(tx, op))?;
            let lease_id = tx.last_insert_rowid();
            let expires_at = now + policy.lease_timeout_secs;
            exec(
                tx,
                "UPDATE steps SET state = 'leased', attempts = attempts + 1, lease_id = ?1,
                    lease_worker_id = ?2, lease_expires_at = ?3, build_id = ?4,
                    started_at = coalesce(started_at, ?5)
                 WHERE id = ?6",
                params![lease_id, worker_id, expires_at, build_id, now, step_id],
            )
            .map_err(sql_err(tx, op))?;
            let step = step_in(tx, step_id)?;
            Ok(Some(Lease {
                lease_id,
                step_id,
                request_id: step.request_id,
                cpv: step.cpv,
                slot: step.slot,
                repo: step.repo,
                profile: step.profile,
                fingerprint: step.fingerprint,
                use_flags: step.use_flags,
                build_id,
                attempt: attempts + 1,
                expires_at,
            }))
        })
    }

    /// The worker started building (leased -> building). Repeating it is harmless.
    pub fn mark_building(
        &mut self,
        step_id: i64,
        lease_id: i64,
        worker_id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.write("mark step building", |tx, policy| {
            let step = step_in(tx, step_id)?;
            check_holder(tx, &step, lease_id, worker_id)?;
            if step.lease_id != Some(lease_id) || !step.state.is_leased() {
                // Expired or cancelled meanwhile: the worker learns it from its heartbeat.
                return Ok(false);
            }
            exec(
                tx,
                "UPDATE steps SET state = 'building', lease_expires_at = ?1 WHERE id = ?2",
                params![now + policy.lease_timeout_secs, step_id],
            )
            .map_err(sql_err(tx, "mark step building"))?;
            Ok(true)
        })
    }

    /// Record the end of a lease. Repeating the same completion is harmless
    /// (`AlreadyRecorded`); the completion of an expired or cancelled lease is `Ignored`.
    /// Blobs named in the outcome must have been recorded with [`Db::record_blob`].
    pub fn complete_step(
        &mut self,
        step_id: i64,
        lease_id: i64,
        worker_id: i64,
        outcome: &StepOutcome,
        now: i64,
    ) -> Result<Completion, StoreError> {
        self.write("complete step", |tx, policy| {
            let op = "complete step";
            let step = step_in(tx, step_id)?;
            let attempt: Option<(i64, i64, Option<String>)> = tx
                .query_row(
                    "SELECT step_id, worker_id, outcome FROM step_attempts WHERE id = ?1",
                    [lease_id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(sql_err(tx, op))?;
            let Some((attempt_step, holder, recorded)) = attempt else {
                return Err(StoreError::UnknownLease { step_id, lease_id });
            };
            if attempt_step != step_id {
                return Err(StoreError::UnknownLease { step_id, lease_id });
            }
            if holder != worker_id {
                return Err(StoreError::NotLeaseHolder {
                    step_id,
                    lease_id,
                    holder,
                    worker_id,
                });
            }
            match recorded.as_deref() {
                None => {}
                Some(done) if done == outcome.name() => return Ok(Completion::AlreadyRecorded),
                Some("expired") => {
                    return Ok(Completion::Ignored {
                        reason: format!(
                            "lease {lease_id} expired before the completion arrived; the step was \
                             handed out again"
                        ),
                    })
                }
                Some("cancelled") => {
                    return Ok(Completion::Ignored {
                        reason: format!("request {} was cancelled", step.request_id),
                    })
                }
                Some(other) => {
                    return Err(StoreError::ConflictingCompletion {
                        step_id,
                        lease_id,
                        recorded: other.to_string(),
                        reported: outcome.name(),
                    })
                }
            }
            let (duration_ms, log_blob) = match outcome {
                StepOutcome::Succeeded {
                    duration_ms,
                    log_blob,
                    ..
                }
                | StepOutcome::Failed {
                    duration_ms,
                    log_blob,
                    ..
                } => (*duration_ms, log_blob.as_deref()),
            };
            let mut blobs: Vec<&str> = log_blob.into_iter().collect();
            if let StepOutcome::Succeeded { results, .. } = outcome {
                blobs.extend(results.iter().map(|r| r.blob.as_str()));
            }
            for blob in blobs {
                let known: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM blobs WHERE sha512 = ?1)",
                        [blob],
                        |row| row.get(0),
                    )
                    .map_err(sql_err(tx, op))?;
                if !known {
                    return Err(StoreError::MissingBlob {
                        step_id,
                        sha512: blob.to_string(),
                    });
                }
            }
            let error = match outcome {
                StepOutcome::Failed { error, .. } => Some(error.as_str()),
                StepOutcome::Succeeded { .. } => None,
            };
            exec(
                tx,
                "UPDATE step_attempts SET outcome = ?1, finished_at = ?2, error = ?3,
                    duration_ms = ?4, log_blob = ?5 WHERE id = ?6",
                params![outcome.name(), now, error, duration_ms, log_blob, lease_id],
            )
            .map_err(sql_err(tx, op))?;

            let new_state = match outcome {
                StepOutcome::Succeeded { results, .. } => {
                    exec(
                        tx,
                        "UPDATE steps SET state = 'succeeded', reason = NULL, finished_at = ?1,
                            duration_ms = ?2, log_blob = ?3, lease_worker_id = NULL,
                            lease_expires_at = NULL
                         WHERE id = ?4",
                        params![now, duration_ms, log_blob, step_id],
                    )
                    .map_err(sql_err(tx, op))?;
                    for result in results {
                        exec(
                            tx,
                            "INSERT OR REPLACE INTO step_results (step_id, name, blob)
                             VALUES (?1, ?2, ?3)",
                            params![step_id, result.name, result.blob],
                        )
                        .map_err(sql_err(tx, op))?;
                    }
                    record_build(
                        tx,
                        &step,
                        BuildResult::Succeeded,
                        results.first().map(|r| r.blob.as_str()),
                        duration_ms,
                        now,
                    )?;
                    exec(
                        tx,
                        "UPDATE workers SET consecutive_failures = 0 WHERE id = ?1",
                        [worker_id],
                    )
                    .map_err(sql_err(tx, op))?;
                    promote_dependents(tx, step_id)?;
                    StepState::Succeeded
                }
                StepOutcome::Failed {
                    error, retryable, ..
                } => {
                    let failures: u32 = tx
                        .query_row(
                            "UPDATE workers SET consecutive_failures = consecutive_failures + 1
                             WHERE id = ?1 RETURNING consecutive_failures",
                            [worker_id],
                            |row| row.get(0),
                        )
                        .map_err(sql_err(tx, op))?;
                    if failures >= policy.pause_worker_after_failures {
                        exec(
                            tx,
                            "UPDATE workers SET paused = 1, paused_reason = ?1 WHERE id = ?2",
                            params![
                                format!(
                                    "{failures} failed builds in a row (last: {} : {error})",
                                    step.cpv
                                ),
                                worker_id
                            ],
                        )
                        .map_err(sql_err(tx, op))?;
                    }
                    if *retryable && policy.retry.may_retry(step.attempts) {
                        let next = now + policy.retry.delay_after(step.attempts);
                        exec(
                            tx,
                            "UPDATE steps SET state = 'ready', reason = ?1, next_attempt_at = ?2,
                                duration_ms = ?3, log_blob = ?4, lease_worker_id = NULL,
                                lease_expires_at = NULL
                             WHERE id = ?5",
                            params![
                                format!("attempt {} failed: {error}", step.attempts),
                                next,
                                duration_ms,
                                log_blob,
                                step_id
                            ],
                        )
                        .map_err(sql_err(tx, op))?;
                        StepState::Ready
                    } else {
                        exec(
                            tx,
                            "UPDATE steps SET state = 'failed', reason = ?1, finished_at = ?2,
                                duration_ms = ?3, log_blob = ?4, lease_worker_id = NULL,
                                lease_expires_at = NULL
                             WHERE id = ?5",
                            params![error, now, duration_ms, log_blob, step_id],
                        )
                        .map_err(sql_err(tx, op))?;
                        record_build(tx, &step, BuildResult::Failed, None, duration_ms, now)?;
                        block_dependents(tx, step_id, &step.cpv)?;
                        StepState::Failed
                    }
                }
            };
            finish_request_if_done(tx, step.request_id, now)?;
            Ok(Completion::Recorded { state: new_state })
        })
    }

    /// Put back the steps whose lease was not renewed in time (the worker died or lost
    /// contact). A step out of attempts fails and blocks its dependents.
    pub fn expire_leases(&mut self, now: i64) -> Result<Vec<ExpiredLease>, StoreError> {
        self.write("expire leases", |tx, policy| {
            let op = "expire leases";
            let stale: Vec<StepRow> = {
                let sql = format!(
                    "SELECT {STEP_COLUMNS} FROM steps
                     WHERE state IN ('leased', 'building') AND lease_expires_at <= ?1"
                );
                let mut stmt = tx.prepare(&sql).map_err(sql_err(tx, op))?;
                let rows = stmt
                    .query_map([now], step_from_row)
                    .map_err(sql_err(tx, op))?;
                let mut steps: Vec<StepRow> =
                    rows.collect::<Result<_, _>>().map_err(sql_err(tx, op))?;
                // Sorted here: ORDER BY in SQL would make SQLite scan by rowid.
                steps.sort_by_key(|s| s.id);
                steps
            };
            let mut expired = Vec::with_capacity(stale.len());
            for step in stale {
                let (Some(lease_id), Some(worker_id)) = (step.lease_id, step.lease_worker_id)
                else {
                    continue;
                };
                exec(
                    tx,
                    "UPDATE step_attempts SET outcome = 'expired', finished_at = ?1,
                        error = 'lease expired: no heartbeat'
                     WHERE id = ?2 AND outcome IS NULL",
                    params![now, lease_id],
                )
                .map_err(sql_err(tx, op))?;
                // A lost worker is not the step's fault: retry at once, but within the
                // attempt limit so a step that kills its workers does not loop forever.
                let requeued = policy.retry.may_retry(step.attempts);
                if requeued {
                    exec(
                        tx,
                        "UPDATE steps SET state = 'ready', next_attempt_at = ?1,
                            reason = ?2, lease_worker_id = NULL, lease_expires_at = NULL
                         WHERE id = ?3",
                        params![
                            now,
                            format!("lease {lease_id} of worker {worker_id} expired"),
                            step.id
                        ],
                    )
                    .map_err(sql_err(tx, op))?;
                } else {
                    exec(
                        tx,
                        "UPDATE steps SET state = 'failed', finished_at = ?1, reason = ?2,
                            lease_worker_id = NULL, lease_expires_at = NULL
                         WHERE id = ?3",
                        params![
                            now,
                            format!(
                                "{} attempts, the last lease ({lease_id}, worker {worker_id}) \
                                 expired",
                                step.attempts
                            ),
                            step.id
                        ],
                    )
                    .map_err(sql_err(tx, op))?;
                    block_dependents(tx, step.id, &step.cpv)?;
                    finish_request_if_done(tx, step.request_id, now)?;
                }
                expired.push(ExpiredLease {
                    step_id: step.id,
                    lease_id,
                    worker_id,
                    cpv: step.cpv,
                    requeued,
                });
            }
            Ok(expired)
        })
    }

    // ----- builds -----

    /// The latest finished build of each of these fingerprints that has one.
    pub fn known_builds(
        &self,
        fingerprints: &[&str],
    ) -> Result<HashMap<String, KnownBuild>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT result, build_id, cpv FROM builds WHERE fingerprint = ?1
                 ORDER BY id DESC LIMIT 1",
            )
            .map_err(self.err("look up builds"))?;
        let mut known = HashMap::new();
        for &fingerprint in fingerprints {
            let found = stmt
                .query_row([fingerprint], |row| {
                    Ok(KnownBuild {
                        result: row.get(0)?,
                        build_id: row.get(1)?,
                        cpv: row.get(2)?,
                    })
                })
                .optional()
                .map_err(self.err("look up builds"))?;
            if let Some(build) = found {
                known.insert(fingerprint.to_string(), build);
            }
        }
        Ok(known)
    }

    /// Duration of the last successful build of each CPV in this profile (for estimates).
    pub fn last_durations(
        &self,
        profile: &str,
        cpvs: &[&str],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT duration_ms FROM builds
                 WHERE profile = ?1 AND cpv = ?2 AND result = 'succeeded'
                   AND duration_ms IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
            )
            .map_err(self.err("look up durations"))?;
        let mut durations = HashMap::new();
        for &cpv in cpvs {
            let found: Option<i64> = stmt
                .query_row(params![profile, cpv], |row| row.get(0))
                .optional()
                .map_err(self.err("look up durations"))?;
            if let Some(ms) = found {
                durations.insert(cpv.to_string(), ms);
            }
        }
        Ok(durations)
    }
}

/// The first ready step of one profile, in scheduling order.
struct ReadyCandidate {
    /// (sched_rank, request_id, step id): smaller goes first.
    order: (i64, i64, i64),
    attempts: u32,
    build_id: Option<i64>,
    profile: String,
    cpv: String,
}

/// Execute through the statement cache: the queue runs the same statements all the time.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn sql_err(tx: &Connection, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    let path = tx.path().map(PathBuf::from).unwrap_or_default();
    move |source| StoreError::Sql {
        path: path.clone(),
        op,
        source,
    }
}

fn request_in(conn: &Connection, request_id: i64) -> Result<RequestRow, StoreError> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.query_row([request_id], request_from_row))
        .optional()
        .map_err(sql_err(conn, "read request"))?
        .ok_or(StoreError::NoSuchRequest { id: request_id })
}

fn step_in(conn: &Connection, step_id: i64) -> Result<StepRow, StoreError> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.query_row([step_id], step_from_row))
        .optional()
        .map_err(sql_err(conn, "read step"))?
        .ok_or(StoreError::NoSuchStep { id: step_id })
}

/// The lease must exist, belong to this step and to this worker.
fn check_holder(
    conn: &Connection,
    step: &StepRow,
    lease_id: i64,
    worker_id: i64,
) -> Result<(), StoreError> {
    let attempt: Option<(i64, i64)> = conn
        .query_row(
            "SELECT step_id, worker_id FROM step_attempts WHERE id = ?1",
            [lease_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sql_err(conn, "check lease"))?;
    match attempt {
        Some((attempt_step, holder)) if attempt_step == step.id => {
            if holder == worker_id {
                Ok(())
            } else {
                Err(StoreError::NotLeaseHolder {
                    step_id: step.id,
                    lease_id,
                    holder,
                    worker_id,
                })
            }
        }
        _ => Err(StoreError::UnknownLease {
            step_id: step.id,
            lease_id,
        }),
    }
}

fn record_build(
    tx: &Connection,
    step: &StepRow,
    result: BuildResult,
    binpkg_blob: Option<&str>,
    duration_ms: i64,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO builds (fingerprint, profile, cpv, build_id, result, step_id, binpkg_blob,
            duration_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            step.fingerprint,
            step.profile,
            step.cpv,
            step.build_id.unwrap_or(0),
            result,
            step.id,
            binpkg_blob,
            duration_ms,
            now
        ],
    )
    .map_err(sql_err(tx, "record build"))?;
    Ok(())
}

/// Dependents of a step that just succeeded whose dependencies are now all done: ready.
fn promote_dependents(tx: &Connection, step_id: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE steps SET state = 'ready'
         WHERE state = 'queued'
           AND id IN (SELECT step_id FROM step_deps WHERE dep_step_id = ?1)
           AND NOT EXISTS (SELECT 1 FROM step_deps d JOIN steps s2 ON s2.id = d.dep_step_id
                           WHERE d.step_id = steps.id AND s2.state NOT IN ('succeeded', 'cached'))",
    )
    .and_then(|mut stmt| stmt.execute([step_id]))
    .map_err(sql_err(tx, "promote dependents"))?;
    Ok(())
}

/// Every step that waits, directly or not, for the failed step is blocked, with a reason
/// naming the failed CPV (a step already blocked keeps its first reason).
fn block_dependents(tx: &Connection, step_id: i64, failed_cpv: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "WITH RECURSIVE waiting(id) AS (
             SELECT step_id FROM step_deps WHERE dep_step_id = ?1
             UNION
             SELECT d.step_id FROM step_deps d JOIN waiting w ON d.dep_step_id = w.id
         )
         UPDATE steps SET state = 'blocked', reason = ?2
         WHERE id IN (SELECT id FROM waiting) AND state IN ('queued', 'ready')",
    )
    .and_then(|mut stmt| stmt.execute(params![step_id, format!("dependency {failed_cpv} failed")]))
    .map_err(sql_err(tx, "block dependents"))?;
    Ok(())
}

/// A running request with no step left to do is finished: succeeded when every step
/// succeeded or was cached, failed otherwise.
/// Sets a worker's `last_heartbeat`; an unknown worker id is an error.
fn touch_worker(
    tx: &Connection,
    worker_id: i64,
    now: i64,
    op: &'static str,
) -> Result<(), StoreError> {
    let changed = tx
        .execute(
            "UPDATE workers SET last_heartbeat = ?1 WHERE id = ?2",
            params![now, worker_id],
        )
        .map_err(sql_err(tx, op))?;
    if changed == 0 {
        return Err(StoreError::NoSuchWorker {
            what: format!("with id {worker_id}"),
        });
    }
    Ok(())
}

fn finish_request_if_done(tx: &Connection, request_id: i64, now: i64) -> Result<(), StoreError> {
    // Index seeks only: this runs after every completion.
    let (unfinished, bad): (bool, bool) = tx
        .prepare_cached(
            "SELECT
                EXISTS (SELECT 1 FROM steps WHERE request_id = ?1
                        AND state IN ('queued', 'ready', 'leased', 'building')),
                EXISTS (SELECT 1 FROM steps WHERE request_id = ?1
                        AND state IN ('failed', 'blocked', 'cancelled'))",
        )
        .and_then(|mut stmt| stmt.query_row([request_id], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(sql_err(tx, "finish request"))?;
    if unfinished {
        return Ok(());
    }
    let state = if bad {
        RequestState::Failed
    } else {
        RequestState::Succeeded
    };
    exec(
        tx,
        "UPDATE requests SET state = ?1, finished_at = ?2 WHERE id = ?3 AND state = 'running'",
        params![state, now, request_id],
    )
    .map_err(sql_err(tx, "finish request"))?;
    Ok(())
}
