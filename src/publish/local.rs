//! The local mirror target: `<root>/<profile>/<channel>/{Packages, Packages.gz,
//! <cat>/<pn>/<pf>-<build_id>.gpkg.tar}`, what Portage clients (and the FTP target, and
//! `binfarm mirror`) read.
//!
//! Order of a publish, so that a client never sees an index naming a missing or partial file
//! and a publish killed at any point leaves the old index with all its files, or the new one
//! with all of its files:
//! 1. package files: hard links from the blob store (complete the moment they appear), or
//!    copies written under a dot-name, synced, then renamed; existing names are kept (a
//!    published name is never reused for other bytes);
//! 2. the directories that got new names are synced;
//! 3. `Packages` then `Packages.gz`, each by temp name + rename ([`crate::index`]'s writer),
//!    with a TIMESTAMP more than [`CLIENT_TIMESTAMP_TOLERANCE`] seconds above the tree's
//!    previous one (clients keep their copy unless the new one is newer by more than that;
//!    a rollback must still reach them). The file times are the TIMESTAMP.
//!
//! Files the new index no longer names stay (clients may hold the old index); they are
//! recorded with the time and GC removes them after the grace period.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use md5::Digest;

use crate::index::{self, PackagesIndex};
use crate::store::{Db, MirrorTreeRow};

use super::snapshot::read_index_blob;
use super::{check_name, PublishError, Publisher, SnapshotId};

/// How package files get into a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkMode {
    /// Hard links from the blob store; copies when that is impossible (another file system).
    #[default]
    Hardlink,
    /// Always copies (a tree that must not share inodes with the store).
    Copy,
}

/// Name of the lock file that serialises publishes of one tree (a dot-file: not published
/// further and ignored by GC).
pub const LOCK_FILE: &str = ".binfarm-publish.lock";

/// Portage asks for the index with If-Modified-Since = its copy's TIMESTAMP + 5 s (Portage's
/// `TIMESTAMP_TOLERANCE`): a new index must be more than 5 s newer than the previous one, or
/// clients that fetched the previous one keep it.
pub const CLIENT_TIMESTAMP_TOLERANCE: u64 = 5;

/// Test hook: milliseconds to pause after each file and before the index (so a test can kill
/// a publishing process at chosen points).
pub const STEP_DELAY_ENV: &str = "BINFARM_PUBLISH_STEP_DELAY_MS";

/// What [`publish_tree`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeReport {
    pub tree: PathBuf,
    pub snapshot_id: SnapshotId,
    pub packages: usize,
    pub linked: usize,
    pub copied: usize,
    pub already_present: usize,
    /// Files of the same name but another size, replaced (never written by binfarm).
    pub replaced: usize,
    pub index_timestamp: u64,
    /// Files the previous index named and this one does not (GC removes them later).
    pub newly_unreferenced: usize,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// `<root>/<profile>/<channel>`, with both names checked to be plain path components.
pub fn tree_dir(root: &Path, profile: &str, channel: &str) -> Result<PathBuf, PublishError> {
    check_name("profile", profile)?;
    check_name("channel", channel)?;
    Ok(root.join(profile).join(channel))
}

/// Holds the exclusive lock of a tree while it lives.
pub(crate) struct TreeLock {
    _lock: nix::fcntl::Flock<File>,
}

pub(crate) fn lock_tree(tree: &Path) -> Result<TreeLock, PublishError> {
    fs::create_dir_all(tree).map_err(PublishError::io(tree))?;
    let path = tree.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(PublishError::io(&path))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| PublishError::Io {
            path: path.clone(),
            source: io::Error::from(errno),
        },
    )?;
    Ok(TreeLock { _lock: lock })
}

fn step_delay() -> Option<Duration> {
    std::env::var(STEP_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

/// How a file got into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    Linked,
    Copied,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Puts `src` at `dest` (which must not exist): a hard link, or a complete copy renamed
/// into place. Parent directories are created. The result is readable by everyone (a
/// mirror is public; blob files are created private).
pub(crate) fn link_or_copy(
    src: &Path,
    dest: &Path,
    mode: LinkMode,
) -> Result<Placed, PublishError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(PublishError::io(parent))?;
    }
    if mode == LinkMode::Hardlink {
        match fs::hard_link(src, dest) {
            Ok(()) => {
                make_world_readable(dest)?;
                return Ok(Placed::Linked);
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc_errno::EXDEV | libc_errno::EPERM | libc_errno::EMLINK)
                ) => {}
            Err(source) => {
                return Err(PublishError::Io {
                    path: dest.to_path_buf(),
                    source,
                })
            }
        }
    }
    copy_into_place(src, dest)?;
    Ok(Placed::Copied)
}

/// errno values a failed hard link falls back to copying on.
mod libc_errno {
    pub const EXDEV: i32 = nix::errno::Errno::EXDEV as i32;
    pub const EPERM: i32 = nix::errno::Errno::EPERM as i32;
    pub const EMLINK: i32 = nix::errno::Errno::EMLINK as i32;
}

fn make_world_readable(path: &Path) -> Result<(), PublishError> {
    let meta = fs::metadata(path).map_err(PublishError::io(path))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o444 != 0o444 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o444))
            .map_err(PublishError::io(path))?;
    }
    Ok(())
}

fn copy_into_place(src: &Path, dest: &Path) -> Result<(), PublishError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = dest.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()));
    let result = (|| {
        fs::copy(src, &temp).map_err(PublishError::io(&temp))?;
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&temp)
            .map_err(PublishError::io(&temp))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(PublishError::io(&temp))?;
        // Same mtime as the blob: the index MTIME of the package stays true.
        if let Ok(modified) = fs::metadata(src).and_then(|m| m.modified()) {
            let _ = file.set_times(fs::FileTimes::new().set_modified(modified));
        }
        file.sync_all().map_err(PublishError::io(&temp))?;
        fs::rename(&temp, dest).map_err(PublishError::io(dest))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PublishError::io(dir))
}

/// The TIMESTAMP and package paths of the index a tree shows now (None without one).
fn current_index(tree: &Path) -> Result<Option<(u64, Vec<String>)>, PublishError> {
    let path = tree.join(index::PACKAGES_FILE);
    match PackagesIndex::read(&path) {
        Ok(idx) => {
            let ts = idx
                .header
                .get("TIMESTAMP")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let paths = idx.entries.iter().map(|e| e.path().to_string()).collect();
            Ok(Some((ts, paths)))
        }
        Err(index::IndexError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        // An unreadable index is replaced; its files are found by GC's scan.
        Err(e) => {
            tracing::warn!("{}: replacing an unreadable index: {e}", path.display());
            Ok(None)
        }
    }
}

/// Makes `<root>/<profile>/<channel>` show snapshot `snapshot_id` (see the module doc for
/// the order that keeps clients consistent). Publishing the snapshot a tree already shows
/// writes a fresh index only.
pub fn publish_tree(
    publisher: &Publisher,
    db: &mut Db,
    profile: &str,
    channel: &str,
    snapshot_id: SnapshotId,
    now: i64,
) -> Result<TreeReport, PublishError> {
    let started = Instant::now();
    let snapshot = db
        .snapshot(snapshot_id)?
        .ok_or(PublishError::NoSuchSnapshot { id: snapshot_id })?;
    if snapshot.profile != profile {
        return Err(PublishError::WrongProfile {
            id: snapshot_id,
            actual: snapshot.profile,
            expected: profile.to_string(),
        });
    }
    let tree = tree_dir(&publisher.mirror_root, profile, channel)?;
    let _lock = lock_tree(&tree)?;
    let entries = db.snapshot_entries(snapshot_id)?;
    let delay = step_delay();
    let mut report = TreeReport {
        tree: tree.clone(),
        snapshot_id,
        packages: entries.len(),
        ..TreeReport::default()
    };

    // 1. package files.
    let task = publisher.progress.task(
        &format!("{profile}/{channel}"),
        crate::progress::Unit::Items,
        Some(entries.len() as u64),
    );
    let mut touched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in &entries {
        task.advance(1);
        let dest = tree.join(&entry.path);
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_file() && m.len() == entry.size => {
                report.already_present += 1;
                continue;
            }
            Ok(_) => {
                // Not binfarm's (it never leaves a partial file under a final name).
                fs::remove_file(&dest).map_err(PublishError::io(&dest))?;
                report.replaced += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PublishError::Io { path: dest, source }),
        }
        let blob = publisher.store.blobs().path_of(&entry.blob)?;
        match link_or_copy(&blob, &dest, publisher.link_mode)? {
            Placed::Linked => report.linked += 1,
            Placed::Copied => report.copied += 1,
        }
        let mut dir = dest.parent();
        while let Some(d) = dir {
            if !touched_dirs.insert(d.to_path_buf()) || d == tree {
                break;
            }
            dir = d.parent();
        }
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
    }
    // 2. make the new names durable before an index names them.
    for dir in touched_dirs.iter().rev() {
        sync_dir(dir)?;
    }
    sync_dir(&tree)?;

    // 3. the index, last.
    task.set_message("index");
    let previous = current_index(&tree)?;
    let text = read_index_blob(publisher, &snapshot.index_blob)?;
    let index = PackagesIndex::parse(&text, Path::new(&snapshot.index_blob)).map_err(|e| {
        PublishError::BadIndex {
            blob: snapshot.index_blob.clone(),
            message: e.to_string(),
        }
    })?;
    let now_ts = now.max(0) as u64;
    let timestamp = match &previous {
        Some((ts, _)) if *ts + CLIENT_TIMESTAMP_TOLERANCE >= now_ts => {
            ts + CLIENT_TIMESTAMP_TOLERANCE + 1
        }
        _ => now_ts,
    };
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    index::write_index_files(&tree, &index, timestamp, true)?;
    sync_dir(&tree)?;
    report.index_timestamp = timestamp;

    // GC bookkeeping: what the new index dropped, and what it names again.
    let tree_key = tree.to_string_lossy().into_owned();
    let new_paths: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    if let Some((_, old_paths)) = &previous {
        let dropped: Vec<String> = old_paths
            .iter()
            .filter(|p| !new_paths.contains(p.as_str()))
            .cloned()
            .collect();
        report.newly_unreferenced = dropped.len();
        db.add_mirror_orphans(&tree_key, &dropped, now)?;
    }
    let revived: Vec<String> = db
        .mirror_orphans(&tree_key)?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| new_paths.contains(p.as_str()))
        .collect();
    db.remove_mirror_orphans(&tree_key, &revived)?;
    db.record_mirror_tree(&MirrorTreeRow {
        tree: tree_key,
        profile: profile.to_string(),
        channel: channel.to_string(),
        snapshot_id,
        index_timestamp: timestamp as i64,
        published_at: now,
    })?;
    report.elapsed = started.elapsed();
    tracing::info!(
        "published snapshot {snapshot_id} to {} ({} packages: {} linked, {} copied, {} present) in {:?}",
        tree.display(),
        report.packages,
        report.linked,
        report.copied,
        report.already_present,
        report.elapsed
    );
    Ok(report)
}

/// What a client would find wrong in a tree: for the visible `Packages` and `Packages.gz`,
/// every PATH must exist with the index's SIZE and MD5. Returns the problems (empty: the
/// tree is consistent) and the paths `Packages` names.
pub fn verify_tree(tree: &Path) -> Result<(Vec<String>, Vec<String>), PublishError> {
    let mut problems = Vec::new();
    let plain_path = tree.join(index::PACKAGES_FILE);
    let plain = PackagesIndex::read(&plain_path)?;
    let gz_path = tree.join(index::PACKAGES_GZ_FILE);
    let mut indexes = vec![("Packages", plain.clone())];
    match File::open(&gz_path) {
        Ok(file) => {
            let mut text = String::new();
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .map_err(PublishError::io(&gz_path))?;
            indexes.push(("Packages.gz", PackagesIndex::parse(&text, &gz_path)?));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(PublishError::Io {
                path: gz_path,
                source,
            })
        }
    }
    let mut checked: HashSet<(String, String, String)> = HashSet::new();
    for (which, idx) in &indexes {
        for entry in &idx.entries {
            let path = entry.path().to_string();
            let size = entry.value("SIZE").to_string();
            let md5 = entry.value("MD5").to_string();
            if !checked.insert((path.clone(), size.clone(), md5.clone())) {
                continue;
            }
            let file = tree.join(&path);
            match fs::read(&file) {
                Ok(bytes) => {
                    if bytes.len().to_string() != size {
                        problems.push(format!(
                            "{which}: {path}: size {} but the index says {size}",
                            bytes.len()
                        ));
                    } else if hex::encode(md5::Md5::digest(&bytes)) != md5 {
                        problems.push(format!("{which}: {path}: MD5 differs from the index"));
                    }
                }
                Err(e) => problems.push(format!("{which}: {path}: {e}")),
            }
        }
    }
    let paths = plain.entries.iter().map(|e| e.path().to_string()).collect();
    Ok((problems, paths))
}
