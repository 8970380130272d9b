//! Writing a gpkg from an image directory and metadata files.
//!
//! Layout: `<top>/gpkg-1`, `metadata.tar.zst` [+`.sig`], `image.tar.zst` [+`.sig`],
//! `Manifest` (BLAKE2B + SHA512, clear-signed when a key is given). The image is
//! compressed (zstd, multithreaded) straight into a temporary file beside the
//! destination, whose header is patched once the size is known; the file is renamed
//! into place at the end.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tar::{EntryType, Header};

use crate::binpkg::gpkg::read::{IDENTIFIER, MANIFEST};
use crate::binpkg::manifest::{
    is_plain_member_name, DigestWriter, Digests, Manifest, ManifestEntry,
};
use crate::binpkg::tarwalk::ContainerWriter;
use crate::binpkg::{is_metadata_key, BinpkgError};
use crate::sign::SigningKey;

/// What goes into a new gpkg.
pub struct GpkgSource<'a> {
    /// The directory inside the container: `<PF>-<BUILD_ID>` (or `<PF>`).
    pub top_dir: &'a str,
    /// Its contents become `image/` (the package's installed files, like `${D}`).
    pub image_dir: &'a Path,
    /// `metadata/<KEY>` files, as bytes (text keys and binary ones like environment.bz2).
    pub metadata: &'a BTreeMap<String, Vec<u8>>,
}

/// How to write it.
pub struct WriteOptions<'a> {
    pub zstd_level: i32,
    /// zstd worker threads; 0 means one per available CPU.
    pub zstd_threads: u32,
    /// Sign the archives and clear-sign the Manifest with this key.
    pub signing_key: Option<&'a SigningKey>,
    /// Modification time of the container members and metadata files (default: now).
    /// Image entries keep their files' times.
    pub mtime: Option<u64>,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions {
            zstd_level: 3,
            zstd_threads: 0,
            signing_key: None,
            mtime: None,
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> BinpkgError {
    BinpkgError::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> BinpkgError {
    BinpkgError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn sign_error(path: &Path, source: crate::sign::SignError) -> BinpkgError {
    BinpkgError::Sign {
        path: path.to_owned(),
        source,
    }
}

/// Writes a gpkg to `dest` (atomically: temporary file beside it, then rename).
pub fn write(
    dest: &Path,
    source: &GpkgSource<'_>,
    options: &WriteOptions<'_>,
) -> Result<(), BinpkgError> {
    if !is_plain_member_name(source.top_dir) {
        return Err(invalid(
            dest,
            format!("bad top directory name {:?}", source.top_dir),
        ));
    }
    for key in source.metadata.keys() {
        if !is_metadata_key(key) {
            return Err(invalid(dest, format!("bad metadata key {key:?}")));
        }
    }
    let image_entries = collect_image(source.image_dir)?;
    let mtime = options.mtime.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let threads = match options.zstd_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        n => n,
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
        .suffix(".writing")
        .tempfile_in(dir)
        .map_err(|e| io_error(dir, e))?;
    let temp_path = temp.path().to_owned();
    let temp_err = |e: io::Error| io_error(&temp_path, e);
    let out_file = temp.as_file().try_clone().map_err(temp_err)?;
    let mut out = ContainerWriter::new(BufWriter::with_capacity(1 << 20, out_file));
    let top = source.top_dir;
    let mut entries: Vec<ManifestEntry> = Vec::new();
    let mut add_small = |out: &mut ContainerWriter<BufWriter<File>>,
                         name: &str,
                         data: &[u8]|
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

    add_small(&mut out, IDENTIFIER, b"")?;

    let metadata_tar = metadata_archive(source.metadata, mtime).map_err(|e| io_error(dest, e))?;
    let metadata_zst = zstd::encode_all(&metadata_tar[..], options.zstd_level).map_err(temp_err)?;
    add_small(&mut out, "metadata.tar.zst", &metadata_zst)?;
    if let Some(key) = options.signing_key {
        let sig = key
            .sign_detached(&mut &metadata_zst[..])
            .map_err(|e| sign_error(dest, e))?;
        add_small(&mut out, "metadata.tar.zst.sig", sig.as_bytes())?;
    }

    // The image streams: tar -> zstd -> hash -> container.
    let open = out
        .begin_unsized(&format!("{top}/image.tar.zst"), 0o644, mtime)
        .map_err(temp_err)?;
    let image_offset = open.data_offset();
    let (image_size, image_digests) = {
        let hashing = DigestWriter::new(&mut out);
        let mut encoder =
            zstd::stream::write::Encoder::new(hashing, options.zstd_level).map_err(temp_err)?;
        if threads > 1 {
            encoder.multithread(threads).map_err(temp_err)?;
        }
        let mut builder = tar::Builder::new(encoder);
        write_image(&mut builder, source.image_dir, &image_entries)?;
        let encoder = builder.into_inner().map_err(temp_err)?;
        let hashing = encoder.finish().map_err(temp_err)?;
        let size = hashing.count();
        let (_, digests) = hashing.finish();
        (size, digests)
    };
    let written = out.end_unsized(open).map_err(temp_err)?;
    if written != image_size {
        return Err(invalid(dest, "image size bookkeeping went wrong"));
    }
    entries.push(ManifestEntry::new(
        "image.tar.zst",
        image_size,
        &image_digests,
    ));
    if let Some(key) = options.signing_key {
        io::Write::flush(&mut out).map_err(temp_err)?;
        let mut reader = File::open(&temp_path).map_err(temp_err)?;
        reader
            .seek(SeekFrom::Start(image_offset))
            .map_err(temp_err)?;
        let mut image = io::BufReader::with_capacity(1 << 20, reader).take(image_size);
        let sig = key
            .sign_detached(&mut image)
            .map_err(|e| sign_error(dest, e))?;
        let bytes = sig.into_bytes();
        out.append(&format!("{top}/image.tar.zst.sig"), &bytes, 0o644, mtime)
            .map_err(temp_err)?;
        entries.push(ManifestEntry::new(
            "image.tar.zst.sig",
            bytes.len() as u64,
            &Digests::of(&bytes),
        ));
    }

    let manifest = Manifest { entries }.render();
    let manifest = match options.signing_key {
        Some(key) => key
            .sign_cleartext(&manifest)
            .map_err(|e| sign_error(dest, e))?,
        None => manifest,
    };
    out.append(
        &format!("{top}/{MANIFEST}"),
        manifest.as_bytes(),
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
    fs::set_permissions(
        &temp_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(temp_err)?;
    temp.persist(dest).map_err(|e| io_error(dest, e.error))?;
    crate::binpkg::sync_dir(dir);
    Ok(())
}

/// The metadata archive: `metadata/<KEY>` regular files in key order.
pub(crate) fn metadata_archive(
    metadata: &BTreeMap<String, Vec<u8>>,
    mtime: u64,
) -> io::Result<Vec<u8>> {
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

struct ImageEntry {
    /// Path relative to the image directory (empty for the directory itself).
    relative: PathBuf,
    /// `image` or `image/<relative>`.
    name: String,
    meta: fs::Metadata,
    link_target: Option<String>,
}

/// Walks the image directory in name order, refusing what a package cannot carry.
fn collect_image(image_dir: &Path) -> Result<Vec<ImageEntry>, BinpkgError> {
    let root_meta = fs::symlink_metadata(image_dir).map_err(|e| io_error(image_dir, e))?;
    if !root_meta.is_dir() {
        return Err(invalid(image_dir, "image source is not a directory"));
    }
    let mut out = Vec::new();
    for item in walkdir::WalkDir::new(image_dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.map_err(|e| {
            let path = e.path().unwrap_or(image_dir).to_owned();
            io_error(&path, e.into())
        })?;
        let relative = item
            .path()
            .strip_prefix(image_dir)
            .map_err(|_| invalid(item.path(), "outside the image directory"))?
            .to_owned();
        let rel_str = relative
            .to_str()
            .ok_or_else(|| invalid(item.path(), "file name is not UTF-8"))?;
        let name = if rel_str.is_empty() {
            "image".to_owned()
        } else {
            format!("image/{rel_str}")
        };
        let meta = item
            .metadata()
            .map_err(|e| io_error(item.path(), e.into()))?;
        let ft = meta.file_type();
        let link_target = if ft.is_symlink() {
            let target = fs::read_link(item.path()).map_err(|e| io_error(item.path(), e))?;
            Some(
                target
                    .to_str()
                    .ok_or_else(|| invalid(item.path(), "symlink target is not UTF-8"))?
                    .to_owned(),
            )
        } else if ft.is_dir() || ft.is_file() {
            None
        } else {
            return Err(invalid(
                item.path(),
                "special file (device, fifo or socket) cannot go into a package image",
            ));
        };
        out.push(ImageEntry {
            relative,
            name,
            meta,
            link_target,
        });
    }
    Ok(out)
}

/// GNU headers when any name or link needs them (as Portage decides), else ustar.
fn needs_gnu(entries: &[ImageEntry]) -> bool {
    entries.iter().any(|e| {
        let base = e.name.rsplit('/').next().unwrap_or("");
        let dir_len = e.name.len() - base.len();
        base.len() >= 100
            || dir_len >= 155
            || e.link_target.as_ref().is_some_and(|t| t.len() >= 100)
            || e.meta.len() >= 8_000_000_000
    })
}

fn write_image<W: io::Write>(
    builder: &mut tar::Builder<W>,
    image_dir: &Path,
    entries: &[ImageEntry],
) -> Result<(), BinpkgError> {
    let gnu = needs_gnu(entries);
    // (device, inode) of regular files with several links -> first name in the image.
    let mut seen_inodes: HashMap<(u64, u64), String> = HashMap::new();
    for e in entries {
        let source_path = image_dir.join(&e.relative);
        let err = |err: io::Error| io_error(&source_path, err);
        let mut header = if gnu {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        header.set_mode(e.meta.mode() & 0o7777);
        header.set_uid(e.meta.uid() as u64);
        header.set_gid(e.meta.gid() as u64);
        header.set_mtime(e.meta.mtime().max(0) as u64);
        header.set_size(0);
        let ft = e.meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            builder
                .append_data(&mut header, format!("{}/", e.name), io::empty())
                .map_err(err)?;
        } else if let Some(target) = &e.link_target {
            header.set_entry_type(EntryType::Symlink);
            builder
                .append_link(&mut header, &e.name, target)
                .map_err(err)?;
        } else {
            let inode = (e.meta.dev(), e.meta.ino());
            if e.meta.nlink() > 1 {
                if let Some(first) = seen_inodes.get(&inode) {
                    header.set_entry_type(EntryType::Link);
                    builder
                        .append_link(&mut header, &e.name, first)
                        .map_err(err)?;
                    continue;
                }
                seen_inodes.insert(inode, e.name.clone());
            }
            let size = e.meta.len();
            header.set_entry_type(EntryType::Regular);
            header.set_size(size);
            let file = File::open(&source_path).map_err(err)?;
            let exact = ExactReader {
                inner: file.take(size),
                remaining: size,
            };
            builder
                .append_data(&mut header, &e.name, exact)
                .map_err(err)?;
        }
    }
    Ok(())
}

/// Gives exactly `remaining` bytes or fails, so a file that shrinks while being
/// archived cannot desynchronise the tar stream.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being archived ({} bytes missing)",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
