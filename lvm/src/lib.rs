//! The LVM layer: typed lvm2 operations over a command runner, `fullreport` JSON parsed into
//! typed volume groups and volumes, block-device discovery from lsblk, the disk eligibility
//! rules, and filesystem helpers. Nothing here talks to Kubernetes.

pub mod commands;
pub mod container;
pub mod crypt;
pub mod dm;
pub mod eligibility;
pub mod error;
pub mod fs;
pub mod fs_options;
pub mod lsblk;
pub mod mount;
pub mod report;
pub mod runner;

pub use commands::{Clear, Layout, Lvm, ThinPoolSpec};
pub use error::Error;
pub use report::{LogicalVolume, PhysicalVolume, PoolUsage, Report, VolumeGroup};
pub use runner::{Exec, Mode, Output, Runner};
