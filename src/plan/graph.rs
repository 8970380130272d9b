//! The dependency graph of a request's steps: edges, topological order, cycles, dependents.

use std::collections::HashMap;

use super::{PlanError, PlannedPackage};

/// Nodes `0..len()`; `deps(i)` must be built before `i`.
#[derive(Debug, Clone)]
pub struct DepGraph {
    names: Vec<String>,
    deps: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    topo: Vec<usize>,
}

impl DepGraph {
    /// The graph of a planner's merge list: nodes in list order, edges from `deps` (CPVs).
    /// A dependency on a CPV missing from the list, a duplicate CPV and a cycle are errors.
    pub fn from_packages(packages: &[PlannedPackage]) -> Result<DepGraph, PlanError> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(packages.len());
        for (i, pkg) in packages.iter().enumerate() {
            if index.insert(pkg.cpv.as_str(), i).is_some() {
                return Err(PlanError::DuplicatePackage {
                    cpv: pkg.cpv.clone(),
                });
            }
        }
        let mut deps = Vec::with_capacity(packages.len());
        for pkg in packages {
            let mut node_deps = Vec::with_capacity(pkg.deps.len());
            for dep in &pkg.deps {
                let &d = index
                    .get(dep.as_str())
                    .ok_or_else(|| PlanError::UnknownDependency {
                        cpv: pkg.cpv.clone(),
                        dep: dep.clone(),
                    })?;
                node_deps.push(d);
            }
            deps.push(node_deps);
        }
        DepGraph::new(packages.iter().map(|p| p.cpv.clone()).collect(), deps)
    }

    /// A graph from names and, per node, the indices of its dependencies.
    pub fn new(names: Vec<String>, mut deps: Vec<Vec<usize>>) -> Result<DepGraph, PlanError> {
        let n = names.len();
        if deps.len() != n {
            return Err(PlanError::GraphShape {
                nodes: n,
                dep_lists: deps.len(),
            });
        }
        let mut dependents = vec![Vec::new(); n];
        for (node, node_deps) in deps.iter_mut().enumerate() {
            node_deps.sort_unstable();
            node_deps.dedup();
            for &d in node_deps.iter() {
                if d >= n {
                    return Err(PlanError::BadDepIndex {
                        node: names[node].clone(),
                        dep: d,
                        nodes: n,
                    });
                }
                if d == node {
                    return Err(PlanError::Cycle {
                        path: vec![names[node].clone(), names[node].clone()],
                    });
                }
                dependents[d].push(node);
            }
        }
        // Kahn's algorithm, lowest index first so the order follows the planner's list.
        let mut missing: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&i| missing[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut topo = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(node)) = ready.pop() {
            topo.push(node);
            for &d in &dependents[node] {
                missing[d] -= 1;
                if missing[d] == 0 {
                    ready.push(std::cmp::Reverse(d));
                }
            }
        }
        if topo.len() < n {
            let path = find_cycle(&deps, &missing, &names);
            return Err(PlanError::Cycle { path });
        }
        Ok(DepGraph {
            names,
            deps,
            dependents,
            topo,
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, node: usize) -> &str {
        &self.names[node]
    }

    /// What `node` needs built first.
    pub fn deps(&self, node: usize) -> &[usize] {
        &self.deps[node]
    }

    /// What directly waits for `node`.
    pub fn dependents(&self, node: usize) -> &[usize] {
        &self.dependents[node]
    }

    /// Every node after all of its dependencies.
    pub fn topo_order(&self) -> &[usize] {
        &self.topo
    }

    /// Every node that waits for `node`, directly or not (what a failure of `node` blocks).
    pub fn transitive_dependents(&self, node: usize) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![node];
        let mut out = Vec::new();
        while let Some(current) = stack.pop() {
            for &d in &self.dependents[current] {
                if !seen[d] {
                    seen[d] = true;
                    out.push(d);
                    stack.push(d);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// For each node, how many nodes wait for it, directly or not.
    pub fn transitive_dependent_counts(&self) -> Vec<u32> {
        let n = self.len();
        let words = n.div_ceil(64);
        let mut sets = vec![vec![0u64; words]; n];
        for &node in self.topo.iter().rev() {
            let mut set = vec![0u64; words];
            for &d in &self.dependents[node] {
                set[d / 64] |= 1 << (d % 64);
                for (w, bits) in set.iter_mut().zip(&sets[d]) {
                    *w |= bits;
                }
            }
            sets[node] = set;
        }
        sets.iter()
            .map(|set| set.iter().map(|w| w.count_ones()).sum())
            .collect()
    }
}

/// A cycle among the nodes Kahn's algorithm could not order (`missing > 0`), as the CPVs
/// along it with the first repeated at the end: `a -> b -> a` means a needs b needs a.
fn find_cycle(deps: &[Vec<usize>], missing: &[usize], names: &[String]) -> Vec<String> {
    let Some(start) = (0..deps.len()).find(|&i| missing[i] > 0) else {
        return Vec::new();
    };
    // Every unordered node has an unordered dependency, so walking them must revisit one.
    let mut position = vec![usize::MAX; deps.len()];
    let mut walk = Vec::new();
    let mut node = start;
    loop {
        if position[node] != usize::MAX {
            let cycle = &walk[position[node]..];
            let mut path: Vec<String> = cycle.iter().map(|&i: &usize| names[i].clone()).collect();
            path.push(names[node].clone());
            return path;
        }
        position[node] = walk.len();
        walk.push(node);
        match deps[node].iter().find(|&&d| missing[d] > 0) {
            Some(&next) => node = next,
            None => return walk.iter().map(|&i| names[i].clone()).collect(),
        }
    }
}
