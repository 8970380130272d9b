//! The farm.toml settings publishing reads: `[state] dir`, `[profiles] dir`, `[signing]
//! key_file` / `passphrase_file`, `[mirror] root` / `ttl`, `[retention]`. Other sections
//! are the coordinator's and are ignored here. Without a file, the defaults of
//! templates/farm.toml apply, relative to the current directory; relative paths in a file
//! are relative to the file's directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{PublishError, Retention};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileConfig {
    state: StateSection,
    profiles: ProfilesSection,
    signing: SigningSection,
    mirror: MirrorSection,
    retention: RetentionSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StateSection {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProfilesSection {
    dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SigningSection {
    key_file: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MirrorSection {
    root: Option<PathBuf>,
    ttl: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RetentionSection {
    keep_snapshots: Option<u32>,
    keep_days: Option<u32>,
    grace_hours: Option<u32>,
}

/// Publishing settings, paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    pub state_dir: PathBuf,
    pub profiles_dir: PathBuf,
    pub key_file: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    pub mirror_root: PathBuf,
    /// 0: no TTL header.
    pub ttl: u64,
    pub retention: Retention,
}

impl PublishConfig {
    /// Reads `path` (farm.toml), or the defaults when None.
    pub fn load(path: Option<&Path>) -> Result<PublishConfig, PublishError> {
        let (file, base) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(PublishError::io(path))?;
                let file: FileConfig = toml::from_str(&text).map_err(|e| PublishError::Config {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                let base = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                (file, base)
            }
            None => (FileConfig::default(), PathBuf::from(".")),
        };
        let base = std::path::absolute(&base).map_err(PublishError::io(&base))?;
        let abs = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let defaults = Retention::default();
        Ok(PublishConfig {
            state_dir: abs(file.state.dir.unwrap_or_else(|| "binfarm-state".into())),
            profiles_dir: abs(file.profiles.dir.unwrap_or_else(|| "profiles".into())),
            key_file: abs(file
                .signing
                .key_file
                .unwrap_or_else(|| "binfarm-state/signing-key.asc".into())),
            passphrase_file: file.signing.passphrase_file.map(abs),
            mirror_root: abs(file
                .mirror
                .root
                .unwrap_or_else(|| "binfarm-state/mirror".into())),
            ttl: file.mirror.ttl.unwrap_or(0),
            retention: Retention {
                keep_snapshots: file
                    .retention
                    .keep_snapshots
                    .unwrap_or(defaults.keep_snapshots),
                keep_days: file.retention.keep_days.unwrap_or(defaults.keep_days),
                grace_hours: file.retention.grace_hours.unwrap_or(defaults.grace_hours),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_publishing_keys_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("farm.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1\"\n[state]\ndir = \"st\"\n[mirror]\nroot = \"/srv/m\"\nttl = 60\n[retention]\nkeep_snapshots = 3\n",
        )
        .unwrap();
        let c = PublishConfig::load(Some(&path)).unwrap();
        assert_eq!(c.state_dir, dir.path().join("st"));
        assert_eq!(c.mirror_root, PathBuf::from("/srv/m"));
        assert_eq!(c.ttl, 60);
        assert_eq!(c.retention.keep_snapshots, 3);
        assert_eq!(c.retention.keep_days, 14);
        assert_eq!(c.key_file, dir.path().join("binfarm-state/signing-key.asc"));
    }
}
