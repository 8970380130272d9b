//! Listing the files a binpkg installs (its image archive), for `inspect`.
//! Nothing is extracted; paths that would escape the image are refused.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use tar::EntryType;

use crate::binpkg::compress::Compression;
use crate::binpkg::gpkg::read::{entry_kind_name, scan, Role};
use crate::binpkg::{detect_format, limits, tarwalk, xpak, BinpkgError, Format};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One entry of the image archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContentsEntry {
    /// Installed path, absolute (`/usr/bin/hello`); `/` for the image root itself.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Permission bits (with setuid/setgid/sticky), e.g. 0o755.
    pub mode: u32,
    /// Symlink target as stored, or the installed path a hard link points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// Lists the image of a gpkg (after checking it against its Manifest) or an xpak.
pub fn contents(path: &Path) -> Result<Vec<ContentsEntry>, BinpkgError> {
    let io_err = |source| BinpkgError::Io {
        path: path.to_owned(),
        source,
    };
    match detect_format(path)? {
        Format::Gpkg => {
            let scan = scan(path)?;
            let image = scan.image().ok_or_else(|| BinpkgError::Invalid {
                path: path.to_owned(),
                message: "no image archive".into(),
            })?;
            let Role::Image(compression) = image.role else {
                return Err(BinpkgError::Invalid {
                    path: path.to_owned(),
                    message: "image member lost its role".into(),
                });
            };
            let mut file = File::open(path).map_err(io_err)?;
            file.seek(SeekFrom::Start(image.data_offset))
                .map_err(io_err)?;
            let data = BufReader::with_capacity(1 << 20, file).take(image.size);
            list_image(data, compression, Some("image"))
                .map_err(|m| member_error(path, &scan.full_name(&image.name), m))
        }
        Format::Xpak => {
            let layout = xpak::layout(path)?;
            let file = File::open(path).map_err(io_err)?;
            let data = BufReader::with_capacity(1 << 20, file).take(layout.image_len);
            let name = format!("image.tar{}", layout.image_compression.suffix());
            list_image(data, layout.image_compression, None)
                .map_err(|m| member_error(path, &name, m))
        }
    }
}

fn member_error(path: &Path, member: &str, message: String) -> BinpkgError {
    BinpkgError::Member {
        path: path.to_owned(),
        member: member.to_owned(),
        message,
    }
}

fn list_image<R: Read>(
    data: R,
    compression: Compression,
    prefix: Option<&str>,
) -> Result<Vec<ContentsEntry>, String> {
    let decoder = compression.decoder(data)?;
    let mut out = Vec::new();
    tarwalk::walk(
        decoder,
        |m| m,
        |item| {
            let raw = String::from_utf8_lossy(&item.path).into_owned();
            if out.len() >= limits::IMAGE_ENTRIES_MAX {
                return Err(format!("more than {} entries", limits::IMAGE_ENTRIES_MAX));
            }
            let path =
                installed_path(&item.path, prefix).map_err(|m| format!("entry {raw:?}: {m}"))?;
            let kind = match item.kind {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    EntryKind::File
                }
                EntryType::Directory => EntryKind::Dir,
                EntryType::Symlink => EntryKind::Symlink,
                EntryType::Link => EntryKind::Hardlink,
                EntryType::Char => EntryKind::CharDevice,
                EntryType::Block => EntryKind::BlockDevice,
                EntryType::Fifo => EntryKind::Fifo,
                other => {
                    return Err(format!(
                        "entry {raw:?}: {} entry type {:?}",
                        entry_kind_name(other),
                        other.as_byte() as char
                    ))
                }
            };
            let link_target = match kind {
                EntryKind::Symlink => Some(
                    item.link
                        .as_ref()
                        .map(|l| String::from_utf8_lossy(l).into_owned())
                        .ok_or_else(|| format!("entry {raw:?}: symlink without a target"))?,
                ),
                EntryKind::Hardlink => {
                    let target = item
                        .link
                        .as_ref()
                        .ok_or_else(|| format!("entry {raw:?}: hard link without a target"))?;
                    Some(
                        installed_path(target, prefix)
                            .map_err(|m| format!("entry {raw:?}: hard link target: {m}"))?,
                    )
                }
                _ => None,
            };
            out.push(ContentsEntry {
                path,
                kind,
                size: item.size,
                mode: item
                    .entry
                    .header()
                    .mode()
                    .map_err(|e| format!("entry {raw:?}: {e}"))?
                    & 0o7777,
                link_target,
            });
            Ok(())
        },
    )?;
    Ok(out)
}

/// Turns an archive path into the installed path, refusing absolute paths, `..`
/// components and (for gpkg) anything outside `image/`.
fn installed_path(raw: &[u8], prefix: Option<&str>) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8".to_string())?;
    if text.starts_with('/') {
        return Err("absolute path".into());
    }
    if text.contains('\0') {
        return Err("NUL in path".into());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("path escapes with '..'".into()),
            p => parts.push(p),
        }
    }
    if let Some(prefix) = prefix {
        if parts.first() != Some(&prefix) {
            return Err(format!("outside {prefix}/"));
        }
        parts.remove(0);
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_archive_paths_to_installed_paths() {
        assert_eq!(
            installed_path(b"image/usr/bin/hello", Some("image")).unwrap(),
            "/usr/bin/hello"
        );
        assert_eq!(installed_path(b"image/", Some("image")).unwrap(), "/");
        assert_eq!(installed_path(b"./usr/bin/x", None).unwrap(), "/usr/bin/x");
        assert!(installed_path(b"image/../etc/passwd", Some("image")).is_err());
        assert!(installed_path(b"/etc/passwd", Some("image")).is_err());
        assert!(installed_path(b"other/x", Some("image")).is_err());
        assert!(installed_path(b"usr/../../x", None).is_err());
    }
}
