//! The farm with real processes: `binfarm serve`, two `binfarm worker`s and real emerge.
//! Builds the fixture set for both profiles in parallel and in dependency order, survives
//! the coordinator being killed mid-request, skips everything on an unchanged nightly,
//! hands a step of a killed worker to another, and rejects bad tokens, wrong sha512s and
//! hostile uploads.

mod common;
mod process_farm;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use process_farm::{steps, FarmSettings, ProcessFarm};

/// Both example profiles: every worker of this test builds for both.
const PROFILES: [&str; 2] = ["x86-64-v3", "x86-64-v2"];

#[test]
fn farm_builds_in_parallel_survives_crashes_and_rejects_bad_input() {
    let tmp = common::tempdir();
    let farm = ProcessFarm::new(tmp.path(), &FarmSettings::default());
    // Creating tokens opens the state directory before the coordinator first runs.
    let mut coordinator = farm.start_coordinator();
    let w1 = farm.start_worker("w1", &PROFILES, &[]);
    let w2 = farm.start_worker("w2", &PROFILES, &[]);

    // Bad tokens get 401 and nothing else.
    for token in [None, Some("not-a-token")] {
        let (status, body) = farm.call(
            "POST",
            "/api/v1/worker/lease",
            token,
            Some(json!({"wait_seconds": 0})),
        );
        assert_eq!(status, 401);
        assert_eq!(body, json!({"error": "unauthorized"}));
    }
    let (status, _) = farm.call(
        "POST",
        "/api/v1/requests",
        Some("wrong"),
        Some(json!({"kind": "nightly", "profile": "x86-64-v3"})),
    );
    assert_eq!(status, 401);
    let (status, body) = farm.call(
        "POST",
        "/api/v1/requests",
        Some(&farm.admin_token()),
        Some(json!({"kind": "rebuild", "profile": "x86-64-v3", "atom": "=app-misc/hello"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("needs a version"),
        "{body}"
    );

    // Nightly for both profiles; the coordinator is killed and restarted mid-request.
    let v3 = farm.nightly("x86-64-v3");
    let v2 = farm.nightly("x86-64-v2");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = steps(&farm.request(v3))
            .iter()
            .filter(|s| s["state"] == "succeeded")
            .count();
        if done >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no step finished\n{}",
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(coordinator);
    std::thread::sleep(Duration::from_secs(1));
    coordinator = farm.start_coordinator();

    let r3 = farm.wait_finished(v3, Duration::from_secs(900));
    let r2 = farm.wait_finished(v2, Duration::from_secs(900));
    for r in [&r3, &r2] {
        assert_eq!(r["state"], "succeeded", "{r:#}\n{}", farm.logs());
        let steps = steps(r);
        assert!(
            steps.len() >= 7,
            "the fixture set with its dependencies: {r:#}"
        );
        assert!(steps.iter().all(|s| s["state"] == "succeeded"), "{r:#}");
    }
    // Both workers built something (in parallel across workers).
    let all: Vec<Value> = steps(&r3).into_iter().chain(steps(&r2)).collect();
    let mut builders: Vec<String> = all
        .iter()
        .filter_map(|s| s["built_by"].as_str().map(str::to_owned))
        .collect();
    builders.sort();
    builders.dedup();
    assert_eq!(builders.len(), 2, "both workers took steps: {all:#?}");
    // Dependency order: libhello finished before greeter started.
    for r in [&r3, &r2] {
        let steps = steps(r);
        let find = |pn: &str| {
            steps
                .iter()
                .find(|s| s["cpv"].as_str().unwrap().contains(pn))
                .unwrap()
                .clone()
        };
        let (lib, greeter) = (find("/libhello-"), find("/greeter-"));
        assert!(lib["finished_at"].as_i64().unwrap() <= greeter["started_at"].as_i64().unwrap());
    }

    // Each finished request was published to its profile's testing channel, served under
    // /mirror (publishing follows the request's end).
    for (request, profile) in [(v3, "x86-64-v3"), (v2, "x86-64-v2")] {
        farm.wait_published(request);
        let index = farm
            .get(&format!("/mirror/{profile}/testing/Packages"))
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("{profile}: no testing index served"));
        assert!(
            index.contains("CPV: app-misc/greeter-1.0"),
            "{profile}: {index}"
        );
        assert!(
            index.contains("CPV: dev-libs/libhello-1.0"),
            "{profile}: {index}"
        );
    }

    // A second nightly with nothing changed builds nothing, and makes no new snapshot:
    // testing keeps its index byte for byte (clients get 304s).
    let testing_index = || farm.get("/mirror/x86-64-v3/testing/Packages");
    let index_before = testing_index();
    // The operator waits for it (`--wait` returns once it is published).
    let out = farm.binfarm(&["nightly", "--profile", "x86-64-v3", "--wait"]);
    let again: i64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no request id in {out:?}"));
    let r = farm.request(again);
    assert_eq!(r["state"], "succeeded", "{r:#}");
    assert!(steps(&r).iter().all(|s| s["state"] == "cached"), "{r:#}");
    assert_eq!(r["published"]["unchanged"], true, "{r:#}");
    assert!(
        out.contains(&format!(
            "request {again} succeeded: nothing changed, testing stays at snapshot {}",
            r["published"]["snapshot_id"]
        )),
        "{out}"
    );
    assert_eq!(testing_index(), index_before);

    // A worker killed mid-step: its lease expires and another worker completes the step.
    drop(w1);
    drop(w2);
    let pidfile = tmp.path().join("sleeper.pids");
    let sleepy = farm.start_worker(
        "w1",
        &PROFILES,
        &[
            "--build-env",
            "SLEEPER_SECONDS=600",
            "--build-env",
            &format!("SLEEPER_PIDFILE={}", pidfile.display()),
        ],
    );
    let admin = farm.admin_token();
    let (status, body) = farm.call(
        "POST",
        "/api/v1/requests",
        Some(&admin),
        Some(json!({"kind": "rebuild", "profile": "x86-64-v3", "atom": "app-misc/sleeper"})),
    );
    assert_eq!(status, 200, "{body}");
    let sleeper_request = body["id"].as_i64().unwrap();
    farm.wait_for("the sleeper to start", Duration::from_secs(300), || {
        pidfile.exists()
    });
    drop(sleepy); // kill -9 of the worker agent
                  // Its orphaned emerge would sleep on: end it (sleep child and the compile shell).
    let pids = std::fs::read_to_string(&pidfile).unwrap();
    for pid in pids.split_whitespace() {
        let _ = Command::new("kill").arg("-9").arg(pid).status();
    }
    let _w2 = farm.start_worker("w2", &PROFILES, &["--build-env", "SLEEPER_SECONDS=1"]);
    let r = farm.wait_finished(sleeper_request, Duration::from_secs(300));
    assert_eq!(r["state"], "succeeded", "{r:#}\n{}", farm.logs());
    let sleeper_step = steps(&r)
        .into_iter()
        .find(|s| s["cpv"].as_str().unwrap().contains("sleeper"))
        .unwrap();
    assert_eq!(sleeper_step["attempts"], 2, "{sleeper_step:#}");
    // No partial upload is ever stored: the blob store holds only complete, named blobs.
    let tmp_blobs: Vec<_> = walkdir::WalkDir::new(tmp.path().join("state/blobs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !is_sha512_name(e.path()))
        .collect();
    assert!(tmp_blobs.is_empty(), "leftover temp files: {tmp_blobs:?}");

    drop(coordinator);
}

fn is_sha512_name(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .unwrap()
        .to_string_lossy();
    parent.len() == 2 && name.len() == 126 && name.chars().all(|c| c.is_ascii_hexdigit())
}

/// A worker driven by hand over the protocol: uploads with a wrong sha512 and hostile
/// archives are refused with a clear error and nothing is stored; the failed step is retried.
#[test]
fn uploads_are_checked_before_they_are_stored() {
    let tmp = common::tempdir();
    let farm = ProcessFarm::new(tmp.path(), &FarmSettings::default());
    let _coordinator = farm.start_coordinator();
    let token_file = tmp.path().join("manual.token");
    farm.binfarm(&[
        "token",
        "create",
        "--worker",
        "manual",
        "--output",
        token_file.to_str().unwrap(),
    ]);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let t = Some(token.as_str());
    let (status, reg) = farm.call(
        "POST",
        "/api/v1/worker/register",
        t,
        Some(json!({"host": "test", "profiles": ["x86-64-v3"], "cpu_flags": ["avx2", "sse4_2"], "labels": [], "slots": 1})),
    );
    assert_eq!(status, 200, "{reg}");
    assert_eq!(reg["accepted_profiles"], json!(["x86-64-v3"]));

    let admin = farm.admin_token();
    let (status, request) = farm.call(
        "POST",
        "/api/v1/requests",
        Some(&admin),
        Some(json!({"kind": "rebuild", "profile": "x86-64-v3", "atom": "app-misc/hello"})),
    );
    assert_eq!(status, 200, "{request}");
    let request_id = request["id"].as_i64().unwrap();

    // The planning job comes first; answer it with a one-package merge list.
    let (status, job) = farm.call(
        "POST",
        "/api/v1/worker/lease",
        t,
        Some(json!({"wait_seconds": 5})),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["kind"], "plan");
    let lease = job["plan_lease"].as_str().unwrap().to_owned();
    let merge_list =
        json!([{"cpv": "app-misc/hello-1.0", "slot": "0", "repo": "farm-test", "use": []}]);
    let (status, planned) = farm.call(
        "POST",
        &format!("/api/v1/worker/plans/{request_id}?lease={lease}"),
        t,
        Some(json!({"result": "planned", "merge_list": merge_list})),
    );
    assert_eq!(status, 200, "{planned}");
    assert_eq!(planned["status"], "planned", "{planned}");

    let (status, job) = farm.call(
        "POST",
        "/api/v1/worker/lease",
        t,
        Some(json!({"wait_seconds": 5})),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["kind"], "build");
    assert_eq!(job["cpv"], "app-misc/hello-1.0");
    let (step, lease) = (
        job["step_id"].as_i64().unwrap(),
        job["lease_id"].as_i64().unwrap(),
    );
    let upload_path = format!("/api/v1/worker/steps/{step}/binpkgs?lease={lease}");

    let upload = |body: Vec<u8>, sha: &str| -> (u16, Value) {
        farm.send_bytes("PUT", &upload_path, &token, body, Some(sha.to_string()))
    };
    let sha512 = |data: &[u8]| hex::encode(<sha2::Sha512 as sha2::Digest>::digest(data));

    // A wrong sha512 sent ahead.
    let bytes = b"not what was announced".to_vec();
    let (status, body) = upload(bytes, &sha512(b"something else"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("sha512 mismatch"),
        "{body}"
    );

    // A hostile archive: a member name that escapes, and no gpkg-1.
    let hostile = hostile_tar(&[
        ("hello-1.0-1/../../../etc/evil", b"owned"),
        ("hello-1.0-1/Manifest", b""),
    ]);
    let (status, body) = upload(hostile.clone(), &sha512(&hostile));
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("rejected binpkg"), "{body}");
    assert!(!std::path::Path::new("/etc/evil").exists());

    // Without an upload the worker reports failure; the step goes back to the queue.
    let (status, reply) = farm.call(
        "POST",
        &format!("/api/v1/worker/steps/{step}/complete"),
        t,
        Some(json!({"outcome": "failed", "lease_id": lease, "duration_ms": 10, "error": "upload refused", "retryable": true})),
    );
    assert_eq!(status, 200, "{reply}");
    // Repeating the completion is harmless.
    let (status, again) = farm.call(
        "POST",
        &format!("/api/v1/worker/steps/{step}/complete"),
        t,
        Some(json!({"outcome": "failed", "lease_id": lease, "duration_ms": 10, "error": "upload refused", "retryable": true})),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "already recorded");
    let r = farm.request(request_id);
    let s = &steps(&r)[0];
    assert_eq!(s["state"], "ready", "retried after backoff: {r:#}");
    assert_eq!(s["attempts"], 1);

    // Nothing from the refused uploads was stored.
    let stored: Vec<_> = walkdir::WalkDir::new(tmp.path().join("state/blobs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| !p.to_string_lossy().contains("step-"))
        .collect();
    assert!(stored.iter().all(|p| is_sha512_name(p)), "{stored:?}");
    assert!(
        stored.len() <= 1,
        "only the (empty) log may be stored: {stored:?}"
    );

    // An operator pauses the worker: the ready step is not leased to it; resumed, it is.
    let out = farm.binfarm(&["workers", "pause", "manual"]);
    assert!(out.contains("worker manual: paused"), "{out}");
    let (status, job) = farm.call(
        "POST",
        "/api/v1/worker/lease",
        t,
        Some(json!({"wait_seconds": 2})),
    );
    assert_eq!(status, 204, "a paused worker got a job: {job}");
    let out = farm.binfarm(&["workers", "resume", "manual"]);
    assert!(out.contains("worker manual: active"), "{out}");
    let (status, job) = farm.call(
        "POST",
        "/api/v1/worker/lease",
        t,
        Some(json!({"wait_seconds": 5})),
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["step_id"].as_i64(), Some(step), "{job}");
}

/// An outer tar whose member names are written as given (the tar crate refuses `..`).
fn hostile_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in members {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
