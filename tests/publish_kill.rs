//! A publish killed at any point leaves the tree consistent: the old index with all its
//! files or the new one with all of its files. A real `binfarm publish` process (slowed down
//! between files by its test hook) is killed with SIGKILL at times spread over its run,
//! while a reader checks the tree the way a client sees it, over and over.

mod common;
mod publish_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binfarm::publish::{publish_snapshot_to, run_gc, verify_tree, Retention, TESTING};
use binfarm::store::ChannelAction;
use publish_support::{
    binfarm_bin, rebuilt, signed_packages, Farm, GREETER, HELLO, LIBHELLO, PROFILE,
};

const STEP_DELAY_MS: u64 = 40;

#[test]
fn killed_publishes_leave_old_or_new_index_with_all_files() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    let t = binfarm::store::unix_now();
    let first = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO], &pkgs[GREETER]], t);
    publish_snapshot_to(&farm.publisher, &mut farm.db, first, TESTING, t).unwrap();
    let tree = farm.tree(TESTING);

    // Every snapshot published so far, as the set of paths its index names.
    let known: Arc<Mutex<Vec<BTreeSet<String>>>> =
        Arc::new(Mutex::new(vec![farm_paths(&farm, first)]));
    let stop = Arc::new(AtomicBool::new(false));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (tree, known, stop, violations, reads) = (
            tree.clone(),
            known.clone(),
            stop.clone(),
            violations.clone(),
            reads.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match verify_tree(&tree) {
                    Ok((problems, paths)) => {
                        violations.lock().unwrap().extend(problems);
                        let visible: BTreeSet<String> = paths.into_iter().collect();
                        if !known.lock().unwrap().contains(&visible) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("index names a set of no snapshot: {visible:?}"));
                        }
                    }
                    Err(e) => violations
                        .lock()
                        .unwrap()
                        .push(format!("reading the tree: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut previous = farm_paths(&farm, first);
    let (mut kept_old, mut got_new, mut partial) = (0, 0, 0);
    for i in 0..16u64 {
        // A snapshot whose every file is new to the tree.
        let files: Vec<_> = [LIBHELLO, HELLO, GREETER]
            .iter()
            .map(|rel| rebuilt(&pkgs[rel], dir.path(), 10 + i))
            .collect();
        let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
        let next = farm.snapshot(&refs, t);
        let next_paths = farm_paths(&farm, next);
        known.lock().unwrap().push(next_paths.clone());
        farm.db
            .point_channel(PROFILE, TESTING, next, ChannelAction::Publish, t)
            .unwrap();

        let mut cmd = Command::new(binfarm_bin());
        cmd.arg("publish")
            .args(farm.cli_args())
            .args(["--profile", PROFILE, "--channel", TESTING])
            .env("BINFARM_PUBLISH_STEP_DELAY_MS", STEP_DELAY_MS.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if i % 2 == 1 {
            cmd.arg("--copy");
        }
        let mut child = cmd.spawn().expect("starting binfarm publish");
        // When to kill: at a time spread over the run, as soon as the first new file is
        // there, once all are there (plus a little), or once the new index is visible.
        let placed =
            |tree: &std::path::Path| next_paths.iter().filter(|p| tree.join(p).is_file()).count();
        let wait_until = |done: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !done() && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        match i % 4 {
            0 => std::thread::sleep(Duration::from_millis(5 + i * 20)),
            1 => wait_until(&|| placed(&tree) >= 1),
            2 => {
                wait_until(&|| placed(&tree) == next_paths.len());
                std::thread::sleep(Duration::from_millis(i * 7 % 60));
            }
            _ => wait_until(&|| {
                verify_tree(&tree)
                    .map(|(_, v)| v.into_iter().collect::<BTreeSet<_>>() == next_paths)
                    .unwrap_or(false)
            }),
        }
        child.kill().expect("SIGKILL to the publishing process");
        let status = child.wait().unwrap();

        let (problems, visible) = verify_tree(&tree).unwrap();
        assert!(problems.is_empty(), "iteration {i}: {problems:?}");
        let visible: BTreeSet<String> = visible.into_iter().collect();
        if visible == previous {
            kept_old += 1;
            let placed = next_paths.iter().filter(|p| tree.join(p).is_file()).count();
            if placed > 0 && placed < next_paths.len() {
                partial += 1;
            }
        } else if visible == next_paths {
            got_new += 1;
        } else {
            panic!("iteration {i} ({status}): the tree shows neither the old nor the new index: {visible:?}");
        }
        // Publishing again (no kill) finishes the job.
        let mut again = Command::new(binfarm_bin());
        again.arg("publish").args(farm.cli_args()).args([
            "--profile",
            PROFILE,
            "--channel",
            TESTING,
        ]);
        common::run_ok(&mut again, "binfarm publish");
        let (problems, visible) = verify_tree(&tree).unwrap();
        assert!(
            problems.is_empty(),
            "iteration {i}, after republishing: {problems:?}"
        );
        assert_eq!(visible.into_iter().collect::<BTreeSet<_>>(), next_paths);
        previous = next_paths;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let violations = violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "a client saw an inconsistent tree: {violations:?}"
    );
    assert!(reads.load(Ordering::Relaxed) > 50, "the reader hardly ran");
    eprintln!(
        "killed publishes: {kept_old} left the old index ({partial} with part of the new files \
         in place), {got_new} the new one; {} client reads",
        reads.load(Ordering::Relaxed)
    );
    assert!(
        kept_old > 0 && got_new > 0,
        "kills landed only on one side of the index switch"
    );
    assert!(partial > 0, "no kill landed between the package files");

    // Temporary files of killed copies are GC's: removed, the tree still consistent.
    farm.publisher.retention = Retention {
        keep_snapshots: 100,
        keep_days: 100,
        grace_hours: 0,
    };
    let report = run_gc(
        &farm.publisher,
        &mut farm.db,
        false,
        binfarm::store::unix_now(),
        &[],
    )
    .unwrap();
    let leftovers: Vec<_> = walkdir::WalkDir::new(&tree)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n.starts_with('.') && n.contains(".tmp.")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?} (gc: {report:?})");
    let (problems, _) = verify_tree(&tree).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

fn farm_paths(farm: &Farm, id: i64) -> BTreeSet<String> {
    publish_support::snapshot_paths(&farm.db, id)
        .into_iter()
        .collect()
}
