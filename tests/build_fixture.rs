//! The fixture repository builds with real emerge for both example profiles; the binpkgs
//! carry each profile's CFLAGS and the programs show which -march they were built for.
mod common;

use binfarm::profile::BinpkgFormat;

#[test]
fn fixture_has_manifests_and_cache() {
    let fx = common::fixture();
    let manifest = std::fs::read_to_string(fx.repo.join("app-misc/hello/Manifest")).unwrap();
    assert!(manifest.contains("DIST hello-1.0.tar.gz"), "{manifest}");
    assert!(fx.repo.join("dev-libs/libhello/Manifest").is_file());
    assert!(fx
        .repo
        .join("metadata/md5-cache/dev-lang/minilang-8.3.1")
        .is_file());
    assert!(fx.distdir.join("hello-1.0.tar.gz").is_file());
    // The source tree stays clean: no generated files in tests/fixtures.
    assert!(!common::crate_root()
        .join("tests/fixtures/repo/app-misc/hello/Manifest")
        .exists());
}

#[test]
fn signed_v3_pkgdir_of_hello_and_greeter() {
    let b = common::build_fixture(
        "x86-64-v3",
        &["app-misc/hello", "app-misc/greeter"],
        true,
        BinpkgFormat::Gpkg,
    );
    for rel in [
        "app-misc/hello/hello-1.0-1.gpkg.tar",
        "app-misc/greeter/greeter-1.0-1.gpkg.tar",
        "dev-libs/libhello/libhello-1.0-1.gpkg.tar",
    ] {
        let p = b.pkgdir.join(rel);
        assert!(p.is_file(), "{} missing", p.display());
        let list = common::run_ok(
            std::process::Command::new("tar").arg("-tf").arg(&p),
            "tar -tf",
        );
        assert!(
            list.contains("image.tar.zst.sig"),
            "{rel} is not signed:\n{list}"
        );
    }
    let out = common::run_ok(
        &mut std::process::Command::new(b.root.paths.root.join("usr/bin/hello")),
        "hello",
    );
    assert!(out.contains("AVX2"), "{out}");
}
