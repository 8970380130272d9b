//! Where the package lists of snapshots and channels come from.
//!
//! Publishing (snapshots, channels) is another module's job; the planner only needs "the
//! packages of profile P in snapshot or channel S". [`SnapshotSource`] is that seam;
//! [`MirrorTree`] reads a published mirror tree directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::RolloutError;

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
        let text = fs::read_to_string(&path).map_err(|source| RolloutError::Io {
            path: path.clone(),
            source,
        })?;
        parse_packages(&text, &path)
    }
}

/// Reads the package blocks of a `Packages` index: the header block first, then one block per
/// package separated by blank lines. Only CPV, SLOT, BUILD_ID and BUILD_TIME are kept.
pub fn parse_packages(text: &str, path: &Path) -> Result<Vec<Entry>, RolloutError> {
    let malformed = |line: usize, message: String| RolloutError::MalformedIndex {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut entries = Vec::new();
    let mut in_header = true;
    let mut block: Option<(usize, Entry)> = None;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        let at_end = lines.peek().is_none();
        if !line.trim().is_empty() {
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(number, format!("expected `KEY: value`, got {line:?}")))?;
            let value = value.trim();
            if !in_header {
                let (_, entry) = block.get_or_insert_with(|| {
                    (
                        number,
                        Entry {
                            cpv: String::new(),
                            slot: "0".to_string(),
                            build_id: None,
                            build_time: None,
                        },
                    )
                });
                let parse_number = |what: &str| {
                    value
                        .parse::<u64>()
                        .map_err(|_| malformed(number, format!("{what} {value:?} is not a number")))
                };
                match key {
                    "CPV" => entry.cpv = value.to_string(),
                    "SLOT" if !value.is_empty() => entry.slot = value.to_string(),
                    "BUILD_ID" => entry.build_id = Some(parse_number("BUILD_ID")?),
                    "BUILD_TIME" => entry.build_time = Some(parse_number("BUILD_TIME")?),
                    _ => {}
                }
            }
        }
        if line.trim().is_empty() || at_end {
            in_header = false;
            if let Some((start, entry)) = block.take() {
                if entry.cpv.is_empty() {
                    return Err(malformed(start, "package block without a CPV line".into()));
                }
                entries.push(entry);
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_blocks_after_the_header() {
        let text = "ARCH: amd64\nVERSION: 0\nPACKAGES: 2\n\nBUILD_ID: 2\nBUILD_TIME: 1700000000\n\
                    CPV: dev-lang/php-8.3.10\nSLOT: 8.3\n\nCPV: app-arch/tar-1.35\nMD5: 00\n";
        let entries = parse_packages(text, Path::new("Packages")).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].cpv, "dev-lang/php-8.3.10");
        assert_eq!(entries[0].slot, "8.3");
        assert_eq!(entries[0].build_id, Some(2));
        assert_eq!(entries[1].slot, "0");
        assert_eq!(entries[1].build_id, None);
    }

    #[test]
    fn reports_the_line_of_a_bad_block() {
        let text = "VERSION: 0\n\nSLOT: 1\n\nCPV: a/b-1\nBUILD_ID: x\n";
        let err = parse_packages(text, Path::new("P"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("P:3"), "{err}");
        let text = "VERSION: 0\n\nCPV: a/b-1\nBUILD_ID: x\n";
        let err = parse_packages(text, Path::new("P"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("P:4") && err.contains("BUILD_ID"), "{err}");
    }
}
