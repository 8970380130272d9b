//! Writing `Packages` and `Packages.gz` atomically, with Portage's file attributes:
//! both files get mtime (and atime) = TIMESTAMP, mode 0666 minus umask plus the
//! PKGDIR's group read/write bits, the PKGDIR's group; the gzip header carries
//! TIMESTAMP, no file name, maximum-compression flag, OS 255.

use std::fs::{File, FileTimes, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use flate2::{Compression, GzBuilder};

use super::packages::PackagesIndex;
use super::IndexError;

pub const PACKAGES_FILE: &str = "Packages";
pub const PACKAGES_GZ_FILE: &str = "Packages.gz";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Renders `index` with `timestamp` and writes `pkgdir/Packages` and, when `compress`,
/// `pkgdir/Packages.gz` (else a leftover `Packages.gz` is removed, as Portage does).
pub fn write_index_files(
    pkgdir: &Path,
    index: &PackagesIndex,
    timestamp: u64,
    compress: bool,
) -> Result<(), IndexError> {
    let text = index.render(timestamp);
    let dir_meta = std::fs::metadata(pkgdir).map_err(io_error(pkgdir))?;
    let attrs = FileAttributes {
        group_bits: dir_meta.mode() & 0o060,
        gid: dir_meta.gid(),
        timestamp,
    };

    let plain = pkgdir.join(PACKAGES_FILE);
    write_atomically(&plain, &attrs, |file| file.write_all(text.as_bytes()))?;

    let gz = pkgdir.join(PACKAGES_GZ_FILE);
    if compress {
        write_atomically(&gz, &attrs, |file| {
            let mut encoder = GzBuilder::new()
                .mtime(u32::try_from(timestamp).unwrap_or(0))
                .operating_system(255)
                .write(file, Compression::best());
            encoder.write_all(text.as_bytes())?;
            encoder.finish().map(|_| ())
        })?;
    } else {
        match std::fs::remove_file(&gz) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&gz)(e)),
        }
    }
    Ok(())
}

/// Whether `Packages.gz` is as Portage's `emaint binhost --check` wants it: present
/// with the same mtime as `Packages` when compressing, absent otherwise.
pub fn gz_is_consistent(plain: &Path, gz: &Path, compress: bool) -> Result<bool, IndexError> {
    let mtime = |p: &Path| -> Result<Option<i64>, IndexError> {
        match std::fs::metadata(p) {
            Ok(m) => Ok(Some(m.mtime())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(p)(e)),
        }
    };
    let gz_mtime = mtime(gz)?;
    if !compress {
        return Ok(gz_mtime.is_none());
    }
    Ok(gz_mtime.is_some() && gz_mtime == mtime(plain)?)
}

struct FileAttributes {
    group_bits: u32,
    gid: u32,
    timestamp: u64,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("index");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Writes through a temporary file in the same directory, then renames it over
/// `target`; readers see the old file or the new one, never a part.
fn write_atomically(
    target: &Path,
    attrs: &FileAttributes,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), IndexError> {
    let temp = temp_path(target);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&temp)
            .map_err(io_error(&temp))?;
        fill(&mut file).map_err(io_error(&temp))?;
        // Same group as PKGDIR, as Portage sets; not permitted for everyone, and
        // Portage ignores that too.
        let _ = std::os::unix::fs::fchown(&file, None, Some(attrs.gid));
        let mode = file.metadata().map_err(io_error(&temp))?.mode() & 0o7777;
        if mode | attrs.group_bits != mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode | attrs.group_bits))
                .map_err(io_error(&temp))?;
        }
        let time = UNIX_EPOCH + Duration::from_secs(attrs.timestamp);
        file.set_times(FileTimes::new().set_accessed(time).set_modified(time))
            .map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        std::fs::rename(&temp, target).map_err(io_error(target))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
