//! binfarm's index against real Portage: a PKGDIR filled by real `emerge` (gpkg with
//! BUILD_IDs, a second instance, an xpak, USE-conditional deps, sonames), indexed by
//! `emaint binhost --fix` and by `binfarm::index`, must give the same file, TIMESTAMP
//! aside; Portage must find our index current; warm runs must not rewrite it.
//!
//! Self-contained: it sets up Portage the "ROOT layout" way (see the reference notes)
//! from the venv in BINFARM_VENV (default `<crate>/.venv`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use binfarm::binpkg::Metadata;
use binfarm::index::{
    update_pkgdir_using, IndexOptions, MetadataSource, PackagesIndex, PACKAGES_FILE,
    PACKAGES_GZ_FILE,
};
use binfarm::sign::Keyring;

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

/// Reads metadata straight from gpkg and xpak files (what `binpkg::read` returns),
/// kept here so this test does not depend on the binpkg module's progress.
struct LocalReader;

impl MetadataSource for LocalReader {
    fn metadata(&self, path: &Path, keyring: Option<&Keyring>) -> Result<Metadata, String> {
        assert!(keyring.is_none(), "this reader does not check signatures");
        let name = path.to_string_lossy();
        if name.ends_with(".gpkg.tar") {
            read_gpkg_metadata(path).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            read_xpak_metadata(path).map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

fn add_metadata_value(metadata: &mut Metadata, key: &str, bytes: Vec<u8>) {
    match String::from_utf8(bytes) {
        Ok(mut text) if !key.ends_with(".bz2") => {
            if text.ends_with('\n') {
                text.pop();
            }
            metadata.text.insert(key.to_owned(), text);
        }
        _ => metadata.binary_keys.push(key.to_owned()),
    }
}

fn read_gpkg_metadata(path: &Path) -> std::io::Result<Metadata> {
    let mut outer = tar::Archive::new(File::open(path)?);
    for member in outer.entries()? {
        let member = member?;
        let name = member.path()?.to_string_lossy().into_owned();
        if !name.ends_with("/metadata.tar.zst") {
            continue;
        }
        let mut inner = tar::Archive::new(zstd::Decoder::new(member)?);
        let mut metadata = Metadata::default();
        for file in inner.entries()? {
            let mut file = file?;
            let inner_name = file.path()?.to_string_lossy().into_owned();
            let Some(key) = inner_name.strip_prefix("metadata/") else {
                continue;
            };
            if key.is_empty() || !file.header().entry_type().is_file() {
                continue;
            }
            let key = key.to_owned();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            add_metadata_value(&mut metadata, &key, bytes);
        }
        return Ok(metadata);
    }
    Err(std::io::Error::other("no metadata.tar.zst member"))
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn read_xpak_metadata(path: &Path) -> std::io::Result<Metadata> {
    let data = std::fs::read(path)?;
    let bad = || std::io::Error::other("not an xpak");
    if data.len() < 8 || &data[data.len() - 4..] != b"STOP" {
        return Err(bad());
    }
    let xpak_len = be32(&data[data.len() - 8..]);
    let start = data.len().checked_sub(8 + xpak_len).ok_or_else(bad)?;
    let xpak = &data[start..data.len() - 8];
    if !xpak.starts_with(b"XPAKPACK") || xpak.len() < 16 {
        return Err(bad());
    }
    let index_len = be32(&xpak[8..]);
    let index = &xpak[16..16 + index_len];
    let values = &xpak[16 + index_len..];
    let mut metadata = Metadata::default();
    let mut at = 0;
    while at < index.len() {
        let name_len = be32(&index[at..]);
        let name = String::from_utf8_lossy(&index[at + 4..at + 4 + name_len]).into_owned();
        let offset = be32(&index[at + 4 + name_len..]);
        let len = be32(&index[at + 8 + name_len..]);
        add_metadata_value(&mut metadata, &name, values[offset..offset + len].to_vec());
        at += 12 + name_len;
    }
    Ok(metadata)
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
    let pkgdir = ours.to_string_lossy().into_owned();
    let check = machine.run(&["emaint", "binhost", "--check"], &[("PKGDIR", &pkgdir)]);
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
    let report = update_pkgdir_using(&ours, &options, &LocalReader).expect("index");
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
    let report = update_pkgdir_using(&ours, &options, &LocalReader).expect("index");
    assert_eq!(
        (report.reused, report.added.len(), report.written),
        (5, 0, false)
    );
    assert_eq!(read(&ours.join(PACKAGES_FILE)), before);
    let theirs_before = read(&theirs.join(PACKAGES_FILE));
    let report = update_pkgdir_using(&theirs, &options, &LocalReader).expect("index");
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
    let report = update_pkgdir_using(&ours, &options, &LocalReader).expect("index");
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
