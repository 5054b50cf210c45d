//! The node-loss decision, case by case: what a removed node's objects call for, and that a
//! present node (Ready or not) calls for nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use lvms_api::names::node_cleanup_finalizer;
use lvms_api::{LVMVolumeGroupNodeStatusSpec, LVMVolumeGroupSpec, LogicalVolumeSpec};

use kube::Resource;

use super::*;

const NOW: i64 = 1_800_000_000;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn vg(name: &str, nodes: &[&str]) -> LVMVolumeGroup {
    let mut v = LVMVolumeGroup::new(name, LVMVolumeGroupSpec::default());
    v.metadata.finalizers = Some(nodes.iter().map(|n| node_cleanup_finalizer(n)).collect());
    v
}

fn report(node: &str) -> LVMVolumeGroupNodeStatus {
    let mut s = LVMVolumeGroupNodeStatus::new(node, LVMVolumeGroupNodeStatusSpec::default());
    s.metadata.uid = Some(format!("uid-{node}"));
    s.metadata.resource_version = Some("7".into());
    s
}

/// An LV on `node`, held by the agent's finalizer, with volume ID `vol-<name>`.
fn lv(name: &str, node: &str) -> LogicalVolume {
    let mut l = LogicalVolume::new(
        name,
        LogicalVolumeSpec {
            name: format!("pvc-{name}"),
            node_name: node.into(),
            ..Default::default()
        },
    );
    l.metadata.uid = Some(format!("uid-{name}"));
    l.metadata.finalizers = Some(vec![LOGICAL_VOLUME_FINALIZER.into()]);
    l.status = Some(lvms_api::LogicalVolumeStatus {
        volume_id: format!("vol-{name}"),
        ..Default::default()
    });
    l
}

fn marked(mut l: LogicalVolume, second: i64) -> LogicalVolume {
    l.metadata.annotations = Some(BTreeMap::from([(
        NODE_REMOVED_ANNOTATION.to_string(),
        at(second).to_string(),
    )]));
    l
}

fn deleting<K: Resource>(mut o: K) -> K {
    o.meta_mut().deletion_timestamp = Some(Time(at(NOW - 1)));
    o
}

/// The PV of `lv(volume, _)` on `node`, bound to claim `app/<claim>` (uid `uid-<claim>`).
fn pv(volume: &str, node: &str, claim: Option<&str>, policy: &str) -> PersistentVolume {
    let mut p = PersistentVolume::default();
    p.metadata.name = Some(format!("pvc-{volume}"));
    p.metadata.uid = Some(format!("uid-pv-{volume}"));
    p.spec = Some(PersistentVolumeSpec {
        csi: Some(CSIPersistentVolumeSource {
            driver: CSI_DRIVER_NAME.into(),
            volume_handle: format!("vol-{volume}"),
            ..Default::default()
        }),
        claim_ref: claim.map(|c| ObjectReference {
            namespace: Some("app".into()),
            name: Some(c.into()),
            uid: Some(format!("uid-{c}")),
            ..Default::default()
        }),
        persistent_volume_reclaim_policy: Some(policy.into()),
        node_affinity: Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: TOPOLOGY_NODE_KEY.into(),
                        operator: "In".into(),
                        values: Some(vec![node.into()]),
                    }]),
                    ..Default::default()
                }],
            }),
        }),
        ..Default::default()
    });
    p
}

fn pvc(name: &str, uid: &str) -> PersistentVolumeClaim {
    let mut c = PersistentVolumeClaim::default();
    c.metadata.name = Some(name.into());
    c.metadata.namespace = Some("app".into());
    c.metadata.uid = Some(uid.into());
    c.spec = Some(PersistentVolumeClaimSpec::default());
    c
}

#[derive(Default)]
struct World {
    nodes: Vec<&'static str>,
    vgs: Vec<LVMVolumeGroup>,
    reports: Vec<LVMVolumeGroupNodeStatus>,
    lvs: Vec<LogicalVolume>,
    pvs: Vec<PersistentVolume>,
    pvcs: Vec<PersistentVolumeClaim>,
    raw_pvs: Vec<PersistentVolume>,
    opt_in: bool,
    grace: u64,
}

impl World {
    fn decide(&self) -> Plan {
        let nodes: BTreeSet<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        decide(&Observed {
            nodes: &nodes,
            volume_groups: &self.vgs,
            node_statuses: &self.reports,
            volumes: &self.lvs,
            pvs: &self.pvs,
            pvcs: &self.pvcs,
            raw_pvs: &self.raw_pvs,
            delete_volumes: self.opt_in,
            grace: Duration::from_secs(self.grace),
            now: at(NOW),
        })
    }

    /// The actions, without the mark's message (asserted on its own).
    fn actions(&self) -> Vec<Action> {
        self.decide()
            .actions
            .into_iter()
            .map(|a| match a {
                Action::MarkVolume {
                    node, volume, at, ..
                } => Action::MarkVolume {
                    node,
                    volume,
                    at,
                    message: String::new(),
                },
                other => other,
            })
            .collect()
    }
}

fn mark(node: &str, volume: &str) -> Action {
    Action::MarkVolume {
        node: node.into(),
        volume: volume.into(),
        at: at(NOW).to_string(),
        message: String::new(),
    }
}

fn delete_volume(node: &str, volume: &str) -> Action {
    Action::DeleteVolume {
        node: node.into(),
        volume: volume.into(),
        uid: format!("uid-{volume}"),
    }
}

fn release(node: &str, volume: &str) -> Action {
    Action::ReleaseVolume {
        node: node.into(),
        volume: volume.into(),
    }
}

fn delete_pv(node: &str, volume: &str) -> Action {
    Action::DeletePv {
        node: node.into(),
        name: format!("pvc-{volume}"),
        uid: format!("uid-pv-{volume}"),
    }
}

fn delete_claim(node: &str, claim: &str, volume: &str) -> Action {
    Action::DeleteClaim {
        node: node.into(),
        namespace: "app".into(),
        name: claim.into(),
        uid: format!("uid-{claim}"),
        pv: format!("pvc-{volume}"),
    }
}

#[test]
fn a_removed_node_loses_its_finalizers_and_status_and_its_volumes_are_marked() {
    let w = World {
        nodes: vec!["b"],
        vgs: vec![vg("fast", &["a", "b"]), vg("bulk", &["b"])],
        reports: vec![report("a"), report("b")],
        lvs: vec![lv("v1", "a"), lv("v2", "b")],
        grace: 300,
        ..Default::default()
    };
    let plan = w.decide();
    assert_eq!(
        w.actions(),
        [
            Action::ReleaseVolumeGroup {
                node: "a".into(),
                volume_group: "fast".into()
            },
            Action::DeleteNodeStatus {
                node: "a".into(),
                name: "a".into(),
                uid: "uid-a".into(),
                resource_version: "7".into()
            },
            mark("a", "v1"),
        ]
    );
    assert_eq!(
        plan.recheck,
        Some(FOLLOW_UP),
        "a pass follows up what it did"
    );
}

#[test]
fn a_present_node_ready_or_not_calls_for_nothing() {
    // Readiness is not looked at: the node is in the list, whatever its conditions.
    let w = World {
        nodes: vec!["a"],
        vgs: vec![vg("fast", &["a"])],
        reports: vec![report("a")],
        lvs: vec![deleting(lv("v1", "a"))],
        pvs: vec![pv("v1", "a", Some("db"), "Delete")],
        pvcs: vec![pvc("db", "uid-db")],
        opt_in: true,
        ..Default::default()
    };
    assert_eq!(w.decide(), Plan::default());
}

#[test]
fn a_volume_is_marked_once_and_unmarked_when_its_node_returns() {
    let mut w = World {
        lvs: vec![marked(lv("v1", "a"), NOW - 10)],
        grace: 300,
        ..Default::default()
    };
    let plan = w.decide();
    assert_eq!(plan.actions, [], "already marked");
    assert_eq!(plan.recheck, None, "nothing is due when the grace is over");
    w.opt_in = true;
    assert_eq!(
        w.decide().recheck,
        Some(Duration::from_secs(290)),
        "with the opt-in, looked at again when the grace is over"
    );
    w.opt_in = false;
    w.nodes = vec!["a"];
    assert_eq!(
        w.actions(),
        [Action::UnmarkVolume {
            volume: "v1".into()
        }]
    );
    // A mark edited into nonsense is made again, restarting the grace.
    w.nodes = vec![];
    w.lvs[0]
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(NODE_REMOVED_ANNOTATION.into(), "yesterday".into());
    assert_eq!(w.actions(), [mark("a", "v1")]);
}

#[test]
fn within_the_grace_nothing_of_a_volume_is_released_or_deleted() {
    let w = World {
        lvs: vec![deleting(marked(lv("v1", "a"), NOW - 299))],
        pvs: vec![pv("v1", "a", Some("db"), "Delete")],
        pvcs: vec![pvc("db", "uid-db")],
        opt_in: true,
        grace: 300,
        ..Default::default()
    };
    let plan = w.decide();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.recheck, Some(Duration::from_secs(1)));
}

#[test]
fn without_the_opt_in_only_a_deleted_volume_is_released() {
    let w = World {
        lvs: vec![
            marked(lv("kept", "a"), NOW - 600),
            deleting(marked(lv("gone", "a"), NOW - 600)),
        ],
        grace: 300,
        ..Default::default()
    };
    assert_eq!(w.actions(), [release("a", "gone")]);
    // No PVs or claims are listed without the opt-in; with them, still nothing more.
    let w = World {
        pvs: vec![pv("kept", "a", Some("db"), "Delete")],
        pvcs: vec![pvc("db", "uid-db")],
        ..w
    };
    assert_eq!(w.actions(), [release("a", "gone")]);
}

#[test]
fn with_the_opt_in_the_claim_goes_first_then_the_volume_and_its_pv() {
    let mut w = World {
        lvs: vec![marked(lv("v1", "a"), NOW - 600)],
        pvs: vec![pv("v1", "a", Some("db"), "Delete")],
        pvcs: vec![pvc("db", "uid-db")],
        opt_in: true,
        grace: 300,
        ..Default::default()
    };
    assert_eq!(w.actions(), [delete_claim("a", "db", "v1")]);
    // Its deletion waits for pvc-protection (a pod still uses it): nothing forced, wait.
    w.pvcs[0] = deleting(w.pvcs[0].clone());
    let plan = w.decide();
    assert_eq!(plan.actions, []);
    assert_eq!(plan.recheck, Some(FOLLOW_UP));
    // The claim gone: the volume, its PV, and the finalizer the dead agent holds.
    w.pvcs.clear();
    assert_eq!(
        w.actions(),
        [
            delete_volume("a", "v1"),
            delete_pv("a", "v1"),
            release("a", "v1")
        ]
    );
    // Half done (the volume deleting, the PV going): only what is left.
    w.lvs[0] = deleting(w.lvs[0].clone());
    w.pvs[0] = deleting(w.pvs[0].clone());
    assert_eq!(w.actions(), [release("a", "v1")]);
}

#[test]
fn a_claim_recreated_under_the_same_name_is_another_claim() {
    // The StatefulSet re-created app/db (new uid) after the old one went: not ours to delete.
    let w = World {
        lvs: vec![marked(lv("v1", "a"), NOW - 600)],
        pvs: vec![pv("v1", "a", Some("db"), "Delete")],
        pvcs: vec![pvc("db", "uid-db-new")],
        opt_in: true,
        grace: 0,
        ..Default::default()
    };
    assert_eq!(
        w.actions(),
        [
            delete_volume("a", "v1"),
            delete_pv("a", "v1"),
            release("a", "v1")
        ]
    );
}

#[test]
fn a_retained_pv_keeps_itself_and_its_volume() {
    let mut w = World {
        lvs: vec![marked(lv("v1", "a"), NOW - 600)],
        pvs: vec![pv("v1", "a", Some("db"), "Retain")],
        pvcs: vec![pvc("db", "uid-db")],
        opt_in: true,
        grace: 300,
        ..Default::default()
    };
    assert_eq!(w.actions(), [delete_claim("a", "db", "v1")]);
    w.pvcs.clear();
    assert_eq!(w.actions(), [], "the PV and the volume stay");
    // Until the user deletes them: the volume's finalizer is then released.
    w.lvs[0] = deleting(w.lvs[0].clone());
    assert_eq!(w.actions(), [release("a", "v1")]);
}

#[test]
fn a_volume_without_pv_goes_with_the_opt_in() {
    // A snapshot, or a volume whose PV was never made.
    let w = World {
        lvs: vec![marked(lv("snap", "a"), NOW - 600)],
        opt_in: true,
        grace: 300,
        ..Default::default()
    };
    assert_eq!(
        w.actions(),
        [delete_volume("a", "snap"), release("a", "snap")]
    );
}

#[test]
fn a_pv_whose_volume_is_gone_is_found_by_its_node_affinity() {
    let mut w = World {
        pvs: vec![
            pv("v1", "a", None, "Delete"),
            pv("v2", "a", Some("db"), "Delete"),
            pv("v3", "a", None, "Retain"),
            pv("v4", "b", None, "Delete"),
        ],
        pvcs: vec![pvc("db", "uid-db")],
        nodes: vec!["b"],
        opt_in: true,
        ..Default::default()
    };
    assert_eq!(
        w.actions(),
        [delete_pv("a", "v1")],
        "not one still claimed, retained, or of a present node"
    );
    w.opt_in = false;
    assert_eq!(w.actions(), []);
}

#[test]
fn the_mark_says_what_will_happen() {
    let message = |w: &World| match &w.decide().actions[..] {
        [Action::MarkVolume { message, .. }] => message.clone(),
        other => panic!("{other:?}"),
    };
    let mut w = World {
        lvs: vec![lv("v1", "a")],
        pvs: vec![pv("v1", "a", Some("db"), "Delete")],
        pvcs: vec![pvc("db", "uid-db")],
        grace: 300,
        ..Default::default()
    };
    let m = message(&w);
    assert!(
        m.starts_with("node a no longer exists") && m.contains(DELETE_VOLUMES_ANNOTATION),
        "{m}"
    );
    w.opt_in = true;
    let m = message(&w);
    assert!(
        m.contains("within 300s")
            && m.contains("PVC app/db is deleted")
            && m.contains("PV are deleted"),
        "{m}"
    );
    w.pvs = vec![pv("v1", "a", Some("db"), "Retain")];
    let m = message(&w);
    assert!(m.contains("PV pvc-v1 has reclaim policy Retain"), "{m}");
}

#[test]
fn opt_in_is_the_annotation_true() {
    let mut c = crate::resources::tests::cluster();
    assert!(!opted_in(&c));
    for (value, want) in [("true", true), ("false", false), ("yes", false)] {
        c.metadata.annotations = Some(BTreeMap::from([(
            DELETE_VOLUMES_ANNOTATION.to_string(),
            value.to_string(),
        )]));
        assert_eq!(opted_in(&c), want, "{value}");
    }
}

#[test]
fn the_operator_holds_what_the_cleanup_does_itself() {
    // Its own rules, not what it holds only to grant it (that could shrink independently).
    use crate::resources::rbac::{OPERATOR_OWN_CLUSTER_RULES, OPERATOR_OWN_NAMESPACE_RULES};
    let holds =
        |rules: &[crate::resources::rbac::Rule], group: &str, resource: &str, verb: &str| {
            rules
                .iter()
                .any(|r| r.0.contains(&group) && r.1.contains(&resource) && r.2.contains(&verb))
        };
    for (group, resource, verbs) in [
        ("", "nodes", &["get", "list", "watch"][..]),
        ("topolvm.io", "logicalvolumes", &["list", "patch", "delete"]),
        ("", "persistentvolumeclaims", &["list", "delete"]),
        ("", "persistentvolumes", &["list", "delete"]),
        ("events.k8s.io", "events", &["create"]),
    ] {
        for verb in verbs {
            assert!(
                holds(OPERATOR_OWN_CLUSTER_RULES, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    for (resource, verbs) in [
        ("lvmvolumegroups", &["list", "patch"][..]),
        ("lvmvolumegroupnodestatuses", &["list", "delete"]),
    ] {
        for verb in verbs {
            assert!(
                holds(
                    OPERATOR_OWN_NAMESPACE_RULES,
                    "lvm.topolvm.io",
                    resource,
                    verb
                ),
                "{verb} {resource}"
            );
        }
    }
}

/// A raw-device PV of `node`, deleted `ago` seconds before NOW (None: not deleted).
fn raw_pv(name: &str, node: &str, ago: Option<i64>) -> PersistentVolume {
    let mut p = PersistentVolume::default();
    p.metadata.name = Some(name.into());
    p.metadata.finalizers = Some(vec![lvms_api::raw::CLEANUP_FINALIZER.into()]);
    p.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node.into(),
            uid: format!("uid-{node}"),
            ..Default::default()
        },
    ]);
    p.metadata.deletion_timestamp = ago.map(|a| Time(at(NOW - a)));
    p
}

#[test]
fn a_removed_nodes_deleted_raw_pvs_are_released_after_the_grace() {
    let w = World {
        nodes: vec!["node-b"],
        raw_pvs: vec![
            raw_pv("local-a-old", "node-a", Some(400)),
            raw_pv("local-a-new", "node-a", Some(10)),
            raw_pv("local-a-kept", "node-a", None),
            raw_pv("local-b-old", "node-b", Some(400)),
        ],
        grace: 300,
        ..Default::default()
    };
    let plan = w.decide();
    assert_eq!(
        plan.actions,
        [Action::ReleaseRawPv {
            node: "node-a".into(),
            name: "local-a-old".into()
        }],
        "only a deleted PV of a gone node, past the grace; never a present node's"
    );
    assert_eq!(
        plan.recheck,
        Some(Duration::from_secs(10)),
        "the younger one is looked at again"
    );
}
