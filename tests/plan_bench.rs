//! The scheduling benchmark, small enough for the test suite; the full size runs with
//! `cargo test --release --test plan_bench -- --ignored --nocapture`.

use binfarm::plan::bench::{bench_schedule, ScheduleBenchConfig};

#[test]
fn small_simulated_farm_is_near_the_lower_bound_and_noop_nightly_builds_nothing() {
    let config = ScheduleBenchConfig {
        steps: 300,
        workers: 4,
        noop_packages: 150,
        ..ScheduleBenchConfig::default()
    };
    let report = bench_schedule(&config).expect("benchmark runs");
    println!("{report}");
    assert_eq!(report.steps, 300);
    assert!(report.makespan_secs >= report.lower_bound_secs);
    assert!(
        report.makespan_ratio <= 1.15,
        "makespan ratio {:.3} too far from the lower bound",
        report.makespan_ratio
    );
    assert_eq!(
        report.noop_to_build, 0,
        "a no-op nightly must build nothing"
    );
    assert!(report.to_string().contains("makespan ratio: "));
}

#[test]
#[ignore = "full-size benchmark: run with --release --ignored"]
fn full_size_benchmark() {
    let report = bench_schedule(&ScheduleBenchConfig::default()).expect("benchmark runs");
    println!("{report}");
    assert!(report.makespan_ratio <= 1.10, "{report}");
    assert!(report.noop_wall.as_secs_f64() < 2.0, "{report}");
}
