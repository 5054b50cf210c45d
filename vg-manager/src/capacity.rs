//! Free capacity per device class, as the scheduler must see it (Node annotation
//! `capacity.topolvm.io/<class>` and the topolvm_* gauges).

use lvm::Report;

/// What a volume group of one class looks like, for capacity and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClassUsage {
    pub vg_size: u64,
    pub vg_free: u64,
    /// Thin classes only.
    pub thin: Option<ThinUsage>,
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
    pub fn available(&self) -> u64 {
        match &self.thin {
            Some(t) => t
                .pool_size
                .saturating_mul(t.overprovision_ratio)
                .saturating_sub(t.virtual_used),
            None => self.vg_free,
        }
    }
}

/// Usage of class `vg` from one report; `None` when the VG (or its pool) does not exist yet.
pub fn usage(report: &Report, vg: &str, thin_pool: Option<(&str, u64)>) -> Option<ClassUsage> {
    let v = report.vg(vg)?;
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

    #[test]
    fn thin_is_ratio_times_pool_minus_promised() {
        let u = usage(&report(), "vg1", Some(("pool", 10))).unwrap();
        assert_eq!(u.available(), 9000 - 1500);
        let tight = usage(&report(), "vg1", Some(("pool", 1))).unwrap();
        assert_eq!(
            tight.available(),
            0,
            "overcommitted pools report zero, never wrap"
        );
    }

    #[test]
    fn thick_is_vg_free_and_missing_is_none() {
        assert_eq!(usage(&report(), "vg1", None).unwrap().available(), 100);
        assert!(usage(&report(), "vg2", None).is_none());
        assert!(usage(&report(), "vg1", Some(("nopool", 2))).is_none());
    }
}
