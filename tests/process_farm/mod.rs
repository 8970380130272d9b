//! A farm of real processes for integration tests: a `binfarm serve` in a temp directory
//! (its farm.toml written here), `binfarm worker`s that build the fixture repository with
//! real emerge, and a blocking HTTP client for the coordinator's API.
//!
//! Use from a test file with `mod common; mod process_farm;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;

pub use crate::common::{free_port, Proc, BIN};

/// The farm.toml settings tests choose; the rest is the same for every process farm.
#[derive(Debug, Clone)]
pub struct FarmSettings {
    pub lease_seconds: u32,
    pub heartbeat_seconds: u32,
    pub max_attempts: u32,
    /// More TOML after the common sections (`[[ftp]]`, `[notify]`).
    pub extra: String,
}

impl Default for FarmSettings {
    /// Short leases and heartbeats: a killed worker's step moves on within seconds.
    fn default() -> Self {
        FarmSettings {
            lease_seconds: 6,
            heartbeat_seconds: 1,
            max_attempts: 3,
            extra: String::new(),
        }
    }
}

pub struct ProcessFarm {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub url: String,
    port: u16,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl ProcessFarm {
    /// A farm in `dir` with these settings (farm.toml written, nothing started).
    pub fn new(dir: &Path, settings: &FarmSettings) -> ProcessFarm {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let farm = ProcessFarm {
            dir: dir.to_owned(),
            config: dir.join("farm.toml"),
            url: format!("http://127.0.0.1:{port}"),
            port,
            http: reqwest::Client::new(),
            rt: tokio::runtime::Runtime::new().expect("tokio runtime"),
        };
        farm.write_config(settings);
        farm
    }

    /// (Re)writes farm.toml (the listen port stays).
    pub fn write_config(&self, settings: &FarmSettings) {
        std::fs::write(
            &self.config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
[state]
dir = "state"
[profiles]
dir = "{profiles}"
[signing]
key_file = "state/signing-key.asc"
[queue]
lease_seconds = {lease}
heartbeat_seconds = {heartbeat}
max_attempts = {attempts}
retry_backoff_seconds = 1
[mirror]
root = "mirror"
{extra}"#,
                port = self.port,
                profiles = common::crate_root().join("profiles").display(),
                lease = settings.lease_seconds,
                heartbeat = settings.heartbeat_seconds,
                attempts = settings.max_attempts,
                extra = settings.extra,
            ),
        )
        .expect("writing farm.toml");
    }

    /// Runs `binfarm ARGS --config farm.toml`, which must succeed; its stdout.
    pub fn binfarm(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--config").arg(&self.config);
        common::run_ok(&mut cmd, &format!("binfarm {args:?}"))
    }

    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Starts `binfarm serve` (its log appended to serve.log, so restarts keep the
    /// earlier runs) and waits until it answers.
    pub fn start_coordinator(&self) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .expect("serve.log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            // Not from the crate root: templates and defaults are in the binary.
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting binfarm serve");
        let proc = Proc(child);
        self.wait_for("the coordinator to answer", Duration::from_secs(30), || {
            self.get("/health").is_some()
        });
        proc
    }

    /// The admin token the coordinator created on its first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin.token"))
            .expect("admin token (the coordinator writes it when it first starts)")
            .trim()
            .to_owned()
    }

    /// Starts worker `name` (token created on first use) for `profiles`, building the
    /// fixture repository with real emerge; `extra` are more `binfarm worker` flags. Its
    /// log is `<name>.log`.
    pub fn start_worker(&self, name: &str, profiles: &[&str], extra: &[&str]) -> Proc {
        let token = self.dir.join(format!("{name}.token"));
        if !token.exists() {
            self.binfarm(&[
                "token",
                "create",
                "--worker",
                name,
                "--output",
                token.to_str().expect("UTF-8 temp path"),
            ]);
        }
        let fx = common::fixture();
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["worker", "--coordinator", &self.url, "--token-file"])
            .arg(&token)
            .arg("--profiles-dir")
            .arg(common::crate_root().join("profiles"));
        for profile in profiles {
            cmd.args(["--profile", profile]);
        }
        let child = cmd
            .arg("--work-dir")
            .arg(self.dir.join(name))
            .arg("--repo")
            .arg(format!("farm-test={}", fx.repo.display()))
            .arg("--distdir")
            .arg(&fx.distdir)
            .args(extra)
            .env("BINFARM_VENV", common::venv())
            .stderr(log)
            .spawn()
            .expect("starting binfarm worker");
        Proc(child)
    }

    /// GET on the coordinator: JSON when it parses, else the text. None unless 2xx.
    pub fn get(&self, path: &str) -> Option<Value> {
        let (status, body) = self.call("GET", path, None, None);
        (200..300).contains(&status).then_some(body)
    }

    /// (status, body as JSON or as a string) of a call with an optional bearer token and
    /// JSON body; status 0 when the coordinator cannot be reached.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self.http.request(
                method.parse().expect("HTTP method"),
                format!("{}{path}", self.url),
            );
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    (
                        status,
                        serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    )
                }
                Err(_) => (0, Value::Null),
            }
        })
    }

    /// A call that must answer 2xx; its body.
    pub fn ok(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        let (status, reply) = self.call(method, path, token, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {reply}\n{}",
            self.logs()
        );
        reply
    }

    /// An admin POST that must succeed.
    pub fn admin_post(&self, path: &str, body: Value) -> Value {
        self.ok("POST", path, Some(&self.admin_token()), Some(body))
    }

    /// Raw bytes in a POST/PUT with a worker's token (log chunks, uploads).
    pub fn send_bytes(
        &self,
        method: &str,
        path: &str,
        token: &str,
        bytes: Vec<u8>,
        sha512: Option<String>,
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(
                    method.parse().expect("HTTP method"),
                    format!("{}{path}", self.url),
                )
                .bearer_auth(token)
                .body(bytes);
            if let Some(sha) = sha512 {
                req = req.header("x-binfarm-sha512", sha);
            }
            let resp = req.send().await.expect("sending bytes");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    pub fn request(&self, id: i64) -> Value {
        self.get(&format!("/api/v1/requests/{id}"))
            .unwrap_or_else(|| panic!("request {id} not found\n{}", self.logs()))
    }

    /// Waits (200 ms steps) until `done`; fails with the logs after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until request `id` has ended (any end); returns it.
    pub fn wait_finished(&self, id: i64, limit: Duration) -> Value {
        let mut last = Value::Null;
        self.wait_for(&format!("request {id} to end"), limit, || {
            last = self.request(id);
            !matches!(last["state"].as_str(), Some("planning" | "running"))
        });
        last
    }

    /// Waits until request `id` has succeeded; fails at once when it failed or was
    /// cancelled.
    pub fn wait_succeeded(&self, id: i64, limit: Duration) -> Value {
        let request = self.wait_finished(id, limit);
        assert_eq!(
            request["state"],
            "succeeded",
            "{request:#}\n{}",
            self.logs()
        );
        request
    }

    /// Waits until request `id` is published (publishing follows the request's end, in
    /// the background); returns its `published` field.
    pub fn wait_published(&self, id: i64) -> Value {
        let mut published = Value::Null;
        self.wait_for(
            &format!("request {id} to be published"),
            Duration::from_secs(30),
            || {
                published = self.request(id)["published"].clone();
                !published.is_null()
            },
        );
        published
    }

    /// The last 40 lines of serve.log and of every worker log.
    pub fn logs(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".log"))
            .collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(&name)) {
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out += &format!(
                    "--- {name} (tail)\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        out
    }

    /// `binfarm nightly --profile P`: the request id.
    pub fn nightly(&self, profile: &str) -> i64 {
        request_id_of(&self.binfarm(&["nightly", "--profile", profile]))
    }

    /// `binfarm rebuild ATOM --profile P`: the request id.
    pub fn rebuild(&self, atom: &str, profile: &str) -> i64 {
        request_id_of(&self.binfarm(&["rebuild", atom, "--profile", profile]))
    }
}

/// The id in `request N ...`, the first line `binfarm nightly` / `rebuild` print.
pub fn request_id_of(out: &str) -> i64 {
    out.split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no request id in {out:?}"))
}

/// The steps of a request as the API shows it.
pub fn steps(request: &Value) -> Vec<Value> {
    request["steps"].as_array().cloned().unwrap_or_default()
}
