//! `/metrics` of a real `binfarm serve` and of a lone `binfarm mirror`, parsed with the
//! Prometheus text parser of the Python `prometheus_client` package (installed in the
//! project venv by scripts/setup.sh).
//!
//! The farm test drives a worker over the protocol by hand (a real emerge-built gpkg is
//! uploaded), so every counter has a known value to check: one refused and one stored
//! upload, one completed build, one publish to the local tree, and mirror requests of each
//! kind.

mod common;
mod hand_farm;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::Value;

use hand_farm::{find_gpkg, free_port, sha512_hex, HandFarm, Http, Proc, BIN};

/// One metric family as the Python parser sees it.
#[derive(Debug, Clone)]
struct Family {
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Families by name, from `prometheus_client.parser.text_string_to_metric_families`
/// (it names a counter family without its `_total` suffix).
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name,
        "type": f.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
    })
print(json.dumps(families))
"#;
    let mut child = Command::new(common::venv().join("bin/python"))
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the venv's python (scripts/setup.sh installs it)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|f| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_owned(),
                    labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect();
            (
                f["name"].as_str().unwrap().to_owned(),
                Family {
                    kind: f["type"].as_str().unwrap().to_owned(),
                    samples,
                },
            )
        })
        .collect()
}

/// The value of sample `name` with exactly `labels` in `families`.
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("no sample {name}{wanted:?} in {families:#?}"))
}

fn assert_types(families: &BTreeMap<String, Family>, expected: &[(&str, &str)]) {
    for (name, kind) in expected {
        let family = families
            .get(*name)
            .unwrap_or_else(|| panic!("no family {name}: {:?}", families.keys()));
        assert_eq!(family.kind, *kind, "type of {name}");
    }
}

/// Scrapes `url`, checks the content type, and parses the text.
fn scrape(http: &Http, url: &str) -> BTreeMap<String, Family> {
    let (status, headers, body) = http.send(http.client.get(url));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        headers.get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse_exposition(&String::from_utf8(body).unwrap())
}

#[test]
fn coordinator_metrics_parse_and_count_what_happened() {
    let pkgdir = common::build_fixture_pkgdir("x86-64-v3", &["app-misc/hello"], false);
    let gpkg = std::fs::read(find_gpkg(&pkgdir, "hello-1.0")).unwrap();

    let tmp = common::tempdir();
    let farm = HandFarm::start(tmp.path());
    let http = &farm.http;
    let c = &http.client;
    let metrics_url = farm.url("/metrics");

    // Before anything happened: the families without per-profile or per-target labels are
    // there, with zeros.
    let always = [
        ("binfarm_queue_depth", "gauge"),
        ("binfarm_steps", "gauge"),
        ("binfarm_requests", "gauge"),
        ("binfarm_workers_registered", "gauge"),
        ("binfarm_workers_seen", "gauge"),
        ("binfarm_workers_paused", "gauge"),
        ("binfarm_upload_duration_seconds", "histogram"),
        ("binfarm_upload_received_bytes", "counter"),
        ("binfarm_uploads", "counter"),
        ("binfarm_publishes", "counter"),
        ("binfarm_mirror_requests", "counter"),
        ("binfarm_mirror_sent_bytes", "counter"),
    ];
    let families = scrape(http, &metrics_url);
    assert_types(&families, &always);
    assert_eq!(
        value(&families, "binfarm_uploads_total", &[("result", "stored")]),
        0.0
    );
    assert_eq!(value(&families, "binfarm_workers_registered", &[]), 1.0);
    assert_eq!(value(&families, "binfarm_workers_seen", &[]), 0.0);
    assert_eq!(
        value(&families, "binfarm_mirror_sent_bytes_total", &[]),
        0.0
    );
    assert_eq!(
        value(&families, "binfarm_requests", &[("state", "planning")]),
        0.0
    );

    // A worker registers, a rebuild request is planned by hand.
    farm.register();
    let request_id = farm.planned_rebuild("app-misc/hello", "app-misc/hello-1.0");

    let families = scrape(http, &metrics_url);
    assert_eq!(value(&families, "binfarm_workers_seen", &[]), 1.0);
    assert_eq!(
        value(&families, "binfarm_queue_depth", &[("state", "ready")]),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_steps", &[("state", "ready")]),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_requests", &[("state", "running")]),
        1.0
    );

    // The step is leased; one refused upload (wrong sha512), one stored, then success.
    let step = farm.lease_build(request_id);
    let (status, refused) = farm.upload(&step, &gpkg, &sha512_hex(b"other bytes"));
    assert_eq!(status, 400, "{refused}");
    let (status, stored) = farm.upload(&step, &gpkg, &sha512_hex(&gpkg));
    assert_eq!(status, 200, "{stored}");
    farm.complete(&step, 1500, Some(vec![stored]));
    let r = farm.request(request_id);
    assert_eq!(r["state"], "succeeded", "{r:#}");
    let published = farm.wait_published(request_id);
    assert_eq!(published["unchanged"], false, "{published}");

    // The mirror: the published index (200), the same again with its ETag (304), HEAD,
    // and a missing file (404).
    let index_url = farm.url("/mirror/x86-64-v3/testing/Packages");
    let (status, headers, index) = http.send(c.get(&index_url));
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&index).contains("CPV: app-misc/hello-1.0"),
        "{}",
        String::from_utf8_lossy(&index)
    );
    let etag = headers.get("etag").unwrap().clone();
    let (status, _, _) = http.send(c.get(&index_url).header("if-none-match", etag));
    assert_eq!(status, 304);
    let (status, _, _) = http.send(c.head(&index_url));
    assert_eq!(status, 200);
    let (status, _, _) = http.send(c.get(farm.url("/mirror/x86-64-v3/testing/nothing")));
    assert_eq!(status, 404);

    let families = scrape(http, &metrics_url);
    assert_types(&families, &always);
    assert_types(
        &families,
        &[
            ("binfarm_build_duration_seconds", "histogram"),
            ("binfarm_publish_duration_seconds", "histogram"),
        ],
    );
    let mirror = |method: &str, class: &str| {
        value(
            &families,
            "binfarm_mirror_requests_total",
            &[("method", method), ("status_class", class)],
        )
    };
    assert_eq!(mirror("GET", "2xx"), 1.0);
    assert_eq!(mirror("GET", "3xx"), 1.0);
    assert_eq!(mirror("GET", "4xx"), 1.0);
    assert_eq!(mirror("HEAD", "2xx"), 1.0);
    assert_eq!(mirror("HEAD", "4xx"), 0.0);
    assert_eq!(
        value(&families, "binfarm_mirror_sent_bytes_total", &[]),
        index.len() as f64,
        "only the one GET sent a body"
    );
    let build = [("profile", "x86-64-v3"), ("result", "succeeded")];
    assert_eq!(
        value(&families, "binfarm_build_duration_seconds_count", &build),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_build_duration_seconds_sum", &build),
        1.5
    );
    assert_eq!(
        value(
            &families,
            "binfarm_build_duration_seconds_bucket",
            &[
                ("profile", "x86-64-v3"),
                ("result", "succeeded"),
                ("le", "5")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &families,
            "binfarm_build_duration_seconds_bucket",
            &[
                ("profile", "x86-64-v3"),
                ("result", "succeeded"),
                ("le", "1")
            ]
        ),
        0.0
    );
    assert_eq!(
        value(&families, "binfarm_uploads_total", &[("result", "stored")]),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_uploads_total", &[("result", "refused")]),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_upload_received_bytes_total", &[]),
        gpkg.len() as f64,
        "the refused upload failed its sha512 check and is not counted"
    );
    assert_eq!(
        value(&families, "binfarm_upload_duration_seconds_count", &[]),
        1.0
    );
    assert!(value(&families, "binfarm_upload_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(
            &families,
            "binfarm_publishes_total",
            &[("target", "local"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &families,
            "binfarm_publish_duration_seconds_count",
            &[("target", "local")]
        ),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_requests", &[("state", "succeeded")]),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_steps", &[("state", "succeeded")]),
        1.0
    );
    assert_eq!(
        value(&families, "binfarm_queue_depth", &[("state", "ready")]),
        0.0
    );
    // /health stays.
    let (status, _, body) = http.send(c.get(farm.url("/health")));
    assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
}

#[test]
fn lone_mirror_serves_its_own_metrics() {
    let tmp = common::tempdir();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("p/stable")).unwrap();
    let body = b"TIMESTAMP: 1\n\n".repeat(100);
    std::fs::write(root.join("p/stable/Packages"), &body).unwrap();
    let port = free_port();
    let log = tmp.path().join("mirror.log");
    let _mirror = Proc(
        Command::new(BIN)
            .args(["mirror", "--root"])
            .arg(&root)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = Http::new();
    http.wait_up(&format!("{base}/metrics"), &log);
    let c = &http.client;
    let (status, _, got) = http.send(c.get(format!("{base}/p/stable/Packages")));
    assert_eq!((status, got.len()), (200, body.len()));
    let (status, _, _) = http.send(
        c.get(format!("{base}/p/stable/Packages"))
            .header("range", "bytes=0-9"),
    );
    assert_eq!(status, 206);
    let (status, _, _) = http.send(c.get(format!("{base}/p/stable/missing")));
    assert_eq!(status, 404);
    let (status, _, _) = http.send(c.post(format!("{base}/p/stable/Packages")));
    assert_eq!(status, 405);

    let families = scrape(&http, &format!("{base}/metrics"));
    assert_types(
        &families,
        &[
            ("binfarm_mirror_requests", "counter"),
            ("binfarm_mirror_sent_bytes", "counter"),
        ],
    );
    assert!(!families.contains_key("binfarm_steps"), "{families:?}");
    let requests = |method: &str, class: &str| {
        value(
            &families,
            "binfarm_mirror_requests_total",
            &[("method", method), ("status_class", class)],
        )
    };
    // The scrapes that waited for the server are not mirror requests.
    assert_eq!(requests("GET", "2xx"), 2.0);
    assert_eq!(requests("GET", "4xx"), 1.0);
    assert_eq!(requests("other", "4xx"), 1.0);
    assert_eq!(
        value(&families, "binfarm_mirror_sent_bytes_total", &[]),
        (body.len() + 10) as f64
    );
}
