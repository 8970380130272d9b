//! Smoke test of `binfarm bench mirror` with tiny runs: it starts the real nginx and the
//! real `binfarm mirror`, drives both with wrk and prints the table. Figures are not
//! checked (a loaded test machine says nothing about speed); that every scenario ran
//! against both servers, and that both servers were stopped, is.

use std::process::Command;

#[test]
fn bench_mirror_prints_ratios_for_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_binfarm"))
        .args([
            "bench",
            "mirror",
            "--duration",
            "1s",
            "--rounds",
            "1",
            "--files",
            "12",
            "--connections",
            "8",
            "--memory-clients",
            "16",
        ])
        .output()
        .expect("run binfarm bench mirror");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "binfarm bench mirror failed (nginx and wrk come from scripts/setup.sh):\n{stdout}\n{stderr}"
    );
    for scenario in [
        "binpkg GETs ",
        "Packages.gz GETs",
        "Packages.gz 304 If-Modified-Since",
        "Packages.gz 304 If-None-Match",
        "binpkg GETs (memory)",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no row {scenario:?} in:\n{stdout}"));
        let ratio: f64 = row
            .rsplit('|')
            .next()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ratio in {row:?}"));
        assert!(ratio > 0.0, "{row}");
        assert_eq!(
            row.matches(" MB ").count(),
            2,
            "peak RSS of both servers in {row:?}"
        );
    }
    assert!(stdout.contains("worker_processes"), "{stdout}");
    assert!(
        stdout.contains("throughput ratio binfarm/nginx >= 0.9"),
        "{stdout}"
    );
    assert!(
        stdout.contains("server memory under 16 clients"),
        "{stdout}"
    );
    // Both servers were stopped: no nginx started from the benchmark's directory remains.
    let leftover = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("bfmirror"))
        .collect::<Vec<_>>();
    assert!(leftover.is_empty(), "servers left running: {leftover:?}");
}
