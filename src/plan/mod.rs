//! Requests -> steps: fingerprints, the dependency graph, scheduling order.
