//! The coordinator's `GET /metrics` (the mirror served alone answers its own, see
//! `crate::mirror`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::WORKER_SEEN_SECONDS;
use crate::coordinator::{ApiError, Coordinator};

/// The coordinator's `/metrics` (merged into its router).
pub fn router() -> Router<Arc<Coordinator>> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(app): State<Arc<Coordinator>>) -> Result<Response, ApiError> {
    let now = crate::store::unix_now();
    let gauges = app
        .with_db(move |db| db.farm_gauges(now, WORKER_SEEN_SECONDS))
        .await?;
    app.metrics.set_store_gauges(&gauges);
    Ok(exposition(app.metrics.encode()))
}

fn exposition(text: Result<String, std::fmt::Error>) -> Response {
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, super::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!("encoding metrics: {err}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
