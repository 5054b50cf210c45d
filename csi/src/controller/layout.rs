//! Per-volume layout of thick volumes (as metal-stack's csi-lvm offers it): which layout a
//! CreateVolume asks for, from the PVC's annotations and the StorageClass's parameters, whether
//! its device class can have one, and what it costs in free space. Pure: the PVC is read by the
//! caller. Whether the volume group has the physical volumes for it is known on the node only,
//! which decides that before lvcreate.

use std::collections::{BTreeMap, HashMap};

use lvms_api::LVMVolumeGroup;
use lvms_api::logical_volume::{LayoutType, VolumeLayout};
use tonic::Status;

use crate::volume::ROUNDING;
use crate::{CSI_LVM_TYPE_ANNOTATION, LAYOUT_KEY, STRIPES_KEY};

/// The most stripes asked for (the schema's bound: lvm2 allows 128).
pub const MAX_STRIPES: i32 = 128;

/// A layout and where it was asked for, to name in errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    pub layout: VolumeLayout,
    /// "PVC ns/name annotation KEY" or "parameters[KEY]".
    pub from: String,
}

/// The PVC a CreateVolume is for (`--extra-create-metadata`), as far as layouts need it.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
}

fn layout_type(value: &str, from: &str) -> Result<LayoutType, Status> {
    LayoutType::parse(value.trim()).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{from}: {value:?} is not a layout (linear, striped or mirror)"
        ))
    })
}

/// The layout asked for: the PVC's `lvms.topolvm.io/layout`, else its csi-lvm annotation
/// `csi-lvm.metal-stack.io/type` (claims moved from csi-lvm keep their layout), else the
/// StorageClass parameter `lvms.topolvm.io/layout`; None when none of them says (linear). The
/// stripe count comes from the PVC's `lvms.topolvm.io/stripes`, else the StorageClass's.
pub fn requested(
    params: &HashMap<String, String>,
    claim: Option<Claim>,
) -> Result<Option<Requested>, Status> {
    let on_claim = |key: &str| {
        let c = claim?;
        let v = c.annotations.get(key).filter(|v| !v.trim().is_empty())?;
        Some((
            v.as_str(),
            format!("PVC {}/{} annotation {key}", c.namespace, c.name),
        ))
    };
    let in_params = |key: &str| {
        params
            .get(key)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.as_str(), format!("parameters[{key}]")))
    };
    let kind = on_claim(LAYOUT_KEY)
        .or_else(|| on_claim(CSI_LVM_TYPE_ANNOTATION))
        .or_else(|| in_params(LAYOUT_KEY));
    // The class's stripe count is a default for striped volumes only: a claim of the class that
    // asks for linear or mirror is not refused for it. A claim's own count on another layout is.
    let claim_stripes = on_claim(STRIPES_KEY);
    let Some((value, from)) = kind else {
        return match claim_stripes {
            Some((_, sfrom)) => Err(Status::invalid_argument(format!(
                "{sfrom}: stripes needs the striped layout ({LAYOUT_KEY}: striped)"
            ))),
            None => Ok(None),
        };
    };
    let t = layout_type(value, &from)?;
    let stripes = match (t, claim_stripes) {
        (LayoutType::Striped, claim) => claim.or_else(|| in_params(STRIPES_KEY)),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(Status::invalid_argument(format!(
                "{from} is {}: stripes are only for the striped layout",
                t.as_str()
            )));
        }
    };
    let stripes = match stripes {
        None => None,
        Some((v, sfrom)) => match v.trim().parse::<i32>() {
            Ok(n) if (2..=MAX_STRIPES).contains(&n) => Some(n),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{sfrom}: {v:?} is not a stripe count from 2 to {MAX_STRIPES}"
                )));
            }
        },
    };
    Ok(Some(Requested {
        layout: VolumeLayout {
            layout_type: t,
            stripes,
        },
        from,
    }))
}

/// The layout to write into a new LogicalVolume of `class`: None for linear (so the object is
/// exactly what TopoLVM would write). Thin and RAID classes have no per-volume layout: a thin
/// volume is placed by its pool, and a RAID class's volumes all have the class's level; asking
/// for linear there is no contradiction and is ignored.
pub fn for_class(
    req: Option<&Requested>,
    class: &LVMVolumeGroup,
) -> Result<Option<VolumeLayout>, Status> {
    let Some(r) = req.filter(|r| r.layout.layout_type != LayoutType::Linear) else {
        return Ok(None);
    };
    let t = r.layout.layout_type.as_str();
    let name = class.metadata.name.as_deref().unwrap_or_default();
    if class.spec.thin_pool_config.is_some() {
        return Err(Status::invalid_argument(format!(
            "{}: the {t} layout needs a thick device class, and {name} is thin (its volumes are placed by the thin pool)",
            r.from
        )));
    }
    if let Some(raid) = &class.spec.raid_config {
        return Err(Status::invalid_argument(format!(
            "{}: the {t} layout needs a plain thick device class, and {name} is a RAID class (every volume is {})",
            r.from,
            raid.raid_type.as_str()
        )));
    }
    Ok(Some(r.layout))
}

/// Free bytes a volume of `size` takes in its volume group: a mirror holds two copies, each with
/// a metadata sub-volume of one extent (4 MiB unless the VG says otherwise; the node checks the
/// exact figure before lvcreate).
pub fn footprint(size: u64, layout: Option<&VolumeLayout>) -> u64 {
    match layout.map(|l| l.layout_type) {
        Some(LayoutType::Mirror) => size.saturating_mul(2).saturating_add(2 * ROUNDING),
        _ => size,
    }
}

/// The largest volume of `layout` that `free` bytes of a volume group hold (the inverse of
/// [`footprint`]), for GetCapacity of a class whose StorageClass asks for a mirror.
pub fn largest(free: u64, layout: Option<LayoutType>) -> u64 {
    match layout {
        Some(LayoutType::Mirror) => free.saturating_sub(2 * ROUNDING) / 2 / ROUNDING * ROUNDING,
        _ => free,
    }
}

/// Free bytes per node, as volumes of `layout` see them: the controller's capacity listing, in
/// the units [`crate::controller::decide::choose_node`] compares the requested size with.
pub fn usable(
    free: &BTreeMap<String, u64>,
    layout: Option<&VolumeLayout>,
) -> BTreeMap<String, u64> {
    free.iter()
        .map(|(n, f)| (n.clone(), largest(*f, layout.map(|l| l.layout_type))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvms_api::{LVMVolumeGroupSpec, RAIDConfig, RAIDType, ThinPoolConfig};
    use tonic::Code;

    fn params(list: &[(&str, &str)]) -> HashMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ann(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn claim(a: &BTreeMap<String, String>) -> Option<Claim<'_>> {
        Some(Claim {
            namespace: "ns",
            name: "data",
            annotations: a,
        })
    }

    fn kind(p: &HashMap<String, String>, a: &BTreeMap<String, String>) -> Option<LayoutType> {
        requested(p, claim(a))
            .unwrap()
            .map(|r| r.layout.layout_type)
    }

    #[test]
    fn precedence_pvc_then_csi_lvm_then_class() {
        use LayoutType::*;
        let sc = params(&[(LAYOUT_KEY, "striped")]);
        let none = ann(&[]);
        assert_eq!(kind(&params(&[]), &none), None, "linear by default");
        assert_eq!(kind(&sc, &none), Some(Striped), "the class's default");
        let csi_lvm = ann(&[(CSI_LVM_TYPE_ANNOTATION, "mirror")]);
        assert_eq!(kind(&sc, &csi_lvm), Some(Mirror), "csi-lvm's annotation");
        let both = ann(&[(CSI_LVM_TYPE_ANNOTATION, "mirror"), (LAYOUT_KEY, "linear")]);
        assert_eq!(kind(&sc, &both), Some(Linear), "ours first");
        let blank = ann(&[(LAYOUT_KEY, " ")]);
        assert_eq!(
            kind(&sc, &blank),
            Some(Striped),
            "a blank annotation says nothing"
        );
        // Without --extra-create-metadata there is no claim: the class decides.
        assert_eq!(
            requested(&sc, None).unwrap().unwrap().from,
            "parameters[lvms.topolvm.io/layout]"
        );
    }

    #[test]
    fn stripes_and_bad_values_name_their_source() {
        let a = ann(&[(LAYOUT_KEY, "striped"), (STRIPES_KEY, "3")]);
        let r = requested(&params(&[]), claim(&a)).unwrap().unwrap();
        assert_eq!(r.layout.stripes, Some(3));
        assert_eq!(r.from, "PVC ns/data annotation lvms.topolvm.io/layout");
        let sc = params(&[(LAYOUT_KEY, "striped"), (STRIPES_KEY, "2")]);
        let r = requested(&sc, claim(&ann(&[]))).unwrap().unwrap();
        assert_eq!(r.layout.stripes, Some(2), "the class's stripe count");
        // A claim of that class that asks for another layout is not refused for the class's
        // count; its own count on another layout is.
        let linear = ann(&[(LAYOUT_KEY, "mirror")]);
        let r = requested(&sc, claim(&linear)).unwrap().unwrap();
        assert_eq!(
            (r.layout.layout_type, r.layout.stripes),
            (LayoutType::Mirror, None)
        );
        let own = ann(&[(LAYOUT_KEY, "mirror"), (STRIPES_KEY, "2")]);
        assert!(requested(&sc, claim(&own)).is_err());
        for (a, why) in [
            (
                ann(&[(LAYOUT_KEY, "raid5")]),
                "PVC ns/data annotation lvms.topolvm.io/layout: \"raid5\" is not a layout (linear, striped or mirror)",
            ),
            (
                ann(&[(LAYOUT_KEY, "striped"), (STRIPES_KEY, "1")]),
                "PVC ns/data annotation lvms.topolvm.io/stripes: \"1\" is not a stripe count from 2 to 128",
            ),
            (
                ann(&[(LAYOUT_KEY, "striped"), (STRIPES_KEY, "many")]),
                "is not a stripe count",
            ),
            (
                ann(&[(LAYOUT_KEY, "mirror"), (STRIPES_KEY, "2")]),
                "is mirror: stripes are only for the striped layout",
            ),
            (
                ann(&[(STRIPES_KEY, "2")]),
                "stripes needs the striped layout",
            ),
        ] {
            let e = requested(&params(&[]), claim(&a)).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains(why), "{}", e.message());
        }
    }

    fn class(thin: bool, raid: bool) -> LVMVolumeGroup {
        LVMVolumeGroup::new(
            "vg1",
            LVMVolumeGroupSpec {
                thin_pool_config: thin.then(|| ThinPoolConfig {
                    name: "pool".into(),
                    ..Default::default()
                }),
                raid_config: raid.then_some(RAIDConfig {
                    raid_type: RAIDType::Raid5,
                    mirrors: None,
                    stripes: None,
                    stripe_size: None,
                }),
                ..Default::default()
            },
        )
    }

    fn req(t: LayoutType) -> Requested {
        Requested {
            layout: VolumeLayout {
                layout_type: t,
                stripes: None,
            },
            from: "PVC ns/data annotation lvms.topolvm.io/layout".into(),
        }
    }

    #[test]
    fn only_plain_thick_classes_take_a_layout() {
        use LayoutType::*;
        let thick = class(false, false);
        assert_eq!(for_class(None, &thick).unwrap(), None);
        assert_eq!(
            for_class(Some(&req(Linear)), &thick).unwrap(),
            None,
            "linear is written as no layout, as TopoLVM writes it"
        );
        assert_eq!(
            for_class(Some(&req(Mirror)), &thick).unwrap(),
            Some(req(Mirror).layout)
        );
        let e = for_class(Some(&req(Striped)), &class(true, false)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("PVC ns/data annotation lvms.topolvm.io/layout: the striped layout needs a thick device class, and vg1 is thin"),
            "{}",
            e.message()
        );
        let e = for_class(Some(&req(Mirror)), &class(false, true)).unwrap_err();
        assert!(
            e.message()
                .contains("vg1 is a RAID class (every volume is raid5)")
        );
        for c in [class(true, false), class(false, true)] {
            assert_eq!(
                for_class(Some(&req(Linear)), &c).unwrap(),
                None,
                "linear is no contradiction"
            );
        }
    }

    #[test]
    fn a_mirror_costs_two_copies_and_their_metadata() {
        let mirror = req(LayoutType::Mirror).layout;
        let striped = req(LayoutType::Striped).layout;
        let gib = 1u64 << 30;
        assert_eq!(footprint(gib, Some(&mirror)), 2 * gib + 8 * (1 << 20));
        assert_eq!(footprint(gib, Some(&striped)), gib);
        assert_eq!(footprint(gib, None), gib);
        // What fits is the inverse, in whole extents, and never wraps.
        assert_eq!(
            largest(footprint(gib, Some(&mirror)), Some(LayoutType::Mirror)),
            gib
        );
        assert_eq!(largest(3, Some(LayoutType::Mirror)), 0);
        let free = BTreeMap::from([("a".to_string(), 10 * gib)]);
        assert_eq!(usable(&free, Some(&mirror))["a"], 5 * gib - 4 * (1 << 20));
        assert_eq!(usable(&free, None)["a"], 10 * gib);
    }
}
