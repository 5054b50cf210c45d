//! Node loss end to end against the in-process API double: a Node is deleted, the LVMCluster's
//! reconcile runs, and what the API server then holds is asserted. node-a goes; node-b stays
//! NotReady (its object present, Ready False) and keeps everything throughout.
//!
//! The double does not run Kubernetes' controllers: what they would do is done here by hand and
//! said so (the pvc-protection controller releasing a claim once its pod is gone, the CSI
//! controller deleting a LogicalVolume, vg-manager releasing its own finalizer).

use std::sync::Arc;
use std::time::Duration;

use api_double::ApiDouble;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams};
use kube::runtime::events::{Recorder, Reporter};
use lvms_api::LVMCluster;
use lvms_operator::config::Config;
use lvms_operator::metrics::Metrics;
use lvms_operator::node_loss::{DELETE_VOLUMES_ANNOTATION, NODE_REMOVED_ANNOTATION};
use lvms_operator::reconcile::{Context, reconcile};
use serde_json::{Value, json};

const NS: &str = "openshift-storage";
const NODES: &str = "api/v1/nodes";
const CLUSTERS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmclusters";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const REPORTS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses";
const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";
const PVS: &str = "api/v1/persistentvolumes";
const PVCS: &str = "api/v1/persistentvolumeclaims";
const EVENTS: &str = "apis/events.k8s.io/v1/events";
const LV_FINALIZER: &str = "topolvm.io/logicalvolume";

struct Harness {
    api: ApiDouble,
    ctx: Arc<Context>,
}

impl Harness {
    /// node-a, node-b (NotReady), the LVMCluster reconciled once, both nodes reporting and
    /// holding their finalizers, and one volume with its PV and claim on each node.
    async fn new(opt_in: bool, grace: Duration, client: Option<kube::Client>) -> Self {
        let api = ApiDouble::new();
        Self::with(
            api.clone(),
            opt_in,
            grace,
            client.unwrap_or_else(|| api.client()),
        )
        .await
    }

    async fn with(api: ApiDouble, opt_in: bool, grace: Duration, client: kube::Client) -> Self {
        let reporter = Reporter {
            controller: "lvms-operator".into(),
            instance: Some("test".into()),
        };
        let config = Config {
            removed_node_grace: grace,
            ..Config::default()
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let ctx = Arc::new(
            Context::new(client, config, recorder, Arc::new(Metrics::default()))
                .with_applied_ttl(Duration::ZERO),
        );
        for (name, ready) in [("node-a", "True"), ("node-b", "False")] {
            api.seed(NODES, node(name, ready));
        }
        let annotations = if opt_in {
            json!({DELETE_VOLUMES_ANNOTATION: "true"})
        } else {
            json!({})
        };
        api.seed(
            CLUSTERS,
            json!({
                "apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMCluster",
                "metadata": {"name": "lvmcluster", "namespace": NS, "annotations": annotations},
                "spec": {"storage": {"deviceClasses": [
                    {"name": "fast", "default": true, "fstype": "xfs",
                     "deviceSelector": {"paths": ["/dev/nvme1n1"]},
                     "thinPoolConfig": {"name": "thin-pool-1", "sizePercent": 90, "overprovisionRatio": 10}},
                ]}},
            }),
        );
        let h = Self { api, ctx };
        h.reconcile().await;
        // What vg-manager does on each node: hold a finalizer, report.
        h.api.patch(
            VGS,
            Some(NS),
            "fast",
            json!({"metadata": {"finalizers": [
                "cleanup.vgmanager.node.topolvm.io/node-a",
                "cleanup.vgmanager.node.topolvm.io/node-b",
            ]}}),
        );
        for n in ["node-a", "node-b"] {
            h.api.seed(
                REPORTS,
                json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroupNodeStatus",
                       "metadata": {"name": n, "namespace": NS},
                       "spec": {"nodeStatus": [{"name": "fast", "status": "Ready", "devices": ["/dev/nvme1n1"]}]}}),
            );
        }
        h.volume("a", "node-a", "Delete");
        h.volume("b", "node-b", "Delete");
        h
    }

    /// A LogicalVolume `lv-<id>` on `node` (held by its agent), its PV `pvc-<id>` and the claim
    /// `app/data-<id>` bound to it, which a pod uses (pvc-protection).
    fn volume(&self, id: &str, node: &str, policy: &str) {
        let lv = self.api.seed(
            LVS,
            json!({"apiVersion": "topolvm.io/v1", "kind": "LogicalVolume",
                   "metadata": {"name": format!("lv-{id}"), "finalizers": [LV_FINALIZER]},
                   "spec": {"name": format!("pvc-{id}"), "nodeName": node, "size": "1Gi", "deviceClass": "fast"}}),
        );
        let volume_id = lv["metadata"]["uid"].as_str().unwrap().to_string();
        self.api.patch(
            LVS,
            None,
            &format!("lv-{id}"),
            json!({"status": {"volumeID": volume_id}}),
        );
        let pvc = self.api.seed(
            PVCS,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": format!("data-{id}"), "namespace": "app",
                                "finalizers": ["kubernetes.io/pvc-protection"]},
                   "spec": {"storageClassName": "lvms-fast", "volumeName": format!("pvc-{id}")},
                   "status": {"phase": "Bound"}}),
        );
        self.api.seed(
            PVS,
            json!({"apiVersion": "v1", "kind": "PersistentVolume",
                   "metadata": {"name": format!("pvc-{id}"), "finalizers": ["kubernetes.io/pv-protection"]},
                   "spec": {
                       "csi": {"driver": "topolvm.io", "volumeHandle": volume_id},
                       "claimRef": {"namespace": "app", "name": format!("data-{id}"), "uid": pvc["metadata"]["uid"]},
                       "persistentVolumeReclaimPolicy": policy,
                       "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "topology.topolvm.io/node", "operator": "In", "values": [node]}]}]}},
                   },
                   "status": {"phase": "Bound"}}),
        );
    }

    async fn reconcile(&self) {
        let c: LVMCluster =
            serde_json::from_value(self.api.get(CLUSTERS, Some(NS), "lvmcluster").unwrap())
                .unwrap();
        reconcile(Arc::new(c), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
    }

    /// Deletes a Node as `kubectl delete node` does.
    async fn delete_node(&self, name: &str) {
        Api::<Node>::all(self.api.client())
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    fn vg_finalizers(&self) -> Vec<String> {
        let vg = self.api.get(VGS, Some(NS), "fast").unwrap();
        serde_json::from_value(vg["metadata"]["finalizers"].clone()).unwrap_or_default()
    }

    fn reports(&self) -> Vec<String> {
        names(&self.api.list(REPORTS))
    }

    fn lv(&self, id: &str) -> Option<Value> {
        self.api.get(LVS, None, &format!("lv-{id}"))
    }

    fn mark(&self, id: &str) -> Option<String> {
        self.lv(id)?["metadata"]["annotations"][NODE_REMOVED_ANNOTATION]
            .as_str()
            .map(String::from)
    }

    fn claim(&self, id: &str) -> Option<Value> {
        self.api.get(PVCS, Some("app"), &format!("data-{id}"))
    }

    fn claim_deleting(&self, id: &str) -> bool {
        self.claim(id)
            .is_some_and(|c| c["metadata"].get("deletionTimestamp").is_some())
    }

    fn pv(&self, id: &str) -> Option<Value> {
        self.api.get(PVS, None, &format!("pvc-{id}"))
    }

    /// The pod GC deleted the pod of the removed node; the pvc-protection controller then lets
    /// the claim go (the double models neither).
    fn pod_gone(&self, id: &str) {
        self.api.patch(
            PVCS,
            Some("app"),
            &format!("data-{id}"),
            json!({"metadata": {"finalizers": null}}),
        );
    }

    fn events(&self, reason: &str, about: &str) -> usize {
        self.api
            .list(EVENTS)
            .iter()
            .filter(|e| e["reason"] == reason && e["regarding"]["name"] == about)
            .count()
    }

    /// Node b, NotReady all along, has everything it had.
    fn node_b_untouched(&self) {
        assert!(
            self.vg_finalizers()
                .contains(&"cleanup.vgmanager.node.topolvm.io/node-b".to_string())
        );
        assert!(self.reports().contains(&"node-b".to_string()));
        assert_eq!(self.mark("b"), None);
        assert_eq!(
            self.lv("b").unwrap()["metadata"]["finalizers"],
            json!([LV_FINALIZER])
        );
        assert!(self.claim("b").is_some() && !self.claim_deleting("b"));
        assert!(self.pv("b").is_some());
    }
}

fn node(name: &str, ready: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""}},
           "status": {"conditions": [{"type": "Ready", "status": ready}]}})
}

fn names(objects: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "current_thread")]
async fn without_the_opt_in_only_what_the_node_held_is_released() {
    let h = Harness::new(false, Duration::ZERO, None).await;
    h.reconcile().await;
    assert_eq!(h.vg_finalizers().len(), 2, "both nodes exist: nothing done");
    assert_eq!(h.mark("a"), None);

    h.delete_node("node-a").await;
    h.reconcile().await;
    assert_eq!(
        h.vg_finalizers(),
        ["cleanup.vgmanager.node.topolvm.io/node-b"]
    );
    assert_eq!(h.reports(), ["node-b"]);
    let marked = h.mark("a").expect("the volume is marked");
    assert!(marked.parse::<Timestamp>().is_ok(), "{marked}");
    assert_eq!(h.events("NodeRemoved", "lv-a"), 1);
    // Nothing of the volume is touched without the opt-in (even with the grace over).
    assert_eq!(
        h.lv("a").unwrap()["metadata"]["finalizers"],
        json!([LV_FINALIZER])
    );
    assert!(h.claim("a").is_some() && !h.claim_deleting("a"));
    assert!(h.pv("a").is_some());
    h.node_b_untouched();

    // Idempotent: the mark and its Event are made once.
    h.reconcile().await;
    assert_eq!(h.mark("a"), Some(marked));
    assert_eq!(h.events("NodeRemoved", "lv-a"), 1);

    // The user gives the data up: deletes the claim; the CSI controller deletes the volume
    // (the external-provisioner's DeleteVolume). Only the dead agent could release it: the
    // operator does.
    h.pod_gone("a");
    Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(h.api.client(), "app")
        .delete("data-a", &DeleteParams::default())
        .await
        .unwrap();
    Api::<lvms_api::LogicalVolume>::all(h.api.client())
        .delete("lv-a", &DeleteParams::default())
        .await
        .unwrap();
    assert!(h.lv("a").is_some(), "held by its finalizer");
    h.reconcile().await;
    assert!(h.lv("a").is_none(), "released, so the deletion completes");
    h.node_b_untouched();
}

#[tokio::test(flavor = "current_thread")]
async fn with_the_opt_in_the_claims_volumes_and_pvs_of_a_removed_node_go() {
    let h = Harness::new(true, Duration::ZERO, None).await;
    h.volume("r", "node-a", "Retain");
    h.delete_node("node-a").await;

    h.reconcile().await;
    assert_eq!(
        h.vg_finalizers(),
        ["cleanup.vgmanager.node.topolvm.io/node-b"]
    );
    assert_eq!(h.reports(), ["node-b"]);
    assert!(h.mark("a").is_some() && h.mark("r").is_some());
    // The claims are deleted first; a pod still holds them (pvc-protection): nothing forced.
    assert!(h.claim_deleting("a") && h.claim_deleting("r"));
    assert_eq!(h.events("VolumeOfRemovedNode", "data-a"), 1);
    assert!(
        h.lv("a").is_some() && h.pv("a").is_some(),
        "kept under a claim"
    );
    h.reconcile().await;
    assert!(h.lv("a").is_some() && h.pv("a").is_some(), "still kept");

    // The pod GC deletes the pods of the deleted node; the claims go.
    h.pod_gone("a");
    h.pod_gone("r");
    h.reconcile().await;
    assert!(h.claim("a").is_none());
    assert!(h.lv("a").is_none(), "deleted, its finalizer released");
    // The double keeps a deleting PV while pv-protection holds it, as the API server does; the
    // PV protection controller drops that finalizer once no claim uses the PV.
    let pv = h.pv("a");
    assert!(
        pv.is_none_or(|p| p["metadata"].get("deletionTimestamp").is_some()),
        "the PV is deleted"
    );
    // Retain: the claim went, the PV and the volume stay for the user.
    assert!(h.claim("r").is_none());
    assert!(
        h.pv("r")
            .is_some_and(|p| p["metadata"].get("deletionTimestamp").is_none())
    );
    assert!(
        h.lv("r")
            .is_some_and(|l| l["metadata"].get("deletionTimestamp").is_none())
    );
    h.node_b_untouched();

    // A claim the StatefulSet re-creates under the same name is another claim: untouched.
    h.api.seed(
        PVCS,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-a", "namespace": "app"},
               "spec": {"storageClassName": "lvms-fast"}}),
    );
    h.reconcile().await;
    assert!(h.claim("a").is_some() && !h.claim_deleting("a"));
}

#[tokio::test(flavor = "current_thread")]
async fn within_the_grace_the_volumes_wait_for_the_node() {
    let h = Harness::new(true, Duration::from_secs(300), None).await;
    h.delete_node("node-a").await;
    h.reconcile().await;
    // What the node held goes at once; its volumes are only marked.
    assert_eq!(h.reports(), ["node-b"]);
    assert!(h.mark("a").is_some());
    assert!(h.claim("a").is_some() && !h.claim_deleting("a"));

    // Five minutes later (the mark moved back, as the clock cannot be), the claim goes.
    let earlier = Timestamp::now() - SignedDuration::from_secs(301);
    h.api.patch(
        LVS,
        None,
        "lv-a",
        json!({"metadata": {"annotations": {NODE_REMOVED_ANNOTATION: earlier.to_string()}}}),
    );
    h.reconcile().await;
    assert!(h.claim_deleting("a"));
    h.node_b_untouched();
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_that_registers_again_before_the_action_keeps_everything() {
    // node-a comes back (kubelet re-registers, new UID) just after the sweep listed the Nodes:
    // the GET before each action sees it, and nothing of it is touched.
    let api = ApiDouble::new();
    let world = api.clone();
    let back = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let returns = back.clone();
    let client = api.client_with_hook(move |method, path| {
        if method.as_str() == "GET"
            && path == "/api/v1/nodes/node-a"
            && returns.load(std::sync::atomic::Ordering::SeqCst)
            && world.get(NODES, None, "node-a").is_none()
        {
            world.seed(NODES, node("node-a", "True"));
        }
    });
    let h = Harness::with(api, true, Duration::ZERO, client).await;
    // Marked during an earlier absence: a mark is no reason to act either.
    h.api.patch(
        LVS,
        None,
        "lv-a",
        json!({"metadata": {"annotations": {NODE_REMOVED_ANNOTATION: "2026-01-01T00:00:00Z"}}}),
    );
    let old_uid = h.api.get(NODES, None, "node-a").unwrap()["metadata"]["uid"].clone();
    h.delete_node("node-a").await;
    back.store(true, std::sync::atomic::Ordering::SeqCst);

    h.reconcile().await;
    assert_ne!(
        h.api.get(NODES, None, "node-a").unwrap()["metadata"]["uid"],
        old_uid
    );
    assert_eq!(h.vg_finalizers().len(), 2);
    assert_eq!(h.reports(), ["node-a", "node-b"]);
    assert_eq!(
        h.lv("a").unwrap()["metadata"]["finalizers"],
        json!([LV_FINALIZER])
    );
    assert!(h.claim("a").is_some() && !h.claim_deleting("a"));
    assert!(h.pv("a").is_some());

    // Back in the list: the stale mark goes (a later loss starts its grace afresh).
    h.reconcile().await;
    assert_eq!(h.mark("a"), None);
    assert!(h.claim("a").is_some() && !h.claim_deleting("a"));
}

#[tokio::test(flavor = "current_thread")]
async fn an_lvmcluster_deletion_does_not_wait_for_a_removed_node() {
    let h = Harness::new(false, Duration::ZERO, None).await;
    // No claims: they would block the deletion on their own, as they should.
    for id in ["a", "b"] {
        h.pod_gone(id);
        h.api.patch(
            PVCS,
            Some("app"),
            &format!("data-{id}"),
            json!({"spec": {"storageClassName": "other"}}),
        );
    }
    h.delete_node("node-a").await;
    Api::<LVMCluster>::namespaced(h.api.client(), NS)
        .delete("lvmcluster", &DeleteParams::default())
        .await
        .unwrap();
    h.reconcile().await;
    assert!(
        h.api.get(VGS, Some(NS), "fast").unwrap()["metadata"]
            .get("deletionTimestamp")
            .is_some()
    );
    assert_eq!(
        h.vg_finalizers(),
        ["cleanup.vgmanager.node.topolvm.io/node-b"],
        "only the node that can answer is waited for"
    );
    // vg-manager on node-b removes its volume group and its finalizer.
    h.api.patch(
        VGS,
        Some(NS),
        "fast",
        json!({"metadata": {"finalizers": null}}),
    );
    h.reconcile().await;
    assert!(
        h.api.get(CLUSTERS, Some(NS), "lvmcluster").is_none(),
        "deletion completed"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_deletion_triggers_a_pass() {
    let api = ApiDouble::new();
    api.seed(NODES, node("node-a", "True"));
    api.seed(NODES, node("node-b", "True"));
    let mut triggers = Box::pin(lvms_operator::node_loss::node_deletions(api.client()));
    assert!(fires(&mut triggers).await, "after the initial list");
    // A change that is not a deletion triggers nothing.
    api.patch(
        NODES,
        None,
        "node-b",
        json!({"metadata": {"labels": {"x": "y"}}}),
    );
    assert!(!fires(&mut triggers).await, "no pass for an update");
    Api::<Node>::all(api.client())
        .delete("node-a", &DeleteParams::default())
        .await
        .unwrap();
    assert!(fires(&mut triggers).await, "a pass for the deletion");
}

/// Whether the trigger stream yields within half a second.
async fn fires(triggers: &mut (impl futures::Stream<Item = ()> + Unpin)) -> bool {
    tokio::time::timeout(Duration::from_millis(500), triggers.next())
        .await
        .is_ok()
}
