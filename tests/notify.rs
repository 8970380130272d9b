//! Notifications of a real `binfarm serve` (`[notify]` with both a command and a webhook):
//! a failing request names the failing package with a working link to its log page; a
//! succeeded one says which snapshot it was published as; a webhook that fails once is tried
//! again. The worker is driven over the protocol by hand (a real emerge-built gpkg is
//! uploaded); the webhook receiver is a small HTTP server in this test.

mod common;
mod hand_farm;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use hand_farm::{find_gpkg, sha512_hex, HandFarm, BIN};

/// Bodies POSTed to the receiver, in order, with the status each got.
type Received = Arc<Mutex<Vec<(u16, String)>>>;

/// A webhook receiver on 127.0.0.1 answering 503 to every `fail_every`-th POST counting
/// from the first (1: every one fails, 2: the first, third... fail), 204 otherwise.
fn webhook_receiver(fail_every: usize) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let seen = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut seen = seen.lock().unwrap();
            let status = if seen.len() % fail_every == 0 {
                503
            } else {
                204
            };
            seen.push((status, String::from_utf8_lossy(&body).into_owned()));
            let reason = if status == 503 {
                "Service Unavailable"
            } else {
                "No Content"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, received)
}

/// Waits for the `n`-th notification written by the command (one JSON per line).
fn command_notification(path: &std::path::Path, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect();
        if docs.len() >= n {
            return docs[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "notification {n} missing: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the receiver has `n` POSTs.
fn webhook_posts(farm: &HandFarm, received: &Received, n: usize) -> Vec<(u16, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let posts = received.lock().unwrap().clone();
        if posts.len() >= n {
            return posts;
        }
        assert!(
            Instant::now() < deadline,
            "{} webhook posts, wanted {n}: {posts:?}\n{}",
            posts.len(),
            std::fs::read_to_string(&farm.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failing_and_succeeded_requests_are_notified_by_command_and_webhook() {
    let pkgdir = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], false);
    let gpkg = std::fs::read(find_gpkg(&pkgdir, "hello-1.0")).unwrap();
    let tmp = common::tempdir();
    let (webhook, received) = webhook_receiver(2);
    let notified = tmp.path().join("notified.jsonl");
    let farm = HandFarm::start_with(
        tmp.path(),
        &format!(
            "[notify]\ncommand = \"cat >> '{}'; echo >> '{}'\"\nwebhook = \"{webhook}\"\n\
             webhook_attempts = 2\n",
            notified.display(),
            notified.display()
        ),
    );
    farm.register();

    // A failing build, asked for by an operator who waits for it: the notification names
    // the package, its reason and its log page; `rebuild --wait` says the same and fails.
    let mut operator = Command::new(BIN)
        .args([
            "rebuild",
            "app-misc/hello",
            "--profile",
            "x86-64-v3",
            "--wait",
        ])
        .arg("--config")
        .arg(&farm.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut operator_out = BufReader::new(operator.stdout.take().unwrap());
    let mut first = String::new();
    operator_out.read_line(&mut first).unwrap();
    let failing: i64 = first
        .strip_prefix("request ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no request id in {first:?}"));
    farm.plan(failing, "app-misc/hello-1.0");
    let step = farm.lease_build(failing);
    farm.append_log(
        &step,
        b">>> Emerging (1 of 1) app-misc/hello-1.0\nNOTIFY-LOG-LINE\n",
    );
    farm.complete(&step, 800, None);
    let mut rest = String::new();
    operator_out.read_to_string(&mut rest).unwrap();
    let status = operator.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(
        rest.contains(&format!("request {failing} failed")),
        "{rest}"
    );
    assert!(
        rest.contains(&format!(
            "failed app-misc/hello-1.0: test  log: {}",
            farm.url(&format!("/steps/{}/log", step.step))
        )),
        "{rest}"
    );
    let by_command = command_notification(&notified, 1);
    assert_eq!(by_command["request_id"], failing, "{by_command:#}");
    assert_eq!(by_command["state"], "failed", "{by_command:#}");
    assert_eq!(by_command["published"], Value::Null, "{by_command:#}");
    let failed = &by_command["failed"][0];
    assert_eq!(failed["cpv"], "app-misc/hello-1.0", "{by_command:#}");
    assert_eq!(failed["state"], "failed", "{by_command:#}");
    let log_url = failed["log_url"].as_str().unwrap();
    assert_eq!(log_url, farm.url(&format!("/steps/{}/log", step.step)));
    let (status, _, page) = farm.http.send(farm.http.client.get(log_url));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("NOTIFY-LOG-LINE"));
    let (status, _, text) = farm.http.send(
        farm.http
            .client
            .get(failed["log_text_url"].as_str().unwrap()),
    );
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&text).contains("NOTIFY-LOG-LINE"));

    // The webhook got the same summary: answered 503 first, tried again, then 204.
    let posts = webhook_posts(&farm, &received, 2);
    assert_eq!((posts[0].0, posts[1].0), (503, 204), "{posts:?}");
    assert_eq!(posts[0].1, posts[1].1);
    let by_webhook: Value = serde_json::from_str(&posts[1].1).unwrap();
    assert_eq!(by_webhook, by_command);

    // A succeeded build: published as a new snapshot, said in both notifications and by
    // `binfarm status --request`.
    let succeeding = farm.planned_rebuild("app-misc/hello", "app-misc/hello-1.0");
    let step = farm.lease_build(succeeding);
    let (status, stored) = farm.upload(&step, &gpkg, &sha512_hex(&gpkg));
    assert_eq!(status, 200, "{stored}");
    farm.complete(&step, 1200, Some(vec![stored]));
    let by_command = command_notification(&notified, 2);
    assert_eq!(by_command["request_id"], succeeding, "{by_command:#}");
    assert_eq!(by_command["state"], "succeeded", "{by_command:#}");
    assert_eq!(
        by_command["failed"],
        serde_json::json!([]),
        "{by_command:#}"
    );
    assert_eq!(by_command["built"], 1, "{by_command:#}");
    let published = &by_command["published"];
    assert_eq!(published["channel"], "testing", "{by_command:#}");
    assert_eq!(published["unchanged"], false, "{by_command:#}");
    let snapshot = published["snapshot_id"].as_i64().expect("snapshot id");
    assert_eq!(farm.wait_published(succeeding)["snapshot_id"], snapshot);
    let posts = webhook_posts(&farm, &received, 3);
    assert_eq!(posts[2].0, 503, "{posts:?}");
    let posts = webhook_posts(&farm, &received, 4);
    assert_eq!(posts[3].0, 204, "{posts:?}");
    let by_webhook: Value = serde_json::from_str(&posts[3].1).unwrap();
    assert_eq!(by_webhook, by_command);

    // /metrics counts them: two commands, two webhook notifications, none failed for good
    // (counted once the webhook's answer is back: a moment after the receiver saw it).
    let wanted: Vec<String> = [
        r#"kind="command",result="ok"} 2"#,
        r#"kind="webhook",result="ok"} 2"#,
        r#"kind="webhook",result="error"} 0"#,
    ]
    .iter()
    .map(|tail| format!("binfarm_notifications_total{{{tail}"))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, metrics) = farm.http.send(farm.http.client.get(farm.url("/metrics")));
        assert_eq!(status, 200);
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        if wanted.iter().all(|w| metrics.lines().any(|l| l == w)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all of {wanted:?} in\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = common::run_ok(
        Command::new(BIN)
            .args(["status", "--request", &succeeding.to_string(), "--config"])
            .arg(&farm.config),
        "binfarm status --request",
    );
    assert!(
        out.contains(&format!("published: snapshot {snapshot} (to testing)")),
        "{out}"
    );
}
