//! Incremental indexing of a PKGDIR, with the entries `emaint binhost --fix` writes.
//!
//! A file whose PATH, SIZE and MTIME match an entry of the existing index (which has
//! its MD5 and SHA1) keeps that entry: one `lstat` per file, no reading. Other files are
//! read (metadata, signature when a keyring is given) and hashed, on several threads.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use md5::Digest;

use super::depstr;
use super::packages::{is_allowed_entry_key, Entry, PackagesIndex, VERSION};
use super::quick::{self, EntryKeys};
use super::write::{gz_is_consistent, write_index_files, PACKAGES_FILE, PACKAGES_GZ_FILE};
use super::IndexError;
use crate::binpkg::{self, Metadata};
use crate::sign::Keyring;

/// How to (re)build a PKGDIR's index.
#[derive(Default)]
pub struct IndexOptions<'a> {
    /// When given, every package must be signed, with good signatures from this
    /// keyring; others are left out and reported (like Portage with
    /// FEATURES=binpkg-request-signature: xpak/tbz2 packages are left out too).
    /// Packages reused from the existing index were checked when they were indexed.
    pub keyring: Option<&'a Keyring>,
    /// `URI` header: where clients fetch packages when not beside the index.
    /// None removes it (as Portage does without PORTAGE_BINHOST_HEADER_URI).
    pub uri: Option<String>,
    /// `TTL` header in seconds. None removes it.
    pub ttl: Option<u64>,
    /// Header keys to set (profile keys: ARCH, CHOST, USE, IUSE_IMPLICIT, PROFILE, ...);
    /// an empty value removes the key. Keys not named here keep their value from the
    /// existing index. VERSION, TIMESTAMP and PACKAGES are always computed.
    pub header_overrides: BTreeMap<String, String>,
    /// Do not write `Packages.gz` (and remove a stale one), as Portage does without
    /// FEATURES=compress-index. Portage's default is to write it.
    pub no_compress: bool,
    /// Re-read and re-hash every package even when the index has a matching entry.
    pub reindex_all: bool,
    /// Write the files even when nothing changed.
    pub force_write: bool,
    /// Threads reading and hashing packages; 0 means one per available core.
    pub threads: usize,
    /// Told about every package read (the ones the existing index describes are not read).
    pub progress: crate::progress::Progress,
}

/// A package left out of the index, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// Path relative to PKGDIR.
    pub path: String,
    pub reason: String,
}

/// What an update did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexReport {
    /// Entries in the index now.
    pub entries: usize,
    /// Entries kept from the existing index without reading the package.
    pub reused: usize,
    /// Packages read this time (new or changed), relative paths.
    pub added: Vec<String>,
    /// Entries dropped because their file is gone or changed (relative paths).
    pub removed: Vec<String>,
    pub rejected: Vec<Rejected>,
    /// Whether `Packages` (and `Packages.gz`) were written.
    pub written: bool,
    /// The TIMESTAMP of the index on disk after the update (None if there is none).
    pub timestamp: Option<u64>,
    /// Why the existing index could not be used (then everything was re-read).
    pub previous_index_problem: Option<String>,
}

/// Where package metadata comes from. The default reads the binpkg with
/// [`crate::binpkg::read`] (or [`crate::binpkg::verify`] with a keyring); a publisher
/// that already has the metadata can supply it another way.
pub trait MetadataSource: Sync {
    /// The package's metadata, or why it must be left out of the index.
    fn metadata(&self, path: &Path, keyring: Option<&Keyring>) -> Result<Metadata, String>;
}

/// Reads metadata from the binpkg files themselves.
pub struct BinpkgFiles;

impl MetadataSource for BinpkgFiles {
    fn metadata(&self, path: &Path, keyring: Option<&Keyring>) -> Result<Metadata, String> {
        let pkg = match keyring {
            Some(keyring) => binpkg::verify(path, keyring),
            None => binpkg::read(path),
        };
        pkg.map(|p| p.metadata).map_err(|e| e.to_string())
    }
}

/// Brings `pkgdir/Packages` (and `Packages.gz`) up to date with the binpkgs under
/// `pkgdir`, reading packages with [`BinpkgFiles`].
pub fn update_pkgdir(pkgdir: &Path, options: &IndexOptions<'_>) -> Result<IndexReport, IndexError> {
    update_pkgdir_using(pkgdir, options, &BinpkgFiles)
}

/// Package files Portage indexes: legacy xpak (`.tbz2`, `.xpak`) and gpkg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Tbz2,
    Xpak,
    Gpkg,
}

impl FileKind {
    fn of(name: &str) -> Option<(FileKind, &str)> {
        if let Some(stem) = name.strip_suffix(".gpkg.tar") {
            Some((FileKind::Gpkg, stem))
        } else if let Some(stem) = name.strip_suffix(".xpak") {
            Some((FileKind::Xpak, stem))
        } else {
            name.strip_suffix(".tbz2")
                .map(|stem| (FileKind::Tbz2, stem))
        }
    }
}

/// A package file found in PKGDIR, with what one lstat said.
struct Found {
    /// Relative to PKGDIR, `/`-separated.
    rel: String,
    kind: FileKind,
    size: u64,
    mtime: i64,
}

/// Same as [`update_pkgdir`], with package metadata from `source`.
pub fn update_pkgdir_using(
    pkgdir: &Path,
    options: &IndexOptions<'_>,
    source: &dyn MetadataSource,
) -> Result<IndexReport, IndexError> {
    update(pkgdir, options, source, None)
}

/// Reads the index file; None when there is none.
fn read_index_text(path: &Path) -> Result<Option<String>, IndexError> {
    match std::fs::read(path) {
        // Portage reads with errors="replace": stray bytes do not stop it either.
        Ok(bytes) => Ok(Some(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IndexError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The update; `unusable_index` says the existing index was found broken (so it is
/// ignored, and everything is read).
fn update(
    pkgdir: &Path,
    options: &IndexOptions<'_>,
    source: &dyn MetadataSource,
    unusable_index: Option<String>,
) -> Result<IndexReport, IndexError> {
    let started = std::time::Instant::now();
    let index_path = pkgdir.join(PACKAGES_FILE);
    let index_path_gz = pkgdir.join(PACKAGES_GZ_FILE);
    let mut report = IndexReport {
        previous_index_problem: unusable_index.clone(),
        ..IndexReport::default()
    };
    let text = match unusable_index {
        Some(_) => None,
        None => read_index_text(&index_path)?,
    };
    // The quick pass suffices when nothing changed; otherwise the full parse is needed.
    let quick = text.as_deref().and_then(quick::scan);
    let parsed_early = match (&text, &quick) {
        (Some(text), None) => match PackagesIndex::parse(text, &index_path) {
            Ok(index) => Some(index),
            Err(e) => return update(pkgdir, options, source, Some(e.to_string())),
        },
        _ => None,
    };
    let old_keys: Vec<EntryKeys<'_>> = match (&quick, &parsed_early) {
        (Some(q), _) => q.entries.clone(),
        (None, Some(index)) => index.entries.iter().map(EntryKeys::of).collect(),
        (None, None) => Vec::new(),
    };
    let old_header: Option<Vec<(&str, &str)>> = match (&quick, &parsed_early) {
        (Some(q), _) => Some(q.header.clone()),
        (None, Some(index)) => Some(
            index
                .header
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        ),
        (None, None) => None,
    };
    let old_timestamp: Option<u64> = old_header
        .as_ref()
        .and_then(|h| h.iter().find(|(k, _)| *k == "TIMESTAMP"))
        .and_then(|(_, v)| v.parse().ok());
    tracing::debug!(elapsed = ?started.elapsed(), "read the existing index");

    let found = scan_pkgdir(pkgdir, options.threads)?;
    tracing::debug!(elapsed = ?started.elapsed(), files = found.len(), "scanned PKGDIR");

    // Existing entries by PATH; Portage's old layout without PATH means `<CPV>.tbz2`.
    let mut by_path: HashMap<Cow<'_, str>, Vec<usize>> = HashMap::with_capacity(old_keys.len());
    for (i, keys) in old_keys.iter().enumerate() {
        let path = match keys.path.filter(|p| !p.is_empty()) {
            Some(p) => Cow::Borrowed(p),
            None => Cow::Owned(format!("{}.tbz2", keys.cpv)),
        };
        by_path.entry(path).or_default().push(i);
    }

    // (entry number in the existing index, path the file was found under)
    let mut reused_slots: Vec<(usize, &str)> = Vec::new();
    let mut to_read: Vec<&Found> = Vec::new();
    for file in &found {
        if options.keyring.is_some() && file.kind != FileKind::Gpkg {
            report.rejected.push(Rejected {
                path: file.rel.clone(),
                reason: "xpak package: cannot be signed, and signatures are required".into(),
            });
            continue;
        }
        let reusable = (!options.reindex_all)
            .then(|| by_path.get(file.rel.as_str()))
            .flatten()
            .and_then(|candidates| {
                candidates.iter().copied().find(|&i| {
                    let keys = &old_keys[i];
                    keys.hashed
                        && keys.mtime.and_then(|m| m.parse::<i64>().ok()) == Some(file.mtime)
                        && keys.size.and_then(|s| s.parse::<u64>().ok()) == Some(file.size)
                })
            });
        match reusable {
            Some(i) => reused_slots.push((i, file.rel.as_str())),
            None => to_read.push(file),
        }
    }
    report.rejected.sort_by(|a, b| a.path.cmp(&b.path));

    // Old entries keep their order (Portage keeps its index order for them); new ones
    // follow, by CPV then BUILD_ID, and the writer's stable sort by CPV interleaves them.
    reused_slots.sort_unstable();
    let old_header_map: Option<BTreeMap<String, String>> = old_header.as_ref().map(|h| {
        h.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    });
    let header = compose_header(old_header_map.as_ref(), options);

    // Fast path of a warm run: every old entry still matches its file, nothing to read.
    if let Some(old_header) = &old_header_map {
        let all_current = to_read.is_empty()
            && reused_slots.len() == old_keys.len()
            && reused_slots
                .iter()
                .all(|&(i, rel)| old_keys[i].path == Some(rel))
            && significant_header(old_header) == significant_header(&header);
        if all_current
            && !options.force_write
            && gz_is_consistent(&index_path, &index_path_gz, !options.no_compress)?
        {
            report.entries = old_keys.len();
            report.reused = old_keys.len();
            report.timestamp = old_timestamp;
            tracing::debug!(elapsed = ?started.elapsed(), "index is current");
            return Ok(report);
        }
    }

    // Something changed: the old entries are needed in full.
    let parsed_late = match (&text, &parsed_early) {
        (Some(text), None) => match PackagesIndex::parse(text, &index_path) {
            Ok(index) => Some(index),
            Err(e) => return update(pkgdir, options, source, Some(e.to_string())),
        },
        _ => None,
    };
    let previous: Option<&PackagesIndex> = parsed_early.as_ref().or(parsed_late.as_ref());

    let mut entries: Vec<Entry> = Vec::with_capacity(reused_slots.len() + to_read.len());
    if let Some(prev) = previous {
        for &(i, rel) in &reused_slots {
            let mut entry = prev.entries[i].clone();
            entry.fields.retain(|k, _| is_allowed_entry_key(k));
            // Old indexes without PATH: record where the file is, as Portage does.
            if entry.get("PATH") != Some(rel) {
                entry.set("PATH", rel);
            }
            entries.push(entry);
        }
        let reused: HashSet<usize> = reused_slots.iter().map(|&(i, _)| i).collect();
        for (i, entry) in prev.entries.iter().enumerate() {
            if !reused.contains(&i) {
                let path = entry
                    .get("PATH")
                    .filter(|p| !p.is_empty())
                    .map_or_else(|| format!("{}.tbz2", entry.cpv()), str::to_owned);
                report.removed.push(path);
            }
        }
    }
    report.reused = reused_slots.len();

    tracing::debug!(elapsed = ?started.elapsed(), to_read = to_read.len(), "matched files to entries");
    let results = read_packages(pkgdir, &to_read, options, source);
    tracing::debug!(elapsed = ?started.elapsed(), "read new packages");
    let mut new_entries = Vec::new();
    for (file, result) in to_read.iter().zip(results) {
        match result {
            Ok(entry) => {
                report.added.push(file.rel.clone());
                new_entries.push(entry);
            }
            Err(reason) => report.rejected.push(Rejected {
                path: file.rel.clone(),
                reason,
            }),
        }
    }
    new_entries
        .sort_by(|a, b| (a.cpv(), a.build_id(), a.path()).cmp(&(b.cpv(), b.build_id(), b.path())));
    entries.extend(new_entries);
    // A changed file was both removed (old entry) and added (new one): report it once,
    // as added.
    let added: HashSet<&str> = report.added.iter().map(String::as_str).collect();
    report.removed.retain(|p| !added.contains(p.as_str()));
    report.removed.sort();
    report.rejected.sort_by(|a, b| a.path.cmp(&b.path));

    let index = PackagesIndex { header, entries };
    report.entries = index.entries.len();

    let unchanged = previous.is_some_and(|prev| same_content(prev, &index))
        && gz_is_consistent(&index_path, &index_path_gz, !options.no_compress)?;
    if unchanged && !options.force_write {
        report.timestamp = old_timestamp;
        return Ok(report);
    }

    // Clients keep their cached index while TIMESTAMP is unchanged: never reuse one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let timestamp = match old_timestamp {
        Some(t) if t >= now => t + 1,
        _ => now,
    };
    write_index_files(pkgdir, &index, timestamp, !options.no_compress)?;
    tracing::debug!(elapsed = ?started.elapsed(), "wrote the index");
    report.written = true;
    report.timestamp = Some(timestamp);
    Ok(report)
}

/// Header keys that make a difference: all but TIMESTAMP and PACKAGES, and not empty.
fn significant_header(header: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    header
        .iter()
        .filter(|(k, v)| k.as_str() != "TIMESTAMP" && k.as_str() != "PACKAGES" && !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Whether writing `new` would give the same file as `old` (the index on disk), TIMESTAMP
/// and PACKAGES aside, counting the old entries' keys as Portage reads them.
fn same_content(old: &PackagesIndex, new: &PackagesIndex) -> bool {
    let significant = |h: &BTreeMap<String, String>| -> Vec<(String, String)> {
        h.iter()
            .filter(|(k, v)| k.as_str() != "TIMESTAMP" && k.as_str() != "PACKAGES" && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if significant(&old.header) != significant(&new.header)
        || old.entries.len() != new.entries.len()
    {
        return false;
    }
    old.written_order()
        .into_iter()
        .zip(new.written_order())
        .all(|(o, n)| {
            old.written_fields(o)
                .filter(|(k, _)| is_allowed_entry_key(k))
                .eq(new.written_fields(n))
        })
}

/// Header from the existing index, updated the way Portage updates it.
fn compose_header(
    previous: Option<&BTreeMap<String, String>>,
    options: &IndexOptions<'_>,
) -> BTreeMap<String, String> {
    let mut header: BTreeMap<String, String> = previous.cloned().unwrap_or_default();
    header.remove("TIMESTAMP");
    header.remove("PACKAGES");
    for (key, value) in &options.header_overrides {
        if value.is_empty() {
            header.remove(key);
        } else {
            header.insert(key.clone(), value.clone());
        }
    }
    header.insert("VERSION".into(), VERSION.to_string());
    match &options.uri {
        Some(uri) if !uri.is_empty() => header.insert("URI".into(), uri.clone()),
        _ => header.remove("URI"),
    };
    match options.ttl {
        Some(ttl) => header.insert("TTL".into(), ttl.to_string()),
        None => header.remove("TTL"),
    };
    header
}

/// How many worker threads to use for `jobs` pieces of work.
fn thread_count(requested: usize, jobs: usize) -> usize {
    let wanted = match requested {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    wanted.clamp(1, jobs.max(1))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Every package file under `pkgdir`, in no particular order: regular files only
/// (Portage lstat's and skips the rest), symlinked directories not followed, names that
/// are not UTF-8 skipped. The directories below the top are shared among threads:
/// directory reads dominate a warm run.
fn scan_pkgdir(pkgdir: &Path, threads: usize) -> Result<Vec<Found>, IndexError> {
    let mut found = Vec::new();
    let mut top_dirs = Vec::new();
    scan_dir(pkgdir, "", &mut found, &mut top_dirs)?;
    let next = AtomicUsize::new(0);
    let walk_share = || -> Result<Vec<Found>, IndexError> {
        let mut files = Vec::new();
        let mut pending = Vec::new();
        while let Some((dir, rel)) = top_dirs.get(next.fetch_add(1, Ordering::Relaxed)) {
            scan_dir(dir, rel, &mut files, &mut pending)?;
            while let Some((dir, rel)) = pending.pop() {
                scan_dir(&dir, &rel, &mut files, &mut pending)?;
            }
        }
        Ok(files)
    };
    let shares: Vec<std::thread::Result<Result<Vec<Found>, IndexError>>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = (1..thread_count(threads, top_dirs.len()))
                .map(|_| scope.spawn(walk_share))
                .collect();
            let mut shares = vec![Ok(walk_share())];
            shares.extend(workers.into_iter().map(|w| w.join()));
            shares
        });
    for share in shares {
        match share {
            Ok(files) => found.extend(files?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    Ok(found)
}

/// Lists one directory: package files into `files`, subdirectories into `dirs`.
fn scan_dir(
    dir: &Path,
    rel: &str,
    files: &mut Vec<Found>,
    dirs: &mut Vec<(PathBuf, String)>,
) -> Result<(), IndexError> {
    for item in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let item = item.map_err(io_error(dir))?;
        let file_type = item.file_type().map_err(io_error(&item.path()))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let child_rel = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        if file_type.is_dir() {
            dirs.push((item.path(), child_rel));
        } else if file_type.is_file() {
            let Some((kind, _)) = FileKind::of(name) else {
                continue;
            };
            let meta = item.metadata().map_err(io_error(&item.path()))?;
            files.push(Found {
                rel: child_rel,
                kind,
                size: meta.len(),
                mtime: meta.mtime(),
            });
        }
    }
    Ok(())
}

/// Reads and hashes `files` on worker threads; results are in the order of `files`.
fn read_packages(
    pkgdir: &Path,
    files: &[&Found],
    options: &IndexOptions<'_>,
    source: &dyn MetadataSource,
) -> Vec<Result<Entry, String>> {
    if files.is_empty() {
        return Vec::new();
    }
    let threads = thread_count(options.threads, files.len());
    let task = options.progress.task(
        "reading packages",
        crate::progress::Unit::Items,
        Some(files.len() as u64),
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Entry, String>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = files.get(i) else { break };
                let result = index_one(pkgdir, file, options.keyring, source);
                if let Ok(mut slots) = results.lock() {
                    slots[i] = Some(result);
                }
                task.set_message(&file.rel);
                task.advance(1);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not read (worker thread failed)".into())))
        .collect()
}

/// Metadata keys Portage copies from a binpkg into its index entry (its "aux cache"
/// keys; hashes, SIZE and MTIME come from the file itself).
const METADATA_KEYS: [&str; 20] = [
    "BDEPEND",
    "BUILD_ID",
    "BUILD_TIME",
    "CHOST",
    "DEFINED_PHASES",
    "DEPEND",
    "EAPI",
    "IDEPEND",
    "IUSE",
    "KEYWORDS",
    "LICENSE",
    "PDEPEND",
    "PROPERTIES",
    "PROVIDES",
    "RDEPEND",
    "REQUIRES",
    "RESTRICT",
    "SLOT",
    "USE",
    "USER_PATCHES",
];

/// Keys whose USE conditionals Portage resolves with the package's USE.
const USE_EVALUATED_KEYS: [&str; 8] = [
    "BDEPEND",
    "DEPEND",
    "IDEPEND",
    "LICENSE",
    "RDEPEND",
    "PDEPEND",
    "PROPERTIES",
    "RESTRICT",
];

fn index_one(
    pkgdir: &Path,
    file: &Found,
    keyring: Option<&Keyring>,
    source: &dyn MetadataSource,
) -> Result<Entry, String> {
    let full = pkgdir.join(&file.rel);
    let metadata = source.metadata(&full, keyring)?;
    let mut entry = entry_from_metadata(&file.rel, file.kind, &metadata)?;
    let (md5, sha1, size, mtime) =
        hash_file(&full).map_err(|e| format!("reading for hashes: {e}"))?;
    entry.set("MD5", md5);
    entry.set("SHA1", sha1);
    entry.set("SIZE", size.to_string());
    entry.set("MTIME", mtime.to_string());
    Ok(entry)
}

/// Portage's value normalisation: whitespace runs become one space, ends trimmed.
fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks a package's name and place as Portage does, and builds its entry (without
/// the file's hashes, SIZE and MTIME).
fn entry_from_metadata(rel: &str, kind: FileKind, metadata: &Metadata) -> Result<Entry, String> {
    let get = |key: &str| metadata.get(key).map(normalize).unwrap_or_default();
    let category = get("CATEGORY");
    let pf = get("PF");
    let slot = get("SLOT");
    let missing: Vec<&str> = [("CATEGORY", &category), ("PF", &pf), ("SLOT", &slot)]
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing metadata key(s): {}; this binary package is not recoverable",
            missing.join(", ")
        ));
    }

    let (dir, file_name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let (_, stem) = FileKind::of(file_name).ok_or("not a package file name")?;
    let name_build_id = build_id_in_name(stem);
    let multi_instance = match kind {
        FileKind::Xpak => {
            if name_build_id.is_none_or(|id| stem != format!("{pf}-{id}")) {
                return Err(format!("file name is not {pf}-<BUILD_ID>.xpak"));
            }
            true
        }
        FileKind::Gpkg => match name_build_id {
            Some(id) => {
                if stem != format!("{pf}-{id}") {
                    return Err(format!("file name is not {pf}-{id}.gpkg.tar"));
                }
                true
            }
            None => {
                if stem != pf {
                    return Err(format!("file name is not {pf}.gpkg.tar"));
                }
                false
            }
        },
        FileKind::Tbz2 => {
            if stem != pf {
                return Err(format!("file name is not {pf}.tbz2"));
            }
            false
        }
    };

    let build_id = match metadata
        .get("BUILD_ID")
        .map(normalize)
        .filter(|v| !v.is_empty())
    {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| format!("invalid BUILD_ID {v:?} in metadata"))?,
        ),
        None => None,
    };

    if multi_instance {
        let pn = crate::atom::split_pf(&pf).ok().map(|(pn, _)| pn);
        if pn.is_none_or(|pn| dir != format!("{category}/{pn}")) {
            return Err(format!(
                "multi-instance package must be in {category}/<PN>/, found in {dir:?}"
            ));
        }
    } else if dir != category && dir != "All" {
        return Err(format!(
            "package must be in {category}/ or All/, found in {dir:?}"
        ));
    }
    if !valid_category(&category) {
        return Err(format!("invalid category {category:?}"));
    }

    let mut entry = Entry::default();
    for key in METADATA_KEYS {
        let value = get(key);
        if !value.is_empty() {
            entry.set(key, value);
        }
    }
    let repo = get("repository");
    if !repo.is_empty() {
        entry.set("REPO", repo);
    }
    match build_id {
        Some(id) => entry.set("BUILD_ID", id.to_string()),
        None => {
            entry.fields.remove("BUILD_ID");
        }
    }
    entry.set("CPV", format!("{category}/{pf}"));
    entry.set("PATH", rel);

    let use_flags_text = entry.value("USE").to_owned();
    let use_flags: HashSet<&str> = use_flags_text.split_whitespace().collect();
    for key in USE_EVALUATED_KEYS {
        if let Some(value) = entry.fields.get_mut(key) {
            let reduced = depstr::reduce(value, &use_flags, key.ends_with("DEPEND"))
                .map_err(|e| format!("invalid {key}: {e}"))?;
            *value = reduced;
        }
    }
    Ok(entry)
}

/// BUILD_ID from a file stem `<PF>-<N>`, when what precedes `-<N>` is a valid PF.
fn build_id_in_name(stem: &str) -> Option<u64> {
    let (pf, id) = stem.rsplit_once('-')?;
    crate::atom::split_pf(pf).ok()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok().filter(|&n| n > 0)
}

fn valid_category(category: &str) -> bool {
    let mut chars = category.chars();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    chars.next().is_some_and(word) && chars.all(|c| word(c) || matches!(c, '-' | '.' | '+'))
}

/// MD5 and SHA1 (lower-case hex) of a file in one pass, with its size and mtime.
fn hash_file(path: &Path) -> std::io::Result<(String, String, u64, i64)> {
    let mut file = File::open(path)?;
    let mut md5 = md5::Md5::new();
    let mut sha1 = sha1::Sha1::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha1.update(&buffer[..n]);
    }
    let meta = file.metadata()?;
    Ok((
        hex::encode(md5.finalize()),
        hex::encode(sha1.finalize()),
        meta.len(),
        meta.mtime(),
    ))
}
