//! Shared support for binfarm's integration tests: the Portage venv, the farm-test fixture
//! repository with generated Manifests and distfiles, throw-away gpg keys, and PKGDIRs of
//! real emerge-built binpkgs.
//!
//! Everything expensive is cached under `target/tmp/binfarm-test-cache/`, keyed by a hash of
//! its inputs, built once (file lock + temp dir + rename, so several test binaries running at
//! once share the work) and treated as read-only by tests: copy a PKGDIR before changing it.
//!
//! Use from a test file with `mod common;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use binfarm::profile::{BinpkgFormat, Profile, Signing};
use binfarm::worker::{run_build, BuildRequest, BuildResult, BuildRoot, BuildRootOptions};
use sha2::{Digest, Sha256};

/// The binfarm binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_binfarm");

/// A child process killed (SIGKILL, by its PID) and reaped on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Bump to invalidate every cached artefact (e.g. after changing how build roots look).
const CACHE_VERSION: &str = "binfarm-test-cache-v2";

/// The crate root.
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with real Portage: `$BINFARM_VENV`, default `<crate root>/.venv`.
pub fn venv() -> PathBuf {
    match std::env::var_os("BINFARM_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => crate_root().join(".venv"),
    }
}

/// `profiles/<name>.toml` of the crate.
pub fn profile_path(name: &str) -> PathBuf {
    crate_root().join("profiles").join(format!("{name}.toml"))
}

pub fn load_profile(name: &str) -> Profile {
    let path = profile_path(name);
    Profile::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Shared cache root (`target/tmp/binfarm-test-cache`), world-traversable so gpg running as
/// nobody (Portage's verify step) can read keyrings inside it.
pub fn cache_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("binfarm-test-cache");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A fresh temporary directory that is world-readable (tempfile's default is 0700, which
/// stops gpg-as-nobody and is awkward for chrooted tools). Removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("binfarm-test-")
        .tempdir_in(cache_root())
        .expect("creating a temporary directory");
    set_mode(dir.path(), 0o755);
    dir
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Runs `f` to create `dir` once: under an exclusive file lock, into `dir.tmp`, then renamed.
/// Later calls (from any process) find `dir` complete and return at once.
fn build_once(dir: &Path, f: impl FnOnce(&Path)) {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    if dir.join(".complete").exists() {
        return;
    }
    let _guard = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    let lock_path = dir.with_extension("lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening lock {}: {e}", lock_path.display()));
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("locking {}: {e}", lock_path.display()));
    if dir.join(".complete").exists() {
        return;
    }
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .unwrap_or_else(|e| panic!("removing stale {}: {e}", tmp.display()));
    }
    if dir.exists() {
        fs::remove_dir_all(dir)
            .unwrap_or_else(|e| panic!("removing incomplete {}: {e}", dir.display()));
    }
    fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
    set_mode(&tmp, 0o755);
    f(&tmp);
    fs::rename(&tmp, dir)
        .unwrap_or_else(|e| panic!("renaming {} -> {}: {e}", tmp.display(), dir.display()));
    fs::write(dir.join(".complete"), b"").expect("marking cache entry complete");
}

/// Hash of the files under `paths` (names and contents), for cache keys.
fn hash_tree(hasher: &mut Sha256, root: &Path) {
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        if entry.file_type().is_file() {
            hasher.update(
                fs::read(entry.path())
                    .unwrap_or_else(|e| panic!("reading {}: {e}", entry.path().display())),
            );
        }
        hasher.update([0]);
    }
}

fn short_hex(h: Sha256) -> String {
    hex::encode(&h.finalize()[..8])
}

/// The fixture repository ready for Portage: a copy of tests/fixtures/repo with Manifests
/// and metadata/md5-cache, and a DISTDIR with the source tarballs.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Location of the `farm-test` repository copy.
    pub repo: PathBuf,
    /// DISTDIR holding `<P>.tar.gz` for each directory in tests/fixtures/src.
    pub distdir: PathBuf,
    /// Content hash of the fixture sources (part of every cache key built on it).
    pub hash: String,
}

fn fixture_hash() -> String {
    let mut h = Sha256::new();
    h.update(CACHE_VERSION);
    hash_tree(&mut h, &crate_root().join("tests/fixtures"));
    // The code that renders configs and runs emerge: a change rebuilds cached PKGDIRs, so
    // tests never check stale output of older code.
    hash_tree(&mut h, &crate_root().join("src/profile"));
    hash_tree(&mut h, &crate_root().join("src/worker"));
    for t in [
        "make.conf.hbs",
        "repos.conf.hbs",
        "package.use.hbs",
        "broot-make.conf.hbs",
    ] {
        h.update(fs::read(crate_root().join("templates").join(t)).unwrap_or_default());
    }
    short_hex(h)
}

/// Prepares (once) and returns the fixture repository.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let hash = fixture_hash();
        let dir = cache_root().join(format!("fixture-{hash}"));
        build_once(&dir, prepare_fixture);
        Fixture {
            repo: dir.join("repo"),
            distdir: dir.join("distfiles"),
            hash,
        }
    })
}

fn prepare_fixture(tmp: &Path) {
    let src = crate_root().join("tests/fixtures");
    let repo = tmp.join("repo");
    let distdir = tmp.join("distfiles");
    copy_tree(&src.join("repo"), &repo);
    fs::create_dir_all(&distdir).expect("creating distdir");
    // Deterministic tarballs: same bytes every time, so Manifest DIST hashes are stable.
    for entry in fs::read_dir(src.join("src")).expect("reading tests/fixtures/src") {
        let entry = entry.expect("reading tests/fixtures/src");
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let tarball = distdir.join(format!("{name}.tar.gz"));
        run_ok(
            Command::new("tar")
                .args([
                    "--sort=name",
                    "--mtime=@0",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "-C",
                ])
                .arg(src.join("src"))
                .arg("-cf")
                .arg(tarball.with_extension(""))
                .arg(&name),
            "tar",
        );
        run_ok(
            Command::new("gzip")
                .args(["-n", "-9"])
                .arg(tarball.with_extension("")),
            "gzip",
        );
    }
    // A throw-away build root just to run egencache with the right config.
    let profile = load_profile("x86-64-v3");
    let root = BuildRoot::prepare(
        &profile,
        &tmp.join("egencache-root"),
        &BuildRootOptions {
            venv: venv(),
            repo_locations: BTreeMap::from([("farm-test".to_string(), repo.clone())]),
            distdir: Some(distdir.clone()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("preparing a build root for egencache: {e}"));
    // Manifests first (`ebuild ... manifest`, one ebuild per package directory: egencache
    // cannot read metadata of ebuilds without Manifests), then the md5-cache.
    let mut package_dirs: Vec<PathBuf> = walkdir::WalkDir::new(&repo)
        .min_depth(3)
        .max_depth(3)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "ebuild"))
        .map(|e| e.into_path())
        .collect();
    package_dirs.dedup_by(|a, b| a.parent() == b.parent());
    for ebuild in &package_dirs {
        run_ok(
            &mut root.portage_command("ebuild", [ebuild.as_os_str(), "manifest".as_ref()], &[]),
            "ebuild manifest",
        );
    }
    run_ok(
        &mut root.portage_command(
            "egencache",
            ["--update", "--repo", "farm-test", "--jobs", "2"],
            &[],
        ),
        "egencache --update",
    );
    assert!(
        repo.join("app-misc/hello/Manifest").is_file(),
        "egencache wrote no Manifest"
    );
    assert!(
        repo.join("metadata/md5-cache/app-misc/hello-1.0").is_file(),
        "egencache wrote no md5-cache"
    );
    fs::remove_dir_all(tmp.join("egencache-root")).expect("removing egencache root");
}

/// Copies a directory tree (files and directories; symlinks are recreated as links).
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", from.display()));
        let dest = to.join(
            entry
                .path()
                .strip_prefix(from)
                .expect("walkdir yields paths under its root"),
        );
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest).unwrap_or_else(|e| panic!("mkdir {}: {e}", dest.display()));
        } else if ft.is_symlink() {
            let target = fs::read_link(entry.path()).expect("reading symlink");
            std::os::unix::fs::symlink(target, &dest)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", dest.display()));
        } else {
            fs::copy(entry.path(), &dest)
                .unwrap_or_else(|e| panic!("copy {}: {e}", dest.display()));
        }
    }
}

/// Runs a command, panicking with its output if it fails. Returns stdout.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// gpg

/// A gpg key made by real gpg (ed25519, signing-capable primary, no passphrase).
#[derive(Debug, Clone)]
pub struct GpgKey {
    /// GNUPGHOME holding the secret key.
    pub home: PathBuf,
    /// Full fingerprint, upper-case hex.
    pub fingerprint: String,
    /// ASCII-armored public key.
    pub public_key_file: PathBuf,
    /// ASCII-armored secret key (no passphrase).
    pub secret_key_file: PathBuf,
    /// A world-readable GNUPGHOME that has the public key with ultimate ownertrust: what
    /// Portage needs as BINPKG_GPG_VERIFY_GPG_HOME to accept this key's signatures.
    pub verify_home: PathBuf,
}

impl GpgKey {
    /// Portage signing settings for a build root.
    pub fn portage_signing(&self) -> Signing {
        Signing {
            gpg_home: self.home.clone(),
            key_fingerprint: self.fingerprint.clone(),
            verify_home: self.verify_home.clone(),
            lock_file: self.home.with_extension("gpg.lock"),
        }
    }
}

/// Creates a key in `dir` (`dir/home`, `dir/verify-home`, `dir/public.asc`, `dir/secret.asc`).
/// `uid` like `Name <mail@example.invalid>`. Keep `dir` short (see [`short_tempdir`]): gpg-agent
/// puts its socket in the home. Stop the agent with [`stop_gpg_agent`] when done.
pub fn create_gpg_key(dir: &Path, uid: &str) -> GpgKey {
    let home = dir.join("home");
    let verify_home = dir.join("verify-home");
    for h in [&home, &verify_home] {
        fs::create_dir_all(h).unwrap_or_else(|e| panic!("mkdir {}: {e}", h.display()));
        set_mode(h, 0o700);
    }
    let gpg = |h: &Path| {
        let mut c = Command::new("gpg");
        c.arg("--batch").arg("--homedir").arg(h);
        c
    };
    run_ok(
        gpg(&home).args([
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "never",
        ]),
        "gpg --quick-gen-key",
    );
    let colons = run_ok(
        gpg(&home).args(["--with-colons", "--list-secret-keys"]),
        "gpg --list-secret-keys",
    );
    let fingerprint = colons
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .expect("gpg listed no fingerprint");
    let public_key_file = dir.join("public.asc");
    let secret_key_file = dir.join("secret.asc");
    let public = run_ok(
        gpg(&home).args(["--armor", "--export", &fingerprint]),
        "gpg --export",
    );
    fs::write(&public_key_file, &public).expect("writing public key");
    let secret = run_ok(
        gpg(&home).args([
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--armor",
            "--export-secret-keys",
            &fingerprint,
        ]),
        "gpg --export-secret-keys",
    );
    fs::write(&secret_key_file, &secret).expect("writing secret key");
    run_ok(
        gpg(&verify_home).arg("--import").arg(&public_key_file),
        "gpg --import",
    );
    let mut trust = gpg(&verify_home);
    trust
        .arg("--import-ownertrust")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = trust.spawn().expect("spawning gpg --import-ownertrust");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(format!("{fingerprint}:6:\n").as_bytes())
        .expect("writing ownertrust");
    let out = child.wait_with_output().expect("waiting for gpg");
    assert!(
        out.status.success(),
        "gpg --import-ownertrust failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = gpg(&verify_home).arg("--check-trustdb").output();
    // Portage runs the verifying gpg as nobody: the verify home must be readable by all.
    set_mode(&verify_home, 0o755);
    for entry in fs::read_dir(&verify_home).expect("listing verify home") {
        let entry = entry.expect("listing verify home");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            set_mode(&entry.path(), 0o644);
        }
    }
    GpgKey {
        home,
        fingerprint,
        public_key_file,
        secret_key_file,
        verify_home,
    }
}

/// The farm's test signing key, made once and shared by every test (and test binary).
pub fn signing_key() -> &'static GpgKey {
    static KEY: OnceLock<GpgKey> = OnceLock::new();
    KEY.get_or_init(|| {
        cached_key(
            "signing-key",
            "Farm Test Binpkg Signing <binpkg-signing@farm.example.invalid>",
        )
    })
}

/// A second, untrusted key ("rogue"), for negative tests.
pub fn rogue_key() -> &'static GpgKey {
    static KEY: OnceLock<GpgKey> = OnceLock::new();
    KEY.get_or_init(|| cached_key("rogue-key", "Rogue Signer <rogue@example.invalid>"))
}

/// A short, world-traversable directory for gpg homes: gpg-agent's socket lives in the home
/// and unix socket paths are limited to 107 bytes, too short for paths under target/.
pub fn short_dir() -> PathBuf {
    let mut h = Sha256::new();
    h.update(cache_root().to_string_lossy().as_bytes());
    let dir = std::env::temp_dir().join(format!("bf-{}", &short_hex(h)[..8]));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    set_mode(&dir, 0o755);
    dir
}

/// A temporary directory under [`short_dir`] (for throw-away gpg keys). Removed on drop.
pub fn short_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("k")
        .tempdir_in(short_dir())
        .expect("creating a temporary directory");
    set_mode(dir.path(), 0o755);
    dir
}

/// Stops the gpg-agent of a home started by gpg (key generation, signing).
pub fn stop_gpg_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home)
        .args(["--kill", "all"])
        .output();
}

fn cached_key(name: &str, uid: &str) -> GpgKey {
    let dir = short_dir().join(format!(
        "{name}-{}",
        &CACHE_VERSION[CACHE_VERSION.len() - 2..]
    ));
    build_once(&dir, |tmp| {
        let key = create_gpg_key(tmp, uid);
        fs::write(tmp.join("fingerprint"), &key.fingerprint).expect("writing fingerprint");
        // The agent was started for the temporary path; a new one starts under the final path.
        stop_gpg_agent(&key.home);
    });
    let fingerprint = fs::read_to_string(dir.join("fingerprint"))
        .unwrap_or_else(|e| panic!("reading {}/fingerprint: {e}", dir.display()));
    GpgKey {
        home: dir.join("home"),
        fingerprint: fingerprint.trim().to_string(),
        public_key_file: dir.join("public.asc"),
        secret_key_file: dir.join("secret.asc"),
        verify_home: dir.join("verify-home"),
    }
}

// ---------------------------------------------------------------------------------------
// build roots and built PKGDIRs

/// Options for a build root over the fixture repository.
#[derive(Debug, Clone, Default)]
pub struct RootOptions {
    pub signing: Option<GpgKey>,
    pub binpkg_format: Option<BinpkgFormat>,
    pub pkgdir: Option<PathBuf>,
}

/// Prepares a build root for `profile` (a name in profiles/) in `dir`, over the fixture repo.
pub fn fixture_build_root(profile: &str, dir: &Path, options: &RootOptions) -> BuildRoot {
    fixture_build_root_for(&load_profile(profile), dir, options)
}

/// Same, for an already loaded (possibly modified) profile.
pub fn fixture_build_root_for(profile: &Profile, dir: &Path, options: &RootOptions) -> BuildRoot {
    let fx = fixture();
    BuildRoot::prepare(
        profile,
        dir,
        &BuildRootOptions {
            venv: venv(),
            repo_locations: BTreeMap::from([("farm-test".to_string(), fx.repo.clone())]),
            distdir: Some(fx.distdir.clone()),
            pkgdir: options.pkgdir.clone(),
            binpkg_format: options.binpkg_format,
            signing: options.signing.as_ref().map(GpgKey::portage_signing),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("preparing build root {}: {e}", dir.display()))
}

/// Builds with the runner and panics with the log tail unless the build succeeded.
pub fn build_ok(root: &BuildRoot, atoms: &[&str]) -> BuildResult {
    let result = run_build(root, &BuildRequest::new(atoms.iter().copied()))
        .unwrap_or_else(|e| panic!("running emerge {atoms:?}: {e}"));
    assert!(
        result.success(),
        "emerge {atoms:?} for {} failed: {:?} {:?}\nlog {}:\n{}",
        root.profile.name,
        result.status,
        result.failure,
        result.log_path.display(),
        result.log_tail.join("\n")
    );
    result
}

/// A cached build over the fixture repository.
#[derive(Debug, Clone)]
pub struct FixtureBuild {
    /// The build root (config root, ROOT with the packages installed, logs). Use
    /// `root.portage_command(...)` to run emaint/emerge with the same configuration, and pass
    /// `PKGDIR` in its extra environment to point it at a copy of `pkgdir`.
    pub root: BuildRoot,
    /// PKGDIR with the binpkgs (and Portage's own Packages index). Read-only: copy it first.
    pub pkgdir: PathBuf,
    /// The signing key, for signed builds.
    pub key: Option<GpgKey>,
    /// The packages emerge built from source, in the order it built them (CATEGORY/PF).
    pub merged: Vec<String>,
    /// Binpkg path relative to PKGDIR and SHA-512, per built CPV, as the runner reported them.
    pub built: Vec<(String, String, String)>,
}

/// A PKGDIR of real emerge-built gpkgs of `atoms` (with their dependencies) for `profile`,
/// built once per distinct (fixture, profile, atoms, signed) and cached.
pub fn build_fixture_pkgdir(profile: &str, atoms: &[&str], signed: bool) -> PathBuf {
    build_fixture(profile, atoms, signed, BinpkgFormat::Gpkg).pkgdir
}

/// Like [`build_fixture_pkgdir`], with the build root and key, and a choice of format.
pub fn build_fixture(
    profile: &str,
    atoms: &[&str],
    signed: bool,
    format: BinpkgFormat,
) -> FixtureBuild {
    static BUILDS: Mutex<BTreeMap<String, FixtureBuild>> = Mutex::new(BTreeMap::new());
    let fx = fixture();
    let mut h = Sha256::new();
    h.update(&fx.hash);
    h.update(
        fs::read(profile_path(profile))
            .unwrap_or_else(|e| panic!("reading profile {profile}: {e}")),
    );
    let signing = signed.then(|| signing_key().clone());
    h.update(format!(
        "{atoms:?} signed={signed} format={} key={:?}",
        format.as_str(),
        signing.as_ref().map(|k| &k.fingerprint)
    ));
    let key = short_hex(h);
    // Held for the whole build: one build (and one re-render) of a root at a time.
    let mut builds = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = builds.get(&key) {
        return b.clone();
    }
    let dir = cache_root().join(format!("build-{profile}-{key}"));
    let options = RootOptions {
        signing: signing.clone(),
        binpkg_format: Some(format),
        pkgdir: None,
    };
    build_once(&dir, |tmp| {
        let root = fixture_build_root(profile, &tmp.join("root"), &options);
        let result = build_ok(&root, atoms);
        let merged: Vec<&str> = result
            .merged
            .iter()
            .filter(|m| !m.binary)
            .map(|m| m.cpv.as_str())
            .collect();
        fs::write(tmp.join("merged.txt"), merged.join("\n")).expect("writing merged.txt");
        let built: Vec<String> = result
            .built
            .iter()
            .map(|b| format!("{} {} {}", b.cpv, b.relative_path, b.sha512))
            .collect();
        fs::write(tmp.join("built.txt"), built.join("\n")).expect("writing built.txt");
    });
    // Re-render in place under the final path (the config names absolute paths).
    let root = fixture_build_root(profile, &dir.join("root"), &options);
    let read_lines = |name: &str| -> Vec<String> {
        fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("reading {}/{name}: {e}", dir.display()))
            .lines()
            .map(str::to_string)
            .collect()
    };
    let built = read_lines("built.txt")
        .iter()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect();
    let build = FixtureBuild {
        pkgdir: root.pkgdir(),
        root,
        key: signing,
        merged: read_lines("merged.txt"),
        built,
    };
    builds.insert(key, build.clone());
    build
}

// ---------------------------------------------------------------------------------------
// production nodes and binpkg inspection

/// A "production node" config root for `profile` in `dir` that installs binpkgs from
/// `binhost_uri` (http://127.0.0.1:PORT/...) and requires them to be signed by a key that
/// `trusted` trusts (FEATURES=binpkg-request-signature). Install with
/// `node.portage_command("emerge", ["--getbinpkgonly", ATOM], &[])`.
pub fn fixture_node_root(
    profile: &str,
    dir: &Path,
    binhost_uri: &str,
    trusted: &GpgKey,
) -> BuildRoot {
    let node = fixture_build_root(profile, dir, &RootOptions::default());
    let make_conf = dir.join("etc/portage/make.conf");
    let mut text = fs::read_to_string(&make_conf).expect("reading node make.conf");
    text.push_str(&format!(
        "\n# --- production node: signed binpkgs only ---\n\
         FEATURES=\"${{FEATURES}} binpkg-request-signature\"\n\
         BINPKG_GPG_VERIFY_GPG_HOME=\"{}\"\n\
         PORTAGE_TRUST_HELPER=\"\"\n",
        trusted.verify_home.display()
    ));
    fs::write(&make_conf, text).expect("writing node make.conf");
    fs::write(
        dir.join("etc/portage/binrepos.conf"),
        format!(
            "[farm]\npriority = 10\nsync-uri = {binhost_uri}\nverify-signature = true\nlocation = {}\n",
            dir.join("binhost-cache").display()
        ),
    )
    .expect("writing binrepos.conf");
    node
}

/// The `metadata/<KEY>` entries of a gpkg (text values, trailing newline removed), read with
/// the tar and zstd crates (independent of binfarm's own reader).
pub fn gpkg_metadata(path: &Path) -> BTreeMap<String, String> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut outer = tar::Archive::new(file);
    for entry in outer.entries().expect("reading gpkg") {
        let entry = entry.expect("reading gpkg member");
        let name = entry
            .path()
            .expect("member name")
            .to_string_lossy()
            .into_owned();
        if !name.ends_with("/metadata.tar.zst") {
            continue;
        }
        let decoder = zstd::stream::read::Decoder::new(entry).expect("zstd");
        let mut inner = tar::Archive::new(decoder);
        let mut map = BTreeMap::new();
        for m in inner.entries().expect("reading metadata.tar") {
            let mut m = m.expect("metadata member");
            let key = m
                .path()
                .expect("name")
                .to_string_lossy()
                .trim_start_matches("metadata/")
                .to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut m, &mut bytes).expect("reading metadata value");
            if let Ok(text) = String::from_utf8(bytes) {
                map.insert(key, text.trim_end_matches('\n').to_string());
            }
        }
        return map;
    }
    panic!("{}: no metadata.tar.zst member", path.display());
}

/// Member names of a tar file (the outer gpkg tar).
pub fn tar_members(path: &Path) -> Vec<String> {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut outer = tar::Archive::new(file);
    outer
        .entries()
        .expect("reading tar")
        .map(|e| {
            e.expect("tar member")
                .path()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// `python -m http.server` (from the venv) serving `dir` on 127.0.0.1; stopped by PID on drop.
pub struct HttpServer {
    child: std::process::Child,
    pub port: u16,
    /// Requests as the server logged them (stderr), e.g. `"GET /x/Packages HTTP/1.1" 200 -`.
    pub log: PathBuf,
}

impl HttpServer {
    pub fn start(dir: &Path, log: &Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log_file = fs::File::create(log).expect("creating http log");
        let child = Command::new(venv().join("bin/python"))
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("starting python -m http.server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        HttpServer {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
