//! The content-addressed blob store: checked, atomic, idempotent puts; nothing half-written.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use binfarm::store::{BlobError, BlobStore};
use sha2::{Digest, Sha512};

fn sha512_hex(data: &[u8]) -> String {
    hex::encode(Sha512::digest(data))
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn put_stores_under_sha512_path_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = BlobStore::open(dir.path()).expect("open");
    let data = payload(700_000);
    let digest = sha512_hex(&data);
    let stored = blobs
        .put_stream(&data[..], Some(&digest), 1 << 20)
        .expect("put");
    assert_eq!(stored.sha512, digest);
    assert_eq!(stored.size, data.len() as u64);
    let expected_path = dir
        .path()
        .join("sha512")
        .join(&digest[..2])
        .join(&digest[2..]);
    assert_eq!(blobs.path_of(&digest).expect("path"), expected_path);
    assert_eq!(fs::read(&expected_path).expect("read blob"), data);
    let mut back = Vec::new();
    blobs
        .open_blob(&digest)
        .expect("open blob")
        .read_to_end(&mut back)
        .expect("read");
    assert_eq!(back, data);
    assert!(files_under(&blobs.tmp_dir()).is_empty());
}

#[test]
fn repeated_and_concurrent_puts_of_the_same_bytes_are_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = BlobStore::open(dir.path()).expect("open");
    let data = payload(300_000);
    let first = blobs.put_stream(&data[..], None, u64::MAX).expect("put");
    let second = blobs
        .put_stream(&data[..], None, u64::MAX)
        .expect("put again");
    assert_eq!(first, second);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| blobs.put_stream(&data[..], Some(&first.sha512), u64::MAX)))
            .collect();
        for handle in handles {
            let stored = handle.join().expect("thread").expect("concurrent put");
            assert_eq!(stored, first);
        }
    });
    let files = files_under(dir.path());
    assert_eq!(files.len(), 1, "one blob file and no temp files: {files:?}");
    assert_eq!(fs::read(&files[0]).expect("read"), data);
}

#[test]
fn wrong_sha512_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = BlobStore::open(dir.path()).expect("open");
    let data = payload(10_000);
    let wrong = sha512_hex(b"something else");
    let err = blobs
        .put_stream(&data[..], Some(&wrong), u64::MAX)
        .expect_err("mismatch must fail");
    match &err {
        BlobError::HashMismatch {
            expected,
            actual,
            size,
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha512_hex(&data));
            assert_eq!(*size, 10_000);
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was stored"));
    assert!(files_under(dir.path()).is_empty());
    assert!(!blobs.contains(&sha512_hex(&data)).expect("contains"));

    let err = blobs
        .put_stream(&data[..], Some("not-a-digest"), u64::MAX)
        .expect_err("bad digest");
    assert!(matches!(err, BlobError::BadDigest { .. }), "{err:?}");
}

#[test]
fn oversized_upload_stops_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = BlobStore::open(dir.path()).expect("open");
    let data = payload(2_000_000);
    let err = blobs
        .put_stream(&data[..], None, 1_000_000)
        .expect_err("too large");
    assert!(
        matches!(
            err,
            BlobError::TooLarge {
                max_size: 1_000_000
            }
        ),
        "{err:?}"
    );
    assert!(files_under(dir.path()).is_empty());
    // Exactly at the limit is fine.
    let exact = payload(1_000_000);
    blobs
        .put_stream(&exact[..], None, 1_000_000)
        .expect("at the limit");
}

/// Yields `good` bytes, then fails: a connection dropped mid-upload.
struct BreaksMidStream {
    data: Vec<u8>,
    position: usize,
    good: usize,
}

impl Read for BreaksMidStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.good {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            ));
        }
        let n = buf.len().min(self.good - self.position).min(4096);
        buf[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

#[test]
fn reader_error_mid_stream_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = BlobStore::open(dir.path()).expect("open");
    let data = payload(1_000_000);
    let digest = sha512_hex(&data);
    let reader = BreaksMidStream {
        data: data.clone(),
        position: 0,
        good: 600_000,
    };
    let err = blobs
        .put_stream(reader, Some(&digest), u64::MAX)
        .expect_err("a broken stream must fail");
    match &err {
        BlobError::Read { received, source } => {
            assert_eq!(*received, 600_000);
            assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
        }
        other => panic!("expected Read error, got {other:?}"),
    }
    assert!(err.to_string().contains("600000 bytes"), "{err}");
    assert!(!blobs.contains(&digest).expect("contains"));
    assert!(
        files_under(dir.path()).is_empty(),
        "no blob and no temp file may remain"
    );
    // The complete upload afterwards works.
    blobs
        .put_stream(&data[..], Some(&digest), u64::MAX)
        .expect("retry succeeds");
    assert!(blobs.contains(&digest).expect("contains"));
}

const CHILD_ENV: &str = "BINFARM_TEST_BLOB_CHILD_DIR";

/// A real process killed with SIGKILL in the middle of a put: no blob becomes visible, and
/// the temp file it leaves is removed when the store is opened again.
#[test]
fn writer_killed_mid_put_leaves_no_visible_blob() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // Child: store whatever arrives on stdin (the parent never finishes sending it).
        let blobs = BlobStore::open(Path::new(&dir)).expect("child open");
        let result = blobs.put_stream(io::stdin().lock(), None, u64::MAX);
        eprintln!("child put returned {result:?}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = BlobStore::open(dir.path()).expect("open");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "writer_killed_mid_put_leaves_no_visible_blob",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child writer");
    let mut stdin = child.stdin.take().expect("child stdin");
    let chunk = payload(256 * 1024);
    for _ in 0..8 {
        stdin.write_all(&chunk).expect("feed child");
    }
    stdin.flush().expect("flush");
    // Wait until the child has written a good part of its temp file.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written: u64 = files_under(&blobs.tmp_dir())
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if written >= 1024 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "child never wrote its temp file ({written} bytes)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the child");
    let status = child.wait().expect("reap child");
    assert!(!status.success(), "the child was killed: {status:?}");
    drop(stdin);

    assert!(
        files_under(&dir.path().join("sha512")).is_empty(),
        "a killed put must not leave a visible blob"
    );
    assert!(
        !files_under(&blobs.tmp_dir()).is_empty(),
        "the killed child's temp file is still there before reopening"
    );
    let reopened = BlobStore::open(dir.path()).expect("reopen");
    assert!(
        files_under(&reopened.tmp_dir()).is_empty(),
        "opening the store removes stale temp files"
    );
}

/// Unmounts a tmpfs when dropped, even if an assertion failed.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A real full disk (a 1 MiB tmpfs): the put fails with a clear error and leaves nothing.
/// Needs root to mount; elsewhere it says so and checks nothing else.
#[test]
fn disk_full_stores_nothing_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount_point = dir.path().join("small");
    fs::create_dir(&mount_point).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        use std::os::unix::fs::MetadataExt;
        let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
        assert!(
            uid != 0,
            "root could not mount a tmpfs for the disk-full test"
        );
        eprintln!("disk_full_stores_nothing_and_says_so: not root, cannot mount a tmpfs; skipped");
        return;
    }
    let _guard = Mounted(mount_point.clone());
    let blobs = BlobStore::open(&mount_point).expect("open on tmpfs");
    let data = payload(3 * 1024 * 1024);
    let err = blobs
        .put_stream(&data[..], None, u64::MAX)
        .expect_err("3 MiB cannot fit in 1 MiB");
    assert!(matches!(err, BlobError::DiskFull { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("disk is full"), "{message}");
    assert!(message.contains("nothing was stored"), "{message}");
    assert!(
        files_under(&mount_point).is_empty(),
        "no blob and no temp file may remain on the full disk"
    );
    // Space is back: a small blob fits.
    let small = payload(1000);
    blobs
        .put_stream(&small[..], None, u64::MAX)
        .expect("small put after the failure");
}
