//! `binfarm bench schedule`: the scheduler on a simulated farm (no emerge).
//!
//! 1. A seeded, layered random DAG of steps with skewed (log-normal, 5 s .. 30 min) build
//!    times is planned with the real planner code (`plan_steps`: critical-path ranks) into a
//!    real store (SQLite in a temp dir), and simulated workers lease and complete steps through
//!    the same `Db::lease_next` / `Db::complete_step` the coordinator uses, on a simulated
//!    clock. The makespan is compared with the lower bound
//!    max(critical path, total work / workers).
//! 2. A no-op nightly: 1,000 packages of a generated ebuild repository (with eclasses and
//!    `files/`), all already built, are planned again: fingerprints plus skipping against the
//!    store. Timed wall-clock.

use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    parse_merge_list, plan_request, plan_steps, DepGraph, PlanError, PlannedPackage, Repos,
    RequestMode,
};
use crate::store::{
    NewRequest, QueuePolicy, RequestKind, RequestState, StepOutcome, Store, WorkerCapabilities,
};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct ScheduleBenchConfig {
    pub steps: usize,
    pub workers: usize,
    /// Depth of the synthetic DAG (dependency layers).
    pub layers: usize,
    pub seed: u64,
    /// Spread of the duration estimates around the real durations (log-normal sigma):
    /// estimates come from the previous build, which is close but not exact.
    pub estimate_noise: f64,
    /// Packages in the no-op nightly.
    pub noop_packages: usize,
}

impl Default for ScheduleBenchConfig {
    fn default() -> Self {
        ScheduleBenchConfig {
            steps: 2000,
            workers: 8,
            layers: 100,
            seed: 20261126,
            estimate_noise: 0.25,
            noop_packages: 1000,
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct ScheduleBenchReport {
    pub steps: usize,
    pub edges: usize,
    pub workers: usize,
    pub total_work_secs: i64,
    pub critical_path_secs: i64,
    pub lower_bound_secs: i64,
    pub makespan_secs: i64,
    pub makespan_ratio: f64,
    /// The same farm handing out ready steps in merge-list order (no ranks), for comparison.
    pub fifo_makespan_ratio: f64,
    /// Wall-clock time of the simulation (all leases and completions through SQLite).
    pub simulation_wall: Duration,
    /// Leases and completions of the ranked run, and the time they took in SQLite.
    pub queue_operations: u64,
    pub queue_wall: Duration,
    pub noop_packages: usize,
    /// Steps the no-op nightly would build (0 expected).
    pub noop_to_build: usize,
    /// Wall-clock time to plan and skip the no-op nightly.
    pub noop_wall: Duration,
}

impl fmt::Display for ScheduleBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulated farm: {} steps, {} edges, {} workers (both runs simulated in {:.2} s through SQLite)",
            self.steps,
            self.edges,
            self.workers,
            self.simulation_wall.as_secs_f64()
        )?;
        writeln!(
            f,
            "queue: {} leases and completions in {:.2} s ({:.0} us each)",
            self.queue_operations,
            self.queue_wall.as_secs_f64(),
            self.queue_wall.as_secs_f64() * 1e6 / self.queue_operations.max(1) as f64
        )?;
        writeln!(
            f,
            "total work {} s, critical path {} s, lower bound {} s, makespan {} s",
            self.total_work_secs,
            self.critical_path_secs,
            self.lower_bound_secs,
            self.makespan_secs
        )?;
        writeln!(
            f,
            "makespan ratio: {:.2} (target <= 1.10)",
            self.makespan_ratio
        )?;
        writeln!(
            f,
            "(merge-list order instead of critical-path ranks: {:.2})",
            self.fifo_makespan_ratio
        )?;
        write!(
            f,
            "no-op nightly of {} unchanged packages: planned and skipped in {:.3} s, {} to build (target < 2 s)",
            self.noop_packages,
            self.noop_wall.as_secs_f64(),
            self.noop_to_build
        )
    }
}

fn bench_err(what: impl Into<String>) -> PlanError {
    PlanError::Internal { what: what.into() }
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Build time in seconds: log-normal with a long tail, 5 s .. 30 min, around a minute for
/// most packages and around 8 minutes for the base of the graph (toolchain, big libraries:
/// what everything else waits for).
fn build_secs(rng: &mut StdRng, base_of_graph: bool) -> i64 {
    let median: f64 = if base_of_graph { 480.0 } else { 60.0 };
    let secs = (median.ln() + 1.2 * normal(rng)).exp();
    secs.round().clamp(5.0, 1800.0) as i64
}

/// A layered random DAG like a distribution's: a few deep layers of libraries, many leaves.
/// Each package depends on 0..=5 earlier packages, mostly from the previous layers.
fn synthetic_packages(
    count: usize,
    layers: usize,
    rng: &mut StdRng,
    repo: &str,
) -> Vec<PlannedPackage> {
    let layers = layers.clamp(1, count.max(1));
    let mut layer_of = Vec::with_capacity(count);
    for i in 0..count {
        // Earlier layers are smaller: a sqrt curve puts more packages in later layers.
        let x = (i as f64 + 0.5) / count as f64;
        layer_of.push(((x.sqrt() * layers as f64) as usize).min(layers - 1));
    }
    let mut first_of_layer = vec![count; layers + 1];
    for (i, &layer) in layer_of.iter().enumerate().rev() {
        first_of_layer[layer] = i;
    }
    for layer in (0..layers).rev() {
        if first_of_layer[layer] == count {
            first_of_layer[layer] = first_of_layer[layer + 1];
        }
    }
    let mut packages: Vec<PlannedPackage> = Vec::with_capacity(count);
    for (i, &layer) in layer_of.iter().enumerate() {
        let mut deps = Vec::new();
        if layer > 0 {
            let wanted = rng.gen_range(0..=5usize);
            for k in 0..wanted {
                // The first dependency comes from the previous layer (what makes depth).
                let from_layer = if k == 0 {
                    layer - 1
                } else {
                    rng.gen_range(0..layer)
                };
                let start = first_of_layer[from_layer];
                let end = first_of_layer[from_layer + 1].max(start + 1).min(i);
                if start < end {
                    let dep = rng.gen_range(start..end);
                    let cpv = packages[dep].cpv.clone();
                    if !deps.contains(&cpv) {
                        deps.push(cpv);
                    }
                }
            }
        }
        packages.push(PlannedPackage {
            cpv: format!("sim-cat{}/pkg{i}-1.0", i % 16),
            slot: "0".to_string(),
            use_flags: Vec::new(),
            repo: repo.to_string(),
            ebuild_path: None,
            deps,
        });
    }
    packages
}

/// Run both benchmarks. Everything is generated from `config.seed`.
pub fn bench_schedule(config: &ScheduleBenchConfig) -> Result<ScheduleBenchReport, PlanError> {
    if config.workers == 0 || config.steps == 0 {
        return Err(bench_err(
            "the benchmark needs at least one step and one worker",
        ));
    }
    let tmp = tempfile::tempdir().map_err(|source| PlanError::Read {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut report = simulate(config, &tmp.path().join("simulation"))?;
    let (to_build, wall) = noop_nightly(config, &tmp.path().join("noop"))?;
    report.noop_to_build = to_build;
    report.noop_wall = wall;
    Ok(report)
}

fn simulate(config: &ScheduleBenchConfig, dir: &Path) -> Result<ScheduleBenchReport, PlanError> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let packages = synthetic_packages(config.steps, config.layers, &mut rng, "sim");
    let base = packages.len() / 20;
    let durations: Vec<i64> = (0..packages.len())
        .map(|i| build_secs(&mut rng, i < base))
        .collect();
    let estimates: HashMap<String, i64> = packages
        .iter()
        .zip(&durations)
        .map(|(pkg, &secs)| {
            let noisy = secs as f64 * (config.estimate_noise * normal(&mut rng)).exp();
            (pkg.cpv.clone(), (noisy * 1000.0).round().max(1.0) as i64)
        })
        .collect();
    let graph = DepGraph::from_packages(&packages)?;
    let edges: usize = (0..graph.len()).map(|i| graph.deps(i).len()).sum();

    // Lower bound from the real durations.
    let mut finish = vec![0i64; graph.len()];
    for &node in graph.topo_order() {
        let start = graph
            .deps(node)
            .iter()
            .map(|&d| finish[d])
            .max()
            .unwrap_or(0);
        finish[node] = start + durations[node];
    }
    let critical_path_secs = finish.iter().copied().max().unwrap_or(0);
    let total_work_secs: i64 = durations.iter().sum();
    let workers = config.workers as i64;
    let lower_bound_secs = critical_path_secs.max((total_work_secs + workers - 1) / workers);

    let started = Instant::now();
    let fingerprints: Vec<String> = (0..packages.len())
        .map(|i| format!("{:064x}", i + 1))
        .collect();
    let plan = plan_steps(
        &packages,
        graph,
        fingerprints,
        &HashMap::new(),
        &estimates,
        &RequestMode::Nightly,
    )?;

    let ranked = run_farm(config, &plan.steps, &durations, &dir.join("ranked"))?;
    let makespan_secs = ranked.makespan_secs;
    // The same farm handing out steps in merge-list order, to show what the ranks buy.
    let mut fifo_steps = plan.steps.clone();
    for (i, step) in fifo_steps.iter_mut().enumerate() {
        step.sched_rank = i as i64;
    }
    let fifo_makespan_secs =
        run_farm(config, &fifo_steps, &durations, &dir.join("fifo"))?.makespan_secs;
    let simulation_wall = started.elapsed();
    Ok(ScheduleBenchReport {
        steps: config.steps,
        edges,
        workers: config.workers,
        total_work_secs,
        critical_path_secs,
        lower_bound_secs,
        makespan_secs,
        makespan_ratio: makespan_secs as f64 / lower_bound_secs.max(1) as f64,
        fifo_makespan_ratio: fifo_makespan_secs as f64 / lower_bound_secs.max(1) as f64,
        simulation_wall,
        queue_operations: ranked.queue_operations,
        queue_wall: ranked.queue_wall,
        noop_packages: config.noop_packages,
        noop_to_build: 0,
        noop_wall: Duration::ZERO,
    })
}

struct FarmRun {
    makespan_secs: i64,
    queue_operations: u64,
    queue_wall: Duration,
}

/// Simulated workers lease and complete `steps` through a fresh store.
fn run_farm(
    config: &ScheduleBenchConfig,
    steps: &[crate::store::NewStep],
    durations: &[i64],
    dir: &Path,
) -> Result<FarmRun, PlanError> {
    let mut queue_operations = 0u64;
    let mut queue_wall = Duration::ZERO;
    // No heartbeats in the simulation: leases must outlive the longest build.
    let policy = QueuePolicy {
        lease_timeout_secs: 10 * 24 * 3600,
        ..QueuePolicy::default()
    };
    let store = Store::open_with(dir, policy)?;
    let mut db = store.connect()?;
    let t0: i64 = 1_000_000_000;
    let mut worker_ids = Vec::new();
    for w in 0..config.workers {
        let worker = db.create_worker(&format!("sim-worker-{w}"), t0)?;
        db.set_worker_capabilities(
            worker.worker_id,
            &WorkerCapabilities {
                profiles: vec!["sim".to_string()],
                ..WorkerCapabilities::default()
            },
            t0,
        )?;
        worker_ids.push(worker.worker_id);
    }
    let request_id = db.create_request(
        &NewRequest {
            kind: RequestKind::Nightly,
            profile: "sim".to_string(),
            target: "@world".to_string(),
        },
        t0,
    )?;
    let step_ids = db.add_planned_steps(request_id, steps, t0)?;
    let duration_of_step: HashMap<i64, i64> = step_ids
        .iter()
        .zip(durations)
        .map(|(&id, &secs)| (id, secs))
        .collect();

    let mut now = t0;
    let mut idle: Vec<i64> = worker_ids.iter().rev().copied().collect();
    // (end time, worker, step, lease), earliest first.
    let mut running: BinaryHeap<std::cmp::Reverse<(i64, i64, i64, i64)>> = BinaryHeap::new();
    loop {
        // Hand out work while there is some: every worker builds the same profile, so the
        // first worker to find nothing means nothing is ready.
        while let Some(&worker) = idle.last() {
            let asked = Instant::now();
            let leased = db.lease_next(worker, now)?;
            queue_wall += asked.elapsed();
            queue_operations += 1;
            match leased {
                Some(lease) => {
                    idle.pop();
                    let secs = *duration_of_step
                        .get(&lease.step_id)
                        .ok_or_else(|| bench_err(format!("unknown step {}", lease.step_id)))?;
                    running.push(std::cmp::Reverse((
                        now + secs,
                        worker,
                        lease.step_id,
                        lease.lease_id,
                    )));
                }
                None => break,
            }
        }
        let Some(std::cmp::Reverse((end, _, _, _))) = running.peek().copied() else {
            break;
        };
        now = end;
        while let Some(&std::cmp::Reverse((end, worker, step, lease))) = running.peek() {
            if end != now {
                break;
            }
            running.pop();
            let secs = duration_of_step.get(&step).copied().unwrap_or(0);
            let asked = Instant::now();
            db.complete_step(
                step,
                lease,
                worker,
                &StepOutcome::Succeeded {
                    duration_ms: secs * 1000,
                    log_blob: None,
                    results: Vec::new(),
                },
                now,
            )?;
            queue_wall += asked.elapsed();
            queue_operations += 1;
            idle.push(worker);
        }
    }
    let request = db.request(request_id)?;
    if request.state != RequestState::Succeeded {
        return Err(bench_err(format!(
            "simulated request ended {} instead of succeeded",
            request.state
        )));
    }
    Ok(FarmRun {
        makespan_secs: now - t0,
        queue_operations,
        queue_wall,
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), PlanError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| PlanError::Read {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    fs::write(path, text).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A generated repository of `packages`: eclasses that inherit each other, ebuilds that
/// inherit some, a `files/` directory for some. Returns the merge list.
pub fn synthetic_repo(
    root: &Path,
    packages: usize,
    seed: u64,
) -> Result<Vec<PlannedPackage>, PlanError> {
    let mut rng = StdRng::seed_from_u64(seed);
    write_file(&root.join("profiles/repo_name"), "bench\n")?;
    write_file(&root.join("metadata/layout.conf"), "masters =\n")?;
    let eclasses = 24;
    for e in 0..eclasses {
        let inherit = if e >= 4 {
            format!("inherit ecl{}\n", rng.gen_range(0..4))
        } else {
            String::new()
        };
        write_file(
            &root.join(format!("eclass/ecl{e}.eclass")),
            &format!("# eclass {e}\n{inherit}ecl{e}_src_compile() {{ emake; }}\n"),
        )?;
    }
    let mut list = synthetic_packages(packages, 24, &mut rng, "bench");
    for (i, pkg) in list.iter_mut().enumerate() {
        let inherits: Vec<String> = (0..rng.gen_range(0..=3))
            .map(|_| format!("ecl{}", rng.gen_range(0..eclasses)))
            .collect();
        let (category, pf) = pkg
            .cpv
            .split_once('/')
            .ok_or_else(|| bench_err(format!("bad synthetic cpv {}", pkg.cpv)))?;
        let pn = pf.trim_end_matches("-1.0");
        let dir = root.join(category).join(pn);
        let inherit_line = if inherits.is_empty() {
            String::new()
        } else {
            format!("inherit {}\n", inherits.join(" "))
        };
        write_file(
            &dir.join(format!("{pf}.ebuild")),
            &format!(
                "EAPI=8\n{inherit_line}DESCRIPTION=\"synthetic package {i}\"\nSLOT=\"0\"\n\
                 KEYWORDS=\"amd64\"\nIUSE=\"doc\"\n"
            ),
        )?;
        if i % 3 == 0 {
            write_file(
                &dir.join("files/fix-build.patch"),
                &format!("--- patch {i}\n"),
            )?;
        }
        pkg.use_flags = if i % 2 == 0 {
            vec!["doc".to_string()]
        } else {
            Vec::new()
        };
    }
    Ok(list)
}

/// Plan everything once, "build" it, then time a second nightly that should skip it all.
fn noop_nightly(config: &ScheduleBenchConfig, dir: &Path) -> Result<(usize, Duration), PlanError> {
    let repo_dir = dir.join("repo");
    let packages = synthetic_repo(&repo_dir, config.noop_packages, config.seed ^ 0x5eed)?;
    let merge_list_json =
        serde_json::to_string(&packages).map_err(|source| PlanError::Json { source })?;
    let mut repos = Repos::new();
    repos.add_path(&repo_dir)?;
    let settings = "CHOST=x86_64-pc-linux-gnu\nCFLAGS=-O2 -pipe -march=x86-64-v3\n";
    let store = Store::open(&dir.join("state"))?;
    let mut db = store.connect()?;
    let t0: i64 = 1_000_000_000;
    let worker = db.create_worker("bench-worker", t0)?.worker_id;
    db.set_worker_capabilities(
        worker,
        &WorkerCapabilities {
            profiles: vec!["bench".to_string()],
            ..WorkerCapabilities::default()
        },
        t0,
    )?;
    let nightly = NewRequest {
        kind: RequestKind::Nightly,
        profile: "bench".to_string(),
        target: "@world".to_string(),
    };

    // First nightly: everything is built (simulated) through the queue.
    let first = db.create_request(&nightly, t0)?;
    plan_request(
        &mut db,
        first,
        &packages,
        settings,
        &repos,
        &RequestMode::Nightly,
        t0,
    )?;
    let mut now = t0;
    while let Some(lease) = db.lease_next(worker, now)? {
        now += 1;
        db.complete_step(
            lease.step_id,
            lease.lease_id,
            worker,
            &StepOutcome::Succeeded {
                duration_ms: 1000,
                log_blob: None,
                results: Vec::new(),
            },
            now,
        )?;
    }
    if db.request(first)?.state != RequestState::Succeeded {
        return Err(bench_err("the first (building) nightly did not succeed"));
    }

    // Second nightly, nothing changed: timed from the planner's JSON to the finished request.
    let started = Instant::now();
    let parsed = parse_merge_list(&merge_list_json)?;
    let second = db.create_request(&nightly, now)?;
    let summary = plan_request(
        &mut db,
        second,
        &parsed,
        settings,
        &repos,
        &RequestMode::Nightly,
        now,
    )?;
    let wall = started.elapsed();
    if db.request(second)?.state != RequestState::Succeeded {
        return Err(bench_err("the no-op nightly did not finish at once"));
    }
    Ok((summary.to_build, wall))
}
