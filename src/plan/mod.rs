//! Requests -> steps: fingerprints, the dependency graph, scheduling order.
//!
//! The planner helper (`scripts/plan.py`, run on a worker with Portage's resolver) gives a
//! merge list of [`PlannedPackage`]s as JSON. [`plan_request`] turns it into the steps of a
//! request in the store: it orders the graph (reporting cycles), fingerprints every package
//! ([`fingerprint`]), skips what is already built or already failed (nightly) or builds the
//! targets anyway (manual rebuild), ranks the steps for scheduling ([`sched`]) and inserts
//! them with their edges.

pub mod bench;
pub mod fingerprint;
pub mod graph;
pub mod sched;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::{BuildResult, Db, InitialState, KnownBuild, NewStep, StoreError};

pub use fingerprint::{Fingerprinter, Repo, Repos};
pub use graph::DepGraph;
pub use sched::{priorities, ranks, Priority, RetryPolicy, DEFAULT_ESTIMATE_MS};

/// One package of the planner's merge list: the JSON contract with `scripts/plan.py`.
///
/// ```json
/// {"cpv": "app-misc/greeter-1.0", "slot": "0", "use_flags": ["color"],
///  "repo": "farm-test", "ebuild_path": "app-misc/greeter/greeter-1.0.ebuild",
///  "deps": ["dev-libs/libhello-1.0"]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPackage {
    /// `category/PF`, e.g. `dev-libs/libhello-1.0-r1`.
    pub cpv: String,
    /// `SLOT` or `SLOT/SUBSLOT`.
    #[serde(default = "default_slot")]
    pub slot: String,
    /// The enabled USE flags the package is built with.
    #[serde(default, alias = "use")]
    pub use_flags: Vec<String>,
    /// Repository name (`profiles/repo_name`).
    pub repo: String,
    /// The ebuild, absolute or relative to the repository; derived from the CPV when absent.
    #[serde(default)]
    pub ebuild_path: Option<PathBuf>,
    /// CPVs in the same list that must be built first (build-time dependencies).
    #[serde(default)]
    pub deps: Vec<String>,
}

fn default_slot() -> String {
    "0".to_string()
}

/// Errors of planning, each naming the package, file or edge involved.
#[derive(Debug, Error)]
pub enum PlanError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("planner output is not a valid merge list: {source}")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    #[error("repository at {path}: {reason}")]
    BadRepo { path: PathBuf, reason: String },
    #[error("{cpv}: repository {repo:?} is not configured for this profile")]
    UnknownRepo { cpv: String, repo: String },
    #[error("{cpv:?} is not a category/name-version CPV")]
    BadCpv { cpv: String },
    #[error("eclass {eclass:?} inherited by {inherited_by} not found in {searched:?}")]
    MissingEclass {
        eclass: String,
        inherited_by: PathBuf,
        searched: Vec<PathBuf>,
    },
    #[error("{path} line {line}: cannot resolve inherit of {word:?} (needs shell expansion)")]
    UnresolvableInherit {
        path: PathBuf,
        line: usize,
        word: String,
    },
    #[error("{cpv} appears twice in the merge list")]
    DuplicatePackage { cpv: String },
    #[error("{cpv} depends on {dep}, which is not in the merge list")]
    UnknownDependency { cpv: String, dep: String },
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
    #[error("dependency graph has {nodes} nodes but {dep_lists} dependency lists")]
    GraphShape { nodes: usize, dep_lists: usize },
    #[error("{node} depends on node {dep}, outside the {nodes} nodes")]
    BadDepIndex {
        node: String,
        dep: usize,
        nodes: usize,
    },
    #[error("rebuild target {target} is not in the merge list")]
    RebuildTargetMissing { target: String },
    #[error("planning bug: {what}")]
    Internal { what: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Parse the planner's JSON. Three shapes are accepted:
/// - a list of [`PlannedPackage`]s, or an object with a `packages` list of them;
/// - the output of `scripts/plan.py`: `{"merge_list": [{"cpv", "slot", "subslot", "repo",
///   "use", ...}], "edges": [{"from", "to", "kinds"}]}`, in merge order. Its edges become
///   `deps` when they are build-time (`buildtime`, `buildtime_slot_op`) and point to a
///   package earlier in the merge order (an edge Portage itself had to break is dropped, as
///   Portage built without it).
pub fn parse_merge_list(json: &str) -> Result<Vec<PlannedPackage>, PlanError> {
    #[derive(Deserialize)]
    struct PlannerEntry {
        cpv: String,
        #[serde(default = "default_slot")]
        slot: String,
        #[serde(default)]
        subslot: Option<String>,
        repo: String,
        #[serde(default, rename = "use")]
        use_flags: Vec<String>,
        #[serde(default)]
        ebuild_path: Option<PathBuf>,
    }
    #[derive(Deserialize)]
    struct PlannerEdge {
        from: String,
        to: String,
        #[serde(default)]
        kinds: Vec<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum MergeList {
        List(Vec<PlannedPackage>),
        Object {
            packages: Vec<PlannedPackage>,
        },
        Planner {
            merge_list: Vec<PlannerEntry>,
            #[serde(default)]
            edges: Vec<PlannerEdge>,
        },
    }
    match serde_json::from_str(json).map_err(|source| PlanError::Json { source })? {
        MergeList::List(packages) | MergeList::Object { packages } => Ok(packages),
        MergeList::Planner { merge_list, edges } => {
            let position: HashMap<&str, usize> = merge_list
                .iter()
                .enumerate()
                .map(|(i, entry)| (entry.cpv.as_str(), i))
                .collect();
            let mut deps: Vec<Vec<String>> = vec![Vec::new(); merge_list.len()];
            for edge in &edges {
                let build_time = edge
                    .kinds
                    .iter()
                    .any(|k| k == "buildtime" || k == "buildtime_slot_op");
                let (Some(&from), Some(&to)) = (
                    position.get(edge.from.as_str()),
                    position.get(edge.to.as_str()),
                ) else {
                    return Err(PlanError::UnknownDependency {
                        cpv: edge.from.clone(),
                        dep: edge.to.clone(),
                    });
                };
                if build_time && to < from && !deps[from].contains(&edge.to) {
                    deps[from].push(edge.to.clone());
                }
            }
            Ok(merge_list
                .into_iter()
                .zip(deps)
                .map(|(entry, deps)| PlannedPackage {
                    slot: match entry.subslot {
                        Some(sub) if !sub.is_empty() && sub != entry.slot => {
                            format!("{}/{sub}", entry.slot)
                        }
                        _ => entry.slot,
                    },
                    cpv: entry.cpv,
                    use_flags: entry.use_flags,
                    repo: entry.repo,
                    ebuild_path: entry.ebuild_path,
                    deps,
                })
                .collect())
        }
    }
}

/// What the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestMode {
    /// Build what is not built yet; a fingerprint that already failed is not tried again.
    Nightly,
    /// Build these CPVs anyway (a new BUILD_ID); the rest as in a nightly.
    Rebuild { targets: Vec<String> },
}

/// What planning decided, in the merge list's order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub graph: DepGraph,
    pub fingerprints: Vec<String>,
    pub steps: Vec<NewStep>,
}

impl Plan {
    pub fn count(&self, which: fn(&InitialState) -> bool) -> usize {
        self.steps.iter().filter(|s| which(&s.initial)).count()
    }
}

/// Counts of a planned request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSummary {
    pub request_id: i64,
    pub steps: usize,
    pub to_build: usize,
    pub cached: usize,
    pub cached_failures: usize,
}

/// Decide every step: fingerprints already built are cached, already failed are cached
/// failures (nightly only), rebuild targets are built anyway. Steps are ranked for
/// scheduling by critical path, using `estimates_ms` (by CPV; unknown ones count 1 ms).
pub fn plan_steps(
    packages: &[PlannedPackage],
    graph: DepGraph,
    fingerprints: Vec<String>,
    known: &HashMap<String, KnownBuild>,
    estimates_ms: &HashMap<String, i64>,
    mode: &RequestMode,
) -> Result<Plan, PlanError> {
    let forced: Vec<bool> = match mode {
        RequestMode::Nightly => vec![false; packages.len()],
        RequestMode::Rebuild { targets } => {
            let mut forced = vec![false; packages.len()];
            for target in targets {
                let index = packages
                    .iter()
                    .position(|p| &p.cpv == target)
                    .ok_or_else(|| PlanError::RebuildTargetMissing {
                        target: target.clone(),
                    })?;
                forced[index] = true;
            }
            forced
        }
    };
    let initial: Vec<InitialState> = packages
        .iter()
        .zip(&fingerprints)
        .zip(&forced)
        .map(|((pkg, fp), &force)| match known.get(fp) {
            _ if force => InitialState::Build,
            None => InitialState::Build,
            Some(build) if build.result == BuildResult::Succeeded => InitialState::Cached,
            Some(build) => InitialState::CachedFailure {
                reason: format!(
                    "cached failure: {} with this fingerprint failed before (BUILD_ID {}); \
                     rebuild it manually to try again",
                    pkg.cpv, build.build_id
                ),
            },
        })
        .collect();
    // Steps with nothing to do add nothing to the remaining critical path.
    let estimates: Vec<Option<u64>> = packages
        .iter()
        .zip(&initial)
        .map(|(pkg, state)| match state {
            InitialState::Build => estimates_ms.get(&pkg.cpv).map(|&ms| ms.max(1) as u64),
            _ => Some(0),
        })
        .collect();
    let rank = ranks(&priorities(&graph, &estimates));
    let steps = packages
        .iter()
        .enumerate()
        .zip(initial)
        .map(|((i, pkg), initial)| NewStep {
            cpv: pkg.cpv.clone(),
            slot: pkg.slot.clone(),
            repo: pkg.repo.clone(),
            use_flags: pkg.use_flags.clone(),
            fingerprint: fingerprints[i].clone(),
            sched_rank: rank[i],
            estimated_ms: estimates[i].unwrap_or(DEFAULT_ESTIMATE_MS) as i64,
            deps: graph.deps(i).to_vec(),
            initial,
        })
        .collect();
    Ok(Plan {
        graph,
        fingerprints,
        steps,
    })
}

/// Plan a request (created with `Db::create_request`, still `planning`) from the planner's
/// merge list and insert its steps. On a planning error the request is marked failed with
/// that error, and the error is returned.
pub fn plan_request(
    db: &mut Db,
    request_id: i64,
    packages: &[PlannedPackage],
    profile_settings: &str,
    repos: &Repos,
    mode: &RequestMode,
    now: i64,
) -> Result<PlanSummary, PlanError> {
    let request = db.request(request_id)?;
    let planned = (|| {
        let graph = DepGraph::from_packages(packages)?;
        let fingerprints =
            Fingerprinter::new(profile_settings, repos).fingerprints(packages, &graph)?;
        let fp_refs: Vec<&str> = fingerprints.iter().map(String::as_str).collect();
        let known = db.known_builds(&fp_refs)?;
        let cpvs: Vec<&str> = packages.iter().map(|p| p.cpv.as_str()).collect();
        let estimates = db.last_durations(&request.profile, &cpvs)?;
        plan_steps(packages, graph, fingerprints, &known, &estimates, mode)
    })();
    let plan = match planned {
        Ok(plan) => plan,
        Err(error) => {
            db.fail_request_planning(request_id, &error.to_string(), now)?;
            return Err(error);
        }
    };
    db.add_planned_steps(request_id, &plan.steps, now)?;
    Ok(PlanSummary {
        request_id,
        steps: plan.steps.len(),
        to_build: plan.count(|s| matches!(s, InitialState::Build)),
        cached: plan.count(|s| matches!(s, InitialState::Cached)),
        cached_failures: plan.count(|s| matches!(s, InitialState::CachedFailure { .. })),
    })
}
