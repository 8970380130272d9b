//! The admin API (JSON): requests, steps, workers, logs. Reading is open; every call that
//! changes something needs the admin token.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::protocol::NewRequestBody;
use super::routes_worker::bearer;
use super::{ApiError, Coordinator};
use crate::store::{RequestKind, RequestRow, StepRow, WorkerRow};

type App = Arc<Coordinator>;

/// Tells `logs --follow` whether more may come.
pub const LOG_COMPLETE_HEADER: &str = "x-binfarm-log-complete";

pub fn router() -> Router<App> {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/api/v1/requests", post(create_request).get(list_requests))
        .route("/api/v1/requests/{id}", get(show_request))
        .route("/api/v1/requests/{id}/cancel", post(cancel_request))
        .route("/api/v1/workers", get(list_workers))
        .route("/api/v1/workers/{name}/pause", post(pause_worker))
        .route("/api/v1/workers/{name}/resume", post(resume_worker))
        .route("/api/v1/steps/{id}", get(show_step))
        .route("/api/v1/steps/{id}/log", get(step_log))
}

pub fn request_json(r: &RequestRow) -> Value {
    json!({
        "id": r.id, "kind": r.kind.to_string(), "profile": r.profile, "target": r.target,
        "state": r.state.to_string(), "cancel_requested": r.cancel_requested, "error": r.error,
        "created_at": r.created_at, "finished_at": r.finished_at,
    })
}

pub fn step_json(s: &StepRow) -> Value {
    json!({
        "id": s.id, "request_id": s.request_id, "cpv": s.cpv, "slot": s.slot, "repo": s.repo,
        "profile": s.profile, "fingerprint": s.fingerprint, "use": s.use_flags,
        "state": s.state.to_string(), "reason": s.reason, "attempts": s.attempts,
        "max_attempts": s.max_attempts, "build_id": s.build_id, "worker_id": s.lease_worker_id,
        "started_at": s.started_at, "finished_at": s.finished_at, "duration_ms": s.duration_ms,
        "log_blob": s.log_blob,
    })
}

pub fn worker_json(w: &WorkerRow) -> Value {
    json!({
        "id": w.id, "name": w.name, "profiles": w.profiles, "labels": w.labels,
        "capabilities": w.capabilities, "last_heartbeat": w.last_heartbeat, "paused": w.paused,
        "paused_reason": w.paused_reason, "consecutive_failures": w.consecutive_failures,
        "load_1min": w.load_1min,
    })
}

async fn create_request(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<NewRequestBody>,
) -> Result<Json<Value>, ApiError> {
    app.check_admin(bearer(&headers))?;
    let id = match &body {
        NewRequestBody::Nightly { profile } => {
            app.create_request(RequestKind::Nightly, profile, None)
                .await?
        }
        NewRequestBody::Rebuild { profile, atom } => {
            app.create_request(RequestKind::Manual, profile, Some(atom))
                .await?
        }
    };
    let request = app.with_db(move |db| db.request(id)).await?;
    tracing::info!(
        "request {id} created: {} {} {}",
        request.kind,
        request.profile,
        request.target
    );
    Ok(Json(request_json(&request)))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn list_requests(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).min(1000);
    let requests = app.with_db(move |db| db.list_requests(limit)).await?;
    Ok(Json(Value::Array(
        requests.iter().map(request_json).collect(),
    )))
}

async fn show_request(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let (request, steps, published) = app
        .with_db(move |db| {
            let mut steps = Vec::new();
            for step in db.request_steps(id)? {
                let attempts = db.step_attempts(step.id)?;
                steps.push((step, attempts));
            }
            Ok((db.request(id)?, steps, db.request_published(id)?))
        })
        .await?;
    let mut out = request_json(&request);
    // Publishing follows the request's end: null until the snapshot is in `testing`.
    out["published"] = json!(published);
    out["steps"] = Value::Array(
        steps
            .iter()
            .map(|(step, attempts)| {
                let mut json = step_json(step);
                json["built_by"] = attempts
                    .iter()
                    .rev()
                    .find(|a| a.outcome.as_deref() == Some("succeeded"))
                    .map(|a| Value::String(a.worker.clone()))
                    .unwrap_or(Value::Null);
                json["attempt_log"] = attempts
                    .iter()
                    .map(|a| json!({"worker": a.worker, "outcome": a.outcome, "error": a.error, "leased_at": a.leased_at}))
                    .collect();
                json
            })
            .collect(),
    );
    Ok(Json(out))
}

async fn cancel_request(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    app.check_admin(bearer(&headers))?;
    let now = crate::store::unix_now();
    let summary = app.with_db(move |db| db.cancel_request(id, now)).await?;
    app.work_available.notify_waiters();
    super::finish::after_step_change(&app, id).await;
    Ok(Json(json!({
        "id": id,
        "cancelled_steps": summary.cancelled_steps,
        "revoked_leases": summary.revoked_leases,
    })))
}

async fn list_workers(State(app): State<App>) -> Result<Json<Value>, ApiError> {
    let workers = app.with_db(|db| db.list_workers()).await?;
    Ok(Json(Value::Array(
        workers.iter().map(worker_json).collect(),
    )))
}

async fn set_paused(
    app: App,
    headers: HeaderMap,
    name: String,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    app.check_admin(bearer(&headers))?;
    let worker = app.with_db(move |db| {
        let worker = db
            .worker_by_name(&name)?
            .ok_or(crate::store::StoreError::NoSuchWorker {
                what: format!("named {name:?}"),
            })?;
        db.set_worker_paused(worker.id, paused, paused.then_some("paused by an operator"))?;
        db.worker(worker.id)
    });
    let worker = worker.await?;
    app.work_available.notify_waiters();
    Ok(Json(worker_json(&worker)))
}

async fn pause_worker(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(app, headers, name, true).await
}

async fn resume_worker(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(app, headers, name, false).await
}

async fn show_step(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let step = app.with_db(move |db| db.step(id)).await?;
    Ok(Json(step_json(&step)))
}

#[derive(Deserialize)]
struct LogQuery {
    offset: Option<u64>,
}

/// The step's log from `offset` on: the live file while it builds, the stored blob after.
async fn step_log(
    State(app): State<App>,
    Path(id): Path<i64>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let step = app.with_db(move |db| db.step(id)).await?;
    let complete = step.state.is_terminal() || step.state == crate::store::StepState::Ready;
    let live = app.log_path(id);
    let path = if live.exists() {
        live
    } else if let Some(blob) = &step.log_blob {
        app.store
            .blobs()
            .path_of(blob)
            .map_err(|e| ApiError::internal("log blob", e))?
    } else {
        live
    };
    let offset = q.offset.unwrap_or(0);
    let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek};
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut out = Vec::new();
        file.take(8 << 20).read_to_end(&mut out)?;
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal("log task", e))?
    .map_err(|e| ApiError::internal("reading the log", e))?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.headers_mut().insert(
        LOG_COMPLETE_HEADER,
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    Ok(response)
}
