//! `LVMCluster` (lvm.topolvm.io/v1alpha1): the one resource a user writes.
//!
//! Field names, defaults and ranges follow LVMS so existing manifests apply unchanged. Everything
//! LVMS checks in its admission webhook that a schema can express lives here as OpenAPI bounds or
//! CEL rules (`x-kubernetes-validations`); we ship no webhook, so the API server is the first line
//! of defence. What a schema cannot express cheaply (paths shared across classes) is checked by
//! [`crate::validate`] and reported by the operator as a condition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::raid::{DeviceDiscoveryPolicy, RAIDConfig};
use crate::raw::RawDevicesConfig;
use crate::schema::{node_selector_schema, quantity_schema};
use crate::status::{DeviceClassStatus, LVMStateType};

/// Upper bounds that keep every CEL rule within the API server's static cost budget
/// (`crd-tools check crds/*.yaml` prints each rule's share). They must exist: without them the API
/// server refuses the CRD itself.
///
/// The device class bound is the tight one. `chunkSize` and `metadataSize` are int-or-string
/// quantities, which the server types `dyn` with the size of a whole request whatever their
/// `maxLength`, so each parse of one is estimated at 314,573 cost units. The immutable-chunk and
/// grow-only-metadata rules parse two (old and new): 629,150 per class, and a rule may cost at most
/// 10,000,000, so at most 15 classes. 12 leaves a fifth of that for the rules, and keeps the
/// quantity rules at a quarter of the CRD's total budget so that later fields still fit.
pub const MAX_DEVICE_CLASSES: usize = 12;
pub const MAX_PATHS: usize = 64;
pub const MAX_PATH_LEN: usize = 1024;

/// Desired state of the node-local LVM storage of the cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lvm.topolvm.io",
    version = "v1alpha1",
    kind = "LVMCluster",
    doc = "LVMCluster is the one resource that describes the node-local LVM storage of a cluster.",
    plural = "lvmclusters",
    singular = "lvmcluster",
    shortname = "lvmc",
    namespaced,
    status = "LVMClusterStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct LVMClusterSpec {
    /// Tolerations applied to the vg-manager DaemonSet, so it can run on tainted nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The device class configuration for the nodes' local disks.
    pub storage: Storage,
}

/// The device classes: each becomes a volume group on every selected node, a StorageClass and, for
/// thin classes, a VolumeSnapshotClass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.deviceClasses.filter(c, c.default).size() <= 1",
        "message": "at most one device class can be the default",
        "fieldPath": ".deviceClasses",
    },
    {
        "rule": "self.deviceClasses.size() <= 1 || self.deviceClasses.all(c, has(c.deviceSelector) && (has(c.deviceSelector.paths) || has(c.deviceSelector.optionalPaths)))",
        "message": "with more than one device class, every class needs deviceSelector.paths or deviceSelector.optionalPaths",
        "fieldPath": ".deviceClasses",
    },
    {
        "rule": "oldSelf.deviceClasses.all(o, !o.default || self.deviceClasses.exists(c, c.name == o.name))",
        "message": "the default device class cannot be removed",
        "fieldPath": ".deviceClasses",
    },
]))]
pub struct Storage {
    /// One entry per volume group. At least one; names are unique.
    #[schemars(length(min = 1, max = MAX_DEVICE_CLASSES))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub device_classes: Vec<DeviceClass>,
}

/// The rules of one device class: what may change on update, and (from [`crate::raid`]) how a
/// RAID config fits the class's devices.
fn device_class_rules() -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut rules = vec![
        json!({
            "rule": "has(self.nodeSelector) == has(oldSelf.nodeSelector) && (!has(self.nodeSelector) || self.nodeSelector == oldSelf.nodeSelector)",
            "message": "nodeSelector is immutable",
            "fieldPath": ".nodeSelector",
        }),
        json!({
            "rule": "has(self.thinPoolConfig) == has(oldSelf.thinPoolConfig)",
            "message": "a thick device class cannot become thin or the other way round: thinPoolConfig cannot be added or removed",
            "fieldPath": ".thinPoolConfig",
        }),
        json!({
            "rule": "(has(self.deviceSelector) && has(self.deviceSelector.forceWipeDevicesAndDestroyAllData) && self.deviceSelector.forceWipeDevicesAndDestroyAllData) == (has(oldSelf.deviceSelector) && has(oldSelf.deviceSelector.forceWipeDevicesAndDestroyAllData) && oldSelf.deviceSelector.forceWipeDevicesAndDestroyAllData)",
            "message": "forceWipeDevicesAndDestroyAllData is immutable",
            "fieldPath": ".deviceSelector.forceWipeDevicesAndDestroyAllData",
        }),
    ];
    rules.extend(crate::raid::device_class_rules());
    rules.extend(crate::raw::device_class_rules());
    rules
}

/// A set of disks on a set of nodes that form one volume group, optionally with a thin pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = device_class_rules()))]
pub struct DeviceClass {
    /// Name of the class: the volume group on each node, the suffix of StorageClass `lvms-<name>`.
    #[schemars(
        length(min = 1, max = 245),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Which disks join the volume group. Unset: every eligible disk of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_selector: Option<DeviceSelector>,
    /// Which nodes get this class. Unset: every node without a NoSchedule taint. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "node_selector_schema")]
    pub node_selector: Option<NodeSelector>,
    /// Thin pool settings. Unset: a thick class (plain linear volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_pool_config: Option<ThinPoolConfig>,
    /// Volumes of this class are LVM RAID volumes of this level (a thick class; not with
    /// thinPoolConfig). Needs paths or optionalPaths. Immutable; cannot be added or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid_config: Option<RAIDConfig>,
    /// Without paths/optionalPaths: `Static` keeps the devices the volume group was created
    /// with, `Dynamic` adds eligible devices that appear later. Unset: Static for a new volume
    /// group, Dynamic for one that exists. May change at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_discovery_policy: Option<DeviceDiscoveryPolicy>,
    /// Whole disks as static PersistentVolumes, one per matching disk of each selected node, in
    /// place of a volume group (not with thinPoolConfig or raidConfig). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_devices: Option<RawDevicesConfig>,
    /// What the node does with a deleted thick volume's data before its extents are free for
    /// the next volume: `zero` writes zeros over it (the default; offloaded to the device where
    /// it can), `discard` discards it (fast; safe only where discarded blocks read back as
    /// zeros), `none` leaves it (the next volume can read it). Thin volumes need none of this:
    /// their pool zeroes blocks on first use. Not with rawDevices (they have `cleanup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_cleanup: Option<VolumeCleanup>,
    /// The class of PVCs that name no StorageClass. At most one class is the default.
    #[serde(default)]
    pub default: bool,
    /// Filesystem created on volumes of this class. Immutable.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "fstype is immutable"}]))]
    pub fstype: DeviceFilesystemType,
    /// Options of the StorageClass created for this class.
    #[serde(default)]
    pub storage_class_options: StorageClassOptions,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeCleanup {
    #[default]
    Zero,
    Discard,
    None,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeviceFilesystemType {
    #[default]
    #[serde(rename = "xfs")]
    Xfs,
    #[serde(rename = "ext4")]
    Ext4,
}

impl DeviceFilesystemType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xfs => "xfs",
            Self::Ext4 => "ext4",
        }
    }
}

/// Disks to use, by path on the node (`/dev/sdb`, `/dev/disk/by-id/...`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.paths) || !has(self.optionalPaths) || self.paths.all(p, !(p in self.optionalPaths))",
        "message": "a path cannot be both in paths and in optionalPaths",
        "fieldPath": ".optionalPaths",
    },
]))]
pub struct DeviceSelector {
    /// Disks that must exist on every selected node. Paths may be added later, never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::paths_schema")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "oldSelf.all(p, p in self)",
        "message": "paths cannot be removed from a device class, only added",
    }]))]
    pub paths: Option<Vec<String>>,
    /// Disks of which at least one must exist on each selected node. May be added, never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::paths_schema")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "oldSelf.all(p, p in self)",
        "message": "optionalPaths cannot be removed from a device class, only added",
    }]))]
    pub optional_paths: Option<Vec<String>>,
    /// Wipe every signature from the disks in `paths` before use. DESTROYS ALL DATA on them.
    /// Honoured for explicit `paths` only, once per node. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_wipe_devices_and_destroy_all_data: Option<bool>,
}

/// The bytes of an int-or-string quantity in CEL, as an int: the API server hands an integer to
/// CEL as `int` and a string as `string`, and only `quantity()` reads the string. Written out in
/// each rule (CEL has no functions) through [`bytes_of`].
fn bytes_of(field: &str) -> String {
    format!("(type({field}) == int ? int({field}) : quantity({field}).asInteger())")
}

/// `field`'s bytes, or `default` when the field is unset.
fn bytes_or(field: &str, default: u64) -> String {
    format!("(has({field}) ? {} : {default})", bytes_of(field))
}

/// `field` (a quantity on `self`) is unset, or between `min` and `max` bytes. An integer is
/// compared as it is; a string through `quantity()`, bound once (`[q].all(...)`) so the costly
/// parse of an int-or-string is estimated once.
fn quantity_range(field: &str, min: (&str, u64), max: (&str, u64)) -> String {
    format!(
        "!has({field}) || (type({field}) == int ? {field} >= {} && {field} <= {} : [quantity({field})].all(q, q.compareTo(quantity('{}')) >= 0 && q.compareTo(quantity('{}')) <= 0))",
        min.1, max.1, min.0, max.0
    )
}

/// The CEL rules of a thin pool. They sit on the pool, not on the quantity fields: a rule on an
/// int-or-string field itself pays a whole-request traversal for every comparison with a type name
/// (`type(self) == int`), and transition rules there cannot see a field being unset.
fn thin_pool_rules() -> Vec<serde_json::Value> {
    use serde_json::json;
    vec![
        json!({
            "rule": "!has(self.chunkSize) || self.chunkSizeCalculationPolicy == 'Static'",
            "message": "chunkSize can only be set when chunkSizeCalculationPolicy is Static",
            "fieldPath": ".chunkSize",
        }),
        json!({
            "rule": "!has(self.metadataSize) || self.metadataSizeCalculationPolicy == 'Static'",
            "message": "metadataSize can only be set when metadataSizeCalculationPolicy is Static",
            "fieldPath": ".metadataSize",
        }),
        json!({
            "rule": quantity_range("self.chunkSize", ("64Ki", 64 << 10), ("1Gi", 1 << 30)),
            "message": "chunkSize must be between 64Ki and 1Gi",
            "fieldPath": ".chunkSize",
        }),
        json!({
            "rule": quantity_range("self.metadataSize", ("2Mi", 2 << 20), ("16Gi", 16 << 30)),
            "message": "metadataSize must be between 2Mi and 16Gi",
            "fieldPath": ".metadataSize",
        }),
        // The pool's chunk size is fixed when it is created: the policy cannot change, and with
        // Static neither can the size (unset is the default 128Ki; 131072 and "128Ki" are one size).
        json!({
            "rule": format!(
                "self.chunkSizeCalculationPolicy == oldSelf.chunkSizeCalculationPolicy && (self.chunkSizeCalculationPolicy != 'Static' || {} == {})",
                bytes_or("self.chunkSize", DEFAULT_CHUNK_SIZE),
                bytes_or("oldSelf.chunkSize", DEFAULT_CHUNK_SIZE)
            ),
            "message": "the chunk size of an existing thin pool cannot change: chunkSize and chunkSizeCalculationPolicy are immutable",
            "fieldPath": ".chunkSize",
        }),
        json!({
            "rule": "self.metadataSizeCalculationPolicy == oldSelf.metadataSizeCalculationPolicy || self.metadataSizeCalculationPolicy == 'Static'",
            "message": "metadataSizeCalculationPolicy can only change from Host to Static",
            "fieldPath": ".metadataSizeCalculationPolicy",
        }),
        // Thin pool metadata can grow, never shrink (unset is the default 1Gi).
        json!({
            "rule": format!(
                "oldSelf.metadataSizeCalculationPolicy != 'Static' || {} >= {}",
                bytes_or("self.metadataSize", DEFAULT_METADATA_SIZE),
                bytes_or("oldSelf.metadataSize", DEFAULT_METADATA_SIZE)
            ),
            "message": "metadataSize can only grow: a thin pool's metadata cannot shrink",
            "fieldPath": ".metadataSize",
        }),
        // Last, so the indexes of the rules above (which tests and the README quote) stand.
        // Integer comparisons only: a few cost units per class.
        json!({
            "rule": "!has(self.autoExtend) || self.autoExtend.maxSizePercent > self.sizePercent",
            "message": "autoExtend.maxSizePercent must be greater than sizePercent: the pool starts at sizePercent of the volume group and grows up to maxSizePercent",
            "fieldPath": ".autoExtend.maxSizePercent",
        }),
    ]
}

/// Chunk size of a Static thin pool without `chunkSize`.
pub const DEFAULT_CHUNK_SIZE: u64 = 128 << 10;
/// Metadata size of a Static thin pool without `metadataSize`.
pub const DEFAULT_METADATA_SIZE: u64 = 1 << 30;

/// Thin pool inside the volume group; its presence makes the class thin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = thin_pool_rules()))]
pub struct ThinPoolConfig {
    /// Name of the thin pool logical volume. Immutable.
    #[schemars(
        length(min = 1, max = 127),
        regex(pattern = r"^[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]*$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "thinPoolConfig.name is immutable"}]))]
    pub name: String,
    /// Percentage of the volume group given to the thin pool. Immutable.
    #[serde(default = "default_size_percent")]
    #[schemars(range(min = 10, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "sizePercent is immutable"}]))]
    pub size_percent: i32,
    /// How many times the pool's size may be promised to volumes. May change at any time.
    #[schemars(range(min = 1, max = 100))]
    pub overprovision_ratio: i32,
    /// `Static`: use `chunkSize` (default 128Ki). `Host`: let lvm2's chunk_size_policy decide.
    #[serde(default)]
    pub chunk_size_calculation_policy: ChunkSizeCalculationPolicy,
    /// Thin pool chunk size, 64Ki to 1Gi; only with the Static policy. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub chunk_size: Option<Quantity>,
    /// `Host`: lvm2 sizes the metadata. `Static`: use `metadataSize` (default 1Gi).
    #[serde(default)]
    pub metadata_size_calculation_policy: MetadataSizeCalculationPolicy,
    /// Thin pool metadata size, 2Mi to 16Gi; only with the Static policy; may only grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub metadata_size: Option<Quantity>,
    /// Grow the pool when it fills, as lvm2's dmeventd would (it does not run in the pod): the
    /// node extends the pool's data or metadata once its use crosses `thresholdPercent`, while
    /// the volume group has free extents, up to `maxSizePercent` of the volume group. Unset: the
    /// pool keeps its size (LVMS's behaviour). May change at any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_extend: Option<ThinPoolAutoExtend>,
}

fn default_size_percent() -> i32 {
    90
}

/// When and how far a thin pool grows by itself. Every field has a default, so `autoExtend: {}`
/// turns it on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThinPoolAutoExtend {
    /// Extend when the pool's data or metadata use reaches this percentage, 50 to 95 (default
    /// 70: below the 75 % of the usage alerts). lvm2 accepts no threshold under 50 either.
    #[serde(default = "default_threshold_percent")]
    #[schemars(range(min = 50, max = 95))]
    pub threshold_percent: i32,
    /// Each extension adds this percentage of the volume group to the pool's data, 1 to 50
    /// (default 10); more steps at once when one would not bring the use back under the
    /// threshold. Metadata grows by this percentage of its own size.
    #[serde(default = "default_step_percent")]
    #[schemars(range(min = 1, max = 50))]
    pub step_percent: i32,
    /// The pool's data never grows beyond this percentage of the volume group, 11 to 100
    /// (default 100); above `sizePercent`.
    #[serde(default = "default_max_size_percent")]
    #[schemars(range(min = 11, max = 100))]
    pub max_size_percent: i32,
}

impl Default for ThinPoolAutoExtend {
    fn default() -> Self {
        Self {
            threshold_percent: default_threshold_percent(),
            step_percent: default_step_percent(),
            max_size_percent: default_max_size_percent(),
        }
    }
}

fn default_threshold_percent() -> i32 {
    70
}

fn default_step_percent() -> i32 {
    10
}

fn default_max_size_percent() -> i32 {
    100
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ChunkSizeCalculationPolicy {
    Host,
    #[default]
    Static,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MetadataSizeCalculationPolicy {
    #[default]
    Host,
    Static,
}

/// Options copied into the class's StorageClass `lvms-<name>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageClassOptions {
    /// What happens to a volume when its claim is deleted. Immutable.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "reclaimPolicy is immutable"}]))]
    pub reclaim_policy: ReclaimPolicy,
    /// When a volume is bound and provisioned. Immutable.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "volumeBindingMode is immutable"}]))]
    pub volume_binding_mode: VolumeBindingMode,
    /// Extra StorageClass parameters (at most 16). Immutable; cannot override the device class
    /// or the filesystem type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "additionalParameters is immutable"},
        {
            "rule": "!('topolvm.io/device-class' in self) && !('csi.storage.k8s.io/fstype' in self)",
            "message": "additionalParameters cannot set topolvm.io/device-class or csi.storage.k8s.io/fstype: they come from the device class",
        },
        {
            // The key of an encrypted volume comes from the node-publish Secret; without one
            // every publish would fail, so the class is refused up front.
            "rule": "!('lvms.topolvm.io/encryption' in self) || self['lvms.topolvm.io/encryption'] == 'none' || (self['lvms.topolvm.io/encryption'] == 'luks2' && 'csi.storage.k8s.io/node-publish-secret-name' in self && 'csi.storage.k8s.io/node-publish-secret-namespace' in self)",
            "message": "additionalParameters[lvms.topolvm.io/encryption] must be luks2 or none, and luks2 needs csi.storage.k8s.io/node-publish-secret-name and csi.storage.k8s.io/node-publish-secret-namespace: the Secret holding each volume's key",
        },
    ]))]
    pub additional_parameters: BTreeMap<String, String>,
    /// Extra StorageClass labels (at most 16). May change; cannot set the app.kubernetes.io
    /// labels the operator manages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!('app.kubernetes.io/name' in self) && !('app.kubernetes.io/part-of' in self) && !('app.kubernetes.io/managed-by' in self) && !('app.kubernetes.io/component' in self)",
        "message": "additionalLabels cannot set app.kubernetes.io/name, part-of, managed-by or component: the operator manages them",
    }]))]
    pub additional_labels: BTreeMap<String, String>,
    /// StorageClass `mountOptions`: passed to mount for every filesystem volume of the class
    /// (each checked against the node's allow-list). May change; applies to later mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("items" = {"type": "string", "maxLength": 256}))]
    pub mount_options: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    #[default]
    Delete,
    Retain,
}

impl ReclaimPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "Delete",
            Self::Retain => "Retain",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeBindingMode {
    #[default]
    WaitForFirstConsumer,
    Immediate,
}

impl VolumeBindingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WaitForFirstConsumer => "WaitForFirstConsumer",
            Self::Immediate => "Immediate",
        }
    }
}

/// Observed state, aggregated by the operator from every node's report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LVMClusterStatus {
    /// True when every selected node reports every class Ready.
    #[serde(default)]
    pub ready: bool,
    /// Progressing, Ready, Failed, Degraded or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LVMStateType>,
    /// Per class, per node: the volume group's status, devices used and devices excluded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_class_statuses: Vec<DeviceClassStatus>,
    /// ResourcesAvailable and VolumeGroupsReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl DeviceClass {
    /// The StorageClass (and VolumeSnapshotClass) name LVMS uses for this class.
    pub fn storage_class_name(&self) -> String {
        format!("{}{}", crate::names::STORAGE_CLASS_PREFIX, self.name)
    }

    pub fn is_thin(&self) -> bool {
        self.thin_pool_config.is_some()
    }

    pub fn is_raw(&self) -> bool {
        self.raw_devices.is_some()
    }

    pub fn is_raid(&self) -> bool {
        self.raid_config.is_some()
    }

    /// Whether wiping was requested for explicit paths (the only case in which it is honoured).
    pub fn force_wipe(&self) -> bool {
        self.device_selector.as_ref().is_some_and(|s| {
            s.force_wipe_devices_and_destroy_all_data == Some(true)
                && s.paths.as_ref().is_some_and(|p| !p.is_empty())
        })
    }
}

impl LVMClusterSpec {
    pub fn device_class(&self, name: &str) -> Option<&DeviceClass> {
        self.storage.device_classes.iter().find(|c| c.name == name)
    }

    pub fn default_device_class(&self) -> Option<&DeviceClass> {
        self.storage.device_classes.iter().find(|c| c.default)
    }
}

/// Bytes of a Kubernetes quantity string ("128Ki", "1Gi", "500M", "1048576"); `None` when it is
/// not a whole, non-negative number of bytes.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    match num.split_once('.') {
        None => num.parse::<u64>().ok()?.checked_mul(mult),
        Some((whole, frac)) => {
            // Exact decimal arithmetic: "1.5Gi" is 1610612736 bytes; fractions of a byte are refused.
            let scale = 10u128.checked_pow(frac.len() as u32)?;
            let n: u128 = format!("{whole}{frac}").parse().ok()?;
            let total = n.checked_mul(mult as u128)?;
            (total % scale == 0)
                .then(|| u64::try_from(total / scale).ok())
                .flatten()
        }
    }
}

#[cfg(test)]
mod quantity_tests {
    use super::quantity_bytes;

    #[test]
    fn binary_decimal_and_plain() {
        assert_eq!(quantity_bytes("128Ki"), Some(131072));
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("500M"), Some(500_000_000));
        assert_eq!(quantity_bytes("1048576"), Some(1048576));
        assert_eq!(quantity_bytes("1.5Gi"), Some(1610612736));
        assert_eq!(quantity_bytes("0.5"), None, "half a byte");
        assert_eq!(quantity_bytes("1Zi"), None);
        assert_eq!(quantity_bytes("-1Gi"), None);
        assert_eq!(quantity_bytes("16Ei"), None, "overflows u64");
    }
}
