//! `farm.toml`: the coordinator's settings. `templates/farm.toml` documents each one and
//! is what an absent config file means.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The commented template; parsing it gives the embedded defaults.
pub const TEMPLATE: &str = include_str!("../../templates/farm.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: [{section}] {key}: {message}")]
    Invalid {
        path: PathBuf,
        section: &'static str,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FarmConfig {
    pub server: ServerConfig,
    pub state: StateConfig,
    pub profiles: ProfilesConfig,
    pub signing: SigningConfig,
    pub queue: QueueConfig,
    pub nightly: Vec<NightlyConfig>,
    pub mirror: MirrorConfig,
    pub ftp: Vec<crate::publish::ftp::FtpTarget>,
    pub retention: RetentionConfig,
    pub notify: NotifyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub dir: PathBuf,
    pub admin_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfilesConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    pub key_file: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    pub key_user_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub lease_seconds: u64,
    pub heartbeat_seconds: u64,
    pub max_attempts: u32,
    pub retry_backoff_seconds: u64,
    pub pause_worker_after_failures: u32,
    pub max_upload_bytes: u64,
    pub max_log_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NightlyConfig {
    pub profile: String,
    /// Local time of day, `HH:MM`.
    pub at: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    pub root: PathBuf,
    pub serve: bool,
    pub ttl: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub keep_snapshots: u32,
    pub keep_days: u32,
    pub grace_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Shell command run with the request summary (JSON) on stdin.
    pub command: Option<String>,
    /// The command is killed after this long.
    pub command_timeout_seconds: u64,
    /// URL the request summary is POSTed to.
    pub webhook: Option<String>,
    /// Tries per notification (the webhook answering other than 2xx, or not at all).
    pub webhook_attempts: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            command: None,
            command_timeout_seconds: 60,
            webhook: None,
            webhook_attempts: 3,
        }
    }
}

impl Default for FarmConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            state: StateConfig::default(),
            profiles: ProfilesConfig {
                dir: "profiles".into(),
            },
            signing: SigningConfig::default(),
            queue: QueueConfig::default(),
            nightly: Vec::new(),
            mirror: MirrorConfig::default(),
            ftp: Vec::new(),
            retention: RetentionConfig::default(),
            notify: NotifyConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8620)),
            public_url: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: "binfarm-state".into(),
            admin_token_file: None,
        }
    }
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self {
            dir: "profiles".into(),
        }
    }
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            key_file: "binfarm-state/signing-key.asc".into(),
            passphrase_file: None,
            key_user_id: "binfarm signing key <binfarm@localhost>".into(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_seconds: 120,
            heartbeat_seconds: 10,
            max_attempts: 3,
            retry_backoff_seconds: 30,
            pause_worker_after_failures: 5,
            max_upload_bytes: 4 << 30,
            max_log_bytes: 64 << 20,
        }
    }
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            root: "binfarm-state/mirror".into(),
            serve: true,
            ttl: 0,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_snapshots: 10,
            keep_days: 14,
            grace_hours: 24,
        }
    }
}

impl FarmConfig {
    /// Reads `path`, or the embedded defaults relative to the current directory when None.
    /// Relative paths in the file are made absolute against the file's directory.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (text, origin, base) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (text, path.to_owned(), base)
            }
            None => (
                TEMPLATE.to_owned(),
                PathBuf::from("(embedded defaults)"),
                PathBuf::new(),
            ),
        };
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let base = std::path::absolute(&base).map_err(|source| ConfigError::Read {
            path: base.clone(),
            source,
        })?;
        let mut config: FarmConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        config.resolve_paths(&base);
        config.validate(&origin)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut self.state.dir);
        abs(&mut self.profiles.dir);
        abs(&mut self.signing.key_file);
        abs(&mut self.mirror.root);
        for p in [
            &mut self.state.admin_token_file,
            &mut self.signing.passphrase_file,
            &mut self.server.tls_cert,
            &mut self.server.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            abs(p);
        }
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |section, key, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            section,
            key,
            message,
        };
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server",
                "tls_cert",
                "tls_cert and tls_key go together".into(),
            ));
        }
        if self.queue.heartbeat_seconds == 0
            || self.queue.lease_seconds <= self.queue.heartbeat_seconds
        {
            return Err(invalid(
                "queue",
                "lease_seconds",
                format!(
                    "must be longer than heartbeat_seconds ({}), and heartbeat_seconds above 0",
                    self.queue.heartbeat_seconds
                ),
            ));
        }
        if self.queue.max_attempts == 0 {
            return Err(invalid(
                "queue",
                "max_attempts",
                "must be at least 1".into(),
            ));
        }
        for nightly in &self.nightly {
            parse_time_of_day(&nightly.at).ok_or_else(|| {
                invalid(
                    "nightly",
                    "at",
                    format!(
                        "{:?} for profile {}: expected HH:MM",
                        nightly.at, nightly.profile
                    ),
                )
            })?;
        }
        Ok(())
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.state
            .admin_token_file
            .clone()
            .unwrap_or_else(|| self.state.dir.join("admin.token"))
    }

    pub fn public_url(&self) -> String {
        let scheme = if self.server.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        self.server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.server.listen))
            .trim_end_matches('/')
            .to_owned()
    }
}

/// `HH:MM` -> minutes after midnight.
pub fn parse_time_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_defaults() {
        let from_template: FarmConfig = toml::from_str(TEMPLATE).unwrap();
        let defaults = FarmConfig::default();
        assert_eq!(format!("{from_template:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("farm.toml");
        std::fs::write(
            &path,
            "[queue]\nlease_seconds = 5\nheartbeat_seconds = 10\n",
        )
        .unwrap();
        let err = FarmConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("farm.toml: [queue] lease_seconds: must be longer"),
            "{err}"
        );
        std::fs::write(&path, "[queue]\nleese_seconds = 5\n").unwrap();
        let err = FarmConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("unknown field `leese_seconds`"), "{err}");
        std::fs::write(&path, "[[nightly]]\nprofile = \"p\"\nat = \"25:00\"\n").unwrap();
        let err = FarmConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("[nightly] at: \"25:00\""), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("farm.toml");
        std::fs::write(&path, "[state]\ndir = \"st\"\n").unwrap();
        let config = FarmConfig::load(Some(&path)).unwrap();
        assert_eq!(config.state.dir, dir.path().join("st"));
        assert_eq!(config.admin_token_file(), dir.path().join("st/admin.token"));
    }

    #[test]
    fn time_of_day() {
        assert_eq!(parse_time_of_day("02:30"), Some(150));
        assert_eq!(parse_time_of_day("2:30"), None);
        assert_eq!(parse_time_of_day("24:00"), None);
    }
}
