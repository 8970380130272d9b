//! GC removes from an FTP mirror (real vsftpd on 127.0.0.1) what it removes from the local
//! tree the mirror copies, through the `RemoteCleaner` hook; the rest stays.

mod common;
mod common_ftp;
mod publish_support;

use std::time::Duration;

use binfarm::publish::ftp::FtpTarget;
use binfarm::publish::{publish_snapshot_to, run_gc, RemoteCleaner, Retention, TESTING};
use common_ftp::Vsftpd;
use publish_support::{rebuilt, signed_packages, Farm, HELLO, LIBHELLO, PROFILE};

#[test]
fn gc_deletes_on_the_ftp_mirror_too() {
    let server = Vsftpd::start();
    let mut target = FtpTarget::from_url(&server.url()).unwrap();
    target.retries = 2;
    target.backoff_initial = Duration::from_millis(50);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    farm.publisher.retention = Retention {
        keep_snapshots: 10,
        keep_days: 10,
        grace_hours: 1,
    };
    let t = binfarm::store::unix_now();
    let remote_dir = format!("{PROFILE}/{TESTING}");
    let hello2 = rebuilt(&pkgs[HELLO], dir.path(), 2);
    let s1 = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO]], t);
    let s2 = farm.snapshot(&[&pkgs[LIBHELLO], &hello2], t);
    for s in [s1, s2] {
        publish_snapshot_to(&farm.publisher, &mut farm.db, s, TESTING, t).unwrap();
        runtime
            .block_on(target.publish_tree(&farm.tree(TESTING), &remote_dir))
            .unwrap();
    }
    let listed = runtime.block_on(target.list_files(&remote_dir)).unwrap();
    assert!(listed.contains_key(HELLO), "{listed:?}");

    let remotes: Vec<&dyn RemoteCleaner> = vec![&target];
    let report = run_gc(&farm.publisher, &mut farm.db, false, t + 7200, &remotes).unwrap();
    assert!(
        report.remote_errors.is_empty(),
        "{:?}",
        report.remote_errors
    );
    assert!(report
        .removed_mirror_files
        .contains(&farm.tree(TESTING).join(HELLO)));
    let listed = runtime.block_on(target.list_files(&remote_dir)).unwrap();
    assert!(!listed.contains_key(HELLO), "{listed:?}");
    assert!(
        listed.contains_key("app-misc/hello/hello-1.0-2.gpkg.tar"),
        "{listed:?}"
    );
    assert!(listed.contains_key(LIBHELLO), "{listed:?}");
    assert!(listed.contains_key("Packages"), "{listed:?}");
}
