//! Where the package lists of snapshots and channels come from.
//!
//! Publishing (snapshots, channels) is another module's job; the planner only needs "the
//! packages of profile P in snapshot or channel S". [`SnapshotSource`] is that seam;
//! [`MirrorTree`] reads a published mirror tree directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::RolloutError;
use crate::index::{self, PackagesIndex};

/// One package of a `Packages` index: what the diff compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// `category/package-version`.
    pub cpv: String,
    /// The full SLOT value (`8.3`, `0/1.2`); `0` when the index omits it (Portage omits defaults).
    pub slot: String,
    pub build_id: Option<u64>,
    pub build_time: Option<u64>,
}

impl Entry {
    /// The slot without its sub-slot: what decides whether versions can sit side by side.
    pub fn main_slot(&self) -> &str {
        self.slot.split('/').next().unwrap_or("0")
    }

    /// The fields the diff compares, taken from an entry of the `Packages` file at `path`
    /// (named in errors): BUILD_ID and BUILD_TIME, when present, must be numbers.
    pub fn from_index(entry: &index::Entry, path: &Path) -> Result<Entry, RolloutError> {
        let cpv = entry.cpv();
        let number = |key: &str| {
            entry
                .get(key)
                .map(|value| {
                    value
                        .parse::<u64>()
                        .map_err(|_| RolloutError::BadIndexEntry {
                            path: path.to_path_buf(),
                            cpv: cpv.to_string(),
                            message: format!("{key} {value:?} is not a number"),
                        })
                })
                .transpose()
        };
        Ok(Entry {
            cpv: cpv.to_string(),
            slot: entry
                .get("SLOT")
                .filter(|slot| !slot.is_empty())
                .unwrap_or("0")
                .to_string(),
            build_id: number("BUILD_ID")?,
            build_time: number("BUILD_TIME")?,
        })
    }
}

/// Gives the package list of a profile's snapshot or channel.
pub trait SnapshotSource {
    /// The packages in `snapshot_or_channel` of `profile`, or [`RolloutError::SnapshotNotFound`].
    fn packages(
        &self,
        profile: &str,
        snapshot_or_channel: &str,
    ) -> Result<Vec<Entry>, RolloutError>;
}

/// A published mirror tree: `<root>/<profile>/<channel>/Packages` for channels and
/// `<root>/<profile>/snapshots/<ID>/Packages` for snapshots. A name is looked up as a snapshot
/// first, then as a channel.
#[derive(Debug, Clone)]
pub struct MirrorTree {
    root: PathBuf,
}

impl MirrorTree {
    pub fn new(root: impl Into<PathBuf>) -> MirrorTree {
        MirrorTree { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_paths(&self, profile: &str, name: &str) -> [PathBuf; 2] {
        let profile_dir = self.root.join(profile);
        [
            profile_dir.join("snapshots").join(name).join("Packages"),
            profile_dir.join(name).join("Packages"),
        ]
    }
}

/// Names become path components: refuse anything that could leave the mirror tree.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

impl SnapshotSource for MirrorTree {
    fn packages(&self, profile: &str, name: &str) -> Result<Vec<Entry>, RolloutError> {
        if !is_plain_name(profile) || !is_plain_name(name) || name == "snapshots" {
            return Err(RolloutError::SnapshotNotFound {
                profile: profile.to_string(),
                name: name.to_string(),
                detail: "not a valid snapshot or channel name".to_string(),
            });
        }
        let [snapshot_path, channel_path] = self.index_paths(profile, name);
        let path = if snapshot_path.is_file() {
            snapshot_path
        } else if channel_path.is_file() {
            channel_path
        } else {
            return Err(RolloutError::SnapshotNotFound {
                profile: profile.to_string(),
                name: name.to_string(),
                detail: format!(
                    "neither {} nor {} exists",
                    snapshot_path.display(),
                    channel_path.display()
                ),
            });
        };
        let index = PackagesIndex::read(&path)?;
        index
            .entries
            .iter()
            .map(|entry| Entry::from_index(entry, &path))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn entries_of(text: &str) -> Result<Vec<Entry>, RolloutError> {
        let path = Path::new("P");
        let index = PackagesIndex::parse(text, path)?;
        index
            .entries
            .iter()
            .map(|entry| Entry::from_index(entry, path))
            .collect()
    }

    #[test]
    fn keeps_cpv_slot_build_id_and_build_time_of_each_package() {
        let text = "ARCH: amd64\nVERSION: 0\nPACKAGES: 2\n\nBUILD_ID: 2\nBUILD_TIME: 1700000000\n\
                    CPV: dev-lang/php-8.3.10\nSLOT: 8.3\n\nCPV: app-arch/tar-1.35\nMD5: 00\n";
        let entries = entries_of(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].cpv, "dev-lang/php-8.3.10");
        assert_eq!(entries[0].slot, "8.3");
        assert_eq!(entries[0].build_id, Some(2));
        assert_eq!(entries[0].build_time, Some(1_700_000_000));
        assert_eq!(entries[1].slot, "0");
        assert_eq!(entries[1].build_id, None);
        assert_eq!(entries[1].build_time, None);
    }

    #[test]
    fn names_the_file_and_the_place_of_a_bad_block() {
        let err = entries_of("VERSION: 0\n\nSLOT: 1\n\nCPV: a/b-1\nBUILD_ID: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("P:3") && err.contains("CPV"), "{err}");
        let err = entries_of("VERSION: 0\n\nCPV: a/b-1\nBUILD_ID: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("P: a/b-1: ") && err.contains("BUILD_ID \"x\""),
            "{err}"
        );
    }

    #[test]
    fn mirror_tree_errors_name_the_index_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("amd64").join("snapshots").join("1");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Packages");
        fs::write(&path, "VERSION: 0\n\nCPV: a/b-1\nBUILD_TIME: soon\n").unwrap();
        let tree = MirrorTree::new(root.path());
        let err = tree.packages("amd64", "1").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: a/b-1: BUILD_TIME", path.display())),
            "{err}"
        );
        fs::write(&path, "CPV: a/b-1\n").unwrap();
        let err = tree.packages("amd64", "1").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:1: ", path.display())) && err.contains("VERSION"),
            "{err}"
        );
    }
}
