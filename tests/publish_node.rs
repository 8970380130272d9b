//! End to end on this host: snapshots of emerge-built gpkgs signed by binfarm, published to
//! a local tree served by a real `binfarm mirror` process; a fresh node root configured ONLY
//! by the `binfarm client-config` script installs with real `emerge --getbinpkgonly` and
//! FEATURES=binpkg-request-signature, and after promote / rollback gets exactly what the
//! channel points at. A package signed by an untrusted key is refused.

mod common;
mod publish_support;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binfarm::publish::{promote, publish_snapshot_to, rollback, STABLE, TESTING};
use common::Proc;
use publish_support::{
    assert_node_refuses_the_rogue_hello, assert_node_sees_the_rollback, binfarm_bin, emerge,
    emerge_ok, installed_build_id, rebuilt, rogue_hello, signed_packages, Farm, GREETER, HELLO,
    LIBHELLO, PROFILE,
};

/// A `binfarm mirror` process serving `root` (stopped by its PID when dropped).
fn start_mirror(root: &Path, log: &Path) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let child = Command::new(binfarm_bin())
        .arg("mirror")
        .arg("--root")
        .arg(root)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--access-log")
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting binfarm mirror");
    let server = Proc(child);
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "binfarm mirror did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, addr)
}

#[test]
fn node_installs_exactly_what_the_channel_points_at() {
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let mut farm = Farm::new(dir.path());
    let t = binfarm::store::unix_now();

    // A: libhello + hello (build 1); B: libhello, hello rebuilt (build 2), greeter.
    let a = farm.snapshot(&[&pkgs[LIBHELLO], &pkgs[HELLO]], t);
    let hello2 = rebuilt(&pkgs[HELLO], dir.path(), 2);
    let b = farm.snapshot(&[&pkgs[LIBHELLO], &hello2, &pkgs[GREETER]], t);
    publish_snapshot_to(&farm.publisher, &mut farm.db, a, TESTING, t).unwrap();
    promote(&farm.publisher, &mut farm.db, PROFILE, None, STABLE, t).unwrap();
    publish_snapshot_to(&farm.publisher, &mut farm.db, b, TESTING, t).unwrap();

    let (_server, addr) = start_mirror(&farm.mirror_root, &dir.path().join("access.log"));

    // A fresh node root (Portage on this host) configured only by client-config's script.
    let node_dir = dir.path().join("node");
    let node = common::fixture_build_root(PROFILE, &node_dir, &common::RootOptions::default());
    let mut cmd = Command::new(binfarm_bin());
    cmd.arg("client-config")
        .args(farm.cli_args())
        .args(["--profile", PROFILE, "--channel", STABLE])
        .arg("--mirror")
        .arg(format!("http://{addr}"))
        .arg("--config-root")
        .arg(&node_dir)
        .arg("--key")
        .arg(&common::signing_key().secret_key_file);
    let script = common::run_ok(&mut cmd, "binfarm client-config");
    assert!(script.contains(&format!("sync-uri = http://{addr}/{PROFILE}/{STABLE}")));
    assert!(script.contains("verify-signature = true"));
    assert!(script.contains("binpkg-request-signature"));
    assert!(script.contains("--check-trustdb"));
    assert!(script.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert!(script.contains("CFLAGS=\"-O2 -pipe -march=x86-64-v3\""));
    let script_path = dir.path().join("client-config.sh");
    std::fs::write(&script_path, &script).unwrap();
    common::run_ok(Command::new("sh").arg(&script_path), "client-config script");
    // Running it again replaces, not duplicates.
    common::run_ok(
        Command::new("sh").arg(&script_path),
        "client-config script, again",
    );
    let make_conf = std::fs::read_to_string(node_dir.join("etc/portage/make.conf")).unwrap();
    assert_eq!(
        make_conf.matches("# BEGIN binfarm client-config").count(),
        1
    );
    let node_root: PathBuf = node.paths.root.clone();

    // stable = A: hello build 1 installs; greeter is not offered.
    let out = emerge_ok(&node, &["--getbinpkgonly", "--verbose", "app-misc/hello"]);
    assert!(!out.contains("Compiling source"), "{out}");
    assert_eq!(
        installed_build_id(&node_root, "app-misc/hello-1.0").as_deref(),
        Some("1")
    );
    assert!(node_root.join("usr/bin/hello").is_file());
    let (ok, out) = emerge(&node, &["--getbinpkgonly", "--pretend", "app-misc/greeter"]);
    assert!(!ok, "greeter is not in stable (A), yet:\n{out}");

    // promote B: greeter installs, hello comes as build 2.
    promote(&farm.publisher, &mut farm.db, PROFILE, Some(b), STABLE, t).unwrap();
    emerge_ok(&node, &["--getbinpkgonly", "--verbose", "app-misc/greeter"]);
    assert!(installed_build_id(&node_root, "app-misc/greeter-1.0").is_some());
    emerge_ok(&node, &["--getbinpkgonly", "--oneshot", "app-misc/hello"]);
    assert_eq!(
        installed_build_id(&node_root, "app-misc/hello-1.0").as_deref(),
        Some("2")
    );

    // roll back to A: greeter is gone from the offer, hello is build 1 again.
    rollback(&farm.publisher, &mut farm.db, PROFILE, STABLE, t).unwrap();
    assert_node_sees_the_rollback(&node, &node_root);

    // A package signed by a key the node does not trust is refused.
    let rogue_hello = rogue_hello(&pkgs, dir.path());
    let r = farm.snapshot(&[&pkgs[LIBHELLO], &rogue_hello], t);
    promote(&farm.publisher, &mut farm.db, PROFILE, Some(r), STABLE, t).unwrap();
    assert_node_refuses_the_rogue_hello(&node, &node_root);
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    assert!(log.contains("/x86-64-v3/stable/Packages"), "{log}");
}
