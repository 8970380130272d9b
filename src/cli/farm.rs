//! Farm commands: `serve`, `worker`, `token create`, `nightly`, `rebuild`, `status`,
//! `logs`, `cancel`. Admin commands talk to the coordinator's API with the admin token.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::coordinator::protocol::NewRequestBody;
use crate::coordinator::FarmConfig;

pub fn serve(config: Option<&Path>) -> Result<ExitCode> {
    let config = FarmConfig::load(config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(crate::coordinator::serve(config))?;
    Ok(ExitCode::SUCCESS)
}

pub fn worker(mut config: crate::worker::agent::AgentConfig) -> Result<ExitCode> {
    config.progress = super::progress::terminal();
    crate::worker::agent::run_blocking(config)?;
    Ok(ExitCode::SUCCESS)
}

/// Creates a worker (or, with `rotate`, gives it a new token) directly in the state
/// directory, and prints the token once; only its hash is stored.
pub fn token_create(
    config: Option<&Path>,
    worker: &str,
    rotate: bool,
    output: Option<&Path>,
) -> Result<ExitCode> {
    let config = FarmConfig::load(config)?;
    let store = crate::store::Store::open(&config.state.dir)?;
    let mut db = store.connect()?;
    let created = if rotate {
        db.rotate_worker_token(worker)?
    } else {
        db.create_worker(worker, crate::store::unix_now())?
    };
    match output {
        Some(path) => {
            crate::coordinator::write_private_file(path, &format!("{}\n", created.token))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("token for worker {worker} written to {}", path.display());
        }
        None => println!("{}", created.token),
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the API is and the admin token, from flags or farm.toml.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl AdminClient {
    pub fn new(
        config: Option<&Path>,
        coordinator: Option<&str>,
        token_file: Option<&Path>,
    ) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let farm = FarmConfig::load(config)?;
        let base = coordinator
            .map(str::to_owned)
            .unwrap_or_else(|| farm.public_url());
        let token_path: PathBuf = token_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| farm.admin_token_file());
        let token = std::fs::read_to_string(&token_path)
            .ok()
            .map(|t| t.trim().to_owned());
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    fn send(&self, builder: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
        let builder = match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        };
        self.runtime.block_on(async {
            let resp = builder
                .send()
                .await
                .with_context(|| format!("{what}: {}", self.base))?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                bail!("{what}: HTTP {status}: {message}");
            }
            Ok(resp)
        })
    }

    pub fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.send(self.http.get(format!("{}{path}", self.base)), path)?;
        Ok(self.runtime.block_on(resp.json())?)
    }

    pub fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Result<Value> {
        let resp = self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            path,
        )?;
        Ok(self.runtime.block_on(resp.json())?)
    }

    fn get_log(&self, step: i64, offset: u64) -> Result<(Vec<u8>, bool)> {
        let path = format!("/api/v1/steps/{step}/log?offset={offset}");
        let resp = self.send(self.http.get(format!("{}{path}", self.base)), &path)?;
        let complete = resp
            .headers()
            .get(crate::coordinator::LOG_COMPLETE_HEADER)
            .is_some_and(|v| v.as_bytes() == b"true");
        let bytes = self.runtime.block_on(resp.bytes())?;
        Ok((bytes.to_vec(), complete))
    }
}

pub fn nightly(
    client: &AdminClient,
    profiles: &[String],
    all_profiles: &[String],
    wait: bool,
) -> Result<ExitCode> {
    let chosen = if profiles.is_empty() {
        all_profiles
    } else {
        profiles
    };
    if chosen.is_empty() {
        bail!("no profiles: give --profile or configure [profiles] dir");
    }
    let mut ids = Vec::new();
    for profile in chosen {
        let reply = client.post_json(
            "/api/v1/requests",
            &NewRequestBody::Nightly {
                profile: profile.clone(),
            },
        )?;
        println!("request {} nightly {profile}", reply["id"]);
        ids.extend(reply["id"].as_i64());
    }
    if wait {
        return wait_for_requests(client, &ids);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rebuild(client: &AdminClient, atom: &str, profile: &str, wait: bool) -> Result<ExitCode> {
    let reply = client.post_json(
        "/api/v1/requests",
        &NewRequestBody::Rebuild {
            profile: profile.to_owned(),
            atom: atom.to_owned(),
        },
    )?;
    println!("request {} rebuild {atom} for {profile}", reply["id"]);
    if wait {
        let id = reply["id"]
            .as_i64()
            .context("the coordinator's reply has no request id")?;
        return wait_for_requests(client, &[id]);
    }
    Ok(ExitCode::SUCCESS)
}

/// How often `--wait` asks about its requests.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// `--wait`: follows the requests until each has ended and, when it succeeded, has been
/// published; prints their progress, the failing packages with their log pages, and where
/// each was published. Exit status 0 only when every request succeeded.
fn wait_for_requests(client: &AdminClient, ids: &[i64]) -> Result<ExitCode> {
    let mut all_succeeded = true;
    for &id in ids {
        let mut last_line = String::new();
        let request = loop {
            let r = client.get_json(&format!("/api/v1/requests/{id}"))?;
            let state = r["state"].as_str().unwrap_or("").to_owned();
            let steps = r["steps"].as_array().cloned().unwrap_or_default();
            let ended = steps
                .iter()
                .filter(|s| {
                    matches!(
                        s["state"].as_str(),
                        Some("succeeded" | "cached" | "failed" | "blocked" | "cancelled")
                    )
                })
                .count();
            let published = !r["published"].is_null();
            let line = match state.as_str() {
                "succeeded" if !published => format!("request {id}: succeeded, publishing"),
                _ => format!("request {id}: {state}, {ended}/{} steps ended", steps.len()),
            };
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
            let done = match state.as_str() {
                "planning" | "running" => false,
                "succeeded" => published,
                _ => true,
            };
            if done {
                break r;
            }
            std::thread::sleep(WAIT_POLL);
        };
        print_outcome(client, &request);
        all_succeeded &= request["state"] == "succeeded";
    }
    Ok(if all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The end of a request as `--wait` reports it.
fn print_outcome(client: &AdminClient, r: &Value) {
    let id = &r["id"];
    let state = r["state"].as_str().unwrap_or("");
    match (state, r["published"]["snapshot_id"].as_i64()) {
        ("succeeded", Some(snapshot)) if r["published"]["unchanged"] == true => println!(
            "request {id} succeeded: nothing changed, testing stays at snapshot {snapshot}"
        ),
        ("succeeded", Some(snapshot)) => {
            println!("request {id} succeeded: published as snapshot {snapshot} to testing")
        }
        _ => {
            println!("request {id} {state}");
            if let Some(error) = r["error"].as_str() {
                println!("  error: {error}");
            }
        }
    }
    for s in r["steps"].as_array().into_iter().flatten() {
        if matches!(s["state"].as_str(), Some("failed" | "blocked")) {
            println!(
                "  {} {}: {}  log: {}/steps/{}/log",
                s["state"].as_str().unwrap_or(""),
                s["cpv"].as_str().unwrap_or(""),
                s["reason"].as_str().unwrap_or(""),
                client.base,
                s["id"]
            );
        }
    }
}

pub fn cancel(client: &AdminClient, request: i64) -> Result<ExitCode> {
    let reply = client.post_json(
        &format!("/api/v1/requests/{request}/cancel"),
        &serde_json::json!({}),
    )?;
    println!(
        "request {request}: {} steps cancelled",
        reply["cancelled_steps"]
    );
    Ok(ExitCode::SUCCESS)
}

/// `binfarm workers pause|resume NAME`: a paused worker gets no new leases.
pub fn set_worker_paused(client: &AdminClient, name: &str, paused: bool) -> Result<ExitCode> {
    let action = if paused { "pause" } else { "resume" };
    let name_in_path =
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    let reply = client.post_json(
        &format!("/api/v1/workers/{name_in_path}/{action}"),
        &serde_json::json!({}),
    )?;
    println!(
        "worker {}: {}",
        reply["name"].as_str().unwrap_or(name),
        if reply["paused"].as_bool() == Some(true) {
            "paused"
        } else {
            "active"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Requests (or one request with its steps) and workers.
pub fn status(client: &AdminClient, request: Option<i64>, json: bool) -> Result<ExitCode> {
    if let Some(id) = request {
        let r = client.get_json(&format!("/api/v1/requests/{id}"))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "request {} {} {} {}: {}",
            r["id"],
            r["kind"].as_str().unwrap_or(""),
            r["profile"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or("")
        );
        if let Some(error) = r["error"].as_str() {
            println!("  error: {error}");
        }
        match r["published"]["snapshot_id"].as_i64() {
            Some(id) if r["published"]["unchanged"] == true => {
                println!("  published: nothing changed, testing stays at snapshot {id}")
            }
            Some(id) => println!("  published: snapshot {id} (to testing)"),
            None if r["state"] == "succeeded" => println!("  published: not yet"),
            None => {}
        }
        for s in r["steps"].as_array().into_iter().flatten() {
            println!(
                "  step {:>5}  {:<10} {:<40} {}",
                s["id"],
                s["state"].as_str().unwrap_or(""),
                s["cpv"].as_str().unwrap_or(""),
                s["reason"].as_str().unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let requests = client.get_json("/api/v1/requests?limit=20")?;
    let workers = client.get_json("/api/v1/workers")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"requests": requests, "workers": workers})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("requests:");
    for r in requests.as_array().into_iter().flatten() {
        println!(
            "  {:>5}  {:<8} {:<12} {:<10} {}",
            r["id"],
            r["kind"].as_str().unwrap_or(""),
            r["profile"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or("")
        );
    }
    println!("workers:");
    let now = crate::store::unix_now();
    for w in workers.as_array().into_iter().flatten() {
        let seen = w["last_heartbeat"]
            .as_i64()
            .map(|t| format!("{}s ago", now - t))
            .unwrap_or_else(|| "never".into());
        let paused = if w["paused"].as_bool() == Some(true) {
            " (paused)"
        } else {
            ""
        };
        println!(
            "  {:<16} last heartbeat {seen}{paused} profiles {}",
            w["name"].as_str().unwrap_or(""),
            w["profiles"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a step's log; with `follow`, keeps printing until the step ends. Following on
/// a terminal, a spinner on stderr shows the step's state and the bytes received, and the
/// log is printed whole lines at a time above it.
pub fn logs(client: &AdminClient, step: i64, follow: bool) -> Result<ExitCode> {
    use std::io::Write;
    let spinner = follow
        .then(|| super::progress::Spinner::new(&format!("step {step}")))
        .filter(|s| !s.is_hidden());
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    let mut state = String::from("?");
    loop {
        let (bytes, complete) = client.get_log(step, offset)?;
        offset += bytes.len() as u64;
        let ended = !follow || (complete && bytes.is_empty());
        match &spinner {
            None => {
                stdout.write_all(&bytes)?;
                stdout.flush()?;
            }
            Some(spinner) => {
                pending.extend_from_slice(&bytes);
                // A partial line would be wiped by the spinner's redraw: hold it back.
                let whole = if ended {
                    pending.len()
                } else {
                    pending
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1)
                };
                if whole > 0 {
                    let lines: Vec<u8> = pending.drain(..whole).collect();
                    super::progress::above_bars(|| {
                        stdout.write_all(&lines)?;
                        stdout.flush()
                    })?;
                }
                if bytes.is_empty() {
                    if let Ok(s) = client.get_json(&format!("/api/v1/steps/{step}")) {
                        state = s["state"].as_str().unwrap_or("?").to_owned();
                    }
                }
                spinner.set_message(format!(
                    "{state}, {} received",
                    indicatif::HumanBytes(offset)
                ));
            }
        }
        if ended {
            return Ok(ExitCode::SUCCESS);
        }
        if bytes.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Profile names in the configured profiles directory.
pub fn configured_profiles(config: Option<&Path>) -> Result<Vec<String>> {
    let farm = FarmConfig::load(config)?;
    let report = crate::profile::check_dir(&farm.profiles.dir)?;
    Ok(report
        .valid
        .iter()
        .filter(|p| !p.source.components().any(|c| c.as_os_str() == "examples"))
        .map(|p| p.name.clone())
        .collect())
}
