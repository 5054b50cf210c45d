//! The LVMCluster reconciler end to end against the in-process API double: create → Ready once
//! node reports arrive → add a class → remove a class → removing the default is refused →
//! deletion blocked by a PVC → deletion completes with nothing left behind. A second LVMCluster
//! is refused. Assertions are on the objects the API server holds, never on call counts.

use std::sync::Arc;
use std::time::Duration;

use api_double::ApiDouble;
use kube::runtime::events::{Recorder, Reporter};
use lvms_api::LVMCluster;
use lvms_operator::config::Config;
use lvms_operator::metrics::Metrics;
use lvms_operator::reconcile::{Context, reconcile};
use serde_json::{Value, json};

const NS: &str = "openshift-storage";
const CLUSTERS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmclusters";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const REPORTS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroupnodestatuses";
const SCS: &str = "apis/storage.k8s.io/v1/storageclasses";
const VSCS: &str = "apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
const EVENTS: &str = "apis/events.k8s.io/v1/events";

struct Harness {
    api: ApiDouble,
    ctx: Arc<Context>,
}

impl Harness {
    fn new() -> Self {
        // Every pass writes everything: these tests change objects behind the reconciler's
        // back without the watches that would tell it (the skipping has its own test).
        Self::with_applied_ttl(Duration::ZERO)
    }

    fn with_applied_ttl(ttl: Duration) -> Self {
        let api = ApiDouble::new();
        let client = api.client();
        let reporter = Reporter {
            controller: "lvms-operator".into(),
            instance: Some("test".into()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let ctx = Arc::new(
            Context::new(
                client,
                Config::default(),
                recorder,
                Arc::new(Metrics::default()),
            )
            .with_applied_ttl(ttl),
        );
        for (name, labels) in [
            (
                "node-a",
                json!({"node-role.kubernetes.io/worker": "", "storage": "bulk"}),
            ),
            ("node-b", json!({"node-role.kubernetes.io/worker": ""})),
        ] {
            api.seed("api/v1/nodes", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}));
        }
        api.seed(
            "apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "volumesnapshotclasses.snapshot.storage.k8s.io"},
            }),
        );
        Self { api, ctx }
    }

    fn cluster(&self, name: &str) -> Option<LVMCluster> {
        self.api
            .get(CLUSTERS, Some(NS), name)
            .map(|v| serde_json::from_value(v).unwrap())
    }

    fn finalizers(&self, name: &str) -> Vec<String> {
        let cluster = self.cluster(name).expect("cluster exists");
        cluster.metadata.finalizers.unwrap_or_default()
    }

    /// Deletes the LVMCluster as a user would (its finalizers keep it until the operator is done).
    async fn delete_cluster(&self, name: &str) {
        kube::Api::<LVMCluster>::namespaced(self.ctx.client.clone(), NS)
            .delete(name, &Default::default())
            .await
            .unwrap();
    }

    async fn reconcile(&self, name: &str) {
        let c = self.cluster(name).expect("cluster exists");
        reconcile(Arc::new(c), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
    }

    fn names(&self, resource: &str) -> Vec<String> {
        let mut n: Vec<String> = self
            .api
            .list(resource)
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    fn state(&self, name: &str) -> (Option<String>, bool) {
        let s = self.cluster(name).unwrap().status.unwrap_or_default();
        (s.state.map(|s| format!("{s:?}")), s.ready)
    }

    fn condition(&self, name: &str, type_: &str) -> Value {
        let c = self.api.get(CLUSTERS, Some(NS), name).unwrap();
        c["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap()
    }

    fn set_classes(&self, classes: Value) {
        self.api.patch(
            CLUSTERS,
            Some(NS),
            "lvmcluster",
            json!({"spec": {"storage": {"deviceClasses": classes}}}),
        );
    }

    /// What vg-manager does on every node: report each class Ready and hold a cleanup finalizer.
    fn nodes_report_ready(&self, classes: &[&str]) {
        for vg in self.api.list(VGS) {
            let name = vg["metadata"]["name"].as_str().unwrap();
            if vg["metadata"].get("deletionTimestamp").is_none() {
                self.api.patch(VGS, Some(NS), name, json!({"metadata": {"finalizers": ["cleanup.vgmanager.node.topolvm.io/node-a", "cleanup.vgmanager.node.topolvm.io/node-b"]}}));
            }
        }
        for (node, node_classes) in [
            ("node-a", classes.to_vec()),
            (
                "node-b",
                classes.iter().copied().filter(|c| *c != "bulk").collect(),
            ),
        ] {
            let statuses: Vec<Value> = node_classes
                .iter()
                .map(|c| json!({"name": c, "status": "Ready", "devices": ["/dev/sdb"]}))
                .collect();
            let report = json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroupNodeStatus", "metadata": {"name": node, "namespace": NS}, "spec": {"nodeStatus": statuses}});
            if self.api.get(REPORTS, Some(NS), node).is_some() {
                self.api.patch(
                    REPORTS,
                    Some(NS),
                    node,
                    json!({"spec": {"nodeStatus": report["spec"]["nodeStatus"].clone()}}),
                );
            } else {
                self.api.seed(REPORTS, report);
            }
        }
    }

    /// What vg-manager does when an LVMVolumeGroup is deleted: remove the VG, drop its finalizer.
    fn nodes_release(&self, vg: &str) {
        self.api
            .patch(VGS, Some(NS), vg, json!({"metadata": {"finalizers": null}}));
    }
}

fn classes() -> Value {
    json!([
        {"name": "fast", "default": true, "fstype": "xfs", "deviceSelector": {"paths": ["/dev/nvme1n1"]},
         "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "node-role.kubernetes.io/worker", "operator": "Exists"}]}]},
         "thinPoolConfig": {"name": "thin-pool-1", "sizePercent": 90, "overprovisionRatio": 10}},
        {"name": "bulk", "fstype": "ext4", "deviceSelector": {"optionalPaths": ["/dev/sdb"]},
         "nodeSelector": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "storage", "operator": "In", "values": ["bulk"]}]}]},
         "storageClassOptions": {"reclaimPolicy": "Retain"}},
    ])
}

fn seed_cluster(h: &Harness, name: &str) {
    h.api.seed(
        CLUSTERS,
        json!({
            "apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMCluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"storage": {"deviceClasses": classes()}},
        }),
    );
}

#[tokio::test(flavor = "current_thread")]
async fn full_lifecycle() {
    let h = Harness::new();
    seed_cluster(&h, "lvmcluster");

    // Create: everything exists, the finalizer is on, the cluster waits for its nodes.
    h.reconcile("lvmcluster").await;
    let c = h.cluster("lvmcluster").unwrap();
    assert_eq!(
        c.metadata.finalizers.as_deref(),
        Some(&["lvmcluster.topolvm.io".to_string()][..])
    );
    assert_eq!(h.names(VGS), ["bulk", "fast"]);
    let vg = h.api.get(VGS, Some(NS), "fast").unwrap();
    assert_eq!(
        vg["metadata"]["ownerReferences"][0]["uid"],
        json!(c.metadata.uid.clone().unwrap())
    );
    assert_eq!(vg["spec"]["thinPoolConfig"]["overprovisionRatio"], 10);
    assert!(
        h.api
            .get("apis/apps/v1/daemonsets", Some(NS), "vg-manager")
            .is_some()
    );
    assert!(
        h.api
            .get("apis/apps/v1/deployments", Some(NS), "topolvm-controller")
            .is_some()
    );
    assert!(
        h.api
            .get("apis/storage.k8s.io/v1/csidrivers", None, "topolvm.io")
            .is_some()
    );
    assert_eq!(
        h.names("apis/networking.k8s.io/v1/networkpolicies"),
        [
            "lvms-operator-network-policy",
            "topolvm-controller-network-policy",
            "vg-manager-network-policy"
        ]
    );
    assert_eq!(h.names(SCS), ["lvms-bulk", "lvms-fast"]);
    let fast_sc = h.api.get(SCS, None, "lvms-fast").unwrap();
    assert_eq!(
        fast_sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(
        h.api.get(SCS, None, "lvms-bulk").unwrap()["reclaimPolicy"],
        "Retain"
    );
    assert_eq!(
        h.names(VSCS),
        ["lvms-fast"],
        "only thin classes get a VolumeSnapshotClass"
    );
    assert_eq!(
        h.names("api/v1/serviceaccounts"),
        ["topolvm-controller", "vg-manager"]
    );
    assert_eq!(
        h.names("apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
            .len(),
        2
    );
    assert_eq!(h.state("lvmcluster"), (Some("Progressing".into()), false));
    assert_eq!(
        h.condition("lvmcluster", "ResourcesAvailable")["status"],
        "True"
    );
    assert_eq!(
        h.condition("lvmcluster", "VolumeGroupsReady")["reason"],
        "VGReadinessInProgress"
    );

    // Ready once every selected node reports every class Ready (bulk only runs on node-a).
    h.nodes_report_ready(&["fast", "bulk"]);
    h.reconcile("lvmcluster").await;
    assert_eq!(h.state("lvmcluster"), (Some("Ready".into()), true));
    let st = h.cluster("lvmcluster").unwrap().status.unwrap();
    assert_eq!(
        st.device_class_statuses
            .iter()
            .map(|d| (d.name.as_str(), d.node_status.len()))
            .collect::<Vec<_>>(),
        [("fast", 2), ("bulk", 1)]
    );
    assert_eq!(
        h.condition("lvmcluster", "VolumeGroupsReady")["reason"],
        "VGsReady"
    );

    // A node whose volume group fails turns the cluster Failed, with its reason and an Event.
    h.api.patch(REPORTS, Some(NS), "node-b", json!({"spec": {"nodeStatus": [{"name": "fast", "status": "Failed", "reason": "/dev/nvme1n1 does not exist"}]}}));
    h.reconcile("lvmcluster").await;
    assert_eq!(h.state("lvmcluster"), (Some("Failed".into()), false));
    let cond = h.condition("lvmcluster", "VolumeGroupsReady");
    assert_eq!(cond["reason"], "VGsFailed");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("node-b/fast: /dev/nvme1n1 does not exist"),
        "{cond}"
    );
    assert!(
        h.api
            .list(EVENTS)
            .iter()
            .any(|e| e["reason"] == "VolumeGroupsNotReady"
                && e["note"].as_str().unwrap().contains("node-b/fast"))
    );
    h.nodes_report_ready(&["fast", "bulk"]);
    h.reconcile("lvmcluster").await;
    assert_eq!(h.state("lvmcluster"), (Some("Ready".into()), true));

    // A second pass changes nothing (idempotent), and does not even send the status: it is
    // written only when it changes. (The double, like the API server, ignores no-op writes, so
    // the requests are what proves it.)
    let before = h.api.get(CLUSTERS, Some(NS), "lvmcluster").unwrap();
    let seen = h.api.requests().len();
    h.reconcile("lvmcluster").await;
    assert_eq!(
        h.api.get(CLUSTERS, Some(NS), "lvmcluster").unwrap()["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    let status_writes: Vec<String> = h.api.requests()[seen..]
        .iter()
        .filter(|r| !r.starts_with("GET") && r.contains("/lvmclusters/lvmcluster/status"))
        .cloned()
        .collect();
    assert!(status_writes.is_empty(), "{status_writes:?}");
    assert!(
        h.api.requests().len() > seen,
        "the pass did run (it re-applies its objects)"
    );

    // Add a class.
    let mut with_extra = classes();
    with_extra.as_array_mut().unwrap().push(json!({"name": "extra", "deviceSelector": {"paths": ["/dev/sdc"]}, "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 2}}));
    h.set_classes(with_extra);
    h.reconcile("lvmcluster").await;
    assert_eq!(h.names(VGS), ["bulk", "extra", "fast"]);
    assert_eq!(h.names(SCS), ["lvms-bulk", "lvms-extra", "lvms-fast"]);
    assert_eq!(h.names(VSCS), ["lvms-extra", "lvms-fast"]);
    assert_eq!(
        h.state("lvmcluster").0.as_deref(),
        Some("Progressing"),
        "extra is not ready on any node yet"
    );
    h.nodes_report_ready(&["fast", "bulk", "extra"]);
    h.reconcile("lvmcluster").await;
    assert_eq!(h.state("lvmcluster"), (Some("Ready".into()), true));

    // Remove it: its volume group is deleted and waits for the nodes; its classes go at once.
    h.set_classes(classes());
    h.reconcile("lvmcluster").await;
    assert!(
        h.api.get(VGS, Some(NS), "extra").unwrap()["metadata"]["deletionTimestamp"].is_string()
    );
    assert_eq!(h.names(SCS), ["lvms-bulk", "lvms-fast"]);
    assert_eq!(h.names(VSCS), ["lvms-fast"]);
    h.nodes_release("extra");
    assert_eq!(h.names(VGS), ["bulk", "fast"]);

    // Removing the default class is refused: nothing is deleted, the condition says why.
    h.set_classes(json!([classes()[1].clone()]));
    h.reconcile("lvmcluster").await;
    assert_eq!(h.names(VGS), ["bulk", "fast"]);
    assert_eq!(h.names(SCS), ["lvms-bulk", "lvms-fast"]);
    let cond = h.condition("lvmcluster", "ResourcesAvailable");
    assert_eq!(cond["reason"], "ResourcesSyncIncomplete");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("fast is the default and cannot be removed"),
        "{cond}"
    );
    assert_eq!(h.state("lvmcluster").0.as_deref(), Some("Failed"));
    assert!(
        h.api
            .list(EVENTS)
            .iter()
            .any(|e| e["reason"] == "InvalidSpec"),
        "the user is told by an Event"
    );
    h.set_classes(classes());
    h.reconcile("lvmcluster").await;
    assert_eq!(h.state("lvmcluster"), (Some("Ready".into()), true));

    // Deletion is blocked while a PVC uses an lvms StorageClass.
    h.api.seed("api/v1/persistentvolumeclaims", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "db", "namespace": "apps"}, "spec": {"storageClassName": "lvms-fast"}}));
    h.api.seed("api/v1/persistentvolumeclaims", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "other", "namespace": "apps"}, "spec": {"storageClassName": "gp3"}}));
    h.delete_cluster("lvmcluster").await;
    h.reconcile("lvmcluster").await;
    assert_eq!(
        h.names(VGS),
        ["bulk", "fast"],
        "nothing is torn down while PVCs exist"
    );
    let cond = h.condition("lvmcluster", "ResourcesAvailable");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains("blocked by 1 PVC(s) using lvms StorageClasses: apps/db"),
        "{cond}"
    );
    assert!(h.api.list(EVENTS).iter().any(
        |e| e["reason"] == "DeletionBlocked" && e["note"].as_str().unwrap().contains("apps/db")
    ));

    // The PVC goes: volume groups are deleted first and the agents stay until nodes release them.
    h.api.patch(
        "api/v1/persistentvolumeclaims",
        Some("apps"),
        "db",
        json!({"spec": {"storageClassName": "gone"}}),
    );
    h.reconcile("lvmcluster").await;
    assert!(
        h.api
            .list(VGS)
            .iter()
            .all(|v| v["metadata"]["deletionTimestamp"].is_string())
    );
    assert!(
        h.api
            .get("apis/apps/v1/daemonsets", Some(NS), "vg-manager")
            .is_some(),
        "vg-manager must outlive the volume groups"
    );
    assert!(h.cluster("lvmcluster").is_some());
    h.nodes_release("fast");
    h.nodes_release("bulk");
    h.reconcile("lvmcluster").await;

    // Nothing is left behind, and the LVMCluster itself is gone.
    assert!(h.cluster("lvmcluster").is_none(), "finalizer released");
    for r in [
        VGS,
        SCS,
        VSCS,
        "apis/apps/v1/daemonsets",
        "apis/apps/v1/deployments",
        "apis/storage.k8s.io/v1/csidrivers",
        "apis/networking.k8s.io/v1/networkpolicies",
        "api/v1/serviceaccounts",
        "apis/rbac.authorization.k8s.io/v1/clusterroles",
        "apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "apis/rbac.authorization.k8s.io/v1/roles",
        "apis/rbac.authorization.k8s.io/v1/rolebindings",
    ] {
        assert_eq!(h.names(r), Vec::<String>::new(), "{r} left behind");
    }
}

/// The pass right after the one that created everything (woken by its own writes) writes
/// nothing; an object someone else deletes is written again once its watch event is seen; a
/// spec change is written at once.
#[tokio::test(flavor = "current_thread")]
async fn unchanged_objects_are_not_written_again() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::runtime::watcher;
    let h = Harness::with_applied_ttl(lvms_operator::applied::TTL);
    seed_cluster(&h, "lvmcluster");
    h.reconcile("lvmcluster").await;
    let writes = |from: usize| -> Vec<String> {
        h.api.requests()[from..]
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .cloned()
            .collect()
    };
    let first = writes(0);
    assert!(
        first.len() > 15,
        "the first pass applies every object: {first:?}"
    );
    let before = h.api.requests().len();
    h.reconcile("lvmcluster").await;
    assert_eq!(
        writes(before),
        Vec::<String>::new(),
        "nothing changed, nothing written"
    );

    const DS: &str = "apis/apps/v1/daemonsets";
    let ds: DaemonSet =
        serde_json::from_value(h.api.get(DS, Some(NS), "vg-manager").unwrap()).unwrap();
    kube::Api::<DaemonSet>::namespaced(h.ctx.client.clone(), NS)
        .delete("vg-manager", &Default::default())
        .await
        .unwrap();
    h.ctx.applied.observe(&watcher::Event::Delete(ds));
    h.reconcile("lvmcluster").await;
    assert!(
        h.api.get(DS, Some(NS), "vg-manager").is_some(),
        "re-created"
    );

    let mut changed = classes();
    changed[0]["thinPoolConfig"]["overprovisionRatio"] = json!(7);
    h.api.patch(
        CLUSTERS,
        Some(NS),
        "lvmcluster",
        json!({"spec": {"storage": {"deviceClasses": changed}}}),
    );
    h.reconcile("lvmcluster").await;
    let vg = h.api.get(VGS, Some(NS), "fast").unwrap();
    assert_eq!(vg["spec"]["thinPoolConfig"]["overprovisionRatio"], 7);
}

#[tokio::test(flavor = "current_thread")]
async fn a_stale_cached_object_does_not_fail_the_pass() {
    // A controller's cache can lag behind our own writes: reconciling the pre-finalizer copy
    // again must succeed, not loop on 409 Conflict.
    let h = Harness::new();
    seed_cluster(&h, "lvmcluster");
    let stale = h.cluster("lvmcluster").unwrap();
    reconcile(Arc::new(stale.clone()), h.ctx.clone())
        .await
        .unwrap();
    reconcile(Arc::new(stale), h.ctx.clone())
        .await
        .expect("a stale copy reconciles cleanly");
    assert_eq!(h.finalizers("lvmcluster"), ["lvmcluster.topolvm.io"]);
}

#[tokio::test(flavor = "current_thread")]
async fn stale_copies_of_a_released_cluster_change_nothing() {
    // The controller's cache still holds the LVMCluster after the pass that released it (the
    // DaemonSet and Deployment that pass deleted trigger more passes first): those passes must
    // succeed, not fail with "removing the finalizer: ... not found".
    let h = Harness::new();
    seed_cluster(&h, "lvmcluster");
    let created = h.cluster("lvmcluster").unwrap();
    h.reconcile("lvmcluster").await;
    h.delete_cluster("lvmcluster").await;
    // No node holds the volume groups: the first pass deletes them, the second releases.
    h.reconcile("lvmcluster").await;
    let releasing = h
        .cluster("lvmcluster")
        .expect("the volume groups went first");
    h.reconcile("lvmcluster").await;
    assert!(h.cluster("lvmcluster").is_none(), "finalizer released");
    for stale in [&created, &releasing] {
        reconcile(Arc::new(stale.clone()), h.ctx.clone())
            .await
            .expect("a cluster that is gone is done");
    }

    // A new LVMCluster of the same name: a late pass for the old one must not tear it down.
    seed_cluster(&h, "lvmcluster");
    h.reconcile("lvmcluster").await;
    reconcile(Arc::new(releasing), h.ctx.clone())
        .await
        .expect("the old cluster is gone");
    assert!(
        h.api
            .get("apis/apps/v1/daemonsets", Some(NS), "vg-manager")
            .is_some(),
        "the new cluster keeps its agents"
    );
    assert_eq!(h.names(VGS), ["bulk", "fast"]);
    assert_eq!(h.finalizers("lvmcluster"), ["lvmcluster.topolvm.io"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_cluster_is_refused_and_left_alone() {
    let h = Harness::new();
    seed_cluster(&h, "first");
    h.reconcile("first").await;
    seed_cluster(&h, "second");
    h.reconcile("second").await;
    let second = h.cluster("second").unwrap();
    assert_eq!(
        second.status.as_ref().unwrap().state,
        Some(lvms_api::LVMStateType::Failed)
    );
    assert!(
        second.status.unwrap().conditions[0]
            .message
            .contains("first is already active")
    );
    assert!(
        second.metadata.finalizers.is_none(),
        "the refused cluster gets no finalizer"
    );
    assert!(
        h.api
            .list(VGS)
            .iter()
            .all(|v| v["metadata"]["ownerReferences"][0]["name"] == "first")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_existing_default_storage_class_is_respected() {
    let h = Harness::new();
    h.api.seed(SCS, json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path"}));
    seed_cluster(&h, "lvmcluster");
    h.reconcile("lvmcluster").await;
    let fast = h.api.get(SCS, None, "lvms-fast").unwrap();
    assert!(
        fast["metadata"]["annotations"]
            .get("storageclass.kubernetes.io/is-default-class")
            .is_none(),
        "{fast}"
    );
    // Our own default does not count as someone else's on the next pass.
    let h2 = Harness::new();
    seed_cluster(&h2, "lvmcluster");
    h2.reconcile("lvmcluster").await;
    h2.reconcile("lvmcluster").await;
    assert_eq!(
        h2.api.get(SCS, None, "lvms-fast").unwrap()["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn on_openshift_vg_manager_gets_its_scc_for_as_long_as_it_runs() {
    const SCCS: &str = "apis/security.openshift.io/v1/securitycontextconstraints";
    const DEPLOYMENTS: &str = "apis/apps/v1/deployments";
    // Off OpenShift: no SCC, and the CSI controller names its non-root UID.
    let vanilla = Harness::new();
    seed_cluster(&vanilla, "lvmcluster");
    vanilla.reconcile("lvmcluster").await;
    assert_eq!(vanilla.names(SCCS), Vec::<String>::new());
    let d = vanilla
        .api
        .get(DEPLOYMENTS, Some(NS), "topolvm-controller")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        65532
    );

    let h = Harness::new();
    h.api.seed(
        "apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "securitycontextconstraints.security.openshift.io"},
        }),
    );
    seed_cluster(&h, "lvmcluster");
    h.reconcile("lvmcluster").await;
    let scc = h.api.get(SCCS, None, "lvms-vgmanager").expect("the SCC");
    assert_eq!(
        scc["users"],
        json!(["system:serviceaccount:openshift-storage:vg-manager"])
    );
    assert_eq!(scc["allowPrivilegedContainer"], true);
    // OpenShift assigns the controller's UID from the namespace's range.
    let d = h
        .api
        .get(DEPLOYMENTS, Some(NS), "topolvm-controller")
        .unwrap();
    let sc = &d["spec"]["template"]["spec"]["securityContext"];
    assert!(sc.get("runAsUser").is_none(), "{sc}");
    assert_eq!(sc["runAsNonRoot"], true);

    // Deleted: the SCC goes with the agents, not before.
    h.delete_cluster("lvmcluster").await;
    h.nodes_report_ready(&["fast", "bulk"]);
    h.reconcile("lvmcluster").await;
    assert!(
        h.api
            .get("apis/apps/v1/daemonsets", Some(NS), "vg-manager")
            .is_some()
    );
    assert_eq!(
        h.names(SCCS),
        ["lvms-vgmanager"],
        "the agents still need it"
    );
    h.nodes_release("fast");
    h.nodes_release("bulk");
    h.reconcile("lvmcluster").await;
    assert!(h.cluster("lvmcluster").is_none());
    assert_eq!(h.names(SCCS), Vec::<String>::new());
}
