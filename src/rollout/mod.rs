//! Rollout planning: which hosts take which package changes, in which order, so that no farm
//! ever has more than one member down.
//!
//! Inputs: an inventory (TOML: sites, farms, numbered members with their hw-profile, and the
//! package patterns that are disruptive or safe online) and two snapshots or channels of each
//! profile. Output: the per-profile diff, the waves, and an Ansible inventory and playbook
//! that executes them (`binfarm rollout plan`).
//!
//! - [`inventory`]: the inventory file and its validation
//! - [`snapshot`]: [`SnapshotSource`] and the mirror-tree implementation
//! - [`diff`]: snapshot diff and disruptive/online classification
//! - [`waves`]: the wave planner ([`build_plan`])
//! - [`render`], [`ansible`]: table, JSON, Ansible output
//! - [`bench`]: the planning benchmark

pub mod ansible;
pub mod bench;
pub mod diff;
pub mod inventory;
mod patterns;
pub mod render;
pub mod snapshot;
pub mod waves;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::index::IndexError;

pub use diff::{diff_snapshots, ChangeKind, Impact, PackageChange, ProfileDiff, SlotChange};
pub use inventory::{known_profiles, Inventory, InventoryProblem};
pub use snapshot::{Entry, MirrorTree, SnapshotSource};
pub use waves::{build_plan, Plan, ProfileActions, Wave, WaveKind};

/// Everything that can go wrong while planning a rollout; each names the file, profile or
/// snapshot it is about.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    InventorySyntax { path: PathBuf, message: String },
    #[error("{}", problems.iter().map(|p| format!("{}: {p}", path.display())).collect::<Vec<_>>().join("\n"))]
    InvalidInventory {
        path: PathBuf,
        problems: Vec<InventoryProblem>,
    },
    #[error(
        "profiles directory {path}: {source} (give the hw-profiles directory with --profiles-dir)"
    )]
    ProfilesDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown profile {profile:?}: not among the known hw-profiles ({known})")]
    UnknownProfile { profile: String, known: String },
    #[error("profile {profile}: no host in {inventory} uses it")]
    ProfileWithoutHosts { profile: String, inventory: PathBuf },
    #[error("profile {profile}: snapshot or channel {name:?} does not exist ({detail})")]
    SnapshotNotFound {
        profile: String,
        name: String,
        detail: String,
    },
    /// A `Packages` file that is not in the format (1-based line number).
    #[error("{path}:{line}: {message}")]
    MalformedIndex {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A package entry of a `Packages` file with a value the diff cannot use.
    #[error("{path}: {cpv}: {message}")]
    BadIndexEntry {
        path: PathBuf,
        cpv: String,
        message: String,
    },
    #[error("profile {profile}, snapshot {snapshot}: {message}")]
    BadPackage {
        profile: String,
        snapshot: String,
        message: String,
    },
    #[error("{option}: {message}")]
    BadArgument {
        option: &'static str,
        message: String,
    },
    #[error("writing JSON: {0}")]
    Json(serde_json::Error),
}

impl From<IndexError> for RolloutError {
    fn from(err: IndexError) -> RolloutError {
        match err {
            IndexError::Parse {
                path,
                line,
                message,
            } => RolloutError::MalformedIndex {
                path,
                line,
                message,
            },
            IndexError::Io { path, source } => RolloutError::Io { path, source },
        }
    }
}

/// Which snapshot or channel each profile is planned from or to: one name for every profile,
/// and/or `PROFILE=NAME` for single profiles (snapshot IDs differ between profiles).
#[derive(Debug, Clone, Default)]
pub struct SnapshotSpec {
    option: &'static str,
    default: Option<String>,
    per_profile: BTreeMap<String, String>,
}

impl SnapshotSpec {
    /// Parses the values of a repeatable option (`--from stable`, `--from amd64-v3=20260115`).
    pub fn parse(option: &'static str, values: &[String]) -> Result<SnapshotSpec, RolloutError> {
        let mut spec = SnapshotSpec {
            option,
            ..SnapshotSpec::default()
        };
        for value in values {
            let bad = |message: String| RolloutError::BadArgument { option, message };
            match value.split_once('=') {
                Some((profile, name))
                    if !profile.is_empty() && !name.is_empty() && !name.contains('=') =>
                {
                    if spec
                        .per_profile
                        .insert(profile.to_string(), name.to_string())
                        .is_some()
                    {
                        return Err(bad(format!("profile {profile} is given twice")));
                    }
                }
                Some(_) => return Err(bad(format!("{value:?} is not NAME or PROFILE=NAME"))),
                None if value.is_empty() => return Err(bad("empty snapshot name".to_string())),
                None => {
                    if spec.default.replace(value.clone()).is_some() {
                        return Err(bad(
                            "give one snapshot or channel for all profiles; use PROFILE=NAME for the others"
                                .to_string(),
                        ));
                    }
                }
            }
        }
        Ok(spec)
    }

    /// The snapshot or channel name for `profile`.
    pub fn for_profile(&self, profile: &str) -> Result<&str, RolloutError> {
        self.per_profile
            .get(profile)
            .or(self.default.as_ref())
            .map(String::as_str)
            .ok_or_else(|| RolloutError::BadArgument {
                option: self.option,
                message: format!(
                    "no snapshot or channel for profile {profile} (give NAME or {profile}=NAME)"
                ),
            })
    }

    fn profiles(&self) -> impl Iterator<Item = &String> {
        self.per_profile.keys()
    }
}

/// Diffs every profile in `profiles` between `from` and `to` and builds the waves.
/// The inventory must be valid ([`Inventory::validate`]); `profiles` must be used by its hosts.
pub fn plan_rollout(
    inventory: &Inventory,
    source: &dyn SnapshotSource,
    profiles: &BTreeSet<String>,
    from: &SnapshotSpec,
    to: &SnapshotSpec,
    max_parallel: usize,
) -> Result<Plan, RolloutError> {
    let classifier = inventory
        .classifier()
        .map_err(|problems| RolloutError::InvalidInventory {
            path: PathBuf::from("inventory"),
            problems,
        })?;
    let mut diffs = Vec::new();
    for profile in profiles {
        let (from_name, to_name) = (from.for_profile(profile)?, to.for_profile(profile)?);
        let old = source.packages(profile, from_name)?;
        let new = source.packages(profile, to_name)?;
        diffs.push(diff_snapshots(
            profile,
            from_name,
            &old,
            to_name,
            &new,
            &classifier,
        )?);
    }
    Ok(build_plan(inventory, diffs, max_parallel))
}

/// `binfarm rollout plan`: the arguments.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub inventory: PathBuf,
    /// Empty: every profile the inventory's hosts use.
    pub profiles: Vec<String>,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub profiles_dir: PathBuf,
    pub mirror_root: PathBuf,
    /// Overrides the inventory's `rollout.max_parallel`.
    pub max_parallel: Option<usize>,
    pub json: bool,
    /// Write `inventory.yml` and `playbook.yml` here.
    pub ansible_dir: Option<PathBuf>,
}

/// `binfarm rollout plan`: loads and checks everything, plans, writes the Ansible files if
/// asked, and returns the text to print (the table, or JSON).
pub fn plan_command(request: &PlanRequest) -> Result<String, RolloutError> {
    let inventory = Inventory::load(&request.inventory)?;
    let known = known_profiles(&request.profiles_dir)?;
    inventory.validate(&request.inventory, &known)?;
    let used = inventory.profiles();
    let from = SnapshotSpec::parse("--from", &request.from)?;
    let to = SnapshotSpec::parse("--to", &request.to)?;
    let selected: BTreeSet<String> = if request.profiles.is_empty() {
        used.clone()
    } else {
        request.profiles.iter().cloned().collect()
    };
    for profile in selected.iter().chain(from.profiles()).chain(to.profiles()) {
        if !known.contains(profile) {
            return Err(RolloutError::UnknownProfile {
                profile: profile.clone(),
                known: format!(
                    "{} in {}",
                    known.iter().cloned().collect::<Vec<_>>().join(", "),
                    request.profiles_dir.display()
                ),
            });
        }
        if !used.contains(profile) {
            return Err(RolloutError::ProfileWithoutHosts {
                profile: profile.clone(),
                inventory: request.inventory.clone(),
            });
        }
    }
    let max_parallel = request
        .max_parallel
        .unwrap_or(inventory.rollout.max_parallel);
    if max_parallel == 0 {
        return Err(RolloutError::BadArgument {
            option: "--max-parallel",
            message: "must be at least 1".to_string(),
        });
    }
    let source = MirrorTree::new(&request.mirror_root);
    let plan = plan_rollout(&inventory, &source, &selected, &from, &to, max_parallel)?;

    let mut out = if request.json {
        render::plan_json(&plan)?
    } else {
        render::plan_table(&plan)
    };
    if let Some(dir) = &request.ansible_dir {
        let header = format!(
            "Generated by `binfarm rollout plan` from {} ({}): re-run the plan instead of editing.",
            request.inventory.display(),
            plan.profiles
                .iter()
                .map(|d| format!("{} {} -> {}", d.profile, d.from, d.to))
                .collect::<Vec<_>>()
                .join("; ")
        );
        let written = ansible::write_ansible(dir, &plan, &inventory, &header)?;
        if !request.json {
            out.push_str(&format!(
                "\nAnsible: wrote {} and {}\n",
                written[0].display(),
                written[1].display()
            ));
        }
    }
    Ok(out)
}
