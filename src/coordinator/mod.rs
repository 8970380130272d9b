//! The coordinator (`binfarm serve`): one process holding the state (SQLite + blobs), the
//! signing key, the worker protocol, the admin API and the mirror.
//!
//! Handlers only compose the store, plan, binpkg and publish modules; every state change is
//! one store transaction, so a coordinator killed at any point restarts from SQLite.

pub mod config;
mod error;
mod finish;
mod notify;
mod planning;
pub mod protocol;
mod routes_admin;
mod routes_worker;
mod uploads;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use tokio::sync::Notify;

pub use config::FarmConfig;
pub use error::ApiError;
pub use routes_admin::LOG_COMPLETE_HEADER;

use crate::profile::Profile;
use crate::sign::SigningKey;
use crate::store::{Db, QueuePolicy, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {path}: {message}")]
    SigningKey { path: PathBuf, message: String },
    #[error("admin token {path}: {source}")]
    AdminToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mirror(#[from] crate::mirror::MirrorError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Everything a handler needs.
pub struct Coordinator {
    pub config: FarmConfig,
    pub store: Store,
    db: Mutex<Db>,
    pub signing_key: SigningKey,
    admin_token: String,
    /// Wakes long-polling workers when steps may have become ready.
    pub work_available: Notify,
    pub planning: planning::PlanLeases,
    /// Byte offsets of live logs, so `logs --follow` can poll.
    log_dir: PathBuf,
    profiles: Mutex<HashMap<String, Arc<Profile>>>,
    /// Requests whose end was already acted on (this run): whoever inserts a request
    /// first publishes it.
    finished: Mutex<std::collections::HashSet<i64>>,
    /// Held while a snapshot is made and published locally, so publishes of finished
    /// requests and the startup recovery happen one after the other, in order.
    publishing: tokio::sync::Mutex<()>,
    /// Held while trees are pushed to the FTP targets.
    ftp_pushing: tokio::sync::Mutex<()>,
    /// What `/metrics` exports.
    pub metrics: crate::metrics::FarmMetrics,
}

impl Coordinator {
    /// Opens (creating on first start) the state directory, database, signing key and admin
    /// token named by `config`.
    pub fn open(config: FarmConfig) -> Result<Arc<Self>, CoordinatorError> {
        let policy = QueuePolicy {
            lease_timeout_secs: config.queue.lease_seconds as i64,
            retry: crate::plan::RetryPolicy {
                max_attempts: config.queue.max_attempts,
                base_delay_secs: config.queue.retry_backoff_seconds as i64,
                ..Default::default()
            },
            pause_worker_after_failures: config.queue.pause_worker_after_failures,
        };
        let store = Store::open_with(&config.state.dir, policy)?;
        let db = store.connect()?;
        let signing_key = load_or_create_signing_key(&config)?;
        let admin_token = load_or_create_admin_token(&config.admin_token_file())?;
        let log_dir = config.state.dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| CoordinatorError::Other(format!("creating {}: {e}", log_dir.display())))?;
        Ok(Arc::new(Self {
            config,
            store,
            db: Mutex::new(db),
            signing_key,
            admin_token,
            work_available: Notify::new(),
            planning: planning::PlanLeases::default(),
            log_dir,
            profiles: Mutex::new(HashMap::new()),
            finished: Mutex::new(std::collections::HashSet::new()),
            publishing: tokio::sync::Mutex::new(()),
            ftp_pushing: tokio::sync::Mutex::new(()),
            metrics: crate::metrics::FarmMetrics::new(),
        }))
    }

    /// Runs `f` with the database on a blocking thread.
    pub async fn with_db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = this
                .db
                .lock()
                .map_err(|_| ApiError::Internal("database lock poisoned".into()))?;
            f(&mut db).map_err(ApiError::from)
        })
        .await
        .map_err(|e| ApiError::internal("database task", e))?
    }

    /// A profile from the profiles directory, by name (cached; a changed file is re-read
    /// at the next start).
    pub fn profile(&self, name: &str) -> Result<Arc<Profile>, ApiError> {
        if let Ok(cache) = self.profiles.lock() {
            if let Some(p) = cache.get(name) {
                return Ok(p.clone());
            }
        }
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.');
        if !valid_name {
            return Err(ApiError::BadRequest(format!(
                "invalid profile name {name:?}"
            )));
        }
        let profile = Profile::find(name, &self.config.profiles.dir)
            .map_err(|e| ApiError::NotFound(format!("unknown profile {name:?}: {e}")))?;
        let profile = Arc::new(profile);
        if let Ok(mut cache) = self.profiles.lock() {
            cache.insert(name.to_owned(), profile.clone());
        }
        Ok(profile)
    }

    pub fn check_admin(&self, token: Option<&str>) -> Result<(), ApiError> {
        match token {
            Some(t) if constant_time_eq(t.as_bytes(), self.admin_token.as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized),
        }
    }

    pub fn log_path(&self, step_id: i64) -> PathBuf {
        self.log_dir.join(format!("step-{step_id}.log"))
    }

    /// Periodic housekeeping: expired leases back to the queue, nightly schedule.
    async fn housekeeping(self: Arc<Self>) {
        let mut last_nightly_check = crate::store::unix_now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = crate::store::unix_now();
            match self.with_db(move |db| db.expire_leases(now)).await {
                Ok(expired) if !expired.is_empty() => {
                    for lease in &expired {
                        tracing::warn!(
                            "lease {} of step {} ({}) expired: worker {} stopped heart-beating{}",
                            lease.lease_id,
                            lease.step_id,
                            lease.cpv,
                            lease.worker_id,
                            if lease.requeued {
                                "; requeued"
                            } else {
                                "; no attempts left"
                            }
                        );
                    }
                    self.work_available.notify_waiters();
                }
                Ok(_) => {}
                Err(err) => tracing::error!("expiring leases: {err}"),
            }
            if self.planning.expire(now) {
                self.work_available.notify_waiters();
            }
            if let Err(err) = self.run_due_nightlies(last_nightly_check, now).await {
                tracing::error!("nightly schedule: {err}");
            }
            last_nightly_check = now;
        }
    }

    /// Starts the nightlies whose time of day fell in (after, now].
    async fn run_due_nightlies(self: &Arc<Self>, after: i64, now: i64) -> Result<(), ApiError> {
        for nightly in &self.config.nightly {
            let Some(minute) = config::parse_time_of_day(&nightly.at) else {
                continue;
            };
            if crossed_time_of_day(after, now, minute) {
                let id = self
                    .create_request(crate::store::RequestKind::Nightly, &nightly.profile, None)
                    .await?;
                tracing::info!(
                    "nightly request {id} for profile {} started ({})",
                    nightly.profile,
                    nightly.at
                );
            }
        }
        Ok(())
    }

    /// Creates a nightly (whole profile set) or manual (one atom) request.
    pub async fn create_request(
        self: &Arc<Self>,
        kind: crate::store::RequestKind,
        profile: &str,
        atom: Option<&str>,
    ) -> Result<i64, ApiError> {
        let profile = self.profile(profile)?;
        let target = match (kind, atom) {
            (crate::store::RequestKind::Manual, Some(atom)) => {
                let parsed = crate::atom::Atom::parse(atom)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                if parsed.blocker().is_some() {
                    return Err(ApiError::BadRequest(format!(
                        "{atom:?}: a blocker cannot be rebuilt"
                    )));
                }
                atom.to_owned()
            }
            (crate::store::RequestKind::Manual, None) => {
                return Err(ApiError::BadRequest("a rebuild needs an atom".into()));
            }
            (crate::store::RequestKind::Nightly, _) => crate::worker::plan::PROFILE_SET.to_owned(),
        };
        let request = crate::store::NewRequest {
            kind,
            profile: profile.name.clone(),
            target,
        };
        let now = crate::store::unix_now();
        let id = self
            .with_db(move |db| db.create_request(&request, now))
            .await?;
        self.work_available.notify_waiters();
        Ok(id)
    }
}

/// Did the wall clock pass `minute` after midnight (local time) in (after, now]?
fn crossed_time_of_day(after: i64, now: i64, minute: u32) -> bool {
    let offset = local_utc_offset_seconds();
    let day = |t: i64| (t + offset).div_euclid(86_400);
    let at = |d: i64| d * 86_400 + i64::from(minute) * 60 - offset;
    (day(after)..=day(now)).any(|d| {
        let t = at(d);
        t > after && t <= now
    })
}

/// The local UTC offset, from TZ-aware `date` semantics without a timezone crate: the
/// server clock is configured UTC on farm hosts; `BINFARM_UTC_OFFSET` (seconds) overrides.
fn local_utc_offset_seconds() -> i64 {
    std::env::var("BINFARM_UTC_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn load_or_create_admin_token(path: &Path) -> Result<String, CoordinatorError> {
    let err = |source| CoordinatorError::AdminToken {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) | Err(_)
            if !path.exists()
                || std::fs::metadata(path)
                    .map(|m| m.len() == 0)
                    .unwrap_or(false) =>
        {
            let token = crate::store::new_token();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            write_private_file(path, &format!("{token}\n")).map_err(err)?;
            tracing::info!("created admin token in {}", path.display());
            Ok(token)
        }
        Ok(_) => Err(err(std::io::Error::other("empty file"))),
        Err(e) => Err(err(e)),
    }
}

fn load_or_create_signing_key(config: &FarmConfig) -> Result<SigningKey, CoordinatorError> {
    let path = &config.signing.key_file;
    let key_err = |message: String| CoordinatorError::SigningKey {
        path: path.clone(),
        message,
    };
    if !path.exists() {
        let armored = crate::sign::generate_signing_key(&config.signing.key_user_id)
            .map_err(|e| key_err(e.to_string()))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| key_err(e.to_string()))?;
        }
        write_private_file(path, &armored).map_err(|e| key_err(e.to_string()))?;
        tracing::info!("generated a new farm signing key in {}", path.display());
    }
    SigningKey::from_armored_file(path, config.signing.passphrase_file.as_deref())
        .map_err(|e| key_err(e.to_string()))
}

/// Writes a file only its owner can read, atomically.
pub fn write_private_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The whole HTTP surface: API, worker protocol and (optionally) the mirror under /mirror.
pub fn router(coordinator: Arc<Coordinator>) -> Result<Router, CoordinatorError> {
    let mut app = Router::new()
        .merge(routes_worker::router())
        .merge(routes_admin::router())
        .merge(crate::web::router())
        .merge(crate::metrics::router())
        .with_state(coordinator.clone());
    if coordinator.config.mirror.serve {
        std::fs::create_dir_all(&coordinator.config.mirror.root).map_err(|e| {
            CoordinatorError::Other(format!(
                "creating mirror root {}: {e}",
                coordinator.config.mirror.root.display()
            ))
        })?;
        let access_log = crate::mirror::AccessLog::open(
            &coordinator.config.state.dir.join("mirror-access.log"),
        )?;
        let mut mirror =
            crate::mirror::MirrorState::new(&coordinator.config.mirror.root, Some(access_log))?;
        mirror.metrics = coordinator.metrics.mirror.clone();
        app = app.nest_service("/mirror", crate::mirror::router(Arc::new(mirror)));
    }
    Ok(app)
}

/// `binfarm serve`: runs until SIGINT/SIGTERM.
pub async fn serve(config: FarmConfig) -> Result<(), CoordinatorError> {
    // reqwest is built without a default TLS provider: webhooks over https need one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listen = config.server.listen;
    let coordinator = Coordinator::open(config)?;
    let app = router(coordinator.clone())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| CoordinatorError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| CoordinatorError::Other(e.to_string()))?;
    tracing::info!(
        "binfarm coordinator listening on http://{local}/ (state {})",
        coordinator.config.state.dir.display()
    );
    tokio::spawn(coordinator.clone().housekeeping());
    tokio::spawn(finish::recover_publishing(coordinator.clone()));
    crate::mirror::serve_until_shutdown(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day_crossing() {
        // 2026-11-26 02:30 UTC = 1795660200
        let t = 1_795_660_200;
        assert!(crossed_time_of_day(t - 1, t, 150));
        assert!(!crossed_time_of_day(t, t + 10, 150));
        assert!(crossed_time_of_day(t - 86_400 * 2 - 1, t - 86_400 - 1, 150));
        assert!(!crossed_time_of_day(t + 1, t + 86_000, 150));
    }
}
