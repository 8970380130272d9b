//! `binfarm bench rollout`: planning 500 hosts and 1,000 changed packages per profile
//! (target: under 100 ms). Builds a synthetic inventory and mirror tree in a temporary
//! directory, then times reading the snapshots, diffing and wave planning, and separately the
//! table, JSON and Ansible rendering.

use std::collections::BTreeSet;
use std::fmt;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{ansible, plan_rollout, render, Inventory, MirrorTree, RolloutError, SnapshotSpec};

pub const BENCH_HOSTS: usize = 500;
pub const BENCH_CHANGED: usize = 1_000;
const PROFILES: [&str; 3] = ["amd64-v2", "amd64-v3", "amd64-v4"];
const RUNS: usize = 21;

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub hosts: usize,
    pub profiles: usize,
    pub changed_per_profile: usize,
    pub waves: usize,
    pub runs: usize,
    /// Reading both snapshots of every profile, diffing, planning the waves.
    pub plan_median: Duration,
    pub plan_min: Duration,
    /// Table + JSON + Ansible inventory and playbook, in memory.
    pub render_median: Duration,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "rollout plan: {} hosts, {} profiles x {} changed packages, {} waves, {} runs",
            self.hosts, self.profiles, self.changed_per_profile, self.waves, self.runs
        )?;
        writeln!(
            f,
            "  plan (read snapshots, diff, waves): median {:.2} ms, min {:.2} ms (target < 100 ms: {})",
            ms(self.plan_median),
            ms(self.plan_min),
            if self.plan_median < Duration::from_millis(100) { "met" } else { "MISSED" }
        )?;
        write!(
            f,
            "  render (table, JSON, Ansible): median {:.2} ms",
            ms(self.render_median)
        )
    }
}

/// A synthetic inventory: 4 sites, farms of 4 to 12 members, hosts spread over 3 profiles.
fn synthetic_inventory(hosts: usize) -> String {
    let mut out = String::from(
        "[rollout]\nmax_parallel = 25\n\n[health_check]\nurl = \"http://127.0.0.1/health\"\n\n\
         [packages]\ndisruptive = [\"sys-kernel/*\", \"sys-libs/glibc\", \"dev-libs/openssl\", \
         \"www-servers/*\", \"dev-lang/php\", \"bench-disruptive-*/*\"]\n\
         online = [\"sys-apps/man-db\", \"sys-apps/findutils\", \"app-arch/*\", \"bench-online-*/*\"]\n\n\
         [[slot_switch]]\npackage = \"dev-lang/php\"\ncommands = [\"eselect php set fpm php{slot}\"]\n",
    );
    // Farm sizes first, then written site by site (a site is one [[sites]] table).
    let mut farms = Vec::new();
    let mut made = 0;
    while made < hosts {
        let size = (4 + farms.len() % 9).min(hosts - made);
        farms.push((made, size));
        made += size;
    }
    for site in 0..4 {
        let _ = write!(out, "\n[[sites]]\nname = \"site{site}\"\n");
        for (farm_index, &(first_host, size)) in farms.iter().enumerate() {
            if farm_index % 4 != site {
                continue;
            }
            let _ = write!(
                out,
                "[[sites.farms]]\nname = \"farm{farm_index}\"\nmembers = [\n"
            );
            for member in 1..=size {
                let profile = PROFILES[(farm_index + member) % PROFILES.len()];
                let host = first_host + member - 1;
                let _ = writeln!(
                    out,
                    "  {{ host = \"web{host:04}.site{site}\", member = {member}, profile = \"{profile}\" }},"
                );
            }
            out.push_str("]\n");
        }
    }
    out
}

fn packages_file(entries: &[(String, String, u64)]) -> String {
    let mut out = format!("ARCH: amd64\nPACKAGES: {}\nVERSION: 0\n", entries.len());
    for (cpv, slot, build_id) in entries {
        let _ = write!(
            out,
            "\nBUILD_ID: {build_id}\nBUILD_TIME: 1767225600\nCPV: {cpv}\nMD5: 0\nPATH: {cpv}-{build_id}.gpkg.tar\nSIZE: 1\nSLOT: {slot}\n"
        );
    }
    out
}

/// Writes `<root>/<profile>/snapshots/{old,new}/Packages`: 1,500 packages, `changed` of which
/// differ (upgrades, rebuilds, additions, removals, a PHP slot added and one removed).
fn synthetic_mirror(root: &Path, changed: usize) -> Result<(), RolloutError> {
    for profile in PROFILES {
        let mut old = vec![
            ("dev-lang/php-8.1.29".to_string(), "8.1".to_string(), 1),
            ("dev-lang/php-8.2.20".to_string(), "8.2".to_string(), 1),
        ];
        let mut new = vec![
            ("dev-lang/php-8.2.21".to_string(), "8.2".to_string(), 1),
            ("dev-lang/php-8.3.10".to_string(), "8.3".to_string(), 1),
        ];
        for i in 0..1_500usize {
            let category = if i % 3 == 0 {
                "bench-disruptive-a"
            } else {
                "bench-online-a"
            };
            let name = format!("{category}/pkg{i}");
            let unchanged = i >= changed;
            old.push((format!("{name}-1.{i}"), "0".to_string(), 1));
            match i % 10 {
                _ if unchanged => new.push((format!("{name}-1.{i}"), "0".to_string(), 1)),
                0 => new.push((format!("{name}-1.{i}"), "0".to_string(), 2)),
                1 => {
                    old.pop();
                    new.push((format!("{name}-2.{i}"), "0".to_string(), 1));
                }
                2 => {}
                _ => new.push((format!("{name}-1.{i}.1"), "0".to_string(), 1)),
            }
        }
        for (name, entries) in [("old", &old), ("new", &new)] {
            let dir = root.join(profile).join("snapshots").join(name);
            fs::create_dir_all(&dir).map_err(|source| RolloutError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = dir.join("Packages");
            fs::write(&path, packages_file(entries))
                .map_err(|source| RolloutError::Io { path, source })?;
        }
    }
    Ok(())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Runs the benchmark; print the report (it implements Display).
pub fn bench_rollout() -> Result<BenchReport, RolloutError> {
    let dir = tempfile::tempdir().map_err(|source| RolloutError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let inventory_path = dir.path().join("inventory.toml");
    let inventory = Inventory::parse(&synthetic_inventory(BENCH_HOSTS), &inventory_path)?;
    let known: BTreeSet<String> = PROFILES.iter().map(|p| p.to_string()).collect();
    inventory.validate(&inventory_path, &known)?;
    synthetic_mirror(dir.path(), BENCH_CHANGED)?;
    let source = MirrorTree::new(dir.path());
    let from = SnapshotSpec::parse("--from", &["old".to_string()])?;
    let to = SnapshotSpec::parse("--to", &["new".to_string()])?;

    let mut plan_times = Vec::with_capacity(RUNS);
    let mut render_times = Vec::with_capacity(RUNS);
    let mut waves = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let plan = plan_rollout(&inventory, &source, &known, &from, &to, 25)?;
        plan_times.push(start.elapsed());
        let start = Instant::now();
        let text = render::plan_table(&plan).len()
            + render::plan_json(&plan)?.len()
            + ansible::render_inventory(&plan, &inventory, "bench").len()
            + ansible::render_playbook(&plan, &inventory, "bench").len();
        render_times.push(start.elapsed());
        waves = plan.waves.len();
        std::hint::black_box(text);
    }
    Ok(BenchReport {
        hosts: BENCH_HOSTS,
        profiles: PROFILES.len(),
        changed_per_profile: BENCH_CHANGED,
        waves,
        runs: RUNS,
        plan_min: plan_times.iter().copied().min().unwrap_or_default(),
        plan_median: median(plan_times),
        render_median: median(render_times),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_has_the_advertised_size() {
        let dir = tempfile::tempdir().unwrap();
        let inventory =
            Inventory::parse(&synthetic_inventory(BENCH_HOSTS), Path::new("i")).unwrap();
        assert_eq!(inventory.hosts().count(), BENCH_HOSTS);
        let known: BTreeSet<String> = PROFILES.iter().map(|p| p.to_string()).collect();
        assert_eq!(inventory.problems(&known), Vec::new());
        synthetic_mirror(dir.path(), BENCH_CHANGED).unwrap();
        let from = SnapshotSpec::parse("--from", &["old".into()]).unwrap();
        let to = SnapshotSpec::parse("--to", &["new".into()]).unwrap();
        let plan = plan_rollout(
            &inventory,
            &MirrorTree::new(dir.path()),
            &known,
            &from,
            &to,
            25,
        )
        .unwrap();
        for diff in &plan.profiles {
            // 1,000 synthetic changes plus PHP: 8.2 upgraded, 8.3 added, 8.1 removed.
            assert_eq!(diff.changes.len(), BENCH_CHANGED + 3, "{}", diff.profile);
        }
    }
}
