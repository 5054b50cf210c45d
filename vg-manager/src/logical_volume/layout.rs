//! A thick volume's own layout (`spec.layout`, from its PVC): whether this node's volume group
//! can make it, and with how much room. Only the node knows how many physical volumes its
//! volume group has (the controller sees one free-space figure per class), so a layout the VG
//! cannot make is refused here, as InvalidArgument with the reason, which the controller returns
//! from CreateVolume and records on the PVC.

use lvm::Report;
use lvms_api::logical_volume::{LayoutType, VolumeLayout};
use lvms_api::raid::DEFAULT_STRIPE_SIZE;
use lvms_api::{RAIDType, RaidLayout};

use super::code;

/// How lvcreate makes the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Linear,
    /// `--stripes N` (lvm2's default stripe size, 64 KiB).
    Striped(u32),
    /// `--type raid1 --mirrors 1`.
    Mirror(RaidLayout),
}

/// lvm2 raid1 with one extra copy, as [`Shape::Mirror`] makes it.
pub const MIRROR: RaidLayout = RaidLayout {
    raid_type: RAIDType::Raid1,
    mirrors: 1,
    stripes: 1,
    stripe_size: None,
};

/// lvcreate's stripe size for striped volumes (lvm2's own default).
pub const STRIPE_SIZE: u64 = DEFAULT_STRIPE_SIZE;

/// The shape of a new volume of `size` bytes with `layout` in volume group `vg` of `report`, or
/// the status code and message that refuse it: InvalidArgument when the VG has too few present
/// physical volumes for the layout whatever their room (a retry cannot help), ResourceExhausted
/// when they lack the room (another node, or later, may have it).
pub fn shape(
    layout: Option<&VolumeLayout>,
    report: &Report,
    vg: &str,
    node: &str,
    size: u64,
) -> Result<Shape, (u32, String)> {
    let Some(l) = layout.filter(|l| l.layout_type != LayoutType::Linear) else {
        return Ok(Shape::Linear);
    };
    let free: Vec<u64> = report
        .pvs_of(vg)
        .filter(|p| !p.missing)
        .map(|p| p.free)
        .collect();
    let pvs = free.len() as u32;
    let extent = report.vg(vg).map_or(0, |v| v.extent_size).max(1);
    let invalid = |m: String| Err((code::INVALID_ARGUMENT, m));
    match l.layout_type {
        LayoutType::Linear => Ok(Shape::Linear),
        LayoutType::Mirror => {
            if pvs < 2 {
                return invalid(format!(
                    "the mirror layout needs 2 physical volumes (one per copy); volume group {vg} on node {node} has {pvs}"
                ));
            }
            let room = MIRROR.usable(&free, extent);
            if size > room {
                return Err((
                    code::RESOURCE_EXHAUSTED,
                    format!(
                        "a mirror of {size} bytes needs that much and one metadata extent on each of two physical volumes; volume group {vg} on node {node} has room for {room}"
                    ),
                ));
            }
            Ok(Shape::Mirror(MIRROR))
        }
        LayoutType::Striped => {
            if pvs < 2 {
                return invalid(format!(
                    "the striped layout needs at least 2 physical volumes; volume group {vg} on node {node} has {pvs}"
                ));
            }
            let stripes = match l.stripes {
                None => pvs,
                Some(n) if n < 2 => {
                    return invalid(format!("spec.layout.stripes {n}: at least 2"));
                }
                Some(n) if n as u32 > pvs => {
                    return invalid(format!(
                        "{n} stripes asked; volume group {vg} on node {node} has {pvs} physical volumes"
                    ));
                }
                Some(n) => n as u32,
            };
            let room = striped_room(&free, stripes, extent);
            if size > room {
                return Err((
                    code::RESOURCE_EXHAUSTED,
                    format!(
                        "a volume of {size} bytes striped over {stripes} physical volumes needs a share on each; volume group {vg} on node {node} has room for {room}"
                    ),
                ));
            }
            Ok(Shape::Striped(stripes))
        }
    }
}

/// The largest volume striped over `stripes` of the PVs with `free` bytes: each stripe takes the
/// same whole extents from its own PV, so the `stripes`-th roomiest PV caps them all.
fn striped_room(free: &[u64], stripes: u32, extent: u64) -> u64 {
    let n = stripes as usize;
    if n == 0 || free.len() < n {
        return 0;
    }
    let mut f = free.to_vec();
    f.sort_unstable_by(|a, b| b.cmp(a));
    (f[n - 1] / extent * extent).saturating_mul(stripes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvm::report::{PhysicalVolume, VolumeGroup};

    const E: u64 = 4 << 20;
    const GIB: u64 = 1 << 30;

    fn report(pv_free: &[u64]) -> Report {
        Report {
            vgs: vec![VolumeGroup {
                name: "vg1".into(),
                extent_size: E,
                free: pv_free.iter().sum(),
                ..Default::default()
            }],
            pvs: pv_free
                .iter()
                .enumerate()
                .map(|(i, f)| PhysicalVolume {
                    name: format!("/dev/vd{i}"),
                    vg_name: "vg1".into(),
                    free: *f,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn l(t: LayoutType, stripes: Option<i32>) -> VolumeLayout {
        VolumeLayout {
            layout_type: t,
            stripes,
        }
    }

    fn refused(r: Result<Shape, (u32, String)>) -> (u32, String) {
        r.expect_err("refused")
    }

    #[test]
    fn linear_needs_nothing() {
        assert_eq!(
            shape(None, &report(&[GIB]), "vg1", "n", GIB),
            Ok(Shape::Linear)
        );
        let linear = l(LayoutType::Linear, None);
        assert_eq!(
            shape(Some(&linear), &report(&[]), "vg1", "n", GIB),
            Ok(Shape::Linear)
        );
    }

    #[test]
    fn a_mirror_needs_two_pvs_with_room_for_a_copy_each() {
        let m = l(LayoutType::Mirror, None);
        let (c, msg) = refused(shape(Some(&m), &report(&[10 * GIB]), "vg1", "node-a", GIB));
        assert_eq!(c, code::INVALID_ARGUMENT);
        assert_eq!(
            msg,
            "the mirror layout needs 2 physical volumes (one per copy); volume group vg1 on node node-a has 1"
        );
        let r = report(&[2 * GIB, GIB + E]);
        assert_eq!(
            shape(Some(&m), &r, "vg1", "n", GIB),
            Ok(Shape::Mirror(MIRROR))
        );
        let (c, msg) = refused(shape(Some(&m), &report(&[2 * GIB, GIB]), "vg1", "n", GIB));
        assert_eq!(
            c,
            code::RESOURCE_EXHAUSTED,
            "the metadata extent does not fit beside the copy"
        );
        assert!(msg.contains(&format!("has room for {}", GIB - E)), "{msg}");
        let mut missing = report(&[2 * GIB, 2 * GIB]);
        missing.pvs[1].missing = true;
        assert_eq!(
            refused(shape(Some(&m), &missing, "vg1", "n", GIB)).0,
            code::INVALID_ARGUMENT,
            "a missing PV holds no copy"
        );
    }

    #[test]
    fn stripes_go_over_every_pv_unless_counted() {
        let all = l(LayoutType::Striped, None);
        let r = report(&[GIB, GIB, GIB]);
        assert_eq!(
            shape(Some(&all), &r, "vg1", "n", GIB),
            Ok(Shape::Striped(3))
        );
        let two = l(LayoutType::Striped, Some(2));
        assert_eq!(
            shape(Some(&two), &r, "vg1", "n", GIB),
            Ok(Shape::Striped(2))
        );
        let four = l(LayoutType::Striped, Some(4));
        let (c, msg) = refused(shape(Some(&four), &r, "vg1", "node-a", GIB));
        assert_eq!(c, code::INVALID_ARGUMENT);
        assert_eq!(
            msg,
            "4 stripes asked; volume group vg1 on node node-a has 3 physical volumes"
        );
        let (c, msg) = refused(shape(Some(&all), &report(&[GIB]), "vg1", "node-a", GIB));
        assert_eq!(c, code::INVALID_ARGUMENT);
        assert!(
            msg.starts_with("the striped layout needs at least 2 physical volumes"),
            "{msg}"
        );
        // Each stripe takes an equal share: the smallest of the PVs used caps the volume.
        let uneven = report(&[4 * GIB, GIB, GIB]);
        assert_eq!(
            shape(Some(&two), &uneven, "vg1", "n", 2 * GIB),
            Ok(Shape::Striped(2)),
            "the two roomiest"
        );
        let (c, msg) = refused(shape(Some(&all), &uneven, "vg1", "n", 4 * GIB));
        assert_eq!(c, code::RESOURCE_EXHAUSTED);
        assert!(msg.contains(&format!("has room for {}", 3 * GIB)), "{msg}");
    }
}
