//! Snapshots, channels, local trees, diff, resign and GC, on real emerge-built gpkgs signed
//! by binfarm (the node-side check with real emerge is in publish_node.rs).

mod common;
mod publish_support;

use std::os::unix::fs::MetadataExt;

use binfarm::binpkg;
use binfarm::index::PackagesIndex;
use binfarm::publish::{
    self, diff_snapshots, promote, publish_snapshot_to, resign, rollback, run_gc, snapshot,
    verify_tree, ChangeKind, PublishError, Retention, STABLE, TESTING,
};
use binfarm::sign::Keyring;
use binfarm::store::{
    InitialState, NewRequest, NewStep, RequestKind, StepOutcome, StepResultFile, WorkerCapabilities,
};
use publish_support::{
    farm_key, profile, rebuilt, signed_packages, snapshot_paths, Farm, GREETER, HELLO, LIBHELLO,
    PROFILE,
};

const T: i64 = 1_800_000_000;

fn header(text: &str) -> PackagesIndex {
    PackagesIndex::parse(text, std::path::Path::new("index")).unwrap()
}

#[test]
fn snapshots_channels_and_trees() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());

    let a = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO]], T);
    let row = farm.db.snapshot(a).unwrap().unwrap();
    assert_eq!(row.profile, PROFILE);
    assert_eq!(row.packages, 2);
    let entries = farm.db.snapshot_entries(a).unwrap();
    let hello = entries.iter().find(|e| e.path == HELLO).unwrap();
    assert_eq!(hello.cpv, "app-misc/hello-1.0");
    assert_eq!(hello.build_id, 1);
    assert_eq!(hello.slot, "0");
    let lib = entries.iter().find(|e| e.path == LIBHELLO).unwrap();
    assert!(lib.slot.starts_with('0'), "libhello slot {}", lib.slot);

    // The index: profile header keys, one entry per package with the file's hashes.
    let text = snapshot::read_index_blob(&farm.publisher, &row.index_blob).unwrap();
    let index = header(&text);
    assert_eq!(index.header["ARCH"], "amd64");
    assert_eq!(index.header["CHOST"], "x86_64-pc-linux-gnu");
    assert_eq!(index.header["PROFILE"], "farm/amd64");
    assert!(index.header["USE"].contains("cpu_flags_x86_avx2"));
    assert!(index.header["USE"].contains("color"));
    assert_eq!(index.header["PACKAGES"], "2");
    assert_eq!(index.entries.len(), 2);
    let bytes = std::fs::read(&pkgs[HELLO]).unwrap();
    let entry = index.entries.iter().find(|e| e.path() == HELLO).unwrap();
    assert_eq!(entry.value("SIZE"), bytes.len().to_string());
    assert_eq!(
        entry.value("MD5"),
        hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes))
    );

    // New snapshots go to testing; the tree is consistent and shares inodes with the store.
    let o = publish_snapshot_to(&farm.publisher, &mut farm.db, a, TESTING, T).unwrap();
    assert_eq!((o.previous, o.snapshot, o.tree.linked), (None, a, 2));
    let testing = farm.tree(TESTING);
    let (problems, paths) = verify_tree(&testing).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(paths.len(), 2);
    let blob = farm.publisher.store.blobs().path_of(&hello.blob).unwrap();
    assert_eq!(
        std::fs::metadata(&blob).unwrap().ino(),
        std::fs::metadata(testing.join(HELLO)).unwrap().ino()
    );
    assert_eq!(
        std::fs::metadata(testing.join(HELLO)).unwrap().mode() & 0o444,
        0o444,
        "mirror files are world-readable"
    );

    // Snapshot B: hello rebuilt (BUILD_ID 2), greeter added.
    let hello2 = rebuilt(&pkgs[HELLO], dir.path(), 2);
    let b = farm.snapshot(&[&pkgs[LIBHELLO], &hello2, &pkgs[GREETER]], T + 10);
    assert_eq!(
        snapshot_paths(&farm.db, b),
        vec![
            GREETER.to_string(),
            "app-misc/hello/hello-1.0-2.gpkg.tar".to_string(),
            LIBHELLO.to_string()
        ]
    );
    let d = diff_snapshots(&farm.db, a, b).unwrap();
    let kinds: Vec<(ChangeKind, &str)> =
        d.changes.iter().map(|c| (c.kind, c.cp.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (ChangeKind::Added, "app-misc/greeter"),
            (ChangeKind::Rebuilt, "app-misc/hello"),
        ]
    );
    assert_eq!(d.unchanged, 1);
    assert!(d
        .render()
        .contains("1 added, 0 upgraded, 0 downgraded, 0 removed, 1 rebuilt, 1 unchanged"));

    // Promote (default: what testing points at), then promote A, then roll back twice.
    publish_snapshot_to(&farm.publisher, &mut farm.db, b, TESTING, T).unwrap();
    let o = promote(&farm.publisher, &mut farm.db, PROFILE, None, STABLE, T).unwrap();
    assert_eq!((o.previous, o.snapshot), (None, b));
    let stable = farm.tree(STABLE);
    let ts1 = o.tree.index_timestamp;
    let o = promote(&farm.publisher, &mut farm.db, PROFILE, Some(a), STABLE, T).unwrap();
    assert_eq!((o.previous, o.snapshot), (Some(b), a));
    assert!(o.tree.index_timestamp > ts1, "TIMESTAMP must increase");
    // Promoting A again is no move: one rollback still goes back to B.
    let history = farm.db.all_channel_history().unwrap().len();
    let o = promote(&farm.publisher, &mut farm.db, PROFILE, Some(a), STABLE, T).unwrap();
    assert_eq!((o.previous, o.snapshot), (Some(a), a));
    assert_eq!(farm.db.all_channel_history().unwrap().len(), history);
    assert_eq!(verify_tree(&stable).unwrap().1, snapshot_paths(&farm.db, a));
    // B's files stay until GC (clients may hold B's index) and are recorded as such.
    assert!(stable.join(GREETER).is_file());
    let orphans = farm.db.mirror_orphans(&stable.to_string_lossy()).unwrap();
    assert_eq!(orphans.len(), 2, "{orphans:?}");

    let o = rollback(&farm.publisher, &mut farm.db, PROFILE, STABLE, T).unwrap();
    assert_eq!((o.previous, o.snapshot), (Some(a), b));
    let (problems, paths) = verify_tree(&stable).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(paths, snapshot_paths(&farm.db, b));
    let err = rollback(&farm.publisher, &mut farm.db, PROFILE, STABLE, T).unwrap_err();
    assert!(err.to_string().contains("no earlier snapshot"), "{err}");
    assert_eq!(
        farm.db
            .channel(PROFILE, STABLE)
            .unwrap()
            .unwrap()
            .snapshot_id,
        b
    );

    // Errors name what is wrong.
    let err = promote(&farm.publisher, &mut farm.db, "other", Some(a), STABLE, T).unwrap_err();
    assert!(matches!(err, PublishError::WrongProfile { .. }), "{err}");
    let err = promote(&farm.publisher, &mut farm.db, PROFILE, Some(a), "../x", T).unwrap_err();
    assert!(matches!(err, PublishError::BadName { .. }), "{err}");
    let err = promote(&farm.publisher, &mut farm.db, PROFILE, Some(999), STABLE, T).unwrap_err();
    assert!(
        matches!(err, PublishError::NoSuchSnapshot { id: 999 }),
        "{err}"
    );

    // An unsigned package does not go into a snapshot.
    let unsigned = dir.path().join("unsigned.gpkg.tar");
    let built = common::build_fixture(
        PROFILE,
        &["app-misc/hello", "app-misc/greeter"],
        false,
        binfarm::profile::BinpkgFormat::Gpkg,
    );
    std::fs::copy(built.pkgdir.join(HELLO), &unsigned).unwrap();
    let blob = farm.store(&unsigned);
    let err = publish::create_snapshot(
        &farm.publisher,
        &mut farm.db,
        &profile(),
        &[blob],
        &Default::default(),
        T,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unsigned"), "{err}");
}

/// Runs one step of a request to completion with this outcome.
fn finish_step(farm: &mut Farm, worker: i64, outcome: StepOutcome, now: i64) -> String {
    let lease = farm
        .db
        .lease_next(worker, now)
        .unwrap()
        .expect("a ready step");
    farm.db
        .complete_step(lease.step_id, lease.lease_id, worker, &outcome, now)
        .unwrap();
    lease.cpv
}

fn step(
    cpv: &str,
    fingerprint: &str,
    rank: i64,
    deps: Vec<usize>,
    initial: InitialState,
) -> NewStep {
    NewStep {
        cpv: cpv.into(),
        slot: "0".into(),
        repo: "farm-test".into(),
        use_flags: vec![],
        fingerprint: fingerprint.into(),
        sched_rank: rank,
        estimated_ms: 1000,
        deps,
        initial,
    }
}

fn built(name: &str, blob: &str) -> StepOutcome {
    StepOutcome::Succeeded {
        duration_ms: 1000,
        log_blob: None,
        results: vec![StepResultFile {
            name: name.into(),
            blob: blob.into(),
        }],
    }
}

#[test]
fn snapshots_of_requests() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    let p = profile();
    let lib_blob = farm.store(&pkgs[LIBHELLO]);
    let hello_blob = farm.store(&pkgs[HELLO]);
    let greeter_blob = farm.store(&pkgs[GREETER]);
    let hello2_blob = farm.store(&rebuilt(&pkgs[HELLO], dir.path(), 2));
    let w = farm.db.create_worker("w1", T).unwrap().worker_id;
    farm.db
        .set_worker_capabilities(
            w,
            &WorkerCapabilities {
                profiles: vec![PROFILE.into()],
                labels: vec![],
                details: serde_json::json!({}),
            },
            T,
        )
        .unwrap();
    let request = |farm: &mut Farm, kind| {
        farm.db
            .create_request(
                &NewRequest {
                    kind,
                    profile: PROFILE.into(),
                    target: "@world".into(),
                },
                T,
            )
            .unwrap()
    };

    // Nightly 1 builds libhello and hello.
    let r1 = request(&mut farm, RequestKind::Nightly);
    farm.db
        .add_planned_steps(
            r1,
            &[
                step(
                    "dev-libs/libhello-1.0",
                    "fp-lib",
                    0,
                    vec![],
                    InitialState::Build,
                ),
                step(
                    "app-misc/hello-1.0",
                    "fp-hello",
                    1,
                    vec![0],
                    InitialState::Build,
                ),
            ],
            T,
        )
        .unwrap();
    // Not finished yet: a snapshot would lack packages.
    let err = publish::snapshot_for_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r1,
        &Default::default(),
        T,
    )
    .unwrap_err();
    assert!(
        matches!(err, PublishError::IncompleteRequest { .. }),
        "{err}"
    );
    finish_step(&mut farm, w, built(LIBHELLO, &lib_blob), T);
    finish_step(&mut farm, w, built(HELLO, &hello_blob), T);
    let s1 = publish::snapshot_for_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r1,
        &Default::default(),
        T,
    )
    .unwrap();
    assert_eq!(
        snapshot_paths(&farm.db, s1),
        vec![HELLO.to_string(), LIBHELLO.to_string()]
    );
    assert_eq!(farm.db.snapshot(s1).unwrap().unwrap().request_id, Some(r1));

    // Nightly 2: libhello and hello cached (their known builds), greeter built.
    let r2 = request(&mut farm, RequestKind::Nightly);
    farm.db
        .add_planned_steps(
            r2,
            &[
                step(
                    "dev-libs/libhello-1.0",
                    "fp-lib",
                    0,
                    vec![],
                    InitialState::Cached,
                ),
                step(
                    "app-misc/hello-1.0",
                    "fp-hello",
                    1,
                    vec![0],
                    InitialState::Cached,
                ),
                step(
                    "app-misc/greeter-1.0",
                    "fp-greeter",
                    2,
                    vec![0],
                    InitialState::Build,
                ),
            ],
            T,
        )
        .unwrap();
    finish_step(&mut farm, w, built(GREETER, &greeter_blob), T);
    // When the request finishes, its snapshot goes to testing.
    let o = publish::publish_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r2,
        &Default::default(),
        T,
    )
    .unwrap();
    let publish::RequestPublication::Published(o) = o else {
        panic!("a new snapshot was expected: {o:?}")
    };
    let s2 = o.snapshot;
    assert_eq!((o.channel.as_str(), o.previous), (TESTING, None));
    assert_eq!(
        snapshot_paths(&farm.db, s2),
        vec![GREETER.to_string(), HELLO.to_string(), LIBHELLO.to_string()]
    );
    assert_eq!(
        verify_tree(&farm.tree(TESTING)).unwrap().1,
        snapshot_paths(&farm.db, s2)
    );

    // Nightly 2b: nothing changed (every step cached on the same builds): no snapshot is
    // made, testing stays, the index is not rewritten, and the request counts as settled.
    let index_before = std::fs::read(farm.tree(TESTING).join("Packages")).unwrap();
    let snapshots_before = farm.db.list_snapshots(Some(&p.name)).unwrap().len();
    let r2b = request(&mut farm, RequestKind::Nightly);
    farm.db
        .add_planned_steps(
            r2b,
            &[
                step(
                    "dev-libs/libhello-1.0",
                    "fp-lib",
                    0,
                    vec![],
                    InitialState::Cached,
                ),
                step(
                    "app-misc/hello-1.0",
                    "fp-hello",
                    1,
                    vec![0],
                    InitialState::Cached,
                ),
                step(
                    "app-misc/greeter-1.0",
                    "fp-greeter",
                    2,
                    vec![0],
                    InitialState::Cached,
                ),
            ],
            T + 5,
        )
        .unwrap();
    let o = publish::publish_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r2b,
        &Default::default(),
        T + 5,
    )
    .unwrap();
    assert!(
        matches!(&o, publish::RequestPublication::Unchanged { snapshot, .. } if *snapshot == s2),
        "{o:?}"
    );
    assert_eq!(
        farm.db.list_snapshots(Some(&p.name)).unwrap().len(),
        snapshots_before
    );
    assert_eq!(
        farm.db
            .channel(&p.name, TESTING)
            .unwrap()
            .unwrap()
            .snapshot_id,
        s2
    );
    assert_eq!(
        std::fs::read(farm.tree(TESTING).join("Packages")).unwrap(),
        index_before
    );
    let unpublished = farm.db.unpublished_requests(TESTING).unwrap();
    assert!(
        unpublished.iter().all(|u| u.request_id != r2b),
        "{unpublished:?}"
    );

    // Manual rebuild of hello: testing's snapshot with hello replaced.
    let r3 = request(&mut farm, RequestKind::Manual);
    farm.db
        .add_planned_steps(
            r3,
            &[step(
                "app-misc/hello-1.0",
                "fp-hello-2",
                0,
                vec![],
                InitialState::Build,
            )],
            T,
        )
        .unwrap();
    finish_step(
        &mut farm,
        w,
        built("app-misc/hello/hello-1.0-2.gpkg.tar", &hello2_blob),
        T,
    );
    let s3 = publish::snapshot_for_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r3,
        &Default::default(),
        T,
    )
    .unwrap();
    assert_eq!(
        snapshot_paths(&farm.db, s3),
        vec![
            GREETER.to_string(),
            "app-misc/hello/hello-1.0-2.gpkg.tar".to_string(),
            LIBHELLO.to_string()
        ]
    );
    let row = farm.db.snapshot(s3).unwrap().unwrap();
    assert_eq!((row.origin.as_str(), row.based_on), ("manual", Some(s2)));

    // Nightly 4: greeter fails. Refused, unless incomplete snapshots are allowed: then
    // testing's greeter is kept.
    let r4 = request(&mut farm, RequestKind::Nightly);
    farm.db
        .add_planned_steps(
            r4,
            &[
                step(
                    "dev-libs/libhello-1.0",
                    "fp-lib",
                    0,
                    vec![],
                    InitialState::Cached,
                ),
                step(
                    "app-misc/greeter-1.0",
                    "fp-greeter-4",
                    1,
                    vec![0],
                    InitialState::Build,
                ),
            ],
            T,
        )
        .unwrap();
    finish_step(
        &mut farm,
        w,
        StepOutcome::Failed {
            duration_ms: 10,
            log_blob: None,
            error: "compile error".into(),
            retryable: false,
        },
        T,
    );
    let err = publish::snapshot_for_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r4,
        &Default::default(),
        T,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("app-misc/greeter-1.0 (failed)"),
        "{err}"
    );
    let s4 = publish::snapshot_for_request(
        &farm.publisher,
        &mut farm.db,
        &p,
        r4,
        &publish::RequestSnapshotOptions {
            allow_incomplete: true,
            note: Some("greeter failed".into()),
        },
        T,
    )
    .unwrap();
    assert_eq!(
        snapshot_paths(&farm.db, s4),
        vec![GREETER.to_string(), LIBHELLO.to_string()]
    );
}

#[test]
fn resign_gives_new_build_ids_signed_by_the_new_key() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    let a = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO], &pkgs[GREETER]], T);
    publish_snapshot_to(&farm.publisher, &mut farm.db, a, TESTING, T).unwrap();
    promote(&farm.publisher, &mut farm.db, PROFILE, None, STABLE, T).unwrap();

    let keydir = common::short_tempdir();
    let new_key =
        common::create_gpg_key(keydir.path(), "Rotated Farm Key <rotated@example.invalid>");
    common::stop_gpg_agent(&new_key.home);
    let signing =
        binfarm::sign::SigningKey::from_armored_file(&new_key.secret_key_file, None).unwrap();
    let o = resign(
        &farm.publisher,
        &mut farm.db,
        &profile(),
        STABLE,
        &signing,
        T,
    )
    .unwrap();
    let c = o.snapshot;
    assert_eq!(o.channel, TESTING);
    assert_eq!(
        farm.db
            .channel(PROFILE, STABLE)
            .unwrap()
            .unwrap()
            .snapshot_id,
        a
    );
    let row = farm.db.snapshot(c).unwrap().unwrap();
    assert_eq!((row.origin.as_str(), row.based_on), ("resign", Some(a)));

    let new_ring = Keyring::load(&new_key.public_key_file).unwrap();
    let old_ring = Keyring::load(&common::signing_key().public_key_file).unwrap();
    for e in farm.db.snapshot_entries(c).unwrap() {
        assert_eq!(e.build_id, 2, "{}", e.path);
        assert!(e.path.ends_with("-1.0-2.gpkg.tar"), "{}", e.path);
        let path = farm.publisher.store.blobs().path_of(&e.blob).unwrap();
        let pkg =
            binpkg::verify(&path, &new_ring).unwrap_or_else(|err| panic!("{}: {err}", e.path));
        assert_eq!(pkg.metadata.get("BUILD_ID"), Some("2"));
        let pf = pkg.metadata.get("PF").unwrap().to_string();
        assert_eq!(pkg.top_dir, Some(format!("{pf}-2")));
        assert!(
            binpkg::verify(&path, &old_ring).is_err(),
            "old key must not verify"
        );
    }
    // The image is the same bytes: same size of image member.
    let d = diff_snapshots(&farm.db, a, c).unwrap();
    assert_eq!(d.changes.len(), 3);
    assert!(d.changes.iter().all(|ch| ch.kind == ChangeKind::Rebuilt));
    // Resigning again gives yet other names.
    promote(&farm.publisher, &mut farm.db, PROFILE, Some(c), STABLE, T).unwrap();
    let o = resign(
        &farm.publisher,
        &mut farm.db,
        &profile(),
        STABLE,
        &farm_key(),
        T,
    )
    .unwrap();
    assert!(farm
        .db
        .snapshot_entries(o.snapshot)
        .unwrap()
        .iter()
        .all(|e| e.build_id == 3));
    let (problems, _) = verify_tree(&farm.tree(TESTING)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn gc_keeps_what_retention_needs_and_removes_the_rest() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    farm.publisher.retention = Retention {
        keep_snapshots: 1,
        keep_days: 0,
        grace_hours: 1,
    };
    // Times before the real now: blob rows carry the real time.
    let t = binfarm::store::unix_now() - 100;
    let hello5 = rebuilt(&pkgs[HELLO], dir.path(), 5);
    let hello6 = rebuilt(&pkgs[HELLO], dir.path(), 6);
    let s1 = farm.snapshot(&[&pkgs[LIBHELLO], &hello5], t);
    let s2 = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO]], t + 1);
    let s3 = farm.snapshot(&[&pkgs[LIBHELLO], &hello6], t + 2);
    let s4 = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO], &pkgs[GREETER]], t + 3);
    for s in [s1, s2, s3, s4] {
        publish_snapshot_to(&farm.publisher, &mut farm.db, s, TESTING, t + 10).unwrap();
    }
    promote(
        &farm.publisher,
        &mut farm.db,
        PROFILE,
        Some(s2),
        STABLE,
        t + 10,
    )
    .unwrap();
    let testing = farm.tree(TESTING);
    std::fs::write(
        testing.join("app-misc/hello/.hello-1.0-9.gpkg.tar.tmp.1.1"),
        b"partial",
    )
    .unwrap();
    let blob_of = |farm: &Farm, s: i64| {
        farm.db
            .snapshot_entries(s)
            .unwrap()
            .into_iter()
            .find(|e| e.cpv == "app-misc/hello-1.0")
            .unwrap()
            .blob
    };
    let (b1, b3) = (blob_of(&farm, s1), blob_of(&farm, s3));
    let now = binfarm::store::unix_now() + 7200;

    let dry = run_gc(&farm.publisher, &mut farm.db, true, now, &[]).unwrap();
    assert_eq!(dry.removed_snapshots, vec![s1, s3]);
    assert_eq!(dry.kept_snapshots, vec![s2, s4]);
    let removed: Vec<&str> = dry.removed_blobs.iter().map(|(d, _)| d.as_str()).collect();
    assert!(
        removed.contains(&b1.as_str()) && removed.contains(&b3.as_str()),
        "{removed:?}"
    );
    assert!(dry
        .render()
        .contains(&format!("would remove snapshot {s1}")));
    assert!(
        farm.db.snapshot(s1).unwrap().is_some(),
        "dry run removes nothing"
    );
    assert!(farm.publisher.store.blobs().contains(&b1).unwrap());

    // Within the grace period (the files became unreferenced at publish time, t + 10):
    // snapshots go, young blobs and unreferenced mirror files stay, temp files go at once.
    let old5 = testing.join("app-misc/hello/hello-1.0-5.gpkg.tar");
    let early = run_gc(&farm.publisher, &mut farm.db, false, t + 1000, &[]).unwrap();
    assert_eq!(early.removed_snapshots, vec![s1, s3]);
    assert!(farm.db.snapshot(s1).unwrap().is_none() && farm.db.snapshot(s3).unwrap().is_none());
    assert!(
        early.removed_blobs.is_empty(),
        "blobs younger than the grace period stay"
    );
    assert_eq!(early.removed_temp_files.len(), 1);
    assert!(old5.is_file());
    assert!(
        early.waiting_mirror_files.contains(&old5),
        "{:?}",
        early.waiting_mirror_files
    );

    let gc = run_gc(&farm.publisher, &mut farm.db, false, now, &[]).unwrap();
    assert!(!farm.publisher.store.blobs().contains(&b1).unwrap());
    assert!(!farm.publisher.store.blobs().contains(&b3).unwrap());
    for s in [s2, s4] {
        let row = farm.db.snapshot(s).unwrap().unwrap();
        assert!(farm
            .publisher
            .store
            .blobs()
            .contains(&row.index_blob)
            .unwrap());
        for e in farm.db.snapshot_entries(s).unwrap() {
            assert!(
                farm.publisher.store.blobs().contains(&e.blob).unwrap(),
                "{}",
                e.path
            );
        }
    }
    assert!(gc.removed_mirror_files.contains(&old5), "{gc:?}");
    assert!(!old5.exists());
    assert!(!testing.join("app-misc/hello/hello-1.0-6.gpkg.tar").exists());
    // Files the stable tree still names stay, whatever testing dropped.
    assert!(farm.tree(STABLE).join(HELLO).is_file());
    for channel in [TESTING, STABLE] {
        let (problems, paths) = verify_tree(&farm.tree(channel)).unwrap();
        assert!(problems.is_empty(), "{channel}: {problems:?}");
        assert!(!paths.is_empty());
    }
    // A staging directory of a killed snapshot creation goes once it is old.
    let dead = farm.state_dir.join("publish-staging/snapshot-killed");
    std::fs::create_dir_all(dead.join("app-misc/hello")).unwrap();
    let later = run_gc(&farm.publisher, &mut farm.db, false, now, &[]).unwrap();
    assert!(dead.exists(), "{later:?}");
    let much_later = run_gc(&farm.publisher, &mut farm.db, false, now + 7 * 3600, &[]).unwrap();
    assert!(
        much_later.removed_temp_files.contains(&dead),
        "{much_later:?}"
    );
    assert!(!dead.exists());
    // What retention removed cannot be rolled back to.
    let err = rollback(&farm.publisher, &mut farm.db, PROFILE, TESTING, now).unwrap_err();
    assert!(err.to_string().contains("GC has removed"), "{err}");
}

/// Runs `binfarm ARGS... <farm flags>` and returns stdout.
fn cli(farm: &Farm, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(publish_support::binfarm_bin());
    cmd.args(args).args(farm.cli_args()).env("RUST_LOG", "warn");
    common::run_ok(&mut cmd, &format!("binfarm {args:?}"))
}

#[test]
fn cli_commands() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let farm = Farm::new(dir.path());
    let hello2 = rebuilt(&pkgs[HELLO], dir.path(), 2);
    let lib = pkgs[LIBHELLO].to_string_lossy().into_owned();
    let hello = pkgs[HELLO].to_string_lossy().into_owned();
    let out = cli(
        &farm,
        &["snapshots", "import", "--profile", PROFILE, &lib, &hello],
    );
    assert!(out.contains("snapshot 1: 2 packages"), "{out}");
    assert!(
        out.contains("x86-64-v3/testing now points at snapshot 1"),
        "{out}"
    );
    let out = cli(&farm, &["promote", "--profile", PROFILE, "--to", STABLE]);
    assert!(
        out.contains("stable now points at snapshot 1 (was nothing)"),
        "{out}"
    );
    let greeter = pkgs[GREETER].to_string_lossy().into_owned();
    let h2 = hello2.to_string_lossy().into_owned();
    cli(
        &farm,
        &[
            "snapshots",
            "import",
            "--profile",
            PROFILE,
            "--note",
            "second",
            &lib,
            &h2,
            &greeter,
        ],
    );
    let out = cli(&farm, &["promote", "--profile", PROFILE, "--snapshot", "2"]);
    assert!(
        out.contains("stable now points at snapshot 2 (was snapshot 1)"),
        "{out}"
    );

    let out = cli(&farm, &["snapshots", "list", "--profile", PROFILE]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[2].contains("import") && lines[2].contains("stable,testing  second"),
        "{out}"
    );
    let out = cli(&farm, &["snapshots", "diff", "1", "2"]);
    assert!(out.contains("added      app-misc/greeter:0"), "{out}");
    assert!(out.contains("rebuilt    app-misc/hello:0"), "{out}");
    assert!(
        out.contains("1.0 (build 1) -> hello-1.0 (build 2)"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli(&farm, &["snapshots", "diff", "1", "2", "--json"])).unwrap();
    assert_eq!(json["unchanged"], 1);

    let out = cli(
        &farm,
        &["rollback", "--profile", PROFILE, "--channel", STABLE],
    );
    assert!(
        out.contains("stable now points at snapshot 1 (was snapshot 2)"),
        "{out}"
    );
    let (problems, paths) = verify_tree(&farm.tree(STABLE)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(paths, vec![HELLO.to_string(), LIBHELLO.to_string()]);

    let out = cli(&farm, &["gc", "--dry-run"]);
    assert!(out.contains("dry run: 0 snapshots"), "{out}");
    assert!(
        out.contains("unreferenced, within the grace period"),
        "{out}"
    );

    // Errors are reported with what is wrong, and a failure exit status.
    let mut cmd = std::process::Command::new(publish_support::binfarm_bin());
    cmd.args(["rollback", "--profile", PROFILE, "--channel", "nosuch"])
        .args(farm.cli_args());
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no channel \"nosuch\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
