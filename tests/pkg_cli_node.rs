//! Issue 2 end to end with the real tools: packages built by real emerge (unsigned) are
//! signed by `binfarm pkg sign`, indexed by `binfarm index`, served over HTTP, and a node
//! root with FEATURES=binpkg-request-signature installs them with `emerge --getbinpkgonly`.
//! The same packages signed with a key the node does not trust are refused; one flipped
//! byte in image.tar.zst fails `binfarm pkg verify` naming the member, and emerge refuses it.

mod common;

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_binfarm");

fn binfarm(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run binfarm")
}

fn gpkgs(dir: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.to_string_lossy().ends_with(".gpkg.tar"))
        .collect()
}

/// A copy of an unsigned emerge-built PKGDIR (without Portage's index), signed with `key`
/// and indexed by binfarm.
fn signed_tree(dir: &Path, key: &common::GpgKey) {
    let unsigned =
        common::build_fixture_pkgdir("x86-64-v3", &["app-misc/greeter", "app-misc/hello"], false);
    common::copy_tree(&unsigned, dir);
    let _ = std::fs::remove_file(dir.join("Packages"));
    let _ = std::fs::remove_file(dir.join("Packages.gz"));
    for gpkg in gpkgs(dir) {
        let out = binfarm(&[
            "pkg",
            "sign",
            gpkg.to_str().unwrap(),
            "--key",
            key.secret_key_file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "pkg sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = binfarm(&[
            "pkg",
            "verify",
            gpkg.to_str().unwrap(),
            "--keyring",
            key.public_key_file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "pkg verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = binfarm(&[
        "index",
        dir.to_str().unwrap(),
        "--keyring",
        key.public_key_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "index: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(dir.join("Packages")).unwrap();
    assert!(index.contains("CPV: app-misc/greeter-1.0"), "{index}");
}

#[test]
fn binfarm_signed_and_indexed_packages_install_on_a_verifying_node() {
    let tmp = common::tempdir();
    let trusted = common::signing_key();
    let rogue = common::rogue_key();
    signed_tree(&tmp.path().join("good"), trusted);
    signed_tree(&tmp.path().join("rogue"), rogue);

    // One flipped byte inside image.tar.zst of a trusted-signed copy.
    let broken = tmp.path().join("broken");
    signed_tree(&broken, trusted);
    let hello = gpkgs(&broken)
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/hello-"))
        .unwrap();
    let mut bytes = std::fs::read(&hello).unwrap();
    let image_at = bytes
        .windows(13)
        .position(|w| w == b"image.tar.zst")
        .expect("image member header");
    // The member's data starts at the next 512-byte block after its header.
    let data = (image_at / 512 + 1) * 512 + 100;
    bytes[data] ^= 0x01;
    std::fs::write(&hello, &bytes).unwrap();
    let out = binfarm(&[
        "pkg",
        "verify",
        hello.to_str().unwrap(),
        "--keyring",
        trusted.public_key_file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("image.tar.zst"),
        "the error names the member: {err}"
    );

    let http = common::HttpServer::start(tmp.path(), &tmp.path().join("http.log"));

    let node = common::fixture_node_root(
        "x86-64-v3",
        &tmp.path().join("node"),
        &http.url("good"),
        trusted,
    );
    common::run_ok(
        &mut node.portage_command(
            "emerge",
            ["--getbinpkgonly", "app-misc/greeter", "app-misc/hello"],
            &[],
        ),
        "node emerge --getbinpkgonly from binfarm's index",
    );
    assert!(node.paths.root.join("usr/bin/greeter").is_file());
    assert!(node.paths.root.join("usr/bin/hello").is_file());

    for (name, what) in [
        ("rogue", "signed with an untrusted key"),
        ("broken", "with a flipped byte"),
    ] {
        let refusing = common::fixture_node_root(
            "x86-64-v3",
            &tmp.path().join(format!("node-{name}")),
            &http.url(name),
            trusted,
        );
        let out = refusing
            .portage_command("emerge", ["--getbinpkgonly", "app-misc/hello"], &[])
            .output()
            .expect("emerge");
        assert!(!out.status.success(), "a package {what} was accepted");
        assert!(
            !refusing.paths.root.join("usr/bin/hello").exists(),
            "a package {what} was installed"
        );
    }
}
