//! FTP mirror target: makes a directory on an FTP server mirror a local mirror tree
//! (`Packages`, `Packages.gz`, `<cat>/<pn>/<pf>-<build_id>.gpkg.tar`, ...).
//!
//! The rules that keep every client consistent while a publish runs or after it was killed:
//! - a blob is uploaded under a temporary name (`.<name>.partial.<16 hex>`, hidden, in the same
//!   directory) and renamed to its final name only once complete; rename is atomic on the
//!   servers we target (vsftpd: rename(2));
//! - published names are never reused for other bytes, so a final-name file of the right size
//!   is done, and one of the wrong size is a leftover of a non-atomic upload: it is replaced;
//! - the index files (`Packages.*`, then `Packages`) are renamed into place last, and only
//!   when every blob is on the server;
//! - leftover temporary files of an interrupted run are deleted by the next run.
//!
//! Transfers use binary type (suppaftp starts in ASCII, which rewrites line endings), one
//! transfer per connection and several connections in parallel, each operation retried with
//! exponential backoff. Paths are sent absolute, built from the login directory (`PWD`), so
//! chrooted and non-chrooted servers behave alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use suppaftp::list::ListParser;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError as WireError, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::progress::{Progress, Unit};

/// Read size for uploads; each chunk is written under the I/O timeout.
const UPLOAD_CHUNK: usize = 256 * 1024;
/// Marker between the final name and the random suffix of a temporary upload name.
const PARTIAL_MARK: &str = ".partial.";

/// How the data connection is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FtpMode {
    /// `PASV` (IPv4), the default.
    #[default]
    Passive,
    /// `EPSV` (RFC 2428), needed for IPv6 servers.
    ExtendedPassive,
    /// `PORT`: the server connects back to us.
    Active,
}

/// One FTP mirror target, as configured in farm.toml.
///
/// Either `url = "ftp://user:pass@host:port/base/dir"` or the separate fields `host`, `port`,
/// `user`, `password`, `base_dir`. `password_env` names an environment variable holding the
/// password (read at connect time), to keep it out of the file. Without a user the login is
/// anonymous. The URL path is relative to the login directory (as in curl and wget); `%2F`
/// at its start makes it absolute. A `base_dir` field starting with `/` is absolute.
///
/// ```toml
/// url = "ftp://publisher@mirror.example.org/binpkgs"
/// password_env = "BINFARM_FTP_PASSWORD"
/// sessions = 4          # parallel connections
/// retries = 5           # per operation, exponential backoff
/// backoff_initial_ms = 500
/// backoff_max_ms = 30000
/// connect_timeout_secs = 15
/// io_timeout_secs = 60  # per command and per transferred chunk
/// mode = "passive"      # or "extended-passive", "active"
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FtpTargetConfig", into = "FtpTargetConfig")]
pub struct FtpTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Inline password; `None` with `password_env` unset means the anonymous convention.
    pub password: Option<String>,
    pub password_env: Option<String>,
    /// Where the mirror trees live: relative to the login directory, or absolute.
    pub base_dir: String,
    /// Parallel connections (one transfer each).
    pub sessions: usize,
    /// Retries per operation after the first attempt.
    pub retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    pub mode: FtpMode,
    /// Connect passive data connections to the control connection's address instead of the
    /// one in the `PASV` reply (for servers behind NAT that announce a private address).
    pub passive_nat_workaround: bool,
}

/// The farm.toml form of [`FtpTarget`]; every field optional, checked by `TryFrom`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpTargetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_initial_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FtpMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_nat_workaround: Option<bool>,
}

pub const DEFAULT_SESSIONS: usize = 4;
pub const DEFAULT_RETRIES: u32 = 5;
const DEFAULT_PORT: u16 = 21;
const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_SESSIONS: usize = 64;
const ANONYMOUS_USER: &str = "anonymous";
const ANONYMOUS_PASSWORD: &str = "binfarm@";

/// Errors of FTP targets. Remote errors name the server, the remote path and the reply.
#[derive(Debug, thiserror::Error)]
pub enum FtpTargetError {
    #[error("FTP target config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("FTP target ftp://{host}: password environment variable {var} is not set")]
    PasswordEnv { host: String, var: String },
    #[error("ftp://{host}: cannot connect: {reason}")]
    Connect { host: String, reason: String },
    #[error("ftp://{host}: login as {user} refused: {reply}")]
    Login {
        host: String,
        user: String,
        code: Option<u32>,
        reply: String,
    },
    #[error("ftp://{host}{path}: {command} refused: {reply}")]
    Reply {
        host: String,
        command: &'static str,
        path: String,
        code: u32,
        reply: String,
    },
    #[error("ftp://{host}{path}: {command} failed: {reason}")]
    Transport {
        host: String,
        command: &'static str,
        path: String,
        reason: String,
    },
    #[error("ftp://{host}{path}: {command} timed out after {timeout:?}")]
    Timeout {
        host: String,
        command: &'static str,
        path: String,
        timeout: Duration,
    },
    #[error(
        "ftp://{host}{path}: the server has {actual} bytes after the upload, expected {expected}"
    )]
    SizeMismatch {
        host: String,
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "ftp://{host}{path}: the server sent a directory listing line it cannot parse: {line:?}"
    )]
    Listing {
        host: String,
        path: String,
        line: String,
    },
    #[error("local file {path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("local tree {root}: {source}")]
    LocalScan {
        root: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error(
        "local file {path} changed during the upload: expected {expected} bytes, read {actual}"
    )]
    LocalChanged {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: cannot be published over FTP: {reason}")]
    UnsupportedName { path: String, reason: &'static str },
    #[error(
        "ftp://{host}{remote_dir}: {} of {attempted} transfers failed, index files left as they were; first failure: {}",
        failures.len(),
        first_failure(failures)
    )]
    Incomplete {
        host: String,
        remote_dir: String,
        attempted: usize,
        failures: Vec<FtpTargetError>,
    },
    #[error("ftp://{host}: not attempted after an earlier failure to connect: {reason}")]
    Abandoned { host: String, reason: String },
}

fn first_failure(failures: &[FtpTargetError]) -> String {
    failures
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

impl FtpTargetError {
    /// Whether another attempt may succeed: transport trouble and 4xx replies, not 5xx
    /// refusals or local problems.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Transport { .. }
            | Self::Timeout { .. }
            | Self::SizeMismatch { .. } => true,
            Self::Reply { code, .. } => (400..500).contains(code),
            Self::Login { code, .. } => code.is_some_and(|c| (400..500).contains(&c)),
            _ => false,
        }
    }

    /// Whether the control connection is still in a known state after this error, so the
    /// session can be reused.
    fn keeps_session(&self) -> bool {
        matches!(self, Self::Reply { .. } | Self::Local { .. })
    }

    /// Whether this error means no session can be opened at all.
    fn is_connect_failure(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Login { .. })
    }

    fn reply_code(&self) -> Option<u32> {
        match self {
            Self::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What [`FtpTarget::publish_tree`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FtpReport {
    /// `host:port` of the server.
    pub host: String,
    /// The remote directory that now mirrors the local tree (absolute on the server).
    pub remote_dir: String,
    /// Files in the local tree (blobs and index files).
    pub local_files: usize,
    /// Files uploaded by this run (blobs and index files).
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Blobs already on the server with the right size, and index files identical to ours.
    pub already_present: usize,
    /// Final-name files of the wrong size (interrupted non-atomic uploads) that were replaced.
    pub replaced_wrong_size: usize,
    /// Index files renamed into place, in order.
    pub index_updated: Vec<String>,
    /// Temporary files of earlier interrupted runs that were deleted.
    pub stale_temp_removed: usize,
    pub directories_created: usize,
    /// Operations that failed and were attempted again.
    pub retries: usize,
    /// FTP connections opened.
    pub sessions_opened: usize,
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What [`FtpTarget::delete_files`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FtpDeleteReport {
    pub deleted: usize,
    /// Names that were not on the server (deleted before, or never uploaded).
    pub absent: usize,
    pub retries: usize,
}

impl FtpTarget {
    /// A target from a URL, with the default tuning.
    pub fn from_url(url: &str) -> Result<Self, FtpTargetError> {
        Self::try_from(FtpTargetConfig {
            url: Some(url.to_owned()),
            ..FtpTargetConfig::default()
        })
    }

    /// `host:port`, as errors and reports name the server.
    pub fn host_label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Makes `remote_dir` (below `base_dir`) mirror `local_tree`: creates missing
    /// directories, deletes leftover temporary files, uploads missing or wrong-size blobs
    /// (temporary name, then rename), and only when all blobs are there, replaces the index
    /// files that differ (`Packages.*` first, `Packages` last). Files on the server that the
    /// local tree lacks are left alone (GC removes them with [`FtpTarget::delete_files`]).
    ///
    /// Running it again after an interruption finishes the job and uploads nothing that is
    /// already complete. Dot-files in the local tree (temporary files by convention) are
    /// not published.
    pub async fn publish_tree(
        &self,
        local_tree: &Path,
        remote_dir: &str,
    ) -> Result<FtpReport, FtpTargetError> {
        self.publish_tree_with_progress(local_tree, remote_dir, &Progress::none())
            .await
    }

    /// [`FtpTarget::publish_tree`], telling `progress` about the blob bytes uploaded.
    pub async fn publish_tree_with_progress(
        &self,
        local_tree: &Path,
        remote_dir: &str,
        progress: &Progress,
    ) -> Result<FtpReport, FtpTargetError> {
        let started = Instant::now();
        let remote_components = checked_components("remote_dir", remote_dir)?;
        let local = scan_local_tree(local_tree.to_path_buf()).await?;
        let pool = Pool::new(self, remote_components)?;
        let result = publish_with_pool(&pool, &local, progress).await;
        pool.close().await;
        let mut report = result?;
        report.retries = pool.retries.load(Ordering::Relaxed);
        report.sessions_opened = pool.opened.load(Ordering::Relaxed);
        report.elapsed = started.elapsed();
        tracing::info!(
            host = %report.host,
            remote_dir = %report.remote_dir,
            uploaded = report.uploaded,
            bytes = report.uploaded_bytes,
            present = report.already_present,
            "FTP publish done in {:?}",
            report.elapsed
        );
        Ok(report)
    }

    /// Deletes `names` (paths relative to `remote_dir`, e.g. `cat/pn/pf-1.gpkg.tar`) from
    /// the server, in parallel. Names already gone count as `absent`, not as errors.
    pub async fn delete_files(
        &self,
        remote_dir: &str,
        names: &[String],
    ) -> Result<FtpDeleteReport, FtpTargetError> {
        let remote_components = checked_components("remote_dir", remote_dir)?;
        for name in names {
            checked_components("file name", name)?;
        }
        let pool = Pool::new(self, remote_components)?;
        let pool_ref = &pool;
        let deletions: Vec<_> = names
            .iter()
            .map(|name| {
                pool_ref.run(move |mut s| async move {
                    let r = s.delete_if_present(name).await;
                    (s, r)
                })
            })
            .collect();
        let results = run_limited(deletions, pool.concurrency()).await;
        pool.close().await;
        let mut report = FtpDeleteReport {
            retries: pool.retries.load(Ordering::Relaxed),
            ..FtpDeleteReport::default()
        };
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(true) => report.deleted += 1,
                Ok(false) => report.absent += 1,
                Err(err) => failures.push(err),
            }
        }
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(FtpTargetError::Incomplete {
                host: self.host_label(),
                remote_dir: pool.root_display(),
                attempted: names.len(),
                failures,
            })
        }
    }

    /// Every file below `remote_dir` with its size, keyed by path relative to `remote_dir`
    /// (temporary files included). Empty when the directory does not exist.
    pub async fn list_files(
        &self,
        remote_dir: &str,
    ) -> Result<BTreeMap<String, u64>, FtpTargetError> {
        let remote_components = checked_components("remote_dir", remote_dir)?;
        let pool = Pool::new(self, remote_components)?;
        let result = list_with_pool(&pool).await;
        pool.close().await;
        result
    }
}

impl fmt::Debug for FtpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("base_dir", &self.base_dir)
            .field("sessions", &self.sessions)
            .field("retries", &self.retries)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("mode", &self.mode)
            .field("passive_nat_workaround", &self.passive_nat_workaround)
            .finish()
    }
}

impl TryFrom<FtpTargetConfig> for FtpTarget {
    type Error = FtpTargetError;

    fn try_from(config: FtpTargetConfig) -> Result<Self, Self::Error> {
        let config_err = |field: &'static str, reason: &str| FtpTargetError::Config {
            field,
            reason: reason.to_owned(),
        };
        let (host, port, mut user, mut password, base_dir) = match &config.url {
            Some(url) => {
                if config.host.is_some() || config.port.is_some() || config.base_dir.is_some() {
                    return Err(config_err(
                        "url",
                        "give either url or host/port/base_dir, not both",
                    ));
                }
                let parsed = parse_url(url)?;
                (
                    parsed.host,
                    parsed.port,
                    parsed.user,
                    parsed.password,
                    parsed.path,
                )
            }
            None => {
                let host = config
                    .host
                    .clone()
                    .ok_or_else(|| config_err("host", "either url or host is required"))?;
                (
                    host,
                    config.port.unwrap_or(DEFAULT_PORT),
                    None,
                    None,
                    config.base_dir.clone().unwrap_or_default(),
                )
            }
        };
        if let Some(config_user) = config.user {
            if user.is_some() {
                return Err(config_err("user", "given both in url and as a field"));
            }
            user = Some(config_user);
        }
        if let Some(config_password) = config.password {
            if password.is_some() {
                return Err(config_err("password", "given both in url and as a field"));
            }
            password = Some(config_password);
        }
        if password.is_some() && config.password_env.is_some() {
            return Err(config_err(
                "password_env",
                "give either a password or password_env, not both",
            ));
        }
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(config_err("host", "empty or not a host name"));
        }
        if port == 0 {
            return Err(config_err("port", "must not be 0"));
        }
        for (field, text) in [
            ("user", user.as_deref().unwrap_or("")),
            ("password", password.as_deref().unwrap_or("")),
        ] {
            if text.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                return Err(config_err(field, "contains a line break or NUL"));
            }
        }
        checked_components("base_dir", &base_dir)?;
        let sessions = config.sessions.unwrap_or(DEFAULT_SESSIONS);
        if !(1..=MAX_SESSIONS).contains(&sessions) {
            return Err(FtpTargetError::Config {
                field: "sessions",
                reason: format!("must be 1..={MAX_SESSIONS}, got {sessions}"),
            });
        }
        let positive = |field: &'static str,
                        value: Option<u64>,
                        default: Duration,
                        unit: fn(u64) -> Duration| {
            match value {
                None => Ok(default),
                Some(0) => Err(config_err(field, "must be positive")),
                Some(v) => Ok(unit(v)),
            }
        };
        let backoff_initial = positive(
            "backoff_initial_ms",
            config.backoff_initial_ms,
            DEFAULT_BACKOFF_INITIAL,
            Duration::from_millis,
        )?;
        let backoff_max = positive(
            "backoff_max_ms",
            config.backoff_max_ms,
            DEFAULT_BACKOFF_MAX,
            Duration::from_millis,
        )?;
        Ok(FtpTarget {
            host,
            port,
            user: user.unwrap_or_else(|| ANONYMOUS_USER.to_owned()),
            password,
            password_env: config.password_env,
            base_dir,
            sessions,
            retries: config.retries.unwrap_or(DEFAULT_RETRIES),
            backoff_initial,
            backoff_max: backoff_max.max(backoff_initial),
            connect_timeout: positive(
                "connect_timeout_secs",
                config.connect_timeout_secs,
                DEFAULT_CONNECT_TIMEOUT,
                Duration::from_secs,
            )?,
            io_timeout: positive(
                "io_timeout_secs",
                config.io_timeout_secs,
                DEFAULT_IO_TIMEOUT,
                Duration::from_secs,
            )?,
            mode: config.mode.unwrap_or_default(),
            passive_nat_workaround: config.passive_nat_workaround.unwrap_or(false),
        })
    }
}

impl From<FtpTarget> for FtpTargetConfig {
    fn from(target: FtpTarget) -> Self {
        FtpTargetConfig {
            url: None,
            host: Some(target.host),
            port: Some(target.port),
            user: Some(target.user),
            password: target.password,
            password_env: target.password_env,
            base_dir: Some(target.base_dir),
            sessions: Some(target.sessions),
            retries: Some(target.retries),
            backoff_initial_ms: Some(target.backoff_initial.as_millis() as u64),
            backoff_max_ms: Some(target.backoff_max.as_millis() as u64),
            connect_timeout_secs: Some(target.connect_timeout.as_secs().max(1)),
            io_timeout_secs: Some(target.io_timeout.as_secs().max(1)),
            mode: Some(target.mode),
            passive_nat_workaround: Some(target.passive_nat_workaround),
        }
    }
}

struct ParsedUrl {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    path: String,
}

/// `ftp://[user[:password]@]host[:port][/path]`, percent-decoded. The path is relative to
/// the login directory unless it starts with `%2F`.
fn parse_url(url: &str) -> Result<ParsedUrl, FtpTargetError> {
    let bad = |reason: &str| FtpTargetError::Config {
        field: "url",
        reason: format!("{url:?}: {reason}"),
    };
    let rest = url
        .strip_prefix("ftp://")
        .ok_or_else(|| bad("must start with ftp://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(bad("query and fragment are not supported"));
    }
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let decode = |text: &str| -> Result<String, FtpTargetError> {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad("percent-encoding is not UTF-8"))
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((u, p)) => (Some(decode(u)?), Some(decode(p)?)),
            None => (Some(decode(info)?), None),
        },
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("garbage after ]")),
        };
        (host.to_owned(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(ParsedUrl {
        host,
        port,
        user,
        password,
        path: decode(path.trim_end_matches('/'))?,
    })
}

/// Splits a remote path into components, refusing what FTP or the mirror cannot carry:
/// control characters (a line break would end the command), `.` and `..`.
/// A leading `/` is kept as an empty first component (absolute path).
fn checked_components(field: &'static str, path: &str) -> Result<Vec<String>, FtpTargetError> {
    if path.chars().any(char::is_control) {
        return Err(FtpTargetError::UnsupportedName {
            path: format!("{field} {path:?}"),
            reason: "contains a control character",
        });
    }
    let mut components = Vec::new();
    if path.starts_with('/') {
        components.push(String::new());
    }
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(FtpTargetError::UnsupportedName {
                path: format!("{field} {path:?}"),
                reason: "contains . or ..",
            });
        }
        components.push(part.to_owned());
    }
    Ok(components)
}

/// Joins remote path parts with `/`, skipping empty ones (`""` is the tree root).
fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (_, true) => parent.to_owned(),
        _ if parent.ends_with('/') => format!("{parent}{child}"),
        _ => format!("{parent}/{child}"),
    }
}

fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(slash) => (&rel[..slash], &rel[slash + 1..]),
        None => ("", rel),
    }
}

/// `.<name>.partial.<16 hex>`: the temporary name of an upload of `name`.
fn temp_name(name: &str) -> String {
    format!(".{name}{PARTIAL_MARK}{:016x}", rand::random::<u64>())
}

fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    match rest.rfind(PARTIAL_MARK) {
        Some(pos) => {
            let suffix = &rest[pos + PARTIAL_MARK.len()..];
            pos > 0 && suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// Whether a file at the tree root is an index file (published last).
fn is_index_name(name: &str) -> bool {
    name == "Packages" || name.starts_with("Packages.")
}

// ---------------------------------------------------------------------------------------
// Local tree

#[derive(Debug, Clone)]
struct LocalFile {
    /// Path relative to the tree root, `/`-separated.
    rel: String,
    path: PathBuf,
    size: u64,
}

impl LocalFile {
    fn dir(&self) -> &str {
        split_parent(&self.rel).0
    }
    fn name(&self) -> &str {
        split_parent(&self.rel).1
    }
}

#[derive(Debug, Default)]
struct LocalTree {
    /// Directories (relative, `""` is the root) and their subdirectory names.
    children: BTreeMap<String, BTreeSet<String>>,
    blobs: Vec<LocalFile>,
    /// In publishing order: `Packages.*` first, `Packages` last.
    indexes: Vec<LocalFile>,
}

async fn scan_local_tree(root: PathBuf) -> Result<LocalTree, FtpTargetError> {
    let scan_root = root.clone();
    tokio::task::spawn_blocking(move || scan_local_tree_blocking(&scan_root))
        .await
        .map_err(|join| FtpTargetError::Local {
            path: root,
            source: std::io::Error::other(join.to_string()),
        })?
}

fn scan_local_tree_blocking(root: &Path) -> Result<LocalTree, FtpTargetError> {
    let mut tree = LocalTree::default();
    tree.children.insert(String::new(), BTreeSet::new());
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        // Hidden entries are temporary files by convention; never published.
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|source| FtpTargetError::LocalScan {
            root: root.to_path_buf(),
            source,
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let rel_path = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let rel = rel_path
            .to_str()
            .ok_or_else(|| FtpTargetError::UnsupportedName {
                path: entry.path().display().to_string(),
                reason: "not UTF-8",
            })?
            .replace(std::path::MAIN_SEPARATOR, "/");
        checked_components("local file", &rel)?;
        let (parent, name) = split_parent(&rel);
        let file_type = entry.file_type();
        if file_type.is_dir() {
            tree.children
                .entry(parent.to_owned())
                .or_default()
                .insert(name.to_owned());
            tree.children.entry(rel).or_default();
        } else if file_type.is_file() {
            let meta = entry
                .metadata()
                .map_err(|source| FtpTargetError::LocalScan {
                    root: root.to_path_buf(),
                    source,
                })?;
            let is_index = parent.is_empty() && is_index_name(name);
            let file = LocalFile {
                rel,
                path: entry.path().to_path_buf(),
                size: meta.len(),
            };
            if is_index {
                tree.indexes.push(file);
            } else {
                tree.blobs.push(file);
            }
        } else {
            return Err(FtpTargetError::UnsupportedName {
                path: entry.path().display().to_string(),
                reason: "not a regular file or directory",
            });
        }
    }
    // `Packages` last: once it is new, every other index is new too.
    tree.indexes
        .sort_by_key(|f| (f.rel == "Packages", f.rel.clone()));
    Ok(tree)
}

// ---------------------------------------------------------------------------------------
// Sessions

/// Server, timeouts: what every remote error needs to name.
struct Ctx {
    host: String,
    io_timeout: Duration,
}

impl Ctx {
    /// Runs one FTP operation under the I/O timeout and names host, command and path in
    /// its error.
    async fn guard<T>(
        &self,
        command: &'static str,
        path: &str,
        op: impl Future<Output = Result<T, WireError>>,
    ) -> Result<T, FtpTargetError> {
        match tokio::time::timeout(self.io_timeout, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.wire_error(command, path, err)),
            Err(_) => Err(FtpTargetError::Timeout {
                host: self.host.clone(),
                command,
                path: path.to_owned(),
                timeout: self.io_timeout,
            }),
        }
    }

    fn wire_error(&self, command: &'static str, path: &str, err: WireError) -> FtpTargetError {
        match err {
            WireError::UnexpectedResponse(response) => FtpTargetError::Reply {
                host: self.host.clone(),
                command,
                path: path.to_owned(),
                code: response.status.code(),
                reply: response.to_string(),
            },
            other => FtpTargetError::Transport {
                host: self.host.clone(),
                command,
                path: path.to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    File(u64),
    Dir,
    Other,
}

/// One remote directory's entries by name.
#[derive(Debug, Default)]
struct Listing {
    entries: HashMap<String, EntryKind>,
}

impl Listing {
    fn has_dir(&self, name: &str) -> bool {
        self.entries.get(name) == Some(&EntryKind::Dir)
    }
    fn file_size(&self, name: &str) -> Option<u64> {
        match self.entries.get(name) {
            Some(EntryKind::File(size)) => Some(*size),
            _ => None,
        }
    }
}

struct Session {
    ftp: AsyncFtpStream,
    ctx: Arc<Ctx>,
    /// Login directory (`PWD`).
    home: String,
    /// Absolute path of the mirrored tree root on this server.
    root: String,
    /// Server offers `MLSD` (exact, machine-readable listings with hidden files).
    mlsd: bool,
}

impl Session {
    async fn open(
        target: &FtpTarget,
        ctx: Arc<Ctx>,
        components: &[String],
    ) -> Result<Session, FtpTargetError> {
        let host = ctx.host.clone();
        let connect = AsyncFtpStream::connect((target.host.as_str(), target.port));
        let mut ftp = match tokio::time::timeout(target.connect_timeout, connect).await {
            Ok(Ok(ftp)) => ftp,
            Ok(Err(err)) => {
                return Err(FtpTargetError::Connect {
                    host,
                    reason: err.to_string(),
                })
            }
            Err(_) => {
                return Err(FtpTargetError::Connect {
                    host,
                    reason: format!("no greeting within {:?}", target.connect_timeout),
                })
            }
        };
        let password = match (&target.password_env, &target.password) {
            (Some(var), _) => std::env::var(var).map_err(|_| FtpTargetError::PasswordEnv {
                host: host.clone(),
                var: var.clone(),
            })?,
            (None, Some(password)) => password.clone(),
            (None, None) => ANONYMOUS_PASSWORD.to_owned(),
        };
        match tokio::time::timeout(
            ctx.io_timeout,
            ftp.login(target.user.as_str(), password.as_str()),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(WireError::UnexpectedResponse(response))) => {
                return Err(FtpTargetError::Login {
                    host,
                    user: target.user.clone(),
                    code: Some(response.status.code()),
                    reply: response.to_string(),
                })
            }
            Ok(Err(other)) => {
                return Err(FtpTargetError::Login {
                    host,
                    user: target.user.clone(),
                    code: None,
                    reply: other.to_string(),
                })
            }
            Err(_) => {
                return Err(FtpTargetError::Login {
                    host,
                    user: target.user.clone(),
                    code: None,
                    reply: format!("no answer within {:?}", ctx.io_timeout),
                })
            }
        }
        // suppaftp starts in ASCII type, which would rewrite line endings in our binpkgs.
        ctx.guard("TYPE I", "", ftp.transfer_type(FileType::Binary))
            .await?;
        let home = ctx.guard("PWD", "", ftp.pwd()).await?;
        match target.mode {
            FtpMode::Passive => {
                ftp.set_mode(Mode::Passive);
                ftp.set_passive_nat_workaround(target.passive_nat_workaround);
            }
            FtpMode::ExtendedPassive => ftp.set_mode(Mode::ExtendedPassive),
            FtpMode::Active => ftp = ftp.active_mode(ctx.io_timeout),
        }
        // FEAT is optional (RFC 2389); a refusal just means no MLSD.
        let mlsd = match ctx.guard("FEAT", "", ftp.feat()).await {
            Ok(features) => features.keys().any(|k| k.eq_ignore_ascii_case("MLST")),
            Err(err) if err.reply_code().is_some() => false,
            Err(err) => return Err(err),
        };
        let root = resolve_root(&home, components);
        Ok(Session {
            ftp,
            ctx,
            home,
            root,
            mlsd,
        })
    }

    /// Absolute remote path of `rel` (relative to the tree root).
    fn path(&self, rel: &str) -> String {
        join(&self.root, rel)
    }

    async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ftp.quit()).await;
    }

    async fn dir_exists(&mut self, abs: &str) -> Result<bool, FtpTargetError> {
        match self.ctx.guard("CWD", abs, self.ftp.cwd(abs)).await {
            Ok(()) => {
                let home = self.home.clone();
                self.ctx.guard("CWD", &home, self.ftp.cwd(&home)).await?;
                Ok(true)
            }
            Err(err) if err.reply_code().is_some_and(|c| c >= 500) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Creates `abs`; fine if it already exists (another session may have made it).
    async fn make_dir(&mut self, abs: &str) -> Result<(), FtpTargetError> {
        match self.ctx.guard("MKD", abs, self.ftp.mkdir(abs)).await {
            Ok(()) => Ok(()),
            Err(err) if err.reply_code().is_some_and(|c| c >= 500) => {
                if self.dir_exists(abs).await? {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Creates the tree root and its missing parents; returns how many were created.
    async fn ensure_root(&mut self) -> Result<usize, FtpTargetError> {
        let root = self.root.clone();
        if self.dir_exists(&root).await? {
            return Ok(0);
        }
        // Walk down from the login directory (or `/` for an absolute base).
        let below_home = self.home == "/"
            || root == self.home
            || root.starts_with(&format!("{}/", self.home.trim_end_matches('/')));
        let anchor = if below_home {
            self.home.clone()
        } else {
            String::from("/")
        };
        let below = root[anchor.len()..].trim_start_matches('/').to_owned();
        let mut current = anchor;
        let mut created = 0;
        for part in below.split('/').filter(|p| !p.is_empty()) {
            current = join(&current, part);
            if !self.dir_exists(&current).await? {
                self.make_dir(&current).await?;
                created += 1;
            }
        }
        Ok(created)
    }

    async fn list(&mut self, rel: &str) -> Result<Listing, FtpTargetError> {
        let abs = self.path(rel);
        let lines = if self.mlsd {
            self.ctx
                .guard("MLSD", &abs, self.ftp.mlsd(Some(&abs)))
                .await?
        } else {
            // `-a`: include hidden entries, i.e. temporary files of interrupted uploads.
            let arg = format!("-a {abs}");
            self.ctx
                .guard("LIST", &abs, self.ftp.list(Some(&arg)))
                .await?
        };
        let mut listing = Listing::default();
        for line in lines {
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() || line.starts_with("total ") {
                continue;
            }
            let parsed = if self.mlsd {
                ListParser::parse_mlsd(line)
            } else {
                ListParser::parse_posix(line)
            };
            let file = parsed.map_err(|_| FtpTargetError::Listing {
                host: self.ctx.host.clone(),
                path: abs.clone(),
                line: line.to_owned(),
            })?;
            let name = file.name();
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                continue;
            }
            let kind = if file.is_directory() {
                EntryKind::Dir
            } else if file.is_file() {
                EntryKind::File(file.size() as u64)
            } else {
                EntryKind::Other
            };
            listing.entries.insert(name.to_owned(), kind);
        }
        Ok(listing)
    }

    async fn size(&mut self, abs: &str) -> Result<u64, FtpTargetError> {
        self.ctx
            .guard("SIZE", abs, self.ftp.size(abs))
            .await
            .map(|s| s as u64)
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<(), FtpTargetError> {
        self.ctx
            .guard("RNFR/RNTO", to, self.ftp.rename(from, to))
            .await
    }

    async fn delete(&mut self, abs: &str) -> Result<(), FtpTargetError> {
        self.ctx.guard("DELE", abs, self.ftp.rm(abs)).await
    }

    /// Deletes `rel`; `Ok(false)` if it was not there.
    async fn delete_if_present(&mut self, rel: &str) -> Result<bool, FtpTargetError> {
        let abs = self.path(rel);
        match self.delete(&abs).await {
            Ok(()) => Ok(true),
            // 550 says "failed", not why: it is "absent" only if the file is really gone.
            Err(err) if err.reply_code().is_some_and(|c| c >= 500) => match self.size(&abs).await {
                Ok(_) => Err(err),
                Err(size_err) if size_err.reply_code().is_some_and(|c| c >= 500) => Ok(false),
                Err(size_err) => Err(size_err),
            },
            Err(err) => Err(err),
        }
    }

    /// Uploads `file` to the absolute path `remote` and checks the size the server has.
    async fn store(&mut self, file: &LocalFile, remote: &str) -> Result<u64, FtpTargetError> {
        let local_err = |source| FtpTargetError::Local {
            path: file.path.clone(),
            source,
        };
        let mut reader = tokio::fs::File::open(&file.path).await.map_err(local_err)?;
        let mut upload = self
            .ctx
            .guard("STOR", remote, self.ftp.put_with_stream(remote))
            .await?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut sent: u64 = 0;
        loop {
            let n = reader.read(&mut buf).await.map_err(local_err)?;
            if n == 0 {
                break;
            }
            let write = upload.write_all(&buf[..n]);
            match tokio::time::timeout(self.ctx.io_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    return Err(FtpTargetError::Transport {
                        host: self.ctx.host.clone(),
                        command: "STOR",
                        path: remote.to_owned(),
                        reason: err.to_string(),
                    })
                }
                Err(_) => {
                    return Err(FtpTargetError::Timeout {
                        host: self.ctx.host.clone(),
                        command: "STOR",
                        path: remote.to_owned(),
                        timeout: self.ctx.io_timeout,
                    })
                }
            }
            sent += n as u64;
        }
        if sent != file.size {
            return Err(FtpTargetError::LocalChanged {
                path: file.path.clone(),
                expected: file.size,
                actual: sent,
            });
        }
        self.ctx.guard("STOR", remote, upload.finish()).await?;
        let on_server = self.size(remote).await?;
        if on_server != file.size {
            return Err(FtpTargetError::SizeMismatch {
                host: self.ctx.host.clone(),
                path: remote.to_owned(),
                expected: file.size,
                actual: on_server,
            });
        }
        Ok(sent)
    }

    /// Downloads a (small) remote file.
    async fn fetch(&mut self, abs: &str) -> Result<Vec<u8>, FtpTargetError> {
        let mut download = self
            .ctx
            .guard("RETR", abs, self.ftp.retr_as_stream(abs))
            .await?;
        let mut bytes = Vec::new();
        let read = download.read_to_end(&mut bytes);
        match tokio::time::timeout(self.ctx.io_timeout, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(FtpTargetError::Transport {
                    host: self.ctx.host.clone(),
                    command: "RETR",
                    path: abs.to_owned(),
                    reason: err.to_string(),
                })
            }
            Err(_) => {
                return Err(FtpTargetError::Timeout {
                    host: self.ctx.host.clone(),
                    command: "RETR",
                    path: abs.to_owned(),
                    timeout: self.ctx.io_timeout,
                })
            }
        }
        self.ctx.guard("RETR", abs, download.finish()).await?;
        Ok(bytes)
    }
}

/// The tree root: the components below the login directory, or absolute ones (first
/// component empty) as they are.
fn resolve_root(home: &str, components: &[String]) -> String {
    let (mut root, rest) = match components.first() {
        Some(first) if first.is_empty() => (String::from("/"), &components[1..]),
        _ => (home.to_owned(), components),
    };
    for part in rest {
        root = join(&root, part);
    }
    root
}

// ---------------------------------------------------------------------------------------
// Session pool: at most `sessions` connections, retries with backoff

struct Pool<'t> {
    target: &'t FtpTarget,
    ctx: Arc<Ctx>,
    /// base_dir + remote_dir components (first empty = absolute).
    components: Vec<String>,
    idle: Mutex<Vec<Session>>,
    /// Absolute tree root, learned from the first session.
    root: Mutex<Option<String>>,
    /// One permit per session we may have busy at once; shrinks when the server refuses
    /// more connections than it already has from us.
    slots: tokio::sync::Semaphore,
    /// Sessions open now (busy or idle).
    alive: AtomicUsize,
    opened: AtomicUsize,
    retries: AtomicUsize,
    /// Set when a session could not be opened even after retries: the rest gives up.
    broken: Mutex<Option<String>>,
}

impl<'t> Pool<'t> {
    fn new(target: &'t FtpTarget, remote_components: Vec<String>) -> Result<Self, FtpTargetError> {
        let mut components = checked_components("base_dir", &target.base_dir)?;
        if remote_components.first().is_some_and(String::is_empty) {
            components = remote_components;
        } else {
            components.extend(remote_components);
        }
        Ok(Pool {
            target,
            ctx: Arc::new(Ctx {
                host: target.host_label(),
                io_timeout: target.io_timeout,
            }),
            components,
            idle: Mutex::new(Vec::new()),
            root: Mutex::new(None),
            slots: tokio::sync::Semaphore::new(target.sessions.clamp(1, MAX_SESSIONS)),
            alive: AtomicUsize::new(0),
            opened: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            broken: Mutex::new(None),
        })
    }

    fn concurrency(&self) -> usize {
        self.target.sessions.clamp(1, MAX_SESSIONS)
    }

    fn root_display(&self) -> String {
        lock(&self.root)
            .clone()
            .unwrap_or_else(|| self.components.join("/"))
    }

    async fn checkout(&self) -> Result<Session, FtpTargetError> {
        if let Some(session) = lock(&self.idle).pop() {
            return Ok(session);
        }
        let session = Session::open(self.target, Arc::clone(&self.ctx), &self.components).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.alive.fetch_add(1, Ordering::Relaxed);
        lock(&self.root).get_or_insert_with(|| session.root.clone());
        Ok(session)
    }

    /// Runs `op` on a session, again on a fresh session after a transient failure, with
    /// exponential backoff. `op` hands the session back with its result.
    async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, FtpTargetError>
    where
        F: FnMut(Session) -> Fut,
        Fut: Future<Output = (Session, Result<T, FtpTargetError>)>,
    {
        let mut attempt: u32 = 0;
        loop {
            if let Some(reason) = lock(&self.broken).clone() {
                return Err(FtpTargetError::Abandoned {
                    host: self.ctx.host.clone(),
                    reason,
                });
            }
            let Ok(permit) = self.slots.acquire().await else {
                return Err(FtpTargetError::Abandoned {
                    host: self.ctx.host.clone(),
                    reason: String::from("session pool closed"),
                });
            };
            let result = match self.checkout().await {
                Ok(session) => {
                    let (session, result) = op(session).await;
                    match &result {
                        Ok(_) => lock(&self.idle).push(session),
                        Err(err) if err.keeps_session() => lock(&self.idle).push(session),
                        // Unknown control-connection state: drop it, reconnect next time.
                        Err(_) => {
                            drop(session);
                            self.alive.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    result
                }
                Err(err) if err.is_connect_failure() && self.alive.load(Ordering::Relaxed) > 0 => {
                    // The server takes fewer connections from us than configured (e.g. a
                    // per-address limit): go on with the ones it took.
                    permit.forget();
                    tracing::info!(
                        "{err}; continuing with the {} sessions the server accepted",
                        self.alive.load(Ordering::Relaxed)
                    );
                    continue;
                }
                Err(err) => Err(err),
            };
            drop(permit);
            match result {
                Ok(value) => return Ok(value),
                Err(err) if err.is_transient() && attempt < self.target.retries => {
                    let delay = backoff(self.target, attempt);
                    tracing::warn!("{err}; attempt {} again in {delay:?}", attempt + 2);
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => {
                    if err.is_connect_failure() {
                        lock(&self.broken).get_or_insert_with(|| err.to_string());
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Says goodbye on every idle session.
    async fn close(&self) {
        let sessions: Vec<Session> = std::mem::take(&mut *lock(&self.idle));
        futures_util::future::join_all(sessions.into_iter().map(Session::quit)).await;
    }
}

/// A poisoned lock only means another task panicked while holding it; the data (a list of
/// sessions, a string) is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `initial * 2^attempt`, capped at `backoff_max`, with up to 25% random jitter so that
/// parallel sessions do not retry in lockstep.
fn backoff(target: &FtpTarget, attempt: u32) -> Duration {
    let base = target
        .backoff_initial
        .saturating_mul(1u32 << attempt.min(20))
        .min(target.backoff_max);
    let jitter = rand::random::<f64>() * 0.25;
    base.mul_f64(1.0 - jitter)
}

// ---------------------------------------------------------------------------------------
// Publishing

async fn publish_with_pool(
    pool: &Pool<'_>,
    local: &LocalTree,
    progress: &Progress,
) -> Result<FtpReport, FtpTargetError> {
    let mut report = FtpReport {
        host: pool.ctx.host.clone(),
        local_files: local.blobs.len() + local.indexes.len(),
        ..FtpReport::default()
    };
    report.directories_created += pool
        .run(|mut s| async move {
            let r = s.ensure_root().await;
            (s, r)
        })
        .await?;
    report.remote_dir = pool.root_display();

    let (listings, created) = walk_remote(pool, |dir, listing| {
        local
            .children
            .get(dir)
            .map(|names| {
                names
                    .iter()
                    .map(|name| (join(dir, name), listing.has_dir(name)))
                    .collect()
            })
            .unwrap_or_default()
    })
    .await?;
    report.directories_created += created;

    // Leftovers of interrupted runs: our temporary names, anywhere in the tree.
    let stale: Vec<String> = listings
        .iter()
        .flat_map(|(dir, listing)| {
            listing
                .entries
                .iter()
                .filter(|(name, kind)| matches!(kind, EntryKind::File(_)) && is_temp_name(name))
                .map(move |(name, _)| join(dir, name))
        })
        .collect();
    let deletions: Vec<_> = stale
        .iter()
        .map(|rel| {
            pool.run(move |mut s| async move {
                let r = s.delete_if_present(rel).await;
                (s, r)
            })
        })
        .collect();
    let removed = run_limited(deletions, pool.concurrency()).await;
    for result in removed {
        match result {
            Ok(true) => report.stale_temp_removed += 1,
            Ok(false) => {}
            // Not fatal: a leftover hidden file harms no client; the next run tries again.
            Err(err) => tracing::warn!("cannot delete a stale temporary file: {err}"),
        }
    }

    // Blobs: missing or of the wrong size -> upload.
    let mut pending = Vec::new();
    for blob in &local.blobs {
        let remote_size = listings
            .get(blob.dir())
            .and_then(|listing| listing.file_size(blob.name()));
        match remote_size {
            Some(size) if size == blob.size => report.already_present += 1,
            Some(_) => {
                report.replaced_wrong_size += 1;
                pending.push(blob);
            }
            None => pending.push(blob),
        }
    }
    let attempted = pending.len();
    let task = progress.task(
        &format!("ftp {}", pool.ctx.host),
        Unit::Bytes,
        Some(pending.iter().map(|blob| blob.size).sum()),
    );
    let uploads: Vec<_> = pending
        .into_iter()
        .map(|blob| {
            let task = &task;
            async move {
                let uploaded = upload_blob(pool, blob).await;
                if uploaded.is_ok() {
                    task.set_message(blob.name());
                    task.advance(blob.size);
                }
                uploaded
            }
        })
        .collect();
    let results = run_limited(uploads, pool.concurrency()).await;
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(bytes) => {
                report.uploaded += 1;
                report.uploaded_bytes += bytes;
            }
            Err(err) => failures.push(err),
        }
    }
    if !failures.is_empty() {
        return Err(FtpTargetError::Incomplete {
            host: pool.ctx.host.clone(),
            remote_dir: pool.root_display(),
            attempted,
            failures,
        });
    }

    // Index files, only now that every blob is there.
    let root_listing = listings.get("").ok_or_else(|| FtpTargetError::Listing {
        host: pool.ctx.host.clone(),
        path: pool.root_display(),
        line: String::from("(tree root was not listed)"),
    })?;
    let stagings: Vec<_> = local
        .indexes
        .iter()
        .map(|index| stage_index(pool, index, root_listing.file_size(&index.rel)))
        .collect();
    let staged = run_limited(stagings, pool.concurrency()).await;
    let mut renames = Vec::new();
    let mut failures = Vec::new();
    for (index, result) in local.indexes.iter().zip(staged) {
        match result {
            Ok(Some((temp, bytes))) => {
                report.uploaded += 1;
                report.uploaded_bytes += bytes;
                renames.push((index, temp));
            }
            Ok(None) => report.already_present += 1,
            Err(err) => failures.push(err),
        }
    }
    if !failures.is_empty() {
        let attempted = local.indexes.len();
        for (_, temp) in &renames {
            discard_temp(pool, temp).await;
        }
        return Err(FtpTargetError::Incomplete {
            host: pool.ctx.host.clone(),
            remote_dir: pool.root_display(),
            attempted,
            failures,
        });
    }
    // Renamed back to back, in order (`Packages` last), to keep the window short.
    for (index, temp) in renames {
        let rel = index.rel.as_str();
        let temp = temp.as_str();
        pool.run(|mut s| async move {
            let (from, to) = (s.path(temp), s.path(rel));
            let r = s.rename(&from, &to).await;
            (s, r)
        })
        .await?;
        report.index_updated.push(index.rel.clone());
    }
    Ok(report)
}

/// Uploads one blob under a temporary name and renames it into place. Retries reuse the
/// temporary name, so a failed run leaves at most one leftover per blob.
async fn upload_blob(pool: &Pool<'_>, blob: &LocalFile) -> Result<u64, FtpTargetError> {
    let temp_rel = join(blob.dir(), &temp_name(blob.name()));
    let temp = temp_rel.as_str();
    let result = pool
        .run(|mut s| async move {
            let (temp_abs, final_abs) = (s.path(temp), s.path(&blob.rel));
            let r = async {
                let bytes = s.store(blob, &temp_abs).await?;
                s.rename(&temp_abs, &final_abs).await?;
                Ok(bytes)
            }
            .await;
            (s, r)
        })
        .await;
    if result.is_err() {
        discard_temp(pool, temp).await;
    }
    result
}

/// Uploads an index file under a temporary name if the server's copy differs; returns the
/// temporary name and the bytes sent, or `None` if the server already has these bytes.
async fn stage_index(
    pool: &Pool<'_>,
    index: &LocalFile,
    remote_size: Option<u64>,
) -> Result<Option<(String, u64)>, FtpTargetError> {
    if remote_size == Some(index.size) {
        let rel = index.rel.as_str();
        let remote = pool
            .run(|mut s| async move {
                let abs = s.path(rel);
                let r = s.fetch(&abs).await;
                (s, r)
            })
            .await?;
        let local = tokio::fs::read(&index.path)
            .await
            .map_err(|source| FtpTargetError::Local {
                path: index.path.clone(),
                source,
            })?;
        if remote == local {
            return Ok(None);
        }
    }
    let temp_rel = temp_name(&index.rel);
    let temp = temp_rel.as_str();
    let stored = pool
        .run(|mut s| async move {
            let abs = s.path(temp);
            let r = s.store(index, &abs).await;
            (s, r)
        })
        .await;
    match stored {
        Ok(bytes) => Ok(Some((temp_rel, bytes))),
        Err(err) => {
            discard_temp(pool, temp).await;
            Err(err)
        }
    }
}

/// Runs `futures`, at most `limit` at a time; results in input order.
///
/// The futures are built before (not inside a stream combinator's closure over borrowed
/// items), so the closure is not held across awaits: that keeps the publish future `Send`
/// (rustc cannot prove it for such closures).
async fn run_limited<Fut: Future>(futures: Vec<Fut>, limit: usize) -> Vec<Fut::Output> {
    let mut results: Vec<(usize, Fut::Output)> = stream::iter(futures.into_iter().enumerate())
        .map(|(i, fut)| async move { (i, fut.await) })
        .buffer_unordered(limit)
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, output)| output).collect()
}

/// Best effort: the next run deletes what this cannot.
async fn discard_temp(pool: &Pool<'_>, temp_rel: &str) {
    let deleted = pool
        .run(|mut s| async move {
            let r = s.delete_if_present(temp_rel).await;
            (s, r)
        })
        .await;
    if let Err(err) = deleted {
        tracing::debug!("temporary file left for the next run: {err}");
    }
}

/// Lists the remote tree level by level, all directories of a level in parallel.
/// `children(dir, listing)` names the subdirectories to visit and whether each exists on
/// the server; missing ones are created (and not listed: they are empty).
/// Returns the listings by relative directory, and how many directories were created.
async fn walk_remote<F>(
    pool: &Pool<'_>,
    children: F,
) -> Result<(HashMap<String, Listing>, usize), FtpTargetError>
where
    F: Fn(&str, &Listing) -> Vec<(String, bool)>,
{
    let mut listings = HashMap::new();
    let mut created = 0;
    let mut level: Vec<(String, bool)> = vec![(String::new(), true)];
    while !level.is_empty() {
        let results: Vec<Result<(String, Listing, bool), FtpTargetError>> = stream::iter(level)
            .map(|(dir, exists)| async move {
                let d = dir.as_str();
                if exists {
                    let listing = pool
                        .run(|mut s| async move {
                            let r = s.list(d).await;
                            (s, r)
                        })
                        .await?;
                    Ok((dir, listing, false))
                } else {
                    pool.run(|mut s| async move {
                        let abs = s.path(d);
                        let r = s.make_dir(&abs).await;
                        (s, r)
                    })
                    .await?;
                    Ok((dir, Listing::default(), true))
                }
            })
            .buffer_unordered(pool.concurrency())
            .collect()
            .await;
        let mut next = Vec::new();
        for result in results {
            let (dir, listing, was_created) = result?;
            created += usize::from(was_created);
            next.extend(children(&dir, &listing));
            listings.insert(dir, listing);
        }
        level = next;
    }
    Ok((listings, created))
}

async fn list_with_pool(pool: &Pool<'_>) -> Result<BTreeMap<String, u64>, FtpTargetError> {
    let exists = pool
        .run(|mut s| async move {
            let root = s.root.clone();
            let r = s.dir_exists(&root).await;
            (s, r)
        })
        .await?;
    let mut files = BTreeMap::new();
    if !exists {
        return Ok(files);
    }
    let (listings, _) = walk_remote(pool, |dir, listing| {
        listing
            .entries
            .iter()
            .filter(|(_, kind)| **kind == EntryKind::Dir)
            .map(|(name, _)| (join(dir, name), true))
            .collect()
    })
    .await?;
    for (dir, listing) in listings {
        for (name, kind) in listing.entries {
            if let EntryKind::File(size) = kind {
                files.insert(join(&dir, &name), size);
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_credentials_port_and_path() {
        let t =
            FtpTarget::from_url("ftp://pub%40lisher:s%3Acret@127.0.0.1:2121/base/dir/").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 2121);
        assert_eq!(t.user, "pub@lisher");
        assert_eq!(t.password.as_deref(), Some("s:cret"));
        assert_eq!(t.base_dir, "base/dir");
        assert_eq!(t.sessions, DEFAULT_SESSIONS);
        assert_eq!(t.retries, DEFAULT_RETRIES);
        assert_eq!(t.host_label(), "127.0.0.1:2121");
    }

    #[test]
    fn url_anonymous_absolute_and_ipv6() {
        let t = FtpTarget::from_url("ftp://[::1]/%2Fsrv/ftp").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 21);
        assert_eq!(t.user, ANONYMOUS_USER);
        assert_eq!(t.password, None);
        assert_eq!(t.base_dir, "/srv/ftp");
        assert_eq!(t.host_label(), "[::1]:21");
    }

    #[test]
    fn bad_urls_and_fields_are_refused_with_the_field_named() {
        for url in [
            "http://h/x",
            "ftp:///x",
            "ftp://h:port/x",
            "ftp://h/a/../b",
            "ftp://h/a%0Ab",
        ] {
            assert!(FtpTarget::from_url(url).is_err(), "{url}");
        }
        let err = FtpTarget::try_from(FtpTargetConfig {
            host: Some("h".into()),
            sessions: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("sessions"), "{err}");
        let err = FtpTarget::try_from(FtpTargetConfig {
            url: Some("ftp://u:p@h/x".into()),
            password_env: Some("X".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("password_env"), "{err}");
    }

    #[test]
    fn toml_round_trip_and_unknown_fields() {
        let t: FtpTarget = toml::from_str(
            r#"
            url = "ftp://publisher@mirror.example.org:2121/binpkgs"
            password_env = "BINFARM_FTP_PASSWORD"
            sessions = 8
            retries = 2
            backoff_initial_ms = 100
            io_timeout_secs = 5
            mode = "extended-passive"
            "#,
        )
        .unwrap();
        assert_eq!(t.user, "publisher");
        assert_eq!(t.port, 2121);
        assert_eq!(t.sessions, 8);
        assert_eq!(t.retries, 2);
        assert_eq!(t.backoff_initial, Duration::from_millis(100));
        assert_eq!(t.io_timeout, Duration::from_secs(5));
        assert_eq!(t.mode, FtpMode::ExtendedPassive);
        let again: FtpTarget = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        assert_eq!(again, t);
        assert!(toml::from_str::<FtpTarget>("host = \"h\"\nsesions = 2").is_err());
        let separate: FtpTarget =
            toml::from_str("host = \"h\"\nbase_dir = \"/srv/x\"\npassive_nat_workaround = true")
                .unwrap();
        assert_eq!(separate.base_dir, "/srv/x");
        assert_eq!(separate.port, 21);
        assert!(separate.passive_nat_workaround);
    }

    #[test]
    fn debug_hides_the_password() {
        let t = FtpTarget::from_url("ftp://u:hunter2@h/").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        let name = temp_name("foo-1.0-1.gpkg.tar");
        assert!(name.starts_with(".foo-1.0-1.gpkg.tar.partial."), "{name}");
        assert!(is_temp_name(&name));
        assert!(is_temp_name(".Packages.partial.0123456789abcdef"));
        for other in [
            "foo.partial.0123456789abcdef",
            ".partial.0123456789abcdef",
            ".foo.partial.0123",
            ".foo.partial.0123456789abcdeg",
            "Packages",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn roots_and_joins() {
        let rel = checked_components("x", "pub/amd64/stable").unwrap();
        assert_eq!(resolve_root("/home/u", &rel), "/home/u/pub/amd64/stable");
        assert_eq!(resolve_root("/", &rel), "/pub/amd64/stable");
        let abs = checked_components("x", "/srv/ftp").unwrap();
        assert_eq!(resolve_root("/home/u", &abs), "/srv/ftp");
        assert_eq!(resolve_root("/home/u", &[]), "/home/u");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("a/b", ""), "a/b");
        assert_eq!(split_parent("a/b/c"), ("a/b", "c"));
        assert_eq!(split_parent("Packages"), ("", "Packages"));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut t = FtpTarget::from_url("ftp://h/").unwrap();
        t.backoff_initial = Duration::from_millis(100);
        t.backoff_max = Duration::from_millis(1000);
        let d0 = backoff(&t, 0);
        let d3 = backoff(&t, 3);
        let d10 = backoff(&t, 10);
        assert!(d0 <= Duration::from_millis(100) && d0 >= Duration::from_millis(75));
        assert!(d3 <= Duration::from_millis(800) && d3 >= Duration::from_millis(600));
        assert!(d10 <= Duration::from_millis(1000) && d10 >= Duration::from_millis(750));
    }

    #[test]
    fn local_scan_orders_indexes_and_skips_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("app-misc/hello")).unwrap();
        std::fs::write(root.join("app-misc/hello/hello-1-1.gpkg.tar"), b"x").unwrap();
        std::fs::write(root.join("app-misc/hello/.hello-1-2.gpkg.tar.tmp"), b"x").unwrap();
        std::fs::write(root.join("Packages"), b"p").unwrap();
        std::fs::write(root.join("Packages.gz"), b"pz").unwrap();
        let tree = scan_local_tree_blocking(root).unwrap();
        let indexes: Vec<&str> = tree.indexes.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(indexes, ["Packages.gz", "Packages"]);
        let blobs: Vec<&str> = tree.blobs.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(blobs, ["app-misc/hello/hello-1-1.gpkg.tar"]);
        assert_eq!(tree.children[""], BTreeSet::from(["app-misc".to_owned()]));
        assert_eq!(
            tree.children["app-misc"],
            BTreeSet::from(["hello".to_owned()])
        );
    }
}
