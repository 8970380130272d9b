//! Making snapshots: which blobs, their entries (CPV, BUILD_ID, SLOT, PATH), and the
//! `Packages` index, stored as a blob.
//!
//! The index is written by [`crate::index`] over a staging directory of hard links to the
//! blobs, seeded with the profile's previous snapshot index: packages already in it are not
//! read or hashed again (same PATH, SIZE and MTIME), new ones are read once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::atom::Cpv;
use crate::binpkg::{self, Metadata, SignatureStatus};
use crate::index::{self, IndexOptions, MetadataSource};
use crate::profile::Profile;
use crate::sign::Keyring;
use crate::store::{Db, RequestKind, SnapshotEntry, SnapshotOrigin, StepState};

use super::header::profile_header;
use super::{channel, PublishError, Publisher};

/// Snapshot ids are the database row ids.
pub type SnapshotId = i64;

/// Where a snapshot comes from (recorded with it).
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub origin: SnapshotOrigin,
    pub request_id: Option<i64>,
    pub based_on: Option<SnapshotId>,
    pub note: Option<String>,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            origin: SnapshotOrigin::Import,
            request_id: None,
            based_on: None,
            note: None,
        }
    }
}

/// How to make a snapshot of a finished request.
#[derive(Debug, Clone, Default)]
pub struct RequestSnapshotOptions {
    /// Steps without a package (failed, blocked, cancelled) are normally an error. With
    /// this, they are left out; a nightly then keeps the `testing` snapshot's package of
    /// the same category/PN and SLOT, if it has one.
    pub allow_incomplete: bool,
    pub note: Option<String>,
}

/// A package of a snapshot-in-making: its entry and, when it was read now, its metadata.
struct Described {
    entry: SnapshotEntry,
    metadata: Option<Metadata>,
}

/// `<category>/<pn>` and the SLOT without sub-slot: what a replacement matches on.
fn replace_key(entry: &SnapshotEntry) -> (String, String) {
    let cp = Cpv::parse(&entry.cpv)
        .map(|c| c.cp())
        .unwrap_or_else(|_| entry.cpv.clone());
    let slot = entry.slot.split('/').next().unwrap_or("0").to_string();
    (cp, slot)
}

/// The entry of a stored binpkg blob: from an earlier snapshot of the profile, else read.
fn describe(
    publisher: &Publisher,
    db: &Db,
    profile: &str,
    blob: &str,
) -> Result<Described, PublishError> {
    let package_error = |message: String| PublishError::Package {
        blob: blob.to_string(),
        message,
    };
    if !db.has_blob(blob)? {
        return Err(package_error("not recorded in the store".into()));
    }
    if let Some(entry) = db.known_snapshot_entry(profile, blob)? {
        return Ok(Described {
            entry,
            metadata: None,
        });
    }
    let path = publisher.store.blobs().path_of(blob)?;
    let size = std::fs::metadata(&path)
        .map_err(PublishError::io(&path))?
        .len();
    let pkg = binpkg::read(&path)?;
    if pkg.format != binpkg::Format::Gpkg {
        return Err(package_error(
            "an xpak package: snapshots hold gpkg only (xpak cannot be signed)".into(),
        ));
    }
    if pkg.signature == SignatureStatus::Unsigned && !publisher.allow_unsigned {
        return Err(package_error(
            "unsigned: nodes require signatures; sign it before it goes into a snapshot".into(),
        ));
    }
    let get = |key: &str| {
        pkg.metadata
            .get(key)
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|v| !v.is_empty())
    };
    let category = get("CATEGORY").ok_or_else(|| package_error("no CATEGORY".into()))?;
    let pf = get("PF").ok_or_else(|| package_error("no PF".into()))?;
    let slot = get("SLOT").ok_or_else(|| package_error("no SLOT".into()))?;
    let build_id: i64 = get("BUILD_ID")
        .and_then(|v| v.parse().ok())
        .filter(|&n: &i64| n > 0)
        .ok_or_else(|| {
            package_error("no BUILD_ID: published names must be <pf>-<build_id>".into())
        })?;
    let cpv = Cpv::from_pf(&category, &pf)
        .map_err(|e| package_error(format!("CATEGORY/PF {category}/{pf}: {e}")))?;
    let top = format!("{pf}-{build_id}");
    if pkg.top_dir.as_deref() != Some(top.as_str()) {
        return Err(package_error(format!(
            "top directory {:?} does not match PF and BUILD_ID ({top})",
            pkg.top_dir.unwrap_or_default()
        )));
    }
    Ok(Described {
        entry: SnapshotEntry {
            path: format!("{category}/{}/{top}.gpkg.tar", cpv.pn()),
            cpv: cpv.to_string(),
            slot,
            build_id,
            blob: blob.to_string(),
            size,
        },
        metadata: Some(pkg.metadata),
    })
}

/// Metadata already read, by staged path; anything else is read from the file.
struct KnownMetadata {
    by_path: Mutex<HashMap<PathBuf, Metadata>>,
}

impl MetadataSource for KnownMetadata {
    fn metadata(&self, path: &Path, keyring: Option<&Keyring>) -> Result<Metadata, String> {
        let known = self
            .by_path
            .lock()
            .ok()
            .and_then(|mut map| map.remove(path));
        match known {
            Some(m) => Ok(m),
            None => index::BinpkgFiles.metadata(path, keyring),
        }
    }
}

/// Makes a snapshot of `profile` holding exactly the binpkg blobs `blobs` (stored and
/// recorded, signed gpkg). Returns its id. It is not published anywhere yet.
pub fn create_snapshot(
    publisher: &Publisher,
    db: &mut Db,
    profile: &Profile,
    blobs: &[String],
    options: &SnapshotOptions,
    now: i64,
) -> Result<SnapshotId, PublishError> {
    super::check_name("profile", &profile.name)?;
    let mut seen = HashSet::new();
    let mut described = Vec::with_capacity(blobs.len());
    for blob in blobs {
        if seen.insert(blob.as_str()) {
            described.push(describe(publisher, db, &profile.name, blob)?);
        }
    }
    insert_described(publisher, db, profile, described, options, now)
}

fn insert_described(
    publisher: &Publisher,
    db: &mut Db,
    profile: &Profile,
    described: Vec<Described>,
    options: &SnapshotOptions,
    now: i64,
) -> Result<SnapshotId, PublishError> {
    let mut paths = HashSet::new();
    for d in &described {
        if !paths.insert(d.entry.path.as_str()) {
            return Err(PublishError::DuplicatePath {
                path: d.entry.path.clone(),
            });
        }
    }
    let staging_root = publisher.staging_dir();
    std::fs::create_dir_all(&staging_root).map_err(PublishError::io(&staging_root))?;
    let staging = tempfile::Builder::new()
        .prefix("snapshot-")
        .tempdir_in(&staging_root)
        .map_err(PublishError::io(&staging_root))?;
    let dir = staging.path();

    let mut known = HashMap::new();
    let mut entries = Vec::with_capacity(described.len());
    for d in described {
        let staged = dir.join(&d.entry.path);
        let blob_path = publisher.store.blobs().path_of(&d.entry.blob)?;
        super::local::link_or_copy(&blob_path, &staged, super::LinkMode::Hardlink)?;
        if let Some(m) = d.metadata {
            known.insert(staged, m);
        }
        entries.push(d.entry);
    }
    // The previous index of the profile: its entries for unchanged files are reused.
    if let Some(previous) = db.list_snapshots(Some(&profile.name))?.last() {
        let text = read_index_blob(publisher, &previous.index_blob)?;
        let seed = dir.join(index::PACKAGES_FILE);
        std::fs::write(&seed, text).map_err(PublishError::io(&seed))?;
    }
    let index_options = IndexOptions {
        keyring: None,
        uri: None,
        ttl: publisher.ttl.filter(|&t| t > 0),
        header_overrides: profile_header(profile),
        no_compress: true,
        reindex_all: false,
        force_write: true,
        threads: 0,
        progress: publisher.progress.clone(),
    };
    let source = KnownMetadata {
        by_path: Mutex::new(known),
    };
    let report = index::update_pkgdir_using(dir, &index_options, &source)?;
    if let Some(rejected) = report.rejected.first() {
        let blob = entries
            .iter()
            .find(|e| e.path == rejected.path)
            .map(|e| e.blob.clone())
            .unwrap_or_default();
        return Err(PublishError::Package {
            blob,
            message: format!("{}: not indexable: {}", rejected.path, rejected.reason),
        });
    }
    if report.entries != entries.len() {
        return Err(PublishError::BadIndex {
            blob: String::new(),
            message: format!(
                "the index has {} entries for {} packages",
                report.entries,
                entries.len()
            ),
        });
    }
    let index_path = dir.join(index::PACKAGES_FILE);
    let file = std::fs::File::open(&index_path).map_err(PublishError::io(&index_path))?;
    let stored = publisher.store.blobs().put_stream(file, None, u64::MAX)?;
    db.record_blob(&stored.sha512, stored.size, "index", now)?;
    let id = db.insert_snapshot(
        &crate::store::NewSnapshot {
            profile: profile.name.clone(),
            request_id: options.request_id,
            origin: options.origin,
            based_on: options.based_on,
            note: options.note.clone(),
            index_blob: stored.sha512,
            index_timestamp: report.timestamp.unwrap_or(now.max(0) as u64) as i64,
            entries,
        },
        now,
    )?;
    tracing::info!(
        "snapshot {id} of {}: {} packages ({} index entries reused)",
        profile.name,
        report.entries,
        report.reused
    );
    Ok(id)
}

/// The `Packages` text of a snapshot index blob.
pub fn read_index_blob(publisher: &Publisher, blob: &str) -> Result<String, PublishError> {
    let path = publisher.store.blobs().path_of(blob)?;
    let bytes = std::fs::read(&path).map_err(PublishError::io(&path))?;
    String::from_utf8(bytes).map_err(|_| PublishError::BadIndex {
        blob: blob.to_string(),
        message: "not UTF-8".into(),
    })
}

/// Makes the snapshot of a finished request of `profile`:
/// - nightly: exactly the request's packages (built steps: their build's blob; cached steps:
///   the latest successful build of their fingerprint);
/// - manual rebuild: the `testing` snapshot with the request's packages replacing those of
///   the same category/PN and SLOT (added when it has none).
///
/// The snapshot is not published; see [`super::channel::publish_snapshot_to`].
pub fn snapshot_for_request(
    publisher: &Publisher,
    db: &mut Db,
    profile: &Profile,
    request_id: i64,
    options: &RequestSnapshotOptions,
    now: i64,
) -> Result<SnapshotId, PublishError> {
    request_contents(publisher, db, profile, request_id, options)?
        .insert(publisher, db, profile, now)
}

/// What a finished request leads to: a new snapshot, or none because `testing` already
/// holds exactly its packages (a nightly where nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSnapshot {
    New(SnapshotId),
    /// The snapshot `testing` points at, which has the same files with the same bytes.
    SameAsTesting(SnapshotId),
}

/// [`snapshot_for_request`], except that no snapshot is made when it would repeat the one
/// `testing` points at: a new identical snapshot would change the index (clients fetch it
/// again), take a retention place and make `rollback` a no-op.
pub fn snapshot_for_request_if_changed(
    publisher: &Publisher,
    db: &mut Db,
    profile: &Profile,
    request_id: i64,
    options: &RequestSnapshotOptions,
    now: i64,
) -> Result<RequestSnapshot, PublishError> {
    let contents = request_contents(publisher, db, profile, request_id, options)?;
    if let Some((testing, entries)) = &contents.testing {
        let proposed: BTreeMap<&str, &str> = contents
            .packages
            .iter()
            .map(|d| (d.entry.path.as_str(), d.entry.blob.as_str()))
            .collect();
        let current: BTreeMap<&str, &str> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.blob.as_str()))
            .collect();
        if proposed == current {
            return Ok(RequestSnapshot::SameAsTesting(*testing));
        }
    }
    contents
        .insert(publisher, db, profile, now)
        .map(RequestSnapshot::New)
}

/// The packages of a finished request's snapshot and how it is recorded.
struct RequestContents {
    packages: Vec<Described>,
    options: SnapshotOptions,
    /// The snapshot `testing` pointed at, and its entries.
    testing: Option<(SnapshotId, Vec<SnapshotEntry>)>,
}

impl RequestContents {
    /// Makes the snapshot of these packages.
    fn insert(
        self,
        publisher: &Publisher,
        db: &mut Db,
        profile: &Profile,
        now: i64,
    ) -> Result<SnapshotId, PublishError> {
        insert_described(publisher, db, profile, self.packages, &self.options, now)
    }
}

fn request_contents(
    publisher: &Publisher,
    db: &mut Db,
    profile: &Profile,
    request_id: i64,
    options: &RequestSnapshotOptions,
) -> Result<RequestContents, PublishError> {
    let request = db.request(request_id)?;
    if request.profile != profile.name {
        return Err(PublishError::RequestProfile {
            request_id,
            actual: request.profile,
            expected: profile.name.clone(),
        });
    }
    let packages = db.request_packages(request_id)?;
    let missing: Vec<String> = packages
        .iter()
        .filter(|p| p.binpkg.is_none())
        .map(|p| {
            let why = match p.state {
                StepState::Succeeded | StepState::Cached => "no stored binpkg",
                other => other.as_str(),
            };
            format!("{} ({why})", p.cpv)
        })
        .collect();
    if !missing.is_empty() && !options.allow_incomplete {
        return Err(PublishError::IncompleteRequest {
            request_id,
            missing: missing.join(", "),
        });
    }
    let testing = db.channel(&profile.name, channel::TESTING)?;
    let base: Vec<SnapshotEntry> = match &testing {
        Some(ch) => db.snapshot_entries(ch.snapshot_id)?,
        None => Vec::new(),
    };

    let mut new: Vec<Described> = Vec::new();
    let mut seen = HashSet::new();
    for p in &packages {
        if let Some(binpkg) = &p.binpkg {
            if seen.insert(binpkg.sha512.clone()) {
                new.push(describe(publisher, db, &profile.name, &binpkg.sha512)?);
            }
        }
    }
    // Replacement keys of what the request brings.
    let replaced: HashSet<(String, String)> = new.iter().map(|d| replace_key(&d.entry)).collect();
    let mut chosen: BTreeMap<String, Described> = BTreeMap::new();
    let origin = match request.kind {
        RequestKind::Nightly => {
            if options.allow_incomplete {
                // Keep testing's package for what this nightly failed to produce.
                let failed: HashSet<(String, String)> = packages
                    .iter()
                    .filter(|p| p.binpkg.is_none())
                    .map(|p| {
                        let cp = Cpv::parse(&p.cpv)
                            .map(|c| c.cp())
                            .unwrap_or_else(|_| p.cpv.clone());
                        (cp, p.slot.split('/').next().unwrap_or("0").to_string())
                    })
                    .collect();
                for e in base.iter().filter(|e| failed.contains(&replace_key(e))) {
                    chosen.insert(
                        e.path.clone(),
                        Described {
                            entry: e.clone(),
                            metadata: None,
                        },
                    );
                }
            }
            SnapshotOrigin::Nightly
        }
        RequestKind::Manual => {
            for e in base.iter().filter(|e| !replaced.contains(&replace_key(e))) {
                chosen.insert(
                    e.path.clone(),
                    Described {
                        entry: e.clone(),
                        metadata: None,
                    },
                );
            }
            SnapshotOrigin::Manual
        }
    };
    for d in new {
        chosen.insert(d.entry.path.clone(), d);
    }
    let based_on = match origin {
        SnapshotOrigin::Manual => testing.as_ref().map(|c| c.snapshot_id),
        _ => None,
    };
    Ok(RequestContents {
        packages: chosen.into_values().collect(),
        options: SnapshotOptions {
            origin,
            request_id: Some(request_id),
            based_on,
            note: options.note.clone(),
        },
        testing: testing.map(|c| (c.snapshot_id, base)),
    })
}
