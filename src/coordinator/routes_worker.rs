//! The worker protocol: register, long-poll for work, heartbeat, stream the log, upload
//! binpkgs, report completion. Every call needs the worker's own token.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use super::protocol::*;
use super::{ApiError, Coordinator};
use crate::store::{
    Completion, RequestKind, RequestState, StepOutcome, StepResultFile, StepState, WorkerRow,
};

type App = Arc<Coordinator>;

pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/worker/register", post(register))
        .route("/api/v1/worker/lease", post(lease))
        .route("/api/v1/worker/heartbeat", post(heartbeat))
        .route("/api/v1/worker/plans/{request_id}", post(plan_result))
        .route("/api/v1/worker/steps/{step_id}/log", post(append_log))
        .route(
            "/api/v1/worker/steps/{step_id}/binpkgs",
            put(super::uploads::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/worker/steps/{step_id}/complete", post(complete))
        .route("/api/v1/worker/blobs/{sha512}", get(download_blob))
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The worker a request's token belongs to; 401 (and nothing else) otherwise.
pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<WorkerRow, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthorized)?.to_owned();
    app.with_db(move |db| db.authenticate_worker(&token))
        .await?
        .ok_or(ApiError::Unauthorized)
}

async fn register(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<RegisterRequest>,
) -> Result<Json<RegisterReply>, ApiError> {
    let worker = authenticate(&app, &headers).await?;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for name in &body.profiles {
        match app.profile(name) {
            Ok(profile) => {
                let missing_flags: Vec<&String> = profile
                    .worker
                    .cpu_flags
                    .iter()
                    .filter(|f| !body.cpu_flags.contains(f))
                    .collect();
                let missing_labels: Vec<&String> = profile
                    .worker
                    .labels
                    .iter()
                    .filter(|l| !body.labels.contains(l))
                    .collect();
                if !missing_flags.is_empty() {
                    refused.push((name.clone(), format!("CPU lacks flags {missing_flags:?}")));
                } else if !missing_labels.is_empty() {
                    refused.push((
                        name.clone(),
                        format!("worker lacks labels {missing_labels:?}"),
                    ));
                } else {
                    accepted.push(profile.name.clone());
                }
            }
            Err(err) => refused.push((name.clone(), err.to_string())),
        }
    }
    let capabilities = crate::store::WorkerCapabilities {
        profiles: accepted.clone(),
        labels: body.labels.clone(),
        details: serde_json::json!({
            "host": body.host,
            "cpu_flags": body.cpu_flags,
            "slots": body.slots,
            "refused_profiles": refused,
        }),
    };
    let now = crate::store::unix_now();
    let worker_id = worker.id;
    app.with_db(move |db| db.set_worker_capabilities(worker_id, &capabilities, now))
        .await?;
    for (profile, reason) in &refused {
        tracing::warn!(
            "worker {}: profile {profile} refused: {reason}",
            worker.name
        );
    }
    tracing::info!(
        "worker {} registered from {} for {:?}",
        worker.name,
        body.host,
        accepted
    );
    app.work_available.notify_waiters();
    let queue = &app.config.queue;
    Ok(Json(RegisterReply {
        worker: worker.name,
        accepted_profiles: accepted,
        refused_profiles: refused,
        heartbeat_seconds: queue.heartbeat_seconds,
        lease_seconds: queue.lease_seconds,
        max_log_bytes: queue.max_log_bytes,
    }))
}

/// Long-polls for a job: a planning job of the worker's profiles first (it unblocks a
/// whole request), then the best ready step.
async fn lease(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<LeaseRequest>,
) -> Result<Response, ApiError> {
    let worker = authenticate(&app, &headers).await?;
    // An idle worker only long-polls: the poll shows it alive on the dashboard.
    let (worker_id, now) = (worker.id, crate::store::unix_now());
    app.with_db(move |db| db.mark_worker_seen(worker_id, now))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(body.wait_seconds.min(60));
    loop {
        // Registered before looking, so a change between the look and the wait wakes us.
        let notified = app.work_available.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(job) = next_job(&app, &worker).await? {
            return Ok(Json(job).into_response());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        // Retries become ready by time, not by an event: look again at least every 2 s.
        let wait = (deadline - now).min(Duration::from_secs(2));
        let _ = tokio::time::timeout(wait, notified).await;
    }
}

async fn next_job(app: &App, worker: &WorkerRow) -> Result<Option<Job>, ApiError> {
    let now = crate::store::unix_now();
    let lease_secs = app.config.queue.lease_seconds as i64;
    let worker_id = worker.id;
    let planning: Vec<_> = app
        .with_db(|db| db.unfinished_requests())
        .await?
        .into_iter()
        .filter(|r| r.state == RequestState::Planning && worker.profiles.contains(&r.profile))
        .collect();
    for request in planning {
        if let Some(token) = app
            .planning
            .try_take(request.id, worker_id, now, lease_secs)
        {
            tracing::info!(
                "request {}: planning handed to worker {}",
                request.id,
                worker.name
            );
            return Ok(Some(Job::Plan(PlanJob {
                request_id: request.id,
                profile: request.profile,
                targets: vec![request.target],
                plan_lease: token,
            })));
        }
    }
    if worker.paused {
        return Ok(None);
    }
    let leased = app
        .with_db(move |db| {
            let Some(lease) = db.lease_next(worker_id, now)? else {
                return Ok(None);
            };
            let binpkgs = db.request_binpkgs(lease.request_id)?;
            Ok(Some((lease, binpkgs)))
        })
        .await?;
    let Some((lease, binpkgs)) = leased else {
        return Ok(None);
    };
    tracing::info!(
        "step {} ({} for {}) leased to worker {} (lease {}, attempt {})",
        lease.step_id,
        lease.cpv,
        lease.profile,
        worker.name,
        lease.lease_id,
        lease.attempt
    );
    Ok(Some(Job::Build(BuildJob {
        lease_id: lease.lease_id,
        step_id: lease.step_id,
        request_id: lease.request_id,
        profile: lease.profile,
        cpv: lease.cpv,
        slot: lease.slot,
        repo: lease.repo,
        use_flags: lease.use_flags,
        build_id: lease.build_id,
        attempt: lease.attempt,
        binpkgs: binpkgs
            .into_iter()
            .map(|b| FarmBinpkg {
                cpv: b.cpv,
                path: b.path,
                sha512: b.sha512,
                size: b.size,
            })
            .collect(),
    })))
}

async fn heartbeat(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<HeartbeatRequest>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let worker = authenticate(&app, &headers).await?;
    let now = crate::store::unix_now();
    let lease_secs = app.config.queue.lease_seconds as i64;
    let leases = body.leases.clone();
    // A load that is not a finite non-negative number is ignored, not stored.
    let load = body.load_1min.filter(|l| l.is_finite() && *l >= 0.0);
    let reply = app
        .with_db(move |db| {
            let reply = db.heartbeat(worker.id, &leases, now)?;
            if let Some(load) = load {
                db.set_worker_load(worker.id, load)?;
            }
            Ok(reply)
        })
        .await?;
    let revoked_plans = body
        .plan_leases
        .iter()
        .filter(|token| !app.planning.renew(token, worker.id, now, lease_secs))
        .cloned()
        .collect();
    Ok(Json(HeartbeatReply {
        revoked: reply.revoked,
        revoked_plans,
    }))
}

#[derive(Deserialize)]
struct PlanLeaseQuery {
    lease: String,
}

async fn plan_result(
    State(app): State<App>,
    headers: HeaderMap,
    Path(request_id): Path<i64>,
    Query(query): Query<PlanLeaseQuery>,
    Json(body): Json<PlanResult>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let worker = authenticate(&app, &headers).await?;
    if !app.planning.finish(request_id, &query.lease, worker.id) {
        return Err(ApiError::Conflict(format!(
            "request {request_id}: plan lease {} is not current (expired or taken over)",
            query.lease
        )));
    }
    let request = app.with_db(move |db| db.request(request_id)).await?;
    let now = crate::store::unix_now();
    let answer = match body {
        PlanResult::Failed { error } => {
            let message = format!("planning on worker {} failed: {error}", worker.name);
            let stored = message.clone();
            app.with_db(move |db| db.fail_request_planning(request_id, &stored, now))
                .await?;
            tracing::warn!("request {request_id}: {message}");
            serde_json::json!({ "status": "failed", "error": message })
        }
        PlanResult::Planned { merge_list } => {
            let profile = app.profile(&request.profile)?;
            let result = tokio::task::spawn_blocking({
                let app = app.clone();
                move || plan_from_merge_list(&app, &request, &profile, &merge_list, now)
            })
            .await
            .map_err(|e| ApiError::internal("planning task", e))?;
            match result {
                Ok(summary) => {
                    tracing::info!(
                        "request {request_id}: planned {} steps ({} to build, {} cached, {} cached failures)",
                        summary.steps,
                        summary.to_build,
                        summary.cached,
                        summary.cached_failures
                    );
                    serde_json::json!({
                        "status": "planned",
                        "steps": summary.steps,
                        "to_build": summary.to_build,
                        "cached": summary.cached,
                        "cached_failures": summary.cached_failures,
                    })
                }
                Err(message) => {
                    tracing::warn!("request {request_id}: planning failed: {message}");
                    serde_json::json!({ "status": "failed", "error": message })
                }
            }
        }
    };
    app.work_available.notify_waiters();
    super::finish::after_step_change(&app, request_id).await;
    Ok(Json(answer))
}

fn plan_from_merge_list(
    app: &Coordinator,
    request: &crate::store::RequestRow,
    profile: &crate::profile::Profile,
    merge_list: &serde_json::Value,
    now: i64,
) -> Result<crate::plan::PlanSummary, String> {
    let mut db = app.store.connect().map_err(|e| e.to_string())?;
    let fail = |db: &mut crate::store::Db, message: String| {
        let _ = db.fail_request_planning(request.id, &message, now);
        message
    };
    let packages = match crate::plan::parse_merge_list(&merge_list.to_string()) {
        Ok(p) => p,
        Err(e) => {
            return Err(fail(
                &mut db,
                format!("bad merge list from the worker: {e}"),
            ))
        }
    };
    let mode = match request.kind {
        RequestKind::Nightly => crate::plan::RequestMode::Nightly,
        RequestKind::Manual => {
            let atom = crate::atom::Atom::parse(&request.target)
                .map_err(|e| fail(&mut db, e.to_string()))?;
            let targets: Vec<String> = packages
                .iter()
                .filter(|p| {
                    crate::atom::Cpv::parse(&p.cpv).is_ok_and(|cpv| {
                        let (slot, sub) = p.slot.split_once('/').unwrap_or((p.slot.as_str(), ""));
                        atom.matches(
                            &cpv,
                            Some((slot, (!sub.is_empty()).then_some(sub))),
                            Some(&p.repo),
                        )
                    })
                })
                .map(|p| p.cpv.clone())
                .collect();
            if targets.is_empty() {
                return Err(fail(
                    &mut db,
                    format!("{} matches nothing in the merge list", request.target),
                ));
            }
            crate::plan::RequestMode::Rebuild { targets }
        }
    };
    let mut repos = crate::plan::Repos::new();
    for repo in &profile.repositories {
        if let Err(e) = repos.add_path(&repo.location) {
            return Err(fail(&mut db, format!("repository {}: {e}", repo.name)));
        }
    }
    crate::plan::plan_request(
        &mut db,
        request.id,
        &packages,
        &profile.build_settings(),
        &repos,
        &mode,
        now,
    )
    .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
pub struct LeaseQuery {
    pub lease: i64,
}

/// The step, if `lease` is the worker's current lease of it.
pub async fn leased_step(
    app: &App,
    worker: &WorkerRow,
    step_id: i64,
    lease: i64,
) -> Result<crate::store::StepRow, ApiError> {
    let step = app.with_db(move |db| db.step(step_id)).await?;
    let current = step.lease_id == Some(lease)
        && step.lease_worker_id == Some(worker.id)
        && matches!(step.state, StepState::Leased | StepState::Building);
    if !current {
        return Err(ApiError::Conflict(format!(
            "step {step_id}: lease {lease} is not held by worker {} (step is {})",
            worker.name, step.state
        )));
    }
    Ok(step)
}

async fn append_log(
    State(app): State<App>,
    headers: HeaderMap,
    Path(step_id): Path<i64>,
    Query(query): Query<LeaseQuery>,
    chunk: Bytes,
) -> Result<StatusCode, ApiError> {
    let worker = authenticate(&app, &headers).await?;
    let step = leased_step(&app, &worker, step_id, query.lease).await?;
    if step.state == StepState::Leased {
        let now = crate::store::unix_now();
        let (lease, worker_id) = (query.lease, worker.id);
        app.with_db(move |db| db.mark_building(step_id, lease, worker_id, now))
            .await?;
    }
    let path = app.log_path(step_id);
    let cap = app.config.queue.max_log_bytes;
    tokio::task::spawn_blocking(move || append_capped(&path, &chunk, cap))
        .await
        .map_err(|e| ApiError::internal("log task", e))?
        .map_err(|e| ApiError::internal("appending to the step log", e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Appends up to `cap` bytes in all; the first chunk past the cap leaves one note.
fn append_capped(path: &std::path::Path, chunk: &[u8], cap: u64) -> std::io::Result<()> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size >= cap {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let room = usize::try_from(cap - size).unwrap_or(usize::MAX);
    if chunk.len() <= room {
        file.write_all(chunk)
    } else {
        file.write_all(&chunk[..room])?;
        file.write_all(b"\n[binfarm: log truncated at the configured max_log_bytes]\n")
    }
}

async fn complete(
    State(app): State<App>,
    headers: HeaderMap,
    Path(step_id): Path<i64>,
    Json(body): Json<CompleteRequest>,
) -> Result<Json<CompleteReply>, ApiError> {
    let worker = authenticate(&app, &headers).await?;
    let log_blob = store_log(&app, step_id).await?;
    let (lease_id, outcome) = match body {
        CompleteRequest::Succeeded {
            lease_id,
            duration_ms,
            files,
        } => (
            lease_id,
            StepOutcome::Succeeded {
                duration_ms,
                log_blob,
                results: files
                    .into_iter()
                    .map(|f| StepResultFile {
                        name: f.path,
                        blob: f.blob,
                    })
                    .collect(),
            },
        ),
        CompleteRequest::Failed {
            lease_id,
            duration_ms,
            error,
            retryable,
        } => (
            lease_id,
            StepOutcome::Failed {
                duration_ms,
                log_blob,
                error,
                retryable,
            },
        ),
    };
    let (succeeded, duration_ms) = match &outcome {
        StepOutcome::Succeeded { duration_ms, .. } => (true, *duration_ms),
        StepOutcome::Failed { duration_ms, .. } => (false, *duration_ms),
    };
    if let StepOutcome::Succeeded { results, .. } = &outcome {
        if results.is_empty() {
            return Err(ApiError::BadRequest(
                "a successful step must name the binpkgs it uploaded".into(),
            ));
        }
    }
    let now = crate::store::unix_now();
    let worker_id = worker.id;
    let completion = app
        .with_db(move |db| db.complete_step(step_id, lease_id, worker_id, &outcome, now))
        .await?;
    let status = match &completion {
        Completion::Recorded { state } => format!("recorded: step is {state}"),
        Completion::AlreadyRecorded => "already recorded".to_owned(),
        Completion::Ignored { reason } => format!("ignored: {reason}"),
    };
    tracing::info!(
        "step {step_id}: completion from worker {}: {status}",
        worker.name
    );
    let step = app.with_db(move |db| db.step(step_id)).await?;
    if matches!(completion, Completion::Recorded { .. }) {
        let duration = Duration::from_millis(u64::try_from(duration_ms).unwrap_or(0));
        app.metrics
            .observe_build(&step.profile, succeeded, duration);
    }
    app.work_available.notify_waiters();
    super::finish::after_step_change(&app, step.request_id).await;
    Ok(Json(CompleteReply { status }))
}

/// Keeps the step's log as a blob (a retry appends to the same file).
async fn store_log(app: &App, step_id: i64) -> Result<Option<String>, ApiError> {
    let path = app.log_path(step_id);
    let app2 = app.clone();
    let stored = tokio::task::spawn_blocking(move || -> Result<Option<(String, u64)>, String> {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let blob = app2
            .store
            .blobs()
            .put_stream(file, None, u64::MAX)
            .map_err(|e| e.to_string())?;
        Ok(Some((blob.sha512, blob.size)))
    })
    .await
    .map_err(|e| ApiError::internal("log task", e))?
    .map_err(|e| ApiError::internal("storing the log", e))?;
    let Some((sha512, size)) = stored else {
        return Ok(None);
    };
    let now = crate::store::unix_now();
    let recorded = sha512.clone();
    app.with_db(move |db| db.record_blob(&recorded, size, "log", now))
        .await?;
    Ok(Some(sha512))
}

async fn download_blob(
    State(app): State<App>,
    headers: HeaderMap,
    Path(sha512): Path<String>,
) -> Result<Response, ApiError> {
    authenticate(&app, &headers).await?;
    let file = app
        .store
        .blobs()
        .open_blob(&sha512)
        .map_err(|e| ApiError::NotFound(format!("blob {sha512}: {e}")))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20);
    Ok((
        [(header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}
