//! `GET /metrics`: on the coordinator, and on a mirror served alone.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{encode_mirror, WORKER_SEEN_SECONDS};
use crate::coordinator::{ApiError, Coordinator};
use crate::mirror::MirrorMetrics;

/// The coordinator's `/metrics` (merged into its router).
pub fn router() -> Router<Arc<Coordinator>> {
    Router::new().route("/metrics", get(scrape))
}

/// `/metrics` of a mirror served alone; merged in front of the mirror's file handler, so
/// it shadows a top-level mirror directory named `metrics`.
pub fn mirror_router(metrics: Arc<MirrorMetrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { exposition(encode_mirror(&metrics)) }
        }),
    )
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
