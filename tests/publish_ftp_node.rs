//! The same as publish_node.rs, over FTP: the farm's channels are published to a real
//! vsftpd on 127.0.0.1 by the `binfarm` commands an operator runs (`snapshots import`,
//! `promote`, `rollback`, with the FTP mirror in farm.toml `[[ftp]]`), and a fresh node
//! root configured ONLY by `binfarm client-config --mirror ftp://...` installs with real
//! `emerge --getbinpkgonly` and FEATURES=binpkg-request-signature through the `ftp://`
//! binhost (Portage reads the index with urllib's FTP client and fetches packages with
//! its FETCHCOMMAND, wget). After promote and rollback it gets exactly the snapshot the
//! channel points at; a package signed by an untrusted key is refused. No HTTP server runs.

mod common;
mod common_ftp;
mod publish_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use binfarm::publish::{STABLE, TESTING};
use common_ftp::Vsftpd;
use publish_support::{
    assert_node_refuses_the_rogue_hello, assert_node_sees_the_rollback, binfarm_bin, emerge,
    emerge_ok, installed_build_id, rebuilt, rogue_hello, signed_packages, GREETER, HELLO, LIBHELLO,
    PROFILE,
};

/// farm.toml of a farm in `dir` whose only mirror besides the local tree is `ftp_url`.
fn write_farm_toml(dir: &Path, ftp_url: &str) -> PathBuf {
    let path = dir.join("farm.toml");
    std::fs::write(
        &path,
        format!(
            r#"[state]
dir = "state"
[profiles]
dir = "{profiles}"
[signing]
key_file = "{key}"
[mirror]
root = "mirror"
[[ftp]]
url = "{ftp_url}"
sessions = 2
retries = 2
backoff_initial_ms = 50
io_timeout_secs = 20
"#,
            profiles = common::crate_root().join("profiles").display(),
            key = common::signing_key().secret_key_file.display(),
        ),
    )
    .unwrap();
    path
}

/// Runs `binfarm <args> --config farm.toml`; returns stdout.
fn binfarm(config: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(binfarm_bin());
    cmd.args(args).arg("--config").arg(config);
    common::run_ok(&mut cmd, &format!("binfarm {args:?}"))
}

/// `binfarm snapshots import` of these files to testing; returns the new snapshot id.
fn import(config: &Path, files: &[&Path]) -> i64 {
    let mut args = vec!["snapshots", "import", "--profile", PROFILE];
    let files: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    args.extend(files.iter().map(String::as_str));
    let out = binfarm(config, &args);
    assert!(
        out.contains("ftp 127.0.0.1:"),
        "no FTP push reported:\n{out}"
    );
    out.strip_prefix("snapshot ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot id in:\n{out}"))
}

fn promote(config: &Path, snapshot: i64) -> String {
    let id = snapshot.to_string();
    let out = binfarm(
        config,
        &[
            "promote",
            "--profile",
            PROFILE,
            "--snapshot",
            &id,
            "--to",
            STABLE,
        ],
    );
    assert!(
        out.contains("ftp 127.0.0.1:"),
        "no FTP push reported:\n{out}"
    );
    out
}

/// The `Packages` the FTP server holds for the stable channel (what nodes read).
fn served_stable_index(server: &Vsftpd) -> String {
    let path = server.pub_dir().join(PROFILE).join(STABLE).join("Packages");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files the server sent (wu-ftpd xferlog lines with direction `o`) whose path ends in `name`.
fn downloads_of(server: &Vsftpd, name: &str) -> usize {
    server
        .xferlog()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // ... bytes filename type action direction ...
            f.iter().any(|x| x.ends_with(name)) && f.iter().rev().nth(6) == Some(&"o")
        })
        .count()
}

#[test]
fn node_installs_over_ftp_exactly_what_the_channel_points_at() {
    let started = Instant::now();
    let server = Vsftpd::start();
    let dir = common::tempdir();
    let pkgs = signed_packages(&dir.path().join("pkgs"));
    let config = write_farm_toml(dir.path(), &server.url());

    // A: libhello + hello (build 1); B: libhello, hello rebuilt (build 2), greeter.
    let a = import(&config, &[&pkgs[LIBHELLO], &pkgs[HELLO]]);
    promote(&config, a);
    let hello2 = rebuilt(&pkgs[HELLO], dir.path(), 2);
    let b = import(&config, &[&pkgs[LIBHELLO], &hello2, &pkgs[GREETER]]);
    assert!(b > a);
    let testing = std::fs::read_to_string(
        server
            .pub_dir()
            .join(PROFILE)
            .join(TESTING)
            .join("Packages"),
    )
    .unwrap();
    assert!(testing.contains("CPV: app-misc/greeter-1.0"), "{testing}");
    assert!(!served_stable_index(&server).contains("greeter"));

    // A fresh node root (Portage on this host) configured only by client-config's script.
    let node_dir = dir.path().join("node");
    let node = common::fixture_build_root(PROFILE, &node_dir, &common::RootOptions::default());
    let mirror = server.url();
    let mut cmd = Command::new(binfarm_bin());
    cmd.arg("client-config")
        .arg("--config")
        .arg(&config)
        .args(["--profile", PROFILE, "--channel", STABLE])
        .arg("--mirror")
        .arg(&mirror)
        .arg("--config-root")
        .arg(&node_dir);
    let script = common::run_ok(&mut cmd, "binfarm client-config");
    assert!(
        script.contains(&format!("sync-uri = {mirror}/{PROFILE}/{STABLE}")),
        "{script}"
    );
    assert!(script.contains("verify-signature = true"));
    assert!(script.contains("binpkg-request-signature"));
    let script_path = dir.path().join("client-config.sh");
    std::fs::write(&script_path, &script).unwrap();
    common::run_ok(Command::new("sh").arg(&script_path), "client-config script");
    let node_root: PathBuf = node.paths.root.clone();

    // stable = A: hello build 1 installs over FTP; greeter is not offered.
    let out = emerge_ok(&node, &["--getbinpkgonly", "--verbose", "app-misc/hello"]);
    assert!(!out.contains("Compiling source"), "{out}");
    assert_eq!(
        installed_build_id(&node_root, "app-misc/hello-1.0").as_deref(),
        Some("1"),
        "{out}"
    );
    assert!(node_root.join("usr/bin/hello").is_file());
    assert_eq!(
        downloads_of(&server, "/stable/app-misc/hello/hello-1.0-1.gpkg.tar"),
        1,
        "hello came from the FTP server:\n{}",
        server.xferlog()
    );
    let (ok, out) = emerge(&node, &["--getbinpkgonly", "--pretend", "app-misc/greeter"]);
    assert!(!ok, "greeter is not in stable (A), yet:\n{out}");

    // promote B: greeter installs, hello comes as build 2.
    promote(&config, b);
    assert!(served_stable_index(&server).contains("CPV: app-misc/greeter-1.0"));
    emerge_ok(&node, &["--getbinpkgonly", "--verbose", "app-misc/greeter"]);
    assert_eq!(
        installed_build_id(&node_root, "app-misc/greeter-1.0").as_deref(),
        Some("1")
    );
    // Its dependency came along, from the FTP server too.
    assert_eq!(
        installed_build_id(&node_root, "dev-libs/libhello-1.0").as_deref(),
        Some("1")
    );
    assert_eq!(
        downloads_of(&server, "/stable/dev-libs/libhello/libhello-1.0-1.gpkg.tar"),
        1,
        "{}",
        server.xferlog()
    );
    emerge_ok(&node, &["--getbinpkgonly", "--oneshot", "app-misc/hello"]);
    assert_eq!(
        installed_build_id(&node_root, "app-misc/hello-1.0").as_deref(),
        Some("2")
    );
    assert_eq!(
        downloads_of(&server, "/stable/app-misc/hello/hello-1.0-2.gpkg.tar"),
        1,
        "{}",
        server.xferlog()
    );

    // roll back to A: greeter is gone from the offer, hello is build 1 again.
    let out = binfarm(
        &config,
        &["rollback", "--profile", PROFILE, "--channel", STABLE],
    );
    assert!(
        out.contains(&format!("now points at snapshot {a}")),
        "{out}"
    );
    assert!(out.contains("ftp 127.0.0.1:"), "{out}");
    assert!(!served_stable_index(&server).contains("greeter"));
    assert_node_sees_the_rollback(&node, &node_root);

    // A package signed by a key the node does not trust is refused.
    let rogue_hello = rogue_hello(&pkgs, dir.path());
    let r = import(&config, &[&pkgs[LIBHELLO], &rogue_hello]);
    promote(&config, r);
    assert_node_refuses_the_rogue_hello(&node, &node_root);
    // Portage read the index over FTP (urllib), not from anywhere else.
    let log = server.protocol_log();
    assert!(log.contains("RETR Packages.gz"), "{log}");
    eprintln!("publish_ftp_node: {:?}", started.elapsed());
}
