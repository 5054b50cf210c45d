//! Free capacity per device class, as the scheduler must see it (Node annotation
//! `capacity.topolvm.io/<class>` and the topolvm_* gauges).

use lvm::Report;
use lvms_api::{LVMVolumeGroupSpec, RAIDConfig, RaidLayout};

/// What a volume group of one class looks like, for capacity and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassUsage {
    pub vg_size: u64,
    pub vg_free: u64,
    /// Thin classes only.
    pub thin: Option<ThinUsage>,
    /// RAID classes only: the largest volume the level can still make (see
    /// [`lvms_api::RaidLayout::usable`]).
    pub raid_usable: Option<u64>,
    /// Physical volumes of the VG that are missing. lvm2 changes no VG that misses one ("Cannot
    /// change VG while PVs are missing"), so nothing can be provisioned until it is repaired.
    pub missing_pvs: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThinUsage {
    pub pool_size: u64,
    pub data_percent: f64,
    pub metadata_percent: f64,
    /// Sum of the virtual sizes of the pool's thin volumes.
    pub virtual_used: u64,
    pub overprovision_ratio: u64,
}

impl ClassUsage {
    /// Bytes that can still be provisioned: thin = ratio × pool − virtual size already promised
    /// (never negative); thick = the VG's free space.
    /// RAID = the data a new volume of the class's level can hold (free space divided by the
    /// level's overhead, as the PVs allow it).
    pub fn available(&self) -> u64 {
        if self.missing_pvs > 0 {
            return 0;
        }
        match (&self.thin, self.raid_usable) {
            (Some(t), _) => t
                .pool_size
                .saturating_mul(t.overprovision_ratio)
                .saturating_sub(t.virtual_used),
            (None, Some(raid)) => raid,
            (None, None) => self.vg_free,
        }
    }
}

/// How a new RAID volume of `raid` would be laid out in `vg` as it is now: over its present PVs.
pub fn raid_layout(report: &Report, vg: &str, raid: &RAIDConfig) -> RaidLayout {
    let present = report.pvs_of(vg).filter(|p| !p.missing).count();
    raid.layout(present as u32)
}

/// Usage of class `vg` from one report; `None` when the VG (or its pool) does not exist yet.
pub fn usage(report: &Report, vg: &str, class: &LVMVolumeGroupSpec) -> Option<ClassUsage> {
    let v = report.vg(vg)?;
    let thin_pool = class
        .thin_pool_config
        .as_ref()
        .map(|t| (t.name.as_str(), t.overprovision_ratio.max(1) as u64));
    let raid_usable = class.raid_config.as_ref().map(|raid| {
        let free: Vec<u64> = report
            .pvs_of(vg)
            .filter(|p| !p.missing)
            .map(|p| p.free)
            .collect();
        raid_layout(report, vg, raid).usable(&free, v.extent_size)
    });
    let thin = match thin_pool {
        None => None,
        Some((pool, ratio)) => {
            let p = report.lv(vg, pool).filter(|l| l.is_thin_pool())?;
            let virtual_used = report
                .lvs_of(vg)
                .filter(|l| l.is_thin_volume() && l.pool == pool)
                .map(|l| l.size)
                .sum();
            Some(ThinUsage {
                pool_size: p.size,
                data_percent: p.data_percent.unwrap_or(0.0),
                metadata_percent: p.metadata_percent.unwrap_or(0.0),
                virtual_used,
                overprovision_ratio: ratio,
            })
        }
    };
    Some(ClassUsage {
        vg_size: v.size,
        vg_free: v.free,
        thin,
        raid_usable,
        missing_pvs: v.missing_pv_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvm::report::{LogicalVolume, VolumeGroup};

    fn lv(name: &str, attr: &str, pool: &str, size: u64) -> LogicalVolume {
        LogicalVolume {
            name: name.into(),
            vg_name: "vg1".into(),
            attr: attr.into(),
            pool: pool.into(),
            size,
            ..Default::default()
        }
    }

    fn report() -> Report {
        Report {
            vgs: vec![VolumeGroup {
                name: "vg1".into(),
                size: 1000,
                free: 100,
                ..Default::default()
            }],
            lvs: vec![
                lv("pool", "twi-aotz--", "", 900),
                lv("a", "Vwi-a-tz--", "pool", 1000),
                lv("b", "Vwi-a-tz--", "pool", 500),
                lv("c", "Vwi-a-tz--", "other", 7000),
            ],
            ..Default::default()
        }
    }

    fn thin(pool: &str, ratio: i32) -> LVMVolumeGroupSpec {
        LVMVolumeGroupSpec {
            thin_pool_config: Some(lvms_api::ThinPoolConfig {
                name: pool.into(),
                overprovision_ratio: ratio,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn thin_is_ratio_times_pool_minus_promised() {
        let u = usage(&report(), "vg1", &thin("pool", 10)).unwrap();
        assert_eq!(u.available(), 9000 - 1500);
        let tight = usage(&report(), "vg1", &thin("pool", 1)).unwrap();
        assert_eq!(
            tight.available(),
            0,
            "overcommitted pools report zero, never wrap"
        );
    }

    #[test]
    fn thick_is_vg_free_and_missing_is_none() {
        let thick = LVMVolumeGroupSpec::default();
        assert_eq!(usage(&report(), "vg1", &thick).unwrap().available(), 100);
        assert!(usage(&report(), "vg2", &thick).is_none());
        assert!(usage(&report(), "vg1", &thin("nopool", 2)).is_none());
    }

    #[test]
    fn raid_is_what_the_level_can_make_on_the_present_pvs() {
        use lvm::report::PhysicalVolume;
        const E: u64 = 4 << 20;
        let pv = |name: &str, free: u64, missing: bool| PhysicalVolume {
            name: name.into(),
            vg_name: "vg1".into(),
            free,
            missing,
            ..Default::default()
        };
        let mut r = report();
        r.vgs[0].extent_size = E;
        r.vgs[0].free = 300 * E;
        r.pvs = vec![
            pv("/dev/a", 100 * E, false),
            pv("/dev/b", 100 * E, false),
            pv("/dev/c", 100 * E, false),
        ];
        let raid = |t, mirrors| LVMVolumeGroupSpec {
            raid_config: Some(RAIDConfig {
                raid_type: t,
                mirrors,
                stripes: None,
                stripe_size: None,
            }),
            ..Default::default()
        };
        use lvms_api::RAIDType::*;
        // raid5 over all three: two data stripes of 99 extents (one extent each for metadata).
        assert_eq!(
            usage(&r, "vg1", &raid(Raid5, None)).unwrap().available(),
            2 * 99 * E
        );
        // raid1 with two extra copies: one copy's worth, a third of the free space.
        assert_eq!(
            usage(&r, "vg1", &raid(Raid1, Some(2))).unwrap().available(),
            99 * E
        );
        // The layout counts the present PVs only.
        r.pvs[2].missing = true;
        let raid5 = raid(Raid5, None).raid_config.unwrap();
        assert_eq!(raid_layout(&r, "vg1", &raid5).stripes, 1);
        // And a VG that misses a PV takes no new volume at all: lvm2 refuses to change it.
        r.vgs[0].missing_pv_count = 1;
        for class in [
            raid(Raid1, None),
            LVMVolumeGroupSpec::default(),
            thin("pool", 10),
        ] {
            assert_eq!(usage(&r, "vg1", &class).unwrap().available(), 0);
        }
    }
}
