//! ListVolumes, ControllerGetVolume and ListSnapshots, decided without I/O: which LogicalVolumes
//! are volumes and which snapshots, what each entry says, the volume's condition as its node
//! recorded it, and paging.
//!
//! Paging is by key, not by position: entries are sorted by their ID, and a token names the last
//! ID a page returned, so the next page starts after it whether or not it still exists. A volume
//! deleted between two pages shifts nothing (an index would skip the next one), the same token
//! always gives the same page while nothing changes, and any client sees one order. A token
//! carries a checksum of the ID it names, so a token this driver never issued (a typo, another
//! driver's) is ABORTED, as the spec wants for an invalid `starting_token`.

use std::collections::HashMap;

use lvms_api::LogicalVolume;
use tonic::Status;

use super::decide::{self, fnv1a64};
use super::node_topology;
use crate::pb::volume_content_source::{SnapshotSource, Type as Source, VolumeSource};
use crate::pb::{self, VolumeCondition, VolumeContentSource};

/// `status.code` the node writes when an LV it had made is gone (vg-manager's NOT_FOUND).
const NOT_FOUND: u32 = 5;

/// A snapshot is a LogicalVolume made read-only from a source (TopoLVM's contract); a clone or
/// a restore is made read-write from one and is a volume.
pub fn is_snapshot(lv: &LogicalVolume) -> bool {
    !lv.spec.source.is_empty() && lv.spec.access_type == "ro"
}

/// The node has made it: only then is there a volume (or a cut snapshot) to list. Before, the
/// CreateVolume or CreateSnapshot call that asked for it has not answered yet.
pub fn is_made(lv: &LogicalVolume) -> bool {
    lv.status.as_ref().is_some_and(|s| !s.volume_id.is_empty())
}

/// The volume's condition for the CO. The node's own check (`status.health`, written by its
/// agent on every pass) is the answer once there is one; before (an agent that predates the
/// check), an LV the node's reconciler found gone (`code` NOT_FOUND after it had reported a
/// volume ID) is abnormal. Any other failure (a growth the pool could not take) concerns a
/// request, not the data, and the volume stays usable: normal.
pub fn condition(lv: &LogicalVolume) -> VolumeCondition {
    let normal = VolumeCondition {
        abnormal: false,
        message: String::new(),
    };
    let Some(st) = &lv.status else {
        return normal;
    };
    if let Some(h) = &st.health {
        if !h.abnormal {
            return normal;
        }
        return VolumeCondition {
            abnormal: true,
            message: if h.message.is_empty() {
                format!(
                    "node {} reports the volume abnormal without a reason",
                    lv.spec.node_name
                )
            } else {
                h.message.clone()
            },
        };
    }
    if st.code == NOT_FOUND && !st.volume_id.is_empty() {
        return VolumeCondition {
            abnormal: true,
            message: if st.message.is_empty() {
                format!(
                    "logical volume {} is missing from node {}",
                    st.volume_id, lv.spec.node_name
                )
            } else {
                st.message.clone()
            },
        };
    }
    normal
}

/// The CSI volume a LogicalVolume is. `source_is_snapshot` says what its source is (None when
/// the source is gone, or there is none): the content source is given only when known.
pub fn volume(lv: &LogicalVolume, source_is_snapshot: Option<bool>) -> pb::Volume {
    let id = decide::volume_id(lv);
    let source = lv.spec.source.clone();
    let content_source = source_is_snapshot
        .filter(|_| !source.is_empty())
        .map(|snap| VolumeContentSource {
            r#type: Some(if snap {
                Source::Snapshot(SnapshotSource {
                    snapshot_id: source,
                })
            } else {
                Source::Volume(VolumeSource { volume_id: source })
            }),
        });
    pb::Volume {
        capacity_bytes: super::bytes_i64(decide::current_size(lv).unwrap_or(0)),
        volume_id: id,
        // The context CreateVolume returned lives in the PV, not in the LogicalVolume: the
        // spec makes it optional here.
        volume_context: Default::default(),
        content_source,
        accessible_topology: vec![node_topology(&lv.spec.node_name)],
    }
}

pub fn snapshot(lv: &LogicalVolume) -> pb::Snapshot {
    pb::Snapshot {
        size_bytes: super::bytes_i64(decide::current_size(lv).unwrap_or(0)),
        snapshot_id: decide::volume_id(lv),
        source_volume_id: lv.spec.source.clone(),
        creation_time: lv
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| pb::Timestamp {
                seconds: t.0.as_second(),
                nanos: t.0.subsec_nanosecond(),
            }),
        // A thin snapshot is usable the moment lvcreate returns.
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// ListVolumes' entries from every LogicalVolume: made volumes, not snapshots, each with its
/// condition. `published_node_ids` stays empty: see `capabilities` for why
/// LIST_VOLUMES_PUBLISHED_NODES is not advertised.
pub fn volume_entries(all: &[LogicalVolume]) -> Vec<(String, pb::list_volumes_response::Entry)> {
    // What each ID is, looked up once: clones and restores name their source by ID.
    let kinds: HashMap<String, bool> = all
        .iter()
        .map(|l| (decide::volume_id(l), is_snapshot(l)))
        .collect();
    all.iter()
        .filter(|lv| is_made(lv) && !is_snapshot(lv))
        .map(|lv| {
            let source = kinds.get(&lv.spec.source).copied();
            let entry = pb::list_volumes_response::Entry {
                volume: Some(volume(lv, source)),
                status: Some(pb::list_volumes_response::VolumeStatus {
                    published_node_ids: vec![],
                    volume_condition: Some(condition(lv)),
                }),
            };
            (decide::volume_id(lv), entry)
        })
        .collect()
}

/// ListSnapshots' entries: cut snapshots, narrowed to one snapshot ID and/or one source when
/// the request names them (an unknown one gives an empty list, not an error).
pub fn snapshot_entries(
    all: &[LogicalVolume],
    snapshot_id: &str,
    source_volume_id: &str,
) -> Vec<(String, pb::list_snapshots_response::Entry)> {
    all.iter()
        .filter(|lv| is_made(lv) && is_snapshot(lv))
        .filter(|lv| snapshot_id.is_empty() || decide::volume_id(lv) == snapshot_id)
        .filter(|lv| source_volume_id.is_empty() || lv.spec.source == source_volume_id)
        .map(|lv| {
            (
                decide::volume_id(lv),
                pb::list_snapshots_response::Entry {
                    snapshot: Some(snapshot(lv)),
                },
            )
        })
        .collect()
}

const TOKEN_PREFIX: &str = "v1.";

/// The token of a page that ended with `last`.
pub fn token_after(last: &str) -> String {
    format!("{TOKEN_PREFIX}{:016x}.{last}", fnv1a64(last))
}

/// The ID a token names, if this driver issued it.
pub fn parse_token(token: &str) -> Option<&str> {
    let (sum, key) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
    (!key.is_empty() && sum == format!("{:016x}", fnv1a64(key))).then_some(key)
}

/// One page of `entries` (keyed by ID, any order): those after `starting_token`, sorted by ID,
/// at most `max_entries` (0 = all), and the token of the next page ("" on the last one).
pub fn page<T>(
    mut entries: Vec<(String, T)>,
    starting_token: &str,
    max_entries: i32,
    what: &str,
) -> Result<(Vec<T>, String), Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument(format!(
            "max_entries {max_entries} cannot be negative"
        )));
    }
    let after = match starting_token {
        "" => None,
        t => Some(parse_token(t).ok_or_else(|| {
            Status::aborted(format!(
                "starting_token {t:?} was not issued by this driver's {what}: list again from the start"
            ))
        })?),
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let start = after.map_or(0, |a| entries.partition_point(|(k, _)| k.as_str() <= a));
    let rest = entries.split_off(start);
    let limit = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries as usize
    };
    let next = if rest.len() > limit {
        token_after(&rest[limit - 1].0)
    } else {
        String::new()
    };
    Ok((rest.into_iter().take(limit).map(|(_, v)| v).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use lvms_api::{LogicalVolumeSpec, LogicalVolumeStatus, VolumeHealth};
    use tonic::Code;

    fn lv(uid: &str, source: &str, access: &str, made: bool) -> LogicalVolume {
        let mut l = LogicalVolume::new(
            &format!("obj-{uid}"),
            LogicalVolumeSpec {
                name: format!("obj-{uid}"),
                node_name: "node-a".into(),
                size: Quantity("1Gi".into()),
                device_class: "thin".into(),
                source: source.into(),
                access_type: access.into(),
                ..Default::default()
            },
        );
        l.metadata.uid = Some(uid.into());
        if made {
            l.status = Some(LogicalVolumeStatus {
                volume_id: uid.into(),
                current_size: Some(Quantity("1073741824".into())),
                ..Default::default()
            });
        }
        l
    }

    fn keys(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("id-{i:02}"), i)).collect()
    }

    #[test]
    fn tokens_name_the_last_id_and_refuse_forgeries() {
        let t = token_after("uid-1");
        assert_eq!(parse_token(&t), Some("uid-1"));
        assert_eq!(parse_token(&token_after("a.b")), Some("a.b"), "dots in IDs");
        for bad in [
            "invalid-token",
            "",
            "v1.",
            "v1.0000000000000000.uid-1",
            "3",
            &t.replace("uid-1", "uid-2"),
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pages_in_id_order_to_the_end() {
        let mut shuffled = keys(5);
        shuffled.reverse();
        let (first, next) = page(shuffled.clone(), "", 2, "ListVolumes").unwrap();
        assert_eq!(first, [0, 1], "sorted by ID whatever the input order");
        let (second, next) = page(shuffled.clone(), &next, 2, "ListVolumes").unwrap();
        assert_eq!(second, [2, 3]);
        let (third, next) = page(shuffled.clone(), &next, 2, "ListVolumes").unwrap();
        assert_eq!(
            (third, next.as_str()),
            (vec![4], ""),
            "the last page has no token"
        );
        let (all, next) = page(shuffled.clone(), "", 0, "ListVolumes").unwrap();
        assert_eq!((all.len(), next.as_str()), (5, ""), "0 = no limit");
        let (exact, next) = page(keys(2), "", 2, "ListVolumes").unwrap();
        assert_eq!((exact.len(), next.as_str()), (2, ""), "a full last page");
        // The same token gives the same page.
        let t = token_after("id-01");
        assert_eq!(
            page(keys(5), &t, 2, "x").unwrap(),
            page(keys(5), &t, 2, "x").unwrap()
        );
    }

    #[test]
    fn a_deleted_or_added_volume_between_pages_shifts_nothing() {
        let (_, next) = page(keys(5), "", 2, "ListVolumes").unwrap();
        // The last volume of the first page is deleted, and one added before it.
        let mut changed: Vec<_> = keys(5).into_iter().filter(|(k, _)| k != "id-01").collect();
        changed.push(("id-00a".into(), 99));
        let (rest, _) = page(changed, &next, 0, "ListVolumes").unwrap();
        assert_eq!(rest, [2, 3, 4], "no repeat, no skip");
        // Past the end: empty, not an error.
        let (none, next) = page(keys(2), &token_after("zzz"), 0, "x").unwrap();
        assert!(none.is_empty() && next.is_empty());
    }

    #[test]
    fn bad_tokens_and_limits() {
        let e = page(keys(3), "invalid-token", 0, "ListVolumes").unwrap_err();
        assert_eq!(e.code(), Code::Aborted);
        assert!(
            e.message().contains("starting_token") && e.message().contains("ListVolumes"),
            "{}",
            e.message()
        );
        let e = page(keys(3), "", -1, "ListVolumes").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("max_entries"), "{}", e.message());
    }

    #[test]
    fn volumes_and_snapshots_are_told_apart() {
        let all = vec![
            lv("vol-1", "", "", true),
            lv("snap-1", "vol-1", "ro", true),
            lv("clone-1", "vol-1", "rw", true),
            lv("restore-1", "snap-1", "rw", true),
            lv("pending", "", "", false),
            lv("orphan-clone", "gone", "rw", true),
        ];
        let vols = volume_entries(&all);
        let ids: Vec<&str> = vols.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ids, ["vol-1", "clone-1", "restore-1", "orphan-clone"]);
        let src = |i: usize| {
            vols[i]
                .1
                .volume
                .as_ref()
                .unwrap()
                .content_source
                .clone()?
                .r#type
        };
        assert_eq!(src(0), None);
        assert_eq!(
            src(1),
            Some(Source::Volume(VolumeSource {
                volume_id: "vol-1".into()
            }))
        );
        assert_eq!(
            src(2),
            Some(Source::Snapshot(SnapshotSource {
                snapshot_id: "snap-1".into()
            }))
        );
        assert_eq!(src(3), None, "a source that is gone is not guessed");
        let v = vols[0].1.volume.as_ref().unwrap();
        assert_eq!(v.capacity_bytes, 1 << 30);
        assert_eq!(v.accessible_topology, [node_topology("node-a")]);
        let st = vols[0].1.status.as_ref().unwrap();
        assert!(st.published_node_ids.is_empty());
        assert_eq!(
            st.volume_condition.as_ref().map(|c| c.abnormal),
            Some(false)
        );

        let snaps = snapshot_entries(&all, "", "");
        assert_eq!(snaps.len(), 1);
        let s = snaps[0].1.snapshot.as_ref().unwrap();
        assert_eq!(
            (
                s.snapshot_id.as_str(),
                s.source_volume_id.as_str(),
                s.ready_to_use
            ),
            ("snap-1", "vol-1", true)
        );
        assert_eq!(snapshot_entries(&all, "snap-1", "vol-1").len(), 1);
        assert!(snapshot_entries(&all, "none-exist-id", "").is_empty());
        assert!(snapshot_entries(&all, "", "vol-2").is_empty());
        assert!(
            snapshot_entries(&all, "vol-1", "").is_empty(),
            "a volume is no snapshot"
        );
    }

    #[test]
    fn the_condition_comes_from_the_node() {
        let mut l = lv("vol-1", "", "", true);
        assert!(!condition(&l).abnormal);
        let st = l.status.as_mut().unwrap();
        st.health = Some(VolumeHealth {
            abnormal: true,
            message: "thin pool thin/pool is out of data space (100.00% used): writes fail".into(),
        });
        let c = condition(&l);
        assert!(c.abnormal && c.message.contains("thin/pool"), "{c:?}");

        l.status.as_mut().unwrap().health = Some(VolumeHealth {
            abnormal: true,
            message: String::new(),
        });
        assert!(condition(&l).message.contains("node node-a"));

        // Without the node's check, the reconciler's NOT_FOUND says the LV is gone; once the
        // node has checked, its check is the answer.
        let st = l.status.as_mut().unwrap();
        st.health = None;
        st.code = NOT_FOUND;
        st.message = "logical volume thin/vol-1 has vanished from the node".into();
        let c = condition(&l);
        assert!(c.abnormal && c.message.contains("vanished"), "{c:?}");
        l.status.as_mut().unwrap().health = Some(VolumeHealth::default());
        assert!(!condition(&l).abnormal);
        l.status.as_mut().unwrap().health = None;

        // A failed growth is a request's failure; the data is fine.
        let st = l.status.as_mut().unwrap();
        st.code = 8;
        st.message = "no room to grow".into();
        assert!(!condition(&l).abnormal);
        // Not made yet: nothing to say.
        assert!(!condition(&lv("p", "", "", false)).abnormal);
    }
}
