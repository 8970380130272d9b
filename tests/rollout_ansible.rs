//! The generated Ansible inventory and playbook, checked with the real ansible-core from the
//! project venv: `--syntax-check` and `ansible-inventory` on 500 hosts, and a check-mode run
//! on `ansible_connection=local` hosts with a real HTTP health endpoint on 127.0.0.1.

mod rollout_support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::thread;

use binfarm::rollout;
use rollout_support::*;

/// Snapshot `next`: glibc upgraded (disruptive), tar upgraded (online), PHP 8.2 replaced by 8.3
/// (slot added, switched, old slot removed). Every kind of wave appears.
fn next_snapshot() -> Vec<Pkg> {
    changed(
        BASE,
        &[
            "sys-libs/glibc-2.39-r5",
            "app-arch/tar-1.34",
            "dev-lang/php-8.2.20",
        ],
        &[
            ("sys-libs/glibc-2.40-r2", "2.2", 1),
            ("app-arch/tar-1.35", "0", 1),
            ("dev-lang/php-8.3.10", "8.3", 1),
        ],
    )
}

fn ansible(program: &str, dir: &Path, args: &[&str]) -> Output {
    let tool = venv_tool(program);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup.sh (installs ansible-core into the venv)",
        tool.display()
    );
    Command::new(&tool)
        .args(args)
        .current_dir(dir)
        .env("ANSIBLE_HOME", dir.join(".ansible"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join(".ansible/tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("ansible runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn playbook_for_500_hosts_passes_syntax_check() {
    let hosts = generated_hosts(500);
    let fixture = Fixture::new(&inventory_toml(
        &hosts,
        "[health_check]\nurl = \"http://127.0.0.1/health\"\n\n[[slot_switch]]\npackage = \"dev-lang/php\"\n\
         commands = [\"eselect php set cli php{slot}\", \"eselect php set fpm php{slot}\"]\n",
    ));
    for profile in PROFILES {
        fixture.snapshot(profile, "s1", BASE);
    }
    fixture.snapshot("amd64-v2", "next", &next_snapshot());
    fixture.snapshot("amd64-v3", "next", &next_snapshot());
    fixture.snapshot("amd64-v4", "next", BASE);
    let out = fixture.dir.path().join("ansible");
    let mut request = fixture.request(&["s1"], &["next"]);
    request.ansible_dir = Some(out.clone());
    request.json = true;
    let plan: serde_json::Value =
        serde_json::from_str(&rollout::plan_command(&request).unwrap()).unwrap();

    let check = ansible(
        "ansible-playbook",
        &out,
        &["-i", "inventory.yml", "playbook.yml", "--syntax-check"],
    );
    assert!(check.status.success(), "{}", text(&check));

    // Ansible reads the inventory as meant: one group per wave with exactly the plan's hosts.
    let listed = ansible(
        "ansible-inventory",
        &out,
        &["-i", "inventory.yml", "--list"],
    );
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let waves = plan["waves"].as_array().unwrap();
    let kinds: BTreeSet<&str> = waves.iter().map(|w| w["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["disruptive", "online", "slot-switch", "slot-removal"])
    );
    let width = waves.len().to_string().len().max(2);
    for wave in waves {
        let number = wave["number"].as_u64().unwrap() as usize;
        let kind = wave["kind"].as_str().unwrap().replace('-', "_");
        let group = match wave["member"].as_u64() {
            Some(member) => format!("wave_{number:0width$}_{kind}_member_{member}"),
            None => format!("wave_{number:0width$}_{kind}"),
        };
        let in_group: BTreeSet<&str> = listed[&group]["hosts"]
            .as_array()
            .unwrap_or_else(|| panic!("group {group} missing"))
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        let planned: BTreeSet<&str> = wave["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host"].as_str().unwrap())
            .collect();
        assert_eq!(in_group, planned, "group {group}");
    }
    let hostvars = &listed["_meta"]["hostvars"];
    let v4_hosts = hosts.iter().filter(|h| h.4 == "amd64-v4").count();
    assert_eq!(hostvars.as_object().unwrap().len(), 500 - v4_hosts);
    let (host, _, farm, member, profile) = hosts.iter().find(|h| h.4 == "amd64-v2").unwrap();
    assert_eq!(hostvars[host]["binfarm_profile"], profile.as_str());
    assert_eq!(hostvars[host]["binfarm_farm"], farm.as_str());
    assert_eq!(hostvars[host]["binfarm_member"], *member);
    assert_eq!(
        hostvars[host]["binfarm_rollout"]["amd64-v2"]["remove"],
        serde_json::json!(["dev-lang/php:8.2"])
    );
}

/// A health endpoint on 127.0.0.1: records `?host=` of every request, answers 503 for
/// `unhealthy` and 200 for everyone else.
fn health_server(unhealthy: Option<&str>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let unhealthy = unhealthy.map(String::from);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let host = path.split("host=").nth(1).unwrap_or("").to_string();
            let status = if Some(&host) == unhealthy.as_ref() {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            record.lock().unwrap().push(host);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    (port, seen)
}

/// Two farms of two members on this machine (ansible_connection=local); `mad-b-02` runs an
/// unchanged profile and must be left alone.
fn local_fixture(port: u16) -> Fixture {
    let python = venv_tool("python");
    let settings = format!(
        "[rollout]\nmax_parallel = 2\n# Would fail if anything ran it in check mode.\nbefore_disruptive = [\"exit 1\"]\n\n\
         [health_check]\nurl = \"http://127.0.0.1:{port}/health?host={{{{ inventory_hostname }}}}\"\nretries = 1\ndelay = 1\n\n\
         [ansible]\nvars = {{ ansible_connection = \"local\", ansible_python_interpreter = \"{}\" }}\n\n\
         [[slot_switch]]\npackage = \"dev-lang/php\"\ncommands = [\"eselect php set fpm php{{slot}}\"]\n",
        python.display()
    );
    let hosts: Vec<HostRow> = [
        ("mad-a-01", "a", 1, "amd64-v2"),
        ("mad-a-02", "a", 2, "amd64-v2"),
        ("mad-b-01", "b", 1, "amd64-v2"),
        ("mad-b-02", "b", 2, "amd64-v3"),
    ]
    .iter()
    .map(|(h, f, m, p)| {
        (
            h.to_string(),
            "mad".to_string(),
            f.to_string(),
            *m,
            p.to_string(),
        )
    })
    .collect();
    let fixture = Fixture::new(&inventory_toml(&hosts, &settings));
    fixture.snapshot("amd64-v2", "s1", BASE);
    fixture.snapshot("amd64-v2", "next", &next_snapshot());
    fixture.snapshot("amd64-v3", "s1", BASE);
    fixture.snapshot("amd64-v3", "next", BASE);
    fixture
}

fn write_playbook(fixture: &Fixture) -> std::path::PathBuf {
    let out = fixture.dir.path().join("ansible");
    let mut request = fixture.request(&["s1"], &["next"]);
    request.ansible_dir = Some(out.clone());
    let table = rollout::plan_command(&request).unwrap();
    assert!(table.contains("6 wave(s)"), "{table}");
    out
}

/// `host : ok=N changed=N unreachable=N failed=N ...` lines of the play recap.
fn recap(output: &str) -> Vec<(String, u32, u32, u32)> {
    let Some(start) = output.find("PLAY RECAP") else {
        return Vec::new();
    };
    output[start..]
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (host, counts) = line.split_once(" : ")?;
            let count = |key: &str| -> Option<u32> {
                counts
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            };
            Some((
                host.trim().to_string(),
                count("ok")?,
                count("unreachable")?,
                count("failed")?,
            ))
        })
        .collect()
}

#[test]
fn check_mode_run_on_local_hosts() {
    let (port, seen) = health_server(None);
    let fixture = local_fixture(port);
    let out = write_playbook(&fixture);
    let run = ansible(
        "ansible-playbook",
        &out,
        &["-i", "inventory.yml", "playbook.yml", "--check"],
    );
    let output = text(&run);
    assert!(run.status.success(), "{output}");

    let recap = recap(&output);
    let hosts: Vec<&str> = recap.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(hosts, vec!["mad-a-01", "mad-a-02", "mad-b-01"], "{output}");
    for (host, ok, unreachable, failed) in &recap {
        assert!(
            *ok > 0 && *unreachable == 0 && *failed == 0,
            "{host}: {output}"
        );
    }
    // The exact commands are shown, and nothing ran: emerge is not installed on this host and
    // the before_disruptive command exits 1.
    assert!(output.contains(
        "emerge --ask=n --getbinpkgonly --update --oneshot --rebuilt-binaries =dev-lang/php-8.3.10 =sys-libs/glibc-2.40-r2"
    ), "{output}");
    assert!(output.contains(
        "emerge --ask=n --getbinpkgonly --update --oneshot --rebuilt-binaries =app-arch/tar-1.35"
    ));
    assert!(output.contains("emerge --ask=n --getbinpkgonly --noreplace dev-lang/php:8.3"));
    assert!(output.contains("eselect php set fpm php8.3"));
    assert!(output.contains("emerge --ask=n --depclean dev-lang/php:8.2"));

    // Health checks ran after every wave, wave by wave, one member per farm at a time.
    let seen = seen.lock().unwrap().clone();
    let waves: Vec<BTreeSet<&str>> = vec![
        BTreeSet::from(["mad-a-01", "mad-b-01"]),
        BTreeSet::from(["mad-a-02"]),
        BTreeSet::from(["mad-a-01", "mad-a-02", "mad-b-01"]),
        BTreeSet::from(["mad-a-01", "mad-b-01"]),
        BTreeSet::from(["mad-a-02"]),
        BTreeSet::from(["mad-a-01", "mad-a-02", "mad-b-01"]),
    ];
    let mut rest: &[String] = &seen;
    for (index, wave) in waves.iter().enumerate() {
        assert!(rest.len() >= wave.len(), "wave {}: {seen:?}", index + 1);
        let (this, next) = rest.split_at(wave.len());
        let this: BTreeSet<&str> = this.iter().map(String::as_str).collect();
        assert_eq!(&this, wave, "health checks of wave {}: {seen:?}", index + 1);
        rest = next;
    }
    assert!(rest.is_empty(), "{seen:?}");
}

#[test]
fn failing_health_check_stops_the_rollout() {
    let (port, seen) = health_server(Some("mad-b-01"));
    let fixture = local_fixture(port);
    let out = write_playbook(&fixture);
    let run = ansible(
        "ansible-playbook",
        &out,
        &["-i", "inventory.yml", "playbook.yml", "--check"],
    );
    let output = text(&run);
    assert!(!run.status.success(), "{output}");
    assert!(
        output.contains("Wave 1 of 6") && !output.contains("Wave 2 of 6"),
        "{output}"
    );
    let failed: Vec<(String, u32, u32, u32)> =
        recap(&output).into_iter().filter(|r| r.3 > 0).collect();
    assert_eq!(
        failed.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        vec!["mad-b-01"],
        "{output}"
    );
    // mad-a-02 (member 2) was never reached.
    assert!(!seen.lock().unwrap().iter().any(|h| h == "mad-a-02"));
    let _ = fs::remove_dir_all(&out);
}
