//! The planner: Portage's own resolver (scripts/plan.py, run with the build root's Portage)
//! gives the merge list, dependency edges and per-package USE for a profile and targets, so
//! the farm can schedule one step per package.

use std::path::PathBuf;

use super::buildroot::BuildRoot;
use super::WorkerError;

/// The helper, embedded so an installed binary needs no source tree.
const PLAN_PY: &str = include_str!("../../scripts/plan.py");

/// The target name that stands for the profile's package set.
pub const PROFILE_SET: &str = "@profile";

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Consider existing binpkgs (`--usepkg`): they show as `type: "binary"`.
    pub usepkg: bool,
    /// Plan the whole dependency closure, ignoring what ROOT has installed (`--emptytree`).
    pub emptytree: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PlannedPackage {
    pub cpv: String,
    pub slot: String,
    pub subslot: String,
    pub repo: Option<String>,
    /// "ebuild" (to build) or "binary" (an existing binpkg will be used).
    #[serde(rename = "type")]
    pub kind: String,
    /// Enabled USE flags among the package's IUSE.
    #[serde(rename = "use")]
    pub use_flags: Vec<String>,
    pub iuse: Vec<String>,
    pub build_id: Option<u64>,
}

/// `from` depends on `to` (`to` must be built first for build-time kinds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PlanEdge {
    pub from: String,
    pub to: String,
    /// Portage's priority names: buildtime, buildtime_slot_op, runtime, runtime_slot_op, ...
    pub kinds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Plan {
    pub targets: Vec<String>,
    pub options: Vec<String>,
    /// In the order emerge would merge them.
    pub merge_list: Vec<PlannedPackage>,
    pub edges: Vec<PlanEdge>,
}

impl Plan {
    /// The CPVs of the merge list, in order.
    pub fn order(&self) -> Vec<&str> {
        self.merge_list.iter().map(|p| p.cpv.as_str()).collect()
    }

    /// What `cpv` depends on within the plan.
    pub fn deps_of(&self, cpv: &str) -> Vec<&str> {
        self.edges
            .iter()
            .filter(|e| e.from == cpv)
            .map(|e| e.to.as_str())
            .collect()
    }
}

/// Resolves `targets` (atoms, Portage sets, or `@profile`) in `root`.
pub fn plan(
    root: &BuildRoot,
    targets: &[String],
    options: &PlanOptions,
) -> Result<Plan, WorkerError> {
    let mut resolved = Vec::new();
    for t in targets {
        if t == PROFILE_SET {
            resolved.extend(root.profile.set_atoms()?);
        } else {
            resolved.push(t.clone());
        }
    }
    if resolved.is_empty() {
        return Err(WorkerError::NoAtoms);
    }
    let script = root.dir.join("binfarm/plan.py");
    write_if_changed(&script, PLAN_PY)?;
    let mut args: Vec<String> = vec![root.host_path(&script).to_string_lossy().into_owned()];
    if root.mode == super::RunMode::Chroot {
        args[0] = "/binfarm/plan.py".into();
    }
    if options.usepkg {
        args.push("--usepkg".into());
    }
    if options.emptytree {
        args.push("--emptytree".into());
    }
    args.extend(resolved);
    let python = match root.mode {
        super::RunMode::Host => "python",
        super::RunMode::Chroot => "python3",
    };
    let output = root
        .portage_command(python, &args, &[])
        .output()
        .map_err(|source| WorkerError::Spawn {
            program: format!("{python} plan.py"),
            source,
        })?;
    if !output.status.success() {
        return Err(WorkerError::Plan {
            profile: root.profile.name.clone(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|e| WorkerError::Plan {
        profile: root.profile.name.clone(),
        message: format!("unreadable plan.py output: {e}"),
    })
}

fn write_if_changed(path: &PathBuf, text: &str) -> Result<(), WorkerError> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    crate::profile::render::write_atomic(path, text.as_bytes()).map_err(|source| WorkerError::Io {
        path: path.clone(),
        source,
    })
}
