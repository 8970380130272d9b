//! Fingerprints over a real ebuild repository layout: what changes them and what does not.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use binfarm::plan::{DepGraph, Fingerprinter, PlanError, PlannedPackage, Repos};

const SETTINGS: &str = "CHOST=x86_64-pc-linux-gnu\nCFLAGS=-O2 -march=x86-64-v3\n";

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// A small repository: libhello (inherits toolchain, which inherits multilib), greeter
/// (depends on libhello, has files/), and a master repository with an eclass.
fn make_repo(root: &Path) {
    let main = root.join("main");
    write(&main.join("profiles/repo_name"), "farm-test\n");
    write(&main.join("metadata/layout.conf"), "masters = base\n");
    write(
        &main.join("eclass/toolchain.eclass"),
        "# toolchain\ninherit multilib\ntc_compile() { :; }\n",
    );
    write(
        &main.join("eclass/multilib.eclass"),
        "# multilib\nget_libdir() { echo lib64; }\n",
    );
    write(
        &main.join("dev-libs/libhello/libhello-1.0.ebuild"),
        "EAPI=8\ninherit toolchain\nSLOT=\"0/1\"\nIUSE=\"static\"\n",
    );
    write(
        &main.join("app-misc/greeter/greeter-1.0.ebuild"),
        "EAPI=8\ninherit common\nSLOT=\"0\"\nDEPEND=\"dev-libs/libhello\"\n",
    );
    write(
        &main.join("app-misc/greeter/files/fix.patch"),
        "--- a\n+++ b\n",
    );
    write(
        &main.join("app-misc/other/other-2.0-r1.ebuild"),
        "EAPI=8\nSLOT=\"0\"\n",
    );
    let base = root.join("base");
    write(&base.join("profiles/repo_name"), "base\n");
    write(
        &base.join("eclass/common.eclass"),
        "# common from the master\n",
    );
}

fn repos(root: &Path) -> Repos {
    let mut repos = Repos::new();
    assert_eq!(
        repos.add_path(&root.join("main")).expect("main"),
        "farm-test"
    );
    assert_eq!(repos.add_path(&root.join("base")).expect("base"), "base");
    repos
}

fn packages() -> Vec<PlannedPackage> {
    vec![
        PlannedPackage {
            cpv: "dev-libs/libhello-1.0".into(),
            slot: "0/1".into(),
            use_flags: vec!["static".into()],
            repo: "farm-test".into(),
            ebuild_path: None,
            deps: vec![],
        },
        PlannedPackage {
            cpv: "app-misc/greeter-1.0".into(),
            slot: "0".into(),
            use_flags: vec![],
            repo: "farm-test".into(),
            ebuild_path: Some("app-misc/greeter/greeter-1.0.ebuild".into()),
            deps: vec!["dev-libs/libhello-1.0".into()],
        },
        PlannedPackage {
            cpv: "app-misc/other-2.0-r1".into(),
            slot: "0".into(),
            use_flags: vec![],
            repo: "farm-test".into(),
            ebuild_path: None,
            deps: vec![],
        },
    ]
}

fn fingerprints(root: &Path, settings: &str, pkgs: &[PlannedPackage]) -> Vec<String> {
    let repos = repos(root);
    let graph = DepGraph::from_packages(pkgs).expect("graph");
    Fingerprinter::new(settings, &repos)
        .fingerprints(pkgs, &graph)
        .expect("fingerprints")
}

#[test]
fn fingerprints_are_stable_and_distinct() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_repo(dir.path());
    let a = fingerprints(dir.path(), SETTINGS, &packages());
    let b = fingerprints(dir.path(), SETTINGS, &packages());
    assert_eq!(a, b, "same inputs, same fingerprints");
    assert!(a.iter().all(|fp| fp.len() == 64));
    assert_ne!(a[0], a[1]);
    // USE given in another order is the same build.
    let mut shuffled = packages();
    shuffled[0].use_flags = vec!["static".into(), "static".into()];
    assert_eq!(fingerprints(dir.path(), SETTINGS, &shuffled), a);
}

#[test]
fn every_input_changes_the_fingerprint_and_dependents_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_repo(dir.path());
    let base = fingerprints(dir.path(), SETTINGS, &packages());

    // Profile settings change everything.
    let other = fingerprints(dir.path(), "CFLAGS=-O2 -march=x86-64-v2\n", &packages());
    assert!(base.iter().zip(&other).all(|(x, y)| x != y));

    // USE of libhello changes libhello and greeter (its dependent), not other.
    let mut use_changed = packages();
    use_changed[0].use_flags.clear();
    let fp = fingerprints(dir.path(), SETTINGS, &use_changed);
    assert_ne!(fp[0], base[0]);
    assert_ne!(
        fp[1], base[1],
        "a dependency's fingerprint is part of the dependent's"
    );
    assert_eq!(fp[2], base[2]);

    // An eclass inherited indirectly (libhello -> toolchain -> multilib).
    let multilib = dir.path().join("main/eclass/multilib.eclass");
    fs::write(&multilib, "# multilib v2\nget_libdir() { echo lib; }\n").expect("edit");
    let fp = fingerprints(dir.path(), SETTINGS, &packages());
    assert_ne!(fp[0], base[0]);
    assert_ne!(fp[1], base[1]);
    assert_eq!(fp[2], base[2], "other inherits nothing");
    let after_eclass = fp;

    // An eclass from the master repository.
    fs::write(
        dir.path().join("base/eclass/common.eclass"),
        "# common v2\n",
    )
    .expect("edit");
    let fp = fingerprints(dir.path(), SETTINGS, &packages());
    assert_eq!(fp[0], after_eclass[0]);
    assert_ne!(fp[1], after_eclass[1]);
    let after_master = fp;

    // files/ of greeter.
    fs::write(
        dir.path().join("main/app-misc/greeter/files/fix.patch"),
        "--- a\n+++ b\n@@ changed\n",
    )
    .expect("edit patch");
    let fp = fingerprints(dir.path(), SETTINGS, &packages());
    assert_ne!(fp[1], after_master[1]);
    assert_eq!(fp[0], after_master[0]);
    let after_files = fp;

    // The ebuild itself.
    let ebuild = dir.path().join("main/app-misc/other/other-2.0-r1.ebuild");
    fs::write(&ebuild, "EAPI=8\nSLOT=\"0\"\nKEYWORDS=\"amd64\"\n").expect("edit");
    let fp = fingerprints(dir.path(), SETTINGS, &packages());
    assert_ne!(fp[2], after_files[2]);
    assert_eq!(fp[..2], after_files[..2]);
}

#[test]
fn missing_eclass_names_the_eclass_and_the_ebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_repo(dir.path());
    fs::remove_file(dir.path().join("main/eclass/multilib.eclass")).expect("rm");
    let repos = repos(dir.path());
    let pkgs = packages();
    let graph = DepGraph::from_packages(&pkgs).expect("graph");
    let err = Fingerprinter::new(SETTINGS, &repos)
        .fingerprints(&pkgs, &graph)
        .expect_err("missing eclass");
    let message = err.to_string();
    assert!(matches!(err, PlanError::MissingEclass { .. }), "{err:?}");
    assert!(message.contains("\"multilib\""), "{message}");
    assert!(
        message.contains("toolchain.eclass"),
        "names who inherits it: {message}"
    );
}

#[test]
fn missing_ebuild_and_unknown_repo_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_repo(dir.path());
    let repos = repos(dir.path());
    let mut fp = Fingerprinter::new(SETTINGS, &repos);
    let mut pkg = packages()[2].clone();
    pkg.cpv = "app-misc/other-3.0".into();
    let err = fp
        .fingerprint(&pkg, &BTreeMap::new())
        .expect_err("no ebuild");
    assert!(err.to_string().contains("other-3.0.ebuild"), "{err}");
    pkg.repo = "gentoo".into();
    let err = fp.fingerprint(&pkg, &BTreeMap::new()).expect_err("no repo");
    assert!(matches!(err, PlanError::UnknownRepo { .. }), "{err:?}");
    assert!(err.to_string().contains("gentoo"), "{err}");
}

#[test]
fn cycles_and_unknown_dependencies_are_reported() {
    let mut pkgs = packages();
    pkgs[0].deps = vec!["app-misc/greeter-1.0".into()];
    let err = DepGraph::from_packages(&pkgs).expect_err("cycle");
    let message = err.to_string();
    assert!(matches!(err, PlanError::Cycle { .. }), "{err:?}");
    assert!(
        message.contains("dev-libs/libhello-1.0 -> app-misc/greeter-1.0 -> dev-libs/libhello-1.0")
            || message
                .contains("app-misc/greeter-1.0 -> dev-libs/libhello-1.0 -> app-misc/greeter-1.0"),
        "{message}"
    );

    let mut pkgs = packages();
    pkgs[2].deps = vec!["sys-libs/zlib-1.3".into()];
    let err = DepGraph::from_packages(&pkgs).expect_err("unknown dep");
    assert_eq!(
        err.to_string(),
        "app-misc/other-2.0-r1 depends on sys-libs/zlib-1.3, which is not in the merge list"
    );

    let mut pkgs = packages();
    pkgs.push(pkgs[0].clone());
    let err = DepGraph::from_packages(&pkgs).expect_err("duplicate");
    assert!(matches!(err, PlanError::DuplicatePackage { .. }), "{err:?}");
}

/// The project's fixture repository (tests/fixtures/repo): every ebuild fingerprints, and
/// greeter's fingerprint follows libhello's.
#[test]
fn fixture_repository_fingerprints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo");
    let mut repos = Repos::new();
    assert_eq!(repos.add_path(&root).expect("fixture repo"), "farm-test");
    let mut packages: Vec<PlannedPackage> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "ebuild"))
        .map(|e| {
            let path = e
                .path()
                .strip_prefix(&root)
                .expect("inside repo")
                .to_path_buf();
            let category = path.components().next().expect("category");
            let pf = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            PlannedPackage {
                cpv: format!("{}/{pf}", category.as_os_str().to_string_lossy()),
                slot: "0".into(),
                use_flags: vec![],
                repo: "farm-test".into(),
                ebuild_path: Some(path),
                deps: vec![],
            }
        })
        .collect();
    packages.sort_by(|a, b| a.cpv.cmp(&b.cpv));
    assert!(packages.len() >= 3, "fixture ebuilds found: {packages:?}");
    let libhello = packages
        .iter()
        .position(|p| p.cpv == "dev-libs/libhello-1.0")
        .expect("libhello in fixture");
    let greeter = packages
        .iter()
        .position(|p| p.cpv == "app-misc/greeter-1.0")
        .expect("greeter in fixture");
    packages[greeter].deps = vec!["dev-libs/libhello-1.0".into()];
    let graph = DepGraph::from_packages(&packages).expect("graph");
    let first = Fingerprinter::new(SETTINGS, &repos)
        .fingerprints(&packages, &graph)
        .expect("fingerprints");
    let again = Fingerprinter::new(SETTINGS, &repos)
        .fingerprints(&packages, &graph)
        .expect("fingerprints");
    assert_eq!(first, again);
    let distinct: std::collections::HashSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), packages.len());

    packages[libhello].use_flags = vec!["static".into()];
    let changed = Fingerprinter::new(SETTINGS, &repos)
        .fingerprints(&packages, &graph)
        .expect("fingerprints");
    assert_ne!(changed[libhello], first[libhello]);
    assert_ne!(changed[greeter], first[greeter]);
    let unaffected = (0..packages.len())
        .filter(|&i| i != libhello && i != greeter)
        .all(|i| changed[i] == first[i]);
    assert!(unaffected, "only libhello and its dependent change");
}
