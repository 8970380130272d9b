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

#[test]
fn unsigned_gpkg_and_xpak_pkgdirs() {
    let unsigned = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], false);
    let members = common::tar_members(&unsigned.join("app-misc/hello/hello-1.0-1.gpkg.tar"));
    assert!(
        members.iter().any(|m| m.ends_with("/image.tar.zst")),
        "{members:?}"
    );
    assert!(
        !members.iter().any(|m| m.ends_with(".sig")),
        "unsigned build has signatures: {members:?}"
    );
    let meta = common::gpkg_metadata(&unsigned.join("app-misc/hello/hello-1.0-1.gpkg.tar"));
    assert_eq!(meta["CFLAGS"], "-O2 -pipe -march=x86-64-v3");

    let xpak = common::build_fixture("x86-64-v2", &["app-misc/hello"], false, BinpkgFormat::Xpak);
    let path = xpak.pkgdir.join("app-misc/hello/hello-1.0-1.xpak");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[bytes.len() - 4..], b"STOP", "xpak trailer");
    assert_eq!(xpak.built.len(), 1);
    assert_eq!(xpak.built[0].1, "app-misc/hello/hello-1.0-1.xpak");
}

/// What the binpkg toolkit's tests do with these helpers: run emaint on a copy of a PKGDIR,
/// and install signed packages on a node over HTTP with signature checking.
#[test]
fn emaint_on_a_copy_and_a_node_installs_signed_packages_over_http() {
    let b = common::build_fixture(
        "x86-64-v3",
        &["app-misc/hello", "app-misc/greeter"],
        true,
        BinpkgFormat::Gpkg,
    );
    let key = b.key.as_ref().expect("signed build has a key");
    let tmp = common::tempdir();
    let copy = tmp.path().join("pkgdir");
    common::copy_tree(&b.pkgdir, &copy);
    std::fs::remove_file(copy.join("Packages")).expect("removing Packages");
    let env = [("PKGDIR".to_string(), copy.display().to_string())];
    common::run_ok(
        &mut b.root.portage_command("emaint", ["binhost", "--fix"], &env),
        "emaint binhost --fix",
    );
    let index =
        std::fs::read_to_string(copy.join("Packages")).expect("emaint wrote Packages in the copy");
    assert!(index.contains("PACKAGES: 3"), "{index}");
    assert!(index.contains("CPV: dev-libs/libhello-1.0"));

    let http = common::HttpServer::start(tmp.path(), &tmp.path().join("http.log"));
    let node = common::fixture_node_root(
        "x86-64-v3",
        &tmp.path().join("node"),
        &http.url("pkgdir"),
        key,
    );
    common::run_ok(
        &mut node.portage_command("emerge", ["--getbinpkgonly", "app-misc/greeter"], &[]),
        "node emerge --getbinpkgonly",
    );
    assert!(node.paths.root.join("usr/bin/greeter").is_file());
    assert!(node
        .paths
        .root
        .join("var/db/pkg/dev-libs/libhello-1.0")
        .is_dir());
    let requests = std::fs::read_to_string(&http.log).expect("http log");
    assert!(
        requests.contains("GET /pkgdir/app-misc/greeter/greeter-1.0-1.gpkg.tar"),
        "{requests}"
    );

    // The same node refuses an unsigned package.
    let unsigned = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], false);
    common::copy_tree(&unsigned, &tmp.path().join("unsigned"));
    let node2 = common::fixture_node_root(
        "x86-64-v3",
        &tmp.path().join("node2"),
        &http.url("unsigned"),
        key,
    );
    let out = node2
        .portage_command("emerge", ["--getbinpkgonly", "app-misc/hello"], &[])
        .output()
        .expect("emerge");
    assert!(!out.status.success(), "unsigned package accepted");
    assert!(!node2.paths.root.join("usr/bin/hello").exists());
}
