//! Test support: a real vsftpd (Debian's) on 127.0.0.1, one per test, in a temp directory.
//!
//! Anonymous users may download, upload, create directories, rename and delete below
//! `/pub`: the publisher and Portage nodes (fetching `ftp://127.0.0.1:<port>/pub/...`) use the
//! same anonymous login. `run_as_launching_user=YES` makes it work as root or as anyone else
//! without system users or chroot; paths are then real paths and sessions start in
//! `anon_root`, so clients use paths relative to the login directory, as URLs do.
//! The server runs in its own process group (its session processes too) and is stopped
//! by that id on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Where Debian installs vsftpd (`scripts/setup.sh` installs the package).
pub const VSFTPD: &str = "/usr/sbin/vsftpd";

#[derive(Debug, Clone, Default)]
pub struct VsftpdOptions {
    /// Bytes per second per anonymous session (`anon_max_rate`), to make transfers slow
    /// enough to interrupt them.
    pub max_rate: Option<u64>,
    /// Connections accepted from one address (`max_per_ip`; default 64).
    pub max_per_ip: Option<u32>,
}

pub struct Vsftpd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Vsftpd {
    pub fn start() -> Vsftpd {
        Self::start_with(VsftpdOptions::default())
    }

    /// Starts vsftpd on a free port and waits for its greeting. A port taken between
    /// choosing and binding it is retried with another one.
    pub fn start_with(options: VsftpdOptions) -> Vsftpd {
        assert!(
            Path::new(VSFTPD).exists(),
            "{VSFTPD} is missing: run scripts/setup.sh (Debian package vsftpd)"
        );
        let mut last_failure = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("binfarm-vsftpd-")
                .tempdir()
                .expect("temp dir for vsftpd");
            let port = free_port();
            write_config(dir.path(), port, &options);
            let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
            let child = Command::new(VSFTPD)
                .arg(dir.path().join("vsftpd.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .process_group(0)
                .spawn()
                .expect("spawn vsftpd");
            let mut server = Vsftpd { child, port, dir };
            match server.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return server,
                Err(why) => last_failure = why,
            }
        }
        panic!("vsftpd did not start: {last_failure}");
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("vsftpd exited with {status}: {}", self.stderr()));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut greeting = String::new();
                if BufReader::new(stream).read_line(&mut greeting).is_ok()
                    && greeting.starts_with("220")
                {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no greeting within {within:?}: {}", self.stderr()))
    }

    /// The FTP URL of the writable, anonymously readable area.
    pub fn url(&self) -> String {
        format!("ftp://127.0.0.1:{}/pub", self.port)
    }

    /// The server-side directory behind [`Vsftpd::url`] (to inspect or damage its files).
    pub fn pub_dir(&self) -> PathBuf {
        self.dir.path().join("anon/pub")
    }

    /// vsftpd's own log: connections, every command and reply, uploads with pids.
    pub fn protocol_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vsftpd.log")).unwrap_or_default()
    }

    /// The wu-ftpd style transfer log.
    pub fn xferlog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("xferlog")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        // The listener and its per-session processes share the process group we gave it.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn write_config(dir: &Path, port: u16, options: &VsftpdOptions) {
    let anon = dir.join("anon");
    let empty = dir.join("empty");
    std::fs::create_dir_all(anon.join("pub")).expect("anon root");
    std::fs::create_dir_all(&empty).expect("secure_chroot_dir");
    // A passive range near the control port; vsftpd picks a free port inside it.
    let pasv_min = 20000 + u32::from(port) % 40000;
    let pasv_max = pasv_min + 200;
    let rate = options
        .max_rate
        .map(|r| format!("anon_max_rate={r}\n"))
        .unwrap_or_default();
    let config = format!(
        "\
listen=YES
listen_ipv6=NO
background=NO
listen_address=127.0.0.1
listen_port={port}
run_as_launching_user=YES
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
anonymous_enable=YES
no_anon_password=YES
local_enable=NO
ftp_username=nobody
anon_root={anon}
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
anon_umask=022
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
secure_chroot_dir={empty}
xferlog_enable=YES
dual_log_enable=YES
xferlog_file={xferlog}
vsftpd_log_file={log}
log_ftp_protocol=YES
use_localtime=NO
max_clients=64
max_per_ip={max_per_ip}
{rate}",
        max_per_ip = options.max_per_ip.unwrap_or(64),
        anon = anon.display(),
        empty = empty.display(),
        xferlog = dir.join("xferlog").display(),
        log = dir.join("vsftpd.log").display(),
    );
    std::fs::write(dir.join("vsftpd.conf"), config).expect("write vsftpd.conf");
}
