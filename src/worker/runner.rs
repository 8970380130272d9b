//! The emerge runner: builds atoms in a build root with real `emerge --buildpkg --usepkg`,
//! streams the output to a log file (size-capped), enforces a total timeout and a
//! max-silent-time by killing emerge's whole process group, and reports what was built.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha512};

use super::buildroot::BuildRoot;
use super::WorkerError;

/// Limits of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Kill the build after this long in total.
    pub total_timeout: Option<Duration>,
    /// Kill the build when it writes no output for this long.
    pub max_silent: Option<Duration>,
    /// Bytes of output kept in the log file; the rest is counted and dropped.
    pub log_cap_bytes: u64,
    /// Time between SIGTERM and SIGKILL when a build is killed.
    pub kill_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total_timeout: Some(Duration::from_secs(6 * 3600)),
            max_silent: Some(Duration::from_secs(3600)),
            log_cap_bytes: 64 << 20,
            kill_grace: Duration::from_secs(5),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub atoms: Vec<String>,
    /// Take dependencies (and targets) from existing binpkgs when they fit (`--usepkg`).
    pub usepkg: bool,
    /// Extra environment for emerge (passed through to the ebuild environment).
    pub extra_env: Vec<(String, String)>,
    /// Extra emerge arguments (e.g. `--oneshot`, `--nodeps`).
    pub extra_args: Vec<String>,
    pub limits: Limits,
    /// Where the log goes; default `<build root>/log/binfarm/<time>-<atom>.log`.
    pub log_path: Option<PathBuf>,
    /// Set by another thread to stop the build (the job was cancelled or its lease revoked):
    /// emerge's process group is killed like on a timeout.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl BuildRequest {
    pub fn new<S: Into<String>>(atoms: impl IntoIterator<Item = S>) -> Self {
        BuildRequest {
            atoms: atoms.into_iter().map(Into::into).collect(),
            usepkg: true,
            limits: Limits::default(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildStatus {
    Success,
    /// emerge exited non-zero (see `failure`).
    Failed,
    /// Killed: the total timeout passed.
    TimedOut,
    /// Killed: no output for max-silent-time.
    Silent,
    /// Killed: `BuildRequest::cancel` was set.
    Cancelled,
}

/// A binpkg this build wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltPackage {
    /// CATEGORY/PF, e.g. `dev-libs/libhello-1.0`.
    pub cpv: String,
    pub path: PathBuf,
    /// Path relative to PKGDIR.
    pub relative_path: String,
    pub build_id: Option<u64>,
    pub size: u64,
    pub sha512: String,
}

/// One `>>> Emerging` line: the merge order emerge used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MergedPackage {
    pub cpv: String,
    pub repo: Option<String>,
    /// Installed from a binpkg rather than built.
    pub binary: bool,
}

/// Where a failed build failed, from emerge's `ERROR: CPV::REPO failed (PHASE phase)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub cpv: String,
    pub repo: Option<String>,
    pub phase: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildResult {
    pub profile: String,
    pub atoms: Vec<String>,
    pub status: BuildStatus,
    pub exit_code: Option<i32>,
    /// Signal that ended emerge, if any.
    pub signal: Option<i32>,
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,
    /// Merge order as emerge reported it.
    pub merged: Vec<MergedPackage>,
    /// Binpkgs built from source by this run. Empty when the build was killed.
    pub built: Vec<BuiltPackage>,
    pub failure: Option<Failure>,
    pub log_path: PathBuf,
    pub log_bytes: u64,
    pub log_truncated: bool,
    /// Last lines of output (for a one-screen report).
    pub log_tail: Vec<String>,
}

impl BuildResult {
    pub fn success(&self) -> bool {
        self.status == BuildStatus::Success
    }
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

const TAIL_LINES: usize = 40;

/// Output state shared between the reader thread and the supervisor.
struct OutputState {
    last_output: Instant,
    bytes_written: u64,
    bytes_total: u64,
    merged: Vec<MergedPackage>,
    failure: Option<Failure>,
    tail: std::collections::VecDeque<String>,
}

/// Runs emerge for `request` in `root` and waits for it (or kills it).
pub fn run_build(root: &BuildRoot, request: &BuildRequest) -> Result<BuildResult, WorkerError> {
    if request.atoms.is_empty() {
        return Err(WorkerError::NoAtoms);
    }
    let log_path = match &request.log_path {
        Some(p) => p.clone(),
        None => default_log_path(root, &request.atoms[0]),
    };
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| WorkerError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut log = std::fs::File::create(&log_path).map_err(|source| WorkerError::Io {
        path: log_path.clone(),
        source,
    })?;

    let pkgdir = root.pkgdir();
    let before = snapshot_binpkgs(&pkgdir);

    let mut args: Vec<String> = vec!["--buildpkg".into(), "--verbose".into()];
    if request.usepkg {
        args.push("--usepkg".into());
    }
    args.extend(request.extra_args.iter().cloned());
    args.extend(request.atoms.iter().cloned());
    let mut cmd = root.portage_command("emerge", &args, &request.extra_env);
    writeln!(
        log,
        "binfarm: profile {} in {}: emerge {}",
        root.profile.name,
        root.dir.display(),
        args.join(" ")
    )
    .map_err(|source| WorkerError::Io {
        path: log_path.clone(),
        source,
    })?;

    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| WorkerError::Spawn {
            program: "emerge".into(),
            source: std::io::Error::from(e),
        })?;
    let writer_err = writer.try_clone().map_err(|source| WorkerError::Spawn {
        program: "emerge".into(),
        source,
    })?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer_err));
    // Own process group: a timeout kills emerge and everything it started.
    cmd.process_group(0);

    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| WorkerError::Spawn {
        program: "emerge".into(),
        source,
    })?;
    // The parent's copies of the write end are in `cmd`; drop them so EOF arrives.
    drop(cmd);
    let pgid = Pid::from_raw(child.id() as i32);

    let state = Arc::new(Mutex::new(OutputState {
        last_output: Instant::now(),
        bytes_written: 0,
        bytes_total: 0,
        merged: Vec::new(),
        failure: None,
        tail: Default::default(),
    }));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    {
        let state = Arc::clone(&state);
        let cap = request.limits.log_cap_bytes;
        let mut pipe = std::fs::File::from(reader);
        std::thread::spawn(move || {
            let r = pump_output(&mut pipe, &mut log, cap, &state);
            let _ = done_tx.send(r);
        });
    }

    let mut killed: Option<BuildStatus> = None;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(WorkerError::Spawn {
                    program: "emerge".into(),
                    source,
                })
            }
        }
        if killed.is_none() {
            let silent_for = state
                .lock()
                .map(|s| s.last_output.elapsed())
                .unwrap_or_default();
            if request
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
            {
                killed = Some(BuildStatus::Cancelled);
            } else if request
                .limits
                .total_timeout
                .is_some_and(|t| started.elapsed() > t)
            {
                killed = Some(BuildStatus::TimedOut);
            } else if request.limits.max_silent.is_some_and(|t| silent_for > t) {
                killed = Some(BuildStatus::Silent);
            }
            if killed.is_some() {
                kill_group(pgid, &mut child, request.limits.kill_grace);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever is left in the group (background jobs of a phase) goes too.
    let _ = killpg(pgid, Signal::SIGKILL);
    let duration = started.elapsed();
    // The reader ends at EOF; it cannot hang on a process that left the group for long.
    let pump = done_rx.recv_timeout(Duration::from_secs(10));

    let state = state
        .lock()
        .map_err(|_| WorkerError::Internal("output reader panicked".into()))?;
    let mut tail: Vec<String> = state.tail.iter().cloned().collect();
    if let Some(kind) = killed {
        let msg = match kind {
            BuildStatus::TimedOut => format!(
                "binfarm: killed after the total timeout of {:?}",
                request.limits.total_timeout.unwrap_or_default()
            ),
            BuildStatus::Cancelled => "binfarm: killed: the build was cancelled".to_owned(),
            _ => format!(
                "binfarm: killed after {:?} without output",
                request.limits.max_silent.unwrap_or_default()
            ),
        };
        tail.push(msg.clone());
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log_path) {
            let _ = writeln!(f, "{msg}");
        }
    }
    if let Ok(Err(e)) = pump {
        tail.push(format!("binfarm: reading emerge output failed: {e}"));
    }

    let status = match killed {
        Some(kind) => kind,
        None if exit.success() => BuildStatus::Success,
        None => BuildStatus::Failed,
    };
    let built = if killed.is_some() {
        Vec::new()
    } else {
        collect_built(&pkgdir, &before, &state.merged)?
    };
    Ok(BuildResult {
        profile: root.profile.name.clone(),
        atoms: request.atoms.clone(),
        status,
        exit_code: exit.code(),
        signal: exit.signal(),
        duration,
        merged: state.merged.clone(),
        built,
        failure: if status == BuildStatus::Success {
            None
        } else {
            state.failure.clone()
        },
        log_path,
        log_bytes: state.bytes_total,
        log_truncated: state.bytes_total > state.bytes_written,
        log_tail: tail,
    })
}

fn default_log_path(root: &BuildRoot, first_atom: &str) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name: String = first_atom
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.host_path(&root.paths.logdir)
        .join("binfarm")
        .join(format!("{secs}-{name}.log"))
}

/// SIGTERM to the group, then SIGKILL after the grace period if emerge is still there.
fn kill_group(pgid: Pid, child: &mut std::process::Child, grace: Duration) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// Copies output to the log (up to `cap` bytes) and parses the lines that matter.
fn pump_output(
    pipe: &mut std::fs::File,
    log: &mut std::fs::File,
    cap: u64,
    state: &Mutex<OutputState>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut written: u64 = 0;
    let mut truncated_note = false;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        let room = cap.saturating_sub(written) as usize;
        let keep = room.min(n);
        if keep > 0 {
            log.write_all(&chunk[..keep])?;
            written += keep as u64;
        }
        if keep < n && !truncated_note {
            log.write_all(b"\nbinfarm: log size cap reached; further output is dropped\n")?;
            truncated_note = true;
        }
        partial.extend_from_slice(chunk);
        let Ok(mut st) = state.lock() else { break };
        st.last_output = Instant::now();
        st.bytes_total += n as u64;
        st.bytes_written = written;
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            observe_line(&mut st, line);
        }
        // A line longer than the buffer is not interesting for parsing; keep memory bounded.
        if partial.len() > 1 << 20 {
            partial.clear();
        }
    }
    log.flush()
}

fn observe_line(st: &mut OutputState, line: String) {
    if let Some(m) = parse_emerging(&line) {
        st.merged.push(m);
    } else if let Some(f) = parse_failure(&line) {
        if st.failure.is_none() {
            st.failure = Some(f);
        }
    }
    if st.tail.len() == TAIL_LINES {
        st.tail.pop_front();
    }
    st.tail.push_back(line);
}

/// `>>> Emerging (1 of 3) dev-libs/libhello-1.0::farm-test for /root/`
/// `>>> Emerging binary (1 of 3) dev-libs/libhello-1.0-1::farm-test for /root/`
pub fn parse_emerging(line: &str) -> Option<MergedPackage> {
    let rest = line.strip_prefix(">>> Emerging ")?;
    let (binary, rest) = match rest.strip_prefix("binary ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.strip_prefix('(')?;
    let (_, rest) = rest.split_once(") ")?;
    let spec = rest.split_whitespace().next()?;
    let (cpv, repo) = match spec.split_once("::") {
        Some((c, r)) => (c, Some(r.to_string())),
        None => (spec, None),
    };
    let cpv = if binary {
        strip_build_id(cpv)
    } else {
        cpv.to_string()
    };
    Some(MergedPackage { cpv, repo, binary })
}

/// ` * ERROR: app-misc/broken-1.0::farm-test failed (compile phase):`
pub fn parse_failure(line: &str) -> Option<Failure> {
    let rest = line
        .trim_start_matches([' ', '*'])
        .strip_prefix("ERROR: ")?;
    let (spec, rest) = rest.split_once(" failed (")?;
    let phase = rest.strip_suffix(" phase):")?.to_string();
    let (cpv, repo) = match spec.split_once("::") {
        Some((c, r)) => (c.to_string(), Some(r.to_string())),
        None => (spec.to_string(), None),
    };
    Some(Failure { cpv, repo, phase })
}

/// Binary packages are shown as CPV-BUILD_ID with binpkg-multi-instance: a trailing
/// `-<digits>` is a build id when what precedes it is a CPV and the whole is not one.
fn strip_build_id(shown: &str) -> String {
    use crate::atom::Cpv;
    if let Some((head, tail)) = shown.rsplit_once('-') {
        let digits = !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit());
        if digits && Cpv::parse(shown).is_err() && Cpv::parse(head).is_ok() {
            return head.to_string();
        }
    }
    shown.to_string()
}

type Snapshot = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

fn is_binpkg(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.ends_with(".gpkg.tar") || name.ends_with(".xpak") || name.ends_with(".tbz2")
}

fn snapshot_binpkgs(pkgdir: &Path) -> Snapshot {
    walkdir::WalkDir::new(pkgdir)
        .min_depth(2)
        .max_depth(3)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && is_binpkg(e.path()))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.into_path(), (m.len(), m.modified().ok())))
        })
        .collect()
}

/// Binpkgs new or changed since `before`, matched to the packages emerge built from source.
fn collect_built(
    pkgdir: &Path,
    before: &Snapshot,
    merged: &[MergedPackage],
) -> Result<Vec<BuiltPackage>, WorkerError> {
    let after = snapshot_binpkgs(pkgdir);
    let mut built = Vec::new();
    for m in merged.iter().filter(|m| !m.binary) {
        let Some((category, pf)) = m.cpv.split_once('/') else {
            continue;
        };
        let candidates = after.iter().filter(|(path, meta)| {
            before.get(*path) != Some(meta) && binpkg_matches(pkgdir, path, category, pf).is_some()
        });
        // With binpkg-multi-instance the newest instance is the one just written.
        let Some((path, _)) =
            candidates.max_by_key(|(p, _)| binpkg_matches(pkgdir, p, category, pf).flatten())
        else {
            continue;
        };
        let (size, sha512) = sha512_file(path)?;
        built.push(BuiltPackage {
            cpv: m.cpv.clone(),
            path: path.clone(),
            relative_path: path
                .strip_prefix(pkgdir)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned(),
            build_id: binpkg_matches(pkgdir, path, category, pf).flatten(),
            size,
            sha512,
        });
    }
    Ok(built)
}

/// `Some(build_id)` if `path` is a binpkg of CATEGORY/PF: `cat/pn/pf-N.gpkg.tar` (multi
/// instance), `cat/pf.gpkg.tar`, `cat/pf.tbz2`, `cat/pn/pf-N.xpak`.
fn binpkg_matches(pkgdir: &Path, path: &Path, category: &str, pf: &str) -> Option<Option<u64>> {
    let rel = path.strip_prefix(pkgdir).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|s| s.to_str()).collect();
    let name = *parts.last()?;
    if parts.first() != Some(&category) {
        return None;
    }
    let stem = name
        .strip_suffix(".gpkg.tar")
        .or_else(|| name.strip_suffix(".xpak"))
        .or_else(|| name.strip_suffix(".tbz2"))?;
    if stem == pf {
        return Some(None);
    }
    let id = stem.strip_prefix(pf)?.strip_prefix('-')?;
    id.parse::<u64>().ok().map(Some)
}

/// Size and hex SHA-512 of a file.
pub fn sha512_file(path: &Path) -> Result<(u64, String), WorkerError> {
    let mut f = std::fs::File::open(path).map_err(|source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = Sha512::new();
    let size = std::io::copy(&mut f, &mut hasher).map_err(|source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_emerging_lines() {
        let m =
            parse_emerging(">>> Emerging (2 of 8) dev-libs/libhello-1.0::farm-test for /x/root/")
                .unwrap();
        assert_eq!(
            m,
            MergedPackage {
                cpv: "dev-libs/libhello-1.0".into(),
                repo: Some("farm-test".into()),
                binary: false
            }
        );
        let b = parse_emerging(
            ">>> Emerging binary (1 of 2) dev-libs/libhello-1.0-1::farm-test for /x/root/",
        )
        .unwrap();
        assert_eq!(b.cpv, "dev-libs/libhello-1.0");
        assert!(b.binary);
        let r =
            parse_emerging(">>> Emerging binary (1 of 2) app-misc/foo-2.1-r3-12::farm-test for /")
                .unwrap();
        assert_eq!(r.cpv, "app-misc/foo-2.1-r3");
        let plain =
            parse_emerging(">>> Emerging binary (1 of 1) app-misc/foo-1::farm-test for /").unwrap();
        assert_eq!(plain.cpv, "app-misc/foo-1");
        assert!(parse_emerging(">>> Emerging is not this").is_none());
    }

    #[test]
    fn parses_failure_lines() {
        let f = parse_failure(" * ERROR: app-misc/broken-1.0::farm-test failed (compile phase):")
            .unwrap();
        assert_eq!(
            f,
            Failure {
                cpv: "app-misc/broken-1.0".into(),
                repo: Some("farm-test".into()),
                phase: "compile".into()
            }
        );
        assert!(parse_failure(" * ERROR: something else").is_none());
    }

    #[test]
    fn matches_binpkg_names() {
        let d = Path::new("/p");
        assert_eq!(
            binpkg_matches(
                d,
                Path::new("/p/app-misc/hello/hello-1.0-3.gpkg.tar"),
                "app-misc",
                "hello-1.0"
            ),
            Some(Some(3))
        );
        assert_eq!(
            binpkg_matches(
                d,
                Path::new("/p/app-misc/hello-1.0.gpkg.tar"),
                "app-misc",
                "hello-1.0"
            ),
            Some(None)
        );
        assert_eq!(
            binpkg_matches(
                d,
                Path::new("/p/app-misc/hello/hello-1.0.1-3.gpkg.tar"),
                "app-misc",
                "hello-1.0"
            ),
            None
        );
        assert_eq!(
            binpkg_matches(
                d,
                Path::new("/p/dev-libs/hello/hello-1.0-3.gpkg.tar"),
                "app-misc",
                "hello-1.0"
            ),
            None
        );
    }
}
