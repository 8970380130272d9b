//! The worker: build roots, the emerge runner, the planner helper, and (later) the agent loop.

pub mod agent;
pub mod buildroot;
pub mod cli;
pub mod plan;
pub mod runner;

use std::path::PathBuf;

pub use buildroot::{BuildRoot, BuildRootOptions, RunMode};
pub use plan::{plan, Plan, PlanEdge, PlanOptions, PlannedPackage};
pub use runner::{
    run_build, BuildRequest, BuildResult, BuildStatus, BuiltPackage, Failure, Limits, MergedPackage,
};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no Portage in {venv} (expected {venv}/bin/emerge; run scripts/setup.sh or set BINFARM_VENV)")]
    NoPortage { venv: PathBuf },
    #[error("nothing to build: no atoms given")]
    NoAtoms,
    #[error("planning for profile {profile} failed:\n{message}")]
    Plan { profile: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Internal(String),
}
