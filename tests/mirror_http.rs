//! `binfarm mirror` as a real process on 127.0.0.1, spoken to with raw HTTP/1.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Mirror {
    child: Child,
    addr: String,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mirror(root: &Path, access_log: &Path) -> Mirror {
    let mut child = Command::new(env!("CARGO_BIN_EXE_binfarm"))
        .args(["mirror", "--listen", "127.0.0.1:0", "--root"])
        .arg(root)
        .arg("--access-log")
        .arg(access_log)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start binfarm mirror");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("mirror exited before listening")
            .expect("read stderr");
        if let Some(pos) = line.find("http://") {
            break line[pos + 7..].trim_end_matches('/').to_owned();
        }
    };
    Mirror { child, addr }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(addr: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: mirror-test\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A mirror tree: an index, a 3 MB package file, a publisher's temporary file and a
/// symlink that leads out of the root.
struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    blob: Vec<u8>,
    log: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mirror");
    let tree = root.join("web-v3/stable");
    std::fs::create_dir_all(tree.join("app-misc/hello")).unwrap();
    std::fs::write(tree.join("Packages"), "VERSION: 0\n\n").unwrap();
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tree.join("app-misc/hello/hello-1.0-1.gpkg.tar"), &blob).unwrap();
    std::fs::write(tree.join(".Packages.tmp"), "half-written").unwrap();
    std::fs::write(dir.path().join("secret"), "outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), tree.join("escape")).unwrap();
    let log = dir.path().join("access.log");
    Fixture {
        _dir: dir,
        root,
        blob,
        log,
    }
}

#[test]
fn serves_trees_like_a_proper_http_mirror() {
    let fixture = fixture();
    let mirror = start_mirror(&fixture.root, &fixture.log);
    exercise(&mirror.addr, &fixture);
}

/// `binfarm serve` nests the mirror in its axum app: the same answers, the same log.
#[test]
fn the_serve_route_answers_the_same() {
    let fixture = fixture();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = binfarm::mirror::AccessLog::open(&fixture.log).unwrap();
    let state =
        std::sync::Arc::new(binfarm::mirror::MirrorState::new(&fixture.root, Some(log)).unwrap());
    runtime.spawn(async move {
        let app = binfarm::mirror::router(state)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await
    });
    exercise(&addr, &fixture);
}

/// Keep-alive, pipelining, HTTP/1.0, malformed heads, and an index replaced the way
/// publishing replaces it (rename) or rewritten in place.
#[test]
fn own_server_connections_and_fresh_indexes() {
    let fixture = fixture();
    let mirror = start_mirror(&fixture.root, &fixture.log);
    let a = mirror.addr.as_str();
    let tree = fixture.root.join("web-v3/stable");

    let mut stream = TcpStream::connect(a).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /web-v3/stable/Packages HTTP/1.1\r\nHost: m\r\n\r\n\
              GET /web-v3/stable/app-misc/hello/hello-1.0-1.gpkg.tar HTTP/1.1\r\nHost: m\r\n\
              Range: bytes=0-9\r\n\r\n\
              HEAD /web-v3/stable/Packages HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert_eq!(text.matches("HTTP/1.1 206 Partial Content\r\n").count(), 1);
    assert!(
        text.contains("\r\n\r\nVERSION: 0\n\nHTTP/1.1 206"),
        "{text}"
    );
    assert!(raw.windows(10).any(|w| w == &fixture.blob[..10]));
    assert!(
        text.ends_with("connection: close\r\n\r\n"),
        "HEAD has no body: {text}"
    );

    let old = request(a, "GET", "/web-v3/stable/Packages", &[]);
    let mut http10 = TcpStream::connect(a).unwrap();
    http10
        .write_all(b"GET /web-v3/stable/Packages HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    http10.read_to_end(&mut raw).unwrap();
    assert!(String::from_utf8_lossy(&raw).ends_with("VERSION: 0\n\n"));

    let mut bad = TcpStream::connect(a).unwrap();
    bad.write_all(b"GET /x HTTP/1.1\r\nBad Header: 1\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    bad.read_to_end(&mut raw).unwrap();
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 400 Bad Request\r\n"));

    // Publishing writes a temporary file and renames it over the index.
    let fresh = "VERSION: 0\nTIMESTAMP: 2\n\n";
    std::fs::write(tree.join(".Packages.new"), fresh).unwrap();
    std::fs::rename(tree.join(".Packages.new"), tree.join("Packages")).unwrap();
    let renamed = request(a, "GET", "/web-v3/stable/Packages", &[]);
    assert_eq!(renamed.body, fresh.as_bytes());
    assert_ne!(renamed.header("etag"), old.header("etag"));
    let conditional = request(
        a,
        "GET",
        "/web-v3/stable/Packages",
        &[("If-None-Match", old.header("etag").unwrap())],
    );
    assert_eq!(conditional.status, 200, "the old ETag no longer matches");
    // Rewritten in place (another size): seen too.
    std::fs::write(tree.join("Packages"), "VERSION: 0\nTIMESTAMP: 33\n\n").unwrap();
    let rewritten = request(a, "GET", "/web-v3/stable/Packages", &[]);
    assert_eq!(rewritten.body, b"VERSION: 0\nTIMESTAMP: 33\n\n");
    // A big index (kept in memory, written behind its headers with vectored writes).
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(tree.join(".Packages.new"), &big).unwrap();
    std::fs::rename(tree.join(".Packages.new"), tree.join("Packages")).unwrap();
    let whole = request(a, "GET", "/web-v3/stable/Packages", &[]);
    assert_eq!(whole.body, big);
    let tail = request(
        a,
        "GET",
        "/web-v3/stable/Packages",
        &[("Range", "bytes=299990-")],
    );
    assert_eq!((tail.status, tail.body.as_slice()), (206, &big[299_990..]));
    // Removed: gone.
    std::fs::remove_file(tree.join("Packages")).unwrap();
    assert_eq!(
        request(a, "GET", "/web-v3/stable/Packages", &[]).status,
        404
    );
}

/// Every check of the mirror's answers and access log, against the server at `a`.
fn exercise(a: &str, fixture: &Fixture) {
    let blob = &fixture.blob;
    let log = &fixture.log;
    let blob_path = "/web-v3/stable/app-misc/hello/hello-1.0-1.gpkg.tar";

    let full = request(a, "GET", blob_path, &[]);
    assert_eq!(full.status, 200);
    assert_eq!(&full.body, blob);
    assert_eq!(full.header("content-length"), Some("3000000"));
    assert_eq!(full.header("content-type"), Some("application/x-tar"));
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let etag = full.header("etag").expect("etag").to_owned();
    let last_modified = full
        .header("last-modified")
        .expect("last-modified")
        .to_owned();

    let head = request(a, "HEAD", blob_path, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3000000"));
    assert!(head.body.is_empty());

    // Resume the way Portage's fetcher does.
    let part = request(a, "GET", blob_path, &[("Range", "bytes=2999000-")]);
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 2999000-2999999/3000000")
    );
    assert_eq!(part.body, &blob[2_999_000..]);
    let suffix = request(a, "GET", blob_path, &[("Range", "bytes=-10")]);
    assert_eq!(suffix.body, &blob[2_999_990..]);
    let beyond = request(a, "GET", blob_path, &[("Range", "bytes=3000000-")]);
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */3000000"));
    let stale_if_range = request(
        a,
        "GET",
        blob_path,
        &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")],
    );
    assert_eq!(
        stale_if_range.status, 200,
        "If-Range with another ETag gets the whole file"
    );

    let by_date = request(a, "GET", "/web-v3/stable/Packages", &[]);
    assert_eq!(
        by_date.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(by_date.header("cache-control"), Some("no-cache"));
    let lm = by_date.header("last-modified").unwrap().to_owned();
    let not_modified = request(
        a,
        "GET",
        "/web-v3/stable/Packages",
        &[("If-Modified-Since", &lm)],
    );
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let older = request(
        a,
        "GET",
        "/web-v3/stable/Packages",
        &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    );
    assert_eq!(older.status, 200);
    let by_etag = request(
        a,
        "GET",
        blob_path,
        &[
            ("If-None-Match", &etag),
            ("If-Modified-Since", &last_modified),
        ],
    );
    assert_eq!(by_etag.status, 304);
    let other_etag = request(
        a,
        "GET",
        blob_path,
        &[
            ("If-None-Match", "\"nope\""),
            ("If-Modified-Since", &last_modified),
        ],
    );
    assert_eq!(
        other_etag.status, 200,
        "If-None-Match decides over If-Modified-Since"
    );

    for hostile in [
        "/web-v3/../../secret",
        "/web-v3/%2e%2e/%2e%2e/secret",
        "/web-v3/stable/.Packages.tmp",
        "/web-v3/stable/escape",
        "/web-v3/stable",
        "/web-v3/stable/missing.gpkg.tar",
    ] {
        assert_eq!(request(a, "GET", hostile, &[]).status, 404, "{hostile}");
    }
    let post = request(
        a,
        "POST",
        "/web-v3/stable/Packages",
        &[("Content-Length", "0")],
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // The log is written by a background thread: give it a moment to catch up.
    let mut log_text = String::new();
    for _ in 0..50 {
        log_text = std::fs::read_to_string(log).unwrap_or_default();
        if log_text.lines().count() >= 18 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        log_text.contains(&format!(
            "\"GET {blob_path} HTTP/1.1\" 206 1000 \"-\" \"mirror-test\""
        )),
        "access log:\n{log_text}"
    );
    assert!(log_text.contains("\"GET /web-v3/stable/Packages HTTP/1.1\" 304 "));
    assert_eq!(
        log_text.lines().count(),
        18,
        "one line per request:\n{log_text}"
    );
}
