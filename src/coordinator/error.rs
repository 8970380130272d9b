//! Errors of the HTTP layer and how they answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::protocol::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong token. The answer says nothing more.
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        ApiError::Internal(format!("{context}: {err}"))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        match err {
            E::NoSuchRequest { .. } | E::NoSuchStep { .. } | E::NoSuchWorker { .. } => {
                ApiError::NotFound(err.to_string())
            }
            E::WorkerExists { .. }
            | E::RequestState { .. }
            | E::UnknownLease { .. }
            | E::NotLeaseHolder { .. }
            | E::ConflictingCompletion { .. } => ApiError::Conflict(err.to_string()),
            E::MissingBlob { .. } => ApiError::BadRequest(err.to_string()),
            other => ApiError::internal("store", other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(message) => {
                tracing::error!("{message}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}
