//! The controller's decisions, free of I/O so they can be tested one by one: which node gets a
//! volume, what its LogicalVolume is called, whether an existing object answers a repeated
//! request, where a snapshot or clone must go, and what a LogicalVolume's status means.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kube::ResourceExt;
use lvms_api::{LVMVolumeGroup, LogicalVolume, quantity_bytes};
use tonic::{Code, Status};

use crate::TOPOLOGY_NODE_KEY;
use crate::pb::{CapacityRange, Topology, TopologyRequirement};
use crate::volume::{self, Usage};

/// How long an RPC may wait for the node when the caller sends no deadline. The sidecars always
/// send one; this bounds a hand-made call.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(50);

// ---- names -------------------------------------------------------------------------------------

/// True when `name` can be an object name as it is (Kubernetes' IsDNS1123Subdomain).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// 64-bit FNV-1a: tiny, and stable across releases and platforms, which the object name must be
/// (a restarted controller has to find the object an earlier one created).
pub(crate) fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The LogicalVolume's object name for a CSI request name. CSI names are free-form while object
/// names are DNS subdomains: a valid name is used as it is (the sidecars send `pvc-<uid>` and
/// `snapshot-<uid>`, which keeps names identical to TopoLVM's); any other name is sanitized and
/// suffixed with a hash of the exact name, so two names that sanitize alike stay apart.
/// `spec.name` always keeps the exact request name.
pub fn object_name(request_name: &str) -> String {
    if is_dns1123_subdomain(request_name) {
        return request_name.to_string();
    }
    let suffix = format!("-{:016x}", fnv1a64(request_name));
    let clean: String = request_name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(253 - suffix.len())
        .collect();
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "lv" } else { clean };
    format!("{clean}{suffix}")
}

// ---- capacity and node choice ------------------------------------------------------------------

/// Free bytes from a Node's capacity annotation; unparsable counts as nothing free.
pub fn parse_capacity(annotation: Option<&str>) -> u64 {
    annotation.and_then(|a| a.trim().parse().ok()).unwrap_or(0)
}

/// The node a topology segment names, if it uses our key.
pub fn topology_node(t: &Topology) -> Option<&str> {
    t.segments
        .get(TOPOLOGY_NODE_KEY)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// The nodes a list of segments names, in order, without repeats.
pub fn nodes_of(list: &[Topology]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in list.iter().filter_map(topology_node) {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// Chooses the node for a new volume of `size` bytes in `class`, given each node's free bytes
/// for that class (nodes without the class are absent). Candidates are the preferred nodes in
/// order, then the requisite ones; the first with room wins. Without requisite nodes the CSI
/// spec lets us place anywhere, so when no candidate has room (or none was named) the node with
/// the most room is taken, as with no requirements at all.
pub fn choose_node(
    req: Option<&TopologyRequirement>,
    capacity: &BTreeMap<String, u64>,
    size: u64,
    class: &str,
) -> Result<String, Status> {
    let free = |n: &str| capacity.get(n).copied().unwrap_or(0);
    let (preferred, requisite) = req.map_or((vec![], vec![]), |r| {
        (nodes_of(&r.preferred), nodes_of(&r.requisite))
    });
    // With requisite nodes, a preferred node outside them is no candidate (CSI says preferred
    // is a subset of requisite; a client that breaks it must not get a volume it cannot use).
    let mut candidates: Vec<String> = preferred
        .into_iter()
        .filter(|n| requisite.is_empty() || requisite.contains(n))
        .collect();
    for n in requisite.iter() {
        if !candidates.contains(n) {
            candidates.push(n.clone());
        }
    }
    if let Some(n) = candidates.iter().find(|n| free(n) >= size) {
        return Ok(n.clone());
    }
    let hard = req.is_some_and(|r| !r.requisite.is_empty());
    if hard {
        let why = if candidates.is_empty() {
            format!("accessibility_requirements.requisite names no node (key {TOPOLOGY_NODE_KEY})")
        } else {
            listing(candidates.iter().map(|n| (n.as_str(), free(n))))
        };
        return Err(exhausted(size, class, &why));
    }
    // Most room first; among equals the first name, so the choice is repeatable.
    let best = capacity
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .filter(|(_, free)| **free >= size);
    match best {
        Some((n, _)) => Ok(n.clone()),
        None if capacity.is_empty() => Err(exhausted(
            size,
            class,
            "no node reports capacity for this device class",
        )),
        None => Err(exhausted(
            size,
            class,
            &listing(capacity.iter().map(|(n, f)| (n.as_str(), *f))),
        )),
    }
}

fn exhausted(size: u64, class: &str, why: &str) -> Status {
    Status::resource_exhausted(format!(
        "no node has {size} bytes free in device class {class}: {why}"
    ))
}

/// "node-a has 100, node-b has 0", cut short on large clusters.
fn listing<'a>(nodes: impl Iterator<Item = (&'a str, u64)>) -> String {
    const SHOWN: usize = 20;
    let mut out = String::new();
    let mut count = 0;
    for (n, free) in nodes {
        if count < SHOWN {
            let sep = if count == 0 { "" } else { ", " };
            let _ = write!(out, "{sep}{n} has {free}");
        }
        count += 1;
    }
    if count > SHOWN {
        let _ = write!(out, " and {} more", count - SHOWN);
    }
    out
}

// ---- LogicalVolume state -----------------------------------------------------------------------

/// The volume ID of a LogicalVolume: the node writes it to the status; it is the object's UID,
/// so the UID stands in before the node has answered.
pub fn volume_id(lv: &LogicalVolume) -> String {
    lv.status
        .as_ref()
        .map(|s| s.volume_id.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| lv.uid())
        .unwrap_or_default()
}

pub fn has_volume_id(lv: &LogicalVolume, id: &str) -> bool {
    !id.is_empty()
        && (lv.status.as_ref().is_some_and(|s| s.volume_id == id)
            || lv.metadata.uid.as_deref() == Some(id))
}

/// Requested bytes (`spec.size`); 0 when unparsable.
pub fn spec_size(lv: &LogicalVolume) -> u64 {
    quantity_bytes(&lv.spec.size.0).unwrap_or(0)
}

/// Bytes the node reports, if it has.
pub fn current_size(lv: &LogicalVolume) -> Option<u64> {
    lv.status
        .as_ref()?
        .current_size
        .as_ref()
        .and_then(|q| quantity_bytes(&q.0))
}

pub fn is_deleting(lv: &LogicalVolume) -> bool {
    lv.metadata.deletion_timestamp.is_some()
}

/// Where a LogicalVolume stands for a caller waiting for `size` bytes.
#[derive(Debug)]
pub enum Progress {
    /// The node has not answered yet (or not for this size).
    Pending,
    Ready,
    /// The node refused or failed: its code and message.
    Failed(Status),
}

pub fn progress(lv: &LogicalVolume, size: u64) -> Progress {
    let Some(st) = &lv.status else {
        return Progress::Pending;
    };
    if st.code != 0 {
        let code = Code::from(i32::try_from(st.code).unwrap_or(i32::MAX));
        let message = if st.message.is_empty() {
            format!("the node failed with code {}", st.code)
        } else {
            st.message.clone()
        };
        return Progress::Failed(Status::new(code, message));
    }
    if !st.volume_id.is_empty() && current_size(lv).is_some_and(|c| c >= size) {
        Progress::Ready
    } else {
        Progress::Pending
    }
}

// ---- repeated requests -------------------------------------------------------------------------

/// What a request asks of a LogicalVolume that may already exist under its name.
#[derive(Debug, Default)]
pub struct Wanted<'a> {
    /// The exact request name.
    pub name: &'a str,
    /// The class the request names; None when we chose it (the default or the source's).
    pub class: Option<&'a str>,
    /// Source volume ID, "" for a new empty volume.
    pub source: &'a str,
    /// From the capacity range; 0 = unbounded.
    pub required: u64,
    pub limit: u64,
    /// Nodes the volume must be reachable from; empty = any.
    pub requisite: &'a [String],
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reuse {
    /// The existing object is this request's answer: wait for it.
    Yes,
    /// Being deleted: the caller retries once it is gone.
    Deleting,
    /// Another request's volume holds the name: AlreadyExists with this reason.
    Conflict(String),
}

/// Decides whether `lv` (found under the request's object name) answers `w`, so a repeated or
/// concurrent identical request returns the same volume instead of making a second one.
pub fn reuse(lv: &LogicalVolume, w: &Wanted) -> Reuse {
    let n = lv.name_any();
    if lv.spec.name != w.name {
        return Reuse::Conflict(format!(
            "LogicalVolume {n} belongs to volume {:?}, not {:?}",
            lv.spec.name, w.name
        ));
    }
    if is_deleting(lv) {
        return Reuse::Deleting;
    }
    if let Some(c) = w.class.filter(|c| *c != lv.spec.device_class) {
        return Reuse::Conflict(format!(
            "volume {:?} exists in device class {}, not {c}",
            w.name, lv.spec.device_class
        ));
    }
    if lv.spec.source != w.source {
        let what = |s: &str| {
            if s.is_empty() {
                "no source".to_string()
            } else {
                format!("source {s}")
            }
        };
        return Reuse::Conflict(format!(
            "volume {:?} exists with {}, the request has {}",
            w.name,
            what(&lv.spec.source),
            what(w.source)
        ));
    }
    let size = spec_size(lv);
    if size < w.required || (w.limit > 0 && size > w.limit) {
        return Reuse::Conflict(format!(
            "volume {:?} exists with {size} bytes, outside capacity_range [{}, {}]",
            w.name,
            w.required,
            if w.limit > 0 {
                w.limit.to_string()
            } else {
                "unbounded".into()
            }
        ));
    }
    if !w.requisite.is_empty() && !w.requisite.contains(&lv.spec.node_name) {
        return Reuse::Conflict(format!(
            "volume {:?} exists on node {}, outside accessibility_requirements.requisite",
            w.name, lv.spec.node_name
        ));
    }
    Reuse::Yes
}

// ---- snapshots and clones ----------------------------------------------------------------------

/// Where a volume made from `source` goes: the source's node and class, since a thin snapshot
/// lives in its origin's pool.
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub class: String,
    /// The source's size, which the new volume cannot go below.
    pub source_size: u64,
}

/// Checks that `source` can be snapshotted or cloned: it must not be going away, its class must
/// exist and be thin (LVM snapshots of thick LVs are copy-on-write areas with a fixed size, not
/// independent volumes), the requested class (if any) must be the source's, and the source's
/// node must be allowed by `requisite` (if any). `field` names the request field of the source.
pub fn place_from_source(
    source: &LogicalVolume,
    source_class: Option<&LVMVolumeGroup>,
    requested_class: Option<&str>,
    requisite: &[String],
    field: &str,
) -> Result<Placement, Status> {
    let id = volume_id(source);
    if is_deleting(source) {
        return Err(Status::not_found(format!(
            "{field}: volume {id} is being deleted"
        )));
    }
    let class = source.spec.device_class.as_str();
    let Some(vg) = source_class else {
        return Err(Status::invalid_argument(format!(
            "{field}: device class {class} of volume {id} no longer exists"
        )));
    };
    if vg.spec.thin_pool_config.is_none() {
        return Err(Status::invalid_argument(format!(
            "{field}: device class {class} is thick: snapshots and clones need a thin pool"
        )));
    }
    if let Some(r) = requested_class.filter(|r| *r != class) {
        return Err(Status::invalid_argument(format!(
            "parameters[{}]: {r} differs from device class {class} of {field} {id}: a snapshot or clone stays in its source's thin pool",
            crate::DEVICE_CLASS_PARAMETER
        )));
    }
    let node = source.spec.node_name.clone();
    if !requisite.is_empty() && !requisite.contains(&node) {
        return Err(Status::resource_exhausted(format!(
            "{field}: volume {id} is on node {node}, which accessibility_requirements.requisite excludes"
        )));
    }
    Ok(Placement {
        node,
        class: class.to_string(),
        source_size: current_size(source).unwrap_or(0).max(spec_size(source)),
    })
}

/// Size of a clone or restore: what the range asks, never below the source (a thin snapshot is
/// its origin's size); with no required bytes, exactly the source's size rather than the default.
pub fn size_from_source(
    range: Option<&CapacityRange>,
    usage: &Usage,
    source_size: u64,
) -> Result<u64, Status> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument(
            "capacity_range: required_bytes and limit_bytes cannot be negative",
        ));
    }
    let limit = limit as u64;
    let size = if required > 0 {
        volume::size_for(range, usage)?.max(source_size)
    } else {
        source_size
    };
    if limit > 0 && size > limit {
        return Err(Status::out_of_range(format!(
            "capacity_range.limit_bytes {limit} is below the source's size {source_size}"
        )));
    }
    Ok(size)
}

// ---- deadlines ---------------------------------------------------------------------------------

/// Parses a `grpc-timeout` header value ("100m", "5S", ...; at most 8 digits and one unit).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())??;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long an RPC may work: a little less than the caller's deadline, so we answer
/// DeadlineExceeded ourselves (and the caller knows to retry) before the transport cancels the
/// call; DEFAULT_BUDGET without one.
pub fn budget(timeout: Option<Duration>) -> Duration {
    match timeout {
        Some(t) => t.saturating_sub((t / 10).min(Duration::from_secs(1))),
        None => DEFAULT_BUDGET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use lvms_api::{LVMVolumeGroupSpec, LogicalVolumeSpec, LogicalVolumeStatus, ThinPoolConfig};

    fn topo(node: &str) -> Topology {
        Topology {
            segments: [(TOPOLOGY_NODE_KEY.to_string(), node.to_string())].into(),
        }
    }

    fn caps(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn lv(name: &str, size: &str, source: &str) -> LogicalVolume {
        let mut l = LogicalVolume::new(
            &object_name(name),
            LogicalVolumeSpec {
                name: name.into(),
                node_name: "node-a".into(),
                size: Quantity(size.into()),
                device_class: "thin".into(),
                source: source.into(),
                ..Default::default()
            },
        );
        l.metadata.uid = Some("uid-1".into());
        l
    }

    fn class(thin: bool) -> LVMVolumeGroup {
        LVMVolumeGroup::new(
            "thin",
            LVMVolumeGroupSpec {
                thin_pool_config: thin.then(|| ThinPoolConfig {
                    name: "pool".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    #[test]
    fn names() {
        assert_eq!(
            object_name("pvc-0b1c-42"),
            "pvc-0b1c-42",
            "valid names are kept"
        );
        assert_eq!(object_name("a.b.c"), "a.b.c");
        for bad in [
            "PVC_Upper",
            "",
            "___",
            "a..b",
            "-x",
            &"x".repeat(300),
            "vol/ümlaut",
        ] {
            let n = object_name(bad);
            assert!(is_dns1123_subdomain(&n), "{bad:?} -> {n:?}");
            assert_eq!(n, object_name(bad), "deterministic");
        }
        assert!(object_name("PVC_Upper").starts_with("pvc-upper-"));
        assert!(object_name("___").starts_with("lv-"));
        assert_ne!(
            object_name("A_b"),
            object_name("a-B"),
            "names that sanitize alike differ by their hash"
        );
        assert_eq!(object_name(&"x".repeat(300)).len(), 253);
        assert_eq!(
            fnv1a64("a"),
            0xaf63_dc4c_8601_ec8c,
            "the published FNV-1a value"
        );
    }

    #[test]
    fn node_choice() {
        let c = caps(&[("a", 10), ("b", 50), ("c", 30)]);
        assert_eq!(choose_node(None, &c, 20, "vg").unwrap(), "b", "most room");
        assert_eq!(
            choose_node(None, &caps(&[("x", 5), ("w", 5)]), 5, "vg").unwrap(),
            "w",
            "ties go to the first name"
        );
        let req = TopologyRequirement {
            preferred: vec![topo("a"), topo("c")],
            requisite: vec![topo("a"), topo("b"), topo("c")],
        };
        assert_eq!(
            choose_node(Some(&req), &c, 20, "vg").unwrap(),
            "c",
            "preferred order first"
        );
        assert_eq!(
            choose_node(Some(&req), &c, 40, "vg").unwrap(),
            "b",
            "then requisite"
        );
        let e = choose_node(Some(&req), &c, 60, "vg").unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.message().contains("a has 10, c has 30, b has 50") && e.message().contains("vg"),
            "{}",
            e.message()
        );
        let only_requisite = TopologyRequirement {
            requisite: vec![topo("a"), topo("unknown")],
            ..Default::default()
        };
        let e = choose_node(Some(&only_requisite), &c, 20, "vg").unwrap_err();
        assert!(e.message().contains("unknown has 0"), "{}", e.message());
        let soft = TopologyRequirement {
            preferred: vec![topo("a")],
            ..Default::default()
        };
        assert_eq!(
            choose_node(Some(&soft), &c, 20, "vg").unwrap(),
            "b",
            "preferred only is a hint"
        );
        let e = choose_node(None, &BTreeMap::new(), 1, "vg").unwrap_err();
        assert!(e.message().contains("no node reports"), "{}", e.message());
        let foreign = TopologyRequirement {
            requisite: vec![Topology {
                segments: [("zone".into(), "z1".into())].into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            choose_node(Some(&foreign), &c, 1, "vg").unwrap_err().code(),
            Code::ResourceExhausted
        );
        assert_eq!(parse_capacity(Some("123")), 123);
        assert_eq!(parse_capacity(Some("lots")), 0);
        assert_eq!(parse_capacity(None), 0);
    }

    #[test]
    fn repeated_requests() {
        let existing = lv("pvc-1", "1073741824", "");
        let w = Wanted {
            name: "pvc-1",
            required: 1 << 30,
            ..Default::default()
        };
        assert_eq!(reuse(&existing, &w), Reuse::Yes);
        assert_eq!(
            reuse(
                &existing,
                &Wanted {
                    class: Some("thin"),
                    limit: 2 << 30,
                    ..w
                }
            ),
            Reuse::Yes
        );
        for other in [
            Wanted {
                required: 2 << 30,
                ..w
            },
            Wanted {
                limit: 1 << 29,
                required: 0,
                ..w
            },
            Wanted {
                class: Some("other"),
                ..w
            },
            Wanted { source: "src", ..w },
            Wanted { name: "pvc-2", ..w },
            Wanted {
                requisite: &["node-b".to_string()],
                ..w
            },
        ] {
            assert!(
                matches!(reuse(&existing, &other), Reuse::Conflict(_)),
                "{other:?}"
            );
        }
        let mut deleting = existing.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(reuse(&deleting, &w), Reuse::Deleting);
    }

    #[test]
    fn status_and_ids() {
        let mut l = lv("pvc-1", "1Gi", "");
        assert_eq!(volume_id(&l), "uid-1", "the UID before the node answers");
        assert!(has_volume_id(&l, "uid-1") && !has_volume_id(&l, ""));
        assert!(matches!(progress(&l, 1 << 30), Progress::Pending));
        l.status = Some(LogicalVolumeStatus {
            volume_id: "uid-1".into(),
            current_size: Some(Quantity("1Gi".into())),
            ..Default::default()
        });
        assert!(matches!(progress(&l, 1 << 30), Progress::Ready));
        assert!(
            matches!(progress(&l, 2 << 30), Progress::Pending),
            "growing"
        );
        l.status = Some(LogicalVolumeStatus {
            code: 8,
            message: "no room".into(),
            ..Default::default()
        });
        match progress(&l, 1) {
            Progress::Failed(s) => {
                assert_eq!(
                    (s.code(), s.message()),
                    (Code::ResourceExhausted, "no room")
                )
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn sources() {
        let src = lv("pvc-src", "2Gi", "");
        let p = place_from_source(&src, Some(&class(true)), None, &[], "f").unwrap();
        assert_eq!(
            p,
            Placement {
                node: "node-a".into(),
                class: "thin".into(),
                source_size: 2 << 30
            }
        );
        let e = place_from_source(&src, Some(&class(false)), None, &[], "f").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("device class thin is thick"),
            "{}",
            e.message()
        );
        let e = place_from_source(&src, None, None, &[], "f").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = place_from_source(&src, Some(&class(true)), Some("other"), &[], "f").unwrap_err();
        assert!(
            e.message().contains("parameters[topolvm.io/device-class]"),
            "{}",
            e.message()
        );
        let e =
            place_from_source(&src, Some(&class(true)), None, &["node-b".into()], "f").unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);

        let xfs = Usage::Filesystem("xfs".into());
        let range = |r: i64, l: i64| CapacityRange {
            required_bytes: r,
            limit_bytes: l,
        };
        let gib = 1u64 << 30;
        assert_eq!(size_from_source(None, &xfs, 2 * gib).unwrap(), 2 * gib);
        assert_eq!(
            size_from_source(Some(&range(1, 0)), &xfs, 2 * gib).unwrap(),
            2 * gib,
            "never below the source"
        );
        assert_eq!(
            size_from_source(Some(&range(3 << 30, 0)), &xfs, 2 * gib).unwrap(),
            3 * gib
        );
        assert_eq!(
            size_from_source(Some(&range(0, 1 << 30)), &xfs, 2 * gib)
                .unwrap_err()
                .code(),
            Code::OutOfRange
        );
    }

    #[test]
    fn deadlines() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "5", "S", "5x", "123456789S", "-5S", "+5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        assert_eq!(budget(None), DEFAULT_BUDGET);
        assert_eq!(
            budget(Some(Duration::from_secs(10))),
            Duration::from_secs(9)
        );
        assert_eq!(
            budget(Some(Duration::from_secs(60))),
            Duration::from_secs(59)
        );
    }
}
