//! `binfarm rollout plan` on a generated 500-host inventory: wave rules, skipped profiles,
//! slot changes, and the error messages.

mod rollout_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use binfarm::rollout::{self, ChangeKind, Plan, WaveKind};
use rollout_support::*;

const MAX_PARALLEL: usize = 40;

fn settings() -> String {
    format!(
        "[rollout]\nmax_parallel = {MAX_PARALLEL}\n\n[[slot_switch]]\npackage = \"dev-lang/php\"\n\
         commands = [\"eselect php set fpm php{{slot}}\"]\n"
    )
}

/// 500 hosts; snapshots: s1 (BASE) and
/// - mixed: glibc upgraded (disruptive), tar upgraded (online), PHP 8.3 added beside 8.2;
/// - online: tar and man-db upgraded;
/// - unchanged: s1 again.
fn fixture_500() -> (Fixture, Vec<HostRow>) {
    let hosts = generated_hosts(500);
    let fixture = Fixture::new(&inventory_toml(&hosts, &settings()));
    let mixed = changed(
        BASE,
        &["sys-libs/glibc-2.39-r5", "app-arch/tar-1.34"],
        &[
            ("sys-libs/glibc-2.40-r2", "2.2", 1),
            ("app-arch/tar-1.35", "0", 1),
            ("dev-lang/php-8.3.10", "8.3", 1),
        ],
    );
    let online = changed(
        BASE,
        &["app-arch/tar-1.34", "sys-apps/man-db-2.12.1"],
        &[
            ("app-arch/tar-1.35", "0", 1),
            ("sys-apps/man-db-2.13.0", "0", 1),
        ],
    );
    for profile in PROFILES {
        fixture.snapshot(profile, "s1", BASE);
        fixture.snapshot(profile, "mixed", &mixed);
        fixture.snapshot(profile, "online", &online);
        fixture.channel(profile, "stable", "s1");
    }
    (fixture, hosts)
}

fn farm_of(plan: &Plan) -> BTreeMap<String, String> {
    plan.waves
        .iter()
        .flat_map(|w| &w.hosts)
        .map(|h| (h.host.clone(), h.farm_id()))
        .collect()
}

#[test]
fn generated_inventory_has_500_hosts_in_farms_of_varying_size() {
    let hosts = generated_hosts(500);
    let mut farms: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, site, farm, _, _) in &hosts {
        *farms.entry((site.clone(), farm.clone())).or_default() += 1;
    }
    let sizes: BTreeSet<usize> = farms.values().copied().collect();
    let sites: BTreeSet<&String> = farms.keys().map(|(site, _)| site).collect();
    let profiles: BTreeSet<&String> = hosts.iter().map(|h| &h.4).collect();
    assert_eq!(hosts.len(), 500);
    assert!(
        sizes.len() >= 10 && sizes.contains(&1) && sizes.contains(&16),
        "{sizes:?}"
    );
    assert_eq!((sites.len(), profiles.len()), (5, 3));
    // Some farms mix profiles, so a farm can have changed and unchanged members.
    let mut farm_profiles: BTreeMap<(&String, &String), BTreeSet<&String>> = BTreeMap::new();
    for (_, site, farm, _, profile) in &hosts {
        farm_profiles
            .entry((site, farm))
            .or_default()
            .insert(profile);
    }
    assert!(farm_profiles.values().any(|p| p.len() > 1));
}

#[test]
fn disruptive_waves_take_at_most_one_member_per_farm() {
    let (fixture, hosts) = fixture_500();
    // amd64-v2: mixed changes, amd64-v3: online only, amd64-v4: unchanged.
    let (_, plan) = fixture.plan(
        &["stable"],
        &["amd64-v2=mixed", "amd64-v3=online", "amd64-v4=s1"],
    );
    let disruptive: Vec<_> = plan
        .waves
        .iter()
        .filter(|w| w.kind == WaveKind::Disruptive)
        .collect();
    assert!(
        disruptive.len() >= 10,
        "one wave per member number: {}",
        disruptive.len()
    );
    for kind in [WaveKind::Disruptive, WaveKind::SlotSwitch] {
        for wave in plan.waves.iter().filter(|w| w.kind == kind) {
            let member = wave.member.expect("member waves name their member number");
            let mut farms = BTreeSet::new();
            for host in &wave.hosts {
                assert_eq!(
                    host.member, member,
                    "wave {} holds {}",
                    wave.number, host.host
                );
                assert!(
                    farms.insert(host.farm_id()),
                    "wave {} takes two members of farm {}",
                    wave.number,
                    host.farm_id()
                );
            }
        }
    }
    // Every amd64-v2 host is in exactly one disruptive wave; no other profile is.
    let expected: BTreeSet<&str> = hosts
        .iter()
        .filter(|h| h.4 == "amd64-v2")
        .map(|h| h.0.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for wave in &disruptive {
        for host in &wave.hosts {
            assert_eq!(host.profile, "amd64-v2");
            assert!(seen.insert(host.host.as_str()), "{} twice", host.host);
        }
    }
    assert_eq!(seen, expected);
    // Waves are ordered by member number, and batches respect max_parallel.
    let members: Vec<u32> = disruptive.iter().filter_map(|w| w.member).collect();
    assert!(members.windows(2).all(|m| m[0] < m[1]), "{members:?}");
    for wave in &plan.waves {
        assert!(wave
            .batches
            .iter()
            .all(|b| !b.is_empty() && b.len() <= MAX_PARALLEL));
        let batched: Vec<&String> = wave.batches.iter().flatten().collect();
        let listed: Vec<&String> = wave.hosts.iter().map(|h| &h.host).collect();
        assert_eq!(batched, listed, "batches run the wave's hosts in order");
    }
    // Online changes of amd64-v2 and amd64-v3 share one wave; amd64-v4 is skipped.
    let online: Vec<_> = plan
        .waves
        .iter()
        .filter(|w| w.kind == WaveKind::Online)
        .collect();
    assert_eq!(online.len(), 1);
    let online_profiles: BTreeSet<&str> =
        online[0].hosts.iter().map(|h| h.profile.as_str()).collect();
    assert_eq!(online_profiles, BTreeSet::from(["amd64-v2", "amd64-v3"]));
    assert!(plan.skipped.iter().all(|s| s.host.profile == "amd64-v4"));
    assert_eq!(
        plan.skipped.len(),
        hosts.iter().filter(|h| h.4 == "amd64-v4").count()
    );
    assert!(farm_of(&plan)
        .keys()
        .all(|h| !plan.skipped.iter().any(|s| &s.host.host == h)));
    // Order: disruptive waves, the online wave, then slot switches (PHP 8.3 was added).
    let kinds: Vec<WaveKind> = plan.waves.iter().map(|w| w.kind).collect();
    let first_online = kinds.iter().position(|k| *k == WaveKind::Online).unwrap();
    assert!(kinds[..first_online]
        .iter()
        .all(|k| *k == WaveKind::Disruptive));
    assert!(kinds[first_online + 1..]
        .iter()
        .all(|k| *k == WaveKind::SlotSwitch));
    assert!(kinds.len() > first_online + 1, "slot switch waves follow");
    let actions = &plan.actions["amd64-v2"];
    assert_eq!(
        actions.disruptive,
        vec!["=dev-lang/php-8.3.10", "=sys-libs/glibc-2.40-r2"]
    );
    assert_eq!(actions.online, vec!["=app-arch/tar-1.35"]);
    assert_eq!(actions.select, vec!["dev-lang/php:8.3"]);
    assert_eq!(actions.switch, vec!["eselect php set fpm php8.3"]);
}

#[test]
fn online_only_changes_produce_one_wave() {
    let (fixture, hosts) = fixture_500();
    let (_, plan) = fixture.plan(&["s1"], &["online"]);
    assert_eq!(
        plan.waves.len(),
        1,
        "{:?}",
        plan.waves.iter().map(|w| w.title()).collect::<Vec<_>>()
    );
    let wave = &plan.waves[0];
    assert_eq!(wave.kind, WaveKind::Online);
    assert_eq!(wave.hosts.len(), 500);
    assert_eq!(wave.batches.len(), 500_usize.div_ceil(MAX_PARALLEL));
    assert!(plan.skipped.is_empty());
    let planned = plan.planned_hosts();
    assert!(hosts.iter().all(|h| planned.contains(h.0.as_str())));
    for diff in &plan.profiles {
        assert_eq!(diff.count(ChangeKind::Upgraded), 2, "{}", diff.profile);
    }
}

#[test]
fn unchanged_profiles_are_skipped() {
    let (fixture, _) = fixture_500();
    let (_, plan) = fixture.plan(&["stable"], &["s1"]);
    assert!(plan.waves.is_empty());
    assert_eq!(plan.skipped.len(), 500);
    assert!(plan.skipped.iter().all(|s| s.reason == "profile unchanged"));
    let text = rollout::render::plan_table(&plan);
    assert!(
        text.contains("no changes, hosts skipped") && text.contains("none: nothing to do"),
        "{text}"
    );
}

#[test]
fn slot_switch_then_removal_of_the_old_slot() {
    let (fixture, _) = fixture_500();
    // PHP 8.2 -> 8.3 in one go: 8.3 is installed in the member waves, switched to in member
    // waves, then 8.2 is removed.
    let moved = changed(
        BASE,
        &["dev-lang/php-8.2.20"],
        &[("dev-lang/php-8.3.10", "8.3", 1)],
    );
    for profile in PROFILES {
        fixture.snapshot(profile, "php83", &moved);
    }
    let (_, plan) = fixture.plan(&["s1"], &["php83"]);
    let kinds: Vec<WaveKind> = plan.waves.iter().map(|w| w.kind).collect();
    assert_eq!(kinds.last(), Some(&WaveKind::SlotRemoval));
    assert!(!kinds.contains(&WaveKind::Online));
    let switch_start = kinds
        .iter()
        .position(|k| *k == WaveKind::SlotSwitch)
        .unwrap();
    assert!(kinds[..switch_start]
        .iter()
        .all(|k| *k == WaveKind::Disruptive));
    assert_eq!(plan.waves.last().unwrap().hosts.len(), 500);
    let diff = &plan.profiles[0];
    let kinds: Vec<ChangeKind> = diff.changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, vec![ChangeKind::SlotRemoved, ChangeKind::SlotAdded]);
    let actions = &plan.actions["amd64-v3"];
    assert_eq!(actions.remove, vec!["dev-lang/php:8.2"]);
    assert_eq!(actions.switch, vec!["eselect php set fpm php8.3"]);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn rebuilt_and_downgraded_packages_are_reported() {
    let (fixture, _) = fixture_500();
    let next = changed(
        BASE,
        &["dev-libs/openssl-3.0.14", "sys-apps/findutils-4.9.0"],
        &[
            ("dev-libs/openssl-3.0.14", "0/3", 2),
            ("sys-apps/findutils-4.8.0", "0", 1),
        ],
    );
    fixture.snapshot("amd64-v2", "next", &next);
    let mut request = fixture.request(&["s1"], &["next"]);
    request.profiles = vec!["amd64-v2".to_string()];
    request.json = true;
    let text = rollout::plan_command(&request).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let changes = json["profiles"][0]["changes"].as_array().unwrap();
    let kinds: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| {
            (
                c["package"].as_str().unwrap(),
                c["kind"].as_str().unwrap(),
                c["impact"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("dev-libs/openssl", "rebuilt", "disruptive"),
            ("sys-apps/findutils", "downgraded", "online")
        ]
    );
    assert_eq!(changes[0]["to"]["build_id"], 2);
    // Only amd64-v2 hosts are planned.
    let hosts: Vec<&str> = json["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["hosts"].as_array().unwrap())
        .map(|h| h["profile"].as_str().unwrap())
        .collect();
    assert!(!hosts.is_empty() && hosts.iter().all(|p| *p == "amd64-v2"));
}

fn error_of(toml: &str) -> String {
    let fixture = Fixture::new(toml);
    for profile in PROFILES {
        fixture.snapshot(profile, "s1", BASE);
    }
    let err = rollout::plan_command(&fixture.request(&["s1"], &["s1"])).unwrap_err();
    err.to_string()
}

fn one_line(message: &str) {
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn unknown_profile_is_refused() {
    let mut hosts = generated_hosts(20);
    hosts[7].4 = "amd64-v5".to_string();
    let message = error_of(&inventory_toml(&hosts, ""));
    one_line(&message);
    assert!(
        message.contains(&hosts[7].0)
            && message.contains("unknown hw-profile \"amd64-v5\"")
            && message.contains("amd64-v2, amd64-v3, amd64-v4"),
        "{message}"
    );

    // A --profile that no profile file names.
    let (fixture, _) = fixture_500();
    let mut request = fixture.request(&["s1"], &["s1"]);
    request.profiles = vec!["sparc-t4".to_string()];
    let message = rollout::plan_command(&request).unwrap_err().to_string();
    one_line(&message);
    assert!(
        message.starts_with("unknown profile \"sparc-t4\""),
        "{message}"
    );

    // A missing profiles directory says which option to use.
    request.profiles.clear();
    request.profiles_dir = fixture.dir.path().join("nope");
    let message = rollout::plan_command(&request).unwrap_err().to_string();
    assert!(message.contains("--profiles-dir"), "{message}");
}

#[test]
fn host_in_two_farms_is_refused() {
    let mut hosts = generated_hosts(30);
    let (first_farm, second_farm) = (hosts[0].2.clone(), hosts[20].2.clone());
    assert_ne!(first_farm, second_farm);
    hosts[20].0 = hosts[0].0.clone();
    let message = error_of(&inventory_toml(&hosts, ""));
    one_line(&message);
    assert!(
        message.contains(&format!("host {} is in two farms", hosts[0].0))
            && message.contains(&first_farm)
            && message.contains(&second_farm),
        "{message}"
    );
}

#[test]
fn duplicate_member_numbers_are_refused() {
    let mut hosts = generated_hosts(30);
    // Find a farm with at least 3 members and give its third member number 2.
    let index = hosts.iter().position(|h| h.3 == 3).unwrap();
    hosts[index].3 = 2;
    let farm = format!("{}/{}", hosts[index].1, hosts[index].2);
    let message = error_of(&inventory_toml(&hosts, ""));
    one_line(&message);
    assert!(
        message.contains(&format!("farm {farm}: member number 2 is used by both"))
            && message.contains(&hosts[index].0),
        "{message}"
    );
}

#[test]
fn missing_snapshot_is_refused() {
    let (fixture, _) = fixture_500();
    let message = rollout::plan_command(&fixture.request(&["stable"], &["20260230-0300"]))
        .unwrap_err()
        .to_string();
    one_line(&message);
    assert!(
        message
            .starts_with("profile amd64-v2: snapshot or channel \"20260230-0300\" does not exist"),
        "{message}"
    );
    // A name that would leave the mirror tree is not looked up.
    let message = rollout::plan_command(&fixture.request(&["../x"], &["s1"]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("not a valid snapshot or channel name"),
        "{message}"
    );
}

#[test]
fn bad_patterns_and_several_problems_are_all_listed() {
    let mut hosts = generated_hosts(10);
    hosts[1].4 = "nope".to_string();
    let toml = inventory_toml(&hosts, "").replace("\"app-arch/*\"", "\"tar\"");
    let message = error_of(&toml);
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("packages.online[2]") && l.contains("\"tar\"")),
        "{message}"
    );
    assert!(
        lines.iter().all(|l| l.contains("inventory.toml: ")),
        "{message}"
    );
}

#[test]
fn cli_prints_a_table_json_and_writes_ansible_files() {
    let (fixture, _) = fixture_500();
    let out_dir = fixture.dir.path().join("ansible");
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_binfarm"))
            .args(["rollout", "plan", "--inventory"])
            .arg(&fixture.inventory)
            .arg("--profiles-dir")
            .arg(&fixture.profiles_dir)
            .arg("--mirror-root")
            .arg(&fixture.mirror)
            .args(["--from", "stable", "--to", "mixed", "--profile", "amd64-v3"])
            .args(extra)
            .output()
            .expect("binfarm runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, table, err) = run(&["--ansible", out_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        table.contains("Profile amd64-v3 (stable -> mixed)") && table.contains("Waves"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.contains("upgraded")
            && l.contains("sys-libs/glibc")
            && l.contains("disruptive")),
        "{table}"
    );
    let playbook = fs::read_to_string(out_dir.join("playbook.yml")).unwrap();
    assert!(playbook.contains("member 1 of every farm"));
    let (ok, json, err) = run(&["--json", "--max-parallel", "7"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["max_parallel"], 7);
    assert_eq!(json["profiles"].as_array().unwrap().len(), 1);
    let (ok, _, err) = run(&["--to", "amd64-v3=missing"]);
    assert!(
        !ok && err.contains("snapshot or channel \"missing\" does not exist"),
        "{err}"
    );
}
