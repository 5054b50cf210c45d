//! lvms-operator: reconciles the LVMCluster into everything a cluster needs.

pub mod applied;
pub mod config;
pub mod http;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod node_loss;
pub use lvms_api::nodes;

pub mod reconcile;
pub mod resources;
pub mod run;
pub mod status;
