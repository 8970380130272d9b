//! Which stored binpkgs belong to a request: what a worker needs in its PKGDIR before it
//! builds a step, and what a snapshot of the request holds.

use rusqlite::params;

use super::db::{Db, StepState};
use super::StoreError;

/// A signed binpkg in the blob store, as a binhost names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinpkg {
    pub cpv: String,
    pub build_id: i64,
    /// `<category>/<pn>/<pf>-<build_id>.gpkg.tar`
    pub path: String,
    pub sha512: String,
    pub size: u64,
}

/// A step of a request with the stored binpkg it contributes, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPackage {
    pub step_id: i64,
    pub cpv: String,
    pub slot: String,
    pub state: StepState,
    /// Succeeded step: the latest successful build of the step itself. Cached step: the
    /// latest successful build of its fingerprint in this profile. None otherwise, and
    /// when that build left no binpkg.
    pub binpkg: Option<StoredBinpkg>,
}

impl Db {
    /// Every step of a request with its binpkg (see [`RequestPackage::binpkg`]), in step
    /// order: what a snapshot of the request holds and what a worker needs in its PKGDIR.
    fn request_steps_with_binpkgs(
        &self,
        request_id: i64,
    ) -> Result<Vec<RequestPackage>, StoreError> {
        let op = "list request binpkgs";
        let sql_err = self.err(op);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.id, s.cpv, s.slot, s.state, b.cpv, b.build_id, b.binpkg_blob, bl.size
                 FROM steps s
                 LEFT JOIN builds b ON b.id = (
                     SELECT id FROM builds
                     WHERE fingerprint = s.fingerprint AND profile = s.profile
                           AND result = 'succeeded' AND binpkg_blob IS NOT NULL
                           AND CASE s.state WHEN 'succeeded' THEN step_id = s.id
                                            WHEN 'cached' THEN 1 ELSE 0 END
                     ORDER BY id DESC LIMIT 1)
                 LEFT JOIN blobs bl ON bl.sha512 = b.binpkg_blob
                 WHERE s.request_id = ?1
                 ORDER BY s.id",
            )
            .map_err(&sql_err)?;
        let rows = stmt
            .query_map(params![request_id], |row| {
                let binpkg = match (
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<i64>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                    row.get::<_, Option<i64>>(7)?,
                ) {
                    (Some(cpv), Some(build_id), Some(sha512), Some(size)) => Some(StoredBinpkg {
                        path: binhost_path(&cpv, build_id),
                        cpv,
                        build_id,
                        sha512,
                        size: u64::try_from(size).unwrap_or(0),
                    }),
                    _ => None,
                };
                Ok(RequestPackage {
                    step_id: row.get(0)?,
                    cpv: row.get(1)?,
                    slot: row.get(2)?,
                    state: row.get(3)?,
                    binpkg,
                })
            })
            .map_err(&sql_err)?;
        rows.collect::<Result<_, _>>().map_err(&sql_err)
    }

    /// Every step of a request with its binpkg, by CPV: what a snapshot of it holds (and
    /// which steps left nothing to publish).
    pub fn request_packages(&self, request_id: i64) -> Result<Vec<RequestPackage>, StoreError> {
        let mut packages = self.request_steps_with_binpkgs(request_id)?;
        packages.sort_by(|a, b| a.cpv.cmp(&b.cpv));
        Ok(packages)
    }

    /// The binpkgs of a request's finished steps, in step order: built ones (their
    /// results) and cached ones (the latest successful build of the step's fingerprint).
    pub fn request_binpkgs(&self, request_id: i64) -> Result<Vec<StoredBinpkg>, StoreError> {
        let packages = self.request_steps_with_binpkgs(request_id)?;
        Ok(packages.into_iter().filter_map(|p| p.binpkg).collect())
    }
}

/// `<category>/<pn>/<pf>-<build_id>.gpkg.tar` for a CPV (`category/pf`).
pub fn binhost_path(cpv: &str, build_id: i64) -> String {
    match crate::atom::Cpv::parse(cpv) {
        Ok(parsed) => format!(
            "{}/{}/{}-{build_id}.gpkg.tar",
            parsed.category(),
            parsed.pn(),
            parsed.pf()
        ),
        // Stored CPVs were parsed on the way in; keep a usable name if one was not.
        Err(_) => format!("{cpv}-{build_id}.gpkg.tar"),
    }
}

/// One try at a step: who ran it and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAttempt {
    pub lease_id: i64,
    pub worker: String,
    pub leased_at: i64,
    pub finished_at: Option<i64>,
    /// `succeeded`, `failed`, `expired`, `cancelled`, or None while running.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

impl Db {
    /// Every attempt at a step, oldest first.
    pub fn step_attempts(&self, step_id: i64) -> Result<Vec<StepAttempt>, StoreError> {
        let op = "list step attempts";
        let sql_err = self.err(op);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT a.id, w.name, a.leased_at, a.finished_at, a.outcome, a.error
                 FROM step_attempts a JOIN workers w ON w.id = a.worker_id
                 WHERE a.step_id = ?1 ORDER BY a.id",
            )
            .map_err(&sql_err)?;
        let rows = stmt
            .query_map(params![step_id], |row| {
                Ok(StepAttempt {
                    lease_id: row.get(0)?,
                    worker: row.get(1)?,
                    leased_at: row.get(2)?,
                    finished_at: row.get(3)?,
                    outcome: row.get(4)?,
                    error: row.get(5)?,
                })
            })
            .map_err(&sql_err)?;
        rows.collect::<Result<_, _>>().map_err(&sql_err)
    }
}
