//! What happens when a request reaches its end: the summary is logged, the snapshot is
//! made and published (publishing module), and the configured notifications go out.

use std::sync::Arc;

use serde::Serialize;

use super::Coordinator;
use crate::publish::RequestPublication;
use crate::store::{RequestState, StepState};

#[derive(Debug, Serialize)]
pub struct RequestSummary {
    pub request_id: i64,
    pub profile: String,
    pub kind: String,
    pub target: String,
    pub state: String,
    pub error: Option<String>,
    pub steps: usize,
    pub built: usize,
    pub cached: usize,
    pub failed: Vec<FailedStep>,
    /// Where a succeeded request's packages went (None: failed, cancelled, or publishing
    /// failed; the coordinator log says why).
    pub published: Option<PublishedSnapshot>,
    /// The request's web page.
    pub url: String,
    /// The request as JSON (admin API).
    pub api_url: String,
}

#[derive(Debug, Serialize)]
pub struct PublishedSnapshot {
    pub snapshot_id: i64,
    pub channel: String,
    /// True when the request changed nothing: the channel already pointed at a snapshot
    /// with exactly its packages, and no new snapshot was made.
    pub unchanged: bool,
}

#[derive(Debug, Serialize)]
pub struct FailedStep {
    pub step_id: i64,
    pub cpv: String,
    pub state: String,
    pub reason: Option<String>,
    /// The build log page (follows a live log).
    pub log_url: String,
    /// The log as plain text.
    pub log_text_url: String,
}

/// Called after anything that may end a request; acts once per finished request.
pub async fn after_step_change(app: &Arc<Coordinator>, request_id: i64) {
    let Ok(request) = app.with_db(move |db| db.request(request_id)).await else {
        return;
    };
    if matches!(
        request.state,
        RequestState::Planning | RequestState::Running
    ) {
        return;
    }
    let first_time = app
        .finished
        .lock()
        .map(|mut set| set.insert(request_id))
        .unwrap_or(false);
    if !first_time {
        return;
    }
    // Publishing (FTP pushes included) and notifying take a while: the worker call or
    // admin call that ended the request must not wait for them.
    tokio::spawn(finish_request(app.clone(), request));
}

/// Publishes a finished request (when it succeeded), then sends its notifications.
async fn finish_request(app: Arc<Coordinator>, request: crate::store::RequestRow) {
    let app = &app;
    let Some(mut summary) = summarize(app, &request).await else {
        return;
    };
    tracing::info!(
        "request {} ({} {}) {}: {} steps, {} built, {} cached, {} failed or blocked",
        request.id,
        summary.kind,
        summary.profile,
        summary.state,
        summary.steps,
        summary.built,
        summary.cached,
        summary.failed.len()
    );
    if request.state == RequestState::Succeeded {
        summary.published = publish(app, &request).await;
    }
    super::notify::notify(&app.config.notify, &app.metrics, &summary).await;
}

/// What notifications say of a finished request (not yet where it was published).
async fn summarize(
    app: &Arc<Coordinator>,
    request: &crate::store::RequestRow,
) -> Option<RequestSummary> {
    let request_id = request.id;
    let steps = match app.with_db(move |db| db.request_steps(request_id)).await {
        Ok(steps) => steps,
        Err(err) => {
            tracing::error!("request {request_id}: reading steps: {err}");
            return None;
        }
    };
    let base = app.config.public_url();
    Some(RequestSummary {
        request_id,
        profile: request.profile.clone(),
        kind: request.kind.to_string(),
        target: request.target.clone(),
        state: request.state.to_string(),
        error: request.error.clone(),
        steps: steps.len(),
        built: steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded)
            .count(),
        cached: steps
            .iter()
            .filter(|s| s.state == StepState::Cached)
            .count(),
        failed: steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Failed | StepState::Blocked))
            .map(|s| FailedStep {
                step_id: s.id,
                cpv: s.cpv.clone(),
                state: s.state.to_string(),
                reason: s.reason.clone(),
                log_url: format!("{base}{}", crate::web::step_log_url(s.id)),
                log_text_url: format!("{base}/api/v1/steps/{}/log", s.id),
            })
            .collect(),
        published: None,
        url: format!("{base}{}", crate::web::request_url(request_id)),
        api_url: format!("{base}/api/v1/requests/{request_id}"),
    })
}

/// A succeeded request becomes a snapshot published to `testing`: the local mirror tree
/// first, then every FTP target (blobs first, index last on each).
async fn publish(
    app: &Arc<Coordinator>,
    request: &crate::store::RequestRow,
) -> Option<PublishedSnapshot> {
    let publication = {
        let _publishing = app.publishing.lock().await;
        publish_locally(app, request.id, &request.profile, None).await
    }?;
    if let RequestPublication::Published(outcome) = &publication {
        push_to_ftp(app, &outcome.profile, &outcome.channel).await;
    }
    Some(PublishedSnapshot::of(publication))
}

impl PublishedSnapshot {
    fn of(publication: RequestPublication) -> PublishedSnapshot {
        match publication {
            RequestPublication::Published(outcome) => PublishedSnapshot {
                snapshot_id: outcome.snapshot,
                channel: outcome.channel,
                unchanged: false,
            },
            RequestPublication::Unchanged { snapshot, .. } => PublishedSnapshot {
                snapshot_id: snapshot,
                channel: crate::publish::TESTING.to_string(),
                unchanged: true,
            },
        }
    }
}

/// The publishing settings of farm.toml, for the coordinator's store.
fn publisher(app: &Coordinator) -> crate::publish::Publisher {
    let settings = crate::publish::config::PublishConfig::from_farm(&app.config);
    let mut publisher =
        crate::publish::Publisher::new(app.store.clone(), settings.mirror_root.clone());
    publisher.ttl = (settings.ttl > 0).then_some(settings.ttl);
    publisher.retention = settings.retention;
    publisher
}

/// Publishes request `request_id` of `profile` to the local `testing` tree: its snapshot
/// `existing` (made before a crash, never published) or a new one. Errors are logged;
/// None then. Callers hold `app.publishing`.
async fn publish_locally(
    app: &Arc<Coordinator>,
    request_id: i64,
    profile: &str,
    existing: Option<crate::publish::SnapshotId>,
) -> Option<crate::publish::RequestPublication> {
    let profile = match app.profile(profile) {
        Ok(p) => p,
        Err(err) => {
            tracing::error!("request {request_id}: cannot publish: {err}");
            return None;
        }
    };
    let app2 = app.clone();
    let started = std::time::Instant::now();
    let published = tokio::task::spawn_blocking(move || -> Result<RequestPublication, String> {
        let publisher = publisher(&app2);
        let mut db = app2.store.connect().map_err(|e| e.to_string())?;
        let now = crate::store::unix_now();
        match existing {
            Some(snapshot) => crate::publish::publish_snapshot_to(
                &publisher,
                &mut db,
                snapshot,
                crate::publish::TESTING,
                now,
            )
            .map(RequestPublication::Published),
            None => crate::publish::publish_request(
                &publisher,
                &mut db,
                &profile,
                request_id,
                &crate::publish::RequestSnapshotOptions {
                    allow_incomplete: false,
                    note: Some(format!("request {request_id}")),
                },
                now,
            ),
        }
        .map_err(|e| e.to_string())
    })
    .await;
    let ok = matches!(published, Ok(Ok(_)));
    app.metrics.observe_publish("local", ok, started.elapsed());
    match published {
        Ok(Ok(publication)) => {
            match &publication {
                RequestPublication::Published(outcome) => tracing::info!(
                    "request {request_id}: snapshot {} published to {}/{}",
                    outcome.snapshot,
                    outcome.profile,
                    outcome.channel
                ),
                RequestPublication::Unchanged { profile, snapshot } => tracing::info!(
                    "request {request_id}: nothing changed; {profile}/{} stays at snapshot \
                     {snapshot}, no new snapshot",
                    crate::publish::TESTING
                ),
            }
            Some(publication)
        }
        Ok(Err(err)) => {
            tracing::error!("request {request_id}: publishing failed: {err}");
            None
        }
        Err(err) => {
            tracing::error!("request {request_id}: publishing task: {err}");
            None
        }
    }
}

/// The local tree of `profile`/`channel` to every FTP target of farm.toml (one push at a
/// time, so an older tree never overtakes a newer one on a server).
async fn push_to_ftp(app: &Arc<Coordinator>, profile: &str, channel: &str) {
    if app.config.ftp.is_empty() {
        return;
    }
    let _pushing = app.ftp_pushing.lock().await;
    let started = std::time::Instant::now();
    let pushes = crate::publish::mirrors::push_tree(
        &app.config.ftp,
        &app.config.mirror.root,
        profile,
        channel,
        &crate::progress::Progress::none(),
    )
    .await;
    for push in pushes {
        // Targets are pushed at once: a failed one is timed by the whole push.
        let elapsed = push
            .result
            .as_ref()
            .map_or(started.elapsed(), |r| r.elapsed);
        let target = format!("ftp:{}", push.host);
        app.metrics
            .observe_publish(&target, push.result.is_ok(), elapsed);
        match push.result {
            Ok(report) => tracing::info!(
                "ftp {} {profile}/{channel}: {} uploaded, {} already there",
                push.host,
                report.uploaded,
                report.already_present
            ),
            Err(err) => tracing::error!("ftp {} {profile}/{channel}: {err}", push.host),
        }
    }
}

/// Run once when the coordinator starts: finishes the publishing a previous run left
/// undone when it was killed (or publishing failed).
/// 1. channel trees that are not at their pointer's snapshot (killed between the pointer
///    move and the index) are published again;
/// 2. succeeded requests whose snapshot never reached `testing` are published, oldest
///    first (see [`crate::store::Db::unpublished_requests`]); each is claimed in
///    `app.finished` first, so a request is published by one path only;
/// 3. every channel tree goes to the FTP targets (killed before, or a server was down):
///    only what a server lacks is uploaded.
pub async fn recover_publishing(app: Arc<Coordinator>) {
    let mut recovered = Vec::new();
    let channels = {
        let _publishing = app.publishing.lock().await;
        resync_local_trees(&app).await;
        let unpublished = match app
            .with_db(|db| db.unpublished_requests(crate::publish::TESTING))
            .await
        {
            Ok(list) => list,
            Err(err) => {
                tracing::error!("finding requests to publish: {err}");
                Vec::new()
            }
        };
        tracing::info!(
            "startup: {} succeeded request(s) without a published snapshot",
            unpublished.len()
        );
        for request in unpublished {
            let claimed = app
                .finished
                .lock()
                .map(|mut set| set.insert(request.request_id))
                .unwrap_or(false);
            if !claimed {
                continue;
            }
            tracing::info!(
                "request {} ({}) succeeded but was not published{}: publishing it now",
                request.request_id,
                request.profile,
                match request.snapshot_id {
                    Some(id) => format!(" (its snapshot {id} was made)"),
                    None => String::new(),
                }
            );
            let publication = publish_locally(
                &app,
                request.request_id,
                &request.profile,
                request.snapshot_id,
            )
            .await;
            if let Some(publication) = publication {
                recovered.push((request.request_id, PublishedSnapshot::of(publication)));
            }
        }
        app.with_db(|db| db.list_channels(None))
            .await
            .unwrap_or_else(|err| {
                tracing::error!("listing channels: {err}");
                Vec::new()
            })
    };
    for channel in channels {
        push_to_ftp(&app, &channel.profile, &channel.name).await;
    }
    tracing::info!("startup: publishing recovered");
    // Their notifications were due after the publish that did not happen.
    for (request_id, published) in recovered {
        let Ok(request) = app.with_db(move |db| db.request(request_id)).await else {
            continue;
        };
        if let Some(mut summary) = summarize(&app, &request).await {
            summary.published = Some(published);
            super::notify::notify(&app.config.notify, &app.metrics, &summary).await;
        }
    }
}

/// Publishes again every channel tree whose last recorded publish is not of the snapshot
/// its channel points at.
async fn resync_local_trees(app: &Arc<Coordinator>) {
    let app2 = app.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Result<Vec<String>, String> {
        let publisher = publisher(&app2);
        let mut db = app2.store.connect().map_err(|e| e.to_string())?;
        let shown: std::collections::HashMap<String, i64> = db
            .list_mirror_trees()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| (t.tree, t.snapshot_id))
            .collect();
        let mut done = Vec::new();
        for channel in db.list_channels(None).map_err(|e| e.to_string())? {
            let tree =
                crate::publish::tree_dir(&publisher.mirror_root, &channel.profile, &channel.name)
                    .map_err(|e| e.to_string())?;
            if shown.get(tree.to_string_lossy().as_ref()) == Some(&channel.snapshot_id) {
                continue;
            }
            crate::publish::sync_channel(
                &publisher,
                &mut db,
                &channel.profile,
                &channel.name,
                crate::store::unix_now(),
            )
            .map_err(|e| format!("{}/{}: {e}", channel.profile, channel.name))?;
            done.push(format!(
                "{}/{} (snapshot {})",
                channel.profile, channel.name, channel.snapshot_id
            ));
        }
        Ok(done)
    })
    .await;
    match outcome {
        Ok(Ok(done)) if !done.is_empty() => {
            tracing::warn!("startup: trees behind their channel, published again: {done:?}")
        }
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::error!("startup: publishing channel trees again: {err}"),
        Err(err) => tracing::error!("startup: channel tree task: {err}"),
    }
}
