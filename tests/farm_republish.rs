//! Publishing survives a coordinator restart: a request that succeeded while its snapshot
//! never reached `testing` (the coordinator was killed in between, or publishing failed) is
//! published by the next coordinator when it starts, once, and channel trees an FTP
//! mirror missed (it was down) are pushed there; `binfarm promote` with the mirror down
//! says so and how to retry.
//!
//! The process test runs real `binfarm serve` and `binfarm worker` processes with real
//! emerge and a real vsftpd. The crash window's state (request succeeded, no snapshot) is
//! made by the coordinator itself: its publish of the second request fails because the
//! staging directory is taken by a file; then it is killed (SIGKILL) and restarted.
//! The store test checks which requests the query picks.

mod common;
mod common_ftp;
mod process_farm;
mod publish_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use binfarm::publish::{create_snapshot, publish_snapshot_to, SnapshotOptions, STABLE, TESTING};
use binfarm::store::{NewRequest, RequestKind, SnapshotOrigin};
use common_ftp::Vsftpd;
use process_farm::{free_port, FarmSettings, ProcessFarm, BIN};
use publish_support::{signed_packages, Farm, GREETER, HELLO, LIBHELLO, PROFILE};
use serde_json::Value;

/// The farm.toml settings: one FTP mirror at `ftp_url` (fast retries) and a notify
/// command appending each notification to [`notified`].
fn settings(dir: &Path, ftp_url: &str) -> FarmSettings {
    FarmSettings {
        lease_seconds: 20,
        heartbeat_seconds: 1,
        max_attempts: 2,
        extra: format!(
            r#"[[ftp]]
url = "{ftp_url}"
sessions = 2
retries = 1
backoff_initial_ms = 50
connect_timeout_secs = 3
io_timeout_secs = 20
[notify]
command = "cat >> '{notified}'; echo >> '{notified}'"
"#,
            notified = notified(dir).display(),
        ),
    }
}

/// Where the notify command appends each notification (one JSON document each).
fn notified(dir: &Path) -> PathBuf {
    dir.join("notified.jsonl")
}

/// The notifications of request `id` so far.
fn notifications_of(farm: &ProcessFarm, id: i64) -> Vec<Value> {
    let text = std::fs::read_to_string(notified(&farm.dir)).unwrap_or_default();
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .filter(|n| n["request_id"] == id)
        .collect()
}

/// The testing index the coordinator's mirror serves ("" when there is none).
fn served_testing_index(farm: &ProcessFarm) -> String {
    farm.get(&format!("/mirror/{PROFILE}/{TESTING}/Packages"))
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `binfarm snapshots list --json`: (snapshot id, request id, channels) per snapshot.
fn snapshots(farm: &ProcessFarm) -> Vec<(i64, Option<i64>, Vec<String>)> {
    let out = farm.binfarm(&["snapshots", "list", "--profile", PROFILE, "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["request_id"].as_i64(),
                r["channels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn a_restarted_coordinator_publishes_what_the_killed_one_did_not() {
    let started = Instant::now();
    let tmp = common::tempdir();
    let ftp = Vsftpd::start();
    // First run: the FTP mirror is unreachable (nothing listens on that port).
    let dead_port = free_port();
    let farm = ProcessFarm::new(
        tmp.path(),
        &settings(tmp.path(), &format!("ftp://127.0.0.1:{dead_port}/pub")),
    );
    let coordinator = farm.start_coordinator();
    let worker = farm.start_worker("w1", &[PROFILE], &[]);

    // R1 is published as usual (the local tree; the FTP push fails and is logged).
    let r1 = farm.rebuild("app-misc/hello", PROFILE);
    farm.wait_succeeded(r1, Duration::from_secs(600));
    farm.wait_for("R1 in the testing index", Duration::from_secs(60), || {
        served_testing_index(&farm).contains("CPV: app-misc/hello-1.0")
    });
    farm.wait_for("the failed FTP push", Duration::from_secs(60), || {
        farm.serve_log()
            .contains(&format!("ftp 127.0.0.1:{dead_port} {PROFILE}/{TESTING}: "))
    });

    // An operator promotes R1 to stable meanwhile: the local tree moves, the command fails
    // naming the unreachable mirror and how to retry.
    let out = Command::new(BIN)
        .args(["promote", "--profile", PROFILE, "--to", STABLE, "--config"])
        .arg(&farm.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{PROFILE}/{STABLE}: the local tree is published, but FTP mirrors failed: 127.0.0.1:{dead_port}: "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "retry with: binfarm publish --profile {PROFILE} --channel {STABLE}"
        )),
        "{stderr}"
    );
    let local_stable = tmp
        .path()
        .join(format!("mirror/{PROFILE}/{STABLE}/Packages"));
    assert!(std::fs::read_to_string(&local_stable)
        .unwrap()
        .contains("CPV: app-misc/hello-1.0"));

    // R2 succeeds, but its publish fails before any snapshot exists (the staging
    // directory is a file); then the coordinator is killed: the crash window's state.
    let staging = tmp.path().join("state/publish-staging");
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::write(&staging, b"in the way").unwrap();
    // R2 ends in a later second than R1's publish (it builds for seconds anyway).
    std::thread::sleep(Duration::from_millis(1100));
    let r2 = farm.rebuild("app-misc/greeter", PROFILE);
    farm.wait_succeeded(r2, Duration::from_secs(600));
    farm.wait_for("R2's failed publish", Duration::from_secs(60), || {
        farm.serve_log()
            .contains(&format!("request {r2}: publishing failed"))
    });
    // Its notification says it was not published.
    farm.wait_for("R2's notification", Duration::from_secs(30), || {
        !notifications_of(&farm, r2).is_empty()
    });
    assert_eq!(notifications_of(&farm, r2)[0]["published"], Value::Null);
    drop(worker);
    drop(coordinator);
    let before = snapshots(&farm);
    assert!(
        before.iter().all(|(_, request, _)| *request != Some(r2)),
        "{before:?}"
    );
    let local_index = tmp
        .path()
        .join(format!("mirror/{PROFILE}/{TESTING}/Packages"));
    assert!(!std::fs::read_to_string(&local_index)
        .unwrap()
        .contains("greeter"));
    assert!(!ftp.pub_dir().join(PROFILE).exists());

    // Second run, the FTP mirror is back: R2 is published on start, to the local tree and
    // to the FTP mirror.
    std::fs::remove_file(&staging).unwrap();
    farm.write_config(&settings(tmp.path(), &ftp.url()));
    let coordinator = farm.start_coordinator();
    let recovered = |n: usize| {
        farm.serve_log()
            .matches("startup: publishing recovered")
            .count()
            >= n
    };
    farm.wait_for("the startup recovery", Duration::from_secs(120), || {
        recovered(2)
    });
    let log = farm.serve_log();
    assert!(
        log.contains(&format!(
            "request {r2} ({PROFILE}) succeeded but was not published: publishing it now"
        )),
        "{log}"
    );
    // A second notification, now that R2 is published.
    farm.wait_for("R2's second notification", Duration::from_secs(30), || {
        notifications_of(&farm, r2).len() == 2
    });
    let published = &notifications_of(&farm, r2)[1]["published"];
    assert_eq!(published["channel"], TESTING, "{published}");
    assert_eq!(published["unchanged"], false, "{published}");
    let index = served_testing_index(&farm);
    assert!(index.contains("CPV: app-misc/greeter-1.0"), "{index}");
    assert!(index.contains("CPV: dev-libs/libhello-1.0"), "{index}");
    assert!(index.contains("CPV: app-misc/hello-1.0"), "{index}");
    let after = snapshots(&farm);
    let of_r2: Vec<_> = after.iter().filter(|s| s.1 == Some(r2)).collect();
    assert_eq!(of_r2.len(), 1, "{after:?}");
    assert_eq!(of_r2[0].2, [TESTING], "{after:?}");
    assert_eq!(published["snapshot_id"], of_r2[0].0, "{after:?}");
    // The FTP mirror shows exactly the local tree's index, and has its packages.
    let ftp_tree = ftp.pub_dir().join(PROFILE).join(TESTING);
    assert_eq!(
        std::fs::read_to_string(ftp_tree.join("Packages")).unwrap(),
        std::fs::read_to_string(&local_index).unwrap()
    );
    for line in index.lines().filter_map(|l| l.strip_prefix("PATH: ")) {
        assert!(
            ftp_tree.join(line).is_file(),
            "{line} missing on the FTP mirror"
        );
    }
    drop(coordinator);

    // A third start publishes nothing again.
    let coordinator = farm.start_coordinator();
    farm.wait_for("the startup recovery", Duration::from_secs(60), || {
        recovered(3)
    });
    assert_eq!(snapshots(&farm), after);
    let log = farm.serve_log();
    let third_run = &log[log.rfind("binfarm coordinator listening").unwrap()..];
    assert!(
        third_run.contains("startup: 0 succeeded request(s) without a published snapshot"),
        "{third_run}"
    );
    drop(coordinator);
    eprintln!("farm_republish: {:?}", started.elapsed());
}

/// A succeeded request at `t` (no steps: it ends as soon as it is planned).
fn succeeded_request(farm: &mut Farm, profile: &str, t: i64) -> i64 {
    let id = farm
        .db
        .create_request(
            &NewRequest {
                kind: RequestKind::Manual,
                profile: profile.into(),
                target: "app-misc/hello".into(),
            },
            t,
        )
        .unwrap();
    farm.db.add_planned_steps(id, &[], t).unwrap();
    assert_eq!(farm.db.request(id).unwrap().finished_at, Some(t));
    id
}

fn snapshot_of(farm: &mut Farm, files: &[&Path], request: i64, t: i64) -> i64 {
    let blobs: Vec<String> = files.iter().map(|f| farm.store(f)).collect();
    create_snapshot(
        &farm.publisher,
        &mut farm.db,
        &publish_support::profile(),
        &blobs,
        &SnapshotOptions {
            origin: SnapshotOrigin::Manual,
            request_id: Some(request),
            ..Default::default()
        },
        t,
    )
    .unwrap()
}

fn listed(farm: &Farm) -> Vec<(i64, Option<i64>)> {
    farm.db
        .unpublished_requests(TESTING)
        .unwrap()
        .into_iter()
        .map(|u| (u.request_id, u.snapshot_id))
        .collect()
}

#[test]
fn the_query_picks_unpublished_requests_oldest_first_and_nothing_else() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    let t = binfarm::store::unix_now() - 1000;

    // r1 published as usual.
    let r1 = succeeded_request(&mut farm, PROFILE, t);
    let s1 = snapshot_of(&mut farm, &[&pkgs[HELLO]], r1, t);
    publish_snapshot_to(&farm.publisher, &mut farm.db, s1, TESTING, t + 1).unwrap();
    assert_eq!(listed(&farm), []);
    // r2: killed before its snapshot; r3: killed after its snapshot, before the pointer
    // moved; r4: another profile whose testing never moved.
    let r2 = succeeded_request(&mut farm, PROFILE, t + 10);
    let r3 = succeeded_request(&mut farm, PROFILE, t + 20);
    let s3 = snapshot_of(&mut farm, &[&pkgs[LIBHELLO], &pkgs[GREETER]], r3, t + 20);
    let r4 = succeeded_request(&mut farm, "x86-64-v2", t + 5);
    assert_eq!(listed(&farm), [(r4, None), (r2, None), (r3, Some(s3))]);

    // Publishing r3 supersedes r2 (testing moved after r2 ended: r2's packages would go
    // over newer ones); r4's profile is another.
    publish_snapshot_to(&farm.publisher, &mut farm.db, s3, TESTING, t + 30).unwrap();
    assert_eq!(listed(&farm), [(r4, None)]);
    // A request whose snapshot GC removed was published: it is not picked again.
    farm.db.delete_snapshots(&[s1]).unwrap();
    assert_eq!(listed(&farm), [(r4, None)]);
    // One that ended in the second testing last moved counts as superseded.
    succeeded_request(&mut farm, PROFILE, t + 30);
    assert_eq!(listed(&farm), [(r4, None)]);
    let r6 = succeeded_request(&mut farm, PROFILE, t + 31);
    assert_eq!(listed(&farm), [(r4, None), (r6, None)]);
}
