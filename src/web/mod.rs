//! The coordinator's web status pages, rendered on the server from the handlebars templates
//! in `templates/web/` (embedded in the binary). Read-only, like the GET API: no token.
//!
//! - `/`: dashboard: profiles by channel (snapshot, age), the queue, running steps,
//!   workers (last heartbeat, load), recent requests.
//! - `/requests/{id}`: a request and its steps (state, reason, attempts, duration, log).
//! - `/steps/{id}/log`: a step's build log; a small inline script follows it while the step
//!   runs, polling `/api/v1/steps/{id}/log?offset=N` until the log is complete.
//! - `/snapshots/{profile}/diff?from=A&to=B`: what changes between two snapshots.
//!
//! Every page is assembled from the store in one database call and rendered by
//! [`render::render`]; nothing here changes state.

mod error;
mod pages;
pub mod render;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use axum::Router;

pub use error::WebError;

use crate::coordinator::Coordinator;

type App = Arc<Coordinator>;

/// The pages, to merge into the coordinator's router.
pub fn router() -> Router<App> {
    Router::new()
        .route("/", get(dashboard))
        .route("/requests/{id}", get(request_page))
        .route("/steps/{id}/log", get(step_log_page))
        .route("/snapshots/{profile}/diff", get(snapshot_diff_page))
}

/// The URL of a request's page.
pub fn request_url(id: i64) -> String {
    format!("/requests/{id}")
}

/// The URL of a step's log page.
pub fn step_log_url(id: i64) -> String {
    format!("/steps/{id}/log")
}

/// The URL of the diff page of a profile; `from` None compares with the snapshot before.
pub fn snapshot_diff_url(profile: &str, from: Option<i64>, to: i64) -> String {
    let profile =
        percent_encoding::utf8_percent_encode(profile, percent_encoding::NON_ALPHANUMERIC);
    match from {
        Some(from) => format!("/snapshots/{profile}/diff?from={from}&to={to}"),
        None => format!("/snapshots/{profile}/diff?to={to}"),
    }
}

/// An id from the path; anything that is not one cannot name a thing that exists.
fn parse_id(what: &str, path: Result<Path<String>, PathRejection>) -> Result<i64, WebError> {
    let Path(raw) = path.map_err(|e| WebError::not_found(format!("no {what}: {e}")))?;
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| WebError::not_found(format!("no {what} {raw:?}")))
}

async fn dashboard(State(app): State<App>) -> Result<Html<String>, WebError> {
    let data = app.with_db(pages::DashboardData::read).await?;
    let page = pages::dashboard(&data, crate::store::unix_now());
    Ok(Html(render::render("dashboard", "Farm status", &page)?))
}

async fn request_page(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Html<String>, WebError> {
    let id = parse_id("request", id)?;
    let log_app = app.clone();
    let data = app
        .with_db(move |db| pages::RequestData::read(db, id, |step| log_app.log_path(step)))
        .await?;
    let page = pages::request(&data, crate::store::unix_now());
    Ok(Html(render::render(
        "request",
        &format!("Request #{id}"),
        &page,
    )?))
}

async fn step_log_page(
    State(app): State<App>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Html<String>, WebError> {
    let id = parse_id("step", id)?;
    let (step, worker) = app
        .with_db(move |db| {
            let step = db.step(id)?;
            let worker = db.step_attempts(id)?.pop().map(|a| a.worker);
            Ok((step, worker))
        })
        .await?;
    // The same file the log API serves: the live file, or the stored blob after the fact.
    let live = app.log_path(id);
    let path = if live.exists() {
        Some(live)
    } else if let Some(blob) = &step.log_blob {
        Some(
            app.store
                .blobs()
                .path_of(blob)
                .map_err(|e| WebError::State(format!("log blob of step {id}: {e}")))?,
        )
    } else {
        None
    };
    let tail = match path {
        Some(path) => tokio::task::spawn_blocking(move || {
            pages::read_log_tail(&path, pages::PAGE_LOG_BYTES).map_err(|source| WebError::Log {
                path: path.clone(),
                source,
            })
        })
        .await
        .map_err(|e| WebError::Task {
            what: "reading the log",
            message: e.to_string(),
        })??,
        None => pages::LogTail::default(),
    };
    let page = pages::step_log(&step, worker, tail);
    Ok(Html(render::render(
        "step_log",
        &format!("Build log of {} (step {id})", step.cpv),
        &page,
    )?))
}

async fn snapshot_diff_page(
    State(app): State<App>,
    profile: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Html<String>, WebError> {
    let Path(profile) = profile.map_err(|e| WebError::not_found(format!("no profile: {e}")))?;
    let Query(query) = query.map_err(|e| WebError::BadRequest(e.to_string()))?;
    crate::publish::check_name("profile", &profile)
        .map_err(|_| WebError::not_found(format!("no profile {profile:?}")))?;
    let choice = pages::DiffChoice::parse(query.get("from"), query.get("to"))?;
    let name = profile.clone();
    let data = app
        .with_db(move |db| pages::DiffData::read(db, &name, choice))
        .await??;
    let page = pages::snapshot_diff(&profile, &data);
    Ok(Html(render::render(
        "snapshot_diff",
        &format!("Snapshot changes of {profile}"),
        &page,
    )?))
}
