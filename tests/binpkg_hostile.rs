//! gpkg/xpak reading against broken and hostile archives. A good package is written
//! with binfarm's writer; variants are re-assembled member by member with the `tar`
//! crate (with a recomputed Manifest unless the Manifest itself is the point), so each
//! case fails for the one reason it is about.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binfarm::binpkg::manifest::{Digests, Manifest, ManifestEntry};
use binfarm::binpkg::{
    self, contents, write_gpkg, BinpkgError, EntryKind, Format, GpkgSource, SignatureStatus,
    WriteOptions,
};
use tar::{EntryType, Header};

const TOP: &str = "hello-1.0-1";

/// One member of a container being assembled.
#[derive(Clone)]
struct Raw {
    name: String,
    data: Vec<u8>,
    kind: EntryType,
    link: Option<String>,
}

impl Raw {
    fn file(name: &str, data: &[u8]) -> Raw {
        Raw {
            name: name.to_owned(),
            data: data.to_vec(),
            kind: EntryType::Regular,
            link: None,
        }
    }
    fn base(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or("")
    }
}

/// Header with the name written straight into the field, so names the tar crate would
/// refuse (`..`, absolute) can be made.
fn raw_header(name: &str, size: u64, kind: EntryType, link: Option<&str>) -> Header {
    let mut h = Header::new_ustar();
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        let lf = &mut h.as_old_mut().linkname;
        lf.fill(0);
        lf[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

fn tar_bytes(members: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let h = raw_header(&m.name, m.data.len() as u64, m.kind, m.link.as_deref());
        b.append(&h, &m.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn manifest_for(members: &[Raw]) -> Vec<u8> {
    let entries = members
        .iter()
        .filter(|m| m.base() != "Manifest")
        .map(|m| ManifestEntry::new(m.base(), m.data.len() as u64, &Digests::of(&m.data)))
        .collect();
    Manifest { entries }.render().into_bytes()
}

/// Assembles a container; `Manifest` members get a fresh Manifest unless `keep_manifest`.
fn assemble(members: &[Raw], keep_manifest: bool) -> Vec<u8> {
    let mut out: Vec<Raw> = members.to_vec();
    if !keep_manifest {
        let fresh = manifest_for(members);
        for m in out.iter_mut().filter(|m| m.base() == "Manifest") {
            m.data = fresh.clone();
        }
    }
    tar_bytes(&out)
}

fn members_of(bytes: &[u8]) -> Vec<Raw> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Raw::file(&name, &data));
    }
    out
}

fn metadata_files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("CATEGORY".to_string(), b"app-misc\n".to_vec());
    m.insert("PF".to_string(), b"hello-1.0\n".to_vec());
    m.insert("SLOT".to_string(), b"0\n".to_vec());
    m.insert("BUILD_ID".to_string(), b"1".to_vec());
    m.insert(
        "environment.bz2".to_string(),
        vec![b'B', b'Z', b'h', 0, 0xff, 0x80],
    );
    m
}

struct Fixture {
    dir: tempfile::TempDir,
    good: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image-src");
        fs::create_dir_all(image.join("usr/bin")).unwrap();
        fs::write(image.join("usr/bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
        let pkg = dir.path().join("good.gpkg.tar");
        let metadata = metadata_files();
        write_gpkg(
            &pkg,
            &GpkgSource {
                top_dir: TOP,
                image_dir: &image,
                metadata: &metadata,
            },
            &WriteOptions {
                zstd_threads: 1,
                mtime: Some(1_700_000_000),
                ..Default::default()
            },
        )
        .unwrap();
        let good = fs::read(&pkg).unwrap();
        Fixture { dir, good }
    }

    fn members(&self) -> Vec<Raw> {
        members_of(&self.good)
    }

    fn path(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
}

/// The error must be a Member error naming `member`, with every `words` in it.
fn expect_member_error(
    result: Result<impl std::fmt::Debug, BinpkgError>,
    member: &str,
    words: &[&str],
) {
    match result {
        Err(BinpkgError::Member {
            member: m, message, ..
        }) => {
            assert!(
                m.contains(member),
                "error names member {m:?}, expected {member:?} ({message})"
            );
            for w in words {
                assert!(
                    message.contains(w),
                    "message for {m} lacks {w:?}: {message}"
                );
            }
        }
        other => panic!("expected a Member error about {member}, got {other:?}"),
    }
}

fn expect_invalid(result: Result<impl std::fmt::Debug, BinpkgError>, words: &[&str]) {
    match result {
        Err(BinpkgError::Invalid { message, .. }) => {
            for w in words {
                assert!(message.contains(w), "message lacks {w:?}: {message}");
            }
        }
        other => panic!("expected an Invalid error with {words:?}, got {other:?}"),
    }
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn replace(members: &mut [Raw], base: &str, data: Vec<u8>) {
    let m = members.iter_mut().find(|m| m.base() == base).unwrap();
    m.data = data;
}

#[test]
fn good_package_reads_and_lists() {
    let f = Fixture::new();
    let p = f.path("ok.gpkg.tar", &f.good);
    let pkg = binpkg::read(&p).unwrap();
    assert_eq!(pkg.format, Format::Gpkg);
    assert_eq!(pkg.top_dir.as_deref(), Some(TOP));
    assert_eq!(pkg.signature, SignatureStatus::Unsigned);
    let names: Vec<&str> = pkg.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "hello-1.0-1/gpkg-1",
            "hello-1.0-1/metadata.tar.zst",
            "hello-1.0-1/image.tar.zst",
            "hello-1.0-1/Manifest"
        ]
    );
    assert_eq!(pkg.metadata.get("CATEGORY"), Some("app-misc"));
    assert_eq!(pkg.metadata.get("PF"), Some("hello-1.0"));
    assert_eq!(pkg.metadata.get("BUILD_ID"), Some("1"));
    assert_eq!(
        pkg.metadata.binary_keys,
        vec!["environment.bz2".to_string()]
    );
    let raw = binpkg::metadata_files(&p).unwrap();
    assert_eq!(raw, metadata_files());
    let listing = contents(&p).unwrap();
    let hello = listing.iter().find(|e| e.path == "/usr/bin/hello").unwrap();
    assert_eq!(hello.kind, EntryKind::File);
    assert_eq!(hello.size, 21);
    assert!(listing
        .iter()
        .any(|e| e.path == "/" && e.kind == EntryKind::Dir));
}

#[test]
fn hash_order_and_single_hash_manifests_are_accepted() {
    let f = Fixture::new();
    let mut members = f.members();
    let lines: Vec<String> = members
        .iter()
        .filter(|m| m.base() != "Manifest")
        .enumerate()
        .map(|(i, m)| {
            let d = Digests::of(&m.data);
            match i % 3 {
                0 => format!(
                    "DATA {} {} SHA512 {} BLAKE2B {}",
                    m.base(),
                    m.data.len(),
                    d.sha512,
                    d.blake2b
                ),
                1 => format!("DATA {} {} SHA512 {}", m.base(), m.data.len(), d.sha512),
                _ => format!(
                    "DATA {} {} BLAKE2B {} SHA256 00ff",
                    m.base(),
                    m.data.len(),
                    d.blake2b
                ),
            }
        })
        .collect();
    replace(
        &mut members,
        "Manifest",
        format!("{}\n", lines.join("\n")).into_bytes(),
    );
    let p = f.path("order.gpkg.tar", &assemble(&members, true));
    assert_eq!(
        binpkg::read(&p).unwrap().metadata.get("PF"),
        Some("hello-1.0")
    );
}

#[test]
fn refuses_escaping_and_absolute_member_names() {
    let f = Fixture::new();
    for (case, name) in [
        ("traversal", format!("{TOP}/../evil")),
        ("absolute", "/etc/evil".to_string()),
        ("deep", format!("{TOP}/sub/evil")),
    ] {
        let mut members = f.members();
        members.insert(2, Raw::file(&name, b"x"));
        let p = f.path(&format!("{case}.gpkg.tar"), &assemble(&members, false));
        let words: &[&str] = match case {
            "traversal" => &[".."],
            "absolute" => &["absolute"],
            _ => &["components"],
        };
        expect_member_error(binpkg::read(&p), "evil", words);
    }
}

#[test]
fn refuses_two_top_directories() {
    let f = Fixture::new();
    let mut members = f.members();
    members.insert(3, Raw::file("other-2.0-1/image.tar.zst", b"x"));
    let p = f.path("twotop.gpkg.tar", &assemble(&members, false));
    expect_member_error(
        binpkg::read(&p),
        "other-2.0-1/image.tar.zst",
        &["second top directory"],
    );
}

#[test]
fn refuses_missing_or_misplaced_identifier() {
    let f = Fixture::new();
    let mut members = f.members();
    members.retain(|m| m.base() != "gpkg-1");
    let p = f.path("noid.gpkg.tar", &assemble(&members, false));
    expect_member_error(binpkg::read(&p), "metadata.tar.zst", &["gpkg-1"]);

    let mut members = f.members();
    let id = members.remove(0);
    members.insert(2, id);
    let p = f.path("lateid.gpkg.tar", &assemble(&members, false));
    expect_member_error(
        binpkg::read(&p),
        "metadata.tar.zst",
        &["first member must be gpkg-1"],
    );
}

#[test]
fn refuses_links_and_devices_in_the_container() {
    let f = Fixture::new();
    for (case, kind) in [
        ("symlink", EntryType::Symlink),
        ("hardlink", EntryType::Link),
        ("chardev", EntryType::Char),
        ("dir", EntryType::Directory),
    ] {
        let mut members = f.members();
        members.insert(
            2,
            Raw {
                name: format!("{TOP}/sneaky"),
                data: Vec::new(),
                kind,
                link: Some("/etc/shadow".into()),
            },
        );
        let p = f.path(&format!("{case}.gpkg.tar"), &assemble(&members, false));
        let word = match case {
            "symlink" => "symlink",
            "hardlink" => "hard link",
            "chardev" => "character device",
            _ => "directory",
        };
        expect_member_error(binpkg::read(&p), "sneaky", &[word, "only regular files"]);
    }
}

#[test]
fn refuses_duplicate_members() {
    let f = Fixture::new();
    let mut members = f.members();
    let image = members
        .iter()
        .find(|m| m.base() == "image.tar.zst")
        .unwrap()
        .clone();
    members.insert(3, image);
    let p = f.path("dup.gpkg.tar", &assemble(&members, false));
    expect_member_error(binpkg::read(&p), "image.tar.zst", &["duplicate"]);
}

#[test]
fn member_and_manifest_must_match_both_ways() {
    let f = Fixture::new();
    // A member the Manifest does not list.
    let mut members = f.members();
    let manifest = manifest_for(&members);
    members.insert(3, Raw::file(&format!("{TOP}/extra"), b"surprise"));
    replace(&mut members, "Manifest", manifest);
    let p = f.path("extra.gpkg.tar", &assemble(&members, true));
    expect_member_error(binpkg::read(&p), "extra", &["not listed in the Manifest"]);

    // A Manifest entry with no member.
    let mut members = f.members();
    let mut text = String::from_utf8(manifest_for(&members)).unwrap();
    let d = Digests::of(b"gone");
    text.push_str(&format!(
        "DATA image.tar.zst.sig 4 BLAKE2B {} SHA512 {}\n",
        d.blake2b, d.sha512
    ));
    replace(&mut members, "Manifest", text.into_bytes());
    let p = f.path("ghost.gpkg.tar", &assemble(&members, true));
    expect_member_error(
        binpkg::read(&p),
        "image.tar.zst.sig",
        &["not in the package"],
    );

    // No Manifest at all.
    let mut members = f.members();
    members.retain(|m| m.base() != "Manifest");
    let p = f.path("nomanifest.gpkg.tar", &assemble(&members, false));
    expect_member_error(binpkg::read(&p), "Manifest", &["missing"]);

    // Wrong size in the Manifest.
    let mut members = f.members();
    let text = String::from_utf8(manifest_for(&members)).unwrap();
    let gpkg1 = Digests::of(b"");
    let text = text.replace(
        &format!("DATA gpkg-1 0 BLAKE2B {}", gpkg1.blake2b),
        &format!("DATA gpkg-1 1 BLAKE2B {}", gpkg1.blake2b),
    );
    replace(&mut members, "Manifest", text.into_bytes());
    let p = f.path("size.gpkg.tar", &assemble(&members, true));
    expect_member_error(binpkg::read(&p), "gpkg-1", &["size mismatch"]);

    // A Manifest with no hash we can check.
    let mut members = f.members();
    let text: String = members
        .iter()
        .filter(|m| m.base() != "Manifest")
        .map(|m| format!("DATA {} {} SHA256 00\n", m.base(), m.data.len()))
        .collect();
    replace(&mut members, "Manifest", text.into_bytes());
    let p = f.path("nohash.gpkg.tar", &assemble(&members, true));
    expect_member_error(binpkg::read(&p), "gpkg-1", &["neither"]);
}

#[test]
fn flipped_byte_in_image_is_named() {
    let f = Fixture::new();
    let members = f.members();
    let image = members
        .iter()
        .find(|m| m.base() == "image.tar.zst")
        .unwrap();
    // Flip a byte inside the image member's data, in place in the container.
    let at = f
        .good
        .windows(image.data.len())
        .position(|w| w == image.data.as_slice())
        .unwrap()
        + image.data.len() / 2;
    let mut bytes = f.good.clone();
    bytes[at] ^= 0x01;
    let p = f.path("flip.gpkg.tar", &bytes);
    expect_member_error(binpkg::read(&p), "hello-1.0-1/image.tar.zst", &["mismatch"]);
    assert!(binpkg::contents(&p).is_err());
}

#[test]
fn truncated_files_are_refused() {
    let f = Fixture::new();
    let len = f.good.len();
    // Inside a member's data, inside a header, and at the end of the last member
    // (no end-of-archive blocks).
    let members = f.members();
    let manifest = members.iter().find(|m| m.base() == "Manifest").unwrap();
    let manifest_at = f
        .good
        .windows(manifest.data.len())
        .position(|w| w == manifest.data.as_slice())
        .unwrap();
    let manifest_end = manifest_at + manifest.data.len().div_ceil(512) * 512;
    let image = members
        .iter()
        .find(|m| m.base() == "image.tar.zst")
        .unwrap();
    let image_at = f
        .good
        .windows(image.data.len())
        .position(|w| w == image.data.as_slice())
        .unwrap();
    assert!(len > manifest_end + 512, "trailing zero blocks are present");
    for (case, cut) in [
        ("mid-image", image_at + 10),
        ("mid-header", 512 + 100),
        ("no-end-blocks", manifest_end),
        ("zero", 0),
    ] {
        let p = f.path(&format!("cut-{case}.gpkg.tar"), &f.good[..cut]);
        match binpkg::read(&p) {
            Err(BinpkgError::Member { message, .. })
            | Err(BinpkgError::Invalid { message, .. }) => {
                assert!(
                    [
                        "truncated",
                        "missing",
                        "neither",
                        "failed to read",
                        "Manifest",
                        "gpkg-1"
                    ]
                    .iter()
                    .any(|w| message.contains(w)),
                    "{case}: {message}"
                );
            }
            other => panic!("{case}: expected an error, got {other:?}"),
        }
    }
    let p = f.path("cut-mid-image.gpkg.tar", &f.good[..image_at + 10]);
    expect_member_error(binpkg::read(&p), "image.tar.zst", &["truncated"]);
    let p = f.path("cut-mid-manifest.gpkg.tar", &f.good[..manifest_at + 10]);
    expect_member_error(binpkg::read(&p), "Manifest", &["truncated"]);
    let p = f.path("cut-end.gpkg.tar", &f.good[..manifest_end]);
    expect_invalid(binpkg::read(&p), &["truncated", "end-of-archive"]);
}

/// A metadata archive with hostile entries, zstd-compressed.
fn metadata_tar_with(extra: Raw) -> Vec<u8> {
    let mut entries = vec![
        Raw::file("metadata/CATEGORY", b"app-misc\n"),
        Raw::file("metadata/PF", b"hello-1.0\n"),
    ];
    entries.push(extra);
    zstd(&tar_bytes(&entries))
}

#[test]
fn refuses_links_devices_and_escapes_inside_metadata() {
    let f = Fixture::new();
    let cases = [
        (
            "symlink",
            EntryType::Symlink,
            "metadata/CHOST",
            Some("/etc/passwd"),
            "symlink",
        ),
        (
            "hardlink",
            EntryType::Link,
            "metadata/CHOST",
            Some("metadata/PF"),
            "hard link",
        ),
        (
            "device",
            EntryType::Block,
            "metadata/CHOST",
            None,
            "block device",
        ),
        ("fifo", EntryType::Fifo, "metadata/CHOST", None, "fifo"),
        (
            "escape",
            EntryType::Regular,
            "metadata/../../etc/cron.d/x",
            None,
            "not metadata/<KEY>",
        ),
        (
            "absolute",
            EntryType::Regular,
            "/etc/cron.d/x",
            None,
            "not metadata/<KEY>",
        ),
        (
            "outside",
            EntryType::Regular,
            "image/usr/bin/x",
            None,
            "not metadata/<KEY>",
        ),
    ];
    for (case, kind, name, link, word) in cases {
        let mut members = f.members();
        let extra = Raw {
            name: name.to_string(),
            data: if kind == EntryType::Regular {
                b"x".to_vec()
            } else {
                Vec::new()
            },
            kind,
            link: link.map(str::to_string),
        };
        replace(&mut members, "metadata.tar.zst", metadata_tar_with(extra));
        let p = f.path(&format!("md-{case}.gpkg.tar"), &assemble(&members, false));
        expect_member_error(binpkg::read(&p), "metadata.tar.zst", &[word]);
    }
    // Duplicate key.
    let mut members = f.members();
    replace(
        &mut members,
        "metadata.tar.zst",
        metadata_tar_with(Raw::file("metadata/PF", b"evil-1.0\n")),
    );
    let p = f.path("md-dup.gpkg.tar", &assemble(&members, false));
    expect_member_error(binpkg::read(&p), "metadata.tar.zst", &["duplicate"]);
}

/// zstd stream that decompresses to `header` followed by `zeros_mib` MiB of zeros,
/// built from one compressed 1 MiB frame repeated (zstd concatenates frames).
fn zstd_bomb(header: &[u8], zeros_mib: usize) -> Vec<u8> {
    let mut out = if header.is_empty() {
        Vec::new()
    } else {
        zstd(header)
    };
    let frame = zstd(&vec![0u8; 1 << 20]);
    for _ in 0..zeros_mib {
        out.extend_from_slice(&frame);
    }
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().path().to_owned())
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn metadata_bombs_are_refused_quickly_without_writing() {
    let f = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    // 1 GiB of zeros as the metadata archive (an empty tar followed by zeros), and a
    // 1 GiB metadata file declared in a tar header.
    let mut big = raw_header("metadata/CATEGORY", 1 << 30, EntryType::Regular, None);
    big.set_cksum();
    for (case, bomb) in [
        ("zeros", zstd_bomb(&[], 1024)),
        ("declared", zstd_bomb(big.as_bytes(), 1024)),
    ] {
        assert!(
            bomb.len() < 1 << 20,
            "bomb is small compressed ({} bytes)",
            bomb.len()
        );
        let mut members = f.members();
        replace(&mut members, "metadata.tar.zst", bomb);
        let p = work.path().join(format!("bomb-{case}.gpkg.tar"));
        fs::write(&p, assemble(&members, false)).unwrap();
        let started = Instant::now();
        let result = binpkg::read(&p);
        let took = started.elapsed();
        expect_member_error(result, "metadata.tar.zst", &["MiB", "bomb"]);
        assert!(took < Duration::from_secs(20), "{case}: took {took:?}");
        assert!(binpkg::metadata_files(&p).is_err());
    }
    let mut left = files_under(work.path());
    left.sort();
    assert_eq!(
        left,
        vec![
            work.path().join("bomb-declared.gpkg.tar"),
            work.path().join("bomb-zeros.gpkg.tar")
        ],
        "reading wrote nothing"
    );
}

#[test]
fn other_metadata_compressions() {
    let f = Fixture::new();
    let metadata_tar = {
        let members = f.members();
        let compressed = &members
            .iter()
            .find(|m| m.base() == "metadata.tar.zst")
            .unwrap()
            .data;
        let mut d = zstd::stream::read::Decoder::new(&compressed[..]).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        out
    };
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&metadata_tar).unwrap();
        e.finish().unwrap()
    };
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&metadata_tar).unwrap();
        e.finish().unwrap()
    };
    for (suffix, data) in [(".gz", gz), (".bz2", bz2), ("", metadata_tar.clone())] {
        let mut members = f.members();
        let m = members
            .iter_mut()
            .find(|m| m.base() == "metadata.tar.zst")
            .unwrap();
        m.name = format!("{TOP}/metadata.tar{suffix}");
        m.data = data;
        let p = f.path(&format!("md{suffix}.gpkg.tar"), &assemble(&members, false));
        let pkg = binpkg::read(&p).unwrap_or_else(|e| panic!("metadata.tar{suffix}: {e}"));
        assert_eq!(pkg.metadata.get("PF"), Some("hello-1.0"));
    }
    let mut members = f.members();
    let m = members
        .iter_mut()
        .find(|m| m.base() == "metadata.tar.zst")
        .unwrap();
    m.name = format!("{TOP}/metadata.tar.xz");
    let p = f.path("md-xz.gpkg.tar", &assemble(&members, false));
    expect_member_error(
        binpkg::read(&p),
        "metadata.tar.xz",
        &["xz compression is not supported"],
    );
}

#[test]
fn image_entries_that_escape_are_refused_when_listing() {
    let f = Fixture::new();
    for (case, name) in [
        ("dotdot", "image/../../etc/cron.d/evil"),
        ("absolute", "/etc/cron.d/evil"),
        ("outside", "usr/bin/evil"),
    ] {
        let image = zstd(&tar_bytes(&[
            Raw {
                name: "image/".into(),
                data: Vec::new(),
                kind: EntryType::Directory,
                link: None,
            },
            Raw::file(name, b"evil"),
        ]));
        let mut members = f.members();
        replace(&mut members, "image.tar.zst", image);
        let p = f.path(&format!("img-{case}.gpkg.tar"), &assemble(&members, false));
        // Reading does not look inside the image; listing does, and refuses.
        binpkg::read(&p).unwrap();
        expect_member_error(contents(&p), "image.tar.zst", &["evil"]);
    }
    // A hard link pointing out of the image.
    let image = zstd(&tar_bytes(&[Raw {
        name: "image/usr/bin/x".into(),
        data: Vec::new(),
        kind: EntryType::Link,
        link: Some("../../etc/shadow".into()),
    }]));
    let mut members = f.members();
    replace(&mut members, "image.tar.zst", image);
    let p = f.path("img-hardlink.gpkg.tar", &assemble(&members, false));
    expect_member_error(contents(&p), "image.tar.zst", &["hard link target"]);
}

#[test]
fn clear_signature_framing_is_strict() {
    let f = Fixture::new();
    let mut members = f.members();
    let body = String::from_utf8(manifest_for(&members)).unwrap();
    let framed = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{body}-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\nDATA smuggled 0 SHA512 00\n"
    );
    replace(&mut members, "Manifest", framed.into_bytes());
    let p = f.path("frame.gpkg.tar", &assemble(&members, true));
    expect_member_error(binpkg::read(&p), "Manifest", &["after the clear-signed"]);

    // A well-framed (unchecked) clear-signed Manifest reads as signed.
    let mut members = f.members();
    let framed = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{body}-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"
    );
    replace(&mut members, "Manifest", framed.into_bytes());
    let p = f.path("framed.gpkg.tar", &assemble(&members, true));
    assert_eq!(
        binpkg::read(&p).unwrap().signature,
        SignatureStatus::Present
    );
}

#[test]
fn writer_handles_long_names_links_and_modes_as_gnu_tar_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image-src");
    let long_base = "l".repeat(120);
    let deep_dir = format!("usr/share/{}/{}", "d".repeat(90), "e".repeat(90));
    fs::create_dir_all(image.join("usr/bin")).unwrap();
    fs::create_dir_all(image.join(&deep_dir)).unwrap();
    fs::create_dir_all(image.join("var/empty")).unwrap();
    fs::write(image.join("usr/bin/tool"), b"tool").unwrap();
    fs::set_permissions(
        image.join("usr/bin/tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    fs::write(image.join("usr/bin").join(&long_base), b"long").unwrap();
    fs::write(image.join(&deep_dir).join("f"), b"deep").unwrap();
    fs::hard_link(image.join("usr/bin/tool"), image.join("usr/bin/tool-link")).unwrap();
    let long_target = format!("../share/{}/{}/f", "d".repeat(90), "e".repeat(90));
    std::os::unix::fs::symlink(&long_target, image.join("usr/bin/deep-link")).unwrap();
    let top = format!("{}-1.0-1", "p".repeat(140));
    let pkg = dir.path().join("long.gpkg.tar");
    let metadata = metadata_files();
    write_gpkg(
        &pkg,
        &GpkgSource {
            top_dir: &top,
            image_dir: &image,
            metadata: &metadata,
        },
        &WriteOptions::default(),
    )
    .unwrap();
    let read = binpkg::read(&pkg).unwrap();
    assert_eq!(read.top_dir.as_deref(), Some(top.as_str()));
    let listing = contents(&pkg).unwrap();
    let find = |p: &str| {
        listing
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} not listed"))
    };
    assert_eq!(find(&format!("/usr/bin/{long_base}")).size, 4);
    assert_eq!(find("/usr/bin/tool").mode, 0o4755);
    let link = find("/usr/bin/tool-link");
    assert_eq!(link.kind, EntryKind::Hardlink);
    assert_eq!(link.link_target.as_deref(), Some("/usr/bin/tool"));
    let sym = find("/usr/bin/deep-link");
    assert_eq!(sym.kind, EntryKind::Symlink);
    assert_eq!(sym.link_target.as_deref(), Some(long_target.as_str()));
    assert_eq!(find(&format!("/{deep_dir}/f")).size, 4);
    assert_eq!(find("/var/empty").kind, EntryKind::Dir);

    // GNU tar reads the container and the image the same way.
    let out = Command::new("tar").arg("-tf").arg(&pkg).output().unwrap();
    assert!(out.status.success());
    let outer = String::from_utf8_lossy(&out.stdout);
    assert!(
        outer.lines().next().unwrap().ends_with("/gpkg-1"),
        "{outer}"
    );
    assert!(outer.contains(&format!("{top}/image.tar.zst")), "{outer}");
    let extract = dir.path().join("extracted");
    fs::create_dir_all(&extract).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -xOf '{}' '{top}/image.tar.zst' | zstd -dc | tar -xf - -C '{}'",
            pkg.display(),
            extract.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read(extract.join("image/usr/bin").join(&long_base)).unwrap(),
        b"long"
    );
    assert_eq!(
        fs::read(extract.join("image").join(&deep_dir).join("f")).unwrap(),
        b"deep"
    );
    assert_eq!(
        fs::read_link(extract.join("image/usr/bin/deep-link")).unwrap(),
        PathBuf::from(&long_target)
    );
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(extract.join("image/usr/bin/tool")).unwrap();
    let b = fs::metadata(extract.join("image/usr/bin/tool-link")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    assert_eq!(a.mode() & 0o7777, 0o4755);
}

#[test]
fn writer_is_deterministic_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image-src");
    for i in 0..20 {
        fs::create_dir_all(image.join(format!("usr/lib/d{i}"))).unwrap();
        fs::write(image.join(format!("usr/lib/d{i}/f")), format!("{i}")).unwrap();
    }
    let metadata = metadata_files();
    let opts = WriteOptions {
        mtime: Some(1),
        zstd_threads: 2,
        ..Default::default()
    };
    let src = GpkgSource {
        top_dir: TOP,
        image_dir: &image,
        metadata: &metadata,
    };
    let a = dir.path().join("out/a.gpkg.tar");
    let b = dir.path().join("out/b.gpkg.tar");
    fs::create_dir_all(a.parent().unwrap()).unwrap();
    write_gpkg(&a, &src, &opts).unwrap();
    write_gpkg(&b, &src, &opts).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let listing = contents(&a).unwrap();
    let paths: Vec<&str> = listing.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "entries in name order");
    // Only the two packages in the directory: no temporary files left.
    let mut left: Vec<String> = fs::read_dir(a.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["a.gpkg.tar", "b.gpkg.tar"]);
    // A failed write (bad top directory) leaves nothing behind.
    let bad = GpkgSource {
        top_dir: "../x",
        image_dir: &image,
        metadata: &metadata,
    };
    assert!(write_gpkg(&dir.path().join("out/c.gpkg.tar"), &bad, &opts).is_err());
    assert_eq!(fs::read_dir(a.parent().unwrap()).unwrap().count(), 2);
}

fn xpak_segment(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    for (name, value) in entries {
        index.extend_from_slice(&(name.len() as u32).to_be_bytes());
        index.extend_from_slice(name.as_bytes());
        index.extend_from_slice(&(data.len() as u32).to_be_bytes());
        index.extend_from_slice(&(value.len() as u32).to_be_bytes());
        data.extend_from_slice(value);
    }
    let mut seg = b"XPAKPACK".to_vec();
    seg.extend_from_slice(&(index.len() as u32).to_be_bytes());
    seg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    seg.extend_from_slice(&index);
    seg.extend_from_slice(&data);
    seg.extend_from_slice(b"XPAKSTOP");
    seg
}

fn xpak_file(image_tar: &[u8], segment: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(image_tar).unwrap();
    let mut out = e.finish().unwrap();
    out.extend_from_slice(segment);
    out.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    out.extend_from_slice(b"STOP");
    out
}

#[test]
fn xpak_reads_and_refuses_bad_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let image = tar_bytes(&[Raw::file("./usr/bin/hello", b"hi")]);
    let seg = xpak_segment(&[
        ("CATEGORY", b"app-misc\n"),
        ("PF", b"hello-1.0\n"),
        ("environment.bz2", &[b'B', b'Z', 0, 0xff]),
    ]);
    let good = dir.path().join("hello-1.0-1.xpak");
    fs::write(&good, xpak_file(&image, &seg)).unwrap();
    let pkg = binpkg::read(&good).unwrap();
    assert_eq!(pkg.format, Format::Xpak);
    assert_eq!(pkg.metadata.get("PF"), Some("hello-1.0"));
    assert_eq!(
        pkg.metadata.binary_keys,
        vec!["environment.bz2".to_string()]
    );
    assert_eq!(pkg.signature, SignatureStatus::Unsigned);
    let listing = contents(&good).unwrap();
    assert_eq!(listing[0].path, "/usr/bin/hello");
    assert_eq!(listing[0].size, 2);

    // Segment length pointing before the start of the file.
    let mut bytes = fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let p = dir.path().join("len.xpak");
    fs::write(&p, &bytes).unwrap();
    expect_member_error(binpkg::read(&p), "XPAK", &["past the start"]);

    // Data offset out of range inside the segment.
    let mut bad_seg = seg.clone();
    let at = 16 + 4 + "CATEGORY".len();
    bad_seg[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
    let p = dir.path().join("offset.xpak");
    fs::write(&p, xpak_file(&image, &bad_seg)).unwrap();
    expect_member_error(binpkg::read(&p), "XPAK", &["outside"]);

    // Traversal key.
    let p = dir.path().join("key.xpak");
    fs::write(
        &p,
        xpak_file(&image, &xpak_segment(&[("../../etc/passwd", b"x")])),
    )
    .unwrap();
    expect_member_error(binpkg::read(&p), "XPAK", &["not a plain metadata key"]);

    // Truncated: the trailer is gone, and the rest is no tar either.
    let p = dir.path().join("cut.xpak");
    fs::write(&p, &fs::read(&good).unwrap()[..n - 3]).unwrap();
    expect_invalid(binpkg::read(&p), &["neither"]);

    // xpak cannot be signed or verified.
    assert!(matches!(
        binpkg::metadata_files(&good).map(|m| m.len()),
        Ok(3)
    ));
}
