//! The agent's metrics: TopoLVM's gauges per device class (names kept so dashboards and alerts
//! keep working), and the agent's own pass and LVM command counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use lvms_api::{RAIDHealthStatus, VGStatus};

use crate::capacity::ClassUsage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub node: String,
    pub device_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

type IntGauges = Family<ClassLabels, Gauge>;
type NodeGauges = Family<NodeLabels, Gauge>;
type FloatGauges = Family<ClassLabels, Gauge<f64, AtomicU64>>;

pub struct Metrics {
    registry: Mutex<Registry>,
    vg_available: IntGauges,
    vg_size: IntGauges,
    pool_size: IntGauges,
    pool_data: FloatGauges,
    pool_metadata: FloatGauges,
    pool_overprovisioned_available: IntGauges,
    raid_health: IntGauges,
    raid_syncing: IntGauges,
    raw_available: NodeGauges,
    raw_errors: NodeGauges,
    pub passes: Counter,
    pub pass_errors: Counter,
    pub lvm_commands: Counter,
    pub orphans_removed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Mutex::new(Registry::default()),
            vg_available: Default::default(),
            vg_size: Default::default(),
            pool_size: Default::default(),
            pool_data: Default::default(),
            pool_metadata: Default::default(),
            pool_overprovisioned_available: Default::default(),
            raid_health: Default::default(),
            raid_syncing: Default::default(),
            raw_available: Default::default(),
            raw_errors: Default::default(),
            passes: Default::default(),
            pass_errors: Default::default(),
            lvm_commands: Default::default(),
            orphans_removed: Default::default(),
        };
        registry.register(
            "topolvm_volumegroup_available_bytes",
            "Free bytes of the volume group",
            m.vg_available.clone(),
        );
        registry.register(
            "topolvm_volumegroup_size_bytes",
            "Size of the volume group in bytes",
            m.vg_size.clone(),
        );
        registry.register(
            "topolvm_thinpool_size_bytes",
            "Size of the thin pool in bytes",
            m.pool_size.clone(),
        );
        registry.register(
            "topolvm_thinpool_data_percent",
            "Data usage of the thin pool, percent",
            m.pool_data.clone(),
        );
        registry.register(
            "topolvm_thinpool_metadata_percent",
            "Metadata usage of the thin pool, percent",
            m.pool_metadata.clone(),
        );
        registry.register(
            "topolvm_thinpool_overprovisioned_available",
            "Bytes that can still be provisioned from the thin pool (ratio x size - promised)",
            m.pool_overprovisioned_available.clone(),
        );
        registry.register(
            "lvms_raid_health_status",
            "Health of a RAID device class on the node: 0 healthy, 1 degraded, 2 failed",
            m.raid_health.clone(),
        );
        registry.register(
            "lvms_raid_sync_in_progress",
            "1 while a RAID volume of the class on the node is synchronising, else 0",
            m.raid_syncing.clone(),
        );
        // local-pv-provisioner's names, so its dashboards and alerts work for raw-device classes.
        registry.register(
            "local_pv_provisioner_available_devices",
            "Disks of raw-device classes on the node offered as PersistentVolumes and not claimed",
            m.raw_available.clone(),
        );
        registry.register(
            "local_pv_provisioner_error_devices",
            "Disks of raw-device classes on the node that could not be offered or cleaned",
            m.raw_errors.clone(),
        );
        registry.register(
            "vg_manager_passes",
            "Reconcile passes of the node agent",
            m.passes.clone(),
        );
        registry.register(
            "vg_manager_pass_errors",
            "Reconcile passes that failed",
            m.pass_errors.clone(),
        );
        registry.register(
            "vg_manager_lvm_commands",
            "Commands run (lvm, lsblk, losetup, filesystem tools)",
            m.lvm_commands.clone(),
        );
        registry.register(
            "vg_manager_orphaned_volumes_removed",
            "Logical volumes of ours removed because their LogicalVolume was gone",
            m.orphans_removed.clone(),
        );
        *m.registry.lock().unwrap() = registry;
        m
    }
}

impl Metrics {
    /// Replaces the per-class gauges with the classes present now (removed classes vanish).
    pub fn set_usage(&self, node: &str, usage: &BTreeMap<String, ClassUsage>) {
        for f in [
            &self.vg_available,
            &self.vg_size,
            &self.pool_size,
            &self.pool_overprovisioned_available,
        ] {
            f.clear();
        }
        self.pool_data.clear();
        self.pool_metadata.clear();
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (class, u) in usage {
            let l = ClassLabels {
                node: node.into(),
                device_class: class.clone(),
            };
            self.vg_available.get_or_create(&l).set(clamp(u.vg_free));
            self.vg_size.get_or_create(&l).set(clamp(u.vg_size));
            if let Some(t) = &u.thin {
                self.pool_size.get_or_create(&l).set(clamp(t.pool_size));
                self.pool_data.get_or_create(&l).set(t.data_percent);
                self.pool_metadata.get_or_create(&l).set(t.metadata_percent);
                self.pool_overprovisioned_available
                    .get_or_create(&l)
                    .set(clamp(u.available()));
            }
        }
    }

    /// Replaces the RAID gauges with the RAID classes in `statuses` (others vanish).
    pub fn set_raid(&self, node: &str, statuses: &[VGStatus]) {
        self.raid_health.clear();
        self.raid_syncing.clear();
        for s in statuses {
            let Some(raid) = &s.raid_status else { continue };
            let l = ClassLabels {
                node: node.into(),
                device_class: s.name.clone(),
            };
            let health = match raid.status {
                RAIDHealthStatus::Healthy => 0,
                RAIDHealthStatus::Degraded => 1,
                RAIDHealthStatus::Failed => 2,
            };
            self.raid_health.get_or_create(&l).set(health);
            self.raid_syncing
                .get_or_create(&l)
                .set(crate::raid_health::syncing(raid) as i64);
        }
    }

    /// The raw-device gauges: set when the node has a raw-device class, absent otherwise.
    pub fn set_raw(&self, node: &str, counts: Option<crate::agent::RawCounts>) {
        self.raw_available.clear();
        self.raw_errors.clear();
        if let Some(c) = counts {
            let l = NodeLabels { node: node.into() };
            self.raw_available.get_or_create(&l).set(c.available as i64);
            self.raw_errors.get_or_create(&l).set(c.errors as i64);
        }
    }

    pub fn render(&self) -> String {
        http_probe::render_metrics(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::ThinUsage;

    fn has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn local_pv_provisioner_gauges_per_node() {
        let m = Metrics::default();
        assert!(
            !m.render()
                .contains("local_pv_provisioner_available_devices{")
        );
        let counts = crate::agent::RawCounts {
            available: 3,
            errors: 1,
        };
        m.set_raw("node-a", Some(counts));
        has_lines(
            &m.render(),
            &[
                r#"local_pv_provisioner_available_devices{node="node-a"} 3"#,
                r#"local_pv_provisioner_error_devices{node="node-a"} 1"#,
            ],
        );
        m.set_raw("node-a", None);
        assert!(!m.render().contains("local_pv_provisioner_error_devices{"));
    }

    #[test]
    fn topolvm_gauges_per_class() {
        let m = Metrics::default();
        let thin = ClassUsage {
            vg_size: 1000,
            vg_free: 100,
            thin: Some(ThinUsage {
                pool_size: 900,
                data_percent: 12.5,
                metadata_percent: 3.0,
                virtual_used: 1000,
                overprovision_ratio: 10,
            }),
            ..Default::default()
        };
        let usage: BTreeMap<String, ClassUsage> = [
            ("vg1".to_string(), thin),
            (
                "thick".to_string(),
                ClassUsage {
                    vg_size: 50,
                    vg_free: 20,
                    ..Default::default()
                },
            ),
        ]
        .into();
        m.set_usage("node-a", &usage);
        let text = m.render();
        has_lines(
            &text,
            &[
                r#"topolvm_volumegroup_available_bytes{node="node-a",device_class="vg1"} 100"#,
                r#"topolvm_volumegroup_size_bytes{node="node-a",device_class="thick"} 50"#,
                r#"topolvm_thinpool_size_bytes{node="node-a",device_class="vg1"} 900"#,
                r#"topolvm_thinpool_data_percent{node="node-a",device_class="vg1"} 12.5"#,
                r#"topolvm_thinpool_metadata_percent{node="node-a",device_class="vg1"} 3.0"#,
                r#"topolvm_thinpool_overprovisioned_available{node="node-a",device_class="vg1"} 8000"#,
            ],
        );
        assert!(
            !text.contains(r#"topolvm_thinpool_size_bytes{node="node-a",device_class="thick"}"#)
        );
        let raid = |name: &str, status, sync| VGStatus {
            name: name.into(),
            raid_status: Some(lvms_api::RAIDStatus {
                status,
                min_sync_percent: Some(sync),
                ..Default::default()
            }),
            ..Default::default()
        };
        m.set_raid(
            "node-a",
            &[
                raid("r1", RAIDHealthStatus::Degraded, 100),
                raid("r5", RAIDHealthStatus::Healthy, 40),
                VGStatus::default(),
            ],
        );
        let text = m.render();
        has_lines(
            &text,
            &[
                r#"lvms_raid_health_status{node="node-a",device_class="r1"} 1"#,
                r#"lvms_raid_sync_in_progress{node="node-a",device_class="r1"} 0"#,
                r#"lvms_raid_health_status{node="node-a",device_class="r5"} 0"#,
                r#"lvms_raid_sync_in_progress{node="node-a",device_class="r5"} 1"#,
            ],
        );
        assert_eq!(
            text.matches("lvms_raid_health_status{").count(),
            2,
            "RAID classes only"
        );
        m.set_usage("node-a", &BTreeMap::new());
        assert!(
            !m.render().contains("device_class=\"vg1\""),
            "removed classes disappear"
        );
    }
}
