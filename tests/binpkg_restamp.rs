//! The coordinator stores worker uploads under the farm's BUILD_ID, re-signed with the farm
//! key: `restamp_and_sign` on real emerge-built gpkgs (unsigned, and signed by Portage).

mod common;

use std::fs;
use std::path::Path;

use binfarm::binpkg::{self, SignatureStatus};
use binfarm::sign::{Keyring, SigningKey};

fn member(gpkg: &Path, name: &str) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(fs::File::open(gpkg).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path.ends_with(&format!("/{name}")) {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            return Some(data);
        }
    }
    None
}

fn find_gpkg(pkgdir: &Path, pn: &str) -> std::path::PathBuf {
    walkdir::WalkDir::new(pkgdir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{pn}-")) && name.ends_with(".gpkg.tar")
        })
        .unwrap_or_else(|| panic!("no {pn} gpkg in {}", pkgdir.display()))
}

#[test]
fn restamped_packages_carry_the_new_build_id_and_the_farm_signature() {
    let farm_key_armored =
        binfarm::sign::generate_signing_key("farm <farm@example.invalid>").unwrap();
    let farm_key = SigningKey::from_armored_str(&farm_key_armored, None).unwrap();
    let keyring = Keyring::from_armored(farm_key.public_key_armored().unwrap().as_bytes()).unwrap();
    let dir = common::tempdir();
    for signed in [false, true] {
        let pkgdir = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], signed);
        let original = find_gpkg(&pkgdir, "hello");
        let out = dir.path().join(format!("hello-1.0-42-{signed}.gpkg.tar"));
        binpkg::restamp_and_sign(&original, &out, 42, &farm_key).unwrap();

        let pkg = binpkg::verify(&out, &keyring).expect("farm signature verifies");
        assert_eq!(pkg.top_dir.as_deref(), Some("hello-1.0-42"));
        assert_eq!(pkg.metadata.get("BUILD_ID"), Some("42"));
        assert!(matches!(pkg.signature, SignatureStatus::Good { .. }));
        let before = binpkg::read(&original).unwrap();
        for (key, value) in &before.metadata.text {
            if key != "BUILD_ID" {
                assert_eq!(
                    pkg.metadata.get(key),
                    Some(value.as_str()),
                    "metadata {key} kept"
                );
            }
        }
        assert_eq!(
            member(&original, "image.tar.zst"),
            member(&out, "image.tar.zst"),
            "the image is copied, not recompressed"
        );
        // A key the farm does not trust is refused.
        let other = binfarm::sign::generate_signing_key("other <o@example.invalid>").unwrap();
        let other = SigningKey::from_armored_str(&other, None).unwrap();
        let other_ring =
            Keyring::from_armored(other.public_key_armored().unwrap().as_bytes()).unwrap();
        assert!(binpkg::verify(&out, &other_ring).is_err());
    }
}
