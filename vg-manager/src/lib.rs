//! vg-manager, the node agent: disk discovery, the volume group planner, the per-node reconcile
//! pass (volume groups, thin pools, teardown, status, capacity) and its metrics, the
//! LogicalVolume controller (the node's LVs) and the CSI node service. The binary also runs the
//! CSI controller service (crate `csi`) in the controller Deployment.

pub mod agent;
pub mod autoextend;
pub mod capacity;
pub mod csi_node;
pub mod discover;
pub mod logical_volume;
pub mod lv_controller;
pub mod metrics;
pub mod plan;
pub mod raid_health;
pub mod raw_devices;
pub mod reports;
pub mod run;
