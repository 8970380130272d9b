//! Planning jobs: a request in state `planning` is handed to one worker of its profile,
//! which runs Portage's resolver and posts the merge list. The hand-out is kept in memory
//! only: after a coordinator restart (or when the worker stops heart-beating) the request
//! is simply planned again, since planning changes nothing until its result is posted.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct PlanLease {
    token: String,
    worker_id: i64,
    expires_at: i64,
}

#[derive(Default)]
pub struct PlanLeases {
    by_request: Mutex<HashMap<i64, PlanLease>>,
}

impl PlanLeases {
    /// Hands request `request_id` to `worker_id` unless another worker holds it.
    pub fn try_take(
        &self,
        request_id: i64,
        worker_id: i64,
        now: i64,
        lease_secs: i64,
    ) -> Option<String> {
        let mut map = self.by_request.lock().ok()?;
        if map.get(&request_id).is_some_and(|l| l.expires_at > now) {
            return None;
        }
        let token = format!("plan-{request_id}-{}", &crate::store::new_token()[..16]);
        map.insert(
            request_id,
            PlanLease {
                token: token.clone(),
                worker_id,
                expires_at: now + lease_secs,
            },
        );
        Some(token)
    }

    /// Extends a lease; false when it is no longer this worker's.
    pub fn renew(&self, token: &str, worker_id: i64, now: i64, lease_secs: i64) -> bool {
        let Ok(mut map) = self.by_request.lock() else {
            return false;
        };
        match map
            .values_mut()
            .find(|l| l.token == token && l.worker_id == worker_id)
        {
            Some(lease) if lease.expires_at > now => {
                lease.expires_at = now + lease_secs;
                true
            }
            _ => false,
        }
    }

    /// Ends the lease `token` of `request_id`; false when it is not the current one.
    pub fn finish(&self, request_id: i64, token: &str, worker_id: i64) -> bool {
        let Ok(mut map) = self.by_request.lock() else {
            return false;
        };
        match map.get(&request_id) {
            Some(lease) if lease.token == token && lease.worker_id == worker_id => {
                map.remove(&request_id);
                true
            }
            _ => false,
        }
    }

    /// Drops expired leases; true when any was dropped.
    pub fn expire(&self, now: i64) -> bool {
        let Ok(mut map) = self.by_request.lock() else {
            return false;
        };
        let before = map.len();
        map.retain(|_, l| l.expires_at > now);
        map.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let leases = PlanLeases::default();
        let token = leases.try_take(1, 10, 100, 60).unwrap();
        assert!(leases.try_take(1, 11, 120, 60).is_none());
        assert!(leases.renew(&token, 10, 150, 60));
        assert!(!leases.renew(&token, 11, 150, 60));
        assert!(!leases.expire(200));
        assert!(leases.expire(211));
        let other = leases.try_take(1, 11, 211, 60).unwrap();
        assert!(
            !leases.finish(1, &token, 10),
            "the expired lease's result is not taken"
        );
        assert!(leases.finish(1, &other, 11));
    }
}
