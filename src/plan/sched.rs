//! Scheduling order and retry policy: the one place that decides which ready step goes
//! first. The coordinator's queue (`store::Db::lease_next`) hands out ready steps by the rank
//! computed here, and the scheduling benchmark drives that same queue.

use std::cmp::Ordering;

use super::graph::DepGraph;

/// Why a step goes before another: longer remaining critical path first, then more
/// (transitive) dependents, then planning order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// Estimated milliseconds from this step's start to the end of the longest chain of
    /// dependents through it (its own duration included).
    pub critical_path_ms: u64,
    /// Steps that (transitively) wait for this one.
    pub dependents: u32,
    /// Position in the planner's list: keeps the order total and stable.
    pub index: u32,
}

impl Ord for Priority {
    /// `Less` means "goes first".
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .critical_path_ms
            .cmp(&self.critical_path_ms)
            .then(other.dependents.cmp(&self.dependents))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Estimated duration of a step with no history.
pub const DEFAULT_ESTIMATE_MS: u64 = 1;

/// The priority of every node of `graph`, given each node's estimated remaining duration:
/// `Some(ms)` (0 for a step with nothing to do, e.g. cached), `None` when unknown
/// ([`DEFAULT_ESTIMATE_MS`]).
pub fn priorities(graph: &DepGraph, estimates_ms: &[Option<u64>]) -> Vec<Priority> {
    let n = graph.len();
    let mut critical = vec![0u64; n];
    // Reverse topological order: every dependent is done before the node itself.
    for &node in graph.topo_order().iter().rev() {
        let own = estimates_ms
            .get(node)
            .copied()
            .flatten()
            .unwrap_or(DEFAULT_ESTIMATE_MS);
        let longest_after = graph
            .dependents(node)
            .iter()
            .map(|&d| critical[d])
            .max()
            .unwrap_or(0);
        critical[node] = own.saturating_add(longest_after);
    }
    let dependents = graph.transitive_dependent_counts();
    (0..n)
        .map(|i| Priority {
            critical_path_ms: critical[i],
            dependents: dependents[i],
            index: i as u32,
        })
        .collect()
}

/// Rank of every node in scheduling order (0 goes first): what the store keeps per step.
pub fn ranks(priorities: &[Priority]) -> Vec<i64> {
    let mut order: Vec<usize> = (0..priorities.len()).collect();
    order.sort_by(|&a, &b| priorities[a].cmp(&priorities[b]));
    let mut rank = vec![0i64; priorities.len()];
    for (position, node) in order.into_iter().enumerate() {
        rank[node] = position as i64;
    }
    rank
}

/// How often and how soon a failed step is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles for each further one.
    pub base_delay_secs: i64,
    /// The delay never grows beyond this.
    pub max_delay_secs: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay_secs: 30,
            max_delay_secs: 3600,
        }
    }
}

impl RetryPolicy {
    /// Whether a step that has made `attempts` attempts may make another.
    pub fn may_retry(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// Seconds to wait after the `attempts`-th failed attempt (1-based):
    /// base, 2 x base, 4 x base ... capped at `max_delay_secs`.
    pub fn delay_after(&self, attempts: u32) -> i64 {
        let doublings = attempts.saturating_sub(1).min(62);
        let factor = 1i64 << doublings;
        self.base_delay_secs
            .saturating_mul(factor)
            .min(self.max_delay_secs)
            .max(0)
    }
}
