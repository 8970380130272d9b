//! The mirror's request and byte counters. Counting costs a response two relaxed atomic
//! adds and no lock; `/metrics` (`crate::metrics`) reads the counters when scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::{Method, StatusCode};

/// Method label values, in the order of [`MirrorMetrics`]' rows.
pub const METHODS: [&str; 3] = ["GET", "HEAD", "other"];
/// Status class label values, in the order of [`MirrorMetrics`]' columns.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, Default)]
pub struct MirrorMetrics {
    /// Responses by method (row) and status class (column).
    requests: [[AtomicU64; STATUS_CLASSES.len()]; METHODS.len()],
    /// Body bytes handed to the connection (file reads streamed out), shared with the
    /// response streams.
    pub bytes_sent: Arc<AtomicU64>,
}

/// One cell of the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCount {
    pub method: &'static str,
    pub status_class: &'static str,
    pub count: u64,
}

impl MirrorMetrics {
    /// Counts one response.
    pub fn count(&self, method: &Method, status: StatusCode) {
        let row = if method == Method::GET {
            0
        } else if method == Method::HEAD {
            1
        } else {
            2
        };
        let column = usize::from(status.as_u16() / 100)
            .saturating_sub(1)
            .min(STATUS_CLASSES.len() - 1);
        self.requests[row][column].fetch_add(1, Ordering::Relaxed);
    }

    /// Every (method, status class) cell, zeros included, in label order.
    pub fn requests(&self) -> Vec<RequestCount> {
        let mut out = Vec::with_capacity(METHODS.len() * STATUS_CLASSES.len());
        for (row, method) in self.requests.iter().zip(METHODS) {
            for (cell, status_class) in row.iter().zip(STATUS_CLASSES) {
                out.push(RequestCount {
                    method,
                    status_class,
                    count: cell.load(Ordering::Relaxed),
                });
            }
        }
        out
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_status_class() {
        let m = MirrorMetrics::default();
        m.count(&Method::GET, StatusCode::OK);
        m.count(&Method::GET, StatusCode::PARTIAL_CONTENT);
        m.count(&Method::GET, StatusCode::NOT_MODIFIED);
        m.count(&Method::HEAD, StatusCode::NOT_FOUND);
        m.count(&Method::POST, StatusCode::METHOD_NOT_ALLOWED);
        m.count(&Method::GET, StatusCode::INTERNAL_SERVER_ERROR);
        let get = |method, class| {
            m.requests()
                .iter()
                .find(|c| c.method == method && c.status_class == class)
                .map(|c| c.count)
        };
        assert_eq!(get("GET", "2xx"), Some(2));
        assert_eq!(get("GET", "3xx"), Some(1));
        assert_eq!(get("GET", "5xx"), Some(1));
        assert_eq!(get("HEAD", "4xx"), Some(1));
        assert_eq!(get("other", "4xx"), Some(1));
        assert_eq!(get("HEAD", "2xx"), Some(0));
        assert_eq!(m.requests().len(), 15);
        assert_eq!(m.requests().iter().map(|c| c.count).sum::<u64>(), 6);
    }
}
