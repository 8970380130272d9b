//! Both example profiles build the fixture set with real emerge: the binpkgs carry each
//! profile's CFLAGS, the programs show which -march they were compiled for, dependencies are
//! built first, and the planner's merge list and edges are the ones emerge used.
mod common;

use std::collections::BTreeSet;
use std::process::Command;

use binfarm::profile::BinpkgFormat;
use binfarm::worker::{plan, PlanOptions};
use common::FixtureBuild;

fn set_atoms(profile: &str) -> Vec<String> {
    common::load_profile(profile)
        .set_atoms()
        .expect("profile set")
}

fn build_set(profile: &str) -> FixtureBuild {
    let atoms = set_atoms(profile);
    let atoms: Vec<&str> = atoms.iter().map(String::as_str).collect();
    common::build_fixture(profile, &atoms, false, BinpkgFormat::Gpkg)
}

fn run_program(b: &FixtureBuild, path: &str) -> String {
    let root = &b.root.paths.root;
    let mut cmd = Command::new(root.join(path.trim_start_matches('/')));
    cmd.env("LD_LIBRARY_PATH", root.join("usr/lib64"));
    common::run_ok(&mut cmd, path)
}

fn check_profile_build(profile: &str, march: &str, marker: &str, absent: &str) {
    let b = build_set(profile);
    let cflags = common::load_profile(profile).cflags;
    assert!(cflags.contains(&format!("-march={march}")));
    // Every package of the set (and its deps) got a binpkg carrying the profile's CFLAGS.
    assert!(b.built.len() >= 7, "{profile}: only {:?} built", b.built);
    for (cpv, rel, sha512) in &b.built {
        let path = b.pkgdir.join(rel);
        let meta = common::gpkg_metadata(&path);
        assert_eq!(meta.get("CFLAGS"), Some(&cflags), "{profile} {cpv} CFLAGS");
        assert_eq!(
            meta.get("CHOST").map(String::as_str),
            Some("x86_64-pc-linux-gnu")
        );
        assert_eq!(format!("{}/{}", meta["CATEGORY"], meta["PF"]), *cpv);
        let (_, actual) = binfarm::worker::runner::sha512_file(&path).expect("hashing binpkg");
        assert_eq!(&actual, sha512, "{cpv}: sha512 reported by the runner");
    }
    let hello = run_program(&b, "/usr/bin/hello");
    assert!(
        hello.contains(marker) && !hello.contains(absent),
        "{profile}: hello says {hello:?}"
    );
    let multi = run_program(&b, "/usr/bin/multi");
    assert!(multi.contains("multi 20"), "{multi}");
    // Two slots of the language runtime side by side.
    assert_eq!(
        run_program(&b, "/usr/bin/minilang8.2").trim(),
        "minilang 8.2.5"
    );
    assert_eq!(
        run_program(&b, "/usr/bin/minilang8.3").trim(),
        "minilang 8.3.1"
    );
    for v in ["8.2.5", "8.3.1"] {
        assert!(b
            .root
            .paths
            .root
            .join(format!("var/db/pkg/dev-lang/minilang-{v}"))
            .is_dir());
        assert!(b
            .pkgdir
            .join(format!("dev-lang/minilang/minilang-{v}-1.gpkg.tar"))
            .is_file());
    }
    let greeter = run_program(&b, "/usr/bin/greeter");
    assert!(greeter.contains("from libhello.so.1"), "{greeter}");
    // greeter was built against libhello's subslot (:= records it in RDEPEND).
    let greeter_meta =
        common::gpkg_metadata(&b.pkgdir.join("app-misc/greeter/greeter-1.0-1.gpkg.tar"));
    assert!(
        greeter_meta["RDEPEND"].contains("dev-libs/libhello:0/1="),
        "{:?}",
        greeter_meta.get("RDEPEND")
    );
}

#[test]
fn x86_64_v3_builds_the_fixture_set() {
    check_profile_build("x86-64-v3", "x86-64-v3", "AVX2", "SSE4.2 enabled");
    let b = build_set("x86-64-v3");
    assert!(run_program(&b, "/usr/bin/multi").contains("cpu_flags_x86_avx2"));
    assert!(run_program(&b, "/usr/bin/banner").contains("with color"));
    assert!(
        b.merged.iter().any(|c| c == "dev-libs/libcolor-1.0"),
        "USE=color pulls libcolor: {:?}",
        b.merged
    );
}

#[test]
fn x86_64_v2_builds_the_fixture_set() {
    check_profile_build("x86-64-v2", "x86-64-v2", "SSE4.2", "AVX2");
    let b = build_set("x86-64-v2");
    let multi = run_program(&b, "/usr/bin/multi");
    assert!(
        multi.contains("cpu_flags_x86_sse4_2") && !multi.contains("avx2"),
        "{multi}"
    );
    assert!(run_program(&b, "/usr/bin/banner").contains("plain"));
    assert!(
        !b.merged.iter().any(|c| c.starts_with("dev-libs/libcolor")),
        "{:?}",
        b.merged
    );
}

/// `emerge --pretend --tree` lines: (depth, CPV).
fn pretend_tree(
    b: &FixtureBuild,
    fresh: &std::path::Path,
    atoms: &[String],
) -> Vec<(usize, String)> {
    let root =
        common::fixture_build_root(&b.root.profile.name, fresh, &common::RootOptions::default());
    let mut args = vec!["--pretend".to_string(), "--tree".to_string()];
    args.extend(atoms.iter().cloned());
    let out = common::run_ok(
        &mut root.portage_command("emerge", &args, &[]),
        "emerge --pretend --tree",
    );
    out.lines()
        .filter_map(|l| {
            // [ebuild ...] and [nomerge ...] lines: a nomerge line is a parent shown again.
            let rest = l.strip_prefix('[')?;
            let after = &rest[rest.find(']')? + 1..];
            let depth = after.len() - after.trim_start().len();
            let spec = after.split_whitespace().next()?;
            let spec = spec.split("::").next()?;
            // strip :SLOT
            let cpv = match spec.split_once(':') {
                Some((c, _)) => c,
                None => spec,
            };
            Some((depth, cpv.to_string()))
        })
        .collect()
}

#[test]
fn planner_lists_the_order_and_edges_emerge_used() {
    for profile in ["x86-64-v3", "x86-64-v2"] {
        let b = build_set(profile);
        let atoms = set_atoms(profile);
        let tmp = common::tempdir();
        // A fresh build root (nothing installed), as the cached build started from.
        let fresh = common::fixture_build_root(
            profile,
            &tmp.path().join("root"),
            &common::RootOptions::default(),
        );
        let p = plan(&fresh, &["@profile".to_string()], &PlanOptions::default()).expect("plan");
        assert_eq!(
            p.order(),
            b.merged.iter().map(String::as_str).collect::<Vec<_>>(),
            "{profile}: plan vs emerge order"
        );
        assert!(p.merge_list.iter().all(|m| m.kind == "ebuild"));

        // Dependencies first: every edge points backwards in emerge's order.
        let pos = |cpv: &str| {
            b.merged
                .iter()
                .position(|c| c == cpv)
                .unwrap_or_else(|| panic!("{cpv} not merged"))
        };
        for e in &p.edges {
            if e.kinds.iter().any(|k| k.starts_with("buildtime")) {
                assert!(
                    pos(&e.to) < pos(&e.from),
                    "{profile}: {} built before its dep {}",
                    e.from,
                    e.to
                );
            }
        }
        let greeter_deps = p.deps_of("app-misc/greeter-1.0");
        assert_eq!(greeter_deps, vec!["dev-libs/libhello-1.0"]);
        let edge = p
            .edges
            .iter()
            .find(|e| e.from == "app-misc/greeter-1.0")
            .expect("greeter edge");
        assert!(
            edge.kinds.contains(&"buildtime_slot_op".to_string()),
            "{:?}",
            edge.kinds
        );

        // The tree emerge --pretend --tree prints has exactly these parent -> child edges.
        let tree = pretend_tree(&b, &tmp.path().join("pretend"), &atoms);
        let mut tree_edges = BTreeSet::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        for (depth, cpv) in tree {
            while stack.last().is_some_and(|(d, _)| *d >= depth) {
                stack.pop();
            }
            if let Some((_, parent)) = stack.last() {
                tree_edges.insert((parent.clone(), cpv.clone()));
            }
            stack.push((depth, cpv));
        }
        let plan_edges: BTreeSet<(String, String)> = p
            .edges
            .iter()
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        assert!(!tree_edges.is_empty());
        assert_eq!(
            tree_edges, plan_edges,
            "{profile}: emerge --tree edges vs plan edges"
        );

        // Per-package USE.
        let banner = p
            .merge_list
            .iter()
            .find(|m| m.cpv == "app-misc/banner-1.0")
            .expect("banner planned");
        let multi = p
            .merge_list
            .iter()
            .find(|m| m.cpv == "app-misc/multi-1.0")
            .expect("multi planned");
        if profile == "x86-64-v3" {
            assert_eq!(banner.use_flags, vec!["color"]);
            assert_eq!(
                p.deps_of("app-misc/banner-1.0"),
                vec!["dev-libs/libcolor-1.0"]
            );
            assert_eq!(
                multi.use_flags,
                vec!["cpu_flags_x86_avx2", "cpu_flags_x86_sse4_2"]
            );
        } else {
            assert!(banner.use_flags.is_empty());
            assert!(p.deps_of("app-misc/banner-1.0").is_empty());
            assert_eq!(multi.use_flags, vec!["cpu_flags_x86_sse4_2"]);
        }
        let minilang: Vec<_> = p
            .merge_list
            .iter()
            .filter(|m| m.cpv.starts_with("dev-lang/minilang-"))
            .map(|m| m.slot.as_str())
            .collect();
        assert_eq!(minilang, vec!["8.2", "8.3"]);
    }
}

#[test]
fn plan_cli_prints_json() {
    let fx = common::fixture();
    let tmp = common::tempdir();
    let out = Command::new(env!("CARGO_BIN_EXE_binfarm"))
        .current_dir(common::crate_root())
        .args(["plan", "--profile", "x86-64-v3", "--root-dir"])
        .arg(tmp.path().join("root"))
        .arg("--repo")
        .arg(format!("farm-test={}", fx.repo.display()))
        .arg("--distdir")
        .arg(&fx.distdir)
        .arg("--venv")
        .arg(common::venv())
        .arg("app-misc/greeter")
        .output()
        .expect("running binfarm plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: binfarm::worker::Plan = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(
        plan.order(),
        vec!["dev-libs/libhello-1.0", "app-misc/greeter-1.0"]
    );
    assert_eq!(plan.merge_list[0].subslot, "1");
}
