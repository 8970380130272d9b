//! The worker agent (`binfarm worker`): registers with the coordinator, long-polls for
//! jobs, plans and builds with real emerge in one build root per profile, streams the log,
//! uploads the binpkgs (sha512 sent ahead) and reports completion. Coordinator outages are
//! waited out with backoff; a job's results are only reported while its lease is current.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::sync::watch;

use super::{
    plan, run_build, BuildRequest, BuildRoot, BuildRootOptions, BuildStatus, Limits, WorkerError,
};
use crate::coordinator::protocol::*;
use crate::profile::Profile;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("coordinator {url}: {message}")]
    Coordinator { url: String, message: String },
    #[error("token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub coordinator: String,
    pub token_file: PathBuf,
    pub profiles_dir: PathBuf,
    /// Profiles to offer; empty: every profile in `profiles_dir`.
    pub profiles: Vec<String>,
    pub work_dir: PathBuf,
    pub root_options: BuildRootOptions,
    pub labels: Vec<String>,
    pub limits: Limits,
    /// Stop after this many jobs (tests); None runs until killed.
    pub max_jobs: Option<u64>,
    /// Extra environment for emerge.
    pub build_env: Vec<(String, String)>,
    /// Told about the bytes of each binpkg upload.
    pub progress: crate::progress::Progress,
}

struct Agent {
    config: AgentConfig,
    url: String,
    http: reqwest::Client,
    token: String,
    roots: HashMap<String, BuildRoot>,
    heartbeat_every: Duration,
}

/// Runs the agent loop until `max_jobs` jobs are done (or forever).
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::fs::read_to_string(&config.token_file)
        .map_err(|source| AgentError::Token {
            path: config.token_file.clone(),
            source,
        })?
        .trim()
        .to_owned();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| AgentError::Setup(format!("HTTP client: {e}")))?;
    let url = config.coordinator.trim_end_matches('/').to_owned();
    let mut agent = Agent {
        config,
        url,
        http,
        token,
        roots: HashMap::new(),
        heartbeat_every: Duration::from_secs(10),
    };
    agent.register_until_accepted().await?;
    let mut done = 0u64;
    let mut backoff = Duration::from_secs(1);
    loop {
        if agent.config.max_jobs.is_some_and(|max| done >= max) {
            return Ok(());
        }
        match agent.lease().await {
            Ok(Some(job)) => {
                backoff = Duration::from_secs(1);
                let outcome = match job {
                    Job::Plan(job) => agent.plan(job).await,
                    Job::Build(job) => agent.build(job).await,
                };
                if let Err(err) = outcome {
                    tracing::error!("job failed on this worker: {err}");
                }
                done += 1;
            }
            Ok(None) => backoff = Duration::from_secs(1),
            Err(AgentError::Coordinator { message, .. }) if message.contains("unauthorized") => {
                return Err(AgentError::Coordinator {
                    url: agent.url.clone(),
                    message: "the coordinator refused this worker's token (401)".into(),
                });
            }
            Err(err) => {
                tracing::warn!("{err}; retrying in {}s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                // A restarted coordinator keeps registrations, but re-registering is harmless.
                let _ = agent.register().await;
            }
        }
    }
}

impl Agent {
    fn err(&self, message: impl std::fmt::Display) -> AgentError {
        AgentError::Coordinator {
            url: self.url.clone(),
            message: message.to_string(),
        }
    }

    async fn post<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<reqwest::Response, AgentError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| self.err(format!("POST {path}: {e}")))?;
        check_status(resp, path).await.map_err(|m| self.err(m))
    }

    fn offered_profiles(&self) -> Result<Vec<String>, AgentError> {
        if !self.config.profiles.is_empty() {
            return Ok(self.config.profiles.clone());
        }
        let report = crate::profile::check_dir(&self.config.profiles_dir)
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        Ok(report.valid.iter().map(|p| p.name.clone()).collect())
    }

    async fn register(&mut self) -> Result<RegisterReply, AgentError> {
        let request = RegisterRequest {
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            profiles: self.offered_profiles()?,
            cpu_flags: cpu_flags(),
            labels: self.config.labels.clone(),
            slots: 1,
        };
        let reply: RegisterReply = self
            .post("/api/v1/worker/register", &request)
            .await?
            .json()
            .await
            .map_err(|e| self.err(format!("register reply: {e}")))?;
        self.heartbeat_every = Duration::from_secs(reply.heartbeat_seconds.max(1));
        Ok(reply)
    }

    async fn register_until_accepted(&mut self) -> Result<(), AgentError> {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.register().await {
                Ok(reply) => {
                    for (profile, reason) in &reply.refused_profiles {
                        tracing::warn!("profile {profile} refused by the coordinator: {reason}");
                    }
                    if reply.accepted_profiles.is_empty() {
                        return Err(
                            self.err("the coordinator accepted none of this worker's profiles")
                        );
                    }
                    tracing::info!(
                        "registered as {} for {:?}",
                        reply.worker,
                        reply.accepted_profiles
                    );
                    return Ok(());
                }
                Err(err) if err.to_string().contains("unauthorized") => return Err(err),
                Err(err) => {
                    tracing::warn!("{err}; retrying in {}s", backoff.as_secs());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn lease(&self) -> Result<Option<Job>, AgentError> {
        let resp = self
            .post("/api/v1/worker/lease", &LeaseRequest { wait_seconds: 20 })
            .await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let job = resp
            .json()
            .await
            .map_err(|e| self.err(format!("lease reply: {e}")))?;
        Ok(Some(job))
    }

    fn build_root(&mut self, profile_name: &str) -> Result<BuildRoot, AgentError> {
        if let Some(root) = self.roots.get(profile_name) {
            return Ok(root.clone());
        }
        let profile =
            Profile::find(profile_name, &self.config.profiles_dir).map_err(WorkerError::from)?;
        let dir = self.config.work_dir.join("roots").join(&profile.name);
        let root = BuildRoot::prepare(&profile, &dir, &self.config.root_options)?;
        self.roots.insert(profile_name.to_owned(), root.clone());
        Ok(root)
    }

    /// Heart-beats `leases` until the returned sender is dropped. The returned flag turns
    /// true when the coordinator says the job is no longer ours (request or step cancelled,
    /// lease expired or given to another worker); a running build checks it and stops.
    fn start_heartbeat(
        &self,
        leases: Vec<i64>,
        plan_leases: Vec<String>,
    ) -> (watch::Sender<()>, Arc<AtomicBool>) {
        let (stop_tx, mut stop_rx) = watch::channel(());
        let revoked = Arc::new(AtomicBool::new(false));
        let revoked_flag = Arc::clone(&revoked);
        let (http, url, token, every) = (
            self.http.clone(),
            self.url.clone(),
            self.token.clone(),
            self.heartbeat_every,
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let body = HeartbeatRequest {
                    leases: leases.clone(),
                    plan_leases: plan_leases.clone(),
                    load_1min: load_1min(),
                };
                let sent = http
                    .post(format!("{url}/api/v1/worker/heartbeat"))
                    .bearer_auth(&token)
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().is_success() => {
                        if let Ok(reply) = resp.json::<HeartbeatReply>().await {
                            if !reply.revoked.is_empty() || !reply.revoked_plans.is_empty() {
                                tracing::warn!(
                                    "the coordinator revoked leases {:?} {:?}: stopping",
                                    reply.revoked,
                                    reply.revoked_plans
                                );
                                revoked_flag.store(true, Ordering::SeqCst);
                                // Nothing more to renew: the job is no longer ours.
                                return;
                            }
                        }
                    }
                    Ok(resp) => tracing::warn!("heartbeat: HTTP {}", resp.status()),
                    Err(err) => tracing::warn!("heartbeat: {err}"),
                }
            }
        });
        (stop_tx, revoked)
    }

    async fn plan(&mut self, job: PlanJob) -> Result<(), AgentError> {
        tracing::info!(
            "planning request {} for {} ({:?})",
            job.request_id,
            job.profile,
            job.targets
        );
        let (_stop, revoked) = self.start_heartbeat(Vec::new(), vec![job.plan_lease.clone()]);
        let result = match self.build_root(&job.profile) {
            Ok(root) => {
                let targets = job.targets.clone();
                let options = plan::PlanOptions {
                    usepkg: false,
                    emptytree: true,
                };
                tokio::task::spawn_blocking(move || plan::plan(&root, &targets, &options))
                    .await
                    .map_err(|e| AgentError::Setup(e.to_string()))?
                    .map_err(AgentError::from)
            }
            Err(err) => Err(err),
        };
        // Planning is one emerge --pretend (seconds): it is let run, but a request
        // cancelled meanwhile gets no answer.
        if revoked.load(Ordering::SeqCst) {
            tracing::info!(
                "request {}: plan lease {} revoked while planning; result dropped",
                job.request_id,
                job.plan_lease
            );
            return Ok(());
        }
        let body = match result {
            Ok(plan) => PlanResult::Planned {
                merge_list: serde_json::to_value(&plan)
                    .map_err(|e| AgentError::Setup(e.to_string()))?,
            },
            Err(err) => PlanResult::Failed {
                error: err.to_string(),
            },
        };
        let path = format!(
            "/api/v1/worker/plans/{}?lease={}",
            job.request_id, job.plan_lease
        );
        self.post(&path, &body).await?;
        Ok(())
    }

    async fn build(&mut self, job: BuildJob) -> Result<(), AgentError> {
        tracing::info!(
            "building {} for {} (step {}, lease {})",
            job.cpv,
            job.profile,
            job.step_id,
            job.lease_id
        );
        let started = Instant::now();
        let (_stop, revoked) = self.start_heartbeat(vec![job.lease_id], Vec::new());
        let outcome = self.build_and_upload(&job, &revoked).await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let complete = match outcome {
            Ok(files) => CompleteRequest::Succeeded {
                lease_id: job.lease_id,
                duration_ms,
                files,
            },
            // The step is no longer ours: the coordinator already recorded the cancellation
            // (or gave the step to another worker) and would ignore a completion, so none is sent.
            Err(_) if revoked.load(Ordering::SeqCst) => {
                tracing::info!(
                    "step {} ({}): lease {} revoked, build stopped, nothing reported",
                    job.step_id,
                    job.cpv,
                    job.lease_id
                );
                return Ok(());
            }
            Err((error, retryable)) => {
                tracing::warn!("step {} ({}) failed: {error}", job.step_id, job.cpv);
                CompleteRequest::Failed {
                    lease_id: job.lease_id,
                    duration_ms,
                    error,
                    retryable,
                }
            }
        };
        let reply: CompleteReply = self
            .post(
                &format!("/api/v1/worker/steps/{}/complete", job.step_id),
                &complete,
            )
            .await?
            .json()
            .await
            .map_err(|e| self.err(format!("complete reply: {e}")))?;
        tracing::info!("step {} ({}): {}", job.step_id, job.cpv, reply.status);
        Ok(())
    }

    /// The uploaded binpkgs, or the error and whether another try could help.
    async fn build_and_upload(
        &mut self,
        job: &BuildJob,
        revoked: &Arc<AtomicBool>,
    ) -> Result<Vec<UploadReply>, (String, bool)> {
        let root = self
            .build_root(&job.profile)
            .map_err(|e| (e.to_string(), true))?;
        let pkgdir = root.pkgdir();
        for binpkg in &job.binpkgs {
            self.fetch_binpkg(&pkgdir, binpkg)
                .await
                .map_err(|e| (e.to_string(), true))?;
        }
        let cpv = crate::atom::Cpv::parse(&job.cpv).map_err(|e| (e.to_string(), false))?;
        let log_path = self
            .config
            .work_dir
            .join("logs")
            .join(format!("step-{}-lease-{}.log", job.step_id, job.lease_id));
        let mut request = BuildRequest::new([format!("={}", job.cpv)]);
        // Dependencies come from the farm's binpkgs; the package itself is built.
        request.extra_args = vec!["--oneshot".into(), format!("--usepkg-exclude={}", cpv.cp())];
        request.limits = self.config.limits.clone();
        request.extra_env = self.config.build_env.clone();
        request.log_path = Some(log_path.clone());
        request.cancel = Some(Arc::clone(revoked));
        if revoked.load(Ordering::SeqCst) {
            return Err((
                "the lease was revoked before the build started".into(),
                true,
            ));
        }
        let streamer = self.stream_log(job, log_path.clone());
        let build_root = root.clone();
        let result = tokio::task::spawn_blocking(move || run_build(&build_root, &request))
            .await
            .map_err(|e| (e.to_string(), true))?;
        let _ = streamer.send(true);
        // Let the streamer send the tail.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let result = result.map_err(|e| (e.to_string(), true))?;
        if revoked.load(Ordering::SeqCst) {
            return Err(("the lease was revoked while building".into(), true));
        }
        if result.status != BuildStatus::Success {
            let (message, retryable) = match (&result.status, &result.failure) {
                (BuildStatus::Failed, Some(f)) => (
                    format!("{} failed in the {} phase", f.cpv, f.phase),
                    f.cpv != job.cpv,
                ),
                (BuildStatus::Failed, None) => {
                    (format!("emerge exited with {:?}", result.exit_code), true)
                }
                (BuildStatus::TimedOut, _) => ("killed: total timeout reached".to_owned(), true),
                (BuildStatus::Silent, _) => {
                    ("killed: no output for max-silent-time".to_owned(), true)
                }
                (BuildStatus::Cancelled, _) => {
                    ("killed: the build was cancelled".to_owned(), false)
                }
                (BuildStatus::Success, _) => {
                    ("internal: success reported as failure".to_owned(), true)
                }
            };
            return Err((message, retryable));
        }
        let built: Vec<_> = result.built.iter().filter(|b| b.cpv == job.cpv).collect();
        if built.is_empty() {
            return Err((
                format!("emerge succeeded but wrote no binpkg of {}", job.cpv),
                true,
            ));
        }
        let mut uploaded = Vec::new();
        for b in built {
            let reply = self
                .upload(job, &b.path, &b.sha512, b.size)
                .await
                .map_err(|e| (e.to_string(), true))?;
            // The farm's signed copy (with its BUILD_ID) replaces ours when a later step needs it.
            let _ = std::fs::remove_file(&b.path);
            uploaded.push(reply);
        }
        Ok(uploaded)
    }

    /// Puts a farm binpkg into PKGDIR (checked against its sha512) unless it is there.
    async fn fetch_binpkg(&self, pkgdir: &Path, binpkg: &FarmBinpkg) -> Result<(), AgentError> {
        let relative = Path::new(&binpkg.path);
        let safe = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe || !binpkg.path.ends_with(".gpkg.tar") {
            return Err(self.err(format!("refusing binpkg path {:?}", binpkg.path)));
        }
        let dest = pkgdir.join(relative);
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == binpkg.size) {
            return Ok(());
        }
        let path = format!("/api/v1/worker/blobs/{}", binpkg.sha512);
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(|e| self.err(format!("GET {path}: {e}")))?;
        let resp = check_status(resp, &path).await.map_err(|m| self.err(m))?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.err(format!("GET {path}: {e}")))?;
        let actual = hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&bytes));
        if actual != binpkg.sha512 {
            return Err(self.err(format!("{}: sha512 mismatch on download", binpkg.path)));
        }
        let parent = dest.parent().unwrap_or(pkgdir);
        std::fs::create_dir_all(parent)
            .map_err(|e| AgentError::Setup(format!("{}: {e}", parent.display())))?;
        let tmp = parent.join(format!(
            ".{}.partial",
            binpkg.sha512.get(..16).unwrap_or("x")
        ));
        std::fs::write(&tmp, &bytes)
            .map_err(|e| AgentError::Setup(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, &dest)
            .map_err(|e| AgentError::Setup(format!("{}: {e}", dest.display())))?;
        Ok(())
    }

    /// Sends new log bytes every 2 s until told to stop (then once more).
    fn stream_log(&self, job: &BuildJob, log_path: PathBuf) -> watch::Sender<bool> {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let url = format!(
            "{}/api/v1/worker/steps/{}/log?lease={}",
            self.url, job.step_id, job.lease_id
        );
        let (http, token) = (self.http.clone(), self.token.clone());
        tokio::spawn(async move {
            let mut sent: u64 = 0;
            loop {
                let last = *stop_rx.borrow();
                if let Ok(data) = tokio::fs::read(&log_path).await {
                    if (data.len() as u64) > sent {
                        let start = usize::try_from(sent).unwrap_or(data.len());
                        let chunk = data[start..].to_vec();
                        let len = chunk.len() as u64;
                        let ok = http
                            .post(&url)
                            .bearer_auth(&token)
                            .body(chunk)
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            sent += len;
                        }
                    }
                }
                if last {
                    return;
                }
                tokio::select! {
                    _ = stop_rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        });
        stop_tx
    }

    async fn upload(
        &self,
        job: &BuildJob,
        file: &Path,
        sha512: &str,
        size: u64,
    ) -> Result<UploadReply, AgentError> {
        let path = format!(
            "/api/v1/worker/steps/{}/binpkgs?lease={}",
            job.step_id, job.lease_id
        );
        let opened = tokio::fs::File::open(file)
            .await
            .map_err(|e| AgentError::Setup(format!("{}: {e}", file.display())))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let task = self.config.progress.task(
            &format!("upload {}", name.as_deref().unwrap_or("binpkg")),
            crate::progress::Unit::Bytes,
            Some(size),
        );
        let chunks = futures_util::StreamExt::map(
            tokio_util::io::ReaderStream::with_capacity(opened, 1 << 20),
            move |chunk| {
                if let Ok(bytes) = &chunk {
                    task.advance(bytes.len() as u64);
                }
                chunk
            },
        );
        let body = reqwest::Body::wrap_stream(chunks);
        let resp = self
            .http
            .put(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header(SHA512_HEADER, sha512)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .map_err(|e| self.err(format!("PUT {path}: {e}")))?;
        let resp = check_status(resp, &path).await.map_err(|m| self.err(m))?;
        resp.json()
            .await
            .map_err(|e| self.err(format!("upload reply: {e}")))
    }
}

async fn check_status(resp: reqwest::Response, path: &str) -> Result<reqwest::Response, String> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&body)
        .map(|e| e.error)
        .unwrap_or(body);
    Err(format!("{path}: HTTP {status}: {message}"))
}

/// CPU flags from /proc/cpuinfo (the first processor's `flags` line).
pub fn cpu_flags() -> Vec<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, flags)| flags.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Shared with main.rs: the agent runs on its own runtime.
pub fn run_blocking(config: AgentConfig) -> Result<(), AgentError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| AgentError::Setup(e.to_string()))?;
    runtime.block_on(run(config))
}

/// The 1-minute load average from /proc/loadavg; None when it cannot be read.
pub fn load_1min() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first field of a /proc/loadavg line (`0.42 0.31 0.25 1/123 4567`).
fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|l| l.is_finite() && *l >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_first_field() {
        assert_eq!(parse_loadavg("0.42 0.31 0.25 1/123 4567\n"), Some(0.42));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("nan 1 1"), None);
        assert_eq!(parse_loadavg("-1 1 1"), None);
        // This host's real file parses.
        assert!(load_1min().is_some());
    }
}
