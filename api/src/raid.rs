//! LVMS 2026's per-class device discovery policy and native LVM RAID (`raidConfig`): the types,
//! the CEL rules that fit the API server's budget, and the arithmetic both the schema and the node
//! agent use (how many devices a level needs, how much of the raw space it can give to data).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::lvmcluster::{MAX_PATHS, quantity_bytes};
use crate::schema::quantity_schema;

/// How a device class without explicit paths finds its disks after its volume group exists.
/// Unset: Static for a volume group this agent creates, Dynamic for one that already existed
/// (a VG adopted from LVMS keeps growing as it did there).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeviceDiscoveryPolicy {
    /// The devices eligible when the volume group is created; later ones are excluded.
    Static,
    /// Every eligible device, also those that appear later: they extend the VG and its pool.
    Dynamic,
}

/// The policy in effect on one node, as its status reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DeviceDiscoveryPolicyStatus {
    /// The class names its devices (paths / optionalPaths): the policy does not apply.
    Preconfigured,
    RuntimeStatic,
    RuntimeDynamic,
}

/// The RAID levels LVM's dm-raid offers that LVMS supports (raid0 has no redundancy).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RAIDType {
    #[serde(rename = "raid1")]
    Raid1,
    #[serde(rename = "raid4")]
    Raid4,
    #[serde(rename = "raid5")]
    Raid5,
    #[serde(rename = "raid6")]
    Raid6,
    #[serde(rename = "raid10")]
    Raid10,
}

impl RAIDType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raid1 => "raid1",
            Self::Raid4 => "raid4",
            Self::Raid5 => "raid5",
            Self::Raid6 => "raid6",
            Self::Raid10 => "raid10",
        }
    }

    /// Devices that hold parity rather than data, per stripe (raid4/5: 1, raid6: 2).
    pub fn parity(self) -> u32 {
        match self {
            Self::Raid4 | Self::Raid5 => 1,
            Self::Raid6 => 2,
            Self::Raid1 | Self::Raid10 => 0,
        }
    }

    /// The fewest stripes LVM accepts for the level (and the default the schema assumes).
    pub fn min_stripes(self) -> u32 {
        match self {
            Self::Raid6 => 3,
            _ => 2,
        }
    }

    fn mirrored(self) -> bool {
        matches!(self, Self::Raid1 | Self::Raid10)
    }

    fn striped(self) -> bool {
        !matches!(self, Self::Raid1)
    }
}

/// The largest stripe size accepted; LVM itself caps a stripe at the extent size.
pub const MAX_STRIPE_SIZE: u64 = 1 << 30;
pub const MIN_STRIPE_SIZE: u64 = 4 << 10;
/// LVMS's stripe size when none is given.
pub const DEFAULT_STRIPE_SIZE: u64 = 64 << 10;

/// A thick class whose volumes are LVM RAID logical volumes (`lvcreate --type raidN`). Immutable:
/// existing volumes keep the layout they were made with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = raid_rules()))]
pub struct RAIDConfig {
    /// The RAID level.
    #[serde(rename = "type")]
    pub raid_type: RAIDType,
    /// Extra copies of the data, raid1 and raid10 only (raid10: 1, all lvm2 makes). Default 1
    /// (two copies in all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_PATHS - 1))]
    pub mirrors: Option<i32>,
    /// Data stripes (parity devices not counted), raid4/5/6/10 only. Default: every device of
    /// the node's volume group that the level can use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = MAX_PATHS))]
    pub stripes: Option<i32>,
    /// Bytes written to one device before the next, raid4/5/6/10 only: a power of two from 4Ki
    /// to 1Gi. Default 64Ki.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub stripe_size: Option<Quantity>,
}

/// The CEL of the powers of two a stripe size may be, as ints.
fn stripe_sizes() -> String {
    let sizes: Vec<String> = (12..=30).map(|b| (1u64 << b).to_string()).collect();
    format!("[{}]", sizes.join(", "))
}

/// Rules on the RAID config itself (so they hold in LVMCluster and LVMVolumeGroup alike). As
/// with the thin pool's quantities, the stripe size is read from the parent object: a rule on
/// an int-or-string field itself pays a whole-request traversal for `type(self)`.
fn raid_rules() -> Vec<Value> {
    vec![
        json!({
            "rule": "self.type in ['raid1', 'raid10'] || !has(self.mirrors)",
            "message": "mirrors is only valid for raid1 and raid10",
            "fieldPath": ".mirrors",
        }),
        json!({
            "rule": "self.type != 'raid1' || !has(self.stripes)",
            "message": "stripes is only valid for raid4, raid5, raid6, and raid10",
            "fieldPath": ".stripes",
        }),
        json!({
            "rule": "self.type != 'raid1' || !has(self.stripeSize)",
            "message": "stripeSize is only valid for raid4, raid5, raid6, and raid10",
            "fieldPath": ".stripeSize",
        }),
        // lvm2 (2.03) refuses anything else: "RAID10 currently supports only 2-way mirroring".
        json!({
            "rule": "self.type != 'raid10' || !has(self.mirrors) || self.mirrors == 1",
            "message": "raid10 supports only mirrors 1 (two copies of each stripe): lvm2's raid10 is 2-way",
            "fieldPath": ".mirrors",
        }),
        json!({
            "rule": "self.type != 'raid6' || !has(self.stripes) || self.stripes >= 3",
            "message": "raid6 needs at least 3 stripes (5 devices with its two parity devices)",
            "fieldPath": ".stripes",
        }),
        json!({
            "rule": format!(
                "!has(self.stripeSize) || (type(self.stripeSize) == int ? self.stripeSize in {sizes} : [quantity(self.stripeSize)].all(q, q.isInteger() && q.asInteger() in {sizes}))",
                sizes = stripe_sizes()
            ),
            "message": "stripeSize must be a power of 2 from 4Ki to 1Gi (e.g., 64Ki, 128Ki, 256Ki, 512Ki)",
            "fieldPath": ".stripeSize",
        }),
        json!({
            "rule": "self == oldSelf",
            "message": "raidConfig is immutable after creation",
        }),
    ]
}

/// CEL for `field` (an optional int of `raidConfig`), or `default` when unset.
fn int_or(field: &str, default: u32) -> String {
    format!("(has(self.raidConfig.{field}) ? self.raidConfig.{field} : {default})")
}

/// Rules of a device class about its RAID config and its devices (LVMCluster only: the operator
/// writes the LVMVolumeGroups from a spec that passed them).
pub fn device_class_rules() -> Vec<Value> {
    let listed = "((has(self.deviceSelector.paths) ? self.deviceSelector.paths.size() : 0) + (has(self.deviceSelector.optionalPaths) ? self.deviceSelector.optionalPaths.size() : 0))";
    let mirrors = int_or("mirrors", 1);
    let needed = format!(
        "(self.raidConfig.type == 'raid1' ? {mirrors} + 1 : self.raidConfig.type == 'raid10' ? {} * ({mirrors} + 1) : self.raidConfig.type == 'raid6' ? {} + 2 : {} + 1)",
        int_or("stripes", 2),
        int_or("stripes", 3),
        int_or("stripes", 2),
    );
    vec![
        json!({
            "rule": "!(has(self.raidConfig) && has(self.thinPoolConfig))",
            "message": "raidConfig and thinPoolConfig are mutually exclusive",
            "fieldPath": ".raidConfig",
        }),
        json!({
            "rule": "!has(self.raidConfig) || (has(self.deviceSelector) && (has(self.deviceSelector.paths) || has(self.deviceSelector.optionalPaths)))",
            "message": "at least one of paths or optionalPaths is required when raidConfig is set",
            "fieldPath": ".deviceSelector",
        }),
        json!({
            "rule": format!("!has(self.raidConfig) || !has(self.deviceSelector) || {listed} >= {needed}"),
            "message": "deviceSelector lists too few devices for raidConfig: raid1 needs mirrors+1 (2 by default), raid4 and raid5 stripes+1 (3), raid6 stripes+2 (5), raid10 stripes×(mirrors+1) (4)",
            "fieldPath": ".deviceSelector",
        }),
        // With optionalPaths the node's device count is known on the node only; it checks there.
        json!({
            "rule": format!(
                "!has(self.raidConfig) || self.raidConfig.type != 'raid10' || !has(self.deviceSelector) || has(self.deviceSelector.optionalPaths) || !has(self.deviceSelector.paths) || self.deviceSelector.paths.size() % ({mirrors} + 1) == 0"
            ),
            "message": "raid10 requires a device count divisible by mirrors+1 (an even number with the default mirrors 1)",
            "fieldPath": ".deviceSelector.paths",
        }),
        json!({
            "rule": "has(self.raidConfig) == has(oldSelf.raidConfig)",
            "message": "raidConfig cannot be added to or removed from an existing device class",
            "fieldPath": ".raidConfig",
        }),
    ]
}

impl RAIDConfig {
    pub fn mirrors(&self) -> u32 {
        self.mirrors.map_or(1, |m| m.max(1) as u32)
    }

    /// The stripe size in bytes (LVMS's 64Ki when unset or unreadable).
    pub fn stripe_size(&self) -> u64 {
        self.stripe_size
            .as_ref()
            .and_then(|q| quantity_bytes(&q.0))
            .unwrap_or(DEFAULT_STRIPE_SIZE)
    }

    /// The fewest devices the level can be built on (LVMS's MinDeviceCount).
    pub fn min_devices(&self) -> u32 {
        let t = self.raid_type;
        let stripes = self.stripes.map_or(t.min_stripes(), |s| s as u32);
        match t {
            RAIDType::Raid1 => self.mirrors() + 1,
            RAIDType::Raid10 => stripes * (self.mirrors() + 1),
            _ => stripes + t.parity(),
        }
    }

    /// Why a volume group of `devices` physical volumes cannot hold this level; `None` when it can.
    /// Worded as LVMS words it.
    pub fn check_devices(&self, devices: u32) -> Option<String> {
        let t = self.raid_type.as_str();
        if self.raid_type == RAIDType::Raid10 && self.mirrors() != 1 {
            return Some("raid10 supports only mirrors 1: lvm2's raid10 is 2-way".into());
        }
        let min = self.min_devices();
        if devices < min {
            return Some(format!(
                "{t} requires at least {min} devices, got {devices}"
            ));
        }
        let copies = self.mirrors() + 1;
        if self.raid_type == RAIDType::Raid10 && !devices.is_multiple_of(copies) {
            return Some(format!(
                "raid10 with mirrors={} requires a device count divisible by {copies}, got {devices}",
                self.mirrors()
            ));
        }
        None
    }

    /// How a volume of this class is laid out on a volume group of `devices` physical volumes:
    /// the stripes asked for, or as many as the devices allow.
    pub fn layout(&self, devices: u32) -> RaidLayout {
        let t = self.raid_type;
        let stripes = match t {
            RAIDType::Raid1 => 1,
            RAIDType::Raid10 => self
                .stripes
                .map_or(devices / (self.mirrors() + 1), |s| s as u32),
            _ => self
                .stripes
                .map_or(devices.saturating_sub(t.parity()), |s| s as u32),
        }
        .max(1);
        RaidLayout {
            raid_type: t,
            mirrors: if t.mirrored() { self.mirrors() } else { 0 },
            stripes,
            stripe_size: t.striped().then(|| self.stripe_size()),
        }
    }
}

/// One RAID volume's shape: what `lvcreate` is given and what the capacity math divides by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaidLayout {
    pub raid_type: RAIDType,
    /// Extra copies (raid1/raid10), else 0.
    pub mirrors: u32,
    /// Data stripes (1 for raid1).
    pub stripes: u32,
    /// raid4/5/6/10 only.
    pub stripe_size: Option<u64>,
}

impl RaidLayout {
    /// Sub-volumes (images) of one RAID volume, each on its own physical volume.
    pub fn images(&self) -> u32 {
        match self.raid_type {
            RAIDType::Raid1 => self.mirrors + 1,
            RAIDType::Raid10 => self.stripes * (self.mirrors + 1),
            t => self.stripes + t.parity(),
        }
    }

    /// Images whose loss the volume survives: every copy but one for raid1, the parity devices
    /// for raid4/5/6, and for raid10 one per mirror set (more only by luck of placement).
    pub fn tolerated(&self) -> u32 {
        match self.raid_type {
            RAIDType::Raid1 | RAIDType::Raid10 => self.mirrors,
            t => t.parity(),
        }
    }

    /// Bytes of data a volume can hold, given the free bytes of each physical volume and the
    /// extent size: every image needs its own PV, with one extent of it for the image's metadata
    /// sub-volume, so the `images()` PVs with most room decide, and the smallest of them caps
    /// every image. Rounded down to whole extents per stripe. 0 when there are too few PVs.
    pub fn usable(&self, pv_free: &[u64], extent: u64) -> u64 {
        let n = self.images() as usize;
        if n == 0 || pv_free.len() < n || extent == 0 {
            return 0;
        }
        let mut free = pv_free.to_vec();
        free.sort_unstable_by(|a, b| b.cmp(a));
        let per_image = free[n - 1].saturating_sub(extent) / extent * extent;
        per_image.saturating_mul(self.stripes as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raid(t: RAIDType, mirrors: Option<i32>, stripes: Option<i32>) -> RAIDConfig {
        RAIDConfig {
            raid_type: t,
            mirrors,
            stripes,
            stripe_size: None,
        }
    }

    #[test]
    fn device_counts_per_level() {
        use RAIDType::*;
        let cases = [
            (raid(Raid1, None, None), 2),
            (raid(Raid1, Some(2), None), 3),
            (raid(Raid4, None, None), 3),
            (raid(Raid5, None, Some(4)), 5),
            (raid(Raid6, None, None), 5),
            (raid(Raid10, None, None), 4),
            (raid(Raid10, Some(1), Some(3)), 6),
        ];
        for (c, min) in cases {
            assert_eq!(c.min_devices(), min, "{c:?}");
            assert_eq!(c.check_devices(min), None, "{c:?}");
            assert_eq!(
                c.check_devices(min - 1),
                Some(format!(
                    "{} requires at least {min} devices, got {}",
                    c.raid_type.as_str(),
                    min - 1
                ))
            );
        }
        assert_eq!(
            raid(Raid10, None, None).check_devices(5).unwrap(),
            "raid10 with mirrors=1 requires a device count divisible by 2, got 5"
        );
        assert!(
            raid(Raid10, Some(2), None)
                .check_devices(6)
                .unwrap()
                .contains("only mirrors 1")
        );
    }

    #[test]
    fn layouts_use_every_device_unless_stripes_are_given() {
        use RAIDType::*;
        let l = raid(Raid5, None, None).layout(4);
        assert_eq!(
            (l.stripes, l.images(), l.tolerated(), l.stripe_size),
            (3, 4, 1, Some(DEFAULT_STRIPE_SIZE))
        );
        let l = raid(Raid6, None, Some(3)).layout(7);
        assert_eq!((l.stripes, l.images(), l.tolerated()), (3, 5, 2));
        let l = raid(Raid10, None, None).layout(6);
        assert_eq!((l.stripes, l.mirrors, l.images()), (3, 1, 6));
        let l = raid(Raid1, Some(2), None).layout(5);
        assert_eq!(
            (
                l.stripes,
                l.mirrors,
                l.images(),
                l.tolerated(),
                l.stripe_size
            ),
            (1, 2, 3, 2, None)
        );
    }

    #[test]
    fn usable_space_is_the_data_share_of_the_smallest_image() {
        use RAIDType::*;
        const E: u64 = 4 << 20;
        let gib = 1u64 << 30;
        // raid1 on two 1 GiB PVs: one copy's worth, less the metadata extent.
        let l = raid(Raid1, None, None).layout(2);
        assert_eq!(l.usable(&[gib, gib], E), gib - E);
        // raid5 on three: two stripes of data.
        let l = raid(Raid5, None, None).layout(3);
        assert_eq!(l.usable(&[gib, gib, gib], E), 2 * (gib - E));
        // The smallest image PV caps them all; a larger extra PV does not help.
        let l = raid(Raid1, None, None).layout(3);
        assert_eq!(l.usable(&[gib, 2 * gib, gib / 2], E), gib - E);
        // Too few PVs with room: nothing.
        let l = raid(Raid6, None, None).layout(5);
        assert_eq!(l.usable(&[gib; 4], E), 0);
        // Partial extents are not usable.
        let l = raid(Raid1, None, None).layout(2);
        assert_eq!(l.usable(&[E + E / 2, 3 * E], E), 0);
    }

    #[test]
    fn stripe_size_defaults_to_64ki() {
        let mut c = raid(RAIDType::Raid5, None, None);
        assert_eq!(c.stripe_size(), 64 << 10);
        c.stripe_size = Some(Quantity("256Ki".into()));
        assert_eq!(c.stripe_size(), 256 << 10);
    }
}
