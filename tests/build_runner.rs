//! The emerge runner with real emerge: failures name the package and phase and keep the log;
//! timeouts, silence and a cancel kill the whole process group and return nothing half-built; the log
//! is size-capped.
mod common;

use std::path::Path;
use std::time::Duration;

use binfarm::worker::{run_build, BuildRequest, BuildStatus, Limits};

fn process_alive(pid: i32) -> bool {
    // A killed child may stay a zombie until its new parent reaps it: that is dead too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.chars().next().unwrap_or('?'));
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

#[test]
fn failing_package_names_package_and_phase_and_keeps_log() {
    let tmp = common::tempdir();
    let root = fresh_root(&tmp, "x86-64-v3");
    let mut req = BuildRequest::new(["app-misc/broken"]);
    // Small cap: the failure must still be found (the parser sees all output).
    req.limits.log_cap_bytes = 3000;
    let r = run_build(&root, &req).expect("runner");
    assert_eq!(r.status, BuildStatus::Failed, "{:?}", r.log_tail);
    assert_ne!(r.exit_code, Some(0));
    let f = r.failure.as_ref().expect("failure parsed");
    assert_eq!(f.cpv, "app-misc/broken-1.0");
    assert_eq!(f.phase, "compile");
    assert_eq!(f.repo.as_deref(), Some("farm-test"));
    assert!(r.built.is_empty());
    assert!(r.log_truncated, "log of {} bytes not capped", r.log_bytes);
    let log = std::fs::read_to_string(&r.log_path).expect("log kept");
    assert!(log.len() < 3300, "log is {} bytes", log.len());
    assert!(log.contains("log size cap reached"));
    assert!(
        r.log_tail
            .iter()
            .any(|l| l.contains("failed (compile phase)")),
        "{:?}",
        r.log_tail
    );
    // Portage's own build log is kept as well.
    let portage_log = root
        .paths
        .tmpdir
        .join("portage/app-misc/broken-1.0/temp/build.log");
    let text = std::fs::read_to_string(&portage_log).expect("Portage's build.log kept");
    assert!(
        text.contains("this_symbol_does_not_exist"),
        "compiler error in build.log"
    );
}

#[test]
fn failing_package_after_a_good_one_returns_the_good_binpkg() {
    let tmp = common::tempdir();
    let root = fresh_root(&tmp, "x86-64-v2");
    // --keep-going is not used: emerge stops at broken; libcolor (built first) is complete.
    let mut req = BuildRequest::new(["dev-libs/libcolor", "app-misc/broken"]);
    req.extra_args.push("--oneshot".into());
    let r = run_build(&root, &req).expect("runner");
    assert_eq!(r.status, BuildStatus::Failed);
    let order: Vec<&str> = r.merged.iter().map(|m| m.cpv.as_str()).collect();
    assert_eq!(order, vec!["dev-libs/libcolor-1.0", "app-misc/broken-1.0"]);
    assert_eq!(r.built.len(), 1, "{:?}", r.built);
    assert_eq!(r.built[0].cpv, "dev-libs/libcolor-1.0");
    assert!(r.built[0].path.is_file());
    assert_eq!(
        r.failure.as_ref().map(|f| f.cpv.as_str()),
        Some("app-misc/broken-1.0")
    );
}

/// A new build root of `profile` in `tmp` (the fixture repository, default options).
fn fresh_root(tmp: &tempfile::TempDir, profile: &str) -> binfarm::worker::BuildRoot {
    common::fixture_build_root(
        profile,
        &tmp.path().join("root"),
        &common::RootOptions::default(),
    )
}

fn sleeper_request(pidfile: &Path, chatty: bool, limits: Limits) -> BuildRequest {
    let mut req = BuildRequest::new(["app-misc/sleeper"]);
    req.extra_env
        .push(("SLEEPER_PIDFILE".into(), pidfile.display().to_string()));
    if chatty {
        req.extra_env.push(("SLEEPER_CHATTY".into(), "1".into()));
    }
    req.limits = limits;
    req
}

fn check_killed(
    root: &binfarm::worker::BuildRoot,
    r: &binfarm::worker::BuildResult,
    pidfile: &Path,
) {
    assert!(
        r.built.is_empty(),
        "nothing half-built is returned: {:?}",
        r.built
    );
    assert!(r.signal.is_some() || r.exit_code != Some(0), "{r:?}");
    let pids = std::fs::read_to_string(pidfile).expect("the sleeper ran and wrote its pids");
    let pids: Vec<i32> = pids
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    // Give init a moment to reap, then every process of the build must be gone.
    std::thread::sleep(Duration::from_millis(300));
    for pid in pids {
        assert!(
            !process_alive(pid),
            "process {pid} of the killed build is still running"
        );
    }
    let leftover: Vec<_> = walkdir::WalkDir::new(root.pkgdir())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().to_string_lossy().contains("sleeper"))
        .collect();
    assert!(
        leftover.is_empty(),
        "binpkg written for a killed build: {leftover:?}"
    );
    assert!(!root.paths.root.join("usr/bin/sleeper").exists());
    let log = std::fs::read_to_string(&r.log_path).expect("log kept");
    assert!(log.contains("sleeper: sleeping"), "log: {log}");
    assert!(log.contains("binfarm: killed"), "log: {log}");
}

#[test]
fn total_timeout_kills_the_whole_process_group() {
    let tmp = common::tempdir();
    let root = fresh_root(&tmp, "x86-64-v3");
    let pidfile = tmp.path().join("sleeper.pids");
    let limits = Limits {
        total_timeout: Some(Duration::from_secs(8)),
        // Chatty output every 0.5 s keeps the silence timer from firing.
        max_silent: Some(Duration::from_secs(3)),
        kill_grace: Duration::from_secs(2),
        ..Limits::default()
    };
    let r = run_build(&root, &sleeper_request(&pidfile, true, limits)).expect("runner");
    assert_eq!(r.status, BuildStatus::TimedOut, "{:?}", r.log_tail);
    assert!(
        r.duration >= Duration::from_secs(8) && r.duration < Duration::from_secs(14),
        "{:?}",
        r.duration
    );
    check_killed(&root, &r, &pidfile);
    let log = std::fs::read_to_string(&r.log_path).unwrap_or_default();
    assert!(log.contains("sleeper: still working"));
}

#[test]
fn the_cancel_flag_kills_the_whole_process_group() {
    let tmp = common::tempdir();
    let root = fresh_root(&tmp, "x86-64-v3");
    let pidfile = tmp.path().join("sleeper.pids");
    let limits = Limits {
        total_timeout: Some(Duration::from_secs(120)),
        max_silent: Some(Duration::from_secs(120)),
        kill_grace: Duration::from_secs(2),
        ..Limits::default()
    };
    let mut request = sleeper_request(&pidfile, false, limits);
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    request.cancel = Some(std::sync::Arc::clone(&cancel));
    // Cancelled from another thread once the sleeper is running, as the worker's heartbeat does.
    let canceller = {
        let pidfile = pidfile.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !pidfile.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            std::time::Instant::now()
        })
    };
    let r = run_build(&root, &request).expect("runner");
    let cancelled_at = canceller.join().expect("canceller thread");
    assert_eq!(r.status, BuildStatus::Cancelled, "{:?}", r.log_tail);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "the build ended {:?} after the cancel",
        cancelled_at.elapsed()
    );
    check_killed(&root, &r, &pidfile);
    let log = std::fs::read_to_string(&r.log_path).unwrap_or_default();
    assert!(log.contains("cancelled"), "log: {log}");
}

#[test]
fn max_silent_time_kills_a_quiet_build() {
    let tmp = common::tempdir();
    let root = fresh_root(&tmp, "x86-64-v2");
    let pidfile = tmp.path().join("sleeper.pids");
    let limits = Limits {
        total_timeout: Some(Duration::from_secs(120)),
        max_silent: Some(Duration::from_secs(3)),
        kill_grace: Duration::from_secs(2),
        ..Limits::default()
    };
    let r = run_build(&root, &sleeper_request(&pidfile, false, limits)).expect("runner");
    assert_eq!(r.status, BuildStatus::Silent, "{:?}", r.log_tail);
    assert!(r.duration < Duration::from_secs(30), "{:?}", r.duration);
    check_killed(&root, &r, &pidfile);
}

#[test]
fn build_cli_reports_built_packages_and_failures() {
    let fx = common::fixture();
    let tmp = common::tempdir();
    let run = |atom: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_binfarm"))
            .current_dir(common::crate_root())
            .args(["build", "--profile", "x86-64-v2", "--json", "--root-dir"])
            .arg(tmp.path().join("root"))
            .arg("--repo")
            .arg(format!("farm-test={}", fx.repo.display()))
            .arg("--distdir")
            .arg(&fx.distdir)
            .arg("--venv")
            .arg(common::venv())
            .arg(atom)
            .output()
            .expect("running binfarm build")
    };
    let ok = run("dev-lang/minilang:8.2");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).expect("JSON result");
    assert_eq!(v["status"], "success");
    assert_eq!(v["built"][0]["cpv"], "dev-lang/minilang-8.2.5");
    assert_eq!(v["built"][0]["sha512"].as_str().map(str::len), Some(128));
    let bad = run("app-misc/broken");
    assert!(!bad.status.success());
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).expect("JSON result");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["failure"]["cpv"], "app-misc/broken-1.0");
    assert_eq!(v["failure"]["phase"], "compile");
}
