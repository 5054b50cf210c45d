//! Carrying out the node-loss plan: list, [`decide`], then each action after a fresh GET of its
//! Node. Every write is guarded (a uid or resourceVersion precondition, a finalizer list written
//! at the version it was computed from), so an object that changed since it was listed (a node
//! back, re-registering) answers 409 and is looked at again on the next pass. A failed action is
//! logged and retried by the next pass; it never fails the LVMCluster's reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use lvms_api::names::{LOGICAL_VOLUME_FINALIZER, node_cleanup_finalizer};
use lvms_api::{LVMCluster, LVMVolumeGroup, LVMVolumeGroupNodeStatus, LogicalVolume};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use super::{Action, NODE_REMOVED_ANNOTATION, Observed, decide, opted_in};
use crate::reconcile::Context;

/// How soon to retry after a failed list or action.
const RETRY: Duration = Duration::from_secs(15);

/// A trigger for every Node deletion, and after every (re)list of Nodes, when a deletion may
/// have gone unseen. Metadata only: Node objects are large and change often.
pub fn node_deletions(client: kube::Client) -> impl Stream<Item = ()> + Send + 'static {
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client);
    watcher(nodes, watcher::Config::default())
        .default_backoff()
        .filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Delete(node)) => {
                    info!(node = %node.name_any(), "node deleted: sweeping what it held");
                    Some(())
                }
                Ok(watcher::Event::InitDone) => Some(()),
                Ok(_) => None,
                // Retried with backoff; a lasting one (RBAC) must be seen. The periodic pass
                // still sweeps meanwhile.
                Err(e) => {
                    warn!(%e, "watching nodes");
                    None
                }
            }
        })
}

/// One sweep for `cluster` (the active LVMCluster). Returns when to look again, if anything is
/// pending.
pub async fn sweep(ctx: &Context, cluster: &LVMCluster) -> Option<Duration> {
    match sweep_inner(ctx, cluster).await {
        Ok(recheck) => recheck,
        Err(e) => {
            warn!(error = %e, "node-loss sweep");
            Some(RETRY)
        }
    }
}

async fn sweep_inner(ctx: &Context, cluster: &LVMCluster) -> Result<Option<Duration>, String> {
    let c = &ctx.client;
    let ns = &ctx.config.namespace;
    let delete_volumes = opted_in(cluster);
    // The lists are independent: one round trip for all of them, not six.
    let nodes_api = Api::<Node>::all(c.clone());
    let node_names = async {
        nodes_api
            .list_metadata(&ListParams::default())
            .await
            .map_err(|e| format!("listing Nodes: {e}"))
            .map(|l| {
                l.items
                    .into_iter()
                    .map(|n| n.name_any())
                    .collect::<BTreeSet<String>>()
            })
    };
    let vgs_api: Api<LVMVolumeGroup> = Api::namespaced(c.clone(), ns);
    let statuses_api: Api<LVMVolumeGroupNodeStatus> = Api::namespaced(c.clone(), ns);
    let lvs_api: Api<LogicalVolume> = Api::all(c.clone());
    let pvs_api: Api<PersistentVolume> = Api::all(c.clone());
    let pvcs_api: Api<PersistentVolumeClaim> = Api::all(c.clone());
    // Only deletions look at claims and PVs: without the opt-in, no cluster-wide lists of them.
    let claims = async {
        if delete_volumes {
            futures::future::try_join(
                list(&pvs_api, "PersistentVolumes"),
                list(&pvcs_api, "PersistentVolumeClaims"),
            )
            .await
        } else {
            Ok((Vec::new(), Vec::new()))
        }
    };
    // Raw-device PVs carry their node's label: listed by it, whatever the opt-in.
    let raw = async {
        pvs_api
            .list(&ListParams::default().labels(lvms_api::raw::NODE_LABEL))
            .await
            .map(|l| l.items)
            .map_err(|e| format!("listing raw-device PersistentVolumes: {e}"))
    };
    let (nodes, vgs, statuses, lvs, (pvs, pvcs), raw_pvs) = futures::try_join!(
        node_names,
        list(&vgs_api, "LVMVolumeGroups"),
        list(&statuses_api, "LVMVolumeGroupNodeStatuses"),
        list(&lvs_api, "LogicalVolumes"),
        claims,
        raw,
    )?;
    let plan = decide(&Observed {
        nodes: &nodes,
        volume_groups: &vgs,
        node_statuses: &statuses,
        volumes: &lvs,
        pvs: &pvs,
        pvcs: &pvcs,
        raw_pvs: &raw_pvs,
        delete_volumes,
        grace: ctx.config.removed_node_grace,
        now: Timestamp::now(),
    });
    if plan.actions.is_empty() {
        return Ok(plan.recheck);
    }

    let mut run = Run {
        ctx,
        nodes: Api::all(c.clone()),
        vgs: vgs.into_iter().map(|v| (v.name_any(), v)).collect(),
        lvs: lvs.into_iter().map(|v| (v.name_any(), v)).collect(),
        pvcs,
        raw_pvs: raw_pvs.into_iter().map(|v| (v.name_any(), v)).collect(),
        failed: false,
    };
    for action in &plan.actions {
        if let Some(node) = action.node()
            && !run.still_gone(node).await
        {
            continue;
        }
        if let Err(e) = run.act(action).await {
            warn!(?action, error = %e, "node-loss cleanup step failed; retrying on the next pass");
            run.failed = true;
        }
    }
    Ok(match (plan.recheck, run.failed) {
        (Some(r), true) => Some(r.min(RETRY)),
        (r, false) => r,
        (None, true) => Some(RETRY),
    })
}

async fn list<K>(api: &Api<K>, what: &str) -> Result<Vec<K>, String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing {what}: {e}"))
}

/// One pass's execution state: the objects as last written, so that two writes to one object
/// in a pass (a mark, then a release) each carry its current resourceVersion.
struct Run<'a> {
    ctx: &'a Context,
    nodes: Api<Node>,
    vgs: BTreeMap<String, LVMVolumeGroup>,
    lvs: BTreeMap<String, LogicalVolume>,
    pvcs: Vec<PersistentVolumeClaim>,
    raw_pvs: BTreeMap<String, PersistentVolume>,
    failed: bool,
}

impl Run<'_> {
    /// Whether the Node is absent now, by a GET (never from a list or cache). A Node present
    /// (re-created under the same name, whatever its UID) or an error: not gone.
    async fn still_gone(&mut self, node: &str) -> bool {
        match self.nodes.get_metadata_opt(node).await {
            Ok(None) => true,
            Ok(Some(_)) => {
                info!(node, "node exists again: leaving what it holds alone");
                false
            }
            Err(e) => {
                warn!(node, error = %e, "could not confirm the node is gone");
                self.failed = true;
                false
            }
        }
    }

    async fn act(&mut self, action: &Action) -> Result<(), String> {
        let c = &self.ctx.client;
        let ns = &self.ctx.config.namespace;
        match action {
            Action::ReleaseVolumeGroup { node, volume_group } => {
                let Some(vg) = self.vgs.get_mut(volume_group) else {
                    return Ok(());
                };
                let api = Api::namespaced(c.clone(), ns);
                info!(node, volume_group, "releasing a removed node's finalizer");
                release(&api, vg, &node_cleanup_finalizer(node)).await
            }
            Action::DeleteNodeStatus {
                node,
                name,
                uid,
                resource_version,
            } => {
                info!(node, "deleting a removed node's LVMVolumeGroupNodeStatus");
                let api: Api<LVMVolumeGroupNodeStatus> = Api::namespaced(c.clone(), ns);
                let params = guarded(uid, Some(resource_version));
                delete(&api, name, &params).await.map(drop)
            }
            Action::MarkVolume {
                node,
                volume,
                at,
                message,
            } => {
                let Some(lv) = self.lvs.get_mut(volume) else {
                    return Ok(());
                };
                // The Event first: a crash before the annotation repeats it, never loses it.
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "NodeRemoved".into(),
                    note: Some(message.chars().take(1024).collect()),
                    action: "MarkVolume".into(),
                    secondary: None,
                };
                if let Err(e) = self.ctx.recorder.publish(&ev, &lv.object_ref(&())).await {
                    warn!(%e, volume, "could not publish an event");
                }
                info!(node, volume, "marking a volume of a removed node");
                annotate(&Api::all(c.clone()), lv, json!(at)).await
            }
            Action::UnmarkVolume { volume } => {
                let Some(lv) = self.lvs.get_mut(volume) else {
                    return Ok(());
                };
                info!(volume, node = %lv.spec.node_name, "the volume's node is back: unmarking");
                annotate(&Api::all(c.clone()), lv, json!(null)).await
            }
            Action::DeleteVolume { node, volume, uid } => {
                info!(node, volume, "deleting a volume of a removed node");
                let api: Api<LogicalVolume> = Api::all(c.clone());
                match delete(&api, volume, &guarded(uid, None)).await? {
                    Some(latest) => self.lvs.insert(volume.clone(), latest),
                    None => self.lvs.remove(volume),
                };
                Ok(())
            }
            Action::ReleaseVolume { node, volume } => {
                let Some(lv) = self.lvs.get_mut(volume) else {
                    return Ok(());
                };
                // Only a volume someone deleted: one still wanted keeps its finalizer.
                if lv.metadata.deletion_timestamp.is_none() {
                    return Ok(());
                }
                info!(
                    node,
                    volume, "releasing the finalizer of a removed node's volume"
                );
                release(&Api::all(c.clone()), lv, LOGICAL_VOLUME_FINALIZER).await
            }
            Action::DeleteClaim {
                node,
                namespace,
                name,
                uid,
                pv,
            } => {
                info!(
                    node,
                    namespace, name, pv, "deleting a claim of a removed node's volume"
                );
                let api: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), namespace);
                delete(&api, name, &guarded(uid, None)).await?;
                if let Some(pvc) = self.pvcs.iter().find(|p| p.uid().as_ref() == Some(uid)) {
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "VolumeOfRemovedNode".into(),
                        note: Some(format!(
                            "deleted by lvms-operator: its volume {pv} was on node {node}, which \
                             no longer exists; a StatefulSet re-creates the claim elsewhere"
                        )),
                        action: "DeleteClaim".into(),
                        secondary: None,
                    };
                    if let Err(e) = self.ctx.recorder.publish(&ev, &pvc.object_ref(&())).await {
                        warn!(%e, namespace, name, "could not publish an event");
                    }
                }
                Ok(())
            }
            Action::ReleaseRawPv { node, name } => {
                let Some(pv) = self.raw_pvs.get_mut(name) else {
                    return Ok(());
                };
                info!(
                    node,
                    pv = name,
                    "releasing the cleanup finalizer of a removed node's raw-device PV"
                );
                release(&Api::all(c.clone()), pv, lvms_api::raw::CLEANUP_FINALIZER).await
            }
            Action::DeletePv { node, name, uid } => {
                info!(
                    node,
                    pv = name,
                    "deleting the PV of a removed node's volume"
                );
                let api: Api<PersistentVolume> = Api::all(c.clone());
                delete(&api, name, &guarded(uid, None)).await.map(drop)
            }
        }
    }
}

/// Delete options that only delete the object that was decided on.
fn guarded(uid: &str, resource_version: Option<&String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
            resource_version: resource_version.filter(|v| !v.is_empty()).cloned(),
        }),
        ..DeleteParams::background()
    }
}

/// Deletes; returns the object as it stays (being deleted, held by finalizers), None once gone.
async fn delete<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<Option<K>, String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, params).await {
        Ok(either) => Ok(either.left()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(format!("deleting {name}: {e}")),
    }
}

/// Writes `finalizer` out of `obj`'s list at the version the list was read at (a concurrent
/// writer's change is a 409, never overwritten), and keeps `obj` current.
async fn release<K>(api: &Api<K>, obj: &mut K, finalizer: &str) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if !obj.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let rest: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let patch =
        json!({"metadata": {"finalizers": rest, "resourceVersion": obj.resource_version()}});
    merge(api, obj, &patch, &format!("removing {finalizer} from")).await
}

/// Merge-patches `obj` and keeps what the server answered (its new resourceVersion, for the next
/// guarded write); an object gone already is fine.
async fn merge<K>(
    api: &Api<K>,
    obj: &mut K,
    patch: &serde_json::Value,
    what: &str,
) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(latest) => {
            *obj = latest;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(format!("{what} {name}: {e}")),
    }
}

/// Sets (or, with null, removes) the node-removed annotation.
async fn annotate(
    api: &Api<LogicalVolume>,
    lv: &mut LogicalVolume,
    value: serde_json::Value,
) -> Result<(), String> {
    let patch = json!({"metadata": {"annotations": {NODE_REMOVED_ANNOTATION: value}}});
    merge(api, lv, &patch, "annotating LogicalVolume").await
}
