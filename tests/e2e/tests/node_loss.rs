//! Node loss against a real cluster, with a made-up Node: `LVMS_E2E=1 cargo test -p e2e --test
//! node_loss` (skipped otherwise). The Node object is created (tainted, so nothing but
//! tolerate-all daemons lands on it) with what vg-manager would leave behind for it: its
//! finalizer on an LVMVolumeGroup, its LVMVolumeGroupNodeStatus and a LogicalVolume held by its
//! finalizer. The Node is deleted, and the operator must release the first two and mark the
//! volume. The suite's LVMCluster does not opt in to deleting volumes: nothing else may change.
//! Whatever happens, the test removes what it made, the volume's finalizer first.

use std::time::Duration;

use e2e::*;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use lvms_api::names::{LOGICAL_VOLUME_FINALIZER, node_cleanup_finalizer};
use lvms_api::{LVMVolumeGroup, LVMVolumeGroupNodeStatus, LogicalVolume};
use serde_json::json;

/// The LogicalVolume annotation of lvms-operator's node_loss.
const NODE_REMOVED_ANNOTATION: &str = "lvms.topolvm.io/node-removed";
/// The operator sweeps on the Node's deletion event; its periodic pass is at most 300 s away.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_deleted_node_is_released_and_its_volume_marked() {
    let Some(env) = Env::get("a_deleted_node_is_released_and_its_volume_marked").await else {
        return;
    };
    env.ensure_cluster()
        .await
        .unwrap_or_else(|e| panic!("the suite's LVMCluster is not usable: {e}"));
    let node = unique("lvms-e2e-gone");
    let result = body(&env, &node).await;
    let cleanup = cleanup(&env, &node).await;
    match (result, cleanup) {
        (Ok(()), Ok(())) => {}
        (Err(e), c) => panic!("{e}\n(cleanup: {c:?})"),
        (Ok(()), Err(c)) => panic!("test passed but cleanup failed: {c}"),
    }
}

async fn body(env: &Env, node: &str) -> Res<()> {
    let nodes: Api<Node> = Api::all(env.client.clone());
    let vgs: Api<LVMVolumeGroup> = env.api();
    let statuses: Api<LVMVolumeGroupNodeStatus> = env.api();
    let lvs: Api<LogicalVolume> = Api::all(env.client.clone());
    let finalizer = node_cleanup_finalizer(node);

    let fake: Node = serde_json::from_value(json!({
        "metadata": {"name": node, "labels": {E2E_LABEL.0: E2E_LABEL.1}},
        "spec": {"taints": [{"key": "lvms-e2e/fake-node", "effect": "NoSchedule"}]},
    }))
    .map_err(s)?;
    nodes
        .create(&PostParams::default(), &fake)
        .await
        .map_err(|e| format!("creating Node {node}: {e}"))?;
    // What vg-manager on that node would have made.
    let vg = vgs.get(CLASS_THIN_XFS).await.map_err(s)?;
    let mut finalizers = vg.finalizers().to_vec();
    finalizers.push(finalizer.clone());
    vgs.patch(
        CLASS_THIN_XFS,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": finalizers, "resourceVersion": vg.resource_version()}})),
    )
    .await
    .map_err(|e| format!("adding {finalizer}: {e}"))?;
    let report = LVMVolumeGroupNodeStatus::new(node, Default::default());
    statuses
        .create(&PostParams::default(), &report)
        .await
        .map_err(|e| format!("creating the node status: {e}"))?;
    let lv: LogicalVolume = serde_json::from_value(json!({
        "apiVersion": "topolvm.io/v1", "kind": "LogicalVolume",
        "metadata": {"name": node, "finalizers": [LOGICAL_VOLUME_FINALIZER],
                     "labels": {E2E_LABEL.0: E2E_LABEL.1}},
        "spec": {"name": node, "nodeName": node, "size": "1Gi", "deviceClass": CLASS_THIN_XFS},
    }))
    .map_err(s)?;
    lvs.create(&PostParams::default(), &lv)
        .await
        .map_err(|e| format!("creating LogicalVolume {node}: {e}"))?;

    nodes
        .delete(node, &DeleteParams::default())
        .await
        .map_err(|e| format!("deleting Node {node}: {e}"))?;
    wait(
        "the node's finalizer to leave the LVMVolumeGroup",
        CLEANUP_TIMEOUT,
        || async {
            let vg = vgs.get(CLASS_THIN_XFS).await.map_err(s)?;
            match vg.finalizers().contains(&finalizer) {
                false => Ok(Some(())),
                true => Err(format!("finalizers {:?}", vg.finalizers())),
            }
        },
    )
    .await?;
    wait_gone(&statuses, node, CLEANUP_TIMEOUT).await?;
    let marked = wait("the volume to be marked", CLEANUP_TIMEOUT, || async {
        let lv = lvs.get(node).await.map_err(s)?;
        match lv.annotations().get(NODE_REMOVED_ANNOTATION) {
            Some(_) => Ok(Some(lv)),
            None => Err(format!("annotations {:?}", lv.annotations())),
        }
    })
    .await?;
    // Without the opt-in the volume is kept, held as it was.
    if marked.metadata.deletion_timestamp.is_some()
        || marked.finalizers() != [LOGICAL_VOLUME_FINALIZER]
    {
        return Err(format!("the volume was touched: {:?}", marked.metadata));
    }
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={node}"));
    wait("the NodeRemoved event", CLEANUP_TIMEOUT, || async {
        let list = events.list(&lp).await.map_err(s)?;
        match list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("NodeRemoved"))
        {
            true => Ok(Some(())),
            false => Err(format!("{} events, none NodeRemoved", list.items.len())),
        }
    })
    .await
}

/// Removes what the test made, whatever state it is in: absent objects are fine.
async fn cleanup(env: &Env, node: &str) -> Res<()> {
    let mut errors = Vec::new();
    let lvs: Api<LogicalVolume> = Api::all(env.client.clone());
    // No agent will ever release it: the test does, then deletes.
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    if let Err(e) = lvs.patch(node, &PatchParams::default(), &release).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        errors.push(format!("releasing LogicalVolume {node}: {e}"));
    }
    if let Err(e) = delete_and_wait(&lvs, node, OBJECT_TIMEOUT).await {
        errors.push(e);
    }
    let vgs: Api<LVMVolumeGroup> = env.api();
    if let Ok(vg) = vgs.get(CLASS_THIN_XFS).await {
        let finalizer = node_cleanup_finalizer(node);
        if vg.finalizers().contains(&finalizer) {
            let rest: Vec<&String> = vg
                .finalizers()
                .iter()
                .filter(|f| **f != finalizer)
                .collect();
            let patch =
                json!({"metadata": {"finalizers": rest, "resourceVersion": vg.resource_version()}});
            if let Err(e) = vgs
                .patch(
                    CLASS_THIN_XFS,
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                errors.push(format!("removing {finalizer}: {e}"));
            }
        }
    }
    if let Err(e) =
        delete_and_wait(&env.api::<LVMVolumeGroupNodeStatus>(), node, OBJECT_TIMEOUT).await
    {
        errors.push(e);
    }
    if let Err(e) =
        delete_and_wait(&Api::<Node>::all(env.client.clone()), node, OBJECT_TIMEOUT).await
    {
        errors.push(e);
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(errors.join("; ")),
    }
}
