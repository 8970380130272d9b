//! Cancelling a request stops its build on the worker: a real `binfarm serve`, a real
//! `binfarm worker` and real emerge building the fixture's sleeper. The coordinator revokes
//! the lease in the heartbeat reply, the worker kills emerge's process group, reports
//! nothing, and takes the next job. An idle worker's long-poll keeps its last_heartbeat fresh.

mod common;
mod process_farm;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use process_farm::{steps, FarmSettings, ProcessFarm};

const PROFILE: &str = "x86-64-v3";

/// When worker `name` was last heard from.
fn worker_heartbeat(farm: &ProcessFarm, name: &str) -> Option<i64> {
    let workers = farm.get("/api/v1/workers").expect("workers");
    workers.as_array()?.iter().find(|w| w["name"] == name)?["last_heartbeat"].as_i64()
}

/// A process that still runs (a zombie waiting to be reaped does not count).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The process group of a process (field 5 of /proc/PID/stat).
fn process_group(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2).map(str::to_owned)
}

/// Running processes of a process group, with their command lines.
fn group_members(pgid: &str) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|c| c.is_ascii_digit()) || !running(&pid) {
                return None;
            }
            if process_group(&pid).as_deref() != Some(pgid) {
                return None;
            }
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&raw).replace('\0', " ")))
        })
        .collect()
}

#[test]
fn cancel_stops_the_build_and_the_worker_takes_the_next_job() {
    let tmp = common::tempdir();
    let farm = ProcessFarm::new(tmp.path(), &FarmSettings::default());
    let _coordinator = farm.start_coordinator();
    let pidfile = tmp.path().join("sleeper.pids");
    let _worker = farm.start_worker(
        "w1",
        &[PROFILE],
        &[
            "--build-env",
            "SLEEPER_SECONDS=120",
            "--build-env",
            &format!("SLEEPER_PIDFILE={}", pidfile.display()),
        ],
    );

    let sleeper = farm.rebuild("app-misc/sleeper", PROFILE);
    farm.wait_for("the sleeper to start", Duration::from_secs(300), || {
        pidfile.exists()
    });
    let sleeper_pids: Vec<String> = std::fs::read_to_string(&pidfile)
        .expect("pidfile")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(sleeper_pids.len(), 2, "sleep child and compile shell");
    assert!(sleeper_pids.iter().all(|p| running(p)), "{sleeper_pids:?}");
    // The runner starts emerge in its own process group: everything of the build is in it.
    let pgid = process_group(&sleeper_pids[1]).expect("the compile shell's process group");
    let members = group_members(&pgid);
    assert!(
        members.iter().any(|(_, c)| c.contains("ebuild.sh"))
            && members.iter().any(|(_, c)| c.contains("emerge")),
        "emerge and ebuild.sh in group {pgid}: {members:?}"
    );

    let cancelled_at = Instant::now();
    let reply = farm.admin_post(&format!("/api/v1/requests/{sleeper}/cancel"), json!({}));
    assert_eq!(
        reply["revoked_leases"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
    loop {
        let left: Vec<&String> = sleeper_pids.iter().filter(|p| running(p)).collect();
        let members = group_members(&pgid);
        if left.is_empty() && members.is_empty() {
            break;
        }
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(10),
            "10 s after the cancel the build still runs: sleeper {left:?}, \
             group {pgid}: {members:?}\n{}",
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "build stopped {:.1}s after the cancel",
        cancelled_at.elapsed().as_secs_f64()
    );
    let r = farm.request(sleeper);
    assert_eq!(r["state"], "cancelled", "{r:#}");
    let step = steps(&r)
        .into_iter()
        .find(|s| s["cpv"].as_str().is_some_and(|c| c.contains("sleeper")))
        .expect("sleeper step");
    assert_eq!(step["state"], "cancelled", "{step:#}");
    let log = std::fs::read_to_string(tmp.path().join("w1.log")).unwrap_or_default();
    assert!(
        log.contains("revoked") && !log.contains("job failed on this worker"),
        "{log}"
    );

    // The worker lives on and builds the next request.
    let hello = farm.rebuild("app-misc/hello", PROFILE);
    let deadline = Instant::now() + Duration::from_secs(300);
    let r = loop {
        let r = farm.request(hello);
        if !["planning", "running"].contains(&r["state"].as_str().unwrap_or("")) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "hello still {}\n{}",
            r["state"],
            farm.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(r["state"], "succeeded", "{r:#}\n{}", farm.logs());
    let built: Vec<Value> = steps(&r)
        .into_iter()
        .filter(|s| s["built_by"] == "w1")
        .collect();
    assert!(!built.is_empty(), "w1 built the next request: {r:#}");
    let sleeper_again = farm.request(sleeper);
    assert_eq!(sleeper_again["state"], "cancelled", "{sleeper_again:#}");

    // Idle now: only its lease long-poll shows the worker alive.
    let before = worker_heartbeat(&farm, "w1").expect("w1 has a last_heartbeat");
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let now = worker_heartbeat(&farm, "w1").expect("w1 has a last_heartbeat");
        if now > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an idle worker's last_heartbeat stayed at {before}\n{}",
            farm.logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}
