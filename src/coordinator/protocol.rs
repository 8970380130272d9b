//! The JSON spoken between `binfarm worker` and `binfarm serve` (and the admin API).
//! Both sides use these types, so a field renamed here is renamed on both.

use serde::{Deserialize, Serialize};

/// Header carrying the sha512 of an upload, sent ahead of the bytes.
pub const SHA512_HEADER: &str = "x-binfarm-sha512";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub host: String,
    /// Profiles this worker offers to build.
    pub profiles: Vec<String>,
    /// CPU flags from /proc/cpuinfo.
    pub cpu_flags: Vec<String>,
    pub labels: Vec<String>,
    /// Builds it runs at once.
    pub slots: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub worker: String,
    /// Profiles the coordinator will give this worker steps of.
    pub accepted_profiles: Vec<String>,
    /// Offered profiles refused, with the reason.
    pub refused_profiles: Vec<(String, String)>,
    pub heartbeat_seconds: u64,
    pub lease_seconds: u64,
    pub max_log_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Long-poll: how long the coordinator may hold the request when nothing is ready.
    pub wait_seconds: u64,
}

/// Work handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Run Portage's resolver for a request and post the merge list.
    Plan(PlanJob),
    /// Build one package.
    Build(BuildJob),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanJob {
    pub request_id: i64,
    pub profile: String,
    /// Atoms or sets, as emerge takes them.
    pub targets: Vec<String>,
    /// Quote in heartbeats; expires like a build lease.
    pub plan_lease: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildJob {
    pub lease_id: i64,
    pub step_id: i64,
    pub request_id: i64,
    pub profile: String,
    pub cpv: String,
    pub slot: String,
    pub repo: String,
    pub use_flags: Vec<String>,
    /// The BUILD_ID the stored binpkg will carry.
    pub build_id: i64,
    pub attempt: u32,
    /// Binpkgs the farm already has for this request (its dependencies among them): the
    /// worker puts them in its PKGDIR so emerge installs them with --usepkg.
    pub binpkgs: Vec<FarmBinpkg>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmBinpkg {
    pub cpv: String,
    /// Path in a PKGDIR, e.g. `app-misc/hello/hello-1.0-3.gpkg.tar`.
    pub path: String,
    pub sha512: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub leases: Vec<i64>,
    pub plan_leases: Vec<String>,
    /// The host's 1-minute load average (/proc/loadavg), shown on the dashboard. Optional:
    /// workers older than this field send none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1min: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Stop these: they expired or their request was cancelled.
    pub revoked: Vec<i64>,
    pub revoked_plans: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PlanResult {
    /// The merge list, as scripts/plan.py prints it.
    Planned {
        merge_list: serde_json::Value,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadReply {
    /// The stored (signed) binpkg.
    pub blob: String,
    pub size: u64,
    /// Its path in a binhost, with the farm's BUILD_ID.
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CompleteRequest {
    Succeeded {
        lease_id: i64,
        duration_ms: i64,
        /// Upload replies of the step's binpkgs.
        files: Vec<UploadReply>,
    },
    Failed {
        lease_id: i64,
        duration_ms: i64,
        error: String,
        /// False when another try cannot help (e.g. the ebuild's compile phase failed).
        retryable: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteReply {
    /// What the coordinator made of it: recorded, already recorded, or ignored and why.
    pub status: String,
}

/// POST /api/v1/requests
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NewRequestBody {
    Nightly { profile: String },
    Rebuild { profile: String, atom: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_without_load_still_parses() {
        let old: HeartbeatRequest =
            serde_json::from_str(r#"{"leases": [3], "plan_leases": []}"#).expect("old heartbeat");
        assert_eq!(old.load_1min, None);
        let new: HeartbeatRequest =
            serde_json::from_str(r#"{"leases": [], "plan_leases": [], "load_1min": 0.5}"#)
                .expect("new heartbeat");
        assert_eq!(new.load_1min, Some(0.5));
        // Without a load the field is left out, so an older coordinator sees what it knows.
        let text = serde_json::to_string(&old).expect("serialize");
        assert!(!text.contains("load"), "{text}");
    }
}
