//! Reading a gpkg in one streaming pass: structure, Manifest, metadata.
//!
//! Every member is hashed as it streams by; the compressed metadata is held in memory
//! (capped) and only decompressed once the Manifest has vouched for it. The image is
//! never decompressed here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::binpkg::compress::{split_archive_name, Compression};
use crate::binpkg::limits;
use crate::binpkg::manifest::{
    is_plain_member_name, split_clear_signed, DigestWriter, Digests, Manifest,
};
use crate::binpkg::tarwalk::{self, BLOCK};
use crate::binpkg::{
    is_metadata_key, Binpkg, BinpkgError, Format, Member, Metadata, SignatureStatus,
};

pub const IDENTIFIER: &str = "gpkg-1";
pub const MANIFEST: &str = "Manifest";

/// What a member is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Identifier,
    Manifest,
    Metadata(Compression),
    Image(Compression),
    /// `<member>.sig`
    Signature,
    /// Not defined by GLEP 78 today; allowed when the Manifest lists it.
    Other,
}

impl Role {
    pub fn of(name: &str) -> Role {
        if name == IDENTIFIER {
            return Role::Identifier;
        }
        if name == MANIFEST {
            return Role::Manifest;
        }
        if name.ends_with(".sig") {
            return Role::Signature;
        }
        match split_archive_name(name) {
            Some(("metadata", c)) => Role::Metadata(c),
            Some(("image", c)) => Role::Image(c),
            _ => Role::Other,
        }
    }

    /// Members that carry a detached signature in a signed package.
    pub fn is_signed_archive(self) -> bool {
        matches!(self, Role::Metadata(_) | Role::Image(_))
    }
}

#[derive(Debug, Clone)]
pub struct ScannedMember {
    /// Name without the top directory.
    pub name: String,
    pub role: Role,
    pub size: u64,
    pub data_offset: u64,
    pub mode: u32,
    pub mtime: u64,
    /// None for the Manifest (it does not list itself).
    pub digests: Option<Digests>,
    /// Contents of the small members (identifier, signatures, Manifest).
    pub content: Option<Vec<u8>>,
}

/// The result of a checked pass over a gpkg.
#[derive(Debug, Clone)]
pub struct Scan {
    pub top_dir: String,
    /// In container order.
    pub members: Vec<ScannedMember>,
    pub manifest: Manifest,
    pub manifest_clear_signed: bool,
    /// The Manifest member as stored (clear-signed text when signed).
    pub manifest_raw: String,
    pub metadata_files: BTreeMap<String, Vec<u8>>,
}

impl Scan {
    pub fn member(&self, name: &str) -> Option<&ScannedMember> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn full_name(&self, name: &str) -> String {
        format!("{}/{name}", self.top_dir)
    }

    pub fn is_signed(&self) -> bool {
        self.manifest_clear_signed || self.members.iter().any(|m| m.role == Role::Signature)
    }

    pub fn image(&self) -> Option<&ScannedMember> {
        self.members
            .iter()
            .find(|m| matches!(m.role, Role::Image(_)))
    }

    pub fn to_binpkg(&self) -> Binpkg {
        Binpkg {
            format: Format::Gpkg,
            top_dir: Some(self.top_dir.clone()),
            metadata: Metadata::from_files(&self.metadata_files),
            members: self
                .members
                .iter()
                .map(|m| Member {
                    name: self.full_name(&m.name),
                    size: m.size,
                })
                .collect(),
            signature: if self.is_signed() {
                SignatureStatus::Present
            } else {
                SignatureStatus::Unsigned
            },
        }
    }
}

struct Ctx<'p> {
    path: &'p Path,
}

impl Ctx<'_> {
    fn member(&self, member: &str, message: impl Into<String>) -> BinpkgError {
        BinpkgError::Member {
            path: self.path.to_owned(),
            member: member.to_owned(),
            message: message.into(),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> BinpkgError {
        BinpkgError::Invalid {
            path: self.path.to_owned(),
            message: message.into(),
        }
    }

    fn io(&self, source: io::Error) -> BinpkgError {
        BinpkgError::Io {
            path: self.path.to_owned(),
            source,
        }
    }
}

/// Reads a gpkg and checks everything but signatures.
pub fn read(path: &Path) -> Result<Binpkg, BinpkgError> {
    Ok(scan(path)?.to_binpkg())
}

/// One pass over the container: structure and Manifest checks, then the metadata.
pub fn scan(path: &Path) -> Result<Scan, BinpkgError> {
    let ctx = Ctx { path };
    let file = File::open(path).map_err(|e| ctx.io(e))?;
    let file_len = file.metadata().map_err(|e| ctx.io(e))?.len();
    let reader = BufReader::with_capacity(1 << 20, file);

    let mut top_dir: Option<String> = None;
    let mut members: Vec<ScannedMember> = Vec::new();
    let mut metadata_compressed: Option<Vec<u8>> = None;

    tarwalk::walk(
        reader,
        |message| ctx.invalid(format!("container: {message}")),
        |item| {
            let raw_name = String::from_utf8(item.path.clone()).map_err(|_| {
                ctx.member(
                    &String::from_utf8_lossy(&item.path),
                    "member name is not UTF-8",
                )
            })?;
            if members.len() >= limits::MEMBERS_MAX {
                return Err(ctx.member(
                    &raw_name,
                    format!("more than {} members", limits::MEMBERS_MAX),
                ));
            }
            if !matches!(
                item.kind,
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                return Err(ctx.member(
                    &raw_name,
                    format!(
                        "{} entry in the container (only regular files are allowed)",
                        entry_kind_name(item.kind)
                    ),
                ));
            }
            let (top, name) = split_member_path(&raw_name).map_err(|m| ctx.member(&raw_name, m))?;
            match &top_dir {
                None => {
                    if name != IDENTIFIER {
                        return Err(ctx.member(
                            &raw_name,
                            format!(
                                "first member must be {IDENTIFIER} (missing gpkg-1: not a gpkg)"
                            ),
                        ));
                    }
                    top_dir = Some(top.to_owned());
                }
                Some(first) if first != top => {
                    return Err(ctx.member(
                        &raw_name,
                        format!("second top directory {top:?} (the package is in {first:?})"),
                    ));
                }
                Some(_) => {}
            }
            if members.iter().any(|m| m.name == name) {
                return Err(ctx.member(&raw_name, "duplicate member"));
            }
            let role = Role::of(name);
            let cap = match role {
                Role::Identifier => Some(limits::IDENTIFIER_MAX),
                Role::Manifest => Some(limits::MANIFEST_MAX),
                Role::Signature => Some(limits::SIGNATURE_MAX),
                Role::Metadata(_) => Some(limits::METADATA_COMPRESSED_MAX),
                Role::Image(_) | Role::Other => None,
            };
            if let Some(cap) = cap {
                if item.size > cap {
                    return Err(ctx.member(
                        &raw_name,
                        format!(
                            "{} bytes, more than the {cap} allowed for this member",
                            item.size
                        ),
                    ));
                }
            }
            let mode = item.entry.header().mode().unwrap_or(0o644);
            let mtime = item.entry.header().mtime().unwrap_or(0);
            let (mut content, digests) = if cap.is_some() {
                let mut hasher = DigestWriter::new(Vec::new());
                tarwalk::copy_exact(item.entry, &mut hasher, item.size)
                    .map_err(|e| ctx.member(&raw_name, e.to_string()))?;
                let (content, digests) = hasher.finish();
                (Some(content), digests)
            } else {
                // Large members are hashed as they stream by, nothing is kept.
                let mut hasher = DigestWriter::new(io::sink());
                tarwalk::copy_exact(item.entry, &mut hasher, item.size)
                    .map_err(|e| ctx.member(&raw_name, e.to_string()))?;
                (None, hasher.finish().1)
            };
            if let Role::Metadata(_) = role {
                metadata_compressed = content.take();
            }
            members.push(ScannedMember {
                name: name.to_owned(),
                role,
                size: item.size,
                data_offset: item.data_offset,
                mode,
                mtime,
                digests: (role != Role::Manifest).then_some(digests),
                content,
            });
            Ok(())
        },
    )?;

    let top_dir =
        top_dir.ok_or_else(|| ctx.invalid("empty archive (missing gpkg-1: not a gpkg)"))?;
    let full = |name: &str| format!("{top_dir}/{name}");

    check_end_of_archive(path, &members, file_len).map_err(|m| ctx.invalid(m))?;

    // Required members, one of each kind.
    let manifest_member = members
        .iter()
        .find(|m| m.role == Role::Manifest)
        .ok_or_else(|| ctx.member(&full(MANIFEST), "missing (every gpkg needs a Manifest)"))?;
    for (what, is) in [
        (
            "metadata.tar*",
            (|r: Role| matches!(r, Role::Metadata(_))) as fn(Role) -> bool,
        ),
        ("image.tar*", |r: Role| matches!(r, Role::Image(_))),
    ] {
        let found: Vec<&ScannedMember> = members.iter().filter(|m| is(m.role)).collect();
        match found.len() {
            0 => return Err(ctx.member(&full(what), "missing required archive")),
            1 => {}
            _ => return Err(ctx.member(&full(&found[1].name), format!("second {what} archive"))),
        }
    }
    for m in members.iter().filter(|m| m.role == Role::Signature) {
        let target = &m.name[..m.name.len() - 4];
        match Role::of(target) {
            Role::Signature | Role::Manifest => {
                return Err(ctx.member(
                    &full(&m.name),
                    "signature of a member that is not signed this way",
                ))
            }
            _ => {}
        }
        if !members.iter().any(|o| o.name == target) {
            return Err(ctx.member(
                &full(&m.name),
                format!("signature for a missing member {target}"),
            ));
        }
    }

    // Manifest: parse, then every member against it and it against the members.
    let raw = manifest_member.content.clone().unwrap_or_default();
    let manifest_raw =
        String::from_utf8(raw).map_err(|_| ctx.member(&full(MANIFEST), "not UTF-8 text"))?;
    let text = split_clear_signed(&manifest_raw).map_err(|m| ctx.member(&full(MANIFEST), m))?;
    let manifest = Manifest::parse(&text.body).map_err(|m| ctx.member(&full(MANIFEST), m))?;
    for m in &members {
        let Some(digests) = &m.digests else { continue };
        let entry = manifest
            .get(&m.name)
            .ok_or_else(|| ctx.member(&full(&m.name), "member is not listed in the Manifest"))?;
        entry
            .check(m.size, digests)
            .map_err(|message| ctx.member(&full(&m.name), message))?;
    }
    for entry in &manifest.entries {
        if entry.name == MANIFEST || !members.iter().any(|m| m.name == entry.name) {
            return Err(ctx.member(
                &full(&entry.name),
                "listed in the Manifest but not in the package",
            ));
        }
    }

    // Only now that the Manifest vouches for it: decompress the metadata.
    let metadata_member = members
        .iter()
        .find(|m| matches!(m.role, Role::Metadata(_)))
        .ok_or_else(|| ctx.member(&full("metadata.tar*"), "missing required archive"))?;
    let Role::Metadata(compression) = metadata_member.role else {
        return Err(ctx.invalid("metadata member lost its role"));
    };
    let compressed = metadata_compressed.unwrap_or_default();
    let metadata_files = decode_metadata(&compressed, compression)
        .map_err(|m| ctx.member(&full(&metadata_member.name), m))?;

    Ok(Scan {
        top_dir,
        members,
        manifest,
        manifest_clear_signed: text.clear_signed,
        manifest_raw,
        metadata_files,
    })
}

pub fn entry_kind_name(kind: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match kind {
        T::Regular | T::Continuous => "regular file",
        T::Link => "hard link",
        T::Symlink => "symlink",
        T::Char => "character device",
        T::Block => "block device",
        T::Directory => "directory",
        T::Fifo => "fifo",
        T::GNUSparse => "sparse file",
        _ => "unsupported",
    }
}

/// `<top>/<name>`: exactly two plain components.
fn split_member_path(raw: &str) -> Result<(&str, &str), String> {
    if raw.starts_with('/') {
        return Err("absolute member name".into());
    }
    let parts: Vec<&str> = raw.split('/').collect();
    if parts.contains(&"..") {
        return Err("member name escapes with '..'".into());
    }
    if parts.len() != 2 {
        return Err(format!(
            "member must be <top directory>/<name>, this one has {} path components",
            parts.len()
        ));
    }
    let (top, name) = (parts[0], parts[1]);
    if !is_plain_member_name(top) {
        return Err(format!("bad top directory {top:?}"));
    }
    if !is_plain_member_name(name) {
        return Err(format!("bad member name {name:?}"));
    }
    Ok((top, name))
}

/// A complete archive ends with at least one zero block after the last member; its
/// absence means the file was cut at a member boundary.
fn check_end_of_archive(
    path: &Path,
    members: &[ScannedMember],
    file_len: u64,
) -> Result<(), String> {
    let end = members
        .iter()
        .map(|m| m.data_offset + m.size.div_ceil(BLOCK) * BLOCK)
        .max()
        .unwrap_or(0);
    if end + BLOCK > file_len {
        return Err(format!(
            "truncated: no end-of-archive block after the last member (file is {file_len} bytes)"
        ));
    }
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(end)).map_err(|e| e.to_string())?;
    let mut block = [0u8; BLOCK as usize];
    file.read_exact(&mut block).map_err(|e| e.to_string())?;
    if block.iter().any(|&b| b != 0) {
        return Err("data after the last member where the end-of-archive block should be".into());
    }
    Ok(())
}

/// Counts decompressed bytes and fails past `limit`, so a small compressed member
/// cannot expand without bound.
pub struct CappedReader<R> {
    inner: R,
    limit: u64,
    count: u64,
    pub exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> CappedReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        CappedReader {
            inner,
            limit,
            count: 0,
            exceeded: Default::default(),
        }
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded.set(true);
            return Err(io::Error::other(format!(
                "decompressed data exceeds the {} byte limit",
                self.limit
            )));
        }
        Ok(n)
    }
}

/// Unpacks `metadata/<KEY>` files from the (compressed) metadata archive into memory.
/// Only regular files (and the `metadata` directory itself) are allowed; sizes and the
/// total are capped, and trailing data after the archive counts toward the cap.
pub fn decode_metadata(
    compressed: &[u8],
    compression: Compression,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let decoder = compression.decoder(compressed)?;
    let capped = CappedReader::new(decoder, limits::METADATA_TOTAL_MAX);
    let exceeded = capped.exceeded.clone();
    let bomb = || {
        format!(
            "decompressed metadata exceeds {} MiB (decompression bomb?)",
            limits::METADATA_TOTAL_MAX >> 20
        )
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive_reader = capped;
    let walked = tarwalk::walk(
        &mut archive_reader,
        |m| m,
        |item| {
            let name = String::from_utf8_lossy(&item.path).into_owned();
            let trimmed = name.strip_prefix("./").unwrap_or(&name);
            if item.kind == tar::EntryType::Directory {
                if trimmed.trim_end_matches('/') == "metadata" {
                    return Ok(());
                }
                return Err(format!("entry {name:?}: directory other than metadata/"));
            }
            if !matches!(
                item.kind,
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                return Err(format!(
                    "entry {name:?}: {} in the metadata archive (only regular files are allowed)",
                    entry_kind_name(item.kind)
                ));
            }
            let key = trimmed
                .strip_prefix("metadata/")
                .filter(|k| is_metadata_key(k))
                .ok_or_else(|| format!("entry {name:?}: not metadata/<KEY>"))?;
            if files.len() >= limits::METADATA_ENTRIES_MAX {
                return Err(format!(
                    "more than {} metadata entries",
                    limits::METADATA_ENTRIES_MAX
                ));
            }
            if files.contains_key(key) {
                return Err(format!("entry {name:?}: duplicate"));
            }
            if item.size > limits::METADATA_FILE_MAX {
                return Err(format!(
                    "entry {name:?}: {} bytes, more than the {} MiB allowed (decompression bomb?)",
                    item.size,
                    limits::METADATA_FILE_MAX >> 20
                ));
            }
            let mut data = Vec::with_capacity(item.size.min(1 << 20) as usize);
            tarwalk::copy_exact(item.entry, &mut data, item.size)
                .map_err(|e| format!("entry {name:?}: {e}"))?;
            files.insert(key.to_owned(), data);
            Ok(())
        },
    );
    if exceeded.get() {
        return Err(bomb());
    }
    walked?;
    // Whatever follows the end-of-archive blocks must stay under the cap too.
    if let Err(e) = io::copy(&mut archive_reader, &mut io::sink()) {
        if exceeded.get() {
            return Err(bomb());
        }
        return Err(format!("after the metadata archive: {e}"));
    }
    Ok(files)
}
