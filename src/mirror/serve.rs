//! One handler for every path under the mirror root.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, IfRange};

use super::files::{is_package_file, FileEntry, Files};
use super::range::{self, RangeRequest};
use super::{AccessLog, MirrorError, MirrorMetrics};

pub struct MirrorState {
    pub(super) files: Files,
    pub(super) access_log: Option<AccessLog>,
    /// Shared with whoever exports them (the coordinator passes its own).
    pub metrics: Arc<MirrorMetrics>,
}

impl MirrorState {
    pub fn new(root: &Path, access_log: Option<AccessLog>) -> Result<Self, MirrorError> {
        let root = root.canonicalize().map_err(|source| MirrorError::Root {
            path: root.to_owned(),
            source,
        })?;
        Ok(Self {
            files: Files::new(root),
            access_log,
            metrics: Arc::default(),
        })
    }
}

/// A router that serves every path below the mirror root.
pub fn router(state: Arc<MirrorState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<Arc<MirrorState>>, request: Request) -> Response {
    let reply = reply(
        &state,
        request.method(),
        request.uri().path(),
        request.headers(),
    )
    .await;
    let status = reply.status;
    let content_length = reply.content_length(request.method());
    let response = reply.into_response(&state);
    state.metrics.count(request.method(), status);
    if let Some(log) = &state.access_log {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        log.record(&access_line(&LoggedRequest {
            peer,
            method: request.method().as_str(),
            target,
            version: request.version(),
            status,
            bytes: content_length,
            agent,
        }));
    }
    response
}

/// What the access log says of a request.
pub(super) struct LoggedRequest<'a> {
    pub peer: Option<std::net::IpAddr>,
    pub method: &'a str,
    /// The request target as sent (path and query).
    pub target: &'a str,
    pub version: axum::http::Version,
    pub status: StatusCode,
    /// Body bytes sent (None: no body, as for HEAD).
    pub bytes: Option<u64>,
    pub agent: Option<&'a str>,
}

/// One line in the combined log format.
pub(super) fn access_line(request: &LoggedRequest<'_>) -> String {
    let agent = request.agent.unwrap_or("-");
    let mut line = String::with_capacity(160 + agent.len() + request.target.len());
    let _ = match request.peer {
        Some(ip) => write!(line, "{ip}"),
        None => write!(line, "-"),
    };
    let _ = write!(
        line,
        " - - [{}] \"{} {} {:?}\" {} ",
        clf_time(SystemTime::now()),
        request.method,
        request.target,
        request.version,
        request.status.as_u16(),
    );
    let _ = match request.bytes {
        Some(bytes) => write!(line, "{bytes}"),
        None => write!(line, "-"),
    };
    let _ = write!(line, " \"-\" \"{agent}\"");
    line
}

/// Common Log Format time, `26/Nov/2026:15:57:36 +0000` (always UTC).
fn clf_time(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    crate::utc::UtcTime::from_unix(secs).common_log()
}

/// The answer to a request, before it is written out (by axum in `binfarm serve`, by
/// the mirror's own HTTP/1.1 server in `binfarm mirror`).
pub(super) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ReplyBody,
}

pub(super) enum ReplyBody {
    Empty,
    /// A body made for this reply (the lone mirror's /metrics).
    Memory(Vec<u8>),
    /// Bytes `start..start + count` of a file.
    File {
        entry: Arc<FileEntry>,
        start: u64,
        count: u64,
    },
}

impl Reply {
    pub fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: ReplyBody::Empty,
        }
    }

    /// 405 for anything but GET and HEAD (the mirror is read-only).
    pub fn method_not_allowed() -> Reply {
        let mut reply = Reply::empty(StatusCode::METHOD_NOT_ALLOWED);
        reply
            .headers
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        reply
    }

    /// Body bytes the response carries for `method` (None: HEAD, 304).
    pub fn content_length(&self, method: &Method) -> Option<u64> {
        if method == Method::HEAD || self.status == StatusCode::NOT_MODIFIED {
            return None;
        }
        Some(match &self.body {
            ReplyBody::Empty => 0,
            ReplyBody::Memory(bytes) => bytes.len() as u64,
            ReplyBody::File { count, .. } => *count,
        })
    }

    fn into_response(self, state: &MirrorState) -> Response {
        let body = match self.body {
            ReplyBody::Empty => Body::empty(),
            ReplyBody::Memory(bytes) => Body::from(bytes),
            ReplyBody::File {
                entry,
                start,
                count,
            } => state
                .files
                .body(entry, start, count, state.metrics.bytes_sent.clone()),
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// GET and HEAD of files below the root, with conditional and range requests.
pub(super) async fn reply(
    state: &MirrorState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        return Reply::method_not_allowed();
    }
    let Some(relative) = safe_relative_path(path) else {
        return Reply::empty(StatusCode::NOT_FOUND);
    };
    let Some(entry) = state.files.lookup(&relative).await else {
        return Reply::empty(StatusCode::NOT_FOUND);
    };
    let len = entry.len;
    let etag = entry.etag.as_ref();

    let mut response_headers = HeaderMap::with_capacity(8);
    if let Some(value) = &entry.etag_value {
        response_headers.insert(header::ETAG, value.clone());
    }
    response_headers.insert(header::LAST_MODIFIED, entry.last_modified_value.clone());
    response_headers.insert(header::CACHE_CONTROL, cache_control(path));

    if not_modified(headers, etag, entry.modified) {
        return Reply {
            status: StatusCode::NOT_MODIFIED,
            headers: response_headers,
            body: ReplyBody::Empty,
        };
    }

    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );

    let if_range_allows = headers
        .typed_get::<IfRange>()
        .is_none_or(|if_range| !if_range.is_modified(etag, Some(&entry.last_modified)));
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let wanted = if if_range_allows {
        range::parse(range_header, len)
    } else {
        RangeRequest::Full
    };

    let (status, start, count) = match wanted {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            let value = format!("bytes {start}-{end}/{len}");
            if let Ok(value) = HeaderValue::from_str(&value) {
                response_headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            let mut reply = Reply::empty(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                reply.headers.insert(header::CONTENT_RANGE, value);
            }
            return reply;
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));

    let body = if method == Method::HEAD || count == 0 {
        ReplyBody::Empty
    } else {
        ReplyBody::File {
            entry,
            start,
            count,
        }
    };
    Reply {
        status,
        headers: response_headers,
        body,
    }
}

/// The request path as a relative path with only normal components, or None when it
/// could name something outside the root: `..`, `.`, hidden names (publishing's
/// temporary files start with a dot), backslashes, NUL, or invalid percent-encoding.
fn safe_relative_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .ok()?;
    let mut relative = PathBuf::new();
    for part in decoded.split('/').filter(|p| !p.is_empty()) {
        if part.starts_with('.') || part.contains('\\') || part.contains('\0') {
            return None;
        }
        let mut components = Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(_)), None) => relative.push(part),
            _ => return None,
        }
    }
    Some(relative)
}

/// RFC 9110 §13.2.2: If-None-Match decides when present; otherwise If-Modified-Since.
fn not_modified(headers: &HeaderMap, etag: Option<&ETag>, modified: SystemTime) -> bool {
    if let (Some(if_none_match), Some(etag)) = (headers.typed_get::<IfNoneMatch>(), etag) {
        return !if_none_match.precondition_passes(etag);
    }
    headers
        .typed_get::<IfModifiedSince>()
        .is_some_and(|since| !since.is_modified(modified))
}

/// Blob names are never reused for other bytes, so they may be cached forever;
/// the index changes in place and must be revalidated.
fn cache_control(path: &str) -> HeaderValue {
    if is_package_file(path) {
        HeaderValue::from_static("public, max-age=31536000, immutable")
    } else {
        HeaderValue::from_static("no-cache")
    }
}

fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name {
        "Packages" => "text/plain; charset=utf-8",
        _ if name.ends_with(".gz") => "application/gzip",
        _ if name.ends_with(".tar") => "application/x-tar",
        _ if name.ends_with(".asc") => "application/pgp-keys",
        _ if name.ends_with(".html") => "text/html; charset=utf-8",
        _ if name.ends_with(".txt") || name.ends_with(".conf") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_checks() {
        assert_eq!(
            safe_relative_path("/a/b/Packages"),
            Some(PathBuf::from("a/b/Packages"))
        );
        assert_eq!(safe_relative_path("/"), Some(PathBuf::new()));
        assert_eq!(safe_relative_path("/a/../etc/passwd"), None);
        assert_eq!(safe_relative_path("/a/%2e%2e/x"), None);
        assert_eq!(safe_relative_path("/a/%2E%2E%2Fx"), None);
        assert_eq!(safe_relative_path("/a/.Packages.tmp"), None);
        assert_eq!(safe_relative_path("/a/b%5c..%5cx"), None);
        assert_eq!(safe_relative_path("/a/b%00"), None);
        assert_eq!(safe_relative_path("/a/%ff"), None);
    }

    #[test]
    fn log_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_708_656);
        assert_eq!(clf_time(t), "26/Nov/2026:15:57:36 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(clf_time(leap), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn types() {
        assert_eq!(
            content_type("/p/stable/Packages"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("/p/stable/Packages.gz"), "application/gzip");
        assert_eq!(
            content_type("/p/s/app-misc/hello/hello-1.0-1.gpkg.tar"),
            "application/x-tar"
        );
    }
}
