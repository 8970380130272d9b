//! Notifications of finished requests (`[notify]` in farm.toml): a shell command fed the
//! JSON summary on stdin, and/or the same JSON POSTed to a webhook. Both run after the
//! request's publish, in the background; a failing notification is logged, never retried
//! forever and never blocks the farm.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

use super::config::NotifyConfig;
use super::finish::RequestSummary;
use crate::metrics::FarmMetrics;

/// How long one webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before the second webhook try; doubled for each further one.
const WEBHOOK_FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Why a notification did not go out.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify command {command:?}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("notify command {command:?} {status}")]
    CommandFailed { command: String, status: String },
    #[error("notify command {command:?} still running after {seconds} s: killed")]
    CommandTimedOut { command: String, seconds: u64 },
    #[error("webhook {url}: {message} (after {attempts} tries)")]
    Webhook {
        url: String,
        message: String,
        attempts: u32,
    },
}

/// Sends the configured notifications for a finished request; failures are logged and
/// counted (`binfarm_notifications`).
pub async fn notify(config: &NotifyConfig, metrics: &FarmMetrics, summary: &RequestSummary) {
    let json = match serde_json::to_string_pretty(summary) {
        Ok(json) => json,
        Err(err) => {
            tracing::error!("request {}: summary as JSON: {err}", summary.request_id);
            return;
        }
    };
    if let Some(command) = &config.command {
        let timeout = Duration::from_secs(config.command_timeout_seconds);
        let sent = run_command(command, &json, summary, timeout).await;
        if let Err(err) = &sent {
            tracing::warn!("request {}: {err}", summary.request_id);
        }
        metrics.count_notification("command", sent.is_ok());
    }
    if let Some(url) = &config.webhook {
        let sent = post_webhook(url, &json, config.webhook_attempts).await;
        match &sent {
            Ok(()) => tracing::info!("request {}: webhook {url} notified", summary.request_id),
            Err(err) => tracing::warn!("request {}: {err}", summary.request_id),
        }
        metrics.count_notification("webhook", sent.is_ok());
    }
}

/// Runs `command` with `sh -c` in its own process group, JSON on stdin,
/// BINFARM_REQUEST_ID and BINFARM_REQUEST_STATE in the environment. The whole group is
/// killed at `timeout`, so a hung script leaves nothing behind.
pub async fn run_command(
    command: &str,
    json: &str,
    summary: &RequestSummary,
    timeout: Duration,
) -> Result<(), NotifyError> {
    let spawn_error = |source| NotifyError::Spawn {
        command: command.to_string(),
        source,
    };
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("BINFARM_REQUEST_ID", summary.request_id.to_string())
        .env("BINFARM_REQUEST_STATE", &summary.state)
        .stdin(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is fine: a closed pipe is ignored.
            let _ = stdin.write_all(json.as_bytes()).await;
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(NotifyError::CommandFailed {
            command: command.to_string(),
            status: status.to_string(),
        }),
        Ok(Err(source)) => Err(spawn_error(source)),
        Err(_elapsed) => {
            if let Some(group) = group {
                let _ = killpg(group, Signal::SIGKILL);
            }
            Err(NotifyError::CommandTimedOut {
                command: command.to_string(),
                seconds: timeout.as_secs(),
            })
        }
    }
}

/// POSTs `json` to `url`, trying up to `attempts` times with doubling waits between tries
/// on a connection error or a non-2xx answer.
pub async fn post_webhook(url: &str, json: &str, attempts: u32) -> Result<(), NotifyError> {
    let attempts = attempts.max(1);
    let client = reqwest::Client::new();
    let mut backoff = WEBHOOK_FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=attempts {
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, "binfarm")
            .body(json.to_string())
            .timeout(WEBHOOK_TIMEOUT)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            Err(err) => last = err.to_string(),
        }
        if attempt < attempts {
            tracing::info!("webhook {url}: {last}; trying again in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(NotifyError::Webhook {
        url: url.to_string(),
        message: last,
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn summary() -> RequestSummary {
        RequestSummary {
            request_id: 7,
            profile: "p".into(),
            kind: "nightly".into(),
            target: "@world".into(),
            state: "failed".into(),
            error: None,
            steps: 1,
            built: 0,
            cached: 0,
            failed: Vec::new(),
            published: None,
            url: "http://farm/requests/7".into(),
            api_url: "http://farm/api/v1/requests/7".into(),
        }
    }

    #[tokio::test]
    async fn the_command_gets_the_json_and_the_request_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let command = format!(
            "cat > '{0}.json'; echo \"$BINFARM_REQUEST_ID $BINFARM_REQUEST_STATE\" > '{0}.env'",
            out.display()
        );
        run_command(&command, "{\"x\": 1}", &summary(), Duration::from_secs(10))
            .await
            .unwrap();
        let json = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
        assert_eq!(json, "{\"x\": 1}");
        let env = std::fs::read_to_string(dir.path().join("out.env")).unwrap();
        assert_eq!(env, "7 failed\n");

        let err = run_command("exit 3", "{}", &summary(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::CommandFailed { status, .. } if status.contains('3')),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let command = format!("sleep 60 & echo $! > '{}'; wait", pid_file.display());
        let started = std::time::Instant::now();
        let err = run_command(&command, "{}", &summary(), Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::CommandTimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid = pid.trim();
        // Killed, and reaped by init once orphaned: gone or a zombie for a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
            if !alive {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "sleep {pid} survived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A webhook receiver on 127.0.0.1 that answers 500 to the first `failures` POSTs.
    async fn receiver(
        failures: usize,
    ) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<String>>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(std::sync::Mutex::new(String::new()));
        let (hits2, body2) = (hits.clone(), body.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |text: String| {
                let (hits, body) = (hits2.clone(), body2.clone());
                async move {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut b) = body.lock() {
                        *b = text;
                    }
                    if n < failures {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits, body)
    }

    #[tokio::test]
    async fn the_webhook_is_tried_again_after_an_error() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (url, hits, body) = receiver(1).await;
        post_webhook(&url, "{\"request_id\": 7}", 3).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(body.lock().unwrap().as_str(), "{\"request_id\": 7}");

        let (url, hits, _) = receiver(usize::MAX).await;
        let err = post_webhook(&url, "{}", 2).await.unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        assert!(err.to_string().contains("after 2 tries"), "{err}");
    }
}
