//! Content-addressed blob files: `<root>/sha512/ab/cdef…` (the first two hex digits name the
//! directory). A blob is written to a temporary file under `<root>/tmp` (same file system),
//! hashed while it is written, fsynced, checked, and only then renamed into place: a reader
//! never sees a half-written blob, and a failed or interrupted put leaves nothing behind but,
//! at worst (the process killed), a temp file that the next `BlobStore::open` removes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};
use thiserror::Error;

/// Errors from the blob directory, each naming the file or blob involved.
#[derive(Debug, Error)]
pub enum BlobError {
    #[error("cannot prepare blob directory {path}: {source}")]
    Setup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a sha512 digest (want 128 lowercase hex digits): {value:?}")]
    BadDigest { value: String },
    #[error("reading the upload failed after {received} bytes: {source}")]
    Read {
        received: u64,
        #[source]
        source: io::Error,
    },
    #[error("the disk is full while writing blob temp file {path} (after {written} bytes); nothing was stored")]
    DiskFull { path: PathBuf, written: u64 },
    #[error("cannot write blob temp file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob is larger than the limit of {max_size} bytes; nothing was stored")]
    TooLarge { max_size: u64 },
    #[error("sha512 mismatch: expected {expected}, received {actual} ({size} bytes); nothing was stored")]
    HashMismatch {
        expected: String,
        actual: String,
        size: u64,
    },
    #[error("cannot move blob into place at {path}: {source}")]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {sha512} not found at {path}")]
    NotFound { sha512: String, path: PathBuf },
    #[error("cannot read blob {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A stored blob: its digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Lowercase hex sha512 of the content.
    pub sha512: String,
    pub size: u64,
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

const WRITE_CHUNK: usize = 256 * 1024;

/// True for a lowercase hex sha512 digest.
pub fn is_sha512_hex(value: &str) -> bool {
    value.len() == 128
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// Open (creating if needed) the blob directory at `root`, and remove temp files left
    /// by a process that was killed mid-put.
    pub fn open(root: &Path) -> Result<BlobStore, BlobError> {
        let store = BlobStore {
            root: root.to_path_buf(),
        };
        for dir in [store.root.join("sha512"), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(|source| BlobError::Setup {
                path: dir.clone(),
                source,
            })?;
        }
        let tmp = store.tmp_dir();
        let entries = fs::read_dir(&tmp).map_err(|source| BlobError::Setup {
            path: tmp.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| BlobError::Setup {
                path: tmp.clone(),
                source,
            })?;
            // A writer holds an flock on its temp file for the whole put; the kernel drops it
            // when the writer dies. So a file we can lock is stale, one we cannot is being
            // written by a live process (another binfarm command opening the store must not
            // delete a coordinator's upload in progress).
            if temp_file_in_use(&entry.path()) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(BlobError::Setup {
                        path: entry.path(),
                        source,
                    })
                }
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where temp files live while a put is in progress.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The path a blob with this digest has (whether it exists or not).
    pub fn path_of(&self, sha512: &str) -> Result<PathBuf, BlobError> {
        if !is_sha512_hex(sha512) {
            return Err(BlobError::BadDigest {
                value: sha512.to_string(),
            });
        }
        Ok(self
            .root
            .join("sha512")
            .join(&sha512[..2])
            .join(&sha512[2..]))
    }

    pub fn contains(&self, sha512: &str) -> Result<bool, BlobError> {
        Ok(self.path_of(sha512)?.is_file())
    }

    /// Open a stored blob for reading.
    pub fn open_blob(&self, sha512: &str) -> Result<File, BlobError> {
        let path = self.path_of(sha512)?;
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                BlobError::NotFound {
                    sha512: sha512.to_string(),
                    path: path.clone(),
                }
            } else {
                BlobError::Open {
                    path: path.clone(),
                    source,
                }
            }
        })
    }

    /// Store everything `reader` yields, up to `max_size` bytes. With `expected_sha512`, the
    /// content must have that digest. The blob becomes visible only complete and checked;
    /// putting the same bytes again is harmless and returns the same `BlobRef`.
    pub fn put_stream<R: Read>(
        &self,
        mut reader: R,
        expected_sha512: Option<&str>,
        max_size: u64,
    ) -> Result<BlobRef, BlobError> {
        if let Some(expected) = expected_sha512 {
            if !is_sha512_hex(expected) {
                return Err(BlobError::BadDigest {
                    value: expected.to_string(),
                });
            }
        }
        let tmp_dir = self.tmp_dir();
        // NamedTempFile removes itself when dropped: every early return below cleans up.
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&tmp_dir)
            .map_err(|source| self.write_error(&tmp_dir, source, 0))?;
        let tmp_path = tmp.path().to_path_buf();
        // Held until this function returns: marks the temp file as live (see `open`).
        let _in_use = tmp.as_file().try_clone().ok().and_then(|f| {
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
        });

        let mut hasher = Sha512::new();
        let mut buf = vec![0u8; WRITE_CHUNK];
        let mut size: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(BlobError::Read {
                        received: size,
                        source,
                    })
                }
            };
            size += n as u64;
            if size > max_size {
                return Err(BlobError::TooLarge { max_size });
            }
            hasher.update(&buf[..n]);
            tmp.as_file_mut()
                .write_all(&buf[..n])
                .map_err(|source| self.write_error(&tmp_path, source, size - n as u64))?;
        }
        tmp.as_file_mut()
            .sync_all()
            .map_err(|source| self.write_error(&tmp_path, source, size))?;

        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = expected_sha512 {
            if expected != actual {
                return Err(BlobError::HashMismatch {
                    expected: expected.to_string(),
                    actual,
                    size,
                });
            }
        }

        let final_path = self.path_of(&actual)?;
        let parent = final_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        fs::create_dir_all(&parent).map_err(|source| BlobError::Persist {
            path: parent.clone(),
            source,
        })?;
        // Same content, same name: an existing blob is the same bytes, so a repeated put just
        // drops its temp file. rename() replaces atomically either way.
        tmp.persist(&final_path).map_err(|e| BlobError::Persist {
            path: final_path.clone(),
            source: e.error,
        })?;
        // The rename is durable only once the directory entry is on disk.
        File::open(&parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| BlobError::Persist {
                path: parent.clone(),
                source,
            })?;
        Ok(BlobRef {
            sha512: actual,
            size,
        })
    }

    /// Remove a blob file (GC). Removing a missing blob is not an error.
    pub fn remove(&self, sha512: &str) -> Result<(), BlobError> {
        let path = self.path_of(sha512)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BlobError::Persist { path, source }),
        }
    }

    fn write_error(&self, path: &Path, source: io::Error, written: u64) -> BlobError {
        if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
            BlobError::DiskFull {
                path: path.to_path_buf(),
                written,
            }
        } else {
            BlobError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// True when another live process holds the temp file's lock.
fn temp_file_in_use(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(_released_on_drop) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}
