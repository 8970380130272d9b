//! The coordinator's queue in SQLite: leases, expiry, completion, retries, blocking, cancel.

use std::collections::HashSet;

use binfarm::plan::RetryPolicy;
use binfarm::store::{
    BuildResult, Completion, Db, InitialState, NewRequest, NewStep, QueuePolicy, RequestKind,
    RequestState, StepOutcome, StepResultFile, StepState, Store, StoreError, WorkerCapabilities,
};

const T0: i64 = 1_700_000_000;

fn policy() -> QueuePolicy {
    QueuePolicy {
        lease_timeout_secs: 60,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay_secs: 30,
            max_delay_secs: 600,
        },
        pause_worker_after_failures: 5,
    }
}

fn worker(db: &mut Db, name: &str, profiles: &[&str]) -> i64 {
    let id = db.create_worker(name, T0).expect("create worker").worker_id;
    db.set_worker_capabilities(
        id,
        &WorkerCapabilities {
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
            labels: vec!["test".to_string()],
            details: serde_json::json!({"cpu_flags": ["avx2"]}),
        },
        T0,
    )
    .expect("capabilities");
    id
}

fn step(cpv: &str, rank: i64, deps: &[usize]) -> NewStep {
    NewStep {
        cpv: cpv.to_string(),
        slot: "0".to_string(),
        repo: "farm-test".to_string(),
        use_flags: vec!["ssl".to_string()],
        fingerprint: format!("fp-{cpv}"),
        sched_rank: rank,
        estimated_ms: 1000,
        deps: deps.to_vec(),
        initial: InitialState::Build,
    }
}

/// A step the plan found built already (`Cached`) or failed already (`CachedFailure`).
fn planned_as(cpv: &str, rank: i64, initial: InitialState) -> NewStep {
    NewStep {
        initial,
        ..step(cpv, rank, &[])
    }
}

fn cached_failure() -> InitialState {
    InitialState::CachedFailure {
        reason: "cached failure".to_string(),
    }
}

fn request(db: &mut Db, profile: &str, steps: &[NewStep]) -> (i64, Vec<i64>) {
    let id = db
        .create_request(
            &NewRequest {
                kind: RequestKind::Nightly,
                profile: profile.to_string(),
                target: "@world".to_string(),
            },
            T0,
        )
        .expect("create request");
    let ids = db.add_planned_steps(id, steps, T0).expect("add steps");
    (id, ids)
}

fn success(ms: i64) -> StepOutcome {
    StepOutcome::Succeeded {
        duration_ms: ms,
        log_blob: None,
        results: Vec::new(),
    }
}

/// Stores `data` as a binpkg blob (file, then row), the way an upload does; its sha512.
fn store_binpkg(store: &Store, db: &mut Db, data: &[u8]) -> String {
    let blob = store
        .blobs()
        .put_stream(data, None, 1 << 20)
        .expect("put blob");
    db.record_blob(&blob.sha512, blob.size, "binpkg", T0)
        .expect("record blob");
    blob.sha512
}

fn success_with_binpkg(ms: i64, name: &str, sha512: &str) -> StepOutcome {
    StepOutcome::Succeeded {
        duration_ms: ms,
        log_blob: None,
        results: vec![StepResultFile {
            name: name.to_string(),
            blob: sha512.to_string(),
        }],
    }
}

fn failure(error: &str) -> StepOutcome {
    StepOutcome::Failed {
        duration_ms: 10,
        log_blob: None,
        error: error.to_string(),
        retryable: true,
    }
}

fn open(dir: &std::path::Path) -> (Store, Db) {
    let store = Store::open_with(dir, policy()).expect("open store");
    let db = store.connect().expect("connect");
    (store, db)
}

#[test]
fn steps_are_leased_in_dependency_then_rank_order_and_request_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let w = worker(&mut db, "w1", &["amd64-v3"]);
    // lib (rank 0) <- app (rank 1); tool (rank 2) independent.
    let (req, ids) = request(
        &mut db,
        "amd64-v3",
        &[
            step("app-misc/app-1.0", 1, &[1]),
            step("dev-libs/lib-1.0", 0, &[]),
            step("app-misc/tool-1.0", 2, &[]),
        ],
    );
    assert_eq!(db.step(ids[0]).expect("step").state, StepState::Queued);
    assert_eq!(db.step(ids[1]).expect("step").state, StepState::Ready);
    assert_eq!(db.request(req).expect("req").state, RequestState::Running);
    assert_eq!(
        db.step_dep_cpvs(ids[0]).expect("deps"),
        vec!["dev-libs/lib-1.0"]
    );

    let first = db.lease_next(w, T0).expect("lease").expect("a step");
    assert_eq!(first.cpv, "dev-libs/lib-1.0");
    assert_eq!(first.build_id, 1);
    assert_eq!(first.attempt, 1);
    assert_eq!(first.expires_at, T0 + 60);
    assert_eq!(first.use_flags, vec!["ssl"]);
    // app is not ready until lib is built: the next is tool.
    let second = db.lease_next(w, T0).expect("lease").expect("a step");
    assert_eq!(second.cpv, "app-misc/tool-1.0");
    assert!(db.lease_next(w, T0).expect("lease").is_none());

    assert!(db
        .mark_building(first.step_id, first.lease_id, w, T0 + 1)
        .expect("building"));
    assert_eq!(
        db.step(first.step_id).expect("step").state,
        StepState::Building
    );
    db.complete_step(first.step_id, first.lease_id, w, &success(5000), T0 + 5)
        .expect("complete");
    let third = db
        .lease_next(w, T0 + 5)
        .expect("lease")
        .expect("app now ready");
    assert_eq!(third.cpv, "app-misc/app-1.0");
    for lease in [&second, &third] {
        db.complete_step(lease.step_id, lease.lease_id, w, &success(1000), T0 + 9)
            .expect("complete");
    }
    let done = db.request(req).expect("req");
    assert_eq!(done.state, RequestState::Succeeded);
    assert_eq!(done.finished_at, Some(T0 + 9));
    let known = db
        .known_builds(&["fp-dev-libs/lib-1.0", "fp-unknown"])
        .expect("known");
    assert_eq!(known.len(), 1);
    assert_eq!(known["fp-dev-libs/lib-1.0"].result, BuildResult::Succeeded);
    assert_eq!(
        db.last_durations("amd64-v3", &["dev-libs/lib-1.0"])
            .expect("durations")["dev-libs/lib-1.0"],
        5000
    );
}

#[test]
fn workers_only_get_steps_of_their_profiles_and_paused_workers_get_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let v2 = worker(&mut db, "v2-only", &["amd64-v2"]);
    let v3 = worker(&mut db, "v3-only", &["amd64-v3"]);
    request(&mut db, "amd64-v3", &[step("app-misc/a-1.0", 0, &[])]);
    assert!(db.lease_next(v2, T0).expect("lease").is_none());
    db.set_worker_paused(v3, true, Some("maintenance"))
        .expect("pause");
    assert!(db.lease_next(v3, T0).expect("lease").is_none());
    let row = db.worker(v3).expect("worker");
    assert!(row.paused);
    assert_eq!(row.paused_reason.as_deref(), Some("maintenance"));
    assert_eq!(row.profiles, vec!["amd64-v3"]);
    assert_eq!(row.capabilities["cpu_flags"][0], "avx2");
    db.set_worker_paused(v3, false, None).expect("resume");
    assert!(db.lease_next(v3, T0).expect("lease").is_some());
}

#[test]
fn two_threads_leasing_concurrently_never_get_the_same_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut db) = open(dir.path());
    let workers: Vec<i64> = (0..2)
        .map(|i| worker(&mut db, &format!("w{i}"), &["p"]))
        .collect();
    let steps: Vec<NewStep> = (0..300)
        .map(|i| step(&format!("cat/pkg{i}-1.0"), i, &[]))
        .collect();
    let (req, ids) = request(&mut db, "p", &steps);
    drop(db);

    let start = std::sync::Barrier::new(workers.len());
    let leased: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter()
            .map(|&w| {
                let store = &store;
                let start = &start;
                scope.spawn(move || {
                    // Each thread has its own connection, as the server's would.
                    let mut db = store.connect().expect("connect");
                    let mut mine = Vec::new();
                    start.wait();
                    while let Some(lease) = db.lease_next(w, T0).expect("lease") {
                        mine.push(lease.step_id);
                        // The "build": outside any transaction, as a worker's would be.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        db.complete_step(lease.step_id, lease.lease_id, w, &success(1), T0)
                            .expect("complete");
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let total: usize = leased.iter().map(Vec::len).sum();
    let unique: HashSet<i64> = leased.iter().flatten().copied().collect();
    assert_eq!(total, 300, "every step leased exactly once");
    assert_eq!(unique.len(), 300, "no step handed out twice");
    assert_eq!(unique, ids.into_iter().collect::<HashSet<_>>());
    assert!(
        leased.iter().all(|l| !l.is_empty()),
        "both threads got work: {:?}",
        leased.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let db = store.connect().expect("connect");
    assert_eq!(db.request(req).expect("req").state, RequestState::Succeeded);
}

#[test]
fn an_expired_lease_goes_back_and_the_late_completion_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let dead = worker(&mut db, "dead", &["p"]);
    let alive = worker(&mut db, "alive", &["p"]);
    let (req, ids) = request(&mut db, "p", &[step("cat/slow-1.0", 0, &[])]);

    let lost = db.lease_next(dead, T0).expect("lease").expect("step");
    db.mark_building(lost.step_id, lost.lease_id, dead, T0)
        .expect("building");
    // A heartbeat renews the lease.
    let reply = db.heartbeat(dead, &[lost.lease_id], T0 + 50).expect("hb");
    assert!(reply.revoked.is_empty());
    assert_eq!(
        db.step(ids[0]).expect("step").lease_expires_at,
        Some(T0 + 110)
    );
    assert!(db.expire_leases(T0 + 100).expect("expire").is_empty());

    // Then the worker dies: no heartbeat, the lease expires.
    let expired = db.expire_leases(T0 + 110).expect("expire");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease_id, lost.lease_id);
    assert!(expired[0].requeued);
    let row = db.step(ids[0]).expect("step");
    assert_eq!(row.state, StepState::Ready);
    assert!(row.reason.as_deref().unwrap_or("").contains("expired"));

    let retry = db
        .lease_next(alive, T0 + 111)
        .expect("lease")
        .expect("again");
    assert_eq!(retry.step_id, lost.step_id);
    assert_ne!(retry.lease_id, lost.lease_id);
    assert_eq!(retry.attempt, 2);
    assert_eq!(
        retry.build_id, lost.build_id,
        "BUILD_ID is kept across attempts"
    );

    // The dead worker comes back: told to stop, and its completion is not used.
    let reply = db.heartbeat(dead, &[lost.lease_id], T0 + 112).expect("hb");
    assert_eq!(reply.revoked, vec![lost.lease_id]);
    let late = db
        .complete_step(lost.step_id, lost.lease_id, dead, &success(1), T0 + 113)
        .expect("late completion");
    assert!(matches!(late, Completion::Ignored { .. }), "{late:?}");
    assert_eq!(db.step(ids[0]).expect("step").state, StepState::Leased);

    db.complete_step(retry.step_id, retry.lease_id, alive, &success(1), T0 + 120)
        .expect("complete");
    assert_eq!(db.request(req).expect("req").state, RequestState::Succeeded);
}

#[test]
fn a_step_whose_leases_keep_expiring_fails_after_its_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let w = worker(&mut db, "w", &["p"]);
    let (req, ids) = request(
        &mut db,
        "p",
        &[
            step("cat/crasher-1.0", 0, &[]),
            step("cat/user-1.0", 1, &[0]),
        ],
    );
    let mut now = T0;
    for _ in 0..3 {
        db.lease_next(w, now).expect("lease").expect("step");
        now += 61;
        db.expire_leases(now).expect("expire");
    }
    let row = db.step(ids[0]).expect("step");
    assert_eq!(row.state, StepState::Failed);
    assert!(row.reason.as_deref().unwrap_or("").contains("expired"));
    assert_eq!(db.step(ids[1]).expect("step").state, StepState::Blocked);
    assert_eq!(db.request(req).expect("req").state, RequestState::Failed);
}

#[test]
fn completing_twice_is_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut db) = open(dir.path());
    let w = worker(&mut db, "w", &["p"]);
    let other = worker(&mut db, "other", &["p"]);
    let (req, ids) = request(
        &mut db,
        "p",
        &[step("cat/lib-1.0", 0, &[]), step("cat/app-1.0", 1, &[0])],
    );
    let lease = db.lease_next(w, T0).expect("lease").expect("step");

    // The binpkg is stored first (file, then row), then named in the completion.
    let data = b"pretend gpkg";
    let sha512 = store_binpkg(&store, &mut db, data);
    db.record_blob(&sha512, data.len() as u64, "binpkg", T0)
        .expect("recording again is harmless");
    let outcome = success_with_binpkg(1234, "cat/lib/lib-1.0-1.gpkg.tar", &sha512);
    let first = db
        .complete_step(lease.step_id, lease.lease_id, w, &outcome, T0 + 2)
        .expect("complete");
    assert_eq!(
        first,
        Completion::Recorded {
            state: StepState::Succeeded
        }
    );
    let again = db
        .complete_step(lease.step_id, lease.lease_id, w, &outcome, T0 + 3)
        .expect("complete again");
    assert_eq!(again, Completion::AlreadyRecorded);
    let row = db.step(ids[0]).expect("step");
    assert_eq!(row.finished_at, Some(T0 + 2), "the repeat changed nothing");
    assert_eq!(db.step_results(ids[0]).expect("results").len(), 1);
    assert_eq!(db.step(ids[1]).expect("step").state, StepState::Ready);

    // A different outcome for the same lease is a conflict, not a silent change.
    let conflict = db
        .complete_step(lease.step_id, lease.lease_id, w, &failure("oops"), T0 + 4)
        .expect_err("conflict");
    assert!(
        matches!(conflict, StoreError::ConflictingCompletion { .. }),
        "{conflict:?}"
    );
    // Another worker cannot complete a lease it does not hold.
    let app = db.lease_next(w, T0 + 5).expect("lease").expect("app");
    let stranger = db
        .complete_step(app.step_id, app.lease_id, other, &success(1), T0 + 6)
        .expect_err("not the holder");
    assert!(
        matches!(stranger, StoreError::NotLeaseHolder { .. }),
        "{stranger:?}"
    );
    // An unrecorded blob is refused.
    let missing = StepOutcome::Succeeded {
        duration_ms: 1,
        log_blob: Some("ab".repeat(64)),
        results: Vec::new(),
    };
    let err = db
        .complete_step(app.step_id, app.lease_id, w, &missing, T0 + 6)
        .expect_err("unknown blob");
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err:?}");
    db.complete_step(app.step_id, app.lease_id, w, &success(1), T0 + 7)
        .expect("complete app");
    assert_eq!(db.request(req).expect("req").state, RequestState::Succeeded);
    assert!(db.unreferenced_blobs().expect("gc list").is_empty());
}

#[test]
fn failures_retry_with_backoff_then_block_dependents_naming_the_cpv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let w = worker(&mut db, "w", &["p"]);
    let (req, ids) = request(
        &mut db,
        "p",
        &[
            step("cat/broken-1.0", 0, &[]),
            step("cat/mid-1.0", 1, &[0]),
            step("cat/top-1.0", 2, &[1]),
            step("cat/fine-1.0", 3, &[]),
        ],
    );
    let fine = {
        // broken goes first (rank 0); take fine too and finish it.
        let broken = db.lease_next(w, T0).expect("lease").expect("broken");
        assert_eq!(broken.cpv, "cat/broken-1.0");
        let fine = db.lease_next(w, T0).expect("lease").expect("fine");
        db.complete_step(fine.step_id, fine.lease_id, w, &success(1), T0)
            .expect("complete fine");
        let state = db
            .complete_step(
                broken.step_id,
                broken.lease_id,
                w,
                &failure("compile error"),
                T0,
            )
            .expect("fail");
        assert_eq!(
            state,
            Completion::Recorded {
                state: StepState::Ready
            }
        );
        fine
    };
    let _ = fine;
    let row = db.step(ids[0]).expect("step");
    assert_eq!(
        row.next_attempt_at,
        T0 + 30,
        "first backoff is the base delay"
    );
    assert!(
        db.lease_next(w, T0 + 29).expect("lease").is_none(),
        "backing off"
    );
    let second = db.lease_next(w, T0 + 30).expect("lease").expect("retry");
    assert_eq!(second.attempt, 2);
    db.complete_step(
        second.step_id,
        second.lease_id,
        w,
        &failure("compile error"),
        T0 + 31,
    )
    .expect("fail");
    assert_eq!(db.step(ids[0]).expect("step").next_attempt_at, T0 + 31 + 60);
    assert!(db.lease_next(w, T0 + 90).expect("lease").is_none());
    let third = db.lease_next(w, T0 + 91).expect("lease").expect("retry");
    assert_eq!(third.attempt, 3);
    let last = db
        .complete_step(
            third.step_id,
            third.lease_id,
            w,
            &failure("compile error"),
            T0 + 92,
        )
        .expect("fail");
    assert_eq!(
        last,
        Completion::Recorded {
            state: StepState::Failed
        }
    );
    let broken = db.step(ids[0]).expect("step");
    assert_eq!(broken.state, StepState::Failed);
    assert_eq!(broken.reason.as_deref(), Some("compile error"));
    for &dependent in &ids[1..3] {
        let row = db.step(dependent).expect("step");
        assert_eq!(row.state, StepState::Blocked, "{}", row.cpv);
        assert_eq!(
            row.reason.as_deref(),
            Some("dependency cat/broken-1.0 failed"),
            "{}",
            row.cpv
        );
    }
    assert_eq!(db.step(ids[3]).expect("step").state, StepState::Succeeded);
    assert_eq!(db.request(req).expect("req").state, RequestState::Failed);
    // The failure is cached for nightly skipping.
    let known = db.known_builds(&["fp-cat/broken-1.0"]).expect("known");
    assert_eq!(known["fp-cat/broken-1.0"].result, BuildResult::Failed);
    // Three failures in a row, one success before them: not paused yet (limit 5).
    assert_eq!(db.worker(w).expect("worker").consecutive_failures, 3);
    assert!(!db.worker(w).expect("worker").paused);
}

#[test]
fn a_worker_failing_repeatedly_is_paused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let w = worker(&mut db, "flaky", &["p"]);
    let steps: Vec<NewStep> = (0..5)
        .map(|i| step(&format!("cat/p{i}-1.0"), i, &[]))
        .collect();
    request(&mut db, "p", &steps);
    for i in 0..5 {
        let lease = db.lease_next(w, T0).expect("lease").expect("step");
        db.complete_step(
            lease.step_id,
            lease.lease_id,
            w,
            &StepOutcome::Failed {
                duration_ms: 1,
                log_blob: None,
                error: format!("disk error {i}"),
                retryable: false,
            },
            T0,
        )
        .expect("fail");
    }
    let row = db.worker(w).expect("worker");
    assert!(row.paused, "5 failures in a row pause the worker");
    assert!(row
        .paused_reason
        .as_deref()
        .unwrap_or("")
        .contains("5 failed builds in a row"));
    assert_eq!(
        db.step(1).expect("step").state,
        StepState::Failed,
        "retryable: false fails at once"
    );
}

#[test]
fn cancelling_a_request_stops_its_steps_and_revokes_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let w = worker(&mut db, "w", &["p"]);
    let (req, ids) = request(
        &mut db,
        "p",
        &[step("cat/a-1.0", 0, &[]), step("cat/b-1.0", 1, &[0])],
    );
    let lease = db.lease_next(w, T0).expect("lease").expect("a");
    let summary = db.cancel_request(req, T0 + 1).expect("cancel");
    assert_eq!(summary.cancelled_steps, 2);
    assert_eq!(summary.revoked_leases, vec![lease.lease_id]);
    let row = db.request(req).expect("req");
    assert_eq!(row.state, RequestState::Cancelled);
    assert!(row.cancel_requested);
    for id in ids {
        assert_eq!(db.step(id).expect("step").state, StepState::Cancelled);
    }
    let reply = db.heartbeat(w, &[lease.lease_id], T0 + 2).expect("hb");
    assert_eq!(reply.revoked, vec![lease.lease_id]);
    let late = db
        .complete_step(lease.step_id, lease.lease_id, w, &success(1), T0 + 3)
        .expect("late");
    assert!(matches!(late, Completion::Ignored { .. }), "{late:?}");
    assert!(db.lease_next(w, T0 + 4).expect("lease").is_none());
    // Cancelling again is harmless.
    assert_eq!(
        db.cancel_request(req, T0 + 5)
            .expect("cancel again")
            .cancelled_steps,
        0
    );
}

#[test]
fn planned_cached_steps_and_cached_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let (req, ids) = request(
        &mut db,
        "p",
        &[
            planned_as("cat/base-1.0", 0, InitialState::Cached),
            planned_as("cat/bad-1.0", 1, cached_failure()),
            step("cat/on-base-1.0", 2, &[0]),
            step("cat/on-bad-1.0", 3, &[1]),
        ],
    );
    assert_eq!(db.step(ids[0]).expect("s").state, StepState::Cached);
    assert_eq!(db.step(ids[1]).expect("s").state, StepState::Failed);
    assert_eq!(db.step(ids[2]).expect("s").state, StepState::Ready);
    let blocked = db.step(ids[3]).expect("s");
    assert_eq!(blocked.state, StepState::Blocked);
    assert_eq!(
        blocked.reason.as_deref(),
        Some("dependency cat/bad-1.0 failed")
    );
    assert_eq!(db.request(req).expect("req").state, RequestState::Running);

    // Nothing to build at all: the request finishes at once.
    let only_cached = planned_as("cat/x-1.0", 0, InitialState::Cached);
    let (req2, _) = request(&mut db, "p", &[only_cached]);
    assert_eq!(
        db.request(req2).expect("req").state,
        RequestState::Succeeded
    );

    let err = db
        .add_planned_steps(req2, &[step("cat/y-1.0", 0, &[])], T0)
        .expect_err("a running request cannot be planned again");
    assert!(matches!(err, StoreError::RequestState { .. }), "{err:?}");
}

#[test]
fn worker_tokens_are_stored_only_as_hashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut db) = open(dir.path());
    let created = db.create_worker("builder-1", T0).expect("create");
    assert_eq!(created.token.len(), 64);
    let found = db
        .authenticate_worker(&created.token)
        .expect("auth")
        .expect("token works");
    assert_eq!(found.name, "builder-1");
    assert!(db.authenticate_worker("wrong").expect("auth").is_none());
    let dup = db.create_worker("builder-1", T0).expect_err("duplicate");
    assert!(matches!(dup, StoreError::WorkerExists { .. }), "{dup:?}");

    let rotated = db.rotate_worker_token("builder-1").expect("rotate");
    assert!(db
        .authenticate_worker(&created.token)
        .expect("auth")
        .is_none());
    assert!(db
        .authenticate_worker(&rotated.token)
        .expect("auth")
        .is_some());
    drop(db);
    // Neither token appears anywhere in the database files.
    for entry in std::fs::read_dir(store.dir()).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            for token in [&created.token, &rotated.token] {
                assert!(
                    !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                    "token found in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn a_restarted_coordinator_resumes_from_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (req, w, lease) = {
        let (_store, mut db) = open(dir.path());
        let w = worker(&mut db, "w", &["p"]);
        let (req, _) = request(
            &mut db,
            "p",
            &[step("cat/a-1.0", 0, &[]), step("cat/b-1.0", 1, &[0])],
        );
        let lease = db.lease_next(w, T0).expect("lease").expect("a");
        (req, w, lease)
        // Store and connection dropped: the coordinator is gone.
    };
    let (_store, mut db) = open(dir.path());
    let unfinished = db.unfinished_requests().expect("unfinished");
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].id, req);
    // The worker kept building through the restart and completes its lease.
    db.complete_step(lease.step_id, lease.lease_id, w, &success(1), T0 + 5)
        .expect("complete after restart");
    let next = db.lease_next(w, T0 + 6).expect("lease").expect("b");
    assert_eq!(next.cpv, "cat/b-1.0");
    db.complete_step(next.step_id, next.lease_id, w, &success(1), T0 + 7)
        .expect("complete");
    assert_eq!(db.request(req).expect("req").state, RequestState::Succeeded);
    assert!(db.unfinished_requests().expect("unfinished").is_empty());
}

/// Builds the leased step of `worker`, storing `data` as its binpkg; returns the lease's
/// step id, BUILD_ID and the blob's sha512.
fn build_with_binpkg(store: &Store, db: &mut Db, worker: i64, data: &[u8]) -> (i64, i64, String) {
    let lease = db.lease_next(worker, T0).expect("lease").expect("a step");
    let sha512 = store_binpkg(store, db, data);
    let name = format!("{}-{}.gpkg.tar", lease.cpv, lease.build_id);
    let outcome = success_with_binpkg(5, &name, &sha512);
    db.complete_step(lease.step_id, lease.lease_id, worker, &outcome, T0 + 1)
        .expect("complete");
    (lease.step_id, lease.build_id, sha512)
}

#[test]
fn a_requests_binpkgs_are_its_built_and_cached_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut db) = open(dir.path());
    let w = worker(&mut db, "w", &["p"]);
    // The first request builds zeta; the second has it cached, builds beta and has a
    // cached failure; a request of another profile has zeta's fingerprint cached too.
    request(&mut db, "p", &[step("cat/zeta-1.0", 0, &[])]);
    let (zeta_step, zeta_build_id, zeta_blob) =
        build_with_binpkg(&store, &mut db, w, b"zeta binpkg");
    let zeta_cached = planned_as("cat/zeta-1.0", 0, InitialState::Cached);
    let (req, ids) = request(
        &mut db,
        "p",
        &[
            zeta_cached.clone(),
            step("cat/beta-1.0", 1, &[]),
            planned_as("cat/fail-1.0", 2, cached_failure()),
        ],
    );
    let (beta_step, beta_build_id, beta_blob) =
        build_with_binpkg(&store, &mut db, w, b"beta's binpkg");
    assert_eq!(beta_step, ids[1]);
    let (other_profile, _) = request(&mut db, "q", &[zeta_cached]);

    // The coordinator's view: the finished steps' binpkgs, in step order.
    let binpkgs = db.request_binpkgs(req).expect("binpkgs");
    let names: Vec<(&str, i64, &str, &str, u64)> = binpkgs
        .iter()
        .map(|b| {
            (
                b.cpv.as_str(),
                b.build_id,
                b.path.as_str(),
                b.sha512.as_str(),
                b.size,
            )
        })
        .collect();
    let zeta_path = format!("cat/zeta/zeta-1.0-{zeta_build_id}.gpkg.tar");
    let beta_path = format!("cat/beta/beta-1.0-{beta_build_id}.gpkg.tar");
    assert_eq!(
        names,
        vec![
            (
                "cat/zeta-1.0",
                zeta_build_id,
                zeta_path.as_str(),
                zeta_blob.as_str(),
                11
            ),
            (
                "cat/beta-1.0",
                beta_build_id,
                beta_path.as_str(),
                beta_blob.as_str(),
                13
            ),
        ]
    );
    assert_ne!(
        zeta_step, ids[0],
        "the cached step is not the one that built"
    );

    // Publishing's view: every step by CPV, None where nothing was stored.
    let packages = db.request_packages(req).expect("packages");
    let summary: Vec<(i64, &str, StepState, Option<&str>)> = packages
        .iter()
        .map(|p| {
            (
                p.step_id,
                p.cpv.as_str(),
                p.state,
                p.binpkg.as_ref().map(|b| b.sha512.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                ids[1],
                "cat/beta-1.0",
                StepState::Succeeded,
                Some(beta_blob.as_str())
            ),
            (ids[2], "cat/fail-1.0", StepState::Failed, None),
            (
                ids[0],
                "cat/zeta-1.0",
                StepState::Cached,
                Some(zeta_blob.as_str())
            ),
        ]
    );
    assert_eq!(packages[0].binpkg.as_ref(), Some(&binpkgs[1]));

    // Builds of another profile do not count.
    assert!(db
        .request_binpkgs(other_profile)
        .expect("binpkgs")
        .is_empty());
    let packages = db.request_packages(other_profile).expect("packages");
    assert_eq!(packages.len(), 1);
    assert_eq!(packages[0].binpkg, None);
}

#[test]
fn a_lease_poll_marks_the_worker_seen_but_does_not_renew_its_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut db) = open(dir.path());
    let restarted = worker(&mut db, "restarted", &["p"]);
    let (_req, ids) = request(&mut db, "p", &[step("cat/orphan-1.0", 0, &[])]);
    let orphan = db.lease_next(restarted, T0).expect("lease").expect("step");
    let expires = db.step(ids[0]).expect("step").lease_expires_at;
    assert_eq!(expires, Some(T0 + 60));

    // The restarted worker long-polls for work instead of heart-beating its old lease.
    db.mark_worker_seen(restarted, T0 + 50).expect("seen");
    let seen = db.worker(restarted).expect("worker").last_heartbeat;
    assert_eq!(seen, Some(T0 + 50));
    assert_eq!(db.step(ids[0]).expect("step").lease_expires_at, expires);
    let expired = db.expire_leases(T0 + 60).expect("expire");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].lease_id, orphan.lease_id);

    assert!(matches!(
        db.mark_worker_seen(9999, T0),
        Err(StoreError::NoSuchWorker { .. })
    ));
}
