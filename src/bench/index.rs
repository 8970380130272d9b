//! `binfarm bench index`: binfarm's PKGDIR indexer and signer against Portage's.
//!
//! N signed gpkgs (~20 KiB each, different content per package, realistic metadata) are
//! written with a throw-away farm key. On that directory, `binfarm::index::update_pkgdir`
//! (in-process, checking signatures against the farm keyring) and `emaint binhost --fix`
//! (real Portage from the venv, FEATURES=binpkg-request-signature, verifying with gpg) are
//! timed cold (no Packages file) and warm (index current), median of a few runs each.
//! Then signing M unsigned gpkgs: binfarm's `sign_in_place` against Portage's `gpkg-sign`.
//! Both sides must index all N packages (and sign all M) for the figures to be printed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::BenchError;
use crate::binpkg::{self, write_gpkg, GpkgSource, WriteOptions};
use crate::index::{update_pkgdir, IndexOptions, PACKAGES_FILE, PACKAGES_GZ_FILE};
use crate::profile::{Profile, Signing};
use crate::sign::{generate_signing_key, Keyring, SigningKey};
use crate::worker::{BuildRoot, BuildRootOptions};

/// Above this many packages emaint is not run (it would take many minutes); binfarm is.
pub const EMAINT_MAX_PACKAGES: usize = 2000;

const CATEGORIES: [&str; 5] = ["app-misc", "dev-libs", "net-misc", "sys-apps", "x11-libs"];

/// What to measure.
#[derive(Debug, Clone)]
pub struct IndexBenchConfig {
    /// Signed gpkgs in the PKGDIR.
    pub packages: usize,
    /// Runs per measurement (the median is reported).
    pub runs: usize,
    /// Unsigned gpkgs signed by each signer.
    pub sign_packages: usize,
    /// The venv with Portage (`bin/emaint`, `bin/gpkg-sign`).
    pub venv: PathBuf,
    /// The profile of the Portage environment (its repository is the fixture repo).
    pub profile: PathBuf,
    /// Where the temporary directory goes (None: the system's). Keep it short: gpg-agent
    /// puts its socket in the gpg homes.
    pub temp_parent: Option<PathBuf>,
}

impl IndexBenchConfig {
    /// Defaults: venv from BINFARM_VENV, else `./.venv`, else the crate's; same for profiles/.
    pub fn new(packages: usize) -> IndexBenchConfig {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let local_or_crate = |rel: &str| {
            let local = PathBuf::from(rel);
            if local.exists() {
                // Absolute: the build root links to venv files by this path.
                std::path::absolute(&local).unwrap_or(local)
            } else {
                crate_dir.join(rel)
            }
        };
        let venv = std::env::var_os("BINFARM_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| local_or_crate(".venv"));
        IndexBenchConfig {
            packages,
            runs: 3,
            sign_packages: 20,
            venv,
            profile: local_or_crate("profiles/x86-64-v3.toml"),
            temp_parent: None,
        }
    }
}

/// One comparison; `portage` is Err(reason) when Portage's side was not measured.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub binfarm: Duration,
    pub portage: Result<Duration, String>,
}

impl Comparison {
    fn fmt_line(&self, f: &mut fmt::Formatter<'_>, label: &str, tool: &str) -> fmt::Result {
        let ours = self.binfarm.as_secs_f64();
        match &self.portage {
            Ok(theirs) => {
                let theirs = theirs.as_secs_f64();
                let ratio = if ours > 0.0 {
                    theirs / ours
                } else {
                    f64::INFINITY
                };
                writeln!(
                    f,
                    "{label}: binfarm {ours:.3} s, {tool} {theirs:.3} s, ratio {ratio:.1}x"
                )
            }
            Err(reason) => writeln!(
                f,
                "{label}: binfarm {ours:.3} s, {tool}: not measured ({reason})"
            ),
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct IndexBenchReport {
    pub packages: usize,
    pub runs: usize,
    pub average_package_bytes: u64,
    /// Seconds to write the N signed packages (setup, for scale).
    pub write_time: Duration,
    pub cold: Comparison,
    pub warm: Comparison,
    pub sign_packages: usize,
    /// Total time to sign `sign_packages` unsigned gpkgs one by one.
    pub sign: Comparison,
}

impl fmt::Display for IndexBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} signed gpkgs, {:.1} KiB average, written by binfarm in {:.3} s; medians of {} runs",
            self.packages,
            self.average_package_bytes as f64 / 1024.0,
            self.write_time.as_secs_f64(),
            self.runs
        )?;
        self.cold
            .fmt_line(f, "index cold", "emaint binhost --fix")?;
        self.warm
            .fmt_line(f, "index warm", "emaint binhost --fix")?;
        self.sign.fmt_line(
            f,
            &format!("sign {} unsigned gpkgs", self.sign_packages),
            "gpkg-sign",
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_owned(),
        source,
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn run_output(command: &mut Command, what: &str) -> Result<Output, BenchError> {
    let out = command.output().map_err(|e| BenchError::Command {
        command: what.to_owned(),
        detail: format!("cannot start: {e}"),
    })?;
    if !out.status.success() {
        return Err(BenchError::Command {
            command: what.to_owned(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(out)
}

/// A package to generate.
struct PackageSpec {
    category: &'static str,
    pn: String,
    pf: String,
}

impl PackageSpec {
    fn new(index: usize) -> PackageSpec {
        let pn = format!("bench{index:05}");
        let pf = format!("{pn}-1.{}.{}", index % 7, index % 13);
        PackageSpec {
            category: CATEGORIES[index % CATEGORIES.len()],
            pn,
            pf,
        }
    }

    fn relative_path(&self) -> PathBuf {
        Path::new(self.category)
            .join(&self.pn)
            .join(format!("{}-1.gpkg.tar", self.pf))
    }

    fn metadata(&self, index: usize, image_size: usize) -> BTreeMap<String, Vec<u8>> {
        let dep = if index == 0 {
            String::new()
        } else {
            let prev = PackageSpec::new(index - 1);
            format!(
                ">={}/{}-1.0 ssl? ( dev-libs/openssl:0= )",
                prev.category, prev.pn
            )
        };
        let build_time = 1_764_000_000 + index as u64;
        let values: [(&str, String); 24] = [
            ("CATEGORY", self.category.to_owned()),
            ("PF", self.pf.clone()),
            ("SLOT", "0".into()),
            ("EAPI", "8".into()),
            ("KEYWORDS", "amd64 ~arm64".into()),
            ("LICENSE", "MIT".into()),
            (
                "DESCRIPTION",
                format!("Benchmark package number {index} for the index benchmark"),
            ),
            ("HOMEPAGE", format!("https://example.invalid/{}", self.pn)),
            (
                "USE",
                "abi_x86_64 amd64 elibc_glibc kernel_linux ssl".into(),
            ),
            ("IUSE", "+ssl doc test".into()),
            ("CHOST", "x86_64-pc-linux-gnu".into()),
            ("CBUILD", "x86_64-pc-linux-gnu".into()),
            ("CFLAGS", "-O2 -pipe -march=x86-64-v3".into()),
            ("CXXFLAGS", "-O2 -pipe -march=x86-64-v3".into()),
            ("LDFLAGS", "-Wl,-O1 -Wl,--as-needed".into()),
            ("BUILD_ID", "1".into()),
            ("BUILD_TIME", build_time.to_string()),
            ("DEPEND", dep.clone()),
            ("RDEPEND", dep),
            ("RESTRICT", "!test? ( test )".into()),
            ("DEFINED_PHASES", "compile install".into()),
            ("FEATURES", "binpkg-multi-instance buildpkg".into()),
            ("SIZE", image_size.to_string()),
            ("repository", "farm-test".into()),
        ];
        values
            .into_iter()
            .map(|(k, v)| (k.to_owned(), format!("{v}\n").into_bytes()))
            .collect()
    }
}

/// Fills `image` with ~20 KiB of package-specific files; returns their total size.
fn fill_image(image: &Path, spec: &PackageSpec, rng: &mut StdRng) -> Result<usize, BenchError> {
    if image.exists() {
        fs::remove_dir_all(image).map_err(io(image))?;
    }
    let data_dir = image.join("usr/share").join(&spec.pn);
    let bin_dir = image.join("usr/bin");
    let doc_dir = image.join("usr/share/doc").join(&spec.pf);
    for d in [&data_dir, &bin_dir, &doc_dir] {
        fs::create_dir_all(d).map_err(io(d))?;
    }
    // Random bytes do not compress: the package stays ~20 KiB.
    let mut data = vec![0u8; 16 * 1024];
    rng.fill(&mut data[..]);
    let script = format!("#!/bin/sh\necho '{} from the index benchmark'\n", spec.pf);
    let readme = format!(
        "{}\n\n{}\n",
        spec.pf,
        "Lorem ipsum dolor sit amet. ".repeat(140)
    );
    let files: [(PathBuf, &[u8]); 3] = [
        (data_dir.join("data.bin"), &data),
        (bin_dir.join(&spec.pn), script.as_bytes()),
        (doc_dir.join("README"), readme.as_bytes()),
    ];
    let mut size = 0;
    for (path, bytes) in files {
        fs::write(&path, bytes).map_err(io(&path))?;
        size += bytes.len();
    }
    Ok(size)
}

/// Writes packages `range` into `pkgdir`; returns their total size in bytes.
fn write_packages(
    pkgdir: &Path,
    scratch: &Path,
    range: std::ops::Range<usize>,
    key: Option<&SigningKey>,
    rng: &mut StdRng,
) -> Result<(Vec<PathBuf>, u64), BenchError> {
    let image = scratch.join("image");
    let mut paths = Vec::new();
    let mut total = 0;
    for index in range {
        let spec = PackageSpec::new(index);
        let image_size = fill_image(&image, &spec, rng)?;
        let metadata = spec.metadata(index, image_size);
        let dest = pkgdir.join(spec.relative_path());
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let top_dir = format!("{}-1", spec.pf);
        write_gpkg(
            &dest,
            &GpkgSource {
                top_dir: &top_dir,
                image_dir: &image,
                metadata: &metadata,
            },
            &WriteOptions {
                signing_key: key,
                zstd_threads: 1,
                ..WriteOptions::default()
            },
        )?;
        total += fs::metadata(&dest).map_err(io(&dest))?.len();
        paths.push(dest);
    }
    Ok((paths, total))
}

fn remove_index(pkgdir: &Path) -> Result<(), BenchError> {
    for name in [PACKAGES_FILE, PACKAGES_GZ_FILE] {
        let path = pkgdir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// The `PACKAGES:` header of an index file.
fn packages_header(pkgdir: &Path) -> Result<usize, BenchError> {
    let path = pkgdir.join(PACKAGES_FILE);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("PACKAGES: "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| BenchError::Check(format!("{}: no PACKAGES header", path.display())))
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.arg("--batch").arg("--homedir").arg(home);
    c.stdin(Stdio::null());
    c
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BenchError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// gpg homes for Portage: `sign` holds the farm's secret key (for gpkg-sign), `verify`
/// trusts it ultimately and is world-readable (Portage runs the verifying gpg as nobody).
struct GpgHomes {
    sign: PathBuf,
    verify: PathBuf,
}

impl GpgHomes {
    fn create(dir: &Path, secret_armored: &str, key: &SigningKey) -> Result<GpgHomes, BenchError> {
        let homes = GpgHomes {
            sign: dir.join("s"),
            verify: dir.join("v"),
        };
        for h in [&homes.sign, &homes.verify] {
            fs::create_dir_all(h).map_err(io(h))?;
            set_mode(h, 0o700)?;
        }
        let secret_file = dir.join("secret.asc");
        fs::write(&secret_file, secret_armored).map_err(io(&secret_file))?;
        let public_file = dir.join("public.asc");
        fs::write(&public_file, key.public_key_armored()?).map_err(io(&public_file))?;
        run_output(
            gpg(&homes.sign)
                .args([
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    "",
                    "--import",
                ])
                .arg(&secret_file),
            "gpg --import (secret key)",
        )?;
        fs::remove_file(&secret_file).map_err(io(&secret_file))?;
        let trust = format!("{}:6:\n", key.fingerprint());
        for h in [&homes.sign, &homes.verify] {
            run_output(
                gpg(h).arg("--import").arg(&public_file),
                "gpg --import (public key)",
            )?;
            let mut child = gpg(h)
                .arg("--import-ownertrust")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| BenchError::Command {
                    command: "gpg --import-ownertrust".into(),
                    detail: format!("cannot start: {e}"),
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(trust.as_bytes())
                    .map_err(io(Path::new("gpg --import-ownertrust stdin")))?;
            }
            let out = child
                .wait_with_output()
                .map_err(io(Path::new("gpg --import-ownertrust")))?;
            if !out.status.success() {
                return Err(BenchError::Command {
                    command: "gpg --import-ownertrust".into(),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            // Computes the validity now, while writable; gpg as nobody cannot later.
            let _ = gpg(h).arg("--check-trustdb").output();
        }
        set_mode(&homes.verify, 0o755)?;
        for entry in fs::read_dir(&homes.verify).map_err(io(&homes.verify))? {
            let entry = entry.map_err(io(&homes.verify))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                set_mode(&entry.path(), 0o644)?;
            }
        }
        Ok(homes)
    }

    fn stop_agents(&self) {
        for h in [&self.sign, &self.verify] {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(h)
                .args(["--kill", "all"])
                .output();
        }
    }
}

/// Runs the benchmark in a temporary directory (removed afterwards).
pub fn bench_index(config: &IndexBenchConfig) -> Result<IndexBenchReport, BenchError> {
    if config.packages == 0 || config.runs == 0 {
        return Err(BenchError::Check(
            "need at least one package and one run".into(),
        ));
    }
    let tmp = match &config.temp_parent {
        Some(parent) => tempfile::Builder::new().prefix("bfb").tempdir_in(parent),
        None => tempfile::Builder::new().prefix("bfb").tempdir(),
    }
    .map_err(io(Path::new("temporary directory")))?;
    let top = tmp.path();
    set_mode(top, 0o755)?;

    let secret = generate_signing_key("Farm Bench Signing <bench@farm.example.invalid>")?;
    let key = SigningKey::from_armored_str(&secret, None)?;
    let keyring = Keyring::from_armored(key.public_key_armored()?.as_bytes())?;
    let homes = GpgHomes::create(&top.join("g"), &secret, &key)?;
    let result = run(config, top, &key, &keyring, &homes);
    homes.stop_agents();
    result
}

fn run(
    config: &IndexBenchConfig,
    top: &Path,
    key: &SigningKey,
    keyring: &Keyring,
    homes: &GpgHomes,
) -> Result<IndexBenchReport, BenchError> {
    let mut rng = StdRng::seed_from_u64(20261126);
    let pkgdir = top.join("pkgdir");
    let started = Instant::now();
    let (_, total_bytes) = write_packages(&pkgdir, top, 0..config.packages, Some(key), &mut rng)?;
    let write_time = started.elapsed();

    // binfarm, in-process.
    let options = IndexOptions {
        keyring: Some(keyring),
        ..IndexOptions::default()
    };
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..config.runs {
        remove_index(&pkgdir)?;
        let started = Instant::now();
        let report = update_pkgdir(&pkgdir, &options)?;
        cold.push(started.elapsed());
        if report.entries != config.packages || !report.rejected.is_empty() {
            return Err(BenchError::Check(format!(
                "binfarm indexed {} of {} packages, rejected: {:?}",
                report.entries, config.packages, report.rejected
            )));
        }
    }
    for _ in 0..config.runs {
        let started = Instant::now();
        let report = update_pkgdir(&pkgdir, &options)?;
        warm.push(started.elapsed());
        if report.entries != config.packages || report.reused != config.packages {
            return Err(BenchError::Check(format!(
                "binfarm warm run: {} entries, {} reused of {}",
                report.entries, report.reused, config.packages
            )));
        }
    }
    let binfarm_cold = median(cold);
    let binfarm_warm = median(warm);

    // Portage, from the venv, in a build root like the workers use.
    let profile = Profile::load(&config.profile)?;
    let repo = config
        .profile
        .parent()
        .unwrap_or(Path::new("."))
        .join("../tests/fixtures/repo");
    let root = BuildRoot::prepare(
        &profile,
        &top.join("root"),
        &BuildRootOptions {
            venv: config.venv.clone(),
            repo_locations: BTreeMap::from([("farm-test".to_string(), repo)]),
            pkgdir: Some(pkgdir.clone()),
            signing: Some(Signing {
                gpg_home: homes.sign.clone(),
                key_fingerprint: key.fingerprint(),
                verify_home: homes.verify.clone(),
                lock_file: top.join("g/gpg.lock"),
            }),
            ..BuildRootOptions::default()
        },
    )?;
    let (emaint_cold, emaint_warm) = if config.packages > EMAINT_MAX_PACKAGES {
        let reason = format!("more than {EMAINT_MAX_PACKAGES} packages");
        (Err(reason.clone()), Err(reason))
    } else {
        let (c, w) = time_emaint(&root, &pkgdir, homes, config)?;
        (Ok(c), Ok(w))
    };

    let sign = bench_sign(config, top, key, keyring, &root, &mut rng)?;
    Ok(IndexBenchReport {
        packages: config.packages,
        runs: config.runs,
        average_package_bytes: total_bytes / config.packages as u64,
        write_time,
        cold: Comparison {
            binfarm: binfarm_cold,
            portage: emaint_cold,
        },
        warm: Comparison {
            binfarm: binfarm_warm,
            portage: emaint_warm,
        },
        sign_packages: config.sign_packages,
        sign,
    })
}

/// Cold and warm medians of `emaint binhost --fix` with signatures required.
fn time_emaint(
    root: &BuildRoot,
    pkgdir: &Path,
    homes: &GpgHomes,
    config: &IndexBenchConfig,
) -> Result<(Duration, Duration), BenchError> {
    let env = [
        (
            "FEATURES".to_string(),
            "binpkg-request-signature".to_string(),
        ),
        (
            "BINPKG_GPG_VERIFY_GPG_HOME".to_string(),
            homes.verify.to_string_lossy().into_owned(),
        ),
    ];
    let emaint = || -> Result<Duration, BenchError> {
        let mut command = root.portage_command("emaint", ["binhost", "--fix"], &env);
        let started = Instant::now();
        run_output(&mut command, "emaint binhost --fix")?;
        let elapsed = started.elapsed();
        let indexed = packages_header(pkgdir)?;
        if indexed != config.packages {
            return Err(BenchError::Check(format!(
                "emaint binhost --fix indexed {indexed} of {} packages",
                config.packages
            )));
        }
        Ok(elapsed)
    };
    let mut cold = Vec::new();
    for _ in 0..config.runs {
        remove_index(pkgdir)?;
        cold.push(emaint()?);
    }
    let mut warm = Vec::new();
    for _ in 0..config.runs {
        warm.push(emaint()?);
    }
    Ok((median(cold), median(warm)))
}

/// Signs M unsigned gpkgs with binfarm and with gpkg-sign (total times); both results
/// must verify against the farm keyring.
fn bench_sign(
    config: &IndexBenchConfig,
    top: &Path,
    key: &SigningKey,
    keyring: &Keyring,
    root: &BuildRoot,
    rng: &mut StdRng,
) -> Result<Comparison, BenchError> {
    let count = config.sign_packages;
    let ours_dir = top.join("sign-binfarm");
    let (ours, _) = write_packages(&ours_dir, top, 0..count, None, rng)?;
    let theirs_dir = top.join("sign-portage");
    let mut theirs = Vec::new();
    for path in &ours {
        let relative = path.strip_prefix(&ours_dir).unwrap_or(path);
        let dest = theirs_dir.join(relative);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::copy(path, &dest).map_err(io(&dest))?;
        theirs.push(dest);
    }

    let started = Instant::now();
    for path in &ours {
        binpkg::sign_in_place(path, key)?;
    }
    let binfarm = started.elapsed();
    for path in &ours {
        binpkg::verify(path, keyring)?;
    }

    let portage = time_gpkg_sign(root, &theirs, keyring);
    Ok(Comparison { binfarm, portage })
}

/// Total time of `gpkg-sign --allow-unsigned` over `paths`, or why it was not measured.
fn time_gpkg_sign(
    root: &BuildRoot,
    paths: &[PathBuf],
    keyring: &Keyring,
) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    for path in paths {
        let mut command = root.portage_command(
            "gpkg-sign",
            [std::ffi::OsStr::new("--allow-unsigned"), path.as_os_str()],
            &[],
        );
        let started = Instant::now();
        run_output(&mut command, "gpkg-sign").map_err(|e| e.to_string())?;
        total += started.elapsed();
        binpkg::verify(path, keyring)
            .map_err(|e| format!("gpkg-sign's output does not verify with binfarm: {e}"))?;
    }
    Ok(total)
}
