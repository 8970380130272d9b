//! The farm.toml settings publishing uses (`[state] dir`, `[profiles] dir`, `[signing]
//! key_file` / `passphrase_file`, `[mirror] root` / `ttl`, `[retention]`), taken from the
//! coordinator's [`FarmConfig`]: one file, one parser.

use std::path::{Path, PathBuf};

use crate::coordinator::config::FarmConfig;

use super::{PublishError, Retention};

/// Publishing settings, paths absolute.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub state_dir: PathBuf,
    pub profiles_dir: PathBuf,
    pub key_file: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    pub mirror_root: PathBuf,
    /// 0: no TTL header.
    pub ttl: u64,
    pub retention: Retention,
    /// FTP mirrors (GC deletes there what it deletes from the local trees).
    pub ftp: Vec<super::ftp::FtpTarget>,
}

impl PublishConfig {
    /// Reads farm.toml at `path`, or the embedded defaults when None.
    pub fn load(path: Option<&Path>) -> Result<PublishConfig, PublishError> {
        let farm = FarmConfig::load(path).map_err(|e| PublishError::Config {
            path: path.map_or_else(|| PathBuf::from("(embedded defaults)"), Path::to_path_buf),
            message: e.to_string(),
        })?;
        Ok(PublishConfig::from_farm(&farm))
    }

    pub fn from_farm(farm: &FarmConfig) -> PublishConfig {
        PublishConfig {
            state_dir: farm.state.dir.clone(),
            profiles_dir: farm.profiles.dir.clone(),
            key_file: farm.signing.key_file.clone(),
            passphrase_file: farm.signing.passphrase_file.clone(),
            mirror_root: farm.mirror.root.clone(),
            ttl: farm.mirror.ttl,
            retention: Retention {
                keep_snapshots: farm.retention.keep_snapshots,
                keep_days: farm.retention.keep_days,
                grace_hours: farm.retention.grace_hours,
            },
            ftp: farm.ftp.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_publishing_keys_of_farm_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("farm.toml");
        std::fs::write(
            &path,
            "[state]\ndir = \"st\"\n[mirror]\nroot = \"/srv/m\"\nttl = 60\n[retention]\nkeep_snapshots = 3\n",
        )
        .unwrap();
        let c = PublishConfig::load(Some(&path)).unwrap();
        assert_eq!(c.state_dir, dir.path().join("st"));
        assert_eq!(c.mirror_root, PathBuf::from("/srv/m"));
        assert_eq!(c.ttl, 60);
        assert_eq!(c.retention.keep_snapshots, 3);
        assert_eq!(c.retention.keep_days, 14);
        std::fs::write(&path, "[mirror]\nrooot = \"x\"\n").unwrap();
        let err = PublishConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("rooot"), "{err}");
    }
}
