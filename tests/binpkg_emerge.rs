//! binpkg against real Portage: packages built by real `emerge` (unsigned gpkg, gpkg
//! signed by Portage with gpg, xpak) are read and checked; packages that binfarm writes
//! or signs are checked by Portage's own gpkg code (with gpg verification) and by gpg
//! the way Portage calls it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use binfarm::binpkg::{
    self, contents, write_gpkg, BinpkgError, EntryKind, Format, GpkgSource, SignatureStatus,
    WriteOptions,
};
use binfarm::profile::BinpkgFormat;
use binfarm::sign::{Keyring, SigningKey};
use binfarm::worker::buildroot::BuildRoot;
use common::GpgKey;

fn member_data(gpkg: &Path, top: &str, name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(fs::File::open(gpkg).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(&format!("{top}/{name}")) {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return data;
        }
    }
    panic!("{name} not in {}", gpkg.display());
}

/// `gpg --verify` as Portage runs it (BINPKG_GPG_VERIFY_BASE_COMMAND, status on fd 2):
/// good when gpg exits 0 with GOODSIG and full or ultimate trust.
fn portage_style_gpg_verify(key: &GpgKey, signature: Option<&Path>, data: &[u8]) -> (bool, String) {
    let mut cmd = Command::new("gpg");
    cmd.args([
        "--verify",
        "--batch",
        "--no-tty",
        "--no-auto-check-trustdb",
        "--status-fd",
        "2",
    ])
    .arg("--homedir")
    .arg(&key.verify_home);
    match signature {
        Some(sig) => cmd.arg(sig).arg("-"),
        None => cmd.args(["--output", "-", "-"]),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gpg");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
    let out = child.wait_with_output().unwrap();
    let status = String::from_utf8_lossy(&out.stderr).into_owned();
    let good = status.lines().any(|l| l.starts_with("[GNUPG:] GOODSIG"));
    let trusted = status
        .lines()
        .any(|l| l.starts_with("[GNUPG:] TRUST_ULTIMATE") || l.starts_with("[GNUPG:] TRUST_FULLY"));
    (out.status.success() && good && trusted, status)
}

/// Checks every `.sig` and the clear-signed Manifest with gpg as Portage does.
fn gpg_verifies_like_portage(key: &GpgKey, gpkg: &Path, top: &str, dir: &Path) {
    for member in ["metadata.tar.zst", "image.tar.zst"] {
        let sig = dir.join(format!("{member}.sig"));
        fs::write(&sig, member_data(gpkg, top, &format!("{member}.sig"))).unwrap();
        let (ok, status) =
            portage_style_gpg_verify(key, Some(&sig), &member_data(gpkg, top, member));
        assert!(ok, "gpg does not accept {member}.sig:\n{status}");
        // VALIDSIG field 9 is the hash algorithm: 10 = SHA-512.
        let validsig = status
            .lines()
            .find(|l| l.starts_with("[GNUPG:] VALIDSIG"))
            .unwrap();
        assert_eq!(validsig.split(' ').nth(9), Some("10"), "{validsig}");
    }
    let (ok, status) = portage_style_gpg_verify(key, None, &member_data(gpkg, top, "Manifest"));
    assert!(ok, "gpg does not accept the Manifest:\n{status}");
}

const PORTAGE_CHECK: &str = r#"
import sys, portage
from portage.gpkg import gpkg
try:
    package = gpkg(portage.settings, None, sys.argv[1])
    metadata = package.get_metadata()
    package._verify_binpkg()
except Exception as e:
    print("PORTAGE-ERROR %s: %s" % (type(e).__name__, e))
    sys.exit(3)
print("PF=" + metadata["PF"].decode().strip())
"#;

/// Portage's own gpkg code (portage.gpkg) reads and checks a package; with
/// `binpkg-request-signature` it requires every signature and gpg-verifies it against
/// the build root's verify keyring. Returns the PF read, or what Portage raised.
fn portage_reads_gpkg(
    root: &BuildRoot,
    gpkg: &Path,
    require_signature: bool,
) -> Result<String, String> {
    let features = if require_signature {
        "binpkg-request-signature"
    } else {
        "-binpkg-request-signature"
    };
    let out = root
        .portage_command(
            "python",
            ["-c", PORTAGE_CHECK],
            &[("FEATURES".into(), features.into())],
        )
        .arg(gpkg)
        .output()
        .expect("running Portage's python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout
            .lines()
            .find_map(|l| l.strip_prefix("PF="))
            .unwrap_or("")
            .to_string())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn one_binpkg(pkgdir: &Path, rel: &str) -> PathBuf {
    let p = pkgdir.join(rel);
    assert!(p.is_file(), "{} missing", p.display());
    p
}

struct Built {
    /// Portage-signed v3 build of hello and greeter (with libhello).
    signed: common::FixtureBuild,
    unsigned: PathBuf,
    xpak: PathBuf,
}

fn built() -> Built {
    let signed = common::build_fixture(
        "x86-64-v3",
        &["app-misc/hello", "app-misc/greeter"],
        true,
        BinpkgFormat::Gpkg,
    );
    let unsigned =
        common::build_fixture("x86-64-v3", &["app-misc/hello"], false, BinpkgFormat::Gpkg);
    let xpak = common::build_fixture("x86-64-v3", &["app-misc/hello"], false, BinpkgFormat::Xpak);
    Built {
        unsigned: one_binpkg(&unsigned.pkgdir, "app-misc/hello/hello-1.0-1.gpkg.tar"),
        xpak: one_binpkg(&xpak.pkgdir, "app-misc/hello/hello-1.0-1.xpak"),
        signed,
    }
}

fn find(listing: &[binpkg::ContentsEntry], p: &str) -> binpkg::ContentsEntry {
    listing
        .iter()
        .find(|e| e.path == p)
        .cloned()
        .unwrap_or_else(|| panic!("{p} not in {listing:?}"))
}

fn names(pkg: &binpkg::Binpkg) -> Vec<String> {
    pkg.members.iter().map(|m| m.name.clone()).collect()
}

const SIGNED_LAYOUT: [&str; 6] = [
    "hello-1.0-1/gpkg-1",
    "hello-1.0-1/metadata.tar.zst",
    "hello-1.0-1/metadata.tar.zst.sig",
    "hello-1.0-1/image.tar.zst",
    "hello-1.0-1/image.tar.zst.sig",
    "hello-1.0-1/Manifest",
];

#[test]
fn emerge_built_packages_read_and_check() {
    let b = built();

    // Unsigned gpkg from emerge.
    let pkg = binpkg::read(&b.unsigned).unwrap();
    assert_eq!(pkg.format, Format::Gpkg);
    assert_eq!(pkg.top_dir.as_deref(), Some("hello-1.0-1"));
    assert_eq!(pkg.signature, SignatureStatus::Unsigned);
    assert_eq!(
        names(&pkg),
        [
            "hello-1.0-1/gpkg-1",
            "hello-1.0-1/metadata.tar.zst",
            "hello-1.0-1/image.tar.zst",
            "hello-1.0-1/Manifest"
        ]
    );
    let md = &pkg.metadata;
    assert_eq!(md.get("CATEGORY"), Some("app-misc"));
    assert_eq!(md.get("PF"), Some("hello-1.0"));
    assert_eq!(md.get("BUILD_ID"), Some("1"));
    assert_eq!(md.get("SLOT"), Some("0"));
    assert_eq!(md.get("EAPI"), Some("8"));
    assert!(md.get("CFLAGS").unwrap().contains("-march=x86-64-v3"));
    assert!(md.get("hello-1.0.ebuild").unwrap().contains("dobin hello"));
    assert!(md.binary_keys.contains(&"environment.bz2".to_string()));
    let listing = contents(&b.unsigned).unwrap();
    let hello = find(&listing, "/usr/bin/hello");
    assert_eq!((hello.kind, hello.mode), (EntryKind::File, 0o755));
    assert!(hello.size > 1000);
    assert_eq!(find(&listing, "/").kind, EntryKind::Dir);

    // Signed by Portage (gpg): same metadata, .sig members after each archive.
    let signed = one_binpkg(&b.signed.pkgdir, "app-misc/hello/hello-1.0-1.gpkg.tar");
    let spkg = binpkg::read(&signed).unwrap();
    assert_eq!(spkg.signature, SignatureStatus::Present);
    assert_eq!(names(&spkg), SIGNED_LAYOUT);
    assert_eq!(spkg.metadata.get("PF"), Some("hello-1.0"));
    let libhello = one_binpkg(
        &b.signed.pkgdir,
        "dev-libs/libhello/libhello-1.0-1.gpkg.tar",
    );
    let lib = binpkg::read(&libhello).unwrap();
    assert_eq!(lib.metadata.get("SLOT"), Some("0/1"));
    assert!(lib
        .metadata
        .get("PROVIDES")
        .unwrap_or("")
        .contains("libhello.so.1"));
    let lib_listing = contents(&libhello).unwrap();
    let so = find(&lib_listing, "/usr/lib64/libhello.so");
    assert_eq!(so.kind, EntryKind::Symlink);
    assert_eq!(so.link_target.as_deref(), Some("libhello.so.1"));

    // xpak.
    let xp = binpkg::read(&b.xpak).unwrap();
    assert_eq!(xp.format, Format::Xpak);
    assert_eq!(xp.top_dir, None);
    assert_eq!(xp.metadata.get("CATEGORY"), Some("app-misc"));
    assert_eq!(xp.metadata.get("PF"), Some("hello-1.0"));
    assert!(xp
        .metadata
        .binary_keys
        .contains(&"environment.bz2".to_string()));
    assert!(
        xp.members[0].name.starts_with("image.tar"),
        "{:?}",
        xp.members
    );
    let xl = contents(&b.xpak).unwrap();
    assert_eq!(find(&xl, "/usr/bin/hello").kind, EntryKind::File);

    // A flipped byte in the image: binfarm names the member, Portage refuses too.
    let work = common::tempdir();
    let flipped = work.path().join("flipped.gpkg.tar");
    let mut bytes = fs::read(&b.unsigned).unwrap();
    let image = member_data(&b.unsigned, "hello-1.0-1", "image.tar.zst");
    let at = bytes
        .windows(image.len())
        .position(|w| w == image.as_slice())
        .unwrap()
        + image.len() / 3;
    bytes[at] ^= 0x40;
    fs::write(&flipped, &bytes).unwrap();
    match binpkg::read(&flipped) {
        Err(BinpkgError::Member { member, .. }) => assert_eq!(member, "hello-1.0-1/image.tar.zst"),
        other => panic!("flipped image accepted: {other:?}"),
    }
    let root = &b.signed.root;
    assert!(portage_reads_gpkg(root, &flipped, false).is_err());
    assert_eq!(
        portage_reads_gpkg(root, &b.unsigned, false).as_deref(),
        Ok("hello-1.0")
    );
}

#[test]
fn emerge_built_packages_sign_and_verify() {
    let b = built();
    let gpg_key = common::signing_key();
    let key = SigningKey::from_armored_file(&gpg_key.secret_key_file, None).unwrap();
    let keyring = Keyring::load(&gpg_key.public_key_file).unwrap();
    let root = &b.signed.root;
    let work = common::tempdir();

    // Portage's (gpg's) signatures verify with binfarm's keyring.
    let signed = one_binpkg(&b.signed.pkgdir, "app-misc/hello/hello-1.0-1.gpkg.tar");
    match binpkg::verify(&signed, &keyring).unwrap().signature {
        SignatureStatus::Good { signers } => {
            assert_eq!(signers.len(), 1);
            assert_eq!(signers[0].primary_fingerprint, gpg_key.fingerprint);
        }
        other => panic!("expected good signatures, got {other:?}"),
    }
    // Unsigned packages and xpak fail verification.
    match binpkg::verify(&b.unsigned, &keyring) {
        Err(BinpkgError::Member {
            member, message, ..
        }) => {
            assert_eq!(member, "hello-1.0-1/Manifest");
            assert!(message.contains("unsigned"), "{message}");
        }
        other => panic!("unsigned package verified: {other:?}"),
    }
    assert!(binpkg::verify(&b.xpak, &keyring).is_err());
    assert!(binpkg::sign_in_place(&b.xpak, &key).is_err());
    assert!(portage_reads_gpkg(root, &b.unsigned, true).is_err());

    // Sign the emerge-built unsigned package in place.
    let to_sign = work.path().join("hello-1.0-1.gpkg.tar");
    fs::copy(&b.unsigned, &to_sign).unwrap();
    binpkg::sign_in_place(&to_sign, &key).unwrap();
    let after = binpkg::read(&to_sign).unwrap();
    assert_eq!(
        names(&after),
        SIGNED_LAYOUT,
        "same layout as a Portage-signed package"
    );
    assert_eq!(after.metadata, binpkg::read(&b.unsigned).unwrap().metadata);
    for member in ["gpkg-1", "metadata.tar.zst", "image.tar.zst"] {
        assert_eq!(
            member_data(&to_sign, "hello-1.0-1", member),
            member_data(&b.unsigned, "hello-1.0-1", member),
            "{member} copied without recompressing"
        );
    }
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let good = binpkg::verify(&to_sign, &keyring).unwrap();
    assert!(matches!(good.signature, SignatureStatus::Good { .. }));
    gpg_verifies_like_portage(gpg_key, &to_sign, "hello-1.0-1", work.path());
    assert_eq!(
        portage_reads_gpkg(root, &to_sign, true).as_deref(),
        Ok("hello-1.0")
    );

    // Already signed: refused, file untouched.
    let before = fs::read(&to_sign).unwrap();
    match binpkg::sign_in_place(&to_sign, &key) {
        Err(BinpkgError::Invalid { message, .. }) => {
            assert!(message.contains("already signed"), "{message}")
        }
        other => panic!("signed twice: {other:?}"),
    }
    assert_eq!(fs::read(&to_sign).unwrap(), before);
    let portage_signed = work.path().join("portage-signed.gpkg.tar");
    fs::copy(&signed, &portage_signed).unwrap();
    assert!(binpkg::sign_in_place(&portage_signed, &key).is_err());

    // A keyring without the signing key: the Manifest is named.
    let rogue_ring = Keyring::load(&common::rogue_key().public_key_file).unwrap();
    match binpkg::verify(&to_sign, &rogue_ring) {
        Err(BinpkgError::Member { member, .. }) => assert_eq!(member, "hello-1.0-1/Manifest"),
        other => panic!("verified with the wrong keyring: {other:?}"),
    }

    // A .sig replaced by one over other bytes, with a matching re-signed Manifest: only
    // the detached signature is wrong, and the error names it.
    let forged = work.path().join("forged.gpkg.tar");
    forge_image_signature(&to_sign, &forged, &key);
    binpkg::read(&forged).unwrap();
    match binpkg::verify(&forged, &keyring) {
        Err(BinpkgError::Member { member, .. }) => {
            assert_eq!(member, "hello-1.0-1/image.tar.zst.sig")
        }
        other => panic!("forged signature verified: {other:?}"),
    }
    assert!(portage_reads_gpkg(root, &forged, true).is_err());
}

/// Rebuilds `src` with image.tar.zst.sig signing other bytes and a freshly signed
/// Manifest that matches: only the detached signature is wrong.
fn forge_image_signature(src: &Path, dest: &Path, key: &SigningKey) {
    use binfarm::binpkg::manifest::{Digests, Manifest, ManifestEntry};
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(src).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_str().unwrap().to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        members.push((name, data));
    }
    let bad_sig = key.sign_detached(&mut &b"other bytes"[..]).unwrap();
    for (name, data) in members.iter_mut() {
        if name.ends_with("/image.tar.zst.sig") {
            *data = bad_sig.clone().into_bytes();
        }
    }
    let entries = members
        .iter()
        .filter(|(n, _)| !n.ends_with("/Manifest"))
        .map(|(n, d)| {
            ManifestEntry::new(
                n.rsplit('/').next().unwrap(),
                d.len() as u64,
                &Digests::of(d),
            )
        })
        .collect();
    let manifest = key.sign_cleartext(&Manifest { entries }.render()).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in &members {
        let data = if name.ends_with("/Manifest") {
            manifest.as_bytes()
        } else {
            &data[..]
        };
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut h, name, data).unwrap();
    }
    fs::write(dest, builder.into_inner().unwrap()).unwrap();
}

#[test]
fn written_packages_pass_portage_and_gpg_checks() {
    let b = common::build_fixture(
        "x86-64-v3",
        &["app-misc/hello", "app-misc/greeter"],
        true,
        BinpkgFormat::Gpkg,
    );
    let root = &b.root;
    let gpg_key = common::signing_key();
    let work = common::tempdir();
    let image = work.path().join("image-src");
    fs::create_dir_all(image.join("usr/bin")).unwrap();
    fs::create_dir_all(image.join("usr/share/doc/tool-2.0")).unwrap();
    fs::write(image.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::write(
        image.join("usr/share/doc/tool-2.0").join("r".repeat(110)),
        b"readme",
    )
    .unwrap();
    std::os::unix::fs::symlink("tool", image.join("usr/bin/tool-alias")).unwrap();
    let environment = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        std::io::Write::write_all(&mut e, b"declare -x FOO=bar\n").unwrap();
        e.finish().unwrap()
    };
    let mut metadata: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in [
        ("CATEGORY", "app-misc\n"),
        ("PF", "tool-2.0\n"),
        ("SLOT", "0\n"),
        ("EAPI", "8\n"),
        ("BUILD_ID", "7"),
        ("repository", "farm-test\n"),
    ] {
        metadata.insert(k.into(), v.as_bytes().to_vec());
    }
    metadata.insert("environment.bz2".into(), environment);
    let source = GpkgSource {
        top_dir: "tool-2.0-7",
        image_dir: &image,
        metadata: &metadata,
    };

    let plain = work.path().join("tool-2.0-7.gpkg.tar");
    write_gpkg(&plain, &source, &WriteOptions::default()).unwrap();
    let pkg = binpkg::read(&plain).unwrap();
    assert_eq!(pkg.signature, SignatureStatus::Unsigned);
    assert_eq!(pkg.metadata.get("BUILD_ID"), Some("7"));
    assert_eq!(binpkg::metadata_files(&plain).unwrap(), metadata);
    assert_eq!(
        portage_reads_gpkg(root, &plain, false).as_deref(),
        Ok("tool-2.0")
    );

    let key = SigningKey::from_armored_file(&gpg_key.secret_key_file, None).unwrap();
    let keyring = Keyring::load(&gpg_key.public_key_file).unwrap();
    let signed = work.path().join("tool-2.0-7.signed.gpkg.tar");
    write_gpkg(
        &signed,
        &source,
        &WriteOptions {
            signing_key: Some(&key),
            ..Default::default()
        },
    )
    .unwrap();
    match &binpkg::verify(&signed, &keyring).unwrap().signature {
        SignatureStatus::Good { signers } => {
            assert_eq!(signers[0].primary_fingerprint, gpg_key.fingerprint)
        }
        other => panic!("{other:?}"),
    }
    gpg_verifies_like_portage(gpg_key, &signed, "tool-2.0-7", work.path());
    assert_eq!(
        portage_reads_gpkg(root, &signed, true).as_deref(),
        Ok("tool-2.0")
    );

    // The unsigned one, signed later, passes the same checks.
    binpkg::sign_in_place(&plain, &key).unwrap();
    binpkg::verify(&plain, &keyring).unwrap();
    assert_eq!(
        portage_reads_gpkg(root, &plain, true).as_deref(),
        Ok("tool-2.0")
    );
    let listing = contents(&plain).unwrap();
    assert_eq!(
        find(&listing, "/usr/bin/tool-alias").kind,
        EntryKind::Symlink
    );
}

const PORTAGE_WRITE: &str = r#"
import sys, portage
from portage.gpkg import gpkg
package = gpkg(portage.settings, sys.argv[2], sys.argv[1])
package.compress(sys.argv[3], {"CATEGORY": b"app-misc\n", "PF": b"longname-1.0\n"})
"#;

/// Portage's own gpkg writer (signing with gpg, GNU tar for long names) produces what
/// binfarm reads, lists and verifies.
#[test]
fn portage_written_long_names_are_read_and_verified() {
    let b = common::build_fixture(
        "x86-64-v3",
        &["app-misc/hello", "app-misc/greeter"],
        true,
        BinpkgFormat::Gpkg,
    );
    let work = common::tempdir();
    let image = work.path().join("image-src");
    let long_base = "n".repeat(120);
    let deep = format!("usr/share/{}/{}", "d".repeat(90), "e".repeat(90));
    let long_target = format!("../share/{}/{}/f", "d".repeat(90), "e".repeat(90));
    fs::create_dir_all(image.join("usr/bin")).unwrap();
    fs::create_dir_all(image.join(&deep)).unwrap();
    fs::write(image.join("usr/bin").join(&long_base), b"long").unwrap();
    fs::write(image.join(&deep).join("f"), b"deep").unwrap();
    std::os::unix::fs::symlink(&long_target, image.join("usr/bin/deep-link")).unwrap();
    let gpkg = work.path().join("longname-1.0-1.gpkg.tar");
    let out = b
        .root
        .portage_command("python", ["-c", PORTAGE_WRITE], &[])
        .arg(&gpkg)
        .arg("longname-1.0-1")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pkg = binpkg::read(&gpkg).unwrap();
    assert_eq!(pkg.metadata.get("PF"), Some("longname-1.0"));
    let listing = contents(&gpkg).unwrap();
    assert_eq!(find(&listing, &format!("/usr/bin/{long_base}")).size, 4);
    assert_eq!(find(&listing, &format!("/{deep}/f")).size, 4);
    let link = find(&listing, "/usr/bin/deep-link");
    assert_eq!(link.link_target.as_deref(), Some(long_target.as_str()));
    // The build root signs what Portage writes: binfarm verifies gpg's signatures.
    let keyring = Keyring::load(&common::signing_key().public_key_file).unwrap();
    assert!(matches!(
        binpkg::verify(&gpkg, &keyring).unwrap().signature,
        SignatureStatus::Good { .. }
    ));
}
