//! The built-in HTTP mirror: serves mirror trees (`<root>/<profile>/<channel>/...`) to
//! Portage clients. GET and HEAD, single Range requests (download resume), conditional
//! requests (If-None-Match / If-Modified-Since -> 304, If-Range), ETag, Last-Modified,
//! exact Content-Length and types, no path escapes, an access log. Index files are served
//! from memory (revalidated by one stat per request, see `files`).
//!
//! Runs alone as `binfarm mirror`, on its own HTTP/1.1 server that sends package files
//! with sendfile (`http1`), or inside `binfarm serve` as an axum route (nested under a
//! prefix) that streams them in chunks of up to 512 KiB under a server-wide memory
//! budget. Both answer through the same `serve::reply`.

mod access_log;
mod files;
mod http1;
mod metrics;
mod range;
mod serve;

pub use access_log::AccessLog;
pub use metrics::{MirrorMetrics, RequestCount};
pub use serve::{router, MirrorState};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirror root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("access log {path}: {source}")]
    AccessLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the mirror alone until SIGINT/SIGTERM (`binfarm mirror`), on its own HTTP/1.1
/// server (sendfile for package files).
pub async fn run(
    root: &Path,
    listen: SocketAddr,
    access_log: Option<&Path>,
) -> Result<(), MirrorError> {
    let log = match access_log {
        Some(path) => Some(AccessLog::open(path)?),
        None => None,
    };
    let state = Arc::new(MirrorState::new(root, log)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| MirrorError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(MirrorError::Serve)?;
    tracing::info!("mirror serving {} on http://{local}/", root.display());
    http1::serve(listener, state, shutdown_signal()).await
}

/// Serves `app` on `listener` (TCP_NODELAY, client addresses for the access log) until
/// SIGINT or SIGTERM.
pub async fn serve_until_shutdown(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> Result<(), MirrorError> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Small responses (304s, index headers) must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(MirrorError::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
