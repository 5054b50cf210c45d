//! vg-manager, the node agent: disk discovery, the volume group planner, the per-node reconcile
//! pass (volume groups, thin pools, teardown, status, capacity) and its metrics. The CSI services
//! come with issue #6.

pub mod agent;
pub mod capacity;
pub mod csi_node;
pub mod discover;
pub mod logical_volume;
pub mod lv_controller;
pub mod metrics;
pub mod plan;
pub mod reports;
pub mod run;
