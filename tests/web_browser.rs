//! The web status pages in a real headless browser (Debian's chromium, started per page with
//! `--dump-dom`): a real `binfarm serve` fed through the worker HTTP API with real
//! emerge-built gpkgs (three published snapshots, one promoted), one failing request and
//! one step still building. Checks what each page shows after its scripts ran: the
//! dashboard, a request page (and a failing one with its log links, as notifications send
//! them), the live log page following a build until it completes, the snapshot diff page,
//! and the 404 page; and that nothing the farm stores is interpreted as HTML.

mod common;
mod process_farm;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binfarm::profile::BinpkgFormat;
use serde_json::{json, Value};

use process_farm::{FarmSettings, Proc, ProcessFarm};

const PROFILE: &str = "x86-64-v3";

/// A coordinator whose notify command writes `notified.json` in `dir`; long leases (the
/// test drives its worker by hand, at its own pace).
fn start_farm(dir: &Path) -> (ProcessFarm, Proc) {
    let farm = ProcessFarm::new(
        dir,
        &FarmSettings {
            lease_seconds: 300,
            heartbeat_seconds: 5,
            max_attempts: 2,
            extra: format!(
                "[notify]\ncommand = \"cat > '{}'\"\n",
                dir.join("notified.json").display()
            ),
        },
    );
    let coordinator = farm.start_coordinator();
    (farm, coordinator)
}

/// A worker driven by hand over the worker protocol.
struct Worker<'a> {
    farm: &'a ProcessFarm,
    token: String,
}

impl<'a> Worker<'a> {
    fn register(farm: &'a ProcessFarm, name: &str) -> Worker<'a> {
        let token_file = farm.dir.join(format!("{name}.token"));
        farm.binfarm(&[
            "token",
            "create",
            "--worker",
            name,
            "--output",
            token_file.to_str().expect("utf-8 path"),
        ]);
        let token = std::fs::read_to_string(&token_file)
            .expect("worker token")
            .trim()
            .to_owned();
        let worker = Worker { farm, token };
        let reply = farm.ok(
            "POST",
            "/api/v1/worker/register",
            Some(&worker.token),
            Some(json!({"host": "buildhost-<1>", "profiles": [PROFILE],
                        "cpu_flags": ["avx2", "sse4_2"], "labels": [], "slots": 1})),
        );
        assert_eq!(reply["accepted_profiles"], json!([PROFILE]), "{reply}");
        worker
    }

    fn lease(&self) -> Value {
        self.farm.ok(
            "POST",
            "/api/v1/worker/lease",
            Some(&self.token),
            Some(json!({"wait_seconds": 5})),
        )
    }

    /// Leases the planning job of `request` and answers it with these packages.
    fn plan(&self, request: i64, cpvs: &[&str]) {
        let job = self.lease();
        assert_eq!(job["kind"], "plan", "{job}");
        assert_eq!(job["request_id"], request, "{job}");
        let lease = job["plan_lease"].as_str().expect("plan lease");
        let merge_list: Vec<Value> = cpvs
            .iter()
            .map(|cpv| json!({"cpv": cpv, "slot": "0", "repo": "farm-test", "use": []}))
            .collect();
        let reply = self.farm.ok(
            "POST",
            &format!("/api/v1/worker/plans/{request}?lease={lease}"),
            Some(&self.token),
            Some(json!({"result": "planned", "merge_list": merge_list})),
        );
        assert_eq!(reply["status"], "planned", "{reply}");
    }

    /// Leases a build; returns (step id, lease id, cpv).
    fn lease_build(&self) -> (i64, i64, String) {
        let job = self.lease();
        assert_eq!(job["kind"], "build", "{job}");
        (
            job["step_id"].as_i64().expect("step id"),
            job["lease_id"].as_i64().expect("lease id"),
            job["cpv"].as_str().expect("cpv").to_owned(),
        )
    }

    fn log(&self, step: i64, lease: i64, text: &str) {
        let (status, reply) = self.farm.send_bytes(
            "POST",
            &format!("/api/v1/worker/steps/{step}/log?lease={lease}"),
            &self.token,
            text.as_bytes().to_vec(),
            None,
        );
        assert_eq!(status, 204, "log append: {reply}");
    }

    fn heartbeat(&self, body: Value) -> Value {
        self.farm.ok(
            "POST",
            "/api/v1/worker/heartbeat",
            Some(&self.token),
            Some(body),
        )
    }

    /// Builds the leased step "successfully": log, upload of the emerge-built gpkg, completion.
    fn build_ok(&self, step: i64, lease: i64, cpv: &str, gpkg: &Path) {
        self.log(
            step,
            lease,
            &format!(">>> Emerging (1 of 1) {cpv}::farm-test\n>>> Completed\n"),
        );
        let bytes = std::fs::read(gpkg).expect("reading the gpkg");
        let sha = hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&bytes));
        let (status, upload) = self.farm.send_bytes(
            "PUT",
            &format!("/api/v1/worker/steps/{step}/binpkgs?lease={lease}"),
            &self.token,
            bytes,
            Some(sha),
        );
        assert_eq!(status, 200, "upload of {cpv}: {upload}");
        let reply = self.farm.ok(
            "POST",
            &format!("/api/v1/worker/steps/{step}/complete"),
            Some(&self.token),
            Some(json!({"outcome": "succeeded", "lease_id": lease, "duration_ms": 1500, "files": [upload]})),
        );
        assert!(
            reply["status"]
                .as_str()
                .unwrap_or("")
                .starts_with("recorded"),
            "{reply}"
        );
    }

    /// Plans `request` with `cpvs` and builds every step it hands out.
    fn run_request(&self, request: i64, cpvs: &[&str], builds: usize, gpkgs: &Gpkgs) {
        self.plan(request, cpvs);
        for _ in 0..builds {
            let (step, lease, cpv) = self.lease_build();
            self.build_ok(step, lease, &cpv, gpkgs.of(&cpv));
        }
        let r = self
            .farm
            .ok("GET", &format!("/api/v1/requests/{request}"), None, None);
        assert_eq!(r["state"], "succeeded", "{r:#}\n{}", self.farm.serve_log());
        let published = self.farm.wait_published(request);
        assert!(published["snapshot_id"].is_i64(), "{published}");
    }
}

/// Unsigned emerge-built gpkgs of the fixture (the coordinator signs uploads).
struct Gpkgs(Vec<(String, PathBuf)>);

impl Gpkgs {
    fn of(&self, cpv: &str) -> &Path {
        &self
            .0
            .iter()
            .find(|(c, _)| c == cpv)
            .unwrap_or_else(|| panic!("no gpkg of {cpv} in {:?}", self.0))
            .1
    }
}

fn create_request(farm: &ProcessFarm, body: Value) -> i64 {
    let reply = farm.ok(
        "POST",
        "/api/v1/requests",
        Some(&farm.admin_token()),
        Some(body),
    );
    reply["id"].as_i64().expect("request id")
}

// ----- the browser -----

/// The DOM of `url` after its scripts ran (up to `budget_ms` of virtual time), from a fresh
/// headless chromium with its own profile directory, killed by PID if it hangs.
fn dump_dom(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium (scripts/setup.sh installs it)");
    let mut stdout = child.stdout.take().expect("chromium stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish {url} within 90 s");
            }
        }
    }
    let dom = reader.join().expect("reading chromium output");
    assert!(
        dom.contains("</html>"),
        "no DOM from chromium for {url}: {dom:?}"
    );
    dom
}

/// The text inside the element with this id, up to its first child tag (or its end).
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in\n{dom}"));
    let open_end = start + dom[start..].find('>').expect("end of the tag") + 1;
    let end = open_end + dom[open_end..].find('<').unwrap_or(dom.len() - open_end);
    dom[open_end..end].to_string()
}

/// A TCP proxy in front of the coordinator that holds the first request containing
/// `needle` until `hook` has run: the browser waits for that answer, so what `hook` does
/// happens after the page was served and before its script hears back, every time.
struct HoldingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    matched: Arc<AtomicBool>,
}

type Hook = Box<dyn FnOnce() + Send>;

impl HoldingProxy {
    fn start(upstream: u16, needle: String, hook: Hook) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listen");
        let port = listener.local_addr().expect("proxy addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let matched = Arc::new(AtomicBool::new(false));
        let hook: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(Some(hook)));
        let (stop2, matched2) = (stop.clone(), matched.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (hook, matched, needle) = (hook.clone(), matched2.clone(), needle.clone());
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone client"),
                    server.try_clone().expect("clone server"),
                );
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        if String::from_utf8_lossy(chunk).contains(&needle) {
                            let pending = hook.lock().map(|mut h| h.take()).unwrap_or(None);
                            if let Some(run) = pending {
                                run();
                                matched.store(true, Ordering::SeqCst);
                            }
                        }
                        if s_write.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        HoldingProxy {
            port,
            stop,
            matched,
        }
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn status_pages_in_a_real_browser() {
    let started = Instant::now();
    let built = common::build_fixture(
        PROFILE,
        &["app-misc/hello", "app-misc/greeter"],
        false,
        BinpkgFormat::Gpkg,
    );
    let gpkgs = Gpkgs(
        built
            .built
            .iter()
            .map(|(cpv, rel, _)| (cpv.clone(), built.pkgdir.join(rel)))
            .collect(),
    );
    let (libhello, hello, greeter) = (
        "dev-libs/libhello-1.0",
        "app-misc/hello-1.0",
        "app-misc/greeter-1.0",
    );
    let tmp = common::tempdir();
    let (farm, _coordinator) = start_farm(tmp.path());
    let port: u16 = farm
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let page = |path: &str| dump_dom(&format!("{}{path}", farm.url), 5000);

    // The empty farm: every section says so.
    let dom = page("/");
    assert!(dom.contains("No snapshot published yet."), "{dom}");
    assert!(dom.contains("No worker has registered."), "{dom}");

    // Three published snapshots: nightly 1 (libhello, hello), nightly 2 adds greeter
    // (the others cached), rebuild 3 rebuilds hello. Snapshot 2 is promoted to stable.
    let w1 = Worker::register(&farm, "w1");
    let nightly = json!({"kind": "nightly", "profile": PROFILE});
    let r1 = create_request(&farm, nightly.clone());
    w1.run_request(r1, &[libhello, hello], 2, &gpkgs);
    let r2 = create_request(&farm, nightly);
    w1.run_request(r2, &[libhello, hello, greeter], 1, &gpkgs);
    farm.binfarm(&["promote", "--profile", PROFILE]);
    let r3 = create_request(
        &farm,
        json!({"kind": "rebuild", "profile": PROFILE, "atom": "app-misc/hello"}),
    );
    w1.run_request(r3, &[libhello, hello], 1, &gpkgs);
    let snapshots = farm.binfarm(&["snapshots", "list", "--profile", PROFILE]);

    // A failing request with its step building (log so far: one line with markup in it),
    // and another request whose step waits in the queue.
    let r4 = create_request(
        &farm,
        json!({"kind": "rebuild", "profile": PROFILE, "atom": "app-misc/greeter"}),
    );
    w1.plan(r4, &[libhello, greeter]);
    let (step4, lease4, cpv4) = w1.lease_build();
    assert_eq!(cpv4, greeter);
    w1.log(
        step4,
        lease4,
        "LINE-ONE <script>document.title='owned'</script> & <b>bold?</b>\n",
    );
    let r5 = create_request(
        &farm,
        json!({"kind": "rebuild", "profile": PROFILE, "atom": "app-misc/hello"}),
    );
    w1.plan(r5, &[libhello, hello]);
    // An old-style heartbeat (no load) is still accepted; then one with the load.
    w1.heartbeat(json!({"leases": [lease4], "plan_leases": []}));
    let hb = w1.heartbeat(json!({"leases": [lease4], "plan_leases": [], "load_1min": 0.42}));
    assert_eq!(hb["revoked"], json!([]), "{hb}");

    // Dashboard.
    let dom = page("/");
    for want in [
        r#"data-profile="x86-64-v3" data-channel="stable""#,
        r#"data-profile="x86-64-v3" data-channel="testing""#,
        "class=\"promote-diff\"",
        "live log",
    ] {
        assert!(dom.contains(want), "dashboard lacks {want:?}:\n{dom}");
    }
    let channel_row = |name: &str| {
        let marker = format!(r#"data-channel="{name}""#);
        let at = dom.find(&marker).expect("channel row");
        dom[at..at + dom[at..].find("</tr>").expect("row end")].to_string()
    };
    assert!(
        channel_row("testing").contains("#3"),
        "{}\n{snapshots}",
        channel_row("testing")
    );
    assert!(
        channel_row("stable").contains("#2"),
        "{}",
        channel_row("stable")
    );
    assert!(
        channel_row("testing").contains("ago"),
        "{}",
        channel_row("testing")
    );
    assert_eq!(text_of(&dom, "queue-ready"), "1", "{dom}");
    assert_eq!(text_of(&dom, "queue-running"), "1", "{dom}");
    assert_eq!(text_of(&dom, "queue-requests"), "2", "{dom}");
    let running = &dom[dom
        .find("class=\"running-step\"")
        .expect("running step row")..];
    let running = &running[..running.find("</tr>").expect("row end")];
    for want in [
        greeter,
        PROFILE,
        "w1",
        "building",
        &format!("/steps/{step4}/log"),
    ] {
        assert!(
            running.contains(want),
            "running step lacks {want:?}: {running}"
        );
    }
    let worker = &dom[dom.find(r#"data-worker="w1""#).expect("worker row")..];
    let worker = &worker[..worker.find("</tr>").expect("row end")];
    assert!(worker.contains("0.42"), "load: {worker}");
    assert!(worker.contains("s ago"), "heartbeat age: {worker}");
    assert!(
        worker.contains("buildhost-&lt;1&gt;"),
        "host escaped: {worker}"
    );

    // A succeeded request: its steps, durations, log links and its snapshot.
    let dom = page(&format!("/requests/{r1}"));
    assert_eq!(text_of(&dom, "request-state"), "succeeded", "{dom}");
    assert_eq!(dom.matches("class=\"step\"").count(), 2, "{dom}");
    assert!(
        dom.contains("<td class=\"num\">1s</td>"),
        "duration of 1500 ms: {dom}"
    );
    assert!(dom.contains("href=\"/steps/"), "log links: {dom}");
    assert!(dom.contains("as snapshot #1"), "{dom}");
    assert!(!dom.contains("id=\"failing\""), "{dom}");

    // The live log page follows the building step. Its first poll is held by the proxy
    // until the step has logged another line and failed, so that line and the final state
    // can only have come from the script.
    let line_two = "LINE-TWO from the poll: error: <undefined reference>\n";
    let proxy = {
        let (url, token) = (farm.url.clone(), w1.token.clone());
        // The hook runs on the proxy's thread, with a client of its own.
        let http = reqwest::Client::new();
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let hook: Hook = Box::new(move || {
            rt.block_on(async {
                let log = http
                    .post(format!(
                        "{url}/api/v1/worker/steps/{step4}/log?lease={lease4}"
                    ))
                    .bearer_auth(&token)
                    .body(line_two)
                    .send()
                    .await
                    .expect("appending to the log");
                assert_eq!(log.status().as_u16(), 204);
                let done = http
                    .post(format!("{url}/api/v1/worker/steps/{step4}/complete"))
                    .bearer_auth(&token)
                    .json(
                        &json!({"outcome": "failed", "lease_id": lease4, "duration_ms": 2500,
                                  "error": "compile failed", "retryable": false}),
                    )
                    .send()
                    .await
                    .expect("completing the step");
                assert_eq!(done.status().as_u16(), 200);
            });
        });
        HoldingProxy::start(port, format!("GET /api/v1/steps/{step4}/log?offset="), hook)
    };
    let live_url = format!("http://127.0.0.1:{}/steps/{step4}/log", proxy.port);
    let served = farm
        .call("GET", &format!("/steps/{step4}/log"), None, None)
        .1;
    let served = served.as_str().unwrap_or_default().to_owned();
    assert!(
        served.contains("LINE-ONE") && !served.contains("LINE-TWO"),
        "{served}"
    );
    let dom = dump_dom(&live_url, 20_000);
    assert!(
        proxy.matched.load(Ordering::SeqCst),
        "the page never polled the log:\n{dom}"
    );
    let log = text_of(&dom, "log");
    assert!(log.contains("LINE-ONE &lt;script&gt;document.title='owned'&lt;/script&gt; &amp; &lt;b&gt;bold?&lt;/b&gt;"), "{log}");
    assert!(
        log.contains("LINE-TWO from the poll: error: &lt;undefined reference&gt;"),
        "polled line missing: {log}"
    );
    assert!(
        !dom.contains("owned</title>"),
        "log text ran as markup: {dom}"
    );
    assert_eq!(
        text_of(&dom, "log-status"),
        "Log complete (failed).",
        "{dom}"
    );
    assert_eq!(text_of(&dom, "step-state"), "failed", "{dom}");
    drop(proxy);

    // The failing request lists the failing package with a link to its log page; the
    // notification links to the same pages.
    // A succeeded request says which snapshot it was published as.
    let dom = page(&format!("/requests/{r3}"));
    assert_eq!(
        text_of(&dom, "published"),
        format!("as snapshot #3 of {PROFILE} ("),
        "{dom}"
    );
    let dom = page(&format!("/requests/{r4}"));
    assert!(!dom.contains("id=\"published\""), "{dom}");
    assert_eq!(text_of(&dom, "request-state"), "failed", "{dom}");
    let failing = &dom[dom.find("id=\"failing\"").expect("failing section")..];
    let failing = &failing[..failing.find("</section>").expect("section end")];
    assert!(failing.contains(greeter), "{failing}");
    assert!(failing.contains("compile failed"), "{failing}");
    assert!(
        failing.contains(&format!("href=\"/steps/{step4}/log\"")),
        "{failing}"
    );
    // Notifications go out in the background once the request has ended.
    let notified_path = tmp.path().join("notified.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let notified = loop {
        match std::fs::read_to_string(&notified_path) {
            Ok(text) if serde_json::from_str::<Value>(&text).is_ok() => break text,
            _ => {
                assert!(std::time::Instant::now() < deadline, "no notification");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let notified: Value = serde_json::from_str(&notified).expect("notification JSON");
    assert_eq!(notified["request_id"], r4, "{notified:#}");
    assert_eq!(
        notified["url"],
        format!("{}/requests/{r4}", farm.url),
        "{notified:#}"
    );
    let log_url = notified["failed"][0]["log_url"]
        .as_str()
        .expect("log_url")
        .to_owned();
    assert_eq!(
        log_url,
        format!("{}/steps/{step4}/log", farm.url),
        "{notified:#}"
    );
    let dom = dump_dom(&log_url, 5000);
    assert_eq!(
        text_of(&dom, "log-status"),
        "Log complete (failed).",
        "{dom}"
    );
    assert!(text_of(&dom, "log").contains("LINE-TWO"), "{dom}");

    // Snapshot diffs: the default compares with the snapshot before; any two on request.
    let dom = page(&format!("/snapshots/{PROFILE}/diff"));
    assert_eq!(
        text_of(&dom, "diff-summary"),
        "0 added, 0 upgraded, 0 downgraded, 0 removed, 1 rebuilt, 2 unchanged",
        "{dom}"
    );
    let dom = page(&format!("/snapshots/{PROFILE}/diff?from=1&to=3"));
    assert_eq!(
        text_of(&dom, "diff-summary"),
        "1 added, 0 upgraded, 0 downgraded, 0 removed, 1 rebuilt, 1 unchanged",
        "{dom}"
    );
    let added = &dom[dom.find("id=\"diff-added\"").expect("added section")..];
    assert!(
        added.contains("app-misc/greeter") && added.contains("1.0 (build 1)"),
        "{added}"
    );
    let rebuilt = &dom[dom.find("id=\"diff-rebuilt\"").expect("rebuilt section")..];
    assert!(rebuilt.contains("app-misc/hello"), "{rebuilt}");
    assert!(
        rebuilt.contains("1.0 (build 1)") && rebuilt.contains("1.0 (build 2)"),
        "{rebuilt}"
    );
    let dom = page(&format!("/snapshots/{PROFILE}/diff?from=3&to=1"));
    let removed = &dom[dom.find("id=\"diff-removed\"").expect("removed section")..];
    assert!(removed.contains("app-misc/greeter"), "{removed}");
    assert!(!dom.contains("id=\"diff-added\""), "{dom}");

    // Unknown or malformed ids answer the 404 page; odd input never breaks a page.
    for path in [
        "/requests/999".to_string(),
        "/requests/%3Cscript%3E".to_string(),
        "/steps/999/log".to_string(),
        format!("/snapshots/{PROFILE}/diff?to=999"),
        "/snapshots/no-such-profile/diff".to_string(),
    ] {
        let (status, body) = farm.call("GET", &path, None, None);
        assert_eq!(status, 404, "{path}: {body}");
        let dom = page(&path);
        assert!(dom.contains("<h1>Not found</h1>"), "{path}: {dom}");
        assert!(!dom.contains("<script>"), "{path}: {dom}");
    }
    let (status, _) = farm.call(
        "GET",
        &format!("/snapshots/{PROFILE}/diff?from=x"),
        None,
        None,
    );
    assert_eq!(status, 400);

    eprintln!("web browser test took {:.1?}", started.elapsed());
}
