//! The FTP mirror target against a real vsftpd on 127.0.0.1: publish, download back (with
//! suppaftp and curl), no-op republish, resume after interruptions, index-last on failure,
//! GC deletes, error reports.

mod common_ftp;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use binfarm::publish::ftp::{FtpTarget, FtpTargetError};
use common_ftp::{Vsftpd, VsftpdOptions};
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tokio::io::AsyncReadExt;

const REMOTE_DIR: &str = "amd64-v3/stable";
const BIG: &str = "app-misc/hello/hello-1.0-1.gpkg.tar";

/// Deterministic bytes with every value, including `\n` and `\r\n` (ASCII mode would change
/// them).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(&state.to_be_bytes());
    }
    out.truncate(len);
    let marker = b"a\nb\r\nc\r\r";
    let n = marker.len().min(len);
    out[..n].copy_from_slice(&marker[..n]);
    out
}

/// A mirror tree: the given blobs plus a `Packages` naming them (`PATH:`/`SIZE:` lines, like
/// Portage's index) and its gzip.
fn write_tree(root: &Path, blobs: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut packages = String::from("ARCH: amd64\nVERSION: 0\n\n");
    for (rel, bytes) in blobs {
        packages.push_str(&format!("PATH: {rel}\nSIZE: {}\n\n", bytes.len()));
        files.insert(rel.to_string(), bytes.clone());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(packages.as_bytes()).unwrap();
    files.insert("Packages.gz".into(), gz.finish().unwrap());
    files.insert("Packages".into(), packages.into_bytes());
    for (rel, bytes) in &files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    files
}

fn tree_v1() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (BIG, pseudo_random(5 * 1024 * 1024 + 123, 1)),
        ("dev-libs/foo/foo-2-1.gpkg.tar", pseudo_random(70_000, 2)),
        (
            "dev-libs/foo/foo-2-1.gpkg.tar.asc",
            b"-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n".to_vec(),
        ),
        ("sys-apps/bar/bar-3-1.gpkg.tar", pseudo_random(1, 3)),
        ("sys-apps/baz/baz-4-1.gpkg.tar", pseudo_random(300_000, 4)),
    ]
}

fn target(server: &Vsftpd) -> FtpTarget {
    let mut target = FtpTarget::from_url(&server.url()).unwrap();
    target.sessions = 4;
    target.retries = 2;
    target.backoff_initial = Duration::from_millis(50);
    target.io_timeout = Duration::from_secs(20);
    target
}

/// Downloads `rel` (below the published tree) with suppaftp, anonymously, in binary type.
async fn suppaftp_get(server: &Vsftpd, rel: &str) -> Vec<u8> {
    let mut ftp = AsyncFtpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    ftp.login("anonymous", "test@").await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    let path = format!("pub/{REMOTE_DIR}/{rel}");
    let mut stream = ftp.retr_as_stream(&path).await.unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    stream.finish().await.unwrap();
    ftp.quit().await.unwrap();
    bytes
}

/// Downloads `rel` with curl, as a Portage node's FETCHCOMMAND would (anonymous ftp://).
fn curl_get(server: &Vsftpd, rel: &str, out: &Path) -> Vec<u8> {
    let url = format!("{}/{REMOTE_DIR}/{rel}", server.url());
    let status = Command::new("curl")
        .args(["-sS", "--fail", "-o"])
        .arg(out)
        .arg(&url)
        .status()
        .expect("run curl");
    assert!(status.success(), "curl {url}: {status}");
    std::fs::read(out).unwrap()
}

/// Everything below the published tree on the server's disk, by relative path.
fn server_files(server: &Vsftpd) -> BTreeMap<String, Vec<u8>> {
    let root = server.pub_dir().join(REMOTE_DIR);
    let mut files = BTreeMap::new();
    if !root.exists() {
        return files;
    }
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(&root).unwrap();
            files.insert(
                rel.to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            );
        }
    }
    files
}

fn hidden_files(files: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    files
        .keys()
        .filter(|rel| rel.rsplit('/').next().is_some_and(|n| n.starts_with('.')))
        .cloned()
        .collect()
}

/// What a client sees must be whole: every file the server's `Packages` names is there
/// with its size.
fn assert_consistent(server: &Vsftpd) {
    let files = server_files(server);
    let Some(packages) = files.get("Packages") else {
        return;
    };
    let text = String::from_utf8_lossy(packages);
    let mut path = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("PATH: ") {
            path = Some(p.to_owned());
        }
        if let Some(size) = line.strip_prefix("SIZE: ") {
            let p = path.take().expect("SIZE after PATH");
            let on_server = files.get(&p).map(Vec::len);
            assert_eq!(
                on_server,
                Some(size.parse::<usize>().unwrap()),
                "Packages names {p} but the server has {on_server:?} bytes"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_downloads_back_identical_and_republish_uploads_nothing() {
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let files = write_tree(&tree, &tree_v1());
    let total_bytes: u64 = files.values().map(|b| b.len() as u64).sum();
    let target = target(&server);

    let report = target.publish_tree(&tree, REMOTE_DIR).await.unwrap();
    assert_eq!(report.local_files, files.len());
    assert_eq!(report.uploaded, files.len());
    assert_eq!(report.uploaded_bytes, total_bytes);
    assert_eq!(report.already_present, 0);
    assert_eq!(report.index_updated, ["Packages.gz", "Packages"]);
    // amd64-v3, amd64-v3/stable, app-misc, app-misc/hello, dev-libs, dev-libs/foo, sys-apps,
    // sys-apps/bar, sys-apps/baz
    assert_eq!(report.directories_created, 9);
    assert!(
        report.remote_dir.ends_with("/pub/amd64-v3/stable"),
        "{report:?}"
    );
    assert!(report.sessions_opened >= 2, "{report:?}");

    // Byte for byte, three ways: the server's disk, suppaftp, curl.
    assert_eq!(server_files(&server), files);
    for (rel, bytes) in &files {
        assert_eq!(&suppaftp_get(&server, rel).await, bytes, "suppaftp {rel}");
        let out = work.path().join("curl.out");
        assert_eq!(&curl_get(&server, rel, &out), bytes, "curl {rel}");
    }
    let listed = target.list_files(REMOTE_DIR).await.unwrap();
    let expected: BTreeMap<String, u64> = files
        .iter()
        .map(|(rel, bytes)| (rel.clone(), bytes.len() as u64))
        .collect();
    assert_eq!(listed, expected);

    // Several sessions uploaded at the same time: distinct vsftpd session processes.
    let log = server.protocol_log();
    let upload_pids: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("OK UPLOAD"))
        .filter_map(|l| l.split("[pid ").nth(1)?.split(']').next())
        .collect();
    assert!(upload_pids.len() >= 2, "uploads by pids {upload_pids:?}");
    assert!(log.matches("CONNECT: Client").count() >= 2);
    // Binary type before any transfer; every blob went to a temporary name first.
    assert!(log.contains("\"TYPE I\""), "no TYPE I in the log");
    assert!(!log.contains("\"TYPE A\""));
    assert!(log.contains(".hello-1.0-1.gpkg.tar.partial."));
    assert!(server.xferlog().contains("hello-1.0-1.gpkg.tar.partial."));

    let again = target.publish_tree(&tree, REMOTE_DIR).await.unwrap();
    assert_eq!(again.uploaded, 0, "{again:?}");
    assert_eq!(again.uploaded_bytes, 0);
    assert_eq!(again.already_present, files.len());
    assert!(again.index_updated.is_empty());
    assert_eq!(again.directories_created, 0);
    assert_eq!(server_files(&server), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_an_interrupted_run_are_replaced_and_cleaned_up() {
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let files = write_tree(&tree, &tree_v1());

    // The server as a crashed non-atomic uploader left it: a truncated final-name file,
    // temporary files of ours in two directories, a half-written temp index.
    let remote = server.pub_dir().join(REMOTE_DIR);
    std::fs::create_dir_all(remote.join("app-misc/hello")).unwrap();
    std::fs::write(remote.join(BIG), &files[BIG][..1024 * 1024]).unwrap();
    std::fs::write(
        remote.join("app-misc/hello/.hello-1.0-1.gpkg.tar.partial.0123456789abcdef"),
        &files[BIG][..4096],
    )
    .unwrap();
    std::fs::write(
        remote.join(".Packages.partial.fedcba9876543210"),
        b"ARCH: amd64\n",
    )
    .unwrap();
    // Not ours: left alone.
    std::fs::write(remote.join(".listing"), b"x").unwrap();

    let report = target(&server)
        .publish_tree(&tree, REMOTE_DIR)
        .await
        .unwrap();
    assert_eq!(report.replaced_wrong_size, 1, "{report:?}");
    assert_eq!(report.stale_temp_removed, 2, "{report:?}");
    assert_eq!(report.uploaded, files.len());

    let mut on_server = server_files(&server);
    assert_eq!(on_server.remove(".listing").as_deref(), Some(&b"x"[..]));
    assert_eq!(on_server, files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_publish_leaves_a_consistent_tree_and_the_next_run_finishes_it() {
    // 2 MiB/s per session: the 5 MiB blob takes about 2.5 s, so the drops land mid-transfer.
    let server = Vsftpd::start_with(VsftpdOptions {
        max_rate: Some(2 * 1024 * 1024),
        ..VsftpdOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let v1: Vec<_> = tree_v1().into_iter().skip(1).collect();
    let v1_tree = work.path().join("v1");
    let v1_files = write_tree(&v1_tree, &v1);
    let target = target(&server);
    target.publish_tree(&v1_tree, REMOTE_DIR).await.unwrap();

    let mut v2 = tree_v1();
    v2.push(("sys-apps/new/new-1-1.gpkg.tar", pseudo_random(10_000, 9)));
    let v2_tree = work.path().join("v2");
    let v2_files = write_tree(&v2_tree, &v2);

    for cut in [Duration::from_millis(30), Duration::from_millis(600)] {
        let dropped = tokio::time::timeout(cut, target.publish_tree(&v2_tree, REMOTE_DIR)).await;
        assert!(dropped.is_err(), "publish finished within {cut:?}");
        // vsftpd finishes writing what it received after the connection drops.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_consistent(&server);
        let on_server = server_files(&server);
        assert_eq!(
            on_server["Packages"], v1_files["Packages"],
            "index replaced early"
        );
        assert_eq!(on_server["Packages.gz"], v1_files["Packages.gz"]);
    }
    let interrupted = server_files(&server);
    assert!(
        !hidden_files(&interrupted).is_empty(),
        "expected a partial upload on the server: {:?}",
        interrupted.keys().collect::<Vec<_>>()
    );
    let complete_blobs = v2_files
        .iter()
        .filter(|(rel, bytes)| !rel.starts_with("Packages") && interrupted.get(*rel) == Some(bytes))
        .count();

    let resumed = target.publish_tree(&v2_tree, REMOTE_DIR).await.unwrap();
    assert_eq!(resumed.already_present, complete_blobs, "{resumed:?}");
    assert_eq!(resumed.uploaded, v2_files.len() - complete_blobs);
    assert!(resumed.stale_temp_removed >= 1, "{resumed:?}");
    assert_eq!(resumed.index_updated, ["Packages.gz", "Packages"]);
    assert_eq!(server_files(&server), v2_files);
    assert_consistent(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_stays_old_while_a_blob_cannot_be_published() {
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let v1: Vec<_> = tree_v1().into_iter().skip(1).collect();
    let v1_tree = work.path().join("v1");
    let v1_files = write_tree(&v1_tree, &v1);
    let target = target(&server);
    target.publish_tree(&v1_tree, REMOTE_DIR).await.unwrap();

    let v2_tree = work.path().join("v2");
    let v2_files = write_tree(&v2_tree, &tree_v1());
    // A directory squats the blob's final name: its rename is refused (550).
    std::fs::create_dir_all(server.pub_dir().join(REMOTE_DIR).join(BIG)).unwrap();

    let err = target
        .publish_tree(&v2_tree, REMOTE_DIR)
        .await
        .expect_err("publish must fail");
    let text = err.to_string();
    assert!(
        matches!(err, FtpTargetError::Incomplete { ref failures, .. } if failures.len() == 1),
        "{text}"
    );
    let host = format!("ftp://127.0.0.1:{}", server.port);
    assert!(text.contains(&host), "no host in: {text}");
    assert!(
        text.contains("/pub/amd64-v3/stable/app-misc/hello/hello-1.0-1.gpkg.tar"),
        "no path in: {text}"
    );
    assert!(text.contains("550"), "no reply in: {text}");
    assert!(text.contains("RNFR/RNTO"), "no command in: {text}");

    let on_server = server_files(&server);
    assert_eq!(on_server["Packages"], v1_files["Packages"]);
    assert_eq!(on_server["Packages.gz"], v1_files["Packages.gz"]);
    assert!(
        hidden_files(&on_server).is_empty(),
        "temp left: {:?}",
        hidden_files(&on_server)
    );
    assert_consistent(&server);
    // The blob that could be published was: only the squatted one is missing.
    let missing: Vec<&String> = v2_files
        .keys()
        .filter(|rel| !rel.starts_with("Packages") && !on_server.contains_key(*rel))
        .collect();
    assert_eq!(missing, [BIG]);

    // Once the obstacle is gone, the next run completes.
    std::fs::remove_dir(server.pub_dir().join(REMOTE_DIR).join(BIG)).unwrap();
    let report = target.publish_tree(&v2_tree, REMOTE_DIR).await.unwrap();
    assert_eq!(report.uploaded, 3, "{report:?}"); // the blob, Packages.gz, Packages
    assert_eq!(server_files(&server), v2_files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_files_removes_blobs_and_counts_absent_ones() {
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_tree(&tree, &tree_v1());
    let target = target(&server);
    target.publish_tree(&tree, REMOTE_DIR).await.unwrap();

    let names = vec![
        BIG.to_owned(),
        "sys-apps/bar/bar-3-1.gpkg.tar".to_owned(),
        "sys-apps/bar/never-published-1.gpkg.tar".to_owned(),
    ];
    let report = target.delete_files(REMOTE_DIR, &names).await.unwrap();
    assert_eq!((report.deleted, report.absent), (2, 1), "{report:?}");
    let listed = target.list_files(REMOTE_DIR).await.unwrap();
    assert!(!listed.contains_key(BIG));
    assert!(!listed.contains_key("sys-apps/bar/bar-3-1.gpkg.tar"));
    assert!(listed.contains_key("dev-libs/foo/foo-2-1.gpkg.tar"));
    assert!(server.protocol_log().contains("OK DELETE"));

    let err = target
        .delete_files(REMOTE_DIR, &["../escape".to_owned()])
        .await
        .expect_err("a path with .. is refused");
    assert!(err.to_string().contains(".."), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_login_failures_name_the_server() {
    // Nothing listens on this port (bound then closed): connect fails, is retried, reported.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut target = FtpTarget::from_url(&format!("ftp://127.0.0.1:{port}/pub")).unwrap();
    target.retries = 2;
    target.backoff_initial = Duration::from_millis(10);
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &tree_v1()[1..3]);
    let err = target
        .publish_tree(work.path(), REMOTE_DIR)
        .await
        .unwrap_err();
    assert!(matches!(err, FtpTargetError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );

    // vsftpd here is anonymous-only: a named user is refused, without retries.
    let server = Vsftpd::start();
    let target = FtpTarget::from_url(&format!(
        "ftp://publisher:secret@127.0.0.1:{}/pub",
        server.port
    ))
    .unwrap();
    let err = target
        .publish_tree(work.path(), REMOTE_DIR)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FtpTargetError::Login { .. }), "{text}");
    assert!(text.contains("publisher") && text.contains("530"), "{text}");
    assert!(!text.contains("secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_and_reports_json() {
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let files = write_tree(&tree, &tree_v1()[1..]);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_binfarm"))
        .args([
            "ftp-publish",
            "--sessions",
            "2",
            "--url",
            &server.url(),
            "--remote-dir",
            REMOTE_DIR,
            "--tree",
        ])
        .arg(&tree)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["uploaded"], files.len());
    assert_eq!(
        report["index_updated"],
        serde_json::json!(["Packages.gz", "Packages"])
    );
    assert!(report["elapsed"].as_f64().unwrap() > 0.0);
    assert_eq!(server_files(&server), files);
}

/// The coordinator runs publishes in spawned tasks: the future must be `Send`.
#[test]
fn publish_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let target = FtpTarget::from_url("ftp://127.0.0.1/").unwrap();
    let publish = target.publish_tree(Path::new("/nonexistent"), "x");
    assert_send(&publish);
    let names = Vec::new();
    assert_send(&target.delete_files("x", &names));
    assert_send(&target.list_files("x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_taking_fewer_connections_than_configured_still_gets_everything() {
    let server = Vsftpd::start_with(VsftpdOptions {
        max_per_ip: Some(2),
        ..VsftpdOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let files = write_tree(&tree, &tree_v1());
    let mut target = target(&server);
    target.sessions = 6;
    let report = target.publish_tree(&tree, REMOTE_DIR).await.unwrap();
    assert_eq!(report.uploaded, files.len());
    assert_eq!(server_files(&server), files);
    let log = server.protocol_log();
    assert!(
        log.contains("421"),
        "the server never refused a connection; the test proves nothing"
    );
    let logins = log.matches("OK LOGIN").count();
    assert!(
        logins <= 3,
        "{logins} logins for 2 allowed connections: not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_upload_is_retried_on_a_new_session() {
    // 2 MiB/s per session: the 5 MiB upload is still running when its session dies.
    let server = Vsftpd::start_with(VsftpdOptions {
        max_rate: Some(2 * 1024 * 1024),
        ..VsftpdOptions::default()
    });
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let files = write_tree(&tree, &tree_v1());
    let target = target(&server);

    let publish = target.publish_tree(&tree, REMOTE_DIR);
    let killer = async {
        // Find the vsftpd session process storing the big blob, and kill it.
        let pid = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let log = server.protocol_log();
            let line = log
                .lines()
                .find(|l| l.contains("\"STOR ") && l.contains(".hello-1.0-1.gpkg.tar.partial."));
            if let Some(pid) = line.and_then(|l| l.split("[pid ").nth(1)?.split(']').next()) {
                break pid.parse::<i32>().unwrap();
            }
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        pid
    };
    let (report, killed) = tokio::join!(publish, killer);
    let report = report.unwrap();
    assert!(report.retries >= 1, "{report:?}");
    assert!(report.sessions_opened >= 2, "{report:?}");
    assert_eq!(report.uploaded, files.len());
    assert_eq!(server_files(&server), files);

    // The retry stored the same temporary name again (at most one leftover per blob).
    let log = server.protocol_log();
    let temp_stores: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"STOR ") && l.contains(".hello-1.0-1.gpkg.tar.partial."))
        .collect();
    assert_eq!(temp_stores.len(), 2, "{temp_stores:?}");
    let name = |l: &str| l.rsplit('/').next().unwrap().to_owned();
    assert_eq!(name(temp_stores[0]), name(temp_stores[1]));
    assert!(!temp_stores[1].contains(&format!("[pid {killed}]")));
}

/// Figures, not a timed test: `cargo test --release --test publish_ftp -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures for the notes; slow in debug builds"]
async fn figures_1000_packages() {
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let blobs: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let rel = format!("cat-{}/pkg-{i}/pkg-{i}-1.0-1.gpkg.tar", i % 50);
            (rel, pseudo_random(20_000 + i * 37, i as u64))
        })
        .collect();
    let named: Vec<(&str, Vec<u8>)> = blobs.iter().map(|(r, b)| (r.as_str(), b.clone())).collect();
    let files = write_tree(&tree, &named);
    for sessions in [1, 4, 8] {
        let mut target = target(&server);
        target.sessions = sessions;
        let remote = format!("s{sessions}");
        let first = target.publish_tree(&tree, &remote).await.unwrap();
        assert_eq!(first.uploaded, files.len());
        let again = target.publish_tree(&tree, &remote).await.unwrap();
        assert_eq!(again.uploaded, 0);
        eprintln!(
            "sessions {sessions}: first publish {} files / {} MB in {:.2} s; no-op republish {:.2} s",
            first.uploaded,
            first.uploaded_bytes / 1_000_000,
            first.elapsed.as_secs_f64(),
            again.elapsed.as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_base_dir_is_used_as_is() {
    // This vsftpd does not chroot: absolute FTP paths are real paths.
    let server = Vsftpd::start();
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let files = write_tree(&tree, &tree_v1()[1..3]);
    let absolute = server.pub_dir().join("abs/base");
    let url = format!(
        "ftp://127.0.0.1:{}/%2F{}",
        server.port,
        absolute.display().to_string().trim_start_matches('/')
    );
    let target = FtpTarget::from_url(&url).unwrap();
    let report = target.publish_tree(&tree, REMOTE_DIR).await.unwrap();
    assert_eq!(
        report.remote_dir,
        absolute.join(REMOTE_DIR).display().to_string()
    );
    // abs, abs/base, amd64-v3, amd64-v3/stable, dev-libs, dev-libs/foo
    assert_eq!(report.directories_created, 6, "{report:?}");
    for (rel, bytes) in &files {
        assert_eq!(
            &std::fs::read(absolute.join(REMOTE_DIR).join(rel)).unwrap(),
            bytes
        );
    }
}
