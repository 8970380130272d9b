//! A real `binfarm serve` with one worker driven over the protocol by hand (no emerge):
//! register, plan a rebuild of one atom with a given merge list, lease its build step,
//! send log chunks, upload, complete. Also a small blocking HTTP client.
//!
//! Use from a test file with `mod common; mod hand_farm;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common;

pub use crate::common::{free_port, Proc, BIN};

/// (status, headers, body) of a request.
pub type Answer = (u16, reqwest::header::HeaderMap, Vec<u8>);

/// A blocking HTTP client for tests.
pub struct Http {
    pub client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Http {
    pub fn new() -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            client: reqwest::Client::new(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    pub fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.rt.block_on(async {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, headers, resp.bytes().await.unwrap().to_vec())
        })
    }

    /// (status, body as JSON, or as a JSON string when it is not JSON).
    pub fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (status, _, body) = self.send(request);
        (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        )
    }

    /// Waits until `url` answers at all (30 s at most; `log` is shown if it never does).
    pub fn wait_up(&self, url: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = self
                .rt
                .block_on(async { self.client.get(url).send().await.is_ok() });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not come up: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn sha512_hex(data: &[u8]) -> String {
    hex::encode(<sha2::Sha512 as sha2::Digest>::digest(data))
}

/// The first gpkg of `pf` (e.g. `hello-1.0`) under `pkgdir`.
pub fn find_gpkg(pkgdir: &Path, pf: &str) -> PathBuf {
    walkdir::WalkDir::new(pkgdir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{pf}-")) && name.ends_with(".gpkg.tar")
        })
        .unwrap_or_else(|| panic!("no {pf} gpkg in {}", pkgdir.display()))
}

/// A coordinator (profiles of the crate, mirror on) and the token of worker `w1`.
pub struct HandFarm {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub base: String,
    pub admin: String,
    pub token: String,
    pub http: Http,
    pub log: PathBuf,
    _serve: Proc,
}

/// A build step leased to the hand-driven worker.
#[derive(Debug, Clone, Copy)]
pub struct LeasedStep {
    pub request_id: i64,
    pub step: i64,
    pub lease: i64,
}

impl HandFarm {
    pub fn start(dir: &Path) -> HandFarm {
        HandFarm::start_with(dir, "")
    }

    /// Starts the farm with `extra` appended to its farm.toml (more sections).
    pub fn start_with(dir: &Path, extra: &str) -> HandFarm {
        let port = free_port();
        let config = dir.join("farm.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = \"state\"\n\
                 [profiles]\ndir = \"{}\"\n[signing]\nkey_file = \"state/signing-key.asc\"\n\
                 [mirror]\nroot = \"mirror\"\n{extra}",
                common::crate_root().join("profiles").display()
            ),
        )
        .unwrap();
        let token_file = dir.join("w1.token");
        common::run_ok(
            Command::new(BIN)
                .args(["token", "create", "--worker", "w1", "--output"])
                .arg(&token_file)
                .arg("--config")
                .arg(&config)
                .current_dir(dir),
            "binfarm token create",
        );
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        let log = dir.join("serve.log");
        let serve = Proc(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&config)
                .current_dir(dir)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        let http = Http::new();
        http.wait_up(&format!("{base}/health"), &log);
        let admin = std::fs::read_to_string(dir.join("state/admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        HandFarm {
            dir: dir.to_owned(),
            config,
            base,
            admin,
            token,
            http,
            log,
            _serve: serve,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A worker call with the worker's token: (status, JSON body).
    pub fn worker_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.http.json(
            self.http
                .client
                .post(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
    }

    /// Registers `w1` for x86-64-v3.
    pub fn register(&self) {
        let (status, reg) = self.worker_post(
            "/api/v1/worker/register",
            &json!({"host": "test", "profiles": ["x86-64-v3"], "cpu_flags": ["avx2", "sse4_2"], "labels": [], "slots": 1}),
        );
        assert_eq!(status, 200, "{reg}");
    }

    /// A rebuild request of `atom` for x86-64-v3, planned with the one-package merge list
    /// `cpv`; returns the request id (its step is ready).
    pub fn planned_rebuild(&self, atom: &str, cpv: &str) -> i64 {
        let (status, request) = self.http.json(
            self.http
                .client
                .post(self.url("/api/v1/requests"))
                .bearer_auth(&self.admin)
                .json(&json!({"kind": "rebuild", "profile": "x86-64-v3", "atom": atom})),
        );
        assert_eq!(status, 200, "{request}");
        let request_id = request["id"].as_i64().unwrap();
        self.plan(request_id, cpv);
        request_id
    }

    /// Leases the planning job of `request_id` and answers it with the one-package merge
    /// list `cpv` (its build step is then ready).
    pub fn plan(&self, request_id: i64, cpv: &str) {
        let (status, job) = self.lease();
        assert_eq!(status, 200, "{job}");
        assert_eq!(job["kind"], "plan", "{job}");
        let plan_lease = job["plan_lease"].as_str().unwrap().to_owned();
        let (status, planned) = self.worker_post(
            &format!("/api/v1/worker/plans/{request_id}?lease={plan_lease}"),
            &json!({"result": "planned", "merge_list": [
                {"cpv": cpv, "slot": "0", "repo": "farm-test", "use": []}
            ]}),
        );
        assert_eq!(status, 200, "{planned}");
        assert_eq!(planned["status"], "planned", "{planned}");
    }

    /// Long-polls (5 s) for a job.
    pub fn lease(&self) -> (u16, Value) {
        self.worker_post("/api/v1/worker/lease", &json!({ "wait_seconds": 5 }))
    }

    /// Leases the ready build step of `request_id`.
    pub fn lease_build(&self, request_id: i64) -> LeasedStep {
        let (status, job) = self.lease();
        assert_eq!(status, 200, "{job}");
        assert_eq!(job["kind"], "build", "{job}");
        assert_eq!(job["request_id"].as_i64(), Some(request_id), "{job}");
        LeasedStep {
            request_id,
            step: job["step_id"].as_i64().unwrap(),
            lease: job["lease_id"].as_i64().unwrap(),
        }
    }

    /// Uploads `bytes` for the step with the sha512 `announced`: (status, reply).
    pub fn upload(&self, step: &LeasedStep, bytes: &[u8], announced: &str) -> (u16, Value) {
        self.http.json(
            self.http
                .client
                .put(self.url(&format!(
                    "/api/v1/worker/steps/{}/binpkgs?lease={}",
                    step.step, step.lease
                )))
                .bearer_auth(&self.token)
                .header("x-binfarm-sha512", announced)
                .body(bytes.to_vec()),
        )
    }

    /// Appends a chunk to the step's log.
    pub fn append_log(&self, step: &LeasedStep, chunk: &[u8]) {
        let (status, _, body) = self.http.send(
            self.http
                .client
                .post(self.url(&format!(
                    "/api/v1/worker/steps/{}/log?lease={}",
                    step.step, step.lease
                )))
                .bearer_auth(&self.token)
                .body(chunk.to_vec()),
        );
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    }

    /// Reports the step's outcome: succeeded with `files` (upload replies), or failed.
    pub fn complete(&self, step: &LeasedStep, duration_ms: i64, files: Option<Vec<Value>>) {
        let body = match files {
            Some(files) => json!({"outcome": "succeeded", "lease_id": step.lease,
                                  "duration_ms": duration_ms, "files": files}),
            None => json!({"outcome": "failed", "lease_id": step.lease,
                           "duration_ms": duration_ms, "error": "test", "retryable": false}),
        };
        let (status, done) = self.worker_post(
            &format!("/api/v1/worker/steps/{}/complete", step.step),
            &body,
        );
        assert_eq!(status, 200, "{done}");
    }

    /// Waits until request `id` is published (publishing follows the request's end, in
    /// the background); returns its `published` field.
    pub fn wait_published(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.request(id);
            if !r["published"].is_null() {
                return r["published"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "request {id} not published: {r:#}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn request(&self, id: i64) -> Value {
        self.http
            .json(
                self.http
                    .client
                    .get(self.url(&format!("/api/v1/requests/{id}"))),
            )
            .1
    }
}
