//! Counts the coordinator's `/metrics` reads at scrape time: steps and requests per
//! state, workers registered and recently seen. One short read transaction each scrape.

use rusqlite::params;

use super::db::{Db, RequestState, StepState};
use super::StoreError;

/// How much work is where, right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FarmGauges {
    /// Every step state with its count (zeros included), in declaration order.
    pub steps: Vec<(StepState, u64)>,
    /// Every request state with its count (zeros included), in declaration order.
    pub requests: Vec<(RequestState, u64)>,
    pub workers_registered: u64,
    /// Workers whose last heartbeat (or registration) is at most `seen_within` seconds old.
    pub workers_seen: u64,
    pub workers_paused: u64,
}

const STEP_STATES: [StepState; 9] = [
    StepState::Queued,
    StepState::Ready,
    StepState::Leased,
    StepState::Building,
    StepState::Succeeded,
    StepState::Failed,
    StepState::Blocked,
    StepState::Cancelled,
    StepState::Cached,
];

const REQUEST_STATES: [RequestState; 5] = [
    RequestState::Planning,
    RequestState::Running,
    RequestState::Succeeded,
    RequestState::Failed,
    RequestState::Cancelled,
];

impl Db {
    /// The counts of [`FarmGauges`]; `now` and `seen_within` in seconds.
    pub fn farm_gauges(&self, now: i64, seen_within: i64) -> Result<FarmGauges, StoreError> {
        let steps = self.counts_by_state(
            "count steps by state",
            "SELECT state, COUNT(*) FROM steps GROUP BY state",
        )?;
        let requests = self.counts_by_state(
            "count requests by state",
            "SELECT state, COUNT(*) FROM requests GROUP BY state",
        )?;
        let op = "count workers";
        let (registered, seen, paused): (i64, i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*),
                        COALESCE(SUM(last_heartbeat IS NOT NULL AND last_heartbeat >= ?1), 0),
                        COALESCE(SUM(paused != 0), 0)
                 FROM workers",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![now - seen_within], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
            })
            .map_err(self.err(op))?;
        let fill = |found: &[(String, u64)], name: &str| {
            found
                .iter()
                .find(|(state, _)| state == name)
                .map_or(0, |(_, n)| *n)
        };
        Ok(FarmGauges {
            steps: STEP_STATES
                .iter()
                .map(|s| (*s, fill(&steps, s.as_str())))
                .collect(),
            requests: REQUEST_STATES
                .iter()
                .map(|s| (*s, fill(&requests, s.as_str())))
                .collect(),
            workers_registered: registered.max(0) as u64,
            workers_seen: seen.max(0) as u64,
            workers_paused: paused.max(0) as u64,
        })
    }

    /// (state text, count) rows of a `SELECT state, COUNT(*) ... GROUP BY state`.
    fn counts_by_state(
        &self,
        op: &'static str,
        sql: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err(op))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                ))
            })
            .map_err(self.err(op))?;
        rows.collect::<Result<_, _>>().map_err(self.err(op))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{NewRequest, RequestKind, RequestState, StepState, Store};

    #[test]
    fn counts_every_state_and_recent_workers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut db = store.connect().unwrap();
        let empty = db.farm_gauges(1_000, 60).unwrap();
        assert_eq!(empty.steps.len(), 9);
        assert!(empty.steps.iter().all(|(_, n)| *n == 0));
        assert_eq!(empty.requests.len(), 5);

        db.create_worker("w1", 900).unwrap();
        db.create_worker("w2", 900).unwrap();
        let request = NewRequest {
            kind: RequestKind::Nightly,
            profile: "p".into(),
            target: "@world".into(),
        };
        db.create_request(&request, 900).unwrap();
        db.create_request(&request, 901).unwrap();
        let w1 = db.worker_by_name("w1").unwrap().unwrap();
        db.heartbeat(w1.id, &[], 990).unwrap();
        let w2 = db.worker_by_name("w2").unwrap().unwrap();
        db.set_worker_paused(w2.id, true, None).unwrap();

        let g = db.farm_gauges(1_000, 60).unwrap();
        assert_eq!(g.workers_registered, 2);
        assert_eq!(g.workers_seen, 1);
        assert_eq!(g.workers_paused, 1);
        let planning = g
            .requests
            .iter()
            .find(|(s, _)| *s == RequestState::Planning)
            .map(|(_, n)| *n);
        assert_eq!(planning, Some(2));
        assert_eq!(g.steps.iter().map(|(_, n)| n).sum::<u64>(), 0);
        assert_eq!(g.steps[1].0, StepState::Ready);
    }
}
