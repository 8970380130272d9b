//! binfarm's index against real Portage: a PKGDIR filled by real `emerge` (gpkg with
//! BUILD_IDs, a second instance, an xpak, USE-conditional deps, sonames), indexed by
//! `emaint binhost --fix` and by `binfarm::index`, must give the same file, TIMESTAMP
//! aside; Portage must find our index current; warm runs must not rewrite it.
//!
//! The first test is self-contained: it sets up Portage the "ROOT layout" way from the
//! venv in BINFARM_VENV (default `<crate>/.venv`). The signed-tree test uses the shared
//! cached fixture builds and keys of tests/common.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use binfarm::binpkg;
use binfarm::index::{update_pkgdir, IndexOptions, PackagesIndex, PACKAGES_FILE, PACKAGES_GZ_FILE};
use binfarm::profile::BinpkgFormat;
use binfarm::sign::{Keyring, SigningKey};

fn venv() -> PathBuf {
    std::env::var_os("BINFARM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write file");
}

fn symlink(target: &Path, link: &Path) {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// A tiny ebuild repository: a soname library, a program linking it with USE-conditional
/// dependencies and licence, and a plain EAPI 7 package with a revision.
fn create_repo(repo: &Path) {
    write(&repo.join("profiles/repo_name"), "farm-idx\n");
    write(&repo.join("profiles/categories"), "app-misc\ndev-libs\n");
    write(&repo.join("profiles/arch.list"), "amd64\n");
    write(
        &repo.join("metadata/layout.conf"),
        "masters =\nthin-manifests = true\nsign-manifests = false\nprofile-formats = portage-2\n",
    );
    write(&repo.join("profiles/farm/amd64/eapi"), "8\n");
    write(
        &repo.join("profiles/farm/amd64/make.defaults"),
        r#"ARCH="amd64"
ACCEPT_KEYWORDS="amd64"
ACCEPT_LICENSE="*"
CHOST="x86_64-pc-linux-gnu"
ABI="amd64"
DEFAULT_ABI="amd64"
LIBDIR_amd64="lib64"
ELIBC="glibc"
KERNEL="linux"
IUSE_IMPLICIT="prefix prefix-guest prefix-stack"
USE_EXPAND="ELIBC KERNEL"
USE_EXPAND_IMPLICIT="ARCH ELIBC KERNEL"
USE_EXPAND_UNPREFIXED="ARCH"
USE_EXPAND_VALUES_ARCH="amd64"
USE_EXPAND_VALUES_ELIBC="glibc"
USE_EXPAND_VALUES_KERNEL="linux"
USE="ssl"
"#,
    );
    write(&repo.join("licenses/MIT"), "MIT\n");
    write(&repo.join("licenses/GPL-2"), "GPL-2\n");
    write(
        &repo.join("dev-libs/libidx/libidx-1.0.ebuild"),
        r#"EAPI=8
DESCRIPTION="Shared library for index tests"
HOMEPAGE="https://example.invalid/libidx"
S="${WORKDIR}"
LICENSE="MIT"
SLOT="0/1"
KEYWORDS="amd64"
IUSE="static-libs"
src_unpack() { echo 'int idx_answer(void) { return 42; }' > "${S}"/idx.c || die; }
src_compile() {
	${CC:-gcc} -fPIC -shared -Wl,-soname,libidx.so.1 -o libidx.so.1 idx.c || die
}
src_install() {
	dolib.so libidx.so.1
	dosym libidx.so.1 /usr/$(get_libdir)/libidx.so
}
"#,
    );
    write(
        &repo.join("app-misc/useidx/useidx-1.0.ebuild"),
        r#"EAPI=8
DESCRIPTION="Program linking libidx, with USE-conditional dependencies"
HOMEPAGE="https://example.invalid/useidx"
S="${WORKDIR}"
LICENSE="MIT doc? ( GPL-2 )"
SLOT="0"
KEYWORDS="amd64"
IUSE="+ssl doc"
RESTRICT="!ssl? ( bindist )"
DEPEND="dev-libs/libidx:= ssl? ( dev-libs/libidx[-static-libs(-)] ) doc? ( app-misc/plain )"
RDEPEND="${DEPEND} || ( app-misc/plain dev-libs/libidx )"
src_unpack() {
	printf 'int idx_answer(void);\nint main(void) { return idx_answer() == 42 ? 0 : 1; }\n' > "${S}"/main.c || die
}
src_compile() {
	${CC:-gcc} -o useidx main.c -L"${ESYSROOT}"/usr/$(get_libdir) -lidx || die
}
src_install() { dobin useidx; }
"#,
    );
    write(
        &repo.join("app-misc/plain/plain-2.1-r1.ebuild"),
        r#"EAPI=7
DESCRIPTION="Data-only package"
HOMEPAGE="https://example.invalid/plain"
S="${WORKDIR}"
LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
src_install() {
	insinto /usr/share/plain
	newins - data.txt <<< "plain data"
}
"#,
    );
}

/// One Portage "machine" in the ROOT layout.
struct Machine {
    dir: PathBuf,
    path_env: String,
}

impl Machine {
    fn new(dir: &Path, repo: &Path, compat_bin: &Path) -> Machine {
        let venv = venv();
        let config = venv.join("share/portage/config");
        let broot = dir.join("broot");
        for name in ["make.globals", "binrepos.conf", "sets/portage.conf"] {
            symlink(
                &config.join(name),
                &broot.join("share/portage/config").join(name),
            );
        }
        let profile = repo.join("profiles/farm/amd64");
        let repos_conf = format!(
            "[DEFAULT]\nmain-repo = farm-idx\n[farm-idx]\nlocation = {}\n",
            repo.display()
        );
        for root in [&broot, &dir.to_path_buf()] {
            symlink(&profile, &root.join("etc/portage/make.profile"));
            write(&root.join("etc/portage/repos.conf/farm.conf"), &repos_conf);
        }
        write(
            &broot.join("etc/portage/make.conf"),
            &format!(
                "PORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\n\
                 FEATURES=\"${{FEATURES}} -sandbox -usersandbox -userpriv -usersync -userfetch -pid-sandbox -network-sandbox -ipc-sandbox -news\"\n\
                 PKGDIR={b}/var/cache/binpkgs\nPORTAGE_TMPDIR={b}/var/tmp\nDISTDIR={b}/distfiles\n",
                b = broot.display()
            ),
        );
        for sub in [
            "root",
            "pkgdir",
            "tmp",
            "log/build",
            "distfiles",
            "broot/var/tmp",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        write(
            &dir.join("etc/portage/make.conf"),
            &format!(
                "PORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\nPORTAGE_INST_UID=0\nPORTAGE_INST_GID=0\n\
                 FEATURES=\"${{FEATURES}} -sandbox -usersandbox -userpriv -usersync -userfetch -pid-sandbox -network-sandbox -ipc-sandbox -news\"\n\
                 DISTDIR={d}/distfiles\nPKGDIR={d}/pkgdir\nPORTAGE_TMPDIR={d}/tmp\n\
                 EMERGE_LOG_DIR={d}/log\nPORTAGE_LOGDIR={d}/log/build\n\
                 EMERGE_WARNING_DELAY=0\nCLEAN_DELAY=0\n\
                 CHOST=x86_64-pc-linux-gnu\nCFLAGS=\"-O2 -pipe\"\nCC=gcc\n\
                 BINPKG_FORMAT=gpkg\nBINPKG_COMPRESS=zstd\n\
                 FEATURES=\"${{FEATURES}} buildpkg binpkg-multi-instance\"\n",
                d = dir.display()
            ),
        );
        let path_env = format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            compat_bin.display(),
            venv.join("bin").display()
        );
        Machine {
            dir: dir.to_owned(),
            path_env,
        }
    }

    /// Runs a Portage command for this machine; `extra` adds environment variables.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let mut command = Command::new(args[0]);
        command
            .args(&args[1..])
            .env_clear()
            .env("HOME", self.dir.join("tmp"))
            .env("TERM", "dumb")
            .env("LANG", "C.UTF-8")
            .env("PATH", &self.path_env)
            .env("PORTAGE_OVERRIDE_EPREFIX", self.dir.join("broot"))
            .env("EPREFIX", "")
            .env("PORTAGE_CONFIGROOT", &self.dir)
            .env("ROOT", self.dir.join("root"))
            .env("SYSROOT", self.dir.join("root"))
            .env("NOCOLOR", "true");
        for (k, v) in extra {
            command.env(k, v);
        }
        let out = command.output().expect("Portage command runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?} failed:\n{text}");
        text
    }

    fn pkgdir(&self) -> PathBuf {
        self.dir.join("pkgdir")
    }
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success());
}

fn remove_index(pkgdir: &Path) {
    for name in [PACKAGES_FILE, PACKAGES_GZ_FILE] {
        let _ = std::fs::remove_file(pkgdir.join(name));
    }
}

/// Header keys that Portage takes from its configuration, to hand to binfarm.
fn profile_header(index_text: &str) -> BTreeMap<String, String> {
    let index = PackagesIndex::parse(index_text, Path::new("Packages")).expect("parses");
    index
        .header
        .into_iter()
        .filter(|(k, _)| !["VERSION", "TIMESTAMP", "PACKAGES"].contains(&k.as_str()))
        .collect()
}

/// The file without its TIMESTAMP line, with same-CPV blocks in a fixed order
/// (Portage orders those by directory listing order on a fresh index).
fn comparable(text: &str) -> (Vec<String>, Vec<String>) {
    let mut blocks = text.split("\n\n");
    let header: Vec<String> = blocks
        .next()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.starts_with("TIMESTAMP: "))
        .map(str::to_owned)
        .collect();
    let mut entries: Vec<String> = blocks
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .collect();
    let cpv = |b: &String| {
        b.lines()
            .find_map(|l| l.strip_prefix("CPV: "))
            .unwrap_or("")
            .to_owned()
    };
    let cpv_order: Vec<String> = entries.iter().map(cpv).collect();
    entries.sort_by_key(|b| (cpv(b), b.clone()));
    let mut sorted_cpvs = cpv_order.clone();
    sorted_cpvs.sort();
    assert_eq!(cpv_order, sorted_cpvs, "entries not in CPV order:\n{text}");
    (header, entries)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read index")
}

fn gunzip(path: &Path) -> (Vec<u8>, String) {
    let bytes = std::fs::read(path).expect("read gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    (bytes, text)
}

fn mtime(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").mtime()
}

/// Checks binfarm's index in `ours` against emaint's in `theirs` and that Portage
/// considers ours current.
fn assert_same_index(machine: &Machine, ours: &Path, theirs: &Path) {
    let pkgdir = ours.to_string_lossy().into_owned();
    let check = || machine.run(&["emaint", "binhost", "--check"], &[("PKGDIR", &pkgdir)]);
    assert_same_index_with(ours, theirs, check);
}

/// Same, with the way to run `emaint binhost --check` on `ours`.
fn assert_same_index_with(ours: &Path, theirs: &Path, emaint_check: impl Fn() -> String) {
    let our_text = read(&ours.join(PACKAGES_FILE));
    let their_text = read(&theirs.join(PACKAGES_FILE));
    assert_eq!(
        comparable(&our_text),
        comparable(&their_text),
        "ours:\n{our_text}\nemaint:\n{their_text}"
    );
    // Packages.gz: same header fields as Python's gzip, same text, mtimes = TIMESTAMP.
    let timestamp: i64 = our_text
        .lines()
        .find_map(|l| l.strip_prefix("TIMESTAMP: "))
        .expect("TIMESTAMP")
        .parse()
        .expect("number");
    let (our_gz, our_gz_text) = gunzip(&ours.join(PACKAGES_GZ_FILE));
    let (their_gz, _) = gunzip(&theirs.join(PACKAGES_GZ_FILE));
    assert_eq!(our_gz_text, our_text);
    assert_eq!(our_gz[..4], their_gz[..4], "gzip magic, method, flags");
    assert_eq!(our_gz[8..10], their_gz[8..10], "gzip XFL and OS");
    assert_eq!(
        i64::from(u32::from_le_bytes([
            our_gz[4], our_gz[5], our_gz[6], our_gz[7]
        ])),
        timestamp
    );
    assert_eq!(mtime(&ours.join(PACKAGES_FILE)), timestamp);
    assert_eq!(mtime(&ours.join(PACKAGES_GZ_FILE)), timestamp);
    // Portage's own consistency check accepts our index as up to date.
    let check = emaint_check();
    assert!(
        !check.contains("is not in Packages") && !check.contains("timestamp"),
        "emaint --check on our index:\n{check}"
    );
}

#[test]
fn index_matches_emaint_binhost_fix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let repo = top.join("repo");
    create_repo(&repo);
    let compat_bin = top.join("compat-bin");
    symlink(Path::new("/bin/tar"), &compat_bin.join("gtar"));
    let machine = Machine::new(&top.join("farm"), &repo, &compat_bin);

    // Real builds: libidx + useidx + plain (BUILD_ID 1), plain again (BUILD_ID 2),
    // and an xpak instance of plain (BUILD_ID 3).
    machine.run(
        &["emerge", "--oneshot", "app-misc/useidx", "app-misc/plain"],
        &[],
    );
    machine.run(
        &["emerge", "--oneshot", "--buildpkgonly", "app-misc/plain"],
        &[],
    );
    machine.run(
        &["emerge", "--oneshot", "--buildpkgonly", "app-misc/plain"],
        &[("BINPKG_FORMAT", "xpak")],
    );
    let pkgdir = machine.pkgdir();
    assert!(pkgdir.join("app-misc/plain/plain-2.1-r1-3.xpak").is_file());
    assert!(pkgdir
        .join("app-misc/useidx/useidx-1.0-1.gpkg.tar")
        .is_file());

    // Cold: no index at all, on two copies of the same files.
    let theirs = top.join("theirs");
    let ours = top.join("ours");
    copy_tree(&pkgdir, &theirs);
    copy_tree(&pkgdir, &ours);
    remove_index(&theirs);
    remove_index(&ours);
    let theirs_s = theirs.to_string_lossy().into_owned();
    machine.run(&["emaint", "binhost", "--fix"], &[("PKGDIR", &theirs_s)]);
    let options = IndexOptions {
        header_overrides: profile_header(&read(&theirs.join(PACKAGES_FILE))),
        ..IndexOptions::default()
    };
    let report = update_pkgdir(&ours, &options).expect("index");
    assert_eq!(report.entries, 5, "{report:?}");
    assert_eq!(report.added.len(), 5);
    assert!(report.rejected.is_empty(), "{report:?}");
    assert!(report.written);
    assert_same_index(&machine, &ours, &theirs);
    let text = read(&ours.join(PACKAGES_FILE));
    // USE-conditional deps and licence were evaluated with the package's USE (+ssl -doc).
    assert!(text.contains("\nLICENSE: MIT\n"), "{text}");
    assert!(text.contains("RDEPEND: dev-libs/libidx:0/1= dev-libs/libidx[-static-libs(-)] || ( app-misc/plain dev-libs/libidx )\n"), "{text}");
    assert!(text.contains("PROVIDES: x86_64: libidx.so.1\n"), "{text}");

    // Warm: nothing changed, nothing read, nothing written (emaint's own index too).
    let before = read(&ours.join(PACKAGES_FILE));
    let report = update_pkgdir(&ours, &options).expect("index");
    assert_eq!(
        (report.reused, report.added.len(), report.written),
        (5, 0, false)
    );
    assert_eq!(read(&ours.join(PACKAGES_FILE)), before);
    let theirs_before = read(&theirs.join(PACKAGES_FILE));
    let report = update_pkgdir(&theirs, &options).expect("index");
    assert_eq!((report.reused, report.written), (5, false), "{report:?}");
    assert_eq!(read(&theirs.join(PACKAGES_FILE)), theirs_before);

    // Incremental: one package gone, one touched (new mtime), one new file; emaint
    // updates its index the same way.
    for dir in [&ours, &theirs] {
        std::fs::remove_file(dir.join("app-misc/plain/plain-2.1-r1-1.gpkg.tar")).expect("rm");
        let touched = File::options()
            .write(true)
            .open(dir.join("app-misc/plain/plain-2.1-r1-2.gpkg.tar"))
            .expect("open");
        touched
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3))
            .expect("touch");
    }
    machine.run(
        &["emerge", "--oneshot", "--buildpkgonly", "dev-libs/libidx"],
        &[],
    );
    for dir in [&ours, &theirs] {
        copy_tree(
            &pkgdir.join("dev-libs/libidx/libidx-1.0-2.gpkg.tar"),
            &dir.join("dev-libs/libidx/libidx-1.0-2.gpkg.tar"),
        );
    }
    machine.run(&["emaint", "binhost", "--fix"], &[("PKGDIR", &theirs_s)]);
    let report = update_pkgdir(&ours, &options).expect("index");
    assert_eq!(report.entries, 5, "{report:?}");
    assert_eq!(report.reused, 3, "{report:?}");
    let mut added = report.added.clone();
    added.sort();
    assert_eq!(
        added,
        [
            "app-misc/plain/plain-2.1-r1-2.gpkg.tar",
            "dev-libs/libidx/libidx-1.0-2.gpkg.tar"
        ]
    );
    assert_eq!(report.removed, ["app-misc/plain/plain-2.1-r1-1.gpkg.tar"]);
    assert_same_index(&machine, &ours, &theirs);
}

/// Runs a Portage command in a fixture build root; panics with its output on failure.
fn run_in_root(root: &binfarm::worker::BuildRoot, args: &[&str], env: &[(&str, &str)]) -> String {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let out = root
        .portage_command(args[0], &args[1..], &env)
        .output()
        .expect("Portage command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?} failed:\n{text}");
    text
}

#[test]
fn signed_tree_with_signatures_required_matches_emaint() {
    let signed = common::build_fixture(
        "x86-64-v3",
        &["app-misc/hello", "app-misc/greeter"],
        true,
        BinpkgFormat::Gpkg,
    );
    let unsigned =
        common::build_fixture("x86-64-v3", &["app-misc/hello"], false, BinpkgFormat::Gpkg);
    let xpak = common::build_fixture("x86-64-v3", &["app-misc/hello"], false, BinpkgFormat::Xpak);
    let key = signed.key.clone().expect("signed build has a key");
    let rogue = SigningKey::from_armored_file(&common::rogue_key().secret_key_file, None)
        .expect("rogue key");

    // Portage's signed packages, plus what a node must never get: a copy signed by a
    // foreign key, an unsigned gpkg, an xpak.
    let work = common::tempdir();
    let base = work.path().join("base");
    copy_tree(&signed.pkgdir, &base);
    let hello = base.join("app-misc/hello");
    binpkg::restamp_and_sign(
        &hello.join("hello-1.0-1.gpkg.tar"),
        &hello.join("hello-1.0-5.gpkg.tar"),
        5,
        &rogue,
    )
    .expect("foreign-signed copy");
    std::fs::copy(
        unsigned.pkgdir.join("app-misc/hello/hello-1.0-1.gpkg.tar"),
        hello.join("hello-1.0-6.gpkg.tar"),
    )
    .expect("copy unsigned");
    std::fs::copy(
        xpak.pkgdir.join("app-misc/hello/hello-1.0-1.xpak"),
        hello.join("hello-1.0-8.xpak"),
    )
    .expect("copy xpak");
    remove_index(&base);
    let theirs = work.path().join("theirs");
    let ours = work.path().join("ours");
    copy_tree(&base, &theirs);
    copy_tree(&base, &ours);

    // Portage with signatures required (what a node enforces) indexes only the good ones.
    let required = "binpkg-request-signature";
    let theirs_s = theirs.to_string_lossy().into_owned();
    run_in_root(
        &signed.root,
        &["emaint", "binhost", "--fix"],
        &[("PKGDIR", &theirs_s), ("FEATURES", required)],
    );
    let keyring = Keyring::load(&key.public_key_file).expect("keyring");
    let options = IndexOptions {
        keyring: Some(&keyring),
        header_overrides: profile_header(&read(&theirs.join(PACKAGES_FILE))),
        ..IndexOptions::default()
    };
    let report = update_pkgdir(&ours, &options).expect("index");
    assert_eq!(report.entries, 3, "{report:?}");
    let rejected: Vec<&str> = report.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        rejected,
        [
            "app-misc/hello/hello-1.0-5.gpkg.tar",
            "app-misc/hello/hello-1.0-6.gpkg.tar",
            "app-misc/hello/hello-1.0-8.xpak"
        ],
        "{report:?}"
    );
    let ours_s = ours.to_string_lossy().into_owned();
    assert_same_index_with(&ours, &theirs, || {
        run_in_root(
            &signed.root,
            &["emaint", "binhost", "--check"],
            &[("PKGDIR", &ours_s), ("FEATURES", required)],
        )
    });
}
