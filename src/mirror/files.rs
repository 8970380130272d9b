//! Files below the mirror root: resolving request paths without escapes, remembering what
//! was resolved (a request for a known file costs one `stat`, no thread hop), keeping the
//! bytes of index files (`Packages`, `Packages.gz`: every client asks for them, most
//! answers are 304s or these few bytes), and streaming other files in large chunks under
//! one memory budget for the whole server.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use headers::{ETag, LastModified};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest read per chunk, when memory is plentiful.
const CHUNK_MAX: usize = 512 * 1024;
/// Chunk sizes when the budget runs low: many clients still all make progress.
const CHUNK_MID: usize = 128 * 1024;
const CHUNK_MIN: usize = 32 * 1024;
/// Bytes read from files and not yet written to sockets, all responses together. Keeps
/// the server's memory bounded however many clients download at once.
const READ_BUDGET: usize = 64 * 1024 * 1024;
/// The budget's unit (a semaphore permit).
const PERMIT_BYTES: usize = 1024;
/// Files whose bytes are kept: not package files, and at most this big.
const KEEP_CONTENT_MAX: u64 = 8 * 1024 * 1024;
/// Bounds of the cache; past either, it starts empty again.
const KEPT_CONTENT_TOTAL: u64 = 64 * 1024 * 1024;
const ENTRIES_MAX: usize = 20_000;

/// One version of a file: publishing replaces a name by rename (new inode); a write in
/// place changes the modification and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A regular file below the root, with the response headers that describe it.
pub(super) struct FileEntry {
    /// The request path below the root.
    pub relative: PathBuf,
    /// `root/relative`, which resolved below the root to this file's inode.
    full: PathBuf,
    identity: Identity,
    pub len: u64,
    pub modified: SystemTime,
    pub etag: Option<ETag>,
    pub last_modified: LastModified,
    /// Pre-rendered `ETag` and `Last-Modified` values.
    pub etag_value: Option<HeaderValue>,
    pub last_modified_value: HeaderValue,
    /// The whole file, for index files.
    content: Option<Bytes>,
}

impl FileEntry {
    /// The whole file, when it is kept in memory.
    pub fn content(&self) -> Option<&Bytes> {
        self.content.as_ref()
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<PathBuf, Arc<FileEntry>>,
    content_bytes: u64,
}

pub(super) struct Files {
    root: PathBuf,
    cache: RwLock<Cache>,
    budget: Arc<Semaphore>,
}

impl Files {
    /// `root` must be canonical.
    pub fn new(root: PathBuf) -> Files {
        Files {
            root,
            cache: RwLock::default(),
            budget: Arc::new(Semaphore::new(READ_BUDGET / PERMIT_BYTES)),
        }
    }

    /// The regular file at `relative` (normal components only), or None when there is none
    /// below the root there.
    pub async fn lookup(&self, relative: &Path) -> Option<Arc<FileEntry>> {
        let known = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.entries.get(relative).cloned());
        if let Some(entry) = known {
            // One stat of a hot path, on the runtime thread (as nginx does in its event
            // loop): cheaper than handing the request to the blocking pool.
            if std::fs::metadata(&entry.full).is_ok_and(|m| Identity::of(&m) == entry.identity) {
                return Some(entry);
            }
        }
        let root = self.root.clone();
        let owned = relative.to_owned();
        let resolved = tokio::task::spawn_blocking(move || resolve(&root, &owned))
            .await
            .ok()
            .flatten()
            .map(Arc::new);
        if let Ok(mut cache) = self.cache.write() {
            cache.remember(relative, resolved.clone());
        }
        resolved
    }

    /// Opens `entry`'s file for sending, if it is still the version `entry` describes
    /// (else the entry is forgotten and the error is `ErrorKind::NotFound`). Blocking, but
    /// only an open and an fstat of a path just looked up.
    pub fn open(&self, entry: &FileEntry) -> std::io::Result<File> {
        let opened = open_version(entry);
        if opened.is_err() {
            self.forget(&entry.relative);
        }
        opened
    }

    /// Forgets what is known about `relative` (it changed under a request).
    pub fn forget(&self, relative: &Path) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remember(relative, None);
        }
    }

    /// The body with bytes `start..start + count` of `entry`; `bytes_sent` counts them as
    /// they are produced.
    pub fn body(
        &self,
        entry: Arc<FileEntry>,
        start: u64,
        count: u64,
        bytes_sent: Arc<AtomicU64>,
    ) -> Body {
        if let Some(content) = &entry.content {
            let (Ok(from), Ok(to)) = (usize::try_from(start), usize::try_from(start + count))
            else {
                return Body::empty();
            };
            bytes_sent.fetch_add(count, Ordering::Relaxed);
            return Body::from(content.slice(from..to));
        }
        let reader = ChunkReader {
            entry,
            file: None,
            start,
            remaining: count,
            budget: self.budget.clone(),
            bytes_sent,
        };
        Body::from_stream(futures_util::stream::unfold(reader, ChunkReader::next))
    }
}

impl Cache {
    fn remember(&mut self, relative: &Path, resolved: Option<Arc<FileEntry>>) {
        if let Some(old) = self.entries.remove(relative) {
            self.content_bytes -= old.content.as_ref().map_or(0, |c| c.len() as u64);
        }
        let Some(entry) = resolved else {
            return;
        };
        let content = entry.content.as_ref().map_or(0, |c| c.len() as u64);
        if self.entries.len() >= ENTRIES_MAX || self.content_bytes + content > KEPT_CONTENT_TOTAL {
            self.entries.clear();
            self.content_bytes = 0;
        }
        self.content_bytes += content;
        self.entries.insert(relative.to_owned(), entry);
    }
}

/// Package files are big and each is fetched by few clients at a time: they are read
/// from disk per request, not kept.
pub(super) fn is_package_file(path: &str) -> bool {
    path.ends_with(".gpkg.tar") || path.ends_with(".tbz2") || path.ends_with(".xpak")
}

/// Canonicalizes `root/relative` and refuses anything outside the root (symlinks
/// included) or not a regular file. Blocking: runs on the blocking pool.
fn resolve(root: &Path, relative: &Path) -> Option<FileEntry> {
    let full = root.join(relative);
    let canonical = full.canonicalize().ok()?;
    if !canonical.starts_with(root) {
        return None;
    }
    let file = File::open(&canonical).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let identity = Identity::of(&meta);
    let keep = meta.len() <= KEEP_CONTENT_MAX && !relative.to_str().is_some_and(is_package_file);
    let content = if keep {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // A short read means the file changed under us: serve it from disk instead.
        (&file)
            .take(meta.len())
            .read_to_end(&mut bytes)
            .ok()
            .filter(|&n| n as u64 == meta.len())
            .map(|_| Bytes::from(bytes))
    } else {
        None
    };
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let etag_text = entity_tag(meta.len(), modified);
    let etag = etag_text.parse::<ETag>().ok();
    let last_modified = LastModified::from(modified);
    let last_modified_value = HeaderValue::from_str(&httpdate::fmt_http_date(modified)).ok()?;
    Some(FileEntry {
        relative: relative.to_owned(),
        full,
        identity,
        len: meta.len(),
        modified,
        etag_value: etag
            .is_some()
            .then(|| HeaderValue::from_str(&etag_text).ok())
            .flatten(),
        etag,
        last_modified,
        last_modified_value,
        content,
    })
}

/// A strong validator from size and modification time (as nginx does): published names
/// are never rewritten with other bytes, and a re-published index gets a new mtime.
fn entity_tag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{len:x}-{nanos:x}\"")
}

/// A chunk read from a file; its share of the read budget is returned when the socket
/// writer drops it.
struct Chunk {
    bytes: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a file range chunk by chunk on the blocking pool; the file is opened by the
/// first read (and checked to be the version the headers describe).
struct ChunkReader {
    entry: Arc<FileEntry>,
    file: Option<File>,
    start: u64,
    remaining: u64,
    budget: Arc<Semaphore>,
    bytes_sent: Arc<AtomicU64>,
}

impl ChunkReader {
    /// Large chunks while memory is plentiful, smaller ones as the budget runs low.
    fn chunk_len(&self) -> usize {
        let available = self.budget.available_permits() * PERMIT_BYTES;
        let size = if available >= READ_BUDGET / 2 {
            CHUNK_MAX
        } else if available >= READ_BUDGET / 8 {
            CHUNK_MID
        } else {
            CHUNK_MIN
        };
        usize::try_from(self.remaining).map_or(size, |r| r.min(size))
    }

    async fn next(mut self) -> Option<(std::io::Result<Bytes>, ChunkReader)> {
        if self.remaining == 0 {
            return None;
        }
        let len = self.chunk_len();
        let permits = u32::try_from(len.div_ceil(PERMIT_BYTES)).unwrap_or(u32::MAX);
        let permit = self.budget.clone().acquire_many_owned(permits).await.ok()?;
        let file = self.file.take();
        let entry = self.entry.clone();
        let start = self.start;
        let read = tokio::task::spawn_blocking(move || read_chunk(file, &entry, start, len)).await;
        match read {
            Ok(Ok((file, bytes))) => {
                self.file = Some(file);
                self.remaining -= len as u64;
                self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
                let chunk = Chunk {
                    bytes,
                    _permit: permit,
                };
                Some((Ok(Bytes::from_owner(chunk)), self))
            }
            Ok(Err(err)) => {
                self.remaining = 0;
                Some((Err(err), self))
            }
            Err(join) => {
                self.remaining = 0;
                Some((Err(std::io::Error::other(join)), self))
            }
        }
    }
}

/// Opens the file of `entry` if it is still that version.
fn open_version(entry: &FileEntry) -> std::io::Result<File> {
    let file = File::open(&entry.full)?;
    if Identity::of(&file.metadata()?) != entry.identity {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} changed while being served", entry.full.display()),
        ));
    }
    Ok(file)
}

/// The next `len` bytes of the file (opened at `start` on the first call).
fn read_chunk(
    file: Option<File>,
    entry: &FileEntry,
    start: u64,
    len: usize,
) -> std::io::Result<(File, Vec<u8>)> {
    let mut file = match file {
        Some(file) => file,
        None => {
            let mut file = open_version(entry)?;
            if start > 0 {
                file.seek(SeekFrom::Start(start))?;
            }
            file
        }
    };
    let mut bytes = Vec::with_capacity(len);
    (&mut file).take(len as u64).read_to_end(&mut bytes)?;
    if bytes.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} is shorter than it was", entry.full.display()),
        ));
    }
    Ok((file, bytes))
}
