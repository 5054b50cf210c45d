//! vg-manager, the node agent: disk discovery and the volume group planner. The agent loop and
//! the CSI services come with issues #5 and #6.

pub mod discover;
pub mod plan;
