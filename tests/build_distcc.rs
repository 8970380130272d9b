//! distcc: a profile with distcc hosts builds through a real Debian distccd on 127.0.0.1, and
//! the compile jobs show up in distccd's log.
mod common;

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use binfarm::profile::Distcc;
use binfarm::worker::{run_build, BuildRequest};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// distccd started by this test, in its own process group; stopped (by that group) on drop.
struct Distccd {
    child: Child,
    port: u16,
}

impl Distccd {
    fn start(log: &Path) -> Distccd {
        // distccd drops root privileges to its own user: it must be able to write the log.
        std::fs::write(log, b"").expect("creating distccd log");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o666)).expect("chmod log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("distccd")
            .args([
                "--daemon",
                "--no-detach",
                "--listen",
                "127.0.0.1",
                "--allow",
                "127.0.0.1",
                "--jobs",
                "2",
            ])
            .args([
                "--log-level",
                "info",
                "--port",
                &port.to_string(),
                "--log-file",
            ])
            .arg(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting distccd (Debian package distcc, see scripts/setup.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "distccd did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Distccd { child, port }
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn compile_jobs_go_through_distccd() {
    let tmp = common::tempdir();
    let log = tmp.path().join("distccd.log");
    let daemon = Distccd::start(&log);

    let mut profile = common::load_profile("x86-64-v3");
    profile.distcc = Some(Distcc {
        hosts: vec![format!("127.0.0.1:{}/2", daemon.port)],
    });
    let root = common::fixture_build_root_for(
        &profile,
        &tmp.path().join("root"),
        &common::RootOptions::default(),
    );
    let make_conf =
        std::fs::read_to_string(root.dir.join("etc/portage/make.conf")).expect("make.conf");
    assert!(
        make_conf.contains(&format!("DISTCC_HOSTS=\"127.0.0.1:{}/2\"", daemon.port)),
        "{make_conf}"
    );

    let r = run_build(&root, &BuildRequest::new(["app-misc/multi"])).expect("runner");
    assert!(r.success(), "{:?} {:?}", r.status, r.log_tail);
    assert_eq!(r.built.len(), 1);
    let multi = common::run_ok(
        &mut Command::new(root.paths.root.join("usr/bin/multi")),
        "multi",
    );
    assert!(multi.contains("cpu_flags_x86_avx2"), "{multi}");

    let daemon_log = std::fs::read_to_string(&log).expect("distccd log");
    let compiled: Vec<&str> = daemon_log
        .lines()
        .filter(|l| l.contains("COMPILE_OK"))
        .collect();
    for unit in ["main.c", "unit1.c", "unit2.c", "unit3.c", "unit4.c"] {
        assert!(
            compiled.iter().any(|l| l.ends_with(&format!(" {unit}"))),
            "{unit} was not compiled by distccd:\n{daemon_log}"
        );
    }
    drop(daemon);
}
