//! GC: which snapshots, blobs and mirror files are no longer needed.
//!
//! Retained snapshots, per profile: the newest `keep_snapshots`, every one younger than
//! `keep_days`, every one a channel points at, every one a channel pointed at within its
//! history window (its newest `keep_snapshots` moves not rolled back, and every move younger
//! than `keep_days`: what `rollback` can go back to), and every one a mirror tree shows.
//! Blobs (binpkgs and indexes) are removed only when no retained snapshot and no build
//! record refers to them, and only once older than the grace period (an upload in flight
//! is recorded before a step refers to it).
//!
//! Mirror trees: a file the tree's index does not name is recorded with the time it was
//! first seen so, and deleted once `grace_hours` have passed (clients may still read the
//! index that named it). Temporary files of a killed publish are deleted at once: GC holds
//! the tree's publish lock, so no publish is writing them. Remote mirrors get the same
//! deletions through [`RemoteCleaner`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::index::{self, PackagesIndex};
use crate::store::Db;

use super::local::{lock_tree, LOCK_FILE};
use super::{PublishError, Publisher, SnapshotId};

/// How long things are kept (farm.toml `[retention]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    pub keep_snapshots: u32,
    pub keep_days: u32,
    pub grace_hours: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_snapshots: 10,
            keep_days: 14,
            grace_hours: 24,
        }
    }
}

/// A remote mirror (FTP) that must lose the files GC removed from a local tree.
pub trait RemoteCleaner {
    /// How reports name it (`ftp://host/dir`).
    fn name(&self) -> String;
    /// Deletes `paths` (relative to the profile/channel tree) from the remote tree.
    fn delete_files(&self, profile: &str, channel: &str, paths: &[String]) -> Result<(), String>;
}

/// What GC removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed_snapshots: Vec<SnapshotId>,
    pub kept_snapshots: Vec<SnapshotId>,
    /// (sha512, size)
    pub removed_blobs: Vec<(String, u64)>,
    /// Mirror files past their grace period.
    pub removed_mirror_files: Vec<PathBuf>,
    /// Leftover temporary files of killed publishes.
    pub removed_temp_files: Vec<PathBuf>,
    /// Unreferenced mirror files still within the grace period.
    pub waiting_mirror_files: Vec<PathBuf>,
    pub remote_errors: Vec<String>,
}

impl GcReport {
    pub fn render(&self) -> String {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut out = String::new();
        for id in &self.removed_snapshots {
            out.push_str(&format!("{verb} snapshot {id}\n"));
        }
        for (sha, size) in &self.removed_blobs {
            out.push_str(&format!("{verb} blob {sha} ({size} bytes)\n"));
        }
        for path in self
            .removed_mirror_files
            .iter()
            .chain(&self.removed_temp_files)
        {
            out.push_str(&format!("{verb} {}\n", path.display()));
        }
        for path in &self.waiting_mirror_files {
            out.push_str(&format!(
                "unreferenced, within the grace period: {}\n",
                path.display()
            ));
        }
        for e in &self.remote_errors {
            out.push_str(&format!("remote: {e}\n"));
        }
        let bytes: u64 = self.removed_blobs.iter().map(|(_, s)| s).sum();
        out.push_str(&format!(
            "{}: {} snapshots, {} blobs ({bytes} bytes), {} mirror files, {} temporary files; kept {} snapshots\n",
            if self.dry_run { "dry run" } else { "gc" },
            self.removed_snapshots.len(),
            self.removed_blobs.len(),
            self.removed_mirror_files.len(),
            self.removed_temp_files.len(),
            self.kept_snapshots.len()
        ));
        out
    }
}

/// The snapshots retention keeps (see the module doc).
pub fn retained_snapshots(
    db: &Db,
    retention: &Retention,
    now: i64,
) -> Result<BTreeSet<SnapshotId>, PublishError> {
    let cutoff = now - i64::from(retention.keep_days) * 86_400;
    let keep_n = retention.keep_snapshots as usize;
    let mut keep = BTreeSet::new();
    let mut by_profile: BTreeMap<String, Vec<(SnapshotId, i64)>> = BTreeMap::new();
    for s in db.list_snapshots(None)? {
        by_profile
            .entry(s.profile)
            .or_default()
            .push((s.id, s.created_at));
    }
    for list in by_profile.values() {
        for (i, (id, created)) in list.iter().rev().enumerate() {
            if i < keep_n || *created >= cutoff {
                keep.insert(*id);
            }
        }
    }
    for ch in db.list_channels(None)? {
        keep.insert(ch.snapshot_id);
    }
    let mut by_channel: BTreeMap<(String, String), Vec<(SnapshotId, i64)>> = BTreeMap::new();
    for h in db.all_channel_history()? {
        if h.rolled_back_at.is_none() {
            by_channel
                .entry((h.profile, h.channel))
                .or_default()
                .push((h.snapshot_id, h.at));
        }
    }
    for moves in by_channel.values() {
        for (i, (id, at)) in moves.iter().rev().enumerate() {
            if i < keep_n || *at >= cutoff {
                keep.insert(*id);
            }
        }
    }
    for tree in db.list_mirror_trees()? {
        keep.insert(tree.snapshot_id);
    }
    Ok(keep)
}

/// A staging directory this old belongs to no running snapshot creation.
const STAGING_MAX_AGE_SECS: i64 = 6 * 3600;

/// Kinds of blob GC may remove (logs and anything else belong to the build records).
const COLLECTED_KINDS: [&str; 2] = ["binpkg", "index"];

/// Runs GC over the store and every local mirror tree under the mirror root; with
/// `dry_run`, only reports.
pub fn run_gc(
    publisher: &Publisher,
    db: &mut Db,
    dry_run: bool,
    now: i64,
    remotes: &[&dyn RemoteCleaner],
) -> Result<GcReport, PublishError> {
    let retention = publisher.retention;
    let grace = i64::from(retention.grace_hours) * 3600;
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };

    // Snapshots.
    let keep = retained_snapshots(db, &retention, now)?;
    let all: Vec<SnapshotId> = db.list_snapshots(None)?.iter().map(|s| s.id).collect();
    report.removed_snapshots = all
        .iter()
        .copied()
        .filter(|id| !keep.contains(id))
        .collect();
    report.kept_snapshots = keep.iter().copied().collect();

    // Blobs.
    let mut used: HashSet<String> = db.blobs_used_by_builds()?;
    used.extend(db.blobs_of_snapshots(&report.kept_snapshots)?);
    for blob in db.list_blobs()? {
        if COLLECTED_KINDS.contains(&blob.kind.as_str())
            && !used.contains(&blob.sha512)
            && blob.created_at <= now - grace
        {
            report.removed_blobs.push((blob.sha512, blob.size));
        }
    }
    if !dry_run {
        db.delete_snapshots(&report.removed_snapshots)?;
        let digests: Vec<String> = report
            .removed_blobs
            .iter()
            .map(|(d, _)| d.clone())
            .collect();
        // Rows first: a row never names a missing file.
        db.delete_blob_rows(&digests)?;
        for d in &digests {
            publisher.store.blobs().remove(d)?;
        }
    }

    // Staging directories of snapshot or resign runs that were killed.
    let staging = publisher.staging_dir();
    if let Ok(dirs) = fs::read_dir(&staging) {
        for d in dirs.flatten() {
            let age_ok = d
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|m| (m.as_secs() as i64) <= now - STAGING_MAX_AGE_SECS);
            if age_ok {
                report.removed_temp_files.push(d.path());
                if !dry_run {
                    fs::remove_dir_all(d.path()).map_err(PublishError::io(&d.path()))?;
                }
            }
        }
    }

    // Mirror trees.
    for (profile, channel, tree) in mirror_trees(&publisher.mirror_root)? {
        gc_tree(
            db,
            &tree,
            &profile,
            &channel,
            dry_run,
            now,
            grace,
            remotes,
            &mut report,
        )?;
    }
    Ok(report)
}

/// `(profile, channel, dir)` of every `<root>/<profile>/<channel>` holding a `Packages`.
fn mirror_trees(root: &Path) -> Result<Vec<(String, String, PathBuf)>, PublishError> {
    let mut trees = Vec::new();
    let profiles = match fs::read_dir(root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(trees),
        Err(source) => {
            return Err(PublishError::Io {
                path: root.to_path_buf(),
                source,
            })
        }
    };
    for p in profiles {
        let p = p.map_err(PublishError::io(root))?;
        if !p.file_type().map_err(PublishError::io(root))?.is_dir() {
            continue;
        }
        let pdir = p.path();
        for c in fs::read_dir(&pdir).map_err(PublishError::io(&pdir))? {
            let c = c.map_err(PublishError::io(&pdir))?;
            let cdir = c.path();
            if cdir.join(index::PACKAGES_FILE).is_file() {
                trees.push((
                    p.file_name().to_string_lossy().into_owned(),
                    c.file_name().to_string_lossy().into_owned(),
                    cdir,
                ));
            }
        }
    }
    trees.sort();
    Ok(trees)
}

#[allow(clippy::too_many_arguments)]
fn gc_tree(
    db: &mut Db,
    tree: &Path,
    profile: &str,
    channel: &str,
    dry_run: bool,
    now: i64,
    grace: i64,
    remotes: &[&dyn RemoteCleaner],
    report: &mut GcReport,
) -> Result<(), PublishError> {
    let _lock = lock_tree(tree)?;
    let index_path = tree.join(index::PACKAGES_FILE);
    let named: HashSet<String> = match PackagesIndex::read(&index_path) {
        Ok(idx) => idx.entries.iter().map(|e| e.path().to_string()).collect(),
        Err(e) => {
            // Without a readable index nothing can be told unreferenced.
            tracing::warn!("gc: skipping {}: {e}", tree.display());
            return Ok(());
        }
    };
    let mut unreferenced = Vec::new();
    let mut temp_files = Vec::new();
    for item in walkdir::WalkDir::new(tree).min_depth(1).follow_links(false) {
        let item = item.map_err(|e| PublishError::Io {
            path: e.path().unwrap_or(tree).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("directory loop")),
        })?;
        if item.file_type().is_dir() {
            continue;
        }
        let Ok(rel) = item.path().strip_prefix(tree) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if rel == index::PACKAGES_FILE || rel == index::PACKAGES_GZ_FILE || rel == LOCK_FILE {
            continue;
        }
        let name = item.file_name().to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp.") {
            temp_files.push(item.path().to_path_buf());
        } else if !named.contains(&rel) {
            unreferenced.push(rel);
        }
    }
    let tree_key = tree.to_string_lossy().into_owned();
    let recorded: HashMap<String, i64> = db.mirror_orphans(&tree_key)?.into_iter().collect();
    let unreferenced_set: HashSet<&str> = unreferenced.iter().map(String::as_str).collect();
    let mut due = Vec::new();
    let mut new_orphans = Vec::new();
    for rel in &unreferenced {
        match recorded.get(rel) {
            Some(&since) if since <= now - grace => due.push(rel.clone()),
            Some(_) => report.waiting_mirror_files.push(tree.join(rel)),
            None => {
                new_orphans.push(rel.clone());
                report.waiting_mirror_files.push(tree.join(rel));
            }
        }
    }
    // Records for files that are named again or gone.
    let stale: Vec<String> = recorded
        .keys()
        .filter(|p| !unreferenced_set.contains(p.as_str()))
        .cloned()
        .collect();
    report
        .removed_mirror_files
        .extend(due.iter().map(|rel| tree.join(rel)));
    report.removed_temp_files.extend(temp_files.iter().cloned());
    if dry_run {
        return Ok(());
    }
    db.add_mirror_orphans(&tree_key, &new_orphans, now)?;
    db.remove_mirror_orphans(&tree_key, &stale)?;
    for path in temp_files {
        remove_file_if_present(&path)?;
    }
    let mut removed_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for rel in &due {
        let path = tree.join(rel);
        remove_file_if_present(&path)?;
        if let Some(parent) = path.parent() {
            removed_dirs.insert(parent.to_path_buf());
        }
    }
    db.remove_mirror_orphans(&tree_key, &due)?;
    // Empty package directories go too (deepest first; a non-empty one stays).
    for dir in removed_dirs.iter().rev() {
        let mut d = dir.as_path();
        while d != tree && d.starts_with(tree) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
    }
    if !due.is_empty() {
        for remote in remotes {
            if let Err(e) = remote.delete_files(profile, channel, &due) {
                report
                    .remote_errors
                    .push(format!("{} ({profile}/{channel}): {e}", remote.name()));
            }
        }
    }
    Ok(())
}

fn remove_file_if_present(path: &Path) -> Result<(), PublishError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PublishError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// FTP mirrors hold the same `<profile>/<channel>` trees under their base directory.
impl RemoteCleaner for super::ftp::FtpTarget {
    fn name(&self) -> String {
        format!("ftp://{}", self.host_label())
    }

    fn delete_files(&self, profile: &str, channel: &str, paths: &[String]) -> Result<(), String> {
        let remote_dir = format!("{profile}/{channel}");
        // A thread of its own with its own runtime: GC is synchronous and may be called from
        // inside the coordinator's runtime (spawn_blocking) as well as from the CLI.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("starting a runtime for FTP: {e}"))?;
                    runtime
                        .block_on(super::ftp::FtpTarget::delete_files(
                            self,
                            &remote_dir,
                            paths,
                        ))
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .join()
                .unwrap_or_else(|_| Err("the FTP deletion thread panicked".into()))
        })
    }
}
