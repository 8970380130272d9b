//! gpkg signatures: checking them against a keyring, and signing an unsigned package
//! in place without recompressing anything.
//!
//! A signed gpkg has `<member>.sig` (armored detached signature over the compressed
//! member) after each of metadata.tar* and image.tar*, Manifest entries for those
//! `.sig` members, and a clear-signed Manifest.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::binpkg::gpkg::read::{scan, Role, Scan, ScannedMember, IDENTIFIER, MANIFEST};
use crate::binpkg::manifest::{DigestWriter, Digests, Manifest, ManifestEntry};
use crate::binpkg::tarwalk::ContainerWriter;
use crate::binpkg::{Binpkg, BinpkgError, SignatureStatus};
use crate::sign::{Keyring, Signer, SigningKey};

fn member_error(path: &Path, member: String, message: impl Into<String>) -> BinpkgError {
    BinpkgError::Member {
        path: path.to_owned(),
        member,
        message: message.into(),
    }
}

fn io_error(path: &Path, source: io::Error) -> BinpkgError {
    BinpkgError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads `member`'s data from the file while hashing it; after `use_data` the whole
/// member must have been read and must still match the Manifest (so the bytes a
/// signature was checked or made over are the bytes the Manifest vouches for).
fn with_member_data<T>(
    path: &Path,
    scan: &Scan,
    member: &ScannedMember,
    use_data: impl FnOnce(&mut dyn Read) -> Result<T, BinpkgError>,
) -> Result<T, BinpkgError> {
    let full = scan.full_name(&member.name);
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    file.seek(SeekFrom::Start(member.data_offset))
        .map_err(|e| io_error(path, e))?;
    let mut limited = io::BufReader::with_capacity(1 << 20, file).take(member.size);
    let mut hasher = DigestWriter::new(io::sink());
    let result = {
        let mut tee = TeeReader {
            inner: &mut limited,
            copy: &mut hasher,
        };
        let value = use_data(&mut tee)?;
        // The consumer may stop at the end of what it needs; the rest still counts.
        io::copy(&mut tee, &mut io::sink()).map_err(|e| io_error(path, e))?;
        value
    };
    let count = hasher.count();
    let (_, digests) = hasher.finish();
    let expected = scan
        .manifest
        .get(&member.name)
        .ok_or_else(|| member_error(path, full.clone(), "not in the Manifest"))?;
    expected
        .check(count, &digests)
        .map_err(|m| member_error(path, full.clone(), format!("changed while being read: {m}")))?;
    Ok(result)
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

/// Checks the package and requires every signature to be good from `keyring`.
pub fn verify(path: &Path, keyring: &Keyring) -> Result<Binpkg, BinpkgError> {
    let scan = scan(path)?;
    let manifest_name = scan.full_name(MANIFEST);
    if !scan.manifest_clear_signed {
        return Err(member_error(
            path,
            manifest_name,
            "not clear-signed: the package is unsigned",
        ));
    }
    let (signed_text, manifest_signer) = keyring
        .verify_cleartext(&scan.manifest_raw)
        .map_err(|e| member_error(path, manifest_name.clone(), format!("signature: {e}")))?;
    // The entries checked while reading must be exactly the ones the signature covers.
    let signed = Manifest::parse(&signed_text)
        .map_err(|m| member_error(path, manifest_name.clone(), format!("signed text: {m}")))?;
    if signed != scan.manifest {
        return Err(member_error(
            path,
            manifest_name,
            "the signed text differs from the Manifest entries read",
        ));
    }
    let mut signers = vec![manifest_signer];
    for member in scan.members.iter().filter(|m| m.role.is_signed_archive()) {
        let sig_name = format!("{}.sig", member.name);
        if scan.member(&sig_name).is_none() {
            return Err(member_error(
                path,
                scan.full_name(&member.name),
                format!("unsigned: no {sig_name} member"),
            ));
        }
    }
    for sig in scan.members.iter().filter(|m| m.role == Role::Signature) {
        let target_name = &sig.name[..sig.name.len() - 4];
        let target = scan.member(target_name).ok_or_else(|| {
            member_error(path, scan.full_name(&sig.name), "signs a missing member")
        })?;
        let armored = sig.content.clone().unwrap_or_default();
        let sig_full = scan.full_name(&sig.name);
        let signer = with_member_data(path, &scan, target, |data| {
            keyring.verify_detached(&armored, data).map_err(|e| {
                member_error(
                    path,
                    sig_full.clone(),
                    format!("signature over {target_name}: {e}"),
                )
            })
        })?;
        signers.push(signer);
    }
    let mut unique: Vec<Signer> = Vec::new();
    for s in signers {
        if !unique.contains(&s) {
            unique.push(s);
        }
    }
    let mut pkg = scan.to_binpkg();
    pkg.signature = SignatureStatus::Good { signers: unique };
    Ok(pkg)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs an unsigned gpkg: the same members, byte for byte, with `.sig` members after
/// the metadata and image archives and a clear-signed Manifest that lists them.
/// Written to a temporary file beside the package, then renamed over it.
pub fn sign_in_place(path: &Path, key: &SigningKey) -> Result<(), BinpkgError> {
    let scan = scan(path)?;
    if scan.is_signed() {
        let what = if scan.manifest_clear_signed {
            "its Manifest is clear-signed".to_string()
        } else {
            let sigs: Vec<&str> = scan
                .members
                .iter()
                .filter(|m| m.role == Role::Signature)
                .map(|m| m.name.as_str())
                .collect();
            format!("it has {}", sigs.join(", "))
        };
        return Err(BinpkgError::Invalid {
            path: path.to_owned(),
            message: format!("already signed ({what}); refusing to sign it again"),
        });
    }
    write_signed(path, &scan, path, key, None)
}

/// Writes `dest`: the package at `path` signed with `key` under a new BUILD_ID (the
/// `metadata/BUILD_ID` file and the top directory `<PF>-<BUILD_ID>` both change), as the
/// coordinator stores what workers upload and as `resign` re-signs a snapshot. The image
/// archive is copied as is; only the small metadata archive is rebuilt. Signatures the
/// package had are dropped.
pub fn restamp_and_sign(
    path: &Path,
    dest: &Path,
    build_id: u64,
    key: &SigningKey,
) -> Result<(), BinpkgError> {
    let scan = scan(path)?;
    write_signed(path, &scan, dest, key, Some(build_id))
}

/// The metadata member with `BUILD_ID` replaced, zstd-compressed.
fn restamped_metadata(
    path: &Path,
    scan: &Scan,
    build_id: u64,
    mtime: u64,
) -> Result<Vec<u8>, BinpkgError> {
    let mut files = scan.metadata_files.clone();
    files.insert("BUILD_ID".into(), format!("{build_id}\n").into_bytes());
    let tar = crate::binpkg::gpkg::write::metadata_archive(&files, mtime)
        .map_err(|e| io_error(path, e))?;
    zstd::encode_all(&tar[..], 3).map_err(|e| io_error(path, e))
}

fn write_signed(
    path: &Path,
    scan: &Scan,
    dest: &Path,
    key: &SigningKey,
    build_id: Option<u64>,
) -> Result<(), BinpkgError> {
    let mtime = now();
    let top_dir = match build_id {
        None => scan.top_dir.clone(),
        Some(id) => {
            let pf = scan
                .metadata_files
                .get("PF")
                .map(|v| String::from_utf8_lossy(v).trim().to_owned())
                .filter(|pf| crate::binpkg::manifest::is_plain_member_name(pf))
                .ok_or_else(|| {
                    member_error(
                        path,
                        scan.full_name("metadata.tar"),
                        "no usable metadata/PF",
                    )
                })?;
            format!("{pf}-{id}")
        }
    };
    let full_name = |name: &str| format!("{top_dir}/{name}");
    let new_metadata = match build_id {
        Some(id) => Some(restamped_metadata(path, scan, id, mtime)?),
        None => None,
    };
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
        .suffix(".signing")
        .tempfile_in(dir)
        .map_err(|e| io_error(dir, e))?;
    let out_file = temp
        .as_file()
        .try_clone()
        .map_err(|e| io_error(temp.path(), e))?;
    let mut out = ContainerWriter::new(BufWriter::with_capacity(1 << 20, out_file));
    let mut entries: Vec<ManifestEntry> = Vec::new();

    for member in &scan.members {
        if member.role == Role::Manifest || member.role == Role::Signature {
            continue;
        }
        if let (Role::Metadata(_), Some(bytes)) = (member.role, &new_metadata) {
            let name = "metadata.tar.zst";
            out.append(&full_name(name), bytes, 0o644, mtime)
                .map_err(|e| io_error(temp.path(), e))?;
            entries.push(ManifestEntry::new(
                name,
                bytes.len() as u64,
                &Digests::of(bytes),
            ));
            let sig = key
                .sign_detached(&mut &bytes[..])
                .map_err(|e| BinpkgError::Sign {
                    path: path.to_owned(),
                    source: e,
                })?;
            let sig_name = format!("{name}.sig");
            out.append(&full_name(&sig_name), sig.as_bytes(), 0o644, mtime)
                .map_err(|e| io_error(temp.path(), e))?;
            entries.push(ManifestEntry::new(
                &sig_name,
                sig.len() as u64,
                &Digests::of(sig.as_bytes()),
            ));
            continue;
        }
        let full = scan.full_name(&member.name);
        let new_full = full_name(&member.name);
        let entry = scan
            .manifest
            .get(&member.name)
            .cloned()
            .ok_or_else(|| member_error(path, full.clone(), "not in the Manifest"))?;
        let data_offset = out
            .begin_sized(&new_full, member.size, member.mode, member.mtime)
            .map_err(|e| io_error(temp.path(), e))?;
        let signature = with_member_data(path, scan, member, |data| {
            if member.role.is_signed_archive() {
                // The signer pulls the bytes; the tee writes them to the new file.
                let mut copying = TeeReader {
                    inner: data,
                    copy: &mut out,
                };
                let sig = key
                    .sign_detached(&mut copying)
                    .map_err(|e| BinpkgError::Sign {
                        path: path.to_owned(),
                        source: e,
                    })?;
                io::copy(&mut copying, &mut io::sink()).map_err(|e| io_error(temp.path(), e))?;
                Ok(Some(sig))
            } else {
                io::copy(data, &mut out).map_err(|e| io_error(temp.path(), e))?;
                Ok(None)
            }
        })?;
        out.end_sized(data_offset, member.size)
            .map_err(|e| member_error(path, full.clone(), e.to_string()))?;
        entries.push(entry);
        if let Some(sig) = signature {
            let sig_name = format!("{}.sig", member.name);
            let bytes = sig.into_bytes();
            out.append(&full_name(&sig_name), &bytes, 0o644, mtime)
                .map_err(|e| io_error(temp.path(), e))?;
            entries.push(ManifestEntry::new(
                &sig_name,
                bytes.len() as u64,
                &Digests::of(&bytes),
            ));
        }
    }
    debug_assert!(entries.first().map(|e| e.name.as_str()) == Some(IDENTIFIER));
    let manifest = Manifest { entries }.render();
    let signed = key
        .sign_cleartext(&manifest)
        .map_err(|e| BinpkgError::Sign {
            path: path.to_owned(),
            source: e,
        })?;
    out.append(&full_name(MANIFEST), signed.as_bytes(), 0o644, mtime)
        .map_err(|e| io_error(temp.path(), e))?;
    let writer = out.finish().map_err(|e| io_error(temp.path(), e))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error(temp.path(), e.into_error()))?;
    file.sync_all().map_err(|e| io_error(temp.path(), e))?;
    let permissions = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .permissions();
    std::fs::set_permissions(temp.path(), permissions).map_err(|e| io_error(temp.path(), e))?;
    temp.persist(dest).map_err(|e| io_error(dest, e.error))?;
    crate::binpkg::sync_dir(dir);
    Ok(())
}
