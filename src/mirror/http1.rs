//! The standalone mirror's own HTTP/1.1 server (`binfarm mirror`): keep-alive and
//! pipelined GET and HEAD, answered by the same [`reply`] as the axum route of
//! `binfarm serve`. What it adds is the way bodies leave: package files go from the page
//! cache to the socket with sendfile(2), never through a user-space buffer (as nginx
//! sends them), and index files from memory in one write with their headers.
//!
//! Requests that announce a body are answered and the connection closed (a mirror takes
//! no uploads). Limits: 32 KiB of request head, 100 header fields, 30 s to send a head,
//! 60 s idle between requests, 60 s without write progress (headers and in-memory bodies
//! of up to 16 KiB must go in one 60 s window).
//!
//! sendfile and the file open run on the runtime threads: for files in the page cache
//! they cost microseconds; a file read from disk stalls that thread for the read, as it
//! does nginx's worker (tokio's other workers keep serving).

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::serve::{access_line, reply, LoggedRequest, Reply, ReplyBody};
use super::{MirrorError, MirrorState};

const HEAD_MAX: usize = 32 * 1024;
const HEADERS_MAX: usize = 100;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connections may take to finish their response after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Bytes per sendfile call: one big download cannot hold a thread for long.
const SENDFILE_MAX: u64 = 2 * 1024 * 1024;
/// Index file bodies up to this size are copied behind their headers: one write, one
/// segment.
const COALESCE_MAX: usize = 16 * 1024;

/// Serves `state` on `listener` until `shutdown` completes, then lets open connections
/// finish their current response (for up to 10 s).
pub async fn serve(
    listener: TcpListener,
    state: Arc<MirrorState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MirrorError> {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small answers (304s) must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let connection = Connection {
                        stream,
                        peer,
                        state: state.clone(),
                        stopped: stopped.clone(),
                        input: Vec::new(),
                    };
                    connections.spawn(connection.run());
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("mirror: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.shutdown().await;
    }
    Ok(())
}

/// Where the mirror served alone answers with its own counters (Prometheus text). It
/// shadows a top-level tree directory of that name; profiles are not called `metrics`.
const METRICS_PATH: &str = "/metrics";

/// GET or HEAD of [`METRICS_PATH`].
fn metrics_reply(state: &MirrorState, method: &Method) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return Reply::method_not_allowed();
    }
    let text = match crate::metrics::encode_mirror(&state.metrics) {
        Ok(text) => text,
        Err(err) => {
            tracing::error!("encoding mirror metrics: {err}");
            return Reply::empty(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let mut reply = Reply::empty(StatusCode::OK);
    reply.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    reply
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    reply
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if method == Method::GET {
        reply.body = ReplyBody::Memory(text.into_bytes());
    }
    reply
}

/// A parsed request head.
struct Head {
    method: Method,
    target: String,
    version: Version,
    headers: HeaderMap,
}

/// Why a request head could not be used; answered, then the connection is closed.
enum BadHead {
    Malformed,
    TooLarge,
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<MirrorState>,
    stopped: watch::Receiver<bool>,
    /// Bytes read and not yet parsed (the start of the next, pipelined, request).
    input: Vec<u8>,
}

impl Connection {
    async fn run(mut self) {
        while let Ok(true) = self.serve_one().await {}
        let _ = self.stream.shutdown().await;
    }

    /// Reads and answers one request; Ok(true) when the connection stays open.
    async fn serve_one(&mut self) -> io::Result<bool> {
        let head = match self.read_head().await? {
            None => return Ok(false),
            Some(Ok(head)) => head,
            Some(Err(bad)) => {
                let status = match bad {
                    BadHead::Malformed => StatusCode::BAD_REQUEST,
                    BadHead::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                };
                let mut out = Vec::with_capacity(128);
                status_and_headers(&mut out, status, &HeaderMap::new(), false);
                self.write_all_timed(&out).await?;
                return Ok(false);
            }
        };
        let announces_body = head.headers.contains_key(header::TRANSFER_ENCODING)
            || head
                .headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0");
        let keep_alive = head.version == Version::HTTP_11
            && !connection_has(&head.headers, "close")
            && !announces_body
            && !*self.stopped.borrow();

        let path = request_path(&head.target);
        // Scrapes are not mirror traffic: they are not counted.
        let counted = path != Some(METRICS_PATH);
        let reply = match path {
            Some(METRICS_PATH) => (metrics_reply(&self.state, &head.method), None),
            Some(path) => self.reply_with_open_file(&head, path).await,
            None => (Reply::empty(StatusCode::BAD_REQUEST), None),
        };
        let (reply, file) = reply;
        let status = reply.status;
        let content_length = reply.content_length(&head.method);
        let mut out = Vec::with_capacity(512);
        status_and_headers(&mut out, status, &reply.headers, keep_alive);
        let result = self.send(out, reply.body, file).await;
        if counted {
            self.state.metrics.count(&head.method, status);
        }
        if let Some(log) = &self.state.access_log {
            log.record(&access_line(&LoggedRequest {
                peer: Some(self.peer.ip()),
                method: head.method.as_str(),
                target: &head.target,
                version: head.version,
                status,
                bytes: content_length,
                agent: head
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            }));
        }
        result?;
        Ok(keep_alive)
    }

    /// The reply, and for a file sent from disk the file, opened: a file replaced since
    /// it was looked up is looked up again (once).
    async fn reply_with_open_file(
        &self,
        head: &Head,
        path: &str,
    ) -> (Reply, Option<std::fs::File>) {
        for _ in 0..2 {
            let reply = reply(&self.state, &head.method, path, &head.headers).await;
            let ReplyBody::File { entry, .. } = &reply.body else {
                return (reply, None);
            };
            if entry.content().is_some() {
                return (reply, None);
            }
            if let Ok(file) = self.state.files.open(entry) {
                return (reply, Some(file));
            }
        }
        (Reply::empty(StatusCode::SERVICE_UNAVAILABLE), None)
    }

    /// Reads until a whole request head is buffered. None: the client closed, went idle
    /// too long, or the server is stopping.
    async fn read_head(&mut self) -> io::Result<Option<Result<Head, BadHead>>> {
        let mut deadline = None;
        loop {
            if !self.input.is_empty() {
                match parse_head(&self.input) {
                    Ok(Some((head, len))) => {
                        self.input.drain(..len);
                        return Ok(Some(Ok(head)));
                    }
                    Ok(None) if self.input.len() >= HEAD_MAX => {
                        return Ok(Some(Err(BadHead::TooLarge)))
                    }
                    Ok(None) => {}
                    Err(bad) => return Ok(Some(Err(bad))),
                }
            }
            let now = Instant::now();
            let wait = if self.input.is_empty() {
                if *self.stopped.borrow() {
                    return Ok(None);
                }
                IDLE_TIMEOUT
            } else {
                deadline
                    .get_or_insert(now + HEAD_TIMEOUT)
                    .saturating_duration_since(now)
            };
            self.input.reserve(4096);
            let idle = self.input.is_empty();
            let read = tokio::select! {
                read = tokio::time::timeout(wait, self.stream.read_buf(&mut self.input)) => read,
                _ = self.stopped.changed(), if idle => return Ok(None),
            };
            match read {
                Err(_elapsed) => return Ok(None),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
            }
        }
    }

    /// Writes the response: `head` (status line and headers), then the body.
    async fn send(
        &mut self,
        mut head: Vec<u8>,
        body: ReplyBody,
        file: Option<std::fs::File>,
    ) -> io::Result<()> {
        let (entry, start, count) = match body {
            ReplyBody::Empty => return self.write_all_timed(&head).await,
            ReplyBody::Memory(bytes) => {
                head.extend_from_slice(&bytes);
                return self.write_all_timed(&head).await;
            }
            ReplyBody::File {
                entry,
                start,
                count,
            } => (entry, start, count),
        };
        let state = self.state.clone();
        let bytes_sent = &state.metrics.bytes_sent;
        if let Some(content) = entry.content() {
            let (Ok(from), Ok(to)) = (usize::try_from(start), usize::try_from(start + count))
            else {
                return Err(io::Error::other("range beyond memory"));
            };
            let body = content.get(from..to).unwrap_or_default();
            if body.len() <= COALESCE_MAX {
                head.extend_from_slice(body);
                self.write_all_timed(&head).await?;
            } else {
                self.write_pair_timed(&head, body).await?;
            }
            bytes_sent.fetch_add(count, Ordering::Relaxed);
            return Ok(());
        }
        let Some(file) = file else {
            return Err(io::Error::other("no open file for a file reply"));
        };
        // Headers and the first data share segments (as nginx's tcp_nopush): without
        // the cork, the headers go out alone and the client wakes once more per answer.
        let socket = socket2::SockRef::from(&self.stream);
        let _ = socket.set_tcp_cork(true);
        self.write_all_timed(&head).await?;
        let mut offset = nix::libc::off_t::try_from(start)
            .map_err(|_| io::Error::other("file offset out of range"))?;
        let mut remaining = count;
        while remaining > 0 {
            let want = remaining.min(SENDFILE_MAX) as usize;
            let stream = &self.stream;
            let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
                loop {
                    stream.writable().await?;
                    let attempt = stream.try_io(Interest::WRITABLE, || {
                        nix::sys::sendfile::sendfile(stream, &file, Some(&mut offset), want)
                            .map_err(io::Error::from)
                    });
                    match attempt {
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return other,
                    }
                }
            })
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} is shorter than it was", entry.relative.display()),
                ));
            }
            remaining -= sent as u64;
            bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        }
        // Uncorking sends the last partial segment now.
        let _ = socket2::SockRef::from(&self.stream).set_tcp_cork(false);
        Ok(())
    }

    async fn write_all_timed(&mut self, bytes: &[u8]) -> io::Result<()> {
        tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(bytes))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))?
    }

    /// Writes `first` then `second` with vectored writes; the timeout is per write (a
    /// slow client may take long over a big index, but must keep reading).
    async fn write_pair_timed(&mut self, mut first: &[u8], mut second: &[u8]) -> io::Result<()> {
        while !first.is_empty() || !second.is_empty() {
            let slices = [IoSlice::new(first), IoSlice::new(second)];
            let written = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_vectored(&slices))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
            if written == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            let from_first = written.min(first.len());
            first = &first[from_first..];
            second = &second[written - from_first..];
        }
        Ok(())
    }
}

/// Parses a request head at the start of `input`: Ok(None) while incomplete.
fn parse_head(input: &[u8]) -> Result<Option<(Head, usize)>, BadHead> {
    let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadHead::TooLarge),
        Err(_) => return Err(BadHead::Malformed),
    };
    let method = request
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(BadHead::Malformed)?;
    let target = request.path.ok_or(BadHead::Malformed)?.to_string();
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(BadHead::Malformed),
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| BadHead::Malformed)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| BadHead::Malformed)?;
        headers.append(name, value);
    }
    Ok(Some((
        Head {
            method,
            target,
            version,
            headers,
        },
        len,
    )))
}

/// The path of a request target in origin form (`/a/b?q`) or absolute form
/// (`http://host/a/b`); None for other forms (`*`, authority).
fn request_path(target: &str) -> Option<&str> {
    let without_query = target.split(['?', '#']).next().unwrap_or(target);
    if without_query.starts_with('/') {
        return Some(without_query);
    }
    let rest = without_query
        .strip_prefix("http://")
        .or_else(|| without_query.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |slash| &rest[slash..]))
}

/// Whether a `Connection` header lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Appends the status line and headers (with `date`, `content-length: 0` for bodiless
/// answers that carry none, and `connection: close` when closing).
fn status_and_headers(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status == StatusCode::NOT_MODIFIED
        || status == StatusCode::NO_CONTENT
        || status.is_informational();
    if !bodiless && !headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(request_path("/a/b?x=1"), Some("/a/b"));
        assert_eq!(request_path("/"), Some("/"));
        assert_eq!(request_path("http://h:8/a/b"), Some("/a/b"));
        assert_eq!(request_path("http://h"), Some("/"));
        assert_eq!(request_path("*"), None);
        assert_eq!(request_path("h:80"), None);
    }

    #[test]
    fn heads() {
        let raw =
            b"GET /p/Packages HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\nGET /";
        let (head, len) = match parse_head(raw) {
            Ok(Some(parsed)) => parsed,
            _ => panic!("a complete head"),
        };
        assert_eq!(&raw[len..], b"GET /");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target, "/p/Packages");
        assert!(connection_has(&head.headers, "close"));
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost"), Ok(None)));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"),
            Err(BadHead::Malformed)
        ));
    }

    #[test]
    fn status_lines() {
        let mut out = Vec::new();
        status_and_headers(&mut out, StatusCode::NOT_FOUND, &HeaderMap::new(), false);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\ndate: "));
        assert!(text.ends_with("content-length: 0\r\nconnection: close\r\n\r\n"));
        let mut out = Vec::new();
        status_and_headers(&mut out, StatusCode::NOT_MODIFIED, &HeaderMap::new(), true);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(!text.contains("content-length"), "{text}");
    }
}
