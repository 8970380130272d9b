//! `binfarm profile check` and `binfarm profile render` as a user runs them: bad profiles give
//! one line per problem naming the file and key, and exit non-zero; the shipped profiles pass;
//! rendering writes a complete config root (host and chroot layouts).
mod common;

use std::path::Path;
use std::process::{Command, Output};

use binfarm::profile::Profile;
use binfarm::worker::{BuildRoot, BuildRootOptions, RunMode};

fn binfarm(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_binfarm"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running binfarm")
}

const GOOD: &str = r#"name = "NAME"
chost = "x86_64-pc-linux-gnu"
cflags = "-O2 -pipe -march=x86-64-v3"
gentoo_profile = "farm-test:farm/amd64"

[[repository]]
name = "farm-test"
location = "repo"

[packages]
atoms = ["app-misc/hello"]
"#;

fn write_profile(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text.replace("NAME", name))
        .expect("writing profile");
}

#[test]
fn shipped_profiles_are_valid() {
    let out = binfarm(&["profile", "check"], &common::crate_root());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["x86-64-v2", "x86-64-v3", "web-x86-64-v3"] {
        assert!(stdout.contains(&format!("ok: {name} ")), "{stdout}");
    }
    let example = Profile::load(&common::crate_root().join("profiles/examples/web-x86-64-v3.toml"))
        .expect("example");
    assert!(example.distcc.is_some());
    assert!(example.cflags.contains("-march=x86-64-v3"));
}

#[test]
fn bad_profiles_give_one_line_each_and_exit_non_zero() {
    let tmp = common::tempdir();
    let d = tmp.path();
    write_profile(d, "good", GOOD);
    write_profile(
        d,
        "unknown-key",
        &GOOD.replace("chost =", "colour = \"blue\"\nchost ="),
    );
    write_profile(
        d,
        "no-chost",
        &GOOD.replace("chost = \"x86_64-pc-linux-gnu\"\n", ""),
    );
    write_profile(
        d,
        "native",
        &GOOD.replace("-march=x86-64-v3", "-march=native"),
    );
    write_profile(
        d,
        "bad-atom",
        &GOOD.replace(
            "\"app-misc/hello\"",
            "\"app-misc/hello-1.0\", \">=dev-lang/php\"",
        ),
    );
    write_profile(
        d,
        "bad-distcc",
        &format!(
            "{}\n[distcc]\nhosts = [\"buildhelper:99999/8\", \"helper/x,lzo\"]\n",
            GOOD.replace("NAME", "bad-distcc")
        ),
    );
    let out = binfarm(&["profile", "check", "--dir", "."], d);
    assert!(!out.status.success(), "check of bad profiles exited 0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expect = [
        ("bad-atom.toml", "packages.atoms", "\"app-misc/hello-1.0\""),
        ("bad-atom.toml", "packages.atoms", "\">=dev-lang/php\""),
        ("bad-distcc.toml", "distcc.hosts", "port \"99999\""),
        ("bad-distcc.toml", "distcc.hosts", "job limit \"x\""),
        ("native.toml", "cflags", "-march=native is refused"),
        ("no-chost.toml", "chost", "missing"),
        ("unknown-key.toml:2", "colour", "unknown field `colour`"),
    ];
    assert_eq!(lines.len(), expect.len(), "one line per problem:\n{stderr}");
    for (file, key, problem) in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("./{file}"))
                && l.contains(&format!(": {key}: "))
                && l.contains(problem)),
            "no line for {file} {key} {problem}:\n{stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: good"), "{stdout}");

    // A profile with problems cannot be rendered or built either.
    let r = binfarm(&["profile", "render", "./native.toml", "out"], d);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr)
        .contains("native.toml: cflags: -march=native is refused"));
    assert!(!d.join("out").exists());
}

#[test]
fn render_writes_a_complete_config_root() {
    let tmp = common::tempdir();
    let out = binfarm(
        &[
            "profile",
            "render",
            "x86-64-v2",
            tmp.path().to_str().expect("utf-8 path"),
        ],
        &common::crate_root(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let etc = tmp.path().join("etc/portage");
    let make_conf = std::fs::read_to_string(etc.join("make.conf")).expect("make.conf");
    for line in [
        "CHOST=\"x86_64-pc-linux-gnu\"",
        "CFLAGS=\"-O2 -pipe -march=x86-64-v2\"",
        "CPU_FLAGS_X86=\"sse4_2\"",
        "BINPKG_FORMAT=\"gpkg\"",
        &format!("PKGDIR=\"{}\"", tmp.path().join("pkgdir").display()),
    ] {
        assert!(
            make_conf.lines().any(|l| l == line),
            "{line} not in make.conf:\n{make_conf}"
        );
    }
    assert!(!make_conf.contains("distcc"), "{make_conf}");
    let repos = std::fs::read_to_string(etc.join("repos.conf/binfarm.conf")).expect("repos.conf");
    assert!(repos.contains("main-repo = farm-test"));
    assert!(
        repos.contains(&format!(
            "location = {}",
            common::crate_root().join("tests/fixtures/repo").display()
        )),
        "{repos}"
    );
    let package_use =
        std::fs::read_to_string(etc.join("package.use/binfarm")).expect("package.use");
    assert!(
        package_use.lines().any(|l| l == "app-misc/banner -color"),
        "{package_use}"
    );
    let profile_link = std::fs::read_link(etc.join("make.profile")).expect("make.profile link");
    assert!(
        profile_link.join("make.defaults").is_file(),
        "{}",
        profile_link.display()
    );
    assert!(tmp.path().join("broot/etc/portage/make.conf").is_file());
}

#[test]
fn distcc_profile_renders_features_and_hosts() {
    let tmp = common::tempdir();
    let mut profile = common::load_profile("x86-64-v3");
    profile.distcc = Some(binfarm::profile::Distcc {
        hosts: vec!["127.0.0.1:3632/4".into(), "helper,lzo".into()],
    });
    let rendered =
        binfarm::profile::render(&profile, &Default::default(), tmp.path()).expect("render");
    let make_conf =
        std::fs::read_to_string(rendered.paths.config_root.join("etc/portage/make.conf"))
            .expect("make.conf");
    assert!(
        make_conf
            .lines()
            .any(|l| l == "DISTCC_HOSTS=\"127.0.0.1:3632/4 helper,lzo\""),
        "{make_conf}"
    );
    assert!(
        make_conf
            .lines()
            .any(|l| l.starts_with("FEATURES=") && l.contains(" distcc")),
        "{make_conf}"
    );
}

#[test]
fn chroot_mode_renders_stage3_paths_and_runs_emerge_through_chroot() {
    let tmp = common::tempdir();
    let stage3 = tmp.path().join("stage3");
    let example = Profile::load(&common::crate_root().join("profiles/examples/web-x86-64-v3.toml"))
        .expect("example");
    let root = BuildRoot::prepare(
        &example,
        &stage3,
        &BuildRootOptions {
            mode: RunMode::Chroot,
            ..Default::default()
        },
    )
    .expect("prepare chroot root");
    let make_conf =
        std::fs::read_to_string(stage3.join("etc/portage/make.conf")).expect("make.conf");
    assert!(
        make_conf.contains("PKGDIR=\"/var/cache/binpkgs\""),
        "{make_conf}"
    );
    assert!(
        make_conf.contains("DISTCC_HOSTS=\"buildhelper1.example.net/16,lzo"),
        "{make_conf}"
    );
    assert!(
        !make_conf.contains("-sandbox"),
        "a stage3 keeps Portage's sandbox: {make_conf}"
    );
    assert!(
        !make_conf.contains(&*stage3.to_string_lossy()),
        "no host paths inside the chroot: {make_conf}"
    );
    let link = std::fs::read_link(stage3.join("etc/portage/make.profile")).expect("make.profile");
    assert_eq!(
        link,
        Path::new("/var/db/repos/gentoo/profiles/default/linux/amd64/23.0/no-multilib")
    );
    assert!(stage3.join("var/cache/binpkgs").is_dir());
    assert_eq!(root.pkgdir(), stage3.join("var/cache/binpkgs"));

    let cmd = root.portage_command("emerge", ["--buildpkg", "www-servers/nginx"], &[]);
    assert_eq!(cmd.get_program(), "chroot");
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        vec![
            stage3.to_string_lossy().into_owned(),
            "emerge".into(),
            "--buildpkg".into(),
            "www-servers/nginx".into()
        ]
    );
    let env: Vec<_> = cmd
        .get_envs()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    assert!(env.contains(&"PATH".to_string()));
    assert!(
        !env.iter().any(|k| k == "ROOT" || k == "PORTAGE_CONFIGROOT"),
        "{env:?}"
    );
}
