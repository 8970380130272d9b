//! Errors of the web pages and how they answer: an HTML page with the right status.

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::coordinator::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// An id, profile or snapshot that does not exist (or cannot, like `/requests/abc`).
    #[error("{what}")]
    NotFound { what: String },
    #[error("{0}")]
    BadRequest(String),
    /// Reading the farm's state failed.
    #[error("reading the farm state: {0}")]
    State(String),
    #[error("rendering page {template}: {message}")]
    Render {
        template: &'static str,
        message: String,
    },
    #[error("reading the log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: background task failed: {message}")]
    Task { what: &'static str, message: String },
}

impl WebError {
    pub fn not_found(what: impl Into<String>) -> WebError {
        WebError::NotFound { what: what.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound { .. } => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ApiError> for WebError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::NotFound(what) => WebError::NotFound { what },
            ApiError::BadRequest(message) => WebError::BadRequest(message),
            other => WebError::State(other.to_string()),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("web page: {self}");
        }
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "Internal error",
        };
        let body = super::render::error_page(title, &self.to_string());
        (status, Html(body)).into_response()
    }
}
