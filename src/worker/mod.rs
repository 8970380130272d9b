//! The worker: build roots, the emerge runner, and (later) the agent loop.
