//! The desired objects: one small pure builder per kind, each a function of the LVMCluster, the
//! operator's configuration and what discovery found. The reconciler applies what they return.

pub mod csi_controller;
pub mod csi_driver;
pub mod metrics_tls;
pub mod network_policy;
pub mod rbac;
pub mod scc;
pub mod snapshot_class;
pub mod storage_class;
pub mod vg_manager;
pub mod volume_group;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use lvms_api::LVMCluster;

use crate::config::Config;

pub const MANAGED_BY: &str = "lvms-operator";
pub const PART_OF: &str = "lvms-provisioner";
/// Label on cluster-scoped objects (which cannot have a namespaced owner) naming the LVMCluster.
pub const OWNER_LABEL: &str = "lvm.topolvm.io/owned-by";
/// Label naming the device class of a StorageClass or VolumeSnapshotClass.
pub const DEVICE_CLASS_LABEL: &str = "lvm.topolvm.io/device-class";

/// What discovery told the builders about the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    /// The VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1) are installed.
    pub snapshot_crds: bool,
    /// A StorageClass that is not ours is already the cluster default.
    pub foreign_default_storage_class: bool,
    /// Pods are admitted by SecurityContextConstraints (OpenShift, MicroShift).
    pub security_context_constraints: bool,
}

/// The labels every managed object carries.
pub fn labels(component: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", component),
        ("app.kubernetes.io/component", component),
        ("app.kubernetes.io/part-of", PART_OF),
        ("app.kubernetes.io/managed-by", MANAGED_BY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Metadata of a namespaced object owned (and garbage-collected) by the LVMCluster.
pub fn owned_meta(
    cluster: &LVMCluster,
    config: &Config,
    name: &str,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(config.namespace.clone()),
        labels: Some(labels(component)),
        owner_references: owner_ref(cluster).map(|o| vec![o]),
        ..Default::default()
    }
}

/// Metadata of a cluster-scoped object: no owner reference is legal, so a label ties it to the
/// LVMCluster and the operator deletes it itself.
pub fn cluster_meta(cluster: &LVMCluster, name: &str, component: &str) -> ObjectMeta {
    let mut labels = labels(component);
    labels.insert(OWNER_LABEL.into(), owner_label_value(cluster));
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// `<namespace>.<name>` of the LVMCluster: a label value (≤ 63 chars, so long names are cut).
pub fn owner_label_value(cluster: &LVMCluster) -> String {
    let full = format!(
        "{}.{}",
        cluster.metadata.namespace.as_deref().unwrap_or(""),
        cluster.metadata.name.as_deref().unwrap_or("")
    );
    let cut: String = full.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn owner_ref(cluster: &LVMCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

/// The label selector and pod template of a workload whose pods carry `labels`: the two must
/// agree or the API server refuses the workload.
pub fn selector_and_template(
    labels: BTreeMap<String, String>,
    pod: k8s_openapi::api::core::v1::PodSpec,
) -> (
    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    k8s_openapi::api::core::v1::PodTemplateSpec,
) {
    let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    };
    let template = k8s_openapi::api::core::v1::PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(pod),
    };
    (selector, template)
}

/// Every object the LVMCluster should have, built once per reconcile.
#[derive(Clone, Debug)]
pub struct Desired {
    pub volume_groups: Vec<lvms_api::LVMVolumeGroup>,
    pub rbac: rbac::Rbac,
    pub vg_manager: k8s_openapi::api::apps::v1::DaemonSet,
    pub csi_controller: k8s_openapi::api::apps::v1::Deployment,
    pub csi_driver: k8s_openapi::api::storage::v1::CSIDriver,
    pub storage_classes: Vec<k8s_openapi::api::storage::v1::StorageClass>,
    pub snapshot_classes: Vec<snapshot_class::VolumeSnapshotClass>,
    /// SecurityContextConstraints for vg-manager, on OpenShift only.
    pub scc: Option<serde_json::Value>,
    pub network_policies: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

pub fn desired(cluster: &LVMCluster, config: &Config, discovery: &Discovery) -> Desired {
    Desired {
        volume_groups: volume_group::volume_groups(cluster, config),
        rbac: rbac::rbac(cluster, config),
        vg_manager: vg_manager::daemon_set(cluster, config),
        csi_controller: csi_controller::deployment(cluster, config, discovery),
        csi_driver: csi_driver::csi_driver(cluster),
        storage_classes: storage_class::storage_classes(cluster, discovery),
        snapshot_classes: snapshot_class::snapshot_classes(cluster, discovery),
        scc: scc::security_context_constraints(cluster, config, discovery),
        network_policies: network_policy::network_policies(cluster, config),
    }
}

#[cfg(test)]
pub mod tests {
    //! The fixture every builder test starts from.
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Toleration,
    };
    use lvms_api::{
        DeviceClass, DeviceFilesystemType, DeviceSelector, LVMCluster, LVMClusterSpec, Storage,
        ThinPoolConfig,
    };

    /// The pod's livenessprobe sidecar serves on the port that another container of the pod
    /// declares and probes: a sidecar nobody probes restarts nothing.
    pub fn liveness_sidecar_is_probed(pod: &k8s_openapi::api::core::v1::PodSpec) {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let sidecar = pod
            .containers
            .iter()
            .find(|c| c.name == "liveness-probe")
            .expect("a livenessprobe sidecar");
        let endpoint = sidecar
            .args
            .iter()
            .flatten()
            .find_map(|a| a.strip_prefix("--http-endpoint=:"))
            .expect("--http-endpoint");
        let probed = pod.containers.iter().any(|c| {
            let Some(IntOrString::String(name)) = c
                .liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| &h.port)
            else {
                return false;
            };
            c.ports
                .iter()
                .flatten()
                .any(|p| p.name.as_ref() == Some(name) && p.container_port.to_string() == endpoint)
        });
        assert!(probed, "no container probes the sidecar's port {endpoint}");
    }

    pub fn selector(key: &str) -> NodeSelector {
        NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: "Exists".into(),
                    values: None,
                }]),
                match_fields: None,
            }],
        }
    }

    /// Two classes: `fast` (thin, default, on workers) and `bulk` (thick ext4, Retain, Immediate).
    pub fn cluster() -> LVMCluster {
        let fast = DeviceClass {
            name: "fast".into(),
            default: true,
            device_selector: Some(DeviceSelector {
                paths: Some(vec!["/dev/nvme1n1".into()]),
                ..Default::default()
            }),
            node_selector: Some(selector("node-role.kubernetes.io/worker")),
            thin_pool_config: Some(ThinPoolConfig {
                name: "thin-pool-1".into(),
                size_percent: 90,
                overprovision_ratio: 10,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut bulk = DeviceClass {
            name: "bulk".into(),
            fstype: DeviceFilesystemType::Ext4,
            device_selector: Some(DeviceSelector {
                optional_paths: Some(vec!["/dev/sdb".into()]),
                ..Default::default()
            }),
            node_selector: Some(selector("storage")),
            ..Default::default()
        };
        bulk.storage_class_options.reclaim_policy = lvms_api::ReclaimPolicy::Retain;
        bulk.storage_class_options.volume_binding_mode = lvms_api::VolumeBindingMode::Immediate;
        bulk.storage_class_options
            .additional_parameters
            .insert("backup.example.com/policy".into(), "daily".into());
        bulk.storage_class_options
            .additional_labels
            .insert("tier".into(), "gold".into());
        let mut c = LVMCluster::new(
            "lvmcluster",
            LVMClusterSpec {
                tolerations: vec![Toleration {
                    key: Some("node-role.kubernetes.io/master".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }],
                storage: Storage {
                    device_classes: vec![fast, bulk],
                },
            },
        );
        c.metadata.namespace = Some("openshift-storage".into());
        c.metadata.uid = Some("1f5e2c3a-0000-4000-8000-000000000001".into());
        c
    }
}
