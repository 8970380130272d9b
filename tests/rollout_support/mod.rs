//! Shared fixtures of the rollout tests: a generated inventory of several sites and farms of
//! varying size, a profiles directory, and a mirror tree with snapshots and channels.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use binfarm::rollout::{self, Inventory, MirrorTree, Plan, PlanRequest, SnapshotSpec};

pub const PROFILES: [&str; 3] = ["amd64-v2", "amd64-v3", "amd64-v4"];
pub const SITES: [&str; 5] = ["mad", "bcn", "par", "fra", "ams"];

pub const GROUPS: &str = r#"
[packages]
disruptive = ["sys-kernel/*", "sys-libs/glibc", "dev-libs/openssl", "www-servers/*", "dev-lang/php"]
online = ["sys-apps/man-db", "sys-apps/findutils", "app-arch/*"]
"#;

/// One member of a generated inventory: (host, site, farm, member number, profile).
pub type HostRow = (String, String, String, u32, String);

/// The members of a generated inventory: farms of 1 to 16 members,
/// spread over 5 sites; profiles vary inside farms too.
pub fn generated_hosts(hosts: usize) -> Vec<HostRow> {
    let mut out = Vec::new();
    let mut farm = 0usize;
    while out.len() < hosts {
        let site = SITES[farm % SITES.len()];
        let size = (1 + (farm * 7) % 16).min(hosts - out.len());
        for member in 1..=size {
            // Most farms are one profile; every fourth one mixes two.
            let profile = if farm % 4 == 0 && member % 2 == 0 {
                PROFILES[(farm + 1) % 3]
            } else {
                PROFILES[farm % 3]
            };
            out.push((
                format!("{site}-farm{farm:02}-{member:02}.example.net"),
                site.to_string(),
                format!("farm{farm:02}"),
                member as u32,
                profile.to_string(),
            ));
        }
        farm += 1;
    }
    out
}

/// An inventory TOML for `hosts`, with `settings` (TOML tables) before the package groups.
pub fn inventory_toml(hosts: &[HostRow], settings: &str) -> String {
    let mut out = format!("{settings}\n{GROUPS}\n");
    let mut current: Option<(&str, &str)> = None;
    let mut sites_written = BTreeSet::new();
    // Group by site then farm; sites are written once, farms under them.
    let mut sorted: Vec<_> = hosts.iter().collect();
    sorted.sort_by(|a, b| (&a.1, &a.2, a.3).cmp(&(&b.1, &b.2, b.3)));
    for (host, site, farm, member, profile) in sorted {
        if current != Some((site, farm)) {
            if current.is_some() {
                out.push_str("]\n");
            }
            if sites_written.insert(site.clone()) {
                let _ = write!(out, "\n[[sites]]\nname = \"{site}\"\n");
            }
            let _ = write!(out, "\n[[sites.farms]]\nname = \"{farm}\"\nmembers = [\n");
            current = Some((site, farm));
        }
        let _ = writeln!(
            out,
            "  {{ host = \"{host}\", member = {member}, profile = \"{profile}\" }},"
        );
    }
    if current.is_some() {
        out.push_str("]\n");
    }
    out
}

/// One package of a snapshot: CPV, SLOT, BUILD_ID.
pub type Pkg = (&'static str, &'static str, u64);

pub const BASE: &[Pkg] = &[
    ("app-arch/tar-1.34", "0", 1),
    ("dev-lang/php-8.2.20", "8.2", 1),
    ("dev-libs/openssl-3.0.14", "0/3", 1),
    ("sys-apps/findutils-4.9.0", "0", 1),
    ("sys-apps/man-db-2.12.1", "0", 1),
    ("sys-libs/glibc-2.39-r5", "2.2", 1),
    ("www-servers/nginx-1.26.1", "0", 1),
];

/// A `Packages` index the way Portage writes it (header, blank line, one block per package).
pub fn packages_index(packages: &[Pkg]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort();
    let mut out = format!(
        "ARCH: amd64\nCHOST: x86_64-pc-linux-gnu\nPACKAGES: {}\nTIMESTAMP: 1767225600\nVERSION: 0\n",
        sorted.len()
    );
    for (cpv, slot, build_id) in sorted {
        let _ = write!(
            out,
            "\nBUILD_ID: {build_id}\nBUILD_TIME: {}\nCPV: {cpv}\nEAPI: 8\nMD5: d41d8cd98f00b204e9800998ecf8427e\nPATH: {cpv}-{build_id}.gpkg.tar\nSHA1: da39a3ee5e6b4b0d3255bfef95601890afd80709\nSIZE: 20480\n",
            1767225600 + build_id
        );
        if slot != "0" {
            let _ = writeln!(out, "SLOT: {slot}");
        }
    }
    out
}

/// `packages` without the CPVs in `drop`, plus `add`.
pub fn changed(packages: &[Pkg], drop: &[&str], add: &[Pkg]) -> Vec<Pkg> {
    let mut out: Vec<Pkg> = packages
        .iter()
        .filter(|(cpv, _, _)| !drop.contains(cpv))
        .copied()
        .collect();
    out.extend_from_slice(add);
    out
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub inventory: PathBuf,
    pub profiles_dir: PathBuf,
    pub mirror: PathBuf,
}

impl Fixture {
    /// An inventory file with `toml` and a profiles directory with the 3 profiles.
    pub fn new(toml: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let profiles_dir = dir.path().join("profiles");
        fs::create_dir_all(&profiles_dir).unwrap();
        for profile in PROFILES {
            fs::write(
                profiles_dir.join(format!("{profile}.toml")),
                format!("name = \"{profile}\"\nchost = \"x86_64-pc-linux-gnu\"\n"),
            )
            .unwrap();
        }
        let inventory = dir.path().join("inventory.toml");
        fs::write(&inventory, toml).unwrap();
        let mirror = dir.path().join("mirror");
        Fixture {
            dir,
            inventory,
            profiles_dir,
            mirror,
        }
    }

    /// `<mirror>/<profile>/snapshots/<id>/Packages`.
    pub fn snapshot(&self, profile: &str, id: &str, packages: &[Pkg]) {
        let dir = self.mirror.join(profile).join("snapshots").join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("Packages"), packages_index(packages)).unwrap();
    }

    /// `<mirror>/<profile>/<channel>` pointing at a snapshot, the way publishing lays it out.
    pub fn channel(&self, profile: &str, channel: &str, id: &str) {
        let link = self.mirror.join(profile).join(channel);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new("snapshots").join(id), link).unwrap();
    }

    pub fn request(&self, from: &[&str], to: &[&str]) -> PlanRequest {
        PlanRequest {
            inventory: self.inventory.clone(),
            profiles: Vec::new(),
            from: from.iter().map(|s| s.to_string()).collect(),
            to: to.iter().map(|s| s.to_string()).collect(),
            profiles_dir: self.profiles_dir.clone(),
            mirror_root: self.mirror.clone(),
            max_parallel: None,
            json: false,
            ansible_dir: None,
        }
    }

    /// Plans every profile of the inventory through the library, as `plan_command` does.
    pub fn plan(&self, from: &[&str], to: &[&str]) -> (Inventory, Plan) {
        let inventory = Inventory::load(&self.inventory).expect("inventory loads");
        let known = rollout::known_profiles(&self.profiles_dir).unwrap();
        inventory
            .validate(&self.inventory, &known)
            .expect("inventory is valid");
        let from = SnapshotSpec::parse(
            "--from",
            &from.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let to = SnapshotSpec::parse(
            "--to",
            &to.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let max_parallel = inventory.rollout.max_parallel;
        let plan = rollout::plan_rollout(
            &inventory,
            &MirrorTree::new(&self.mirror),
            &inventory.profiles(),
            &from,
            &to,
            max_parallel,
        )
        .expect("plan");
        (inventory, plan)
    }
}

/// The path of a tool in the project venv (BINFARM_VENV, default `<crate>/.venv`).
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("BINFARM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    venv.join("bin").join(name)
}
