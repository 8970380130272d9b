//! Test support for the binpkg tests: a throw-away "farm" that runs real Portage
//! (emerge, Portage's Python gpkg code) in the ROOT layout, and real gpg keys.
//!
//! Layout under a temporary directory:
//!   repo/                  ebuild repository `binpkg-test` (app-misc/hello)
//!   <machine>/broot        PORTAGE_OVERRIDE_EPREFIX (private build-host config)
//!   <machine>/etc/portage  PORTAGE_CONFIGROOT
//!   <machine>/root         ROOT = SYSROOT
//!   gnupg/signer, gnupg/verify   signing home, and a keyring that trusts the key

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn venv() -> PathBuf {
    match std::env::var_os("BINFARM_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"),
    }
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

pub fn check_output(what: &str, out: &Output) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout), 60),
            tail(&String::from_utf8_lossy(&out.stderr), 60)
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A gpg key made with real gpg, and a keyring that trusts it fully (as Portage needs).
pub struct GpgKey {
    pub signing_home: PathBuf,
    pub verify_home: PathBuf,
    pub fingerprint: String,
    pub public_armored: PathBuf,
    pub secret_armored: PathBuf,
}

impl GpgKey {
    pub fn generate(dir: &Path, name: &str) -> GpgKey {
        let signing_home = dir.join(format!("{name}-signer"));
        let verify_home = dir.join(format!("{name}-verify"));
        for h in [&signing_home, &verify_home] {
            fs::create_dir_all(h).unwrap();
            fs::set_permissions(h, fs::Permissions::from_mode(0o700)).unwrap();
        }
        let gpg = |home: &Path, args: &[&str]| -> Output {
            Command::new("gpg")
                .arg("--batch")
                .arg("--homedir")
                .arg(home)
                .args(args)
                .output()
                .expect("running gpg (apt-get install gnupg)")
        };
        let uid = format!("Binpkg Test {name} <binpkg-{name}@example.invalid>");
        let out = gpg(
            &signing_home,
            &[
                "--passphrase",
                "",
                "--quick-gen-key",
                &uid,
                "ed25519",
                "sign",
                "never",
            ],
        );
        check_output("gpg --quick-gen-key", &out);
        let out = gpg(&signing_home, &["--with-colons", "--list-secret-keys"]);
        check_output("gpg --list-secret-keys", &out);
        let fingerprint = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("fingerprint in gpg output");
        let public_armored = dir.join(format!("{name}.pub.asc"));
        let out = gpg(&signing_home, &["--armor", "--export", &fingerprint]);
        check_output("gpg --export", &out);
        fs::write(&public_armored, &out.stdout).unwrap();
        let secret_armored = dir.join(format!("{name}.sec.asc"));
        let out = gpg(
            &signing_home,
            &[
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--armor",
                "--export-secret-keys",
                &fingerprint,
            ],
        );
        check_output("gpg --export-secret-keys", &out);
        fs::write(&secret_armored, &out.stdout).unwrap();

        let out = gpg(
            &verify_home,
            &["--import", public_armored.to_str().unwrap()],
        );
        check_output("gpg --import", &out);
        let mut trust = Command::new("gpg")
            .arg("--batch")
            .arg("--homedir")
            .arg(&verify_home)
            .arg("--import-ownertrust")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        trust
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{fingerprint}:6:\n").as_bytes())
            .unwrap();
        assert!(trust.wait().unwrap().success(), "gpg --import-ownertrust");
        let _ = gpg(&verify_home, &["--check-trustdb"]);
        // Portage runs gpg --verify as nobody:nogroup when root.
        fs::set_permissions(&verify_home, fs::Permissions::from_mode(0o755)).unwrap();
        for entry in fs::read_dir(&verify_home).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        GpgKey {
            signing_home,
            verify_home,
            fingerprint,
            public_armored,
            secret_armored,
        }
    }

    /// `gpg --verify` the way Portage does (BINPKG_GPG_VERIFY_BASE_COMMAND, status fd):
    /// true when gpg exits 0 with GOODSIG and full or ultimate trust.
    pub fn portage_style_verify(&self, signature: Option<&Path>, data: &[u8]) -> (bool, String) {
        let mut cmd = Command::new("gpg");
        cmd.args([
            "--verify",
            "--batch",
            "--no-tty",
            "--no-auto-check-trustdb",
            "--status-fd",
            "2",
        ])
        .arg("--homedir")
        .arg(&self.verify_home);
        match signature {
            Some(sig) => {
                cmd.arg(sig).arg("-");
            }
            None => {
                cmd.args(["--output", "-", "-"]);
            }
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(data).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let status = String::from_utf8_lossy(&out.stderr).into_owned();
        let good = status.lines().any(|l| l.starts_with("[GNUPG:] GOODSIG"));
        let trusted = status.lines().any(|l| {
            l.starts_with("[GNUPG:] TRUST_ULTIMATE") || l.starts_with("[GNUPG:] TRUST_FULLY")
        });
        (out.status.success() && good && trusted, status)
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        for home in [&self.signing_home, &self.verify_home] {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home)
                .args(["--kill", "all"])
                .output();
        }
    }
}

const HELLO_EBUILD: &str = r#"EAPI=8
DESCRIPTION="Tiny program for binpkg tests"
HOMEPAGE="https://example.invalid/hello"
S="${WORKDIR}"
LICENSE="MIT"
SLOT="0"
KEYWORDS="amd64"
src_unpack() { cp "${FILESDIR}"/hello.c "${S}"/ || die; }
src_compile() { ${CC} ${CFLAGS} ${LDFLAGS} -o hello hello.c || die; }
src_install() {
	dobin hello
	dosym hello /usr/bin/hello-again
	insinto /usr/share/hello
	# a basename of 120 characters: the image tar needs GNU long names
	echo long > "${T}/$(printf 'n%.0s' {1..120})" || die
	doins "${T}/$(printf 'n%.0s' {1..120})"
}
"#;

const HELLO_C: &str =
    "#include <stdio.h>\nint main(void) { puts(\"hello from binpkg test\"); return 0; }\n";

/// A temporary farm: ebuild repository, gpg key, machines.
pub struct Farm {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub compat_bin: PathBuf,
    pub key: GpgKey,
}

impl Farm {
    pub fn new() -> Farm {
        let venv = venv();
        assert!(
            venv.join("bin/emerge").exists(),
            "real Portage is needed: {} has no bin/emerge (run scripts/setup.sh or set BINFARM_VENV)",
            venv.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("binpkg-farm.")
            .tempdir()
            .unwrap();
        // gpg verification runs as nobody: every directory above the keyring must be
        // searchable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let repo = dir.path().join("repo");
        write(&repo.join("profiles/repo_name"), "binpkg-test\n");
        write(&repo.join("profiles/categories"), "app-misc\n");
        write(&repo.join("profiles/arch.list"), "amd64\n");
        write(
            &repo.join("metadata/layout.conf"),
            "masters =\nthin-manifests = true\nsign-manifests = false\nprofile-formats = portage-2\n",
        );
        write(&repo.join("profiles/test/amd64/eapi"), "8\n");
        write(
            &repo.join("profiles/test/amd64/make.defaults"),
            concat!(
                "ARCH=\"amd64\"\nACCEPT_KEYWORDS=\"amd64\"\nACCEPT_LICENSE=\"*\"\n",
                "CHOST=\"x86_64-pc-linux-gnu\"\nCHOST_amd64=\"x86_64-pc-linux-gnu\"\n",
                "ABI=\"amd64\"\nDEFAULT_ABI=\"amd64\"\nLIBDIR_amd64=\"lib64\"\n",
                "ELIBC=\"glibc\"\nKERNEL=\"linux\"\nUSERLAND=\"GNU\"\n",
                "IUSE_IMPLICIT=\"prefix prefix-guest prefix-stack\"\n",
                "USE_EXPAND=\"ELIBC KERNEL USERLAND\"\n",
                "USE_EXPAND_IMPLICIT=\"ARCH ELIBC KERNEL USERLAND\"\n",
                "USE_EXPAND_UNPREFIXED=\"ARCH\"\nUSE_EXPAND_VALUES_ARCH=\"amd64\"\n",
                "USE_EXPAND_VALUES_ELIBC=\"glibc\"\nUSE_EXPAND_VALUES_KERNEL=\"linux\"\n",
                "USE_EXPAND_VALUES_USERLAND=\"GNU\"\n"
            ),
        );
        write(&repo.join("licenses/MIT"), "MIT license placeholder\n");
        write(&repo.join("app-misc/hello/hello-1.0.ebuild"), HELLO_EBUILD);
        write(&repo.join("app-misc/hello/files/hello.c"), HELLO_C);

        let compat_bin = dir.path().join("compat-bin");
        fs::create_dir_all(&compat_bin).unwrap();
        // Portage's unpack calls gtar, which Debian does not have.
        let tar = ["/usr/bin/tar", "/bin/tar"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("tar");
        symlink(tar, &compat_bin.join("gtar"));

        let key = GpgKey::generate(&dir.path().join("gnupg"), "farm");
        Farm {
            dir,
            repo,
            compat_bin,
            key,
        }
    }

    /// A machine (broot + config root + ROOT) with `make_conf` appended to the common part.
    pub fn machine(&self, name: &str, make_conf: &str) -> PathBuf {
        let m = self.dir.path().join(name);
        let venv = venv();
        let broot = m.join("broot");
        for d in [
            "etc/portage/repos.conf",
            "share/portage/config/sets",
            "var/tmp",
            "var/cache/binpkgs",
        ] {
            fs::create_dir_all(broot.join(d)).unwrap();
        }
        for f in ["make.globals", "binrepos.conf", "sets/portage.conf"] {
            symlink(
                &venv.join("share/portage/config").join(f),
                &broot.join("share/portage/config").join(f),
            );
        }
        let repos_conf = format!(
            "[DEFAULT]\nmain-repo = binpkg-test\n[binpkg-test]\nlocation = {}\n",
            self.repo.display()
        );
        let profile = self.repo.join("profiles/test/amd64");
        for conf_root in [&broot, &m] {
            fs::create_dir_all(conf_root.join("etc/portage/repos.conf")).unwrap();
            symlink(&profile, &conf_root.join("etc/portage/make.profile"));
            write(
                &conf_root.join("etc/portage/repos.conf/test.conf"),
                &repos_conf,
            );
        }
        let no_sandbox = "FEATURES=\"${FEATURES} -sandbox -usersandbox -userpriv -usersync -userfetch -pid-sandbox -network-sandbox -ipc-sandbox -news\"\n";
        write(
            &broot.join("etc/portage/make.conf"),
            &format!(
                "PORTAGE_USERNAME=\"root\"\nPORTAGE_GRPNAME=\"root\"\n{no_sandbox}PKGDIR=\"{b}/var/cache/binpkgs\"\nPORTAGE_TMPDIR=\"{b}/var/tmp\"\nDISTDIR=\"{d}/distfiles\"\n",
                b = broot.display(),
                d = self.dir.path().display()
            ),
        );
        for d in ["root", "pkgdir", "tmp", "log/build"] {
            fs::create_dir_all(m.join(d)).unwrap();
        }
        let common = format!(
            concat!(
                "PORTAGE_USERNAME=\"root\"\nPORTAGE_GRPNAME=\"root\"\n",
                "PORTAGE_INST_UID=\"0\"\nPORTAGE_INST_GID=\"0\"\n{no_sandbox}",
                "DISTDIR=\"{dist}/distfiles\"\nPKGDIR=\"{m}/pkgdir\"\nPORTAGE_TMPDIR=\"{m}/tmp\"\n",
                "EMERGE_LOG_DIR=\"{m}/log\"\nPORTAGE_LOGDIR=\"{m}/log/build\"\n",
                "EMERGE_WARNING_DELAY=\"0\"\nCLEAN_DELAY=\"0\"\n",
                "CHOST=\"x86_64-pc-linux-gnu\"\nCFLAGS=\"-O2 -pipe\"\nCXXFLAGS=\"${{CFLAGS}}\"\n",
                "CC=\"gcc\"\nMAKEOPTS=\"-j2\"\n",
                "BINPKG_GPG_VERIFY_GPG_HOME=\"{verify}\"\n",
                "BINPKG_GPG_SIGNING_GPG_HOME=\"{signer}\"\n",
                "BINPKG_GPG_SIGNING_KEY=\"0x{fpr}\"\n",
                "BINPKG_GPG_SIGNING_DIGEST=\"SHA512\"\n",
                "BINPKG_GPG_SIGNING_BASE_COMMAND=\"/usr/bin/flock {lock} /usr/bin/gpg --sign --armor --batch --pinentry-mode loopback [PORTAGE_CONFIG]\"\n",
            ),
            no_sandbox = no_sandbox,
            dist = self.dir.path().display(),
            m = m.display(),
            verify = self.key.verify_home.display(),
            signer = self.key.signing_home.display(),
            fpr = self.key.fingerprint,
            lock = self.dir.path().join("gpg.lock").display(),
        );
        write(
            &m.join("etc/portage/make.conf"),
            &format!("{common}{make_conf}"),
        );
        m
    }

    /// A Portage command run "on" machine `m`.
    pub fn portage(&self, m: &Path, program: &str) -> Command {
        let venv = venv();
        let mut cmd = Command::new(venv.join("bin").join(program));
        cmd.env_clear()
            .env("HOME", self.dir.path())
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .env("NOCOLOR", "true")
            .env(
                "PATH",
                format!(
                    "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.compat_bin.display(),
                    venv.join("bin").display()
                ),
            )
            .env("PORTAGE_OVERRIDE_EPREFIX", m.join("broot"))
            .env("EPREFIX", "")
            .env("PORTAGE_CONFIGROOT", m)
            .env("ROOT", m.join("root"))
            .env("SYSROOT", m.join("root"));
        cmd
    }

    /// `emerge --oneshot --buildpkgonly <atom>` and the one binpkg it made.
    pub fn build(&self, m: &Path, atom: &str, env: &[(&str, &str)]) -> PathBuf {
        let mut cmd = self.portage(m, "emerge");
        cmd.args(["--oneshot", "--buildpkgonly", atom]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running emerge");
        check_output(&format!("emerge --buildpkgonly {atom}"), &out);
        let pkgdir = env
            .iter()
            .find(|(k, _)| *k == "PKGDIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| m.join("pkgdir"));
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&pkgdir) {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".gpkg.tar") || name.ends_with(".xpak") || name.ends_with(".tbz2") {
                found.push(entry.path().to_owned());
            }
        }
        assert_eq!(
            found.len(),
            1,
            "expected one binpkg in {}: {found:?}",
            pkgdir.display()
        );
        found.pop().unwrap()
    }

    /// Portage's own gpkg code (portage.gpkg) checks a package: with
    /// `binpkg-request-signature` it requires and gpg-verifies every signature.
    /// Returns the PF it read from the metadata, or the error Portage raised.
    pub fn portage_reads_gpkg(
        &self,
        m: &Path,
        gpkg: &Path,
        require_signature: bool,
    ) -> Result<String, String> {
        let script = r#"
import sys, portage
from portage.gpkg import gpkg
settings = portage.settings
try:
    package = gpkg(settings, None, sys.argv[1])
    metadata = package.get_metadata()
    package._verify_binpkg()
except Exception as e:
    print("PORTAGE-ERROR %s: %s" % (type(e).__name__, e))
    sys.exit(3)
print("PF=" + metadata["PF"].decode().strip())
print("SIGNED=%s" % package.signature_exist)
"#;
        let mut cmd = self.portage(m, "python");
        cmd.arg("-c").arg(script).arg(gpkg);
        cmd.env(
            "FEATURES",
            if require_signature {
                "binpkg-request-signature"
            } else {
                "-binpkg-request-signature"
            },
        );
        let out = cmd.output().expect("running Portage's python");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let pf = stdout
                .lines()
                .find_map(|l| l.strip_prefix("PF="))
                .unwrap_or("")
                .to_string();
            Ok(pf)
        } else {
            Err(format!(
                "{stdout}{}",
                tail(&String::from_utf8_lossy(&out.stderr), 20)
            ))
        }
    }
}
