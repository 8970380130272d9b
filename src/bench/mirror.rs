//! `binfarm bench mirror`: the HTTP mirror (`binfarm mirror`, the real binary, access log
//! on) against Debian's nginx serving the same tree on 127.0.0.1, both driven by `wrk`.
//!
//! The tree: N plain files of random bytes (sizes log-uniform between 30 KiB and 2 MiB,
//! seeded) at `<profile>/<channel>/<cat>/<pn>/<pf>-1.gpkg.tar`, and beside them
//! `Packages`/`Packages.gz` written by binfarm's index writer, one entry per file with its
//! real SIZE and hashes. nginx gets its own config in the temporary directory (listen on a
//! free 127.0.0.1 port, root = the same tree, sendfile on, access log on, pid and logs in
//! the temporary directory) and runs in the foreground as the current user; binfarm's
//! tokio runtime gets as many worker threads as nginx gets worker processes.
//!
//! Scenarios (each run once per round per server, alternating which server goes first;
//! the median round by requests/s is reported): GETs spread over every binpkg, GETs of
//! Packages.gz, conditional GETs of Packages.gz answered 304 (If-Modified-Since, and
//! If-None-Match with each server's own ETag), and binpkg GETs from 500 clients, during
//! which the servers' memory is sampled from /proc/PID/status (VmRSS; nginx: master and
//! workers summed). Each scenario's bytes per response are checked against what the
//! scenario must send, so a server answering 200 instead of 304 (or 404s) cannot pass.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha1::Digest;

use super::BenchError;
use crate::index::{write_index_files, Entry, PackagesIndex, PACKAGES_FILE, PACKAGES_GZ_FILE};

const PROFILE_DIR: &str = "bench-v3/stable";
const CATEGORIES: [&str; 6] = [
    "app-misc",
    "dev-libs",
    "net-misc",
    "sys-apps",
    "x11-libs",
    "media-libs",
];
const MIN_FILE: u64 = 30 * 1024;
const MAX_FILE: u64 = 2 * 1024 * 1024;

/// What to measure.
#[derive(Debug, Clone)]
pub struct MirrorBenchConfig {
    /// Length of one wrk run (whole seconds, at least 1).
    pub duration: Duration,
    /// Measured runs per scenario and server; the median is reported.
    pub rounds: usize,
    /// Concurrent connections of the throughput and 304 scenarios.
    pub connections: usize,
    /// Concurrent connections of the memory scenario.
    pub memory_clients: usize,
    /// Binpkg-sized files in the tree.
    pub files: usize,
    /// nginx worker processes = binfarm's tokio worker threads.
    pub workers: usize,
    /// wrk threads.
    pub wrk_threads: usize,
    /// The binfarm binary run as `binfarm mirror`.
    pub binfarm: PathBuf,
    pub nginx: PathBuf,
    pub wrk: PathBuf,
    /// Where the temporary directory goes (None: the system's).
    pub temp_parent: Option<PathBuf>,
}

impl MirrorBenchConfig {
    /// The figures: 256 connections, 500 clients for memory, 200 files, 10 s runs,
    /// 3 rounds, one server worker per CPU; binfarm is this executable.
    pub fn new() -> Result<MirrorBenchConfig, BenchError> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let binfarm = std::env::current_exe().map_err(io(Path::new("current executable")))?;
        Ok(MirrorBenchConfig {
            duration: Duration::from_secs(10),
            rounds: 3,
            connections: 256,
            memory_clients: 500,
            files: 200,
            workers: cpus,
            wrk_threads: cpus,
            binfarm,
            nginx: PathBuf::from("nginx"),
            wrk: PathBuf::from("wrk"),
            temp_parent: None,
        })
    }
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1000)
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 10s, 500ms or 2m"))?;
    Ok(Duration::from_millis(value.saturating_mul(scale_ms)))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_owned(),
        source,
    }
}

fn command_error(command: &str, detail: impl Into<String>) -> BenchError {
    BenchError::Command {
        command: command.to_owned(),
        detail: detail.into(),
    }
}

/// The generated tree.
struct Tree {
    /// The mirror root (`--root` of binfarm, nginx's `root`).
    root: PathBuf,
    /// URL paths of the binpkgs.
    blob_paths: Vec<String>,
    blob_bytes: u64,
    packages_len: u64,
    packages_gz_len: u64,
    packages_gz_modified: SystemTime,
}

impl Tree {
    fn packages_gz_path() -> String {
        format!("/{PROFILE_DIR}/{PACKAGES_GZ_FILE}")
    }

    fn mean_blob(&self) -> u64 {
        self.blob_bytes / self.blob_paths.len().max(1) as u64
    }
}

/// Writes the files and the index (see the module docs).
fn make_tree(root: &Path, files: usize) -> Result<Tree, BenchError> {
    let dir = root.join(PROFILE_DIR);
    let mut rng = StdRng::seed_from_u64(0x6d69_7272_6f72);
    let mut index = PackagesIndex::default();
    for (key, value) in [
        ("ARCH", "amd64"),
        ("CHOST", "x86_64-pc-linux-gnu"),
        ("PROFILE", "default/linux/amd64/23.0"),
        ("TTL", "600"),
        ("VERSION", "0"),
    ] {
        index.header.insert(key.into(), value.into());
    }
    let mut blob_paths = Vec::with_capacity(files);
    let mut blob_bytes = 0;
    let (low, high) = ((MIN_FILE as f64).ln(), (MAX_FILE as f64).ln());
    let mut buffer = Vec::new();
    for number in 0..files {
        let category = CATEGORIES[number % CATEGORIES.len()];
        let pn = format!("pkg{number:04}");
        let pf = format!("{pn}-{}.{}", 1 + number % 5, number % 11);
        let relative = format!("{category}/{pn}/{pf}-1.gpkg.tar");
        let size = rng.gen_range(low..high).exp().round() as u64;
        let size = size.clamp(MIN_FILE, MAX_FILE);
        buffer.resize(size as usize, 0);
        rng.fill(&mut buffer[..]);
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fs::write(&path, &buffer).map_err(io(&path))?;

        let mut entry = Entry::default();
        for (key, value) in [
            ("CPV", format!("{category}/{pf}")),
            ("BUILD_ID", "1".into()),
            ("BUILD_TIME", (1_790_000_000 + number).to_string()),
            ("DEFINED_PHASES", "compile configure install prepare".into()),
            ("EAPI", "8".into()),
            ("KEYWORDS", "amd64".into()),
            ("LICENSE", "MIT".into()),
            ("MD5", hex::encode(md5::Md5::digest(&buffer))),
            ("PATH", relative.clone()),
            ("RDEPEND", "dev-libs/openssl:0/3 sys-libs/zlib".into()),
            ("SHA1", hex::encode(sha1::Sha1::digest(&buffer))),
            ("SIZE", size.to_string()),
            ("SLOT", "0".into()),
            (
                "USE",
                "abi_x86_64 amd64 elibc_glibc kernel_linux ssl".into(),
            ),
        ] {
            entry.set(key, value);
        }
        index.entries.push(entry);
        blob_paths.push(format!("/{PROFILE_DIR}/{relative}"));
        blob_bytes += size;
    }
    write_index_files(&dir, &index, 1_790_000_000, true)?;
    let packages = fs::metadata(dir.join(PACKAGES_FILE)).map_err(io(&dir))?;
    let gz_path = dir.join(PACKAGES_GZ_FILE);
    let gz = fs::metadata(&gz_path).map_err(io(&gz_path))?;
    Ok(Tree {
        root: root.to_owned(),
        blob_paths,
        blob_bytes,
        packages_len: packages.len(),
        packages_gz_len: gz.len(),
        packages_gz_modified: gz.modified().map_err(io(&gz_path))?,
    })
}

/// A server process under test; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// Processes whose memory counts (nginx: master and workers).
    pids: Vec<u32>,
    version: String,
}

impl Server {
    fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    let port = listener
        .local_addr()
        .map_err(io(Path::new("127.0.0.1:0")))?
        .port();
    Ok(port)
}

fn wait_listening(server: &mut Server, log: &Path) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(server.addr).is_ok() {
            return Ok(());
        }
        let exited = server.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log_text = fs::read_to_string(log).unwrap_or_default();
            return Err(command_error(
                server.name,
                format!(
                    "not listening on {} ({}); {}:\n{log_text}",
                    server.addr,
                    exited.map_or("timed out".to_string(), |s| s.to_string()),
                    log.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Child processes of `parent` (from /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name is in parentheses and may hold spaces.
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn start_nginx(config: &MirrorBenchConfig, tree: &Tree, work: &Path) -> Result<Server, BenchError> {
    let prefix = work.join("nginx");
    let temp = prefix.join("temp");
    fs::create_dir_all(&temp).map_err(io(&temp))?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Run by root, nginx would switch its workers to `nobody`, who cannot read the
    // temporary directory: keep the current user (the directive is ignored otherwise).
    let is_root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let user_line = if is_root { "user root root;\n" } else { "" };
    let p = |name: &str| prefix.join(name).display().to_string();
    let conf = format!(
        "# Written by binfarm bench mirror.
{user_line}worker_processes {workers};
daemon off;
pid {pid};
error_log {error_log} warn;
events {{
    worker_connections 4096;
}}
http {{
    default_type application/octet-stream;
    types {{
        application/gzip gz;
        application/x-tar tar;
    }}
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    # binfarm (hyper) does not close busy keep-alive connections either.
    keepalive_requests 1000000;
    client_body_temp_path {temp}/client;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen {addr};
        root {root};
        location / {{
        }}
    }}
}}
",
        workers = config.workers,
        pid = p("nginx.pid"),
        error_log = p("error.log"),
        access_log = p("access.log"),
        temp = temp.display(),
        root = tree.root.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf).map_err(io(&conf_path))?;
    let version = Command::new(&config.nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .map_err(|e| {
            command_error(
                "nginx -v",
                format!(
                    "cannot start {}: {e} (scripts/setup.sh installs nginx)",
                    config.nginx.display()
                ),
            )
        })?;
    let error_log = prefix.join("error.log");
    let child = Command::new(&config.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(&error_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| command_error("nginx", format!("cannot start: {e}")))?;
    let mut server = Server {
        name: "nginx",
        pids: vec![child.id()],
        child,
        addr,
        version: version
            .strip_prefix("nginx version: ")
            .unwrap_or(&version)
            .to_string(),
    };
    wait_listening(&mut server, &error_log)?;
    // Workers fork right after the listen sockets open; wait until all are there.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let workers = children_of(server.child.id());
        if workers.len() >= config.workers || Instant::now() > deadline {
            server.pids.extend(workers);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

fn start_binfarm(
    config: &MirrorBenchConfig,
    tree: &Tree,
    work: &Path,
) -> Result<Server, BenchError> {
    let access_log = work.join("binfarm-access.log");
    let mut child = Command::new(&config.binfarm)
        .args(["mirror", "--listen", "127.0.0.1:0", "--root"])
        .arg(&tree.root)
        .arg("--access-log")
        .arg(&access_log)
        .env("TOKIO_WORKER_THREADS", config.workers.to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            command_error(
                "binfarm mirror",
                format!("cannot start {}: {e}", config.binfarm.display()),
            )
        })?;
    let stderr = child.stderr.take();
    let mut server = Server {
        name: "binfarm mirror",
        pids: vec![child.id()],
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        version: format!("binfarm {}", env!("CARGO_PKG_VERSION")),
    };
    let Some(stderr) = stderr else {
        return Err(command_error("binfarm mirror", "no stderr pipe"));
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(pos) = line.find("http://") {
                    let addr = line[pos + 7..].trim_end_matches('/').to_string();
                    break addr.parse::<SocketAddr>().map_err(|e| {
                        command_error("binfarm mirror", format!("address {addr:?}: {e}"))
                    })?;
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            _ => {
                return Err(command_error(
                    "binfarm mirror",
                    format!("exited before listening:\n{seen}"),
                ))
            }
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    server.addr = addr;
    Ok(server)
}

/// The answer to one raw request.
struct Probe {
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body_len: usize,
}

impl Probe {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One raw HTTP/1.1 GET with `Connection: close`.
fn probe(addr: SocketAddr, path: &str, headers: &[(&str, String)]) -> Result<Probe, BenchError> {
    let what = format!("GET http://{addr}{path}");
    let fail = |detail: String| command_error(&what, detail);
    let mut stream = TcpStream::connect(addr).map_err(|e| fail(e.to_string()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(e.to_string()))?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| fail(e.to_string()))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| fail("no end of headers in the answer".into()))?;
    let text = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail(format!("bad status line in {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Probe {
        status,
        headers,
        body_len: raw.len() - split - 4,
    })
}

/// What one scenario asks and what each response must look like.
#[derive(Clone)]
struct Scenario {
    label: String,
    connections: usize,
    /// Paths requested in turn.
    paths: Vec<String>,
    /// Request headers (per server: ETags differ).
    headers: Vec<(String, String)>,
    expect_status: u16,
    /// Mean bytes per response (headers included) must lie in this range.
    bytes_per_response: (f64, f64),
    sample_memory: bool,
}

/// wrk's summary of one run.
#[derive(Debug, Clone, Copy, Default)]
struct WrkFigures {
    requests: u64,
    bytes: u64,
    seconds: f64,
    socket_errors: u64,
    status_errors: u64,
}

impl WrkFigures {
    fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-9) / 1e6
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => out.push_str(&format!("\\{}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// The wrk script: requests spread over `paths` (each thread starting elsewhere), and a
/// machine-readable summary line.
fn wrk_script(scenario: &Scenario) -> String {
    let mut script = String::from("-- Written by binfarm bench mirror.\n");
    if scenario.paths.len() > 1 {
        script.push_str("local paths = {\n");
        for path in &scenario.paths {
            script.push_str(&format!("  {},\n", lua_string(path)));
        }
        script.push_str(
            "}
local thread_number = 0
function setup(thread)
  thread:set(\"number\", thread_number)
  thread_number = thread_number + 1
end
local requests = {}
local next_request = 1
function init(args)
  for i, path in ipairs(paths) do
    requests[i] = wrk.format(\"GET\", path)
  end
  next_request = 1 + ((tonumber(number) or 0) * 37) % #requests
end
function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end
",
        );
    }
    script.push_str(
        "function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(\"BINFARM-BENCH requests=%d bytes=%d duration_us=%d socket_errors=%d status_errors=%d\\n\",
    summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
",
    );
    script
}

fn parse_wrk(stdout: &str) -> Option<WrkFigures> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BINFARM-BENCH "))?;
    let mut figures = WrkFigures::default();
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "requests" => figures.requests = value,
            "bytes" => figures.bytes = value,
            "duration_us" => figures.seconds = value as f64 / 1e6,
            "socket_errors" => figures.socket_errors = value,
            "status_errors" => figures.status_errors = value,
            _ => {}
        }
    }
    Some(figures)
}

/// Samples the summed VmRSS of `pids` until stopped; returns the largest sum in bytes.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| status_kib(pid, "VmRSS:"))
        .sum::<u64>()
        * 1024
}

impl MemorySampler {
    fn start(pids: Vec<u32>) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(&pids)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(&pids), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        MemorySampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// One wrk run against one server.
struct RunResult {
    figures: WrkFigures,
    /// Largest sampled RSS during the run (None: not sampled).
    peak_rss: Option<u64>,
}

fn run_wrk(
    config: &MirrorBenchConfig,
    server: &Server,
    scenario: &Scenario,
    duration: Duration,
    work: &Path,
) -> Result<RunResult, BenchError> {
    let script_path = work.join("bench.lua");
    fs::write(&script_path, wrk_script(scenario)).map_err(io(&script_path))?;
    let first_path = scenario.paths.first().map_or("/", String::as_str);
    let mut command = Command::new(&config.wrk);
    command
        .arg("-t")
        .arg(
            config
                .wrk_threads
                .min(scenario.connections)
                .max(1)
                .to_string(),
        )
        .arg("-c")
        .arg(scenario.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .args(["--timeout", "10s", "-s"])
        .arg(&script_path);
    for (name, value) in &scenario.headers {
        command.arg("-H").arg(format!("{name}: {value}"));
    }
    command.arg(format!("http://{}{first_path}", server.addr));
    command.stdin(Stdio::null());
    let sampler = scenario
        .sample_memory
        .then(|| MemorySampler::start(server.pids.clone()));
    let output = command.output().map_err(|e| {
        command_error(
            "wrk",
            format!(
                "cannot start {}: {e} (scripts/setup.sh installs wrk)",
                config.wrk.display()
            ),
        )
    });
    let peak_rss = sampler.map(MemorySampler::finish);
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(command_error(
            "wrk",
            format!(
                "{}: {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    let figures = parse_wrk(&stdout)
        .ok_or_else(|| command_error("wrk", format!("no summary line in:\n{stdout}")))?;
    let what = format!("{} against {}", scenario.label, server.name);
    if figures.requests == 0 {
        return Err(BenchError::Check(format!("{what}: no request completed")));
    }
    if figures.status_errors > 0 {
        return Err(BenchError::Check(format!(
            "{what}: {} responses with status >= 400",
            figures.status_errors
        )));
    }
    let per_response = figures.bytes as f64 / figures.requests as f64;
    let (low, high) = scenario.bytes_per_response;
    if per_response < low || per_response > high {
        return Err(BenchError::Check(format!(
            "{what}: {per_response:.0} bytes per response, expected {low:.0}..{high:.0} \
             (status {} responses)",
            scenario.expect_status
        )));
    }
    Ok(RunResult { figures, peak_rss })
}

/// Per server figures of one scenario (median round by requests/s).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFigures {
    pub requests_per_second: f64,
    pub megabytes_per_second: f64,
    /// Peak sampled RSS over every round of the scenario (bytes), when sampled.
    pub peak_rss: Option<u64>,
    /// Socket errors (connect/read/write/timeout) in the median round.
    pub socket_errors: u64,
}

#[derive(Debug, Clone)]
pub struct ScenarioFigures {
    pub label: String,
    pub connections: usize,
    pub binfarm: ServerFigures,
    pub nginx: ServerFigures,
}

impl ScenarioFigures {
    /// binfarm requests/s over nginx's.
    pub fn ratio(&self) -> f64 {
        self.binfarm.requests_per_second / self.nginx.requests_per_second.max(1e-9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    Blobs,
    PackagesGz,
    NotModifiedSince,
    NoneMatch,
    Memory,
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct MirrorBenchReport {
    pub files: usize,
    pub blob_bytes: u64,
    pub mean_blob: u64,
    pub packages_len: u64,
    pub packages_gz_len: u64,
    pub workers: usize,
    pub wrk_threads: usize,
    pub duration: Duration,
    pub rounds: usize,
    pub nginx_version: String,
    pub wrk_version: String,
    pub scenarios: Vec<(ScenarioKind, ScenarioFigures)>,
    /// binfarm's VmHWM at the end (bytes): its peak RSS over the whole benchmark.
    pub binfarm_hwm: Option<u64>,
}

impl MirrorBenchReport {
    pub fn scenario(&self, kind: ScenarioKind) -> Option<&ScenarioFigures> {
        self.scenarios
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

impl fmt::Display for MirrorBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "tree: {} binpkg-sized files of random bytes, 30 KiB-2 MiB log-uniform \
             (mean {:.0} KiB, {:.1} MB in all), Packages {:.1} KiB and Packages.gz {:.1} KiB \
             written by binfarm's index writer",
            self.files,
            self.mean_blob as f64 / 1024.0,
            mb(self.blob_bytes),
            self.packages_len as f64 / 1024.0,
            self.packages_gz_len as f64 / 1024.0,
        )?;
        writeln!(
            f,
            "servers: binfarm mirror (TOKIO_WORKER_THREADS={}, plus tokio's blocking pool for \
             first lookups and the access-log thread; access log on) vs {} (worker_processes {}, \
             sendfile on, tcp_nopush on, access_log on); same tree, 127.0.0.1",
            self.workers, self.nginx_version, self.workers
        )?;
        writeln!(
            f,
            "load: {} with {} threads, {} s per run, median of {} rounds (servers alternate); \
             MB = 10^6 bytes incl. headers; RSS sampled every 20 ms (nginx: master + workers)",
            self.wrk_version,
            self.wrk_threads,
            self.duration.as_secs(),
            self.rounds
        )?;
        writeln!(f)?;
        let rss = |r: Option<u64>| r.map_or("-".to_string(), |b| format!("{:.1} MB", mb(b)));
        writeln!(
            f,
            "{:<34} {:>5} | {:>10} {:>8} {:>9} | {:>10} {:>8} {:>9} | {:>6}",
            "scenario",
            "conns",
            "binfarm/s",
            "MB/s",
            "peak RSS",
            "nginx/s",
            "MB/s",
            "peak RSS",
            "ratio"
        )?;
        writeln!(f, "{}", "-".repeat(114))?;
        for (_, s) in &self.scenarios {
            writeln!(
                f,
                "{:<34} {:>5} | {:>10.0} {:>8.1} {:>9} | {:>10.0} {:>8.1} {:>9} | {:>6.2}",
                s.label,
                s.connections,
                s.binfarm.requests_per_second,
                s.binfarm.megabytes_per_second,
                rss(s.binfarm.peak_rss),
                s.nginx.requests_per_second,
                s.nginx.megabytes_per_second,
                rss(s.nginx.peak_rss),
                s.ratio()
            )?;
        }
        let errors: Vec<String> = self
            .scenarios
            .iter()
            .filter(|(_, s)| s.binfarm.socket_errors + s.nginx.socket_errors > 0)
            .map(|(_, s)| {
                format!(
                    "{}: binfarm {}, nginx {}",
                    s.label, s.binfarm.socket_errors, s.nginx.socket_errors
                )
            })
            .collect();
        if !errors.is_empty() {
            writeln!(f, "socket errors (wrk): {}", errors.join("; "))?;
        }
        writeln!(f)?;
        writeln!(f, "targets:")?;
        for kind in [ScenarioKind::Blobs, ScenarioKind::PackagesGz] {
            if let Some(s) = self.scenario(kind) {
                writeln!(
                    f,
                    "  throughput ratio binfarm/nginx >= 0.9, {} ({} conns): {:.2} {}",
                    s.label,
                    s.connections,
                    s.ratio(),
                    verdict(s.ratio() >= 0.9)
                )?;
            }
        }
        for kind in [ScenarioKind::NotModifiedSince, ScenarioKind::NoneMatch] {
            if let Some(s) = self.scenario(kind) {
                let rate = s.binfarm.requests_per_second;
                writeln!(
                    f,
                    "  304 answers >= 20,000/s, {}: {rate:.0}/s {}",
                    s.label,
                    verdict(rate >= 20_000.0)
                )?;
            }
        }
        if let Some(s) = self.scenario(ScenarioKind::Memory) {
            let peak = s.binfarm.peak_rss.unwrap_or(0);
            writeln!(
                f,
                "  server memory under {} clients < 200 MB: peak VmRSS {:.1} MB {} \
                 (VmHWM at the end: {}; the kernel updates it lazily)",
                s.connections,
                mb(peak),
                verdict(peak < 200_000_000),
                rss(self.binfarm_hwm)
            )?;
        }
        Ok(())
    }
}

fn median_round(mut runs: Vec<RunResult>) -> ServerFigures {
    let peak_rss = runs.iter().filter_map(|r| r.peak_rss).max();
    runs.sort_by(|a, b| {
        a.figures
            .requests_per_second()
            .total_cmp(&b.figures.requests_per_second())
    });
    let median = runs
        .get(runs.len() / 2)
        .map(|r| r.figures)
        .unwrap_or_default();
    ServerFigures {
        requests_per_second: median.requests_per_second(),
        megabytes_per_second: median.megabytes_per_second(),
        peak_rss,
        socket_errors: median.socket_errors,
    }
}

/// Runs the benchmark in a temporary directory (removed afterwards).
pub fn bench_mirror(config: &MirrorBenchConfig) -> Result<MirrorBenchReport, BenchError> {
    if config.rounds == 0 || config.files == 0 || config.workers == 0 {
        return Err(BenchError::Check(
            "need at least one round, one file and one worker".into(),
        ));
    }
    if config.duration < Duration::from_secs(1) {
        return Err(BenchError::Check(
            "wrk runs last at least 1 s (--duration 1s)".into(),
        ));
    }
    let tmp = match &config.temp_parent {
        Some(parent) => tempfile::Builder::new()
            .prefix("bfmirror")
            .tempdir_in(parent),
        None => tempfile::Builder::new().prefix("bfmirror").tempdir(),
    }
    .map_err(io(Path::new("temporary directory")))?;
    let work = tmp.path();
    let tree = make_tree(&work.join("mirror"), config.files)?;
    let wrk_version = Command::new(&config.wrk)
        .arg("--version")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map_err(|e| {
            command_error(
                "wrk --version",
                format!(
                    "cannot start {}: {e} (scripts/setup.sh installs wrk)",
                    config.wrk.display()
                ),
            )
        })?;

    let nginx = start_nginx(config, &tree, work)?;
    let binfarm = start_binfarm(config, &tree, work)?;
    let servers = [&nginx, &binfarm];
    let scenarios = scenarios(config, &tree, &servers)?;

    // Warm-up (page cache, allocators, connection pools): not measured.
    for server in servers {
        let (_, warmup) = &scenarios[0];
        run_wrk(
            config,
            server,
            &warmup[server_index(server)],
            Duration::from_secs(1),
            work,
        )?;
    }

    let mut figures = Vec::new();
    for (kind, per_server) in &scenarios {
        let mut runs: [Vec<RunResult>; 2] = [Vec::new(), Vec::new()];
        for round in 0..config.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let server = servers[i];
                runs[i].push(run_wrk(
                    config,
                    server,
                    &per_server[server_index(server)],
                    config.duration,
                    work,
                )?);
            }
        }
        let [nginx_runs, binfarm_runs] = runs;
        figures.push((
            *kind,
            ScenarioFigures {
                label: per_server[0].label.clone(),
                connections: per_server[0].connections,
                binfarm: median_round(binfarm_runs),
                nginx: median_round(nginx_runs),
            },
        ));
    }
    let binfarm_hwm = status_kib(binfarm.child.id(), "VmHWM:").map(|k| k * 1024);
    let nginx_version = nginx.version.clone();
    drop(binfarm);
    drop(nginx);
    Ok(MirrorBenchReport {
        files: config.files,
        blob_bytes: tree.blob_bytes,
        mean_blob: tree.mean_blob(),
        packages_len: tree.packages_len,
        packages_gz_len: tree.packages_gz_len,
        workers: config.workers,
        wrk_threads: config.wrk_threads,
        duration: config.duration,
        rounds: config.rounds,
        nginx_version,
        wrk_version,
        scenarios: figures,
        binfarm_hwm,
    })
}

/// 0 for nginx, 1 for binfarm (the order of the per-server scenario pairs).
fn server_index(server: &Server) -> usize {
    usize::from(server.name != "nginx")
}

/// Every scenario as a pair (for nginx, for binfarm), after checking with one request per
/// server that each answers as the scenario expects.
fn scenarios(
    config: &MirrorBenchConfig,
    tree: &Tree,
    servers: &[&Server; 2],
) -> Result<Vec<(ScenarioKind, [Scenario; 2])>, BenchError> {
    let gz = Tree::packages_gz_path();
    let last_modified = httpdate::fmt_http_date(tree.packages_gz_modified);
    let mut etags = Vec::new();
    for server in servers {
        let answer = probe(server.addr, &gz, &[])?;
        if answer.status != 200 || answer.body_len as u64 != tree.packages_gz_len {
            return Err(BenchError::Check(format!(
                "{}: GET {gz} answered {} with {} bytes, expected 200 with {}",
                server.name, answer.status, answer.body_len, tree.packages_gz_len
            )));
        }
        if answer.header("last-modified") != Some(last_modified.as_str()) {
            return Err(BenchError::Check(format!(
                "{}: Last-Modified {:?}, expected {last_modified:?}",
                server.name,
                answer.header("last-modified")
            )));
        }
        let etag = answer
            .header("etag")
            .ok_or_else(|| BenchError::Check(format!("{}: no ETag for {gz}", server.name)))?;
        etags.push(etag.to_string());
        let blob = &tree.blob_paths[0];
        let answer = probe(server.addr, blob, &[])?;
        if answer.status != 200 {
            return Err(BenchError::Check(format!(
                "{}: GET {blob} answered {}",
                server.name, answer.status
            )));
        }
    }
    // Headers and status line stay well under 1 KiB for both servers.
    const HEAD: f64 = 1024.0;
    let gz_len = tree.packages_gz_len as f64;
    let mean_blob = tree.mean_blob() as f64;
    let blob_range = (mean_blob * 0.5, MAX_FILE as f64 + HEAD);
    let make = |label: &str,
                connections: usize,
                paths: Vec<String>,
                headers: Vec<(String, String)>,
                expect_status: u16,
                bytes_per_response: (f64, f64),
                sample_memory: bool| Scenario {
        label: label.to_string(),
        connections,
        paths,
        headers,
        expect_status,
        bytes_per_response,
        sample_memory,
    };
    let mut list = Vec::new();
    let blobs = make(
        "binpkg GETs",
        config.connections,
        tree.blob_paths.clone(),
        Vec::new(),
        200,
        blob_range,
        true,
    );
    list.push((ScenarioKind::Blobs, [blobs.clone(), blobs]));
    let gz_get = make(
        "Packages.gz GETs",
        config.connections,
        vec![gz.clone()],
        Vec::new(),
        200,
        (gz_len, gz_len + HEAD),
        true,
    );
    list.push((ScenarioKind::PackagesGz, [gz_get.clone(), gz_get]));
    let ims = make(
        "Packages.gz 304 If-Modified-Since",
        config.connections,
        vec![gz.clone()],
        vec![("If-Modified-Since".into(), last_modified.clone())],
        304,
        (1.0, HEAD.min(gz_len)),
        true,
    );
    list.push((ScenarioKind::NotModifiedSince, [ims.clone(), ims]));
    let inm = |etag: &str| {
        make(
            "Packages.gz 304 If-None-Match",
            config.connections,
            vec![gz.clone()],
            vec![("If-None-Match".into(), etag.to_string())],
            304,
            (1.0, HEAD.min(gz_len)),
            true,
        )
    };
    list.push((ScenarioKind::NoneMatch, [inm(&etags[0]), inm(&etags[1])]));
    let memory = make(
        "binpkg GETs (memory)",
        config.memory_clients,
        tree.blob_paths.clone(),
        Vec::new(),
        200,
        blob_range,
        true,
    );
    list.push((ScenarioKind::Memory, [memory.clone(), memory]));

    for (_, pair) in &list {
        for (server, scenario) in servers.iter().zip(pair) {
            let headers: Vec<(&str, String)> = scenario
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let path = scenario.paths.first().map_or("/", String::as_str);
            let status = probe(server.addr, path, &headers)?.status;
            if status != scenario.expect_status {
                return Err(BenchError::Check(format!(
                    "{}: {} answered {status}, expected {}",
                    server.name, scenario.label, scenario.expect_status
                )));
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn wrk_summary_line() {
        let out = "Running 1s test\nBINFARM-BENCH requests=10 bytes=2000 duration_us=1000000 \
                   socket_errors=1 status_errors=0\n";
        let f = parse_wrk(out).expect("parsed");
        assert_eq!((f.requests, f.bytes, f.socket_errors), (10, 2000, 1));
        assert!((f.requests_per_second() - 10.0).abs() < 1e-9);
        assert!(parse_wrk("no summary").is_none());
    }

    #[test]
    fn lua_strings_are_quoted() {
        assert_eq!(lua_string("/a/b\"c"), "\"/a/b\\\"c\"");
    }
}
