//! Rollout planning: inventory of sites/farms/members and upgrade waves.
