//! Read-only queries for status displays (the web dashboard): how many steps wait in each
//! state, what runs now, and the load workers report.

use rusqlite::params;

use super::db::{step_from_row, Db, StepRow, StepState, STEP_COLUMNS};
use super::StoreError;

/// Steps per state: each state once, in [`StepState`] order, zero counts left out.
pub type StateCounts = Vec<(StepState, u64)>;

impl Db {
    /// How many steps of unfinished work are in each state (queued, ready, leased, building),
    /// over all requests.
    pub fn queue_counts(&self) -> Result<StateCounts, StoreError> {
        self.state_counts(
            "count queued steps",
            "SELECT state, COUNT(*) FROM steps
             WHERE state IN ('queued', 'ready', 'leased', 'building') GROUP BY state",
            params![],
        )
    }

    /// How many steps of one request are in each state.
    pub fn request_state_counts(&self, request_id: i64) -> Result<StateCounts, StoreError> {
        self.state_counts(
            "count request steps",
            "SELECT state, COUNT(*) FROM steps WHERE request_id = ?1 GROUP BY state",
            params![request_id],
        )
    }

    fn state_counts(
        &self,
        op: &'static str,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<StateCounts, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err(op))?;
        let rows = stmt
            .query_map(args, |row| {
                Ok((row.get::<_, StepState>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(self.err(op))?;
        let mut counts: StateCounts = rows
            .map(|r| r.map(|(state, n)| (state, n.max(0) as u64)))
            .collect::<Result<_, _>>()
            .map_err(self.err(op))?;
        counts.sort_by_key(|(state, _)| *state as u8);
        Ok(counts)
    }

    /// Steps a worker holds now (leased or building), the longest-running first.
    pub fn running_steps(&self) -> Result<Vec<StepRow>, StoreError> {
        let op = "list running steps";
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE state IN ('leased', 'building')
             ORDER BY started_at IS NULL, started_at, id"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err(op))?;
        let rows = stmt.query_map([], step_from_row).map_err(self.err(op))?;
        rows.collect::<Result<_, _>>().map_err(self.err(op))
    }

    /// Records the 1-minute load average a worker reported (shown on the dashboard).
    pub fn set_worker_load(&mut self, worker_id: i64, load_1min: f64) -> Result<(), StoreError> {
        let op = "record worker load";
        let changed = self
            .conn
            .execute(
                "UPDATE workers SET load_1min = ?1 WHERE id = ?2",
                params![load_1min, worker_id],
            )
            .map_err(self.err(op))?;
        if changed == 0 {
            return Err(StoreError::NoSuchWorker {
                what: format!("with id {worker_id}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InitialState, NewRequest, NewStep, RequestKind, Store};

    fn step(cpv: &str, deps: Vec<usize>) -> NewStep {
        NewStep {
            cpv: cpv.into(),
            slot: "0".into(),
            repo: "farm-test".into(),
            use_flags: Vec::new(),
            fingerprint: format!("fp-{cpv}"),
            sched_rank: 0,
            estimated_ms: 1000,
            deps,
            initial: InitialState::Build,
        }
    }

    #[test]
    fn counts_running_steps_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut db = store.connect().expect("db");
        let worker = db.create_worker("w1", 100).expect("worker").worker_id;
        db.set_worker_capabilities(
            worker,
            &crate::store::WorkerCapabilities {
                profiles: vec!["p".into()],
                ..Default::default()
            },
            100,
        )
        .expect("capabilities");
        let request = db
            .create_request(
                &NewRequest {
                    kind: RequestKind::Nightly,
                    profile: "p".into(),
                    target: "@world".into(),
                },
                100,
            )
            .expect("request");
        db.add_planned_steps(
            request,
            &[step("a/x-1", vec![]), step("a/y-1", vec![0])],
            100,
        )
        .expect("steps");
        assert_eq!(
            db.queue_counts().expect("counts"),
            vec![(StepState::Queued, 1), (StepState::Ready, 1)]
        );
        assert!(db.running_steps().expect("running").is_empty());
        let lease = db.lease_next(worker, 101).expect("lease").expect("a step");
        let running = db.running_steps().expect("running");
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].id, lease.step_id);
        assert_eq!(running[0].lease_worker_id, Some(worker));
        assert_eq!(
            db.request_state_counts(request).expect("counts"),
            vec![(StepState::Queued, 1), (StepState::Leased, 1)]
        );

        assert_eq!(db.worker(worker).expect("worker").load_1min, None);
        db.set_worker_load(worker, 1.25).expect("load");
        assert_eq!(db.worker(worker).expect("worker").load_1min, Some(1.25));
        assert!(db.set_worker_load(worker + 100, 1.0).is_err());
    }
}
