//! The CSI controller end to end over gRPC: the real server on a unix socket, a tonic client, the
//! in-process API double behind it, and a small simulated node agent that plays the node's part
//! of the LogicalVolume protocol through the API (status {volumeID, code, currentSize}, failure
//! codes, growth, releasing the finalizer on deletion). The real node side — lvcreate, thin
//! snapshots, lvextend, lvremove — is proven on real LVM in vg-manager/tests/vm_logical_volume.rs.
//! Assertions are on answers and on the objects the API double holds; every wait is bounded.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use api_double::ApiDouble;
use csi::pb::controller_client::ControllerClient;
use csi::pb::controller_service_capability::rpc::Type as Rpc;
use csi::pb::identity_client::IdentityClient;
use csi::pb::volume_capability::access_mode::Mode;
use csi::pb::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi::pb::volume_content_source::{SnapshotSource, Type as Source, VolumeSource};
use csi::pb::{self, CapacityRange, Topology, TopologyRequirement, VolumeCapability};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use lvms_api::{LogicalVolume, quantity_bytes};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const NS: &str = "openshift-storage";
const LVS: &str = "apis/topolvm.io/v1/logicalvolumes";
const VGS: &str = "apis/lvm.topolvm.io/v1alpha1/lvmvolumegroups";
const NODES: &str = "api/v1/nodes";
const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;
/// Bound on any single wait in these tests.
const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

/// The node agent's part, simulated: every 10 ms, answer new LogicalVolumes (a failure for
/// names starting with `fail-`, an InvalidArgument for `refuse-`, nothing while `hold` is set for names starting with `hold-`),
/// grow the ones whose spec.size grew (a failure for names starting with `growfail-`), and
/// release the finalizer of the ones being deleted.
async fn node_agent(client: Client, hold: Arc<AtomicBool>) {
    let api: Api<LogicalVolume> = Api::all(client);
    let pp = PatchParams::default();
    loop {
        let lvs = api.list(&ListParams::default()).await.unwrap().items;
        for lv in &lvs {
            let name = lv.name_any();
            if lv.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .patch(
                        &name,
                        &pp,
                        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
                    )
                    .await;
                continue;
            }
            let status = lv.status.clone().unwrap_or_default();
            let want = quantity_bytes(&lv.spec.size.0).unwrap();
            let have = status
                .current_size
                .as_ref()
                .and_then(|q| quantity_bytes(&q.0));
            let source_missing = !lv.spec.source.is_empty()
                && !lvs
                    .iter()
                    .any(|s| s.uid().as_deref() == Some(lv.spec.source.as_str()));
            let answered = status.code != 0 || have.is_some_and(|h| h >= want);
            let held = lv.spec.name.starts_with("hold-") && hold.load(Ordering::SeqCst);
            if answered || held {
                continue;
            }
            let patch = if lv.spec.name.starts_with("refuse-") {
                json!({"code": 3, "message": format!("simulated: the mirror layout needs 2 physical volumes, volume group {} on {} has 1", lv.spec.device_class, lv.spec.node_name)})
            } else if lv.spec.name.starts_with("fail-") {
                json!({"code": 8, "message": format!("simulated: no room on {}", lv.spec.node_name)})
            } else if lv.spec.name.starts_with("growfail-") && have.is_some() {
                json!({"code": 8, "message": "simulated: no room to grow"})
            } else if source_missing {
                json!({"code": 5, "message": "simulated: source not found"})
            } else {
                json!({"volumeID": lv.uid().unwrap(), "code": 0, "currentSize": want.to_string()})
            };
            let _ = api
                .patch_status(&name, &pp, &Patch::Merge(json!({"status": patch})))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Harness {
    api: ApiDouble,
    ctl: ControllerClient<Channel>,
    identity: IdentityClient<Channel>,
    hold: Arc<AtomicBool>,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), csi::ControllerError>>,
    node: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Device classes `thin` (default) and `thick`; node-a (thin 10Gi, thick 5Gi), node-b
    /// (thin 20Gi, thick 1Gi), node-c (neither class).
    async fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let api = ApiDouble::new();
        let vg = |name: &str, spec: Value| {
            json!({"apiVersion": "lvm.topolvm.io/v1alpha1", "kind": "LVMVolumeGroup",
                "metadata": {"name": name, "namespace": NS}, "spec": spec})
        };
        api.seed(
            VGS,
            vg(
                "thin",
                json!({"default": true, "thinPoolConfig": {"name": "pool", "sizePercent": 90, "overprovisionRatio": 10}}),
            ),
        );
        api.seed(VGS, vg("thick", json!({})));
        for (node, thin, thick) in [
            ("node-a", Some(10 * GIB), Some(5 * GIB)),
            ("node-b", Some(20 * GIB), Some(GIB)),
            ("node-c", None, None),
        ] {
            let mut annotations = json!({});
            if let Some(t) = thin {
                annotations["capacity.topolvm.io/thin"] = json!(t.to_string());
            }
            if let Some(t) = thick {
                annotations["capacity.topolvm.io/thick"] = json!(t.to_string());
            }
            api.seed(
                NODES,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "annotations": annotations}}),
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "csi-controller-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        let socket = dir.join("csi.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(csi::serve_controller(
            api.client(),
            NS,
            socket.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let hold = Arc::new(AtomicBool::new(false));
        let node = tokio::spawn(node_agent(api.client(), hold.clone()));
        let channel = bounded("connecting", async {
            loop {
                match csi::socket::connect(&socket).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await;
        Self {
            api,
            ctl: ControllerClient::new(channel.clone()),
            identity: IdentityClient::new(channel),
            hold,
            dir,
            stop: Some(stop),
            server,
            node,
        }
    }

    fn lvs(&self) -> Vec<LogicalVolume> {
        self.api
            .list(LVS)
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    fn lv_named(&self, spec_name: &str) -> Option<LogicalVolume> {
        self.lvs().into_iter().find(|l| l.spec.name == spec_name)
    }

    async fn create(&self, req: pb::CreateVolumeRequest) -> Result<pb::Volume, Status> {
        let mut ctl = self.ctl.clone();
        bounded("CreateVolume", ctl.create_volume(req))
            .await
            .map(|r| r.into_inner().volume.unwrap())
    }

    async fn snapshot(&self, name: &str, source: &str) -> Result<pb::Snapshot, Status> {
        let mut ctl = self.ctl.clone();
        let req = pb::CreateSnapshotRequest {
            source_volume_id: source.into(),
            name: name.into(),
            ..Default::default()
        };
        bounded("CreateSnapshot", ctl.create_snapshot(req))
            .await
            .map(|r| r.into_inner().snapshot.unwrap())
    }

    async fn delete(&self, id: &str) -> Result<(), Status> {
        let mut ctl = self.ctl.clone();
        let req = pb::DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        };
        bounded("DeleteVolume", ctl.delete_volume(req))
            .await
            .map(|_| ())
    }

    async fn expand(
        &self,
        id: &str,
        bytes: i64,
        cap: Option<VolumeCapability>,
    ) -> Result<pb::ControllerExpandVolumeResponse, Status> {
        let mut ctl = self.ctl.clone();
        let req = pb::ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(range(bytes, 0)),
            volume_capability: cap,
            ..Default::default()
        };
        bounded("ControllerExpandVolume", ctl.controller_expand_volume(req))
            .await
            .map(|r| r.into_inner())
    }

    async fn capacity(&self, class: Option<&str>, node: Option<&str>) -> pb::GetCapacityResponse {
        let mut ctl = self.ctl.clone();
        let req = pb::GetCapacityRequest {
            parameters: class
                .map(|c| [(csi::DEVICE_CLASS_PARAMETER.to_string(), c.to_string())].into())
                .unwrap_or_default(),
            accessible_topology: node.map(topo),
            ..Default::default()
        };
        bounded("GetCapacity", ctl.get_capacity(req))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until no LogicalVolume has `spec_name`.
    async fn gone(&self, spec_name: &str) {
        bounded(&format!("{spec_name} gone"), async {
            while self.lv_named(spec_name).is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        bounded("shutdown", &mut self.server)
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.node.abort();
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mount(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn block() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeMultiWriter as i32,
        }),
    }
}

fn range(required: i64, limit: i64) -> CapacityRange {
    CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    }
}

fn topo(node: &str) -> Topology {
    Topology {
        segments: [(csi::TOPOLOGY_NODE_KEY.to_string(), node.to_string())].into(),
    }
}

/// A CreateVolume for `name` with an xfs mount, in `class` (None = the default class).
fn volume(name: &str, class: Option<&str>, bytes: Option<i64>) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: bytes.map(|b| range(b, 0)),
        volume_capabilities: vec![mount("xfs")],
        parameters: class
            .map(|c| [(csi::DEVICE_CLASS_PARAMETER.to_string(), c.to_string())].into())
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn node_of(v: &pb::Volume) -> &str {
    v.accessible_topology[0].segments[csi::TOPOLOGY_NODE_KEY].as_str()
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, needle: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.code(), code, "{}", e.message());
    assert!(
        e.message().contains(needle),
        "{:?} lacks {needle:?}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_capabilities() {
    let h = Harness::new().await;
    let mut id = h.identity.clone();
    let info = bounded(
        "GetPluginInfo",
        id.get_plugin_info(pb::GetPluginInfoRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(info.name, "topolvm.io");
    bounded("Probe ready", async {
        loop {
            let r = id.probe(pb::ProbeRequest {}).await.unwrap().into_inner();
            if r.ready.is_some_and(|r| r.value) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut ctl = h.ctl.clone();
    let caps = bounded(
        "ControllerGetCapabilities",
        ctl.controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    let got: Vec<i32> = caps
        .capabilities
        .iter()
        .map(|c| match &c.r#type {
            Some(pb::controller_service_capability::Type::Rpc(r)) => r.r#type,
            None => panic!("empty capability"),
        })
        .collect();
    let want = [
        Rpc::CreateDeleteVolume,
        Rpc::CreateDeleteSnapshot,
        Rpc::CloneVolume,
        Rpc::ExpandVolume,
        Rpc::GetCapacity,
        Rpc::SingleNodeMultiWriter,
        Rpc::ListVolumes,
        Rpc::GetVolume,
        Rpc::VolumeCondition,
        Rpc::ListSnapshots,
    ];
    assert_eq!(got, want.map(|t| t as i32));
    assert!(
        !got.contains(&(Rpc::ListVolumesPublishedNodes as i32)),
        "the spec ties it to PUBLISH_UNPUBLISH_VOLUME, which a local volume has not"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_places_sizes_and_repeats() {
    let h = Harness::new().await;

    // No topology: the node with the most room for the class; size rounded up to 4 MiB extents.
    let v = h
        .create(volume("pvc-1", Some("thin"), Some(GIB + 1)))
        .await
        .unwrap();
    assert_eq!(node_of(&v), "node-b");
    assert_eq!(v.capacity_bytes, GIB + 4 * MIB);
    let lv = h.lv_named("pvc-1").unwrap();
    assert_eq!(lv.name_any(), "pvc-1", "a valid name is the object name");
    assert_eq!(v.volume_id, lv.uid().unwrap(), "the volume ID is the UID");
    assert_eq!(
        (
            lv.spec.node_name.as_str(),
            lv.spec.device_class.as_str(),
            lv.spec.size.0.as_str(),
            lv.spec.source.as_str()
        ),
        ("node-b", "thin", (GIB + 4 * MIB).to_string().as_str(), "")
    );
    assert_eq!(lv.finalizers(), ["topolvm.io/logicalvolume"]);

    // The same request again: the same volume, no second object.
    let again = h
        .create(volume("pvc-1", Some("thin"), Some(GIB + 1)))
        .await
        .unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    assert_eq!(h.lvs().len(), 1);
    // The same name asking for more: AlreadyExists.
    expect_code(
        h.create(volume("pvc-1", Some("thin"), Some(2 * GIB))).await,
        Code::AlreadyExists,
        "outside capacity_range",
    );
    expect_code(
        h.create(volume("pvc-1", Some("thick"), Some(GIB))).await,
        Code::AlreadyExists,
        "device class thin, not thick",
    );

    // No size: 1 GiB; no class parameter: the default class.
    let d = h.create(volume("pvc-default", None, None)).await.unwrap();
    assert_eq!(d.capacity_bytes, GIB);
    assert_eq!(h.lv_named("pvc-default").unwrap().spec.device_class, "thin");

    // The filesystem minimum: ext4 needs 32 MiB.
    let mut small = volume("pvc-small", None, Some(1));
    small.volume_capabilities = vec![mount("ext4")];
    assert_eq!(h.create(small).await.unwrap().capacity_bytes, 32 * MIB);

    // Topology: the first preferred node with room, within the requisite ones.
    let mut pinned = volume("pvc-pinned", Some("thick"), Some(2 * GIB));
    pinned.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topo("node-b"), topo("node-a")],
        preferred: vec![topo("node-b"), topo("node-a")],
    });
    let p = h.create(pinned).await.unwrap();
    assert_eq!(node_of(&p), "node-a", "node-b has 1Gi of thick only");

    // A CSI name that is no object name: sanitized + hash; spec.name keeps the exact name.
    let odd = h
        .create(volume("Vol_Upper/1", None, Some(GIB)))
        .await
        .unwrap();
    let lv = h.lv_named("Vol_Upper/1").unwrap();
    assert!(
        lv.name_any().starts_with("vol-upper-1-"),
        "{}",
        lv.name_any()
    );
    assert_eq!(
        h.create(volume("Vol_Upper/1", None, Some(GIB)))
            .await
            .unwrap()
            .volume_id,
        odd.volume_id
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_refuses_clearly() {
    let h = Harness::new().await;
    expect_code(
        h.create(volume("", None, None)).await,
        Code::InvalidArgument,
        "name is required",
    );
    let mut no_caps = volume("pvc-x", None, None);
    no_caps.volume_capabilities.clear();
    expect_code(
        h.create(no_caps).await,
        Code::InvalidArgument,
        "volume_capabilities is required",
    );
    let mut multi = volume("pvc-x", None, None);
    multi.volume_capabilities[0].access_mode = Some(AccessMode {
        mode: Mode::MultiNodeMultiWriter as i32,
    });
    expect_code(
        h.create(multi).await,
        Code::InvalidArgument,
        "volume_capabilities[0].access_mode",
    );
    expect_code(
        h.create(volume("pvc-x", Some("nope"), None)).await,
        Code::InvalidArgument,
        "parameters[topolvm.io/device-class]",
    );
    // No room anywhere: each node's free space is in the message.
    expect_code(
        h.create(volume("pvc-x", Some("thin"), Some(30 * GIB)))
            .await,
        Code::ResourceExhausted,
        "node-a has 10737418240, node-b has 21474836480",
    );
    let mut requisite = volume("pvc-x", Some("thin"), Some(15 * GIB));
    requisite.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topo("node-a")],
        ..Default::default()
    });
    expect_code(
        h.create(requisite).await,
        Code::ResourceExhausted,
        "node-a has 10737418240",
    );
    assert!(h.lvs().is_empty(), "nothing was created");

    // The node fails: its code and message come back, and the object is removed so that a
    // retry can start afresh.
    expect_code(
        h.create(volume("fail-1", None, None)).await,
        Code::ResourceExhausted,
        "simulated: no room on node-b",
    );
    h.gone("fail-1").await;

    // Without a default class, a request must name one.
    h.api
        .patch(VGS, Some(NS), "thin", json!({"spec": {"default": false}}));
    expect_code(
        h.create(volume("pvc-y", None, None)).await,
        Code::InvalidArgument,
        "parameters[topolvm.io/device-class] is not set",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restores_and_clones_stay_with_their_source() {
    let h = Harness::new().await;
    let mut src = volume("pvc-src", None, Some(2 * GIB));
    src.accessibility_requirements = Some(TopologyRequirement {
        preferred: vec![topo("node-a")],
        ..Default::default()
    });
    let src = h.create(src).await.unwrap();
    assert_eq!(node_of(&src), "node-a");

    let snap = h.snapshot("snapshot-1", &src.volume_id).await.unwrap();
    assert_eq!(snap.source_volume_id, src.volume_id);
    assert_eq!(snap.size_bytes, 2 * GIB);
    assert!(snap.ready_to_use && snap.creation_time.is_some_and(|t| t.seconds > 0));
    let lv = h.lv_named("snapshot-1").unwrap();
    assert_eq!(snap.snapshot_id, lv.uid().unwrap());
    assert_eq!(
        (
            lv.spec.node_name.as_str(),
            lv.spec.device_class.as_str(),
            lv.spec.source.as_str(),
            lv.spec.access_type.as_str()
        ),
        ("node-a", "thin", src.volume_id.as_str(), "ro")
    );
    assert_eq!(
        h.snapshot("snapshot-1", &src.volume_id)
            .await
            .unwrap()
            .snapshot_id,
        snap.snapshot_id,
        "idempotent"
    );
    let other = h.create(volume("pvc-other", None, None)).await.unwrap();
    expect_code(
        h.snapshot("snapshot-1", &other.volume_id).await,
        Code::AlreadyExists,
        "source",
    );
    expect_code(
        h.snapshot("snapshot-2", "no-such-volume").await,
        Code::NotFound,
        "source_volume_id",
    );
    expect_code(
        h.snapshot("", &src.volume_id).await,
        Code::InvalidArgument,
        "name is required",
    );

    // Restore: on the source's node and class, the snapshot as its source, at least its size.
    let mut restore = volume("pvc-restore", None, Some(GIB));
    restore.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Source::Snapshot(SnapshotSource {
            snapshot_id: snap.snapshot_id.clone(),
        })),
    });
    let r = h.create(restore.clone()).await.unwrap();
    assert_eq!(node_of(&r), "node-a");
    assert_eq!(r.capacity_bytes, 2 * GIB, "never smaller than the source");
    assert_eq!(r.content_source, restore.volume_content_source, "echoed");
    let lv = h.lv_named("pvc-restore").unwrap();
    assert_eq!(
        (lv.spec.source.as_str(), lv.spec.access_type.as_str()),
        (snap.snapshot_id.as_str(), "rw")
    );

    // Clone, larger than its source.
    let mut clone = volume("pvc-clone", None, Some(3 * GIB));
    clone.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Source::Volume(VolumeSource {
            volume_id: src.volume_id.clone(),
        })),
    });
    let c = h.create(clone.clone()).await.unwrap();
    assert_eq!((node_of(&c), c.capacity_bytes), ("node-a", 3 * GIB));
    assert_eq!(h.lv_named("pvc-clone").unwrap().spec.source, src.volume_id);

    // The source's node is outside the requisite topology.
    let mut elsewhere = clone.clone();
    elsewhere.name = "pvc-clone-b".into();
    elsewhere.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topo("node-b")],
        ..Default::default()
    });
    expect_code(h.create(elsewhere).await, Code::ResourceExhausted, "node-a");
    let mut missing = clone;
    missing.name = "pvc-clone-c".into();
    missing.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Source::Volume(VolumeSource {
            volume_id: "nope".into(),
        })),
    });
    expect_code(
        h.create(missing).await,
        Code::NotFound,
        "volume_content_source.volume.volume_id",
    );

    // Thick classes have no thin pool to snapshot in.
    let thick = h
        .create(volume("pvc-thick", Some("thick"), Some(GIB)))
        .await
        .unwrap();
    expect_code(
        h.snapshot("snapshot-thick", &thick.volume_id).await,
        Code::InvalidArgument,
        "device class thick is thick",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent() {
    let h = Harness::new().await;
    let v = h.create(volume("pvc-del", None, None)).await.unwrap();
    let s = h.snapshot("snapshot-del", &v.volume_id).await.unwrap();
    let mut ctl = h.ctl.clone();
    let del_snap = |id: &str| pb::DeleteSnapshotRequest {
        snapshot_id: id.into(),
        ..Default::default()
    };
    bounded(
        "DeleteSnapshot",
        ctl.delete_snapshot(del_snap(&s.snapshot_id)),
    )
    .await
    .unwrap();
    assert!(h.lv_named("snapshot-del").is_none(), "gone when it answers");
    bounded(
        "DeleteSnapshot",
        ctl.delete_snapshot(del_snap(&s.snapshot_id)),
    )
    .await
    .unwrap();
    expect_code(
        bounded("DeleteSnapshot", ctl.delete_snapshot(del_snap(""))).await,
        Code::InvalidArgument,
        "snapshot_id",
    );
    h.delete(&v.volume_id).await.unwrap();
    assert!(h.lvs().is_empty());
    h.delete(&v.volume_id).await.unwrap();
    h.delete("never-existed").await.unwrap();
    expect_code(h.delete("").await, Code::InvalidArgument, "volume_id");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_grows_once_and_waits() {
    let h = Harness::new().await;
    let v = h.create(volume("pvc-grow", None, Some(GIB))).await.unwrap();
    let r = h
        .expand(&v.volume_id, 2 * GIB, Some(mount("xfs")))
        .await
        .unwrap();
    assert_eq!(
        (r.capacity_bytes, r.node_expansion_required),
        (2 * GIB, true)
    );
    assert_eq!(
        h.lv_named("pvc-grow").unwrap().spec.size.0,
        (2 * GIB).to_string()
    );
    // Not larger: the current size, nothing patched.
    let r = h.expand(&v.volume_id, GIB, None).await.unwrap();
    assert_eq!(
        (r.capacity_bytes, r.node_expansion_required),
        (2 * GIB, true),
        "unknown use: the node decides"
    );
    let r = h
        .expand(&v.volume_id, 2 * GIB, Some(block()))
        .await
        .unwrap();
    assert_eq!(
        (r.capacity_bytes, r.node_expansion_required),
        (2 * GIB, false),
        "a block volume needs nothing from the node"
    );
    let r = h
        .expand(&v.volume_id, 3 * GIB + 1, Some(block()))
        .await
        .unwrap();
    assert_eq!(r.capacity_bytes, 3 * GIB + 4 * MIB);
    // The node cannot grow it: its code comes back, and the volume stays as it was.
    let f = h
        .create(volume("growfail-1", None, Some(GIB)))
        .await
        .unwrap();
    expect_code(
        h.expand(&f.volume_id, 2 * GIB, None).await,
        Code::ResourceExhausted,
        "simulated: no room to grow",
    );
    let lv = h
        .lv_named("growfail-1")
        .expect("a failed growth keeps the volume");
    assert_eq!(lv.status.unwrap().volume_id, f.volume_id);
    // A repeated CreateVolume now sees the failure but must not remove a volume that was made.
    expect_code(
        h.create(volume("growfail-1", None, Some(GIB))).await,
        Code::ResourceExhausted,
        "no room to grow",
    );
    assert!(h.lv_named("growfail-1").is_some());
    expect_code(
        h.expand("nope", GIB, None).await,
        Code::NotFound,
        "volume_id",
    );
    let mut ctl = h.ctl.clone();
    let no_range = pb::ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        ..Default::default()
    };
    expect_code(
        bounded("expand", ctl.controller_expand_volume(no_range)).await,
        Code::InvalidArgument,
        "capacity_range",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_per_node_and_in_total() {
    let h = Harness::new().await;
    let c = h.capacity(Some("thin"), Some("node-a")).await;
    assert_eq!(c.available_capacity, 10 * GIB);
    assert_eq!(c.maximum_volume_size.unwrap().value, 10 * GIB);
    let c = h.capacity(None, None).await;
    assert_eq!(c.available_capacity, 30 * GIB, "the default class, summed");
    assert_eq!(
        c.maximum_volume_size.unwrap().value,
        20 * GIB,
        "no volume is larger than the roomiest node"
    );
    assert_eq!(
        h.capacity(Some("thick"), Some("node-b"))
            .await
            .available_capacity,
        GIB
    );
    assert_eq!(
        h.capacity(Some("thin"), Some("node-c"))
            .await
            .available_capacity,
        0,
        "no annotation, no capacity"
    );
    h.api.patch(
        NODES,
        None,
        "node-a",
        json!({"metadata": {"annotations": {"capacity.topolvm.io/thin": "garbage"}}}),
    );
    assert_eq!(
        h.capacity(Some("thin"), Some("node-a"))
            .await
            .available_capacity,
        0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_volume_capabilities() {
    let h = Harness::new().await;
    let v = h.create(volume("pvc-v", None, None)).await.unwrap();
    let mut ctl = h.ctl.clone();
    let req = |id: &str, caps: Vec<VolumeCapability>| pb::ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        volume_context: [("k".to_string(), "v".to_string())].into(),
        ..Default::default()
    };
    let ok = bounded(
        "validate",
        ctl.validate_volume_capabilities(req(&v.volume_id, vec![mount("xfs"), block()])),
    )
    .await
    .unwrap()
    .into_inner();
    let confirmed = ok.confirmed.expect("confirmed");
    assert_eq!(confirmed.volume_capabilities, vec![mount("xfs"), block()]);
    assert_eq!(confirmed.volume_context["k"], "v");
    let mut multi = mount("xfs");
    multi.access_mode = Some(AccessMode {
        mode: Mode::MultiNodeReaderOnly as i32,
    });
    let no = bounded(
        "validate",
        ctl.validate_volume_capabilities(req(&v.volume_id, vec![multi])),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(no.confirmed.is_none());
    assert!(no.message.contains("one node"), "{}", no.message);
    expect_code(
        bounded(
            "validate",
            ctl.validate_volume_capabilities(req("nope", vec![mount("xfs")])),
        )
        .await,
        Code::NotFound,
        "volume_id",
    );
    expect_code(
        bounded(
            "validate",
            ctl.validate_volume_capabilities(req(&v.volume_id, vec![])),
        )
        .await,
        Code::InvalidArgument,
        "volume_capabilities",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_creates_make_one_volume() {
    let h = Harness::new().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut ctl = h.ctl.clone();
        set.spawn(async move {
            ctl.create_volume(volume("pvc-race", None, Some(GIB)))
                .await
                .map(|r| r.into_inner().volume.unwrap().volume_id)
        });
    }
    let ids = bounded("16 CreateVolume", set.join_all()).await;
    let ids: Vec<String> = ids.into_iter().map(|r| r.unwrap()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(h.lvs().len(), 1);
    assert_eq!(h.lvs()[0].uid().unwrap(), ids[0]);
    let posts = h
        .api
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && r.contains("logicalvolumes"))
        .count();
    // How many calls got as far as creating varies from run to run; the losers' 409 path is
    // also covered deterministically by the store's unit test.
    assert!(posts >= 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_the_wait_and_a_retry_resumes_it() {
    let h = Harness::new().await;
    h.hold.store(true, Ordering::SeqCst);
    let mut ctl = h.ctl.clone();
    let mut req = Request::new(volume("hold-1", None, None));
    req.set_timeout(Duration::from_millis(300));
    expect_code(
        bounded("CreateVolume", ctl.create_volume(req)).await,
        Code::DeadlineExceeded,
        "retry",
    );
    let lv = h
        .lv_named("hold-1")
        .expect("the object stays for the retry");
    h.hold.store(false, Ordering::SeqCst);
    let v = h.create(volume("hold-1", None, None)).await.unwrap();
    assert_eq!(v.volume_id, lv.uid().unwrap());
    assert_eq!(h.lvs().len(), 1);
    h.stop().await;
}

const PVCS: &str = "api/v1/persistentvolumeclaims";
const EVENTS: &str = "api/v1/events";

/// A PVC `app/<name>` with `annotations`.
fn seed_claim(api: &ApiDouble, name: &str, annotations: Value) {
    api.seed(
        PVCS,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "app", "annotations": annotations}}),
    );
}

/// `volume(...)` as csi-provisioner sends it with `--extra-create-metadata` for PVC `app/<claim>`,
/// plus StorageClass parameters `extra`.
fn for_claim(
    name: &str,
    class: &str,
    bytes: i64,
    claim: &str,
    extra: &[(&str, &str)],
) -> pb::CreateVolumeRequest {
    let mut req = volume(name, Some(class), Some(bytes));
    req.parameters
        .insert(csi::PVC_NAME_PARAMETER.into(), claim.into());
    req.parameters
        .insert(csi::PVC_NAMESPACE_PARAMETER.into(), "app".into());
    for (k, v) in extra {
        req.parameters.insert(k.to_string(), v.to_string());
    }
    req
}

/// The messages of the Warning Events on PVC `app/<claim>`.
fn claim_events(api: &ApiDouble, claim: &str) -> Vec<String> {
    api.list(EVENTS)
        .into_iter()
        .filter(|e| {
            e["involvedObject"]["name"] == claim
                && e["involvedObject"]["kind"] == "PersistentVolumeClaim"
        })
        .inspect(|e| {
            assert_eq!(e["type"], "Warning");
            assert_eq!(e["reason"], "VolumeOptionsRefused");
            assert!(
                e["involvedObject"]["uid"].is_string(),
                "kubectl describe finds events by uid"
            );
        })
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn layout_of(h: &Harness, name: &str) -> Option<(String, Option<i64>)> {
    let v = serde_json::to_value(h.lv_named(name).unwrap().spec.layout?).unwrap();
    Some((v["type"].as_str().unwrap().into(), v["stripes"].as_i64()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_come_from_the_claim_then_csi_lvm_then_the_class() {
    let h = Harness::new().await;
    seed_claim(
        &h.api,
        "fast",
        json!({"lvms.topolvm.io/layout": "striped", "lvms.topolvm.io/stripes": "2"}),
    );
    seed_claim(
        &h.api,
        "moved",
        json!({"csi-lvm.metal-stack.io/type": "mirror"}),
    );
    seed_claim(&h.api, "plain", json!({}));
    let sc_mirror = [("lvms.topolvm.io/layout", "mirror")];
    h.create(for_claim("pvc-fast", "thick", GIB, "fast", &sc_mirror))
        .await
        .unwrap();
    assert_eq!(
        layout_of(&h, "pvc-fast"),
        Some(("striped".into(), Some(2))),
        "the claim's own annotation wins"
    );
    h.create(for_claim("pvc-moved", "thick", GIB, "moved", &[]))
        .await
        .unwrap();
    assert_eq!(
        layout_of(&h, "pvc-moved"),
        Some(("mirror".into(), None)),
        "csi-lvm's annotation"
    );
    h.create(for_claim("pvc-plain", "thick", GIB, "plain", &sc_mirror))
        .await
        .unwrap();
    assert_eq!(
        layout_of(&h, "pvc-plain"),
        Some(("mirror".into(), None)),
        "the class's default"
    );
    h.create(for_claim("pvc-linear", "thick", GIB, "plain", &[]))
        .await
        .unwrap();
    assert_eq!(
        layout_of(&h, "pvc-linear"),
        None,
        "linear is written as TopoLVM writes it"
    );
    let raw = h
        .api
        .list(LVS)
        .into_iter()
        .find(|v| v["spec"]["name"] == "pvc-linear")
        .unwrap();
    assert!(raw["spec"].get("layout").is_none(), "{raw}");
    // A repeat of a made volume answers the same, whatever the annotations say now.
    h.api.patch(
        PVCS,
        Some("app"),
        "fast",
        json!({"metadata": {"annotations": {"lvms.topolvm.io/layout": "mirror"}}}),
    );
    h.create(for_claim("pvc-fast", "thick", GIB, "fast", &sc_mirror))
        .await
        .unwrap();
    assert_eq!(layout_of(&h, "pvc-fast"), Some(("striped".into(), Some(2))));
    assert!(claim_events(&h.api, "fast").is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layouts_the_class_or_the_node_cannot_make_are_refused_on_the_claim() {
    let h = Harness::new().await;
    seed_claim(
        &h.api,
        "striped",
        json!({"lvms.topolvm.io/layout": "striped"}),
    );
    let r = h
        .create(for_claim("pvc-thin", "thin", GIB, "striped", &[]))
        .await;
    expect_code(
        r,
        Code::InvalidArgument,
        "PVC app/striped annotation lvms.topolvm.io/layout: the striped layout needs a thick device class, and thin is thin",
    );
    assert!(h.lv_named("pvc-thin").is_none(), "nothing was made");
    let events = claim_events(&h.api, "striped");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("needs a thick device class"),
        "{events:?}"
    );
    // The provisioner retries: still one Event.
    let _ = h
        .create(for_claim("pvc-thin", "thin", GIB, "striped", &[]))
        .await;
    assert_eq!(claim_events(&h.api, "striped").len(), 1);

    seed_claim(&h.api, "typo", json!({"lvms.topolvm.io/layout": "raid5"}));
    expect_code(
        h.create(for_claim("pvc-typo", "thick", GIB, "typo", &[]))
            .await,
        Code::InvalidArgument,
        "\"raid5\" is not a layout",
    );

    // The node knows its physical volumes: its refusal is the RPC's answer and an Event.
    seed_claim(&h.api, "onepv", json!({"lvms.topolvm.io/layout": "mirror"}));
    expect_code(
        h.create(for_claim("refuse-1", "thick", GIB, "onepv", &[]))
            .await,
        Code::InvalidArgument,
        "the mirror layout needs 2 physical volumes",
    );
    h.gone("refuse-1").await;
    let events = claim_events(&h.api, "onepv");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("needs 2 physical volumes, volume group thick on"),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_needs_twice_its_size_free() {
    let h = Harness::new().await;
    seed_claim(&h.api, "m", json!({"lvms.topolvm.io/layout": "mirror"}));
    // Thick: node-a has 5 GiB free, node-b 1 GiB. A 3 GiB mirror takes 6 GiB and metadata.
    let mut req = for_claim("pvc-m3", "thick", 3 * GIB, "m", &[]);
    req.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![topo("node-a")],
        preferred: vec![],
    });
    expect_code(
        h.create(req.clone()).await,
        Code::ResourceExhausted,
        "thick (as a mirror volume)",
    );
    req.name = "pvc-m2".into();
    req.capacity_range = Some(range(2 * GIB, 0));
    let v = h.create(req).await.unwrap();
    assert_eq!(node_of(&v), "node-a");
    // A StorageClass of mirrors: GetCapacity says what a mirror can hold.
    let mut ctl = h.ctl.clone();
    let cap = |layout: Option<&str>| pb::GetCapacityRequest {
        parameters: [(csi::DEVICE_CLASS_PARAMETER.to_string(), "thick".to_string())]
            .into_iter()
            .chain(layout.map(|l| ("lvms.topolvm.io/layout".to_string(), l.to_string())))
            .collect(),
        accessible_topology: Some(topo("node-a")),
        ..Default::default()
    };
    let mirror = ctl
        .get_capacity(cap(Some("mirror")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mirror.available_capacity, 5 * GIB / 2 - 4 * MIB);
    let striped = ctl
        .get_capacity(cap(Some("striped")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(striped.available_capacity, 5 * GIB);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkfs_and_mount_options_are_checked_and_reach_the_node() {
    let h = Harness::new().await;
    seed_claim(&h.api, "fs", json!({}));
    let mkfs = ("lvms.topolvm.io/mkfs-options", "-i size=512  -m reflink=1");
    let mut req = for_claim("pvc-fs", "thin", GIB, "fs", &[mkfs]);
    if let Some(AccessType::Mount(m)) = &mut req.volume_capabilities[0].access_type {
        m.mount_flags = vec!["noatime".into(), "nodiratime,discard".into()];
    }
    let v = h.create(req.clone()).await.unwrap();
    assert_eq!(
        v.volume_context
            .get("lvms.topolvm.io/mkfs-options")
            .map(String::as_str),
        Some("-i size=512 -m reflink=1"),
        "the PV's volumeAttributes carry them to NodePublishVolume"
    );
    assert_eq!(
        h.create(req).await.unwrap().volume_context,
        v.volume_context,
        "a repeat answers the same"
    );

    let bad = for_claim(
        "pvc-bad",
        "thin",
        GIB,
        "fs",
        &[("lvms.topolvm.io/mkfs-options", "-i size=512 -p /etc/passwd")],
    );
    expect_code(
        h.create(bad).await,
        Code::InvalidArgument,
        "parameters[lvms.topolvm.io/mkfs-options]: mkfs.xfs option \"/etc/passwd\": paths are not allowed",
    );
    let mut exec = for_claim("pvc-exec", "thin", GIB, "fs", &[]);
    if let Some(AccessType::Mount(m)) = &mut exec.volume_capabilities[0].access_type {
        m.mount_flags = vec!["noatime,exec".into()];
    }
    expect_code(
        h.create(exec).await,
        Code::InvalidArgument,
        "volume_capabilities[0].mount.mount_flags (mountOptions): xfs mount option \"exec\": widens privilege",
    );
    assert!(h.lv_named("pvc-bad").is_none() && h.lv_named("pvc-exec").is_none());
    assert_eq!(claim_events(&h.api, "fs").len(), 2);
    // A block volume is never formatted: the class's mkfs options do not stop it.
    let mut blk = for_claim("pvc-blk", "thin", GIB, "fs", &[mkfs]);
    blk.volume_capabilities = vec![block()];
    let blk_context = h.create(blk).await.unwrap().volume_context;
    assert!(
        !blk_context.contains_key("lvms.topolvm.io/mkfs-options"),
        "{blk_context:?}"
    );
    h.stop().await;
}

/// The node tells the claim why mkfs or mount failed: it learns the claim (and the PV, whose
/// claimRef holds the claim's UID) from the volume context, filled from csi-provisioner's
/// `--extra-create-metadata`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_volume_context_names_the_claim_and_pv() {
    let h = Harness::new().await;
    seed_claim(&h.api, "named", json!({}));
    let mut req = for_claim("pvc-named", "thin", GIB, "named", &[]);
    req.parameters
        .insert(csi::PV_NAME_PARAMETER.into(), "pvc-named".into());
    let v = h.create(req.clone()).await.unwrap();
    let ctx = |k: &str| v.volume_context.get(k).map(String::as_str);
    assert_eq!(ctx("lvms.topolvm.io/pvc-name"), Some("named"));
    assert_eq!(ctx("lvms.topolvm.io/pvc-namespace"), Some("app"));
    assert_eq!(ctx("lvms.topolvm.io/pv-name"), Some("pvc-named"));
    assert_eq!(
        h.create(req).await.unwrap().volume_context,
        v.volume_context,
        "a repeat answers the same"
    );
    // Without the extra metadata there is no claim to name.
    let plain = h.create(volume("pvc-plain", Some("thin"), Some(GIB))).await;
    assert!(plain.unwrap().volume_context.is_empty());
    h.stop().await;
}

/// I/O limits (issue 16, part 1): the StorageClass's rates reach the node in the volume
/// context; a bad one is refused naming the parameter, and no LogicalVolume is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_limits_travel_in_the_volume_context() {
    let h = Harness::new().await;
    let mut req = volume("pvc-limited", Some("thin"), Some(GIB));
    for (k, v) in [
        ("lvms.topolvm.io/read-bps", "100Mi"),
        ("lvms.topolvm.io/write-iops-per-gib", "20"),
    ] {
        req.parameters.insert(k.into(), v.into());
    }
    let v = h.create(req).await.unwrap();
    let ctx = |k: &str| v.volume_context.get(k).map(String::as_str);
    assert_eq!(ctx("lvms.topolvm.io/read-bps"), Some("104857600"));
    assert_eq!(ctx("lvms.topolvm.io/write-iops-per-gib"), Some("20"));
    let mut bad = volume("pvc-bad-limit", Some("thin"), Some(GIB));
    bad.parameters
        .insert("lvms.topolvm.io/read-iops".into(), "many".into());
    let before = h.api.list(LVS).len();
    let e = h.create(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("parameters[lvms.topolvm.io/read-iops]"),
        "{}",
        e.message()
    );
    assert_eq!(
        h.api.list(LVS).len(),
        before,
        "no LogicalVolume for a refused request"
    );
    h.stop().await;
}

impl Harness {
    async fn list_volumes(
        &self,
        max_entries: i32,
        token: &str,
    ) -> Result<pb::ListVolumesResponse, Status> {
        let mut ctl = self.ctl.clone();
        let req = pb::ListVolumesRequest {
            max_entries,
            starting_token: token.into(),
        };
        bounded("ListVolumes", ctl.list_volumes(req))
            .await
            .map(|r| r.into_inner())
    }

    async fn get_volume(&self, id: &str) -> Result<pb::ControllerGetVolumeResponse, Status> {
        let mut ctl = self.ctl.clone();
        let req = pb::ControllerGetVolumeRequest {
            volume_id: id.into(),
        };
        bounded("ControllerGetVolume", ctl.controller_get_volume(req))
            .await
            .map(|r| r.into_inner())
    }

    async fn list_snapshots(
        &self,
        req: pb::ListSnapshotsRequest,
    ) -> Result<pb::ListSnapshotsResponse, Status> {
        let mut ctl = self.ctl.clone();
        bounded("ListSnapshots", ctl.list_snapshots(req))
            .await
            .map(|r| r.into_inner())
    }

    /// Writes `status` fields of the LogicalVolume of `spec_name`, as its node would.
    async fn node_writes(&self, spec_name: &str, status: Value) {
        let name = self.lv_named(spec_name).unwrap().name_any();
        Api::<LogicalVolume>::all(self.api.client())
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }
}

fn ids(r: &pb::ListVolumesResponse) -> Vec<String> {
    r.entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect()
}

fn condition_of(e: &pb::list_volumes_response::Entry) -> pb::VolumeCondition {
    e.status
        .as_ref()
        .and_then(|s| s.volume_condition.clone())
        .expect("VOLUME_CONDITION: every entry has a condition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_volumes_pages_in_one_order_and_skips_nothing() {
    let h = Harness::new().await;
    let mut made = vec![];
    for i in 0..5 {
        made.push(
            h.create(volume(&format!("pvc-l{i}"), None, Some(GIB)))
                .await
                .unwrap(),
        );
    }
    // A snapshot is no volume.
    h.snapshot("snapshot-l", &made[0].volume_id).await.unwrap();
    let mut want: Vec<String> = made.iter().map(|v| v.volume_id.clone()).collect();
    want.sort();

    let all = h.list_volumes(0, "").await.unwrap();
    assert_eq!(ids(&all), want, "every volume, in volume ID order");
    assert!(all.next_token.is_empty());
    for (e, v) in all.entries.iter().zip(&want) {
        let vol = e.volume.as_ref().unwrap();
        let made = made.iter().find(|m| &m.volume_id == v).unwrap();
        assert_eq!(vol.capacity_bytes, made.capacity_bytes);
        assert_eq!(vol.accessible_topology, made.accessible_topology);
        let st = e.status.as_ref().unwrap();
        assert!(st.published_node_ids.is_empty());
        assert!(!condition_of(e).abnormal);
    }

    // Pages of two, to the end; the same token gives the same page.
    let p1 = h.list_volumes(2, "").await.unwrap();
    assert_eq!(ids(&p1), want[..2]);
    assert!(!p1.next_token.is_empty());
    let p2 = h.list_volumes(2, &p1.next_token).await.unwrap();
    assert_eq!(ids(&p2), want[2..4]);
    assert_eq!(
        p2,
        h.list_volumes(2, &p1.next_token).await.unwrap(),
        "idempotent"
    );
    let p3 = h.list_volumes(2, &p2.next_token).await.unwrap();
    assert_eq!((ids(&p3), p3.next_token.as_str()), (want[4..].to_vec(), ""));

    // The last volume of the first page goes, one is added: the next page neither repeats
    // nor skips what it had.
    h.delete(&want[1]).await.unwrap();
    h.create(volume("pvc-l5", None, None)).await.unwrap();
    let rest = h.list_volumes(0, &p1.next_token).await.unwrap();
    for id in &want[2..] {
        assert!(ids(&rest).contains(id), "{id} skipped");
    }
    assert!(!ids(&rest).contains(&want[1]) && !ids(&rest).contains(&want[0]));
    assert_eq!(h.list_volumes(0, "").await.unwrap().entries.len(), 5);

    expect_code(
        h.list_volumes(0, "invalid-token").await,
        Code::Aborted,
        "starting_token",
    );
    expect_code(
        h.list_volumes(-1, "").await,
        Code::InvalidArgument,
        "max_entries",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_come_from_what_the_node_recorded() {
    let h = Harness::new().await;
    let full = h.create(volume("pvc-full", None, None)).await.unwrap();
    let gone = h.create(volume("pvc-gone", None, None)).await.unwrap();
    let fine = h.create(volume("pvc-fine", None, None)).await.unwrap();
    let pool = "thin pool thin/pool is out of data space (100.00% used): writes fail";
    h.node_writes(
        "pvc-full",
        json!({"health": {"abnormal": true, "message": pool}}),
    )
    .await;
    // A node whose agent predates the health check: its reconciler's NOT_FOUND says it.
    h.node_writes(
        "pvc-gone",
        json!({"code": 5, "message": format!("logical volume thin/{} has vanished from the node", gone.volume_id)}),
    )
    .await;
    h.node_writes("pvc-fine", json!({"health": {"abnormal": false}}))
        .await;

    let list = h.list_volumes(0, "").await.unwrap();
    let cond = |id: &str| {
        let e = list
            .entries
            .iter()
            .find(|e| e.volume.as_ref().unwrap().volume_id == id)
            .unwrap();
        condition_of(e)
    };
    assert_eq!(
        cond(&full.volume_id),
        pb::VolumeCondition {
            abnormal: true,
            message: pool.into()
        }
    );
    let c = cond(&gone.volume_id);
    assert!(c.abnormal && c.message.contains("vanished"), "{c:?}");
    assert!(!cond(&fine.volume_id).abnormal);

    // ControllerGetVolume says the same, per volume.
    let g = h.get_volume(&full.volume_id).await.unwrap();
    assert_eq!(g.volume.as_ref().unwrap().volume_id, full.volume_id);
    let st = g.status.unwrap();
    assert_eq!(st.volume_condition.unwrap().message, pool);
    assert!(st.published_node_ids.is_empty());

    // The node sees the pool again: normal again.
    h.node_writes(
        "pvc-full",
        json!({"health": {"abnormal": false, "message": null}}),
    )
    .await;
    let g = h.get_volume(&full.volume_id).await.unwrap();
    assert!(!g.status.unwrap().volume_condition.unwrap().abnormal);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_volume_is_not_found_for_what_is_no_volume() {
    let h = Harness::new().await;
    expect_code(
        h.get_volume("").await,
        Code::InvalidArgument,
        "volume_id is required",
    );
    expect_code(
        h.get_volume("no-such-id").await,
        Code::NotFound,
        "volume_id",
    );
    let v = h.create(volume("pvc-g", None, Some(GIB))).await.unwrap();
    let got = h.get_volume(&v.volume_id).await.unwrap().volume.unwrap();
    assert_eq!(
        (
            got.volume_id.as_str(),
            got.capacity_bytes,
            &got.accessible_topology
        ),
        (
            v.volume_id.as_str(),
            v.capacity_bytes,
            &v.accessible_topology
        )
    );
    assert_eq!(got.content_source, None);
    let s = h.snapshot("snapshot-g", &v.volume_id).await.unwrap();
    expect_code(
        h.get_volume(&s.snapshot_id).await,
        Code::NotFound,
        "is a snapshot",
    );
    // A restore names its snapshot as its source, a clone its volume.
    let mut restore = volume("pvc-g-restore", None, None);
    restore.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Source::Snapshot(SnapshotSource {
            snapshot_id: s.snapshot_id.clone(),
        })),
    });
    let r = h.create(restore.clone()).await.unwrap();
    assert_eq!(
        h.get_volume(&r.volume_id)
            .await
            .unwrap()
            .volume
            .unwrap()
            .content_source,
        restore.volume_content_source
    );
    let mut clone = volume("pvc-g-clone", None, None);
    clone.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(Source::Volume(VolumeSource {
            volume_id: v.volume_id.clone(),
        })),
    });
    let c = h.create(clone.clone()).await.unwrap();
    assert_eq!(
        h.get_volume(&c.volume_id)
            .await
            .unwrap()
            .volume
            .unwrap()
            .content_source,
        clone.volume_content_source
    );
    h.delete(&c.volume_id).await.unwrap();
    expect_code(
        h.get_volume(&c.volume_id).await,
        Code::NotFound,
        "not found",
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_snapshots_filters_and_pages() {
    let h = Harness::new().await;
    let a = h.create(volume("pvc-sa", None, None)).await.unwrap();
    let b = h.create(volume("pvc-sb", None, None)).await.unwrap();
    let mut snaps = vec![];
    for (name, src) in [("snap-a1", &a), ("snap-a2", &a), ("snap-b1", &b)] {
        snaps.push(h.snapshot(name, &src.volume_id).await.unwrap());
    }
    let list = |req: pb::ListSnapshotsRequest| h.list_snapshots(req);
    let snap_ids = |r: &pb::ListSnapshotsResponse| -> Vec<String> {
        r.entries
            .iter()
            .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
            .collect()
    };
    let mut want: Vec<String> = snaps.iter().map(|s| s.snapshot_id.clone()).collect();
    want.sort();
    let all = list(Default::default()).await.unwrap();
    assert_eq!(snap_ids(&all), want, "snapshots only, in ID order");
    for e in &all.entries {
        let s = e.snapshot.as_ref().unwrap();
        let made = snaps
            .iter()
            .find(|m| m.snapshot_id == s.snapshot_id)
            .unwrap();
        assert_eq!(s, made, "as CreateSnapshot answered");
    }
    let one = list(pb::ListSnapshotsRequest {
        snapshot_id: snaps[1].snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(snap_ids(&one), [snaps[1].snapshot_id.clone()]);
    let of_a = list(pb::ListSnapshotsRequest {
        source_volume_id: a.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(of_a.entries.len(), 2);
    assert!(
        of_a.entries
            .iter()
            .all(|e| e.snapshot.as_ref().unwrap().source_volume_id == a.volume_id)
    );
    for none in [
        pb::ListSnapshotsRequest {
            snapshot_id: "none-exist-id".into(),
            ..Default::default()
        },
        pb::ListSnapshotsRequest {
            source_volume_id: "no-such-volume".into(),
            ..Default::default()
        },
    ] {
        assert!(list(none).await.unwrap().entries.is_empty());
    }
    let p1 = list(pb::ListSnapshotsRequest {
        max_entries: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(snap_ids(&p1), want[..2]);
    let p2 = list(pb::ListSnapshotsRequest {
        starting_token: p1.next_token.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        (snap_ids(&p2), p2.next_token.as_str()),
        (want[2..].to_vec(), "")
    );
    expect_code(
        list(pb::ListSnapshotsRequest {
            starting_token: "invalid-token".into(),
            ..Default::default()
        })
        .await,
        Code::Aborted,
        "starting_token",
    );
    let mut ctl = h.ctl.clone();
    bounded(
        "DeleteSnapshot",
        ctl.delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: snaps[0].snapshot_id.clone(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(list(Default::default()).await.unwrap().entries.len(), 2);
    h.stop().await;
}
