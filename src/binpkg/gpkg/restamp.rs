//! Re-stamping a gpkg: the same package under a new BUILD_ID, signed with a given key.
//!
//! Used to re-sign a published snapshot after a key rotation: a published file name is never
//! reused for other bytes, so new signatures mean a new BUILD_ID (file name and top
//! directory `<PF>-<BUILD_ID>`). The metadata archive is rewritten (BUILD_ID changed) and
//! compressed again as zstd; the image archive is copied byte for byte (checked against the
//! Manifest while copied); `.sig` members and the clear-signed Manifest are made anew.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tar::{EntryType, Header};

use crate::binpkg::gpkg::read::{scan, Role, ScannedMember, MANIFEST};
use crate::binpkg::manifest::{DigestWriter, Digests, Manifest, ManifestEntry};
use crate::binpkg::tarwalk::ContainerWriter;
use crate::binpkg::BinpkgError;
use crate::sign::SigningKey;

/// zstd level for the rewritten metadata archive (small: the level hardly matters).
const METADATA_ZSTD_LEVEL: i32 = 3;

fn io_error(path: &Path, source: io::Error) -> BinpkgError {
    BinpkgError::Io {
        path: path.to_owned(),
        source,
    }
}

fn member_error(path: &Path, member: String, message: impl Into<String>) -> BinpkgError {
    BinpkgError::Member {
        path: path.to_owned(),
        member,
        message: message.into(),
    }
}

fn sign_error(path: &Path, source: crate::sign::SignError) -> BinpkgError {
    BinpkgError::Sign {
        path: path.to_owned(),
        source,
    }
}

/// Writes to `dest` (temporary file beside it, then rename) the package `src` with BUILD_ID
/// `build_id` in its metadata and top directory, every archive signed with `key`. `src` may
/// be signed or not; its signatures are not checked (its Manifest hashes are).
pub fn restamp(
    src: &Path,
    dest: &Path,
    build_id: u64,
    key: &SigningKey,
) -> Result<(), BinpkgError> {
    if build_id == 0 {
        return Err(BinpkgError::Invalid {
            path: dest.to_owned(),
            message: "BUILD_ID must be 1 or more".into(),
        });
    }
    let scan = scan(src)?;
    let pf = scan
        .metadata_files
        .get("PF")
        .map(|v| String::from_utf8_lossy(v).trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| BinpkgError::Invalid {
            path: src.to_owned(),
            message: "metadata has no PF: cannot name the new top directory".into(),
        })?;
    let top = format!("{pf}-{build_id}");
    let mut metadata = scan.metadata_files.clone();
    metadata.insert("BUILD_ID".into(), format!("{build_id}\n").into_bytes());

    let mtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gpkg".into());
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".restamp")
        .tempfile_in(dir)
        .map_err(|e| io_error(dir, e))?;
    let temp_path = temp.path().to_owned();
    let temp_err = |e: io::Error| io_error(&temp_path, e);
    let out_file = temp.as_file().try_clone().map_err(temp_err)?;
    let mut out = ContainerWriter::new(BufWriter::with_capacity(1 << 20, out_file));
    let mut entries: Vec<ManifestEntry> = Vec::new();

    let append_small = |out: &mut ContainerWriter<BufWriter<File>>,
                        name: &str,
                        data: &[u8],
                        entries: &mut Vec<ManifestEntry>|
     -> Result<(), BinpkgError> {
        out.append(&format!("{top}/{name}"), data, 0o644, mtime)
            .map_err(temp_err)?;
        entries.push(ManifestEntry::new(
            name,
            data.len() as u64,
            &Digests::of(data),
        ));
        Ok(())
    };

    for member in &scan.members {
        match member.role {
            Role::Manifest | Role::Signature => continue,
            Role::Identifier => {
                let content = member.content.clone().unwrap_or_default();
                append_small(&mut out, &member.name, &content, &mut entries)?;
            }
            Role::Metadata(_) => {
                let archive = metadata_archive(&metadata, mtime).map_err(|e| io_error(dest, e))?;
                let compressed =
                    zstd::encode_all(&archive[..], METADATA_ZSTD_LEVEL).map_err(temp_err)?;
                let sig = key
                    .sign_detached(&mut &compressed[..])
                    .map_err(|e| sign_error(dest, e))?;
                append_small(&mut out, "metadata.tar.zst", &compressed, &mut entries)?;
                append_small(
                    &mut out,
                    "metadata.tar.zst.sig",
                    sig.as_bytes(),
                    &mut entries,
                )?;
            }
            Role::Image(_) | Role::Other => {
                let full = format!("{top}/{}", member.name);
                let data_offset = out
                    .begin_sized(&full, member.size, member.mode, mtime)
                    .map_err(temp_err)?;
                let signature = copy_member(
                    src,
                    &scan.manifest,
                    &scan.top_dir,
                    member,
                    &mut out,
                    |data| {
                        if member.role.is_signed_archive() {
                            key.sign_detached(data)
                                .map(Some)
                                .map_err(|e| sign_error(dest, e))
                        } else {
                            Ok(None)
                        }
                    },
                )?;
                out.end_sized(data_offset, member.size)
                    .map_err(|e| member_error(src, full.clone(), e.to_string()))?;
                let entry = scan
                    .manifest
                    .get(&member.name)
                    .cloned()
                    .ok_or_else(|| member_error(src, full.clone(), "not in the Manifest"))?;
                entries.push(entry);
                if let Some(sig) = signature {
                    append_small(
                        &mut out,
                        &format!("{}.sig", member.name),
                        sig.as_bytes(),
                        &mut entries,
                    )?;
                }
            }
        }
    }

    let manifest = Manifest { entries }.render();
    let signed = key
        .sign_cleartext(&manifest)
        .map_err(|e| sign_error(dest, e))?;
    out.append(
        &format!("{top}/{MANIFEST}"),
        signed.as_bytes(),
        0o644,
        mtime,
    )
    .map_err(temp_err)?;
    let file = out
        .finish()
        .map_err(temp_err)?
        .into_inner()
        .map_err(|e| temp_err(e.into_error()))?;
    file.sync_all().map_err(temp_err)?;
    std::fs::set_permissions(
        &temp_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(temp_err)?;
    temp.persist(dest).map_err(|e| io_error(dest, e.error))?;
    crate::binpkg::sync_dir(dir);
    Ok(())
}

/// Copies a member's data from `src` into `out`, handing the bytes to `consume` on the way
/// (it may read all or part; the rest is copied after), and checks them against the
/// Manifest entry.
fn copy_member<T>(
    src: &Path,
    manifest: &Manifest,
    top_dir: &str,
    member: &ScannedMember,
    out: &mut dyn Write,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, BinpkgError>,
) -> Result<T, BinpkgError> {
    let full = format!("{top_dir}/{}", member.name);
    let mut file = File::open(src).map_err(|e| io_error(src, e))?;
    file.seek(SeekFrom::Start(member.data_offset))
        .map_err(|e| io_error(src, e))?;
    let mut limited = io::BufReader::with_capacity(1 << 20, file).take(member.size);
    let mut copy = DigestWriter::new(out);
    let value = {
        let mut tee = TeeReader {
            inner: &mut limited,
            copy: &mut copy,
        };
        let value = consume(&mut tee)?;
        io::copy(&mut tee, &mut io::sink()).map_err(|e| io_error(src, e))?;
        value
    };
    let count = copy.count();
    let (_, digests) = copy.finish();
    if count != member.size {
        return Err(member_error(
            src,
            full,
            format!("{count} bytes read, {} expected", member.size),
        ));
    }
    let expected = manifest
        .get(&member.name)
        .ok_or_else(|| member_error(src, full.clone(), "not in the Manifest"))?;
    expected
        .check(count, &digests)
        .map_err(|m| member_error(src, full, format!("changed while being copied: {m}")))?;
    Ok(value)
}

/// Copies what is read from `inner` into `copy`.
struct TeeReader<'a> {
    inner: &'a mut dyn Read,
    copy: &'a mut dyn Write,
}

impl Read for TeeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The metadata archive: `metadata/<KEY>` regular files in key order.
fn metadata_archive(metadata: &BTreeMap<String, Vec<u8>>, mtime: u64) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (key, value) in metadata {
        let mut header = if key.len() < 90 {
            Header::new_ustar()
        } else {
            Header::new_gnu()
        };
        header.set_entry_type(EntryType::Regular);
        header.set_size(value.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, format!("metadata/{key}"), &value[..])?;
    }
    builder.into_inner()
}
