//! binpkg against real Portage: packages built by real `emerge` (unsigned gpkg, gpkg
//! signed by Portage with gpg, xpak) are read and checked; packages that binfarm writes
//! or signs are checked by Portage's own gpkg code (with gpg verification) and by gpg
//! the way Portage calls it.

mod binpkg_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use binfarm::binpkg::{
    self, contents, write_gpkg, BinpkgError, EntryKind, Format, GpkgSource, SignatureStatus,
    WriteOptions,
};
use binfarm::sign::{Keyring, SigningKey};
use binpkg_support::{Farm, GpgKey};

const GPKG_CONF: &str = "BINPKG_FORMAT=\"gpkg\"\nBINPKG_COMPRESS=\"zstd\"\nFEATURES=\"${FEATURES} binpkg-multi-instance\"\n";
const SIGNED_CONF: &str = "BINPKG_FORMAT=\"gpkg\"\nBINPKG_COMPRESS=\"zstd\"\nFEATURES=\"${FEATURES} binpkg-multi-instance binpkg-signing\"\n";
const XPAK_CONF: &str = "BINPKG_FORMAT=\"xpak\"\nBINPKG_COMPRESS=\"bzip2\"\nFEATURES=\"${FEATURES} -binpkg-multi-instance\"\n";

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

/// Checks every `.sig` and the clear-signed Manifest with gpg as Portage does.
fn gpg_verifies_like_portage(key: &GpgKey, gpkg: &Path, top: &str, dir: &Path) {
    for member in ["metadata.tar.zst", "image.tar.zst"] {
        let sig = dir.join(format!("{member}.sig"));
        fs::write(&sig, member_data(gpkg, top, &format!("{member}.sig"))).unwrap();
        let (ok, status) = key.portage_style_verify(Some(&sig), &member_data(gpkg, top, member));
        assert!(ok, "gpg does not accept {member}.sig:\n{status}");
        assert!(
            status.contains(" 10 "),
            "SHA-512 signature expected:\n{status}"
        );
    }
    let (ok, status) = key.portage_style_verify(None, &member_data(gpkg, top, "Manifest"));
    assert!(ok, "gpg does not accept the Manifest:\n{status}");
}

#[test]
fn emerge_built_packages_read_check_sign_and_verify() {
    let farm = Farm::new();
    let unsigned_m = farm.machine("unsigned", GPKG_CONF);
    let signed_m = farm.machine("signed", SIGNED_CONF);
    let xpak_m = farm.machine("xpak", XPAK_CONF);
    let unsigned = farm.build(&unsigned_m, "app-misc/hello", &[]);
    let signed = farm.build(&signed_m, "app-misc/hello", &[]);
    let xpak = farm.build(&xpak_m, "app-misc/hello", &[]);

    // Unsigned gpkg from emerge.
    let pkg = binpkg::read(&unsigned).unwrap();
    assert_eq!(pkg.format, Format::Gpkg);
    assert_eq!(pkg.top_dir.as_deref(), Some("hello-1.0-1"));
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
    let md = &pkg.metadata;
    assert_eq!(md.get("CATEGORY"), Some("app-misc"));
    assert_eq!(md.get("PF"), Some("hello-1.0"));
    assert_eq!(md.get("BUILD_ID"), Some("1"));
    assert_eq!(md.get("SLOT"), Some("0"));
    assert_eq!(md.get("EAPI"), Some("8"));
    assert!(md.get("hello-1.0.ebuild").unwrap().contains("dobin hello"));
    assert!(md.binary_keys.contains(&"environment.bz2".to_string()));
    let listing = contents(&unsigned).unwrap();
    let find = |listing: &[binpkg::ContentsEntry], p: &str| {
        listing
            .iter()
            .find(|e| e.path == p)
            .cloned()
            .unwrap_or_else(|| panic!("{p} not in {listing:?}"))
    };
    let hello = find(&listing, "/usr/bin/hello");
    assert_eq!((hello.kind, hello.mode), (EntryKind::File, 0o755));
    assert!(hello.size > 1000);
    let again = find(&listing, "/usr/bin/hello-again");
    assert_eq!(again.kind, EntryKind::Symlink);
    assert_eq!(again.link_target.as_deref(), Some("hello"));
    assert_eq!(
        find(&listing, &format!("/usr/share/hello/{}", "n".repeat(120))).size,
        5
    );

    // Signed by Portage (gpg).
    let spkg = binpkg::read(&signed).unwrap();
    assert_eq!(spkg.signature, SignatureStatus::Present);
    let snames: Vec<&str> = spkg.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        snames,
        [
            "hello-1.0-1/gpkg-1",
            "hello-1.0-1/metadata.tar.zst",
            "hello-1.0-1/metadata.tar.zst.sig",
            "hello-1.0-1/image.tar.zst",
            "hello-1.0-1/image.tar.zst.sig",
            "hello-1.0-1/Manifest"
        ]
    );
    assert_eq!(spkg.metadata.get("PF"), Some("hello-1.0"));

    // xpak (bzip2 image).
    let xp = binpkg::read(&xpak).unwrap();
    assert_eq!(xp.format, Format::Xpak);
    assert_eq!(xp.metadata.get("CATEGORY"), Some("app-misc"));
    assert_eq!(xp.metadata.get("PF"), Some("hello-1.0"));
    assert!(xp
        .metadata
        .binary_keys
        .contains(&"environment.bz2".to_string()));
    assert_eq!(xp.members[0].name, "image.tar.bz2");
    let xl = contents(&xpak).unwrap();
    assert_eq!(find(&xl, "/usr/bin/hello").kind, EntryKind::File);

    // A flipped byte in the image: we and Portage refuse it.
    let work = farm.dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let flipped = work.join("flipped.gpkg.tar");
    let mut bytes = fs::read(&unsigned).unwrap();
    let image = member_data(&unsigned, "hello-1.0-1", "image.tar.zst");
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
    assert!(farm
        .portage_reads_gpkg(&unsigned_m, &flipped, false)
        .is_err());
    assert_eq!(
        farm.portage_reads_gpkg(&unsigned_m, &unsigned, false)
            .as_deref(),
        Ok("hello-1.0")
    );

    // --- signing with binfarm (rPGP), checked by binfarm, gpg and Portage ---
    let key = SigningKey::from_armored_file(&farm.key.secret_armored, None).unwrap();
    let keyring = Keyring::load(&farm.key.public_armored).unwrap();

    // Portage's signature verifies with our keyring.
    match binpkg::verify(&signed, &keyring).unwrap().signature {
        SignatureStatus::Good { signers } => {
            assert_eq!(signers.len(), 1);
            assert_eq!(signers[0].primary_fingerprint, farm.key.fingerprint);
        }
        other => panic!("expected good signatures, got {other:?}"),
    }
    // Unsigned packages fail verification.
    match binpkg::verify(&unsigned, &keyring) {
        Err(BinpkgError::Member {
            member, message, ..
        }) => {
            assert_eq!(member, "hello-1.0-1/Manifest");
            assert!(message.contains("unsigned"), "{message}");
        }
        other => panic!("unsigned package verified: {other:?}"),
    }
    assert!(binpkg::verify(&xpak, &keyring).is_err());
    assert!(farm
        .portage_reads_gpkg(&unsigned_m, &unsigned, true)
        .is_err());

    // Sign the emerge-built unsigned package in place.
    let to_sign = work.join("hello-1.0-1.gpkg.tar");
    fs::copy(&unsigned, &to_sign).unwrap();
    binpkg::sign_in_place(&to_sign, &key).unwrap();
    let after = binpkg::read(&to_sign).unwrap();
    let anames: Vec<&str> = after.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(anames, snames, "same layout as a Portage-signed package");
    assert_eq!(after.metadata, pkg.metadata);
    for member in ["gpkg-1", "metadata.tar.zst", "image.tar.zst"] {
        assert_eq!(
            member_data(&to_sign, "hello-1.0-1", member),
            member_data(&unsigned, "hello-1.0-1", member),
            "{member} copied without recompressing"
        );
    }
    let leftovers: Vec<_> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let good = binpkg::verify(&to_sign, &keyring).unwrap();
    assert!(matches!(good.signature, SignatureStatus::Good { .. }));
    gpg_verifies_like_portage(&farm.key, &to_sign, "hello-1.0-1", &work);
    assert_eq!(
        farm.portage_reads_gpkg(&unsigned_m, &to_sign, true)
            .as_deref(),
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
    assert!(binpkg::sign_in_place(&signed, &key).is_err());

    // A keyring without the signing key: the Manifest is named.
    let rogue = GpgKey::generate(&farm.dir.path().join("gnupg"), "rogue");
    let rogue_ring = Keyring::load(&rogue.public_armored).unwrap();
    match binpkg::verify(&to_sign, &rogue_ring) {
        Err(BinpkgError::Member { member, .. }) => assert_eq!(member, "hello-1.0-1/Manifest"),
        other => panic!("verified with the wrong keyring: {other:?}"),
    }

    // A .sig replaced by one over other data: the Manifest still matches (recomputed),
    // the signature does not, and the error names that .sig.
    let forged = work.join("forged.gpkg.tar");
    forge_image_signature(&to_sign, &forged, &key);
    match binpkg::verify(&forged, &keyring) {
        Err(BinpkgError::Member { member, .. }) => {
            assert_eq!(member, "hello-1.0-1/image.tar.zst.sig")
        }
        other => panic!("forged signature verified: {other:?}"),
    }
    assert!(farm.portage_reads_gpkg(&unsigned_m, &forged, true).is_err());
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
    let farm = Farm::new();
    let m = farm.machine("checker", GPKG_CONF);
    let work = farm.dir.path().join("written");
    let image = work.join("image-src");
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
        ("repository", "binpkg-test\n"),
    ] {
        metadata.insert(k.into(), v.as_bytes().to_vec());
    }
    metadata.insert("environment.bz2".into(), environment);

    let key = SigningKey::from_armored_file(&farm.key.secret_armored, None).unwrap();
    let keyring = Keyring::load(&farm.key.public_armored).unwrap();
    let source = GpkgSource {
        top_dir: "tool-2.0-7",
        image_dir: &image,
        metadata: &metadata,
    };

    let plain = work.join("tool-2.0-7.gpkg.tar");
    write_gpkg(&plain, &source, &WriteOptions::default()).unwrap();
    let pkg = binpkg::read(&plain).unwrap();
    assert_eq!(pkg.signature, SignatureStatus::Unsigned);
    assert_eq!(pkg.metadata.get("BUILD_ID"), Some("7"));
    assert_eq!(binpkg::metadata_files(&plain).unwrap(), metadata);
    assert_eq!(
        farm.portage_reads_gpkg(&m, &plain, false).as_deref(),
        Ok("tool-2.0")
    );

    let signed = work.join("tool-2.0-7.signed.gpkg.tar");
    write_gpkg(
        &signed,
        &source,
        &WriteOptions {
            signing_key: Some(&key),
            ..Default::default()
        },
    )
    .unwrap();
    let verified = binpkg::verify(&signed, &keyring).unwrap();
    match &verified.signature {
        SignatureStatus::Good { signers } => {
            assert_eq!(signers[0].primary_fingerprint, farm.key.fingerprint)
        }
        other => panic!("{other:?}"),
    }
    gpg_verifies_like_portage(&farm.key, &signed, "tool-2.0-7", &work);
    assert_eq!(
        farm.portage_reads_gpkg(&m, &signed, true).as_deref(),
        Ok("tool-2.0")
    );

    // The unsigned one signed later verifies the same way.
    binpkg::sign_in_place(&plain, &key).unwrap();
    binpkg::verify(&plain, &keyring).unwrap();
    assert_eq!(
        farm.portage_reads_gpkg(&m, &plain, true).as_deref(),
        Ok("tool-2.0")
    );
    let listing = contents(&plain).unwrap();
    assert!(listing
        .iter()
        .any(|e| e.path == "/usr/bin/tool-alias" && e.kind == EntryKind::Symlink));
}
