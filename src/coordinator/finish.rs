//! What happens when a request reaches its end: the summary is logged, the snapshot is
//! made and published (publishing module), and the configured notifications go out.

use std::sync::Arc;

use serde::Serialize;

use super::Coordinator;
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
    /// The request's web page.
    pub url: String,
    /// The request as JSON (admin API).
    pub api_url: String,
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
    let steps = match app.with_db(move |db| db.request_steps(request_id)).await {
        Ok(steps) => steps,
        Err(err) => {
            tracing::error!("request {request_id}: reading steps: {err}");
            return;
        }
    };
    let base = app.config.public_url();
    let summary = RequestSummary {
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
        url: format!("{base}{}", crate::web::request_url(request_id)),
        api_url: format!("{base}/api/v1/requests/{request_id}"),
    };
    tracing::info!(
        "request {request_id} ({} {}) {}: {} steps, {} built, {} cached, {} failed or blocked",
        summary.kind,
        summary.profile,
        summary.state,
        summary.steps,
        summary.built,
        summary.cached,
        summary.failed.len()
    );
    if request.state == RequestState::Succeeded {
        publish(app, &request).await;
    }
    notify(app, &summary).await;
}

/// A succeeded request becomes a snapshot published to `testing`: the local mirror tree
/// first, then every FTP target (blobs first, index last on each).
async fn publish(app: &Arc<Coordinator>, request: &crate::store::RequestRow) {
    let profile = match app.profile(&request.profile) {
        Ok(p) => p,
        Err(err) => {
            tracing::error!("request {}: cannot publish: {err}", request.id);
            return;
        }
    };
    let app2 = app.clone();
    let request_id = request.id;
    let published =
        tokio::task::spawn_blocking(move || -> Result<crate::publish::PublishOutcome, String> {
            let settings = crate::publish::config::PublishConfig::from_farm(&app2.config);
            let mut publisher =
                crate::publish::Publisher::new(app2.store.clone(), settings.mirror_root.clone());
            publisher.ttl = (settings.ttl > 0).then_some(settings.ttl);
            publisher.retention = settings.retention;
            let mut db = app2.store.connect().map_err(|e| e.to_string())?;
            let options = crate::publish::RequestSnapshotOptions {
                allow_incomplete: false,
                note: Some(format!("request {request_id}")),
            };
            crate::publish::publish_request(
                &publisher,
                &mut db,
                &profile,
                request_id,
                &options,
                crate::store::unix_now(),
            )
            .map_err(|e| e.to_string())
        })
        .await;
    let outcome = match published {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => {
            tracing::error!("request {request_id}: publishing failed: {err}");
            return;
        }
        Err(err) => {
            tracing::error!("request {request_id}: publishing task: {err}");
            return;
        }
    };
    tracing::info!(
        "request {request_id}: snapshot {} published to {}/{}",
        outcome.snapshot,
        outcome.profile,
        outcome.channel
    );
    let tree = app
        .config
        .mirror
        .root
        .join(&outcome.profile)
        .join(&outcome.channel);
    let remote_dir = format!("{}/{}", outcome.profile, outcome.channel);
    for target in &app.config.ftp {
        match target.publish_tree(&tree, &remote_dir).await {
            Ok(report) => tracing::info!(
                "request {request_id}: ftp {} {remote_dir}: {} uploaded, {} already there",
                target.host_label(),
                report.uploaded,
                report.already_present
            ),
            Err(err) => tracing::error!("request {request_id}: ftp {}: {err}", target.host_label()),
        }
    }
}

async fn notify(app: &Arc<Coordinator>, summary: &RequestSummary) {
    let Ok(json) = serde_json::to_string_pretty(summary) else {
        return;
    };
    if let Some(command) = &app.config.notify.command {
        let command = command.clone();
        let json = json.clone();
        let (id, state) = (summary.request_id.to_string(), summary.state.clone());
        let outcome =
            tokio::task::spawn_blocking(move || run_notify_command(&command, &json, &id, &state))
                .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("notify command: {err}"),
            Err(err) => tracing::warn!("notify command: {err}"),
        }
    }
    if let Some(url) = &app.config.notify.webhook {
        let client = reqwest::Client::new();
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .body(json)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => tracing::warn!("webhook {url}: HTTP {}", resp.status()),
            Err(err) => tracing::warn!("webhook {url}: {err}"),
        }
    }
}

fn run_notify_command(
    command: &str,
    json: &str,
    request_id: &str,
    state: &str,
) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("BINFARM_REQUEST_ID", request_id)
        .env("BINFARM_REQUEST_STATE", state)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes());
    }
    let status = child.wait().map_err(|e| format!("{command}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command}: {status}"))
    }
}
