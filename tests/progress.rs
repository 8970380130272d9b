//! Progress reporting: the library tells a sink about each package it reads; the command
//! line draws bars only when stderr is a terminal (run under `script`, which gives the
//! command a pseudo-terminal) and leaves piped output exactly as it was.

mod common;
mod common_ftp;
mod hand_farm;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binfarm::index::{update_pkgdir, IndexOptions};
use binfarm::progress::{Event, Progress, RecordingSink, Unit};
use hand_farm::{HandFarm, BIN};

/// A writable PKGDIR with `copies` builds of hello (distinct BUILD_IDs, same bytes).
fn pkgdir_with_copies(dir: &Path, copies: usize) -> std::path::PathBuf {
    let built = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], false);
    let gpkg = hand_farm::find_gpkg(&built, "hello-1.0");
    let pkgdir = dir.join("pkgdir");
    let pkg_dir = pkgdir.join("app-misc/hello");
    std::fs::create_dir_all(&pkg_dir).unwrap();
    for n in 1..=copies {
        std::fs::copy(&gpkg, pkg_dir.join(format!("hello-1.0-{n}.gpkg.tar"))).unwrap();
    }
    pkgdir
}

/// Runs `command` (a shell command line) on a pseudo-terminal; returns what it wrote there.
fn on_terminal(command: &str) -> String {
    let out = Command::new("script")
        .args(["-qfec", command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running script (util-linux)");
    assert!(
        out.status.success(),
        "{command}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn indexing_reports_each_package_read() {
    let tmp = common::tempdir();
    let pkgdir = pkgdir_with_copies(tmp.path(), 5);
    let sink = RecordingSink::default();
    let options = IndexOptions {
        progress: Progress::new(std::sync::Arc::new(sink.clone())),
        ..IndexOptions::default()
    };
    let report = update_pkgdir(&pkgdir, &options).unwrap();
    assert_eq!(report.added.len(), 5);
    let events = sink.events();
    assert_eq!(
        events.first(),
        Some(&Event::Start {
            label: "reading packages".into(),
            unit: Unit::Items,
            total: Some(5)
        })
    );
    assert_eq!(sink.advanced("reading packages"), 5);
    assert_eq!(
        events.last(),
        Some(&Event::Finish {
            label: "reading packages".into()
        })
    );
    // Every package read is named once.
    let mut named: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect();
    named.sort();
    let mut added = report.added.clone();
    added.sort();
    assert_eq!(named, added);

    // Nothing to read on a warm run: no task at all.
    let warm = RecordingSink::default();
    let options = IndexOptions {
        progress: Progress::new(std::sync::Arc::new(warm.clone())),
        ..IndexOptions::default()
    };
    let report = update_pkgdir(&pkgdir, &options).unwrap();
    assert_eq!(report.reused, 5);
    assert!(warm.events().is_empty(), "{:?}", warm.events());
}

#[test]
fn index_draws_a_bar_on_a_terminal_only() {
    let tmp = common::tempdir();
    let pkgdir = pkgdir_with_copies(tmp.path(), 30);

    // Piped: the summary on stdout, nothing on stderr but log lines (no control characters).
    let out = Command::new(BIN)
        .args(["index", "--reindex"])
        .arg(&pkgdir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(": 30 packages (0 reused, 30 read"),
        "{stdout}"
    );
    assert!(
        !out.stderr.iter().any(|&b| b == 0x1b || b == b'\r'),
        "control characters on a piped stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    // On a terminal: the bar is drawn (and cleared), then the same summary.
    let transcript = on_terminal(&format!("{BIN} index --reindex {}", pkgdir.display()));
    assert!(transcript.contains("reading packages ["), "{transcript:?}");
    assert!(transcript.contains("/30"), "{transcript:?}");
    assert!(transcript.contains("\x1b[2K"), "{transcript:?}");
    assert!(
        transcript.contains(": 30 packages (0 reused, 30 read"),
        "{transcript:?}"
    );
}

#[test]
fn logs_follow_prints_the_log_and_spins_on_a_terminal() {
    let tmp = common::tempdir();
    let farm = HandFarm::start(tmp.path());
    farm.register();
    let request = farm.planned_rebuild("app-misc/hello", "app-misc/hello-1.0");
    let step = farm.lease_build(request);
    farm.append_log(&step, b">>> Emerging (1 of 1) app-misc/hello-1.0\n");

    let follow_args = format!(
        "logs {} --follow --coordinator {} --config {}",
        step.step,
        farm.base,
        farm.config.display()
    );
    let piped = Command::new(BIN)
        .args(follow_args.split(' '))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let transcript = tmp.path().join("terminal.txt");
    let on_tty = Command::new("script")
        .args([
            "-qfec",
            &format!("{BIN} {follow_args}"),
            transcript.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut on_tty = hand_farm::Proc(on_tty);

    // More log, a partial line last; the spinner shows the state while the step builds.
    farm.append_log(&step, b"compiling\nlast line without a newline");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = std::fs::read_to_string(&transcript).unwrap_or_default();
        if seen.contains("building,") && seen.contains("received") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no spinner on the terminal: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    farm.complete(&step, 10, None);

    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        ">>> Emerging (1 of 1) app-misc/hello-1.0\ncompiling\nlast line without a newline"
    );
    assert!(
        !out.stderr.iter().any(|&b| b == 0x1b || b == b'\r'),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = on_tty.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "logs --follow did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let seen = std::fs::read_to_string(&transcript).unwrap();
    assert!(seen.contains(&format!("step {}", step.step)), "{seen:?}");
    assert!(seen.contains("compiling\r\n"), "{seen:?}");
    assert!(seen.contains("last line without a newline"), "{seen:?}");
}

#[test]
fn publish_draws_a_bar_on_a_terminal_only() {
    let signed = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], true);
    let gpkg = hand_farm::find_gpkg(&signed, "hello-1.0");
    let tmp = common::tempdir();
    let farm_flags = format!(
        "--state-dir {} --mirror-root {} --profiles-dir {}",
        tmp.path().join("state").display(),
        tmp.path().join("mirror").display(),
        common::crate_root().join("profiles").display()
    );
    let run = |args: &str| {
        let out = Command::new(BIN)
            .args(args.split(' '))
            .args(farm_flags.split(' '))
            .output()
            .unwrap();
        assert!(out.status.success(), "binfarm {args}: {out:?}");
        out
    };
    run(&format!(
        "snapshots import --profile x86-64-v3 {}",
        gpkg.display()
    ));

    let publish = "publish --profile x86-64-v3 --channel testing";
    let out = run(publish);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("published snapshot 1"),
        "{out:?}"
    );
    assert!(
        !out.stderr.iter().any(|&b| b == 0x1b || b == b'\r'),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    let transcript = on_terminal(&format!("{BIN} {publish} {farm_flags}"));
    assert!(transcript.contains("x86-64-v3/testing ["), "{transcript:?}");
    assert!(transcript.contains("1/1"), "{transcript:?}");
    assert!(
        transcript.contains("published snapshot 1"),
        "{transcript:?}"
    );
}

#[test]
fn ftp_publishing_reports_the_blob_bytes_it_uploads() {
    let server = common_ftp::Vsftpd::start();
    let tmp = common::tempdir();
    let tree = tmp.path().join("tree");
    let sizes = [10_000usize, 300_000, 1];
    for (n, size) in sizes.iter().enumerate() {
        let dir = tree.join(format!("cat/pkg{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("pkg{n}-1-1.gpkg.tar")), vec![b'x'; *size]).unwrap();
    }
    std::fs::write(tree.join("Packages"), b"TIMESTAMP: 1\n\n").unwrap();
    let target = binfarm::publish::ftp::FtpTarget::from_url(&server.url()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let publish = |sink: &RecordingSink| {
        let progress = Progress::new(std::sync::Arc::new(sink.clone()));
        runtime
            .block_on(target.publish_tree_with_progress(&tree, "p/testing", &progress))
            .unwrap()
    };

    let sink = RecordingSink::default();
    let report = publish(&sink);
    assert_eq!(report.uploaded, 4, "{report:?}");
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let label = match sink.events().first() {
        Some(Event::Start {
            label,
            unit: Unit::Bytes,
            total: Some(t),
        }) if *t == total => label.clone(),
        other => panic!("no bytes task of {total}: {other:?}"),
    };
    assert!(label.starts_with("ftp 127.0.0.1"), "{label}");
    assert_eq!(sink.advanced(&label), total);

    // Everything is there: the second run has nothing to upload.
    let again = RecordingSink::default();
    let report = publish(&again);
    assert_eq!(report.uploaded, 0, "{report:?}");
    assert_eq!(again.advanced(&label), 0);
}
