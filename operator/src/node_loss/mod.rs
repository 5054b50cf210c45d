//! Node loss: what the operator does once a Node object is gone. vg-manager on that node will
//! never answer again, so what only it would release is released here:
//!
//! - its cleanup finalizer on every LVMVolumeGroup and its LVMVolumeGroupNodeStatus, at once (so
//!   an LVMCluster deletion cannot hang on it; a node that comes back re-adds both itself);
//! - its LogicalVolumes are marked (annotation [`NODE_REMOVED_ANNOTATION`] with the time, and a
//!   Warning Event). The mark starts a grace period: a Node deleted and re-registered by its
//!   kubelet (a common reset) is back within seconds, and nothing of its volumes may go then;
//! - after the grace: the finalizer of a LogicalVolume someone deleted (its PVC was, and the
//!   CSI controller deleted the volume) is released, or the deletion would wait for ever;
//! - after the grace, and only where the LVMCluster opts in ([`DELETE_VOLUMES_ANNOTATION`]):
//!   the PVCs bound to those volumes are deleted (a StatefulSet then re-creates its claim and it
//!   binds elsewhere); once a claim is gone, its LogicalVolume and its PV (reclaim policy
//!   Delete) are deleted. A PV with reclaim policy Retain stays, with its LogicalVolume: the
//!   user asked to keep it.
//!
//! The decision is a pure function of what the API server holds ([`decide`]); [`sweep`] lists,
//! decides, and carries the actions out, confirming with a fresh GET before each one that the
//! Node is still absent: a list (let alone a cache) may predate a node's re-registration.

mod sweep;
pub use sweep::{node_deletions, sweep};

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use lvms_api::names::{
    CSI_DRIVER_NAME, LOGICAL_VOLUME_FINALIZER, NODE_CLEANUP_FINALIZER_PREFIX, TOPOLOGY_NODE_KEY,
};
use lvms_api::raw::CLEANUP_FINALIZER as RAW_CLEANUP_FINALIZER;
use lvms_api::{LVMCluster, LVMVolumeGroup, LVMVolumeGroupNodeStatus, LogicalVolume};

/// LVMCluster annotation: `"true"` lets the operator delete the volumes (and their PVCs) of
/// removed nodes.
pub const DELETE_VOLUMES_ANNOTATION: &str = "lvms.topolvm.io/delete-volumes-of-removed-nodes";
/// LogicalVolume annotation: when the operator first saw the volume's node gone (RFC 3339).
pub const NODE_REMOVED_ANNOTATION: &str = "lvms.topolvm.io/node-removed";
/// How long a node must stay gone before anything of its volumes is released or deleted.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// How soon to look again while a cleanup is under way (the next step, a claim being deleted).
const FOLLOW_UP: Duration = Duration::from_secs(10);

/// Whether the LVMCluster opts in to deleting the volumes of removed nodes.
pub fn opted_in(cluster: &LVMCluster) -> bool {
    cluster
        .annotations()
        .get(DELETE_VOLUMES_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// What the decision is made from: everything as the API server listed it, in one pass.
pub struct Observed<'a> {
    /// Names of the Nodes that exist (Ready or not: only absence counts).
    pub nodes: &'a BTreeSet<String>,
    pub volume_groups: &'a [LVMVolumeGroup],
    pub node_statuses: &'a [LVMVolumeGroupNodeStatus],
    pub volumes: &'a [LogicalVolume],
    /// PVs and PVCs: only needed (and listed) with `delete_volumes`.
    pub pvs: &'a [PersistentVolume],
    pub pvcs: &'a [PersistentVolumeClaim],
    /// The raw-device PVs of every node (label `lvms.topolvm.io/node`), always listed.
    pub raw_pvs: &'a [PersistentVolume],
    pub delete_volumes: bool,
    pub grace: Duration,
    pub now: Timestamp,
}

/// One write. Every action that concerns a node names it, so the executor can confirm the node
/// is still gone right before acting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Remove `cleanup.vgmanager.node.topolvm.io/<node>` from an LVMVolumeGroup.
    ReleaseVolumeGroup { node: String, volume_group: String },
    /// Delete the node's LVMVolumeGroupNodeStatus (preconditions: this uid and version).
    DeleteNodeStatus {
        node: String,
        name: String,
        uid: String,
        resource_version: String,
    },
    /// Annotate the LogicalVolume with `at`, after a Warning Event saying what will happen.
    MarkVolume {
        node: String,
        volume: String,
        at: String,
        message: String,
    },
    /// The node exists again: drop the mark (which restarts the grace if it goes again).
    UnmarkVolume { volume: String },
    DeleteVolume {
        node: String,
        volume: String,
        uid: String,
    },
    /// Remove `topolvm.io/logicalvolume` from a LogicalVolume that is being deleted.
    ReleaseVolume { node: String, volume: String },
    /// Delete a PVC bound to a volume of the node (precondition: this uid, so a claim a
    /// StatefulSet re-created under the same name is never touched).
    DeleteClaim {
        node: String,
        namespace: String,
        name: String,
        uid: String,
        pv: String,
    },
    DeletePv {
        node: String,
        name: String,
        uid: String,
    },
    /// Remove `lvms.topolvm.io/raw-cleanup` from a raw-device PV of the node that is being
    /// deleted: its disk went with the node, and no agent will ever clean it.
    ReleaseRawPv { node: String, name: String },
}

impl Action {
    /// The node that must still be absent when the action runs.
    pub fn node(&self) -> Option<&str> {
        match self {
            Action::UnmarkVolume { .. } => None,
            Action::ReleaseVolumeGroup { node, .. }
            | Action::DeleteNodeStatus { node, .. }
            | Action::MarkVolume { node, .. }
            | Action::DeleteVolume { node, .. }
            | Action::ReleaseVolume { node, .. }
            | Action::DeleteClaim { node, .. }
            | Action::DeletePv { node, .. }
            | Action::ReleaseRawPv { node, .. } => Some(node),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// In order: for one volume, its deletion comes before the release of its finalizer.
    pub actions: Vec<Action>,
    /// When to look again, if something is pending (a grace running out, a claim going).
    pub recheck: Option<Duration>,
}

impl Plan {
    fn push(&mut self, action: Action) {
        self.actions.push(action);
        self.soon(FOLLOW_UP);
    }

    fn soon(&mut self, after: Duration) {
        self.recheck = Some(self.recheck.map_or(after, |r| r.min(after)));
    }
}

/// The actions that the observed state calls for. Idempotent: once they are done, it calls for
/// none (a mark already there is not re-made; nothing already deleting is deleted again).
pub fn decide(o: &Observed) -> Plan {
    let gone = |node: &str| !node.is_empty() && !o.nodes.contains(node);
    let mut plan = Plan::default();

    for vg in o.volume_groups {
        for node in vg
            .finalizers()
            .iter()
            .filter_map(|f| f.strip_prefix(NODE_CLEANUP_FINALIZER_PREFIX))
            .filter(|n| gone(n))
        {
            plan.push(Action::ReleaseVolumeGroup {
                node: node.into(),
                volume_group: vg.name_any(),
            });
        }
    }
    for s in o.node_statuses.iter().filter(|s| gone(&s.name_any())) {
        plan.push(Action::DeleteNodeStatus {
            node: s.name_any(),
            name: s.name_any(),
            uid: s.uid().unwrap_or_default(),
            resource_version: s.resource_version().unwrap_or_default(),
        });
    }

    raw_pvs(o, &gone, &mut plan);

    for lv in o.volumes {
        let node = lv.spec.node_name.as_str();
        let mark = lv.annotations().get(NODE_REMOVED_ANNOTATION);
        if !gone(node) {
            if mark.is_some() && !node.is_empty() {
                plan.push(Action::UnmarkVolume {
                    volume: lv.name_any(),
                });
            }
            continue;
        }
        volume_of_removed_node(o, lv, mark, &mut plan);
    }

    // A PV whose LogicalVolume is already gone (deleted by an earlier pass that crashed before
    // the PV, or by hand): only its node affinity tells where it was. Its claim gone and its
    // reclaim policy Delete, it is what the external-provisioner would delete anyway.
    if o.delete_volumes {
        for pv in o.pvs {
            let Some(handle) = volume_handle(pv) else {
                continue;
            };
            if o.volumes.iter().any(|lv| is_volume(lv, handle)) {
                continue;
            }
            let Some(node) = pv_node(pv).filter(|n| gone(n)) else {
                continue;
            };
            if reclaims(pv) && live_claim(pv, o.pvcs).is_none() && !deleting_pv(pv) {
                plan.push(Action::DeletePv {
                    node: node.into(),
                    name: pv.name_any(),
                    uid: pv.uid().unwrap_or_default(),
                });
            }
        }
    }
    plan
}

/// The actions for one LogicalVolume whose node is gone.
fn volume_of_removed_node(
    o: &Observed,
    lv: &LogicalVolume,
    mark: Option<&String>,
    plan: &mut Plan,
) {
    let node = lv.spec.node_name.as_str();
    let volume = lv.name_any();
    let pvs: Vec<&PersistentVolume> = o
        .pvs
        .iter()
        .filter(|pv| volume_handle(pv).is_some_and(|h| is_volume(lv, h)))
        .collect();
    // A mark that does not parse (edited by hand) is made again: the grace starts now.
    let marked_at = match mark.and_then(|m| m.parse::<Timestamp>().ok()) {
        Some(at) => at,
        None => {
            let at = Timestamp::from_second(o.now.as_second()).unwrap_or(o.now);
            plan.push(Action::MarkVolume {
                node: node.into(),
                volume: volume.clone(),
                at: at.to_string(),
                message: mark_message(o, lv, &pvs),
            });
            at
        }
    };
    let deleting = lv.metadata.deletion_timestamp.is_some();
    let holds = lv
        .finalizers()
        .iter()
        .any(|f| f == LOGICAL_VOLUME_FINALIZER);
    let elapsed = o.now.as_second().saturating_sub(marked_at.as_second());
    let grace = i64::try_from(o.grace.as_secs()).unwrap_or(i64::MAX);
    if elapsed < grace {
        // Look again when the grace is over, if anything is due then.
        if o.delete_volumes || (deleting && holds) {
            plan.soon(Duration::from_secs((grace - elapsed).unsigned_abs()));
        }
        return;
    }

    let mut delete = false;
    if o.delete_volumes {
        // The claim goes first: the volume and its PV only once nothing is bound to them, so a
        // claim whose deletion waits (a pod still uses it) keeps a whole volume under it.
        let mut keep = false;
        for pv in &pvs {
            if let Some(pvc) = live_claim(pv, o.pvcs) {
                keep = true;
                if pvc.metadata.deletion_timestamp.is_none() {
                    plan.push(Action::DeleteClaim {
                        node: node.into(),
                        namespace: pvc.namespace().unwrap_or_default(),
                        name: pvc.name_any(),
                        uid: pvc.uid().unwrap_or_default(),
                        pv: pv.name_any(),
                    });
                } else {
                    // kubernetes.io/pvc-protection holds it while a pod uses it; the pod GC
                    // deletes the pods of a deleted node. Nothing to force: wait.
                    plan.soon(FOLLOW_UP);
                }
            }
            keep |= !reclaims(pv);
        }
        if !keep {
            delete = true;
            if !deleting {
                plan.push(Action::DeleteVolume {
                    node: node.into(),
                    volume: volume.clone(),
                    uid: lv.uid().unwrap_or_default(),
                });
            }
            for pv in pvs.iter().filter(|pv| !deleting_pv(pv)) {
                plan.push(Action::DeletePv {
                    node: node.into(),
                    name: pv.name_any(),
                    uid: pv.uid().unwrap_or_default(),
                });
            }
        }
    }
    if holds && (deleting || delete) {
        plan.push(Action::ReleaseVolume {
            node: node.into(),
            volume,
        });
    }
}

/// The Warning Event's note on a newly marked volume: what happens next, and what the user can do.
fn mark_message(o: &Observed, lv: &LogicalVolume, pvs: &[&PersistentVolume]) -> String {
    let node = &lv.spec.node_name;
    let grace = o.grace.as_secs();
    let mut m = format!("node {node} no longer exists: this volume's data is out of reach.");
    if !o.delete_volumes {
        m += &format!(
            " Nothing is deleted: delete its PVC when its data is given up (the operator then \
             releases this LogicalVolume), or set the annotation {DELETE_VOLUMES_ANNOTATION}: \
             \"true\" on the LVMCluster to have the operator delete the volumes of removed nodes."
        );
        return m;
    }
    m += &format!(" Unless the node returns within {grace}s,");
    let claims: Vec<String> = pvs
        .iter()
        .filter_map(|pv| live_claim(pv, o.pvcs))
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    if !claims.is_empty() {
        m += &format!(" its PVC {} is deleted, then", claims.join(", "));
    }
    let retained: Vec<String> = pvs
        .iter()
        .filter(|pv| !reclaims(pv))
        .map(|pv| pv.name_any())
        .collect();
    if retained.is_empty() {
        m += " this LogicalVolume and its PV are deleted.";
    } else {
        m += &format!(
            " nothing else: PV {} has reclaim policy Retain, so it stays with this \
             LogicalVolume; delete both when done (the operator releases the LogicalVolume).",
            retained.join(", ")
        );
    }
    m
}

/// The CSI volume handle of one of our PVs.
fn volume_handle(pv: &PersistentVolume) -> Option<&str> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == CSI_DRIVER_NAME && !csi.volume_handle.is_empty())
        .then_some(csi.volume_handle.as_str())
}

/// Whether `handle` is this LogicalVolume's volume ID: the one the node reported, or the UID,
/// which it is (as the CSI controller finds volumes).
fn is_volume(lv: &LogicalVolume, handle: &str) -> bool {
    lv.status.as_ref().is_some_and(|s| s.volume_id == handle)
        || lv.metadata.uid.as_deref() == Some(handle)
}

/// The node of a PV from its required node affinity on the TopoLVM topology key.
/// A raw-device PV of a removed node, deleted (by the garbage collector, its owner Node being
/// gone) and held by the agent's cleanup finalizer: released once the node is gone for the
/// grace, measured from the deletion. A Node that re-registers within it (a new uid, so the PVs
/// were deleted all the same) has its agent clean the disks first.
fn raw_pvs(o: &Observed, gone: &dyn Fn(&str) -> bool, plan: &mut Plan) {
    let grace = i64::try_from(o.grace.as_secs()).unwrap_or(i64::MAX);
    for pv in o.raw_pvs {
        let Some(node) = pv
            .owner_references()
            .iter()
            .find(|r| r.kind == "Node")
            .map(|r| r.name.as_str())
            .filter(|n| gone(n))
        else {
            continue;
        };
        let Some(deleted) = &pv.metadata.deletion_timestamp else {
            continue;
        };
        if !pv.finalizers().iter().any(|f| f == RAW_CLEANUP_FINALIZER) {
            continue;
        }
        let elapsed = o.now.as_second().saturating_sub(deleted.0.as_second());
        if elapsed < grace {
            plan.soon(Duration::from_secs((grace - elapsed).unsigned_abs()));
            continue;
        }
        plan.push(Action::ReleaseRawPv {
            node: node.into(),
            name: pv.name_any(),
        });
    }
}

fn pv_node(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == TOPOLOGY_NODE_KEY && e.operator == "In")
        .and_then(|e| match e.values.as_deref() {
            Some([one]) => Some(one.as_str()),
            _ => None,
        })
}

/// Whether the PV goes with its claim. Unset counts as Retain: keeping is the safe side.
fn reclaims(pv: &PersistentVolume) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete")
}

fn deleting_pv(pv: &PersistentVolume) -> bool {
    pv.metadata.deletion_timestamp.is_some()
}

/// The PVC the PV is bound to, if it still exists: the same uid as the claimRef (a claim
/// re-created under the same name is another claim), or, for a claimRef without uid, the claim
/// of that name naming this PV.
fn live_claim<'a>(
    pv: &PersistentVolume,
    pvcs: &'a [PersistentVolumeClaim],
) -> Option<&'a PersistentVolumeClaim> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    pvcs.iter().find(|c| {
        c.namespace() == r.namespace
            && Some(c.name_any()) == r.name
            && match &r.uid {
                Some(uid) => c.uid().as_ref() == Some(uid),
                None => {
                    c.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                        == pv.metadata.name.as_deref()
                }
            }
    })
}

#[cfg(test)]
mod tests;
