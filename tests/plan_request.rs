//! Requests -> steps against a real store: nightly skipping, manual rebuilds, cached
//! failures, scheduling ranks.

use std::fs;
use std::path::Path;

use binfarm::plan::{
    parse_merge_list, plan_request, priorities, ranks, DepGraph, PlanError, PlannedPackage, Repos,
    RequestMode, RetryPolicy,
};
use binfarm::store::{
    Db, NewRequest, RequestKind, RequestState, StepOutcome, StepState, Store, WorkerCapabilities,
};

const SETTINGS: &str = "CHOST=x86_64-pc-linux-gnu\nCFLAGS=-O2 -march=x86-64-v3\n";
const T0: i64 = 1_700_000_000;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// libhello <- greeter <- banner; minilang alone; broken alone.
fn make_repo(root: &Path) -> Repos {
    write(&root.join("profiles/repo_name"), "farm-test\n");
    write(
        &root.join("eclass/farm.eclass"),
        "farm_src_install() { :; }\n",
    );
    for (cpv, inherit) in [
        ("dev-libs/libhello-1.0", "inherit farm\n"),
        ("app-misc/greeter-1.0", ""),
        ("app-misc/banner-1.0", ""),
        ("dev-lang/minilang-8.3.1", "inherit farm\n"),
        ("app-misc/broken-1.0", ""),
    ] {
        let (cat, pf) = cpv.split_once('/').expect("cpv");
        let pn = pf.rsplit_once('-').expect("pn").0;
        write(
            &root.join(cat).join(pn).join(format!("{pf}.ebuild")),
            &format!("EAPI=8\n{inherit}SLOT=\"0\"\n"),
        );
    }
    let mut repos = Repos::new();
    repos.add_path(root).expect("repo");
    repos
}

fn merge_list() -> Vec<PlannedPackage> {
    let json = r#"{"packages": [
        {"cpv": "dev-libs/libhello-1.0", "slot": "0", "use_flags": [], "repo": "farm-test",
         "ebuild_path": null, "deps": []},
        {"cpv": "app-misc/greeter-1.0", "slot": "0", "use_flags": ["color"], "repo": "farm-test",
         "deps": ["dev-libs/libhello-1.0"]},
        {"cpv": "app-misc/banner-1.0", "repo": "farm-test",
         "deps": ["app-misc/greeter-1.0", "dev-libs/libhello-1.0"]},
        {"cpv": "dev-lang/minilang-8.3.1", "slot": "8.3", "use": ["jit"], "repo": "farm-test"},
        {"cpv": "app-misc/broken-1.0", "repo": "farm-test"}
    ]}"#;
    parse_merge_list(json).expect("merge list parses")
}

fn setup(dir: &Path) -> (Store, Db, i64) {
    let store = Store::open(&dir.join("state")).expect("store");
    let mut db = store.connect().expect("connect");
    let w = db.create_worker("w", T0).expect("worker").worker_id;
    db.set_worker_capabilities(
        w,
        &WorkerCapabilities {
            profiles: vec!["v3".into()],
            ..Default::default()
        },
        T0,
    )
    .expect("caps");
    (store, db, w)
}

fn new_request(db: &mut Db, kind: RequestKind, target: &str) -> i64 {
    db.create_request(
        &NewRequest {
            kind,
            profile: "v3".into(),
            target: target.into(),
        },
        T0,
    )
    .expect("request")
}

/// Build everything the queue hands out; `broken` fails (not retryable). Returns the CPVs
/// built with their BUILD_IDs, in lease order.
fn build_all(db: &mut Db, w: i64) -> Vec<(String, i64)> {
    let mut built = Vec::new();
    let mut now = T0;
    while let Some(lease) = db.lease_next(w, now).expect("lease") {
        now += 10;
        let outcome = if lease.cpv.contains("broken") {
            StepOutcome::Failed {
                duration_ms: 100,
                log_blob: None,
                error: "compile error".into(),
                retryable: false,
            }
        } else {
            StepOutcome::Succeeded {
                duration_ms: 10_000,
                log_blob: None,
                results: vec![],
            }
        };
        db.complete_step(lease.step_id, lease.lease_id, w, &outcome, now)
            .expect("complete");
        built.push((lease.cpv, lease.build_id));
    }
    built
}

#[test]
fn second_nightly_with_nothing_changed_builds_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repos = make_repo(&dir.path().join("repo"));
    let (_store, mut db, w) = setup(dir.path());
    let packages = merge_list();

    let first = new_request(&mut db, RequestKind::Nightly, "@world");
    let summary = plan_request(
        &mut db,
        first,
        &packages,
        SETTINGS,
        &repos,
        &RequestMode::Nightly,
        T0,
    )
    .expect("plan");
    assert_eq!((summary.steps, summary.to_build, summary.cached), (5, 5, 0));
    let built = build_all(&mut db, w);
    assert_eq!(built.len(), 5);
    // Dependencies are built before their dependents.
    let position = |cpv: &str| built.iter().position(|(c, _)| c == cpv).expect("built");
    assert!(position("dev-libs/libhello-1.0") < position("app-misc/greeter-1.0"));
    assert!(position("app-misc/greeter-1.0") < position("app-misc/banner-1.0"));
    assert_eq!(db.request(first).expect("req").state, RequestState::Failed);

    let second = new_request(&mut db, RequestKind::Nightly, "@world");
    let summary = plan_request(
        &mut db,
        second,
        &packages,
        SETTINGS,
        &repos,
        &RequestMode::Nightly,
        T0,
    )
    .expect("plan");
    assert_eq!(summary.to_build, 0, "nothing changed: nothing to build");
    assert_eq!(summary.cached, 4);
    assert_eq!(
        summary.cached_failures, 1,
        "broken failed before: not tried again"
    );
    assert!(db.lease_next(w, T0 + 1000).expect("lease").is_none());
    let steps = db.request_steps(second).expect("steps");
    let broken = steps
        .iter()
        .find(|s| s.cpv == "app-misc/broken-1.0")
        .expect("broken step");
    assert_eq!(broken.state, StepState::Failed);
    assert!(
        broken
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("cached failure"),
        "{:?}",
        broken.reason
    );
    assert!(db.request(second).expect("req").finished_at.is_some());

    // An edited eclass: libhello and minilang inherit it; greeter and banner depend on
    // libhello. Only broken stays as it was.
    fs::write(
        dir.path().join("repo/eclass/farm.eclass"),
        "farm_src_install() { echo v2; }\n",
    )
    .expect("edit eclass");
    let third = new_request(&mut db, RequestKind::Nightly, "@world");
    let summary = plan_request(
        &mut db,
        third,
        &packages,
        SETTINGS,
        &repos,
        &RequestMode::Nightly,
        T0,
    )
    .expect("plan");
    assert_eq!(summary.to_build, 4);
    assert_eq!(summary.cached_failures, 1);
    let rebuilt = build_all(&mut db, w);
    assert!(
        rebuilt.iter().all(|(_, build_id)| *build_id == 2),
        "{rebuilt:?}"
    );
}

#[test]
fn manual_rebuild_builds_the_target_anyway_with_a_new_build_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repos = make_repo(&dir.path().join("repo"));
    let (_store, mut db, w) = setup(dir.path());
    let packages = merge_list();
    let nightly = new_request(&mut db, RequestKind::Nightly, "@world");
    plan_request(
        &mut db,
        nightly,
        &packages,
        SETTINGS,
        &repos,
        &RequestMode::Nightly,
        T0,
    )
    .expect("plan");
    build_all(&mut db, w);

    // The planner's merge list for one atom holds the atom and its dependencies.
    let greeter_list = &packages[..2];
    let manual = new_request(&mut db, RequestKind::Manual, "=app-misc/greeter-1.0");
    let summary = plan_request(
        &mut db,
        manual,
        greeter_list,
        SETTINGS,
        &repos,
        &RequestMode::Rebuild {
            targets: vec!["app-misc/greeter-1.0".into()],
        },
        T0,
    )
    .expect("plan");
    assert_eq!(summary.to_build, 1);
    let built = build_all(&mut db, w);
    assert_eq!(built, vec![("app-misc/greeter-1.0".to_string(), 2)]);
    assert_eq!(
        db.request(manual).expect("req").state,
        RequestState::Succeeded
    );

    // A manual rebuild of the failed package tries it again.
    let retry = new_request(&mut db, RequestKind::Manual, "app-misc/broken");
    let summary = plan_request(
        &mut db,
        retry,
        &packages[4..],
        SETTINGS,
        &repos,
        &RequestMode::Rebuild {
            targets: vec!["app-misc/broken-1.0".into()],
        },
        T0,
    )
    .expect("plan");
    assert_eq!((summary.to_build, summary.cached_failures), (1, 0));
}

#[test]
fn planning_errors_fail_the_request_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repos = make_repo(&dir.path().join("repo"));
    let (_store, mut db, _w) = setup(dir.path());
    let mut packages = merge_list();
    packages[0].deps = vec!["app-misc/banner-1.0".into()];
    let request = new_request(&mut db, RequestKind::Nightly, "@world");
    let err = plan_request(
        &mut db,
        request,
        &packages,
        SETTINGS,
        &repos,
        &RequestMode::Nightly,
        T0,
    )
    .expect_err("cycle");
    assert!(matches!(err, PlanError::Cycle { .. }), "{err:?}");
    let row = db.request(request).expect("req");
    assert_eq!(row.state, RequestState::Failed);
    let error = row.error.expect("error recorded");
    assert!(error.starts_with("dependency cycle: "), "{error}");
    assert!(error.contains("dev-libs/libhello-1.0"), "{error}");

    let request = new_request(&mut db, RequestKind::Manual, "app-misc/nothere");
    let err = plan_request(
        &mut db,
        request,
        &merge_list(),
        SETTINGS,
        &repos,
        &RequestMode::Rebuild {
            targets: vec!["app-misc/nothere-1.0".into()],
        },
        T0,
    )
    .expect_err("target missing");
    assert!(err.to_string().contains("app-misc/nothere-1.0"), "{err}");
    assert_eq!(
        db.request(request).expect("req").state,
        RequestState::Failed
    );
}

#[test]
fn ranks_follow_critical_path_then_dependents() {
    // 0: short chain head (1 s) -> 1 (100 s); 2: long alone (50 s);
    // 3 (10 s) has two dependents (5, 6 of 1 s), 4 (10.999 s) has none.
    let names = (0..7).map(|i| format!("cat/p{i}-1")).collect();
    let deps = vec![vec![], vec![0], vec![], vec![], vec![], vec![3], vec![3]];
    let graph = DepGraph::new(names, deps).expect("graph");
    let estimates = [1000, 100_000, 50_000, 10_000, 10_999, 1000, 1000].map(Some);
    let prio = priorities(&graph, &estimates);
    assert_eq!(prio[0].critical_path_ms, 101_000);
    assert_eq!(prio[3].critical_path_ms, 11_000);
    assert_eq!(prio[3].dependents, 2);
    let rank = ranks(&prio);
    // 0 (101 s through 1) first, then 1 (100 s), 2 (50 s), 3 (11 s with its dependents), 4.
    assert_eq!(rank[0], 0);
    assert_eq!(rank[1], 1);
    assert_eq!(rank[2], 2);
    assert!(rank[3] < rank[4], "{rank:?}");

    // Equal critical paths: the step with more dependents first.
    let graph = DepGraph::new(
        vec!["a".into(), "b".into(), "c".into()],
        vec![vec![], vec![], vec![1]],
    )
    .expect("graph");
    let rank = ranks(&priorities(&graph, &[Some(2), Some(1), Some(1)]));
    assert!(
        rank[1] < rank[0],
        "b (1 dependent) before a (none): {rank:?}"
    );
    // Unknown estimates count 1 ms.
    let prio = priorities(&graph, &[None, None, None]);
    assert_eq!(prio[1].critical_path_ms, 2);
}

#[test]
fn retry_backoff_doubles_up_to_the_cap() {
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay_secs: 30,
        max_delay_secs: 100,
    };
    assert_eq!(policy.delay_after(1), 30);
    assert_eq!(policy.delay_after(2), 60);
    assert_eq!(policy.delay_after(3), 100);
    assert_eq!(policy.delay_after(200), 100);
    assert!(policy.may_retry(3));
    assert!(!policy.may_retry(4));
}

#[test]
fn merge_list_json_shapes_and_errors() {
    let list = parse_merge_list(r#"[{"cpv": "a/b-1", "repo": "r"}]"#).expect("bare list");
    assert_eq!(list[0].slot, "0");
    assert!(list[0].deps.is_empty() && list[0].use_flags.is_empty());
    let back: Vec<PlannedPackage> =
        serde_json::from_str(&serde_json::to_string(&list).expect("ser")).expect("de");
    assert_eq!(back, list);
    let err = parse_merge_list(r#"[{"slot": "0"}]"#).expect_err("no cpv");
    assert!(err
        .to_string()
        .starts_with("planner output is not a valid merge list"));
}

#[test]
fn planner_helper_output_becomes_packages_with_build_time_edges() {
    // The shape scripts/plan.py prints (merge order; edges "from needs to").
    let json = r#"{
      "targets": ["@world"], "options": ["--pretend", "--buildpkg"],
      "merge_list": [
        {"cpv": "dev-libs/libhello-1.0", "slot": "0", "subslot": "1", "repo": "farm-test",
         "type": "ebuild", "use": [], "iuse": ["static"], "build_id": null},
        {"cpv": "app-misc/greeter-1.0", "slot": "0", "subslot": "0", "repo": "farm-test",
         "type": "ebuild", "use": ["color"], "iuse": ["color"], "build_id": null},
        {"cpv": "app-misc/banner-1.0", "slot": "0", "subslot": "0", "repo": "farm-test",
         "type": "ebuild", "use": [], "iuse": [], "build_id": null}
      ],
      "edges": [
        {"from": "app-misc/greeter-1.0", "to": "dev-libs/libhello-1.0",
         "kinds": ["buildtime_slot_op"]},
        {"from": "app-misc/banner-1.0", "to": "app-misc/greeter-1.0", "kinds": ["runtime"]},
        {"from": "app-misc/banner-1.0", "to": "dev-libs/libhello-1.0", "kinds": ["buildtime"]},
        {"from": "dev-libs/libhello-1.0", "to": "app-misc/banner-1.0", "kinds": ["buildtime"]}
      ]
    }"#;
    let packages = parse_merge_list(json).expect("planner output parses");
    assert_eq!(packages.len(), 3);
    assert_eq!(packages[0].slot, "0/1");
    assert_eq!(packages[1].slot, "0");
    assert_eq!(packages[1].use_flags, vec!["color"]);
    assert!(
        packages[0].deps.is_empty(),
        "an edge to a later package (one Portage broke) is dropped"
    );
    assert_eq!(packages[1].deps, vec!["dev-libs/libhello-1.0"]);
    assert_eq!(
        packages[2].deps,
        vec!["dev-libs/libhello-1.0"],
        "runtime edges do not order builds"
    );
    DepGraph::from_packages(&packages).expect("acyclic");

    let bad = r#"{"merge_list": [{"cpv": "a/b-1", "slot": "0", "repo": "r"}],
                  "edges": [{"from": "a/b-1", "to": "c/d-1", "kinds": ["buildtime"]}]}"#;
    let err = parse_merge_list(bad).expect_err("edge to a package not in the list");
    assert!(err.to_string().contains("c/d-1"), "{err}");
}
