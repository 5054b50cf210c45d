//! VolumeSnapshotClass `lvms-<class>` per thin class, only when the snapshot CRDs exist (there is
//! no such type in k8s-openapi: the snapshot API is an add-on).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use lvms_api::LVMCluster;
use lvms_api::names::CSI_DRIVER_NAME;
use serde::{Deserialize, Serialize};

use super::{DEVICE_CLASS_LABEL, Discovery, cluster_meta};

/// The fields of snapshot.storage.k8s.io/v1 VolumeSnapshotClass that we set. It has no spec: the
/// fields sit at the top level, so this is a plain struct with the Resource impl below.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    pub metadata: ObjectMeta,
    pub driver: String,
    pub deletion_policy: String,
}

pub const GROUP: &str = "snapshot.storage.k8s.io";
pub const VERSION: &str = "v1";
pub const PLURAL: &str = "volumesnapshotclasses";
/// The CRD whose presence turns snapshot support on.
pub const CRD_NAME: &str = "volumesnapshotclasses.snapshot.storage.k8s.io";

/// The API identity, for a dynamic client.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "VolumeSnapshotClass".into(),
        plural: PLURAL.into(),
    }
}

pub fn snapshot_classes(cluster: &LVMCluster, discovery: &Discovery) -> Vec<VolumeSnapshotClass> {
    if !discovery.snapshot_crds {
        return Vec::new();
    }
    cluster
        .spec
        .storage
        .device_classes
        .iter()
        .filter(|c| c.is_thin())
        .map(|c| {
            let mut metadata =
                cluster_meta(cluster, &c.storage_class_name(), "topolvm-snapshotclass");
            metadata
                .labels
                .as_mut()
                .unwrap()
                .insert(DEVICE_CLASS_LABEL.into(), c.name.clone());
            VolumeSnapshotClass {
                metadata,
                driver: CSI_DRIVER_NAME.into(),
                deletion_policy: "Delete".into(),
            }
        })
        .collect()
}

impl VolumeSnapshotClass {
    /// The object as the API server takes it (apiVersion and kind included).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("serializes");
        v["apiVersion"] = format!("{GROUP}/{VERSION}").into();
        v["kind"] = "VolumeSnapshotClass".into();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    #[test]
    fn only_thin_classes_and_only_with_the_crds() {
        assert!(snapshot_classes(&cluster(), &Discovery::default()).is_empty());
        let d = Discovery {
            snapshot_crds: true,
            ..Default::default()
        };
        let vscs = snapshot_classes(&cluster(), &d);
        assert_eq!(vscs.len(), 1, "bulk is thick");
        let json = vscs[0].to_json();
        assert_eq!(json["metadata"]["name"], "lvms-fast");
        assert_eq!(json["driver"], "topolvm.io");
        assert_eq!(json["deletionPolicy"], "Delete");
        assert_eq!(json["apiVersion"], "snapshot.storage.k8s.io/v1");
    }
}
