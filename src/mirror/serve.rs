//! One handler for every path under the mirror root.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, IfRange, LastModified};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::range::{self, RangeRequest};
use super::{AccessLog, MirrorError, MirrorMetrics};

/// Largest read buffer per response: big files stream in 1 MiB chunks.
const READ_CHUNK: usize = 1 << 20;

pub struct MirrorState {
    root: PathBuf,
    access_log: Option<AccessLog>,
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
            root,
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
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "-".into());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = respond(&state, &method, &path, request.headers()).await;
    state.metrics.count(&method, response.status());
    if let Some(log) = &state.access_log {
        log.record(access_line(&peer, &request, &response));
    }
    response
}

fn access_line(peer: &str, request: &Request, response: &Response) -> String {
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .filter(|_| request.method() != Method::HEAD)
        .unwrap_or("-");
    let agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    format!(
        "{peer} - - [{}] \"{} {} {:?}\" {} {bytes} \"-\" \"{agent}\"",
        clf_time(SystemTime::now()),
        request.method(),
        request.uri(),
        request.version(),
        response.status().as_u16(),
    )
}

/// Common Log Format time, `26/Nov/2026:15:57:36 +0000` (always UTC).
fn clf_time(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian, era-based).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn respond(
    state: &MirrorState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(relative) = safe_relative_path(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let root = state.root.clone();
    let opened = tokio::task::spawn_blocking(move || open_below(&root, &relative)).await;
    let (file, meta) = match opened {
        Ok(Some(found)) => found,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let len = meta.len();
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let etag = entity_tag(len, modified);
    let last_modified = LastModified::from(modified);

    let mut response_headers = HeaderMap::new();
    if let Some(etag) = &etag {
        response_headers.typed_insert(etag.clone());
    }
    response_headers.typed_insert(last_modified);
    response_headers.insert(header::CACHE_CONTROL, cache_control(path));

    if not_modified(headers, etag.as_ref(), modified) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().extend(response_headers);
        return response;
    }

    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );

    let if_range_allows = headers
        .typed_get::<IfRange>()
        .is_none_or(|if_range| !if_range.is_modified(etag.as_ref(), Some(&last_modified)));
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
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));

    let body = if method == Method::HEAD || count == 0 {
        Body::empty()
    } else {
        match file_body(file, start, count, state.metrics.bytes_sent.clone()).await {
            Ok(body) => body,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
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

/// Opens a regular file below `root`; symlinks that lead outside the root are refused.
fn open_below(root: &Path, relative: &Path) -> Option<(tokio::fs::File, std::fs::Metadata)> {
    let full = root.join(relative).canonicalize().ok()?;
    if !full.starts_with(root) {
        return None;
    }
    let file = std::fs::File::open(&full).ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file()
        .then(|| (tokio::fs::File::from_std(file), meta))
}

/// A strong validator from size and modification time (as nginx does): published names
/// are never rewritten with other bytes, and a re-published index gets a new mtime.
fn entity_tag(len: u64, modified: SystemTime) -> Option<ETag> {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{len:x}-{nanos:x}\"").parse().ok()
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
    if path.ends_with(".gpkg.tar") || path.ends_with(".tbz2") || path.ends_with(".xpak") {
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

async fn file_body(
    mut file: tokio::fs::File,
    start: u64,
    count: u64,
    bytes_sent: Arc<AtomicU64>,
) -> std::io::Result<Body> {
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let capacity = usize::try_from(count)
        .unwrap_or(READ_CHUNK)
        .clamp(1, READ_CHUNK);
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file.take(count), capacity).map(move |chunk| {
            if let Ok(bytes) = &chunk {
                bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            chunk
        });
    Ok(Body::from_stream(stream))
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
