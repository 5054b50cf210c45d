//! Helpers of the end-to-end suite (`tests/cluster.rs`): when to run, the LVMCluster the suite
//! installs, object builders, bounded waits and cleanup, and the scrape of the agents' HTTPS
//! metrics endpoint.
//!
//! The suite runs only with `LVMS_E2E=1` and `KUBECONFIG` naming a kubeconfig file; otherwise
//! every test prints why it is skipped and passes. Optional: `LVMS_E2E_NAMESPACE` (default
//! `openshift-storage`), `LVMS_E2E_DEVICES` (or `LVMS_E2E_DEVICE`: comma-separated disk paths,
//! one device class per path, see [`plan_classes`]) and `LVMS_E2E_IMAGE` (the pods' image, any
//! image with a busybox-like shell, `dd`, `head` and `df`).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, Event, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext, ServiceAccount, TypedLocalObjectReference, Volume, VolumeDevice, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::{Client, Resource, ResourceExt};
use lvms_api::{
    DeviceClass, DeviceFilesystemType, DeviceSelector, LVMCluster, LVMClusterSpec, ReclaimPolicy,
    Storage, StorageClassOptions, ThinPoolConfig, VolumeBindingMode,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;

/// Errors of the suite are messages that say what was waited for and what was seen.
pub type Res<T> = Result<T, String>;

/// Name of the LVMCluster the suite creates (and deletes in its last test).
pub const CLUSTER_NAME: &str = "lvms-e2e";
/// Thin xfs class, the default; always present.
pub const CLASS_THIN_XFS: &str = "thin-xfs";
/// Thin ext4 class (second device).
pub const CLASS_THIN_EXT4: &str = "thin-ext4";
/// Thick xfs class (third device).
pub const CLASS_THICK: &str = "thick";
/// Thin xfs class with reclaimPolicy Retain and volumeBindingMode Immediate (fourth device).
pub const CLASS_OPTIONS: &str = "options";
/// Default pod image.
pub const DEFAULT_IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";
/// Where pods mount a filesystem volume, and the device path of a block volume.
pub const MOUNT_PATH: &str = "/data";
pub const DEVICE_PATH: &str = "/dev/e2e-block";
/// Label on every object the suite creates, for manual cleanup (`kubectl delete -l`).
pub const E2E_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "lvms-e2e");

/// How long the LVMCluster may take to become Ready (VGs on every node).
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a PVC, pod or snapshot may take to reach the state a test waits for.
pub const OBJECT_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_secs(2);

/// Why the suite does not run, from the values of `LVMS_E2E` and `KUBECONFIG` (None: it runs).
pub fn skip_reason(flag: Option<&str>, kubeconfig: Option<&str>) -> Option<String> {
    if flag != Some("1") {
        return Some(
            "LVMS_E2E is not 1; run `LVMS_E2E=1 cargo test -p e2e -- --test-threads=1` with \
             KUBECONFIG pointing at a cluster"
                .into(),
        );
    }
    match kubeconfig {
        None => Some("KUBECONFIG is not set".into()),
        Some(k) if k.trim().is_empty() => Some("KUBECONFIG is empty".into()),
        Some(k) if std::env::split_paths(k).any(|p| p.is_file()) => None,
        Some(k) => Some(format!("KUBECONFIG names no existing file ({k})")),
    }
}

/// The disk paths of `LVMS_E2E_DEVICES`: comma or whitespace separated, duplicates dropped.
pub fn parse_devices(value: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in value
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    out
}

/// The device classes of the suite's LVMCluster. Without devices: one thin xfs class on every
/// eligible disk. With devices, one class per device, in this order: thin xfs (default), thin
/// ext4, thick xfs, and a thin class with reclaimPolicy Retain and volumeBindingMode Immediate
/// (with more than one class, every class must name its disks). Extra devices are unused.
pub fn plan_classes(devices: &[String]) -> Vec<DeviceClass> {
    let thin = |name: &str| ThinPoolConfig {
        name: format!("{name}-pool"),
        size_percent: 90,
        overprovision_ratio: 10,
        ..Default::default()
    };
    let base = [
        (CLASS_THIN_XFS, true, DeviceFilesystemType::Xfs, false),
        (CLASS_THIN_EXT4, true, DeviceFilesystemType::Ext4, false),
        (CLASS_THICK, false, DeviceFilesystemType::Xfs, false),
        (CLASS_OPTIONS, true, DeviceFilesystemType::Xfs, true),
    ];
    let n = devices.len().clamp(1, base.len());
    base.iter()
        .take(n)
        .enumerate()
        .map(|(i, &(name, is_thin, fstype, options))| DeviceClass {
            name: name.into(),
            default: i == 0,
            fstype,
            thin_pool_config: is_thin.then(|| thin(name)),
            device_selector: devices.get(i).map(|d| DeviceSelector {
                paths: Some(vec![d.clone()]),
                ..Default::default()
            }),
            storage_class_options: if options {
                StorageClassOptions {
                    reclaim_policy: ReclaimPolicy::Retain,
                    volume_binding_mode: VolumeBindingMode::Immediate,
                    ..Default::default()
                }
            } else {
                StorageClassOptions::default()
            },
            ..Default::default()
        })
        .collect()
}

/// The suite's LVMCluster.
pub fn lvmcluster(namespace: &str, classes: Vec<DeviceClass>) -> LVMCluster {
    let mut c = LVMCluster::new(
        CLUSTER_NAME,
        LVMClusterSpec {
            storage: Storage {
                device_classes: classes,
            },
            ..Default::default()
        },
    );
    c.metadata.namespace = Some(namespace.into());
    c.metadata.labels = Some(labels());
    c
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(E2E_LABEL.0.to_string(), E2E_LABEL.1.to_string())])
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels()),
        ..Default::default()
    }
}

/// A ReadWriteOnce claim of `size` on `storage_class`; `block` asks for a raw device, `source` a
/// clone (a PVC) or a restore (a VolumeSnapshot).
pub fn pvc(
    name: &str,
    namespace: &str,
    storage_class: &str,
    size: &str,
    block: bool,
    source: Option<TypedLocalObjectReference>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(name, namespace),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(storage_class.into()),
            volume_mode: Some(if block { "Block" } else { "Filesystem" }.into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                ..Default::default()
            }),
            data_source: source,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The dataSource of a clone of PVC `name`.
pub fn pvc_source(name: &str) -> TypedLocalObjectReference {
    TypedLocalObjectReference {
        api_group: None,
        kind: "PersistentVolumeClaim".into(),
        name: name.into(),
    }
}

/// The dataSource of a restore of VolumeSnapshot `name`.
pub fn snapshot_source(name: &str) -> TypedLocalObjectReference {
    TypedLocalObjectReference {
        api_group: Some("snapshot.storage.k8s.io".into()),
        kind: "VolumeSnapshot".into(),
        name: name.into(),
    }
}

/// The `disk` group, owner of block device nodes on Debian, RHEL/RHCOS and Ubuntu hosts.
pub const DISK_GID: i64 = 6;

/// A pod that runs `script` with `sh -c` once (restartPolicy Never) with claim `claim` mounted at
/// [`MOUNT_PATH`], or attached as the device [`DEVICE_PATH`] when `block`.
pub fn pod(
    name: &str,
    namespace: &str,
    image: &str,
    claim: &str,
    block: bool,
    script: &str,
) -> Pod {
    pod_on(name, namespace, image, claim, block, script, None)
}

/// [`pod`], pinned to the node whose `topology.topolvm.io/node` label is `node` (a clone or a
/// restore lives on its source's node, so its first consumer must be scheduled there).
pub fn pod_on(
    name: &str,
    namespace: &str,
    image: &str,
    claim: &str,
    block: bool,
    script: &str,
    node: Option<&str>,
) -> Pod {
    let (mounts, devices) = if block {
        (
            None,
            Some(vec![VolumeDevice {
                name: "vol".into(),
                device_path: DEVICE_PATH.into(),
            }]),
        )
    } else {
        (
            Some(vec![VolumeMount {
                name: "vol".into(),
                mount_path: MOUNT_PATH.into(),
                ..Default::default()
            }]),
            None,
        )
    };
    Pod {
        metadata: meta(name, namespace),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(1),
            // No privilege, and ready for OpenShift's restricted-v2 SCC, which runs the pod as an
            // arbitrary UID: a filesystem volume is writable through the fsGroup kubelet applies,
            // a block device (root:disk 0660 on the host) through the disk group. The UID is left
            // to the platform (busybox runs as root where nothing assigns one).
            security_context: Some(PodSecurityContext {
                supplemental_groups: block.then(|| vec![DISK_GID]),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            node_selector: node.map(|n| {
                BTreeMap::from([(
                    lvms_api::names::TOPOLOGY_NODE_KEY.to_string(),
                    n.to_string(),
                )])
            }),
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                volume_mounts: mounts,
                volume_devices: devices,
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "vol".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node a PV is pinned to by its `topology.topolvm.io/node` node affinity.
pub fn pv_node(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == lvms_api::names::TOPOLOGY_NODE_KEY && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

/// A shell script that writes `content` (no single quotes) to the volume and flushes it.
pub fn write_script(block: bool, content: &str) -> String {
    assert!(
        !content.contains('\''),
        "content must not contain a single quote"
    );
    if block {
        format!("printf '%s' '{content}' | dd of={DEVICE_PATH} bs=512 conv=fsync")
    } else {
        format!("printf '%s' '{content}' > {MOUNT_PATH}/data.txt && sync")
    }
}

/// A shell script that prints the `len` bytes [`write_script`] wrote.
pub fn read_script(block: bool, len: usize) -> String {
    if block {
        format!("head -c {len} {DEVICE_PATH}")
    } else {
        format!("cat {MOUNT_PATH}/data.txt")
    }
}

/// A script that prints the mounted filesystem's size every 2 s, for as long as the pod runs.
pub fn df_loop_script() -> String {
    format!("while true; do df -P -k {MOUNT_PATH} | tail -n 1; sleep 2; done")
}

/// The total size in KiB of the last `df -P -k` line in `log`.
pub fn df_total_kib(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .next()
}

/// The API resource of snapshot.storage.k8s.io/v1 VolumeSnapshot.
pub fn volume_snapshot_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
        "volumesnapshots",
    )
}

/// A VolumeSnapshot of PVC `source` with VolumeSnapshotClass `class`.
pub fn volume_snapshot(name: &str, namespace: &str, class: &str, source: &str) -> DynamicObject {
    let mut o = DynamicObject::new(name, &volume_snapshot_resource())
        .within(namespace)
        .data(json!({
            "spec": {
                "volumeSnapshotClassName": class,
                "source": { "persistentVolumeClaimName": source },
            }
        }));
    o.metadata.labels = Some(labels());
    o
}

/// `status.readyToUse` of a VolumeSnapshot.
pub fn snapshot_ready(o: &DynamicObject) -> bool {
    o.data
        .pointer("/status/readyToUse")
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// The StorageClass of a device class.
pub fn storage_class_name(class: &str) -> String {
    format!("{}{class}", lvms_api::names::STORAGE_CLASS_PREFIX)
}

/// A name unique within a run: `prefix-<millis since epoch, base 36>`.
pub fn unique(prefix: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut n = ms;
    let mut s = Vec::new();
    while n > 0 {
        s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    format!("{prefix}-{}", String::from_utf8(s).unwrap_or_default())
}

/// Polls `probe` every 2 s until it returns `Ok(Some(_))`, for at most `timeout`. A probe
/// reports what it saw as `Err(observation)`; on timeout the error names `what` was awaited and
/// the last observation.
pub async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut last = String::from("nothing observed yet");
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "timed out after {}s waiting for {what}; last seen: {last}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `name` no longer exists in `api`.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration) -> Res<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait(&format!("{name} to be deleted"), timeout, || async {
        match api.get_opt(name).await.map_err(s)? {
            None => Ok(Some(())),
            Some(o) => Err(format!(
                "{name} still exists (finalizers {:?})",
                o.meta().finalizers
            )),
        }
    })
    .await
}

/// An error's text.
pub fn s(e: impl Display) -> String {
    e.to_string()
}

/// Deletes `name` (absent is fine) and waits until it is gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str, timeout: Duration) -> Res<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(format!("deleting {name}: {e}")),
    }
    wait_gone(api, name, timeout).await
}

/// The connection and settings of a run.
#[derive(Clone)]
pub struct Env {
    pub client: Client,
    pub namespace: String,
    pub devices: Vec<String>,
    pub image: String,
}

impl Env {
    /// The environment of a run, or None (after printing why) when the suite must not run.
    pub async fn get(test: &str) -> Option<Env> {
        let flag = std::env::var("LVMS_E2E").ok();
        let kubeconfig = std::env::var("KUBECONFIG").ok();
        if let Some(why) = skip_reason(flag.as_deref(), kubeconfig.as_deref()) {
            println!("skipping e2e test {test}: {why}");
            return None;
        }
        let client = match Client::try_default().await {
            Ok(c) => c,
            Err(e) => panic!("LVMS_E2E=1 but no client from KUBECONFIG: {e}"),
        };
        let devices = parse_devices(
            std::env::var("LVMS_E2E_DEVICES")
                .or_else(|_| std::env::var("LVMS_E2E_DEVICE"))
                .ok()
                .as_deref(),
        );
        Some(Env {
            client,
            namespace: std::env::var("LVMS_E2E_NAMESPACE")
                .unwrap_or_else(|_| lvms_api::names::DEFAULT_NAMESPACE.into()),
            devices,
            image: std::env::var("LVMS_E2E_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.into()),
        })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn clusters(&self) -> Api<LVMCluster> {
        self.api()
    }

    /// The device classes this run's LVMCluster has.
    pub fn classes(&self) -> Vec<DeviceClass> {
        plan_classes(&self.devices)
    }

    /// Whether the run has `class`; prints why the test is skipped when not.
    pub fn has_class(&self, test: &str, class: &str) -> bool {
        let ok = self.classes().iter().any(|c| c.name == class);
        if !ok {
            println!(
                "skipping e2e test {test}: device class {class} needs more disks in \
                 LVMS_E2E_DEVICES (one per class: {CLASS_THIN_XFS}, {CLASS_THIN_EXT4}, \
                 {CLASS_THICK}, {CLASS_OPTIONS})"
            );
        }
        ok
    }

    /// Whether the VolumeSnapshot API is served.
    pub async fn snapshot_crds(&self) -> bool {
        self.client
            .list_api_group_resources("snapshot.storage.k8s.io/v1")
            .await
            .map(|l| l.resources.iter().any(|r| r.name == "volumesnapshots"))
            .unwrap_or(false)
    }

    /// Creates the suite's LVMCluster unless it exists, and waits until it is Ready.
    pub async fn ensure_cluster(&self) -> Res<LVMCluster> {
        let api = self.clusters();
        let existing = api.list(&Default::default()).await.map_err(s)?.items;
        if let Some(other) = existing.iter().find(|c| c.name_any() != CLUSTER_NAME) {
            return Err(format!(
                "namespace {} already has LVMCluster {}; the suite installs its own ({CLUSTER_NAME})",
                self.namespace,
                other.name_any()
            ));
        }
        if let Some(c) = existing.iter().find(|c| c.name_any() == CLUSTER_NAME)
            && c.metadata.deletion_timestamp.is_some()
        {
            wait_gone(&api, CLUSTER_NAME, CLUSTER_READY_TIMEOUT).await?;
        }
        if let Some(c) = api.get_opt(CLUSTER_NAME).await.map_err(s)? {
            let have: Vec<&str> = c
                .spec
                .storage
                .device_classes
                .iter()
                .map(|d| d.name.as_str())
                .collect();
            let planned = self.classes();
            let want: Vec<&str> = planned.iter().map(|d| d.name.as_str()).collect();
            if have != want {
                return Err(format!(
                    "LVMCluster {CLUSTER_NAME} has classes {have:?} but LVMS_E2E_DEVICES asks for \
                     {want:?}; delete it (kubectl -n {} delete lvmcluster {CLUSTER_NAME}) or \
                     run with the devices it was made with",
                    self.namespace
                ));
            }
        } else {
            api.create(
                &PostParams::default(),
                &lvmcluster(&self.namespace, self.classes()),
            )
            .await
            .map_err(|e| format!("creating LVMCluster {CLUSTER_NAME}: {e}"))?;
        }
        self.wait_cluster_ready().await
    }

    /// Waits for `status.state: Ready` of the suite's LVMCluster.
    pub async fn wait_cluster_ready(&self) -> Res<LVMCluster> {
        let api = self.clusters();
        wait(
            &format!("LVMCluster {CLUSTER_NAME} to be Ready"),
            CLUSTER_READY_TIMEOUT,
            || async {
                let c = api.get(CLUSTER_NAME).await.map_err(s)?;
                let st = c.status.clone().unwrap_or_default();
                if st.state == Some(lvms_api::LVMStateType::Ready) {
                    Ok(Some(c))
                } else {
                    Err(format!(
                        "state {:?}, conditions {:?}",
                        st.state,
                        st.conditions
                            .iter()
                            .map(|c| format!(
                                "{}={} {}: {}",
                                c.type_, c.status, c.reason, c.message
                            ))
                            .collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await
    }

    /// Waits until PVC `name` is Bound.
    pub async fn wait_bound(&self, name: &str) -> Res<PersistentVolumeClaim> {
        let api: Api<PersistentVolumeClaim> = self.api();
        wait(
            &format!("PVC {name} to be Bound"),
            OBJECT_TIMEOUT,
            || async {
                let p = api.get(name).await.map_err(s)?;
                let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                if phase.as_deref() == Some("Bound") {
                    Ok(Some(p))
                } else {
                    Err(format!("phase {phase:?}"))
                }
            },
        )
        .await
    }

    /// Waits until pod `name` reaches `phase` (Running or Succeeded); Failed is an error at once.
    pub async fn wait_pod_phase(&self, name: &str, phase: &str) -> Res<Pod> {
        let api: Api<Pod> = self.api();
        let p = wait(
            &format!("pod {name} to be {phase}"),
            OBJECT_TIMEOUT,
            || async {
                let p = api.get(name).await.map_err(s)?;
                let now = p.status.as_ref().and_then(|s| s.phase.clone());
                if now.as_deref() == Some(phase) || now.as_deref() == Some("Failed") {
                    Ok(Some(p))
                } else {
                    Err(format!(
                        "phase {now:?}, conditions {:?}",
                        p.status.as_ref().and_then(|s| s.conditions.clone())
                    ))
                }
            },
        )
        .await?;
        let now = p.status.as_ref().and_then(|s| s.phase.clone());
        if now.as_deref() == Some("Failed") && phase != "Failed" {
            let log = self.logs(name).await.unwrap_or_default();
            return Err(format!("pod {name} Failed; log: {log}"));
        }
        Ok(p)
    }

    /// The PV bound to PVC `claim`, and its name.
    pub async fn bound_pv(&self, claim: &str) -> Res<(String, PersistentVolume)> {
        let pvcs: Api<PersistentVolumeClaim> = self.api();
        let pv_name = pvcs
            .get(claim)
            .await
            .map_err(s)?
            .spec
            .and_then(|s| s.volume_name)
            .ok_or_else(|| format!("PVC {claim} is not bound"))?;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs.get(&pv_name).await.map_err(s)?;
        Ok((pv_name, pv))
    }

    /// The node of bound PVC `claim`: the `topology.topolvm.io/node` term of its PV.
    pub async fn volume_node(&self, claim: &str) -> Res<String> {
        let (pv_name, pv) = self.bound_pv(claim).await?;
        pv_node(&pv).ok_or_else(|| {
            format!(
                "PV {pv_name} has no {} term",
                lvms_api::names::TOPOLOGY_NODE_KEY
            )
        })
    }

    /// The log of pod `name`.
    pub async fn logs(&self, name: &str) -> Res<String> {
        let api: Api<Pod> = self.api();
        api.logs(name, &Default::default())
            .await
            .map_err(|e| format!("log of pod {name}: {e}"))
    }

    /// Runs `script` in a one-shot pod on `claim` and returns its output.
    pub async fn run_pod(
        &self,
        cleanup: &mut Cleanup,
        name: &str,
        claim: &str,
        block: bool,
        script: &str,
    ) -> Res<String> {
        self.run_pod_on(cleanup, name, claim, block, script, None)
            .await
    }

    /// [`Env::run_pod`] on a given node (see [`pod_on`]).
    pub async fn run_pod_on(
        &self,
        cleanup: &mut Cleanup,
        name: &str,
        claim: &str,
        block: bool,
        script: &str,
        node: Option<&str>,
    ) -> Res<String> {
        let p = pod_on(
            name,
            &self.namespace,
            &self.image,
            claim,
            block,
            script,
            node,
        );
        cleanup.create(self, p).await?;
        self.wait_pod_phase(name, "Succeeded").await?;
        let out = self.logs(name).await?;
        cleanup.delete_pod(self, name).await?;
        Ok(out)
    }
}

/// What a test created, deleted in reverse order at the end whatever happened.
#[derive(Default)]
pub struct Cleanup {
    items: Vec<(&'static str, String)>,
}

impl Cleanup {
    /// Creates a namespaced object and remembers it.
    pub async fn create<K>(&mut self, env: &Env, obj: K) -> Res<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let kind = K::kind(&Default::default()).to_string();
        let name = obj.name_any();
        let api: Api<K> = env.api();
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("creating {kind} {name}: {e}"))?;
        self.items.push((kind_str(&kind), name));
        Ok(created)
    }

    /// Creates a VolumeSnapshot and remembers it.
    pub async fn create_snapshot(&mut self, env: &Env, obj: DynamicObject) -> Res<()> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            env.client.clone(),
            &env.namespace,
            &volume_snapshot_resource(),
        );
        let name = obj.name_any();
        api.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| format!("creating VolumeSnapshot {name}: {e}"))?;
        self.items.push(("VolumeSnapshot", name));
        Ok(())
    }

    /// Deletes a pod now (a volume is free for another node only once its pod is gone).
    pub async fn delete_pod(&mut self, env: &Env, name: &str) -> Res<()> {
        let api: Api<Pod> = env.api();
        delete_and_wait(&api, name, OBJECT_TIMEOUT).await?;
        self.items.retain(|(k, n)| !(*k == "Pod" && n == name));
        Ok(())
    }

    /// Creates StorageClass `sc`, or takes over one an interrupted run left (server-side apply;
    /// a StorageClass's parameters cannot change, so a leftover with others is refused), and
    /// remembers it: track it before the claims on it, so that it goes after them.
    pub async fn apply_storage_class(&mut self, env: &Env, sc: StorageClass) -> Res<StorageClass> {
        let api: Api<StorageClass> = Api::all(env.client.clone());
        let applied = apply(&api, &sc).await?;
        self.items.push(("StorageClass", sc.name_any()));
        Ok(applied)
    }

    /// Remembers an object created some other way (a PersistentVolume left by Retain, ...).
    pub fn track(&mut self, kind: &'static str, name: &str) {
        self.items.push((kind, name.into()));
    }

    /// Deletes everything, newest first, and waits for each to be gone. Returns the failures.
    pub async fn run(self, env: &Env) -> Vec<String> {
        let mut errors = Vec::new();
        for (kind, name) in self.items.into_iter().rev() {
            let r = match kind {
                "Pod" => delete_and_wait(&env.api::<Pod>(), &name, OBJECT_TIMEOUT).await,
                "PersistentVolumeClaim" => {
                    delete_and_wait(&env.api::<PersistentVolumeClaim>(), &name, OBJECT_TIMEOUT)
                        .await
                }
                "VolumeSnapshot" => {
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        env.client.clone(),
                        &env.namespace,
                        &volume_snapshot_resource(),
                    );
                    delete_and_wait(&api, &name, OBJECT_TIMEOUT).await
                }
                "PersistentVolume" => {
                    let api: Api<k8s_openapi::api::core::v1::PersistentVolume> =
                        Api::all(env.client.clone());
                    delete_and_wait(&api, &name, OBJECT_TIMEOUT).await
                }
                "LogicalVolume" => {
                    let api: Api<lvms_api::LogicalVolume> = Api::all(env.client.clone());
                    delete_and_wait(&api, &name, OBJECT_TIMEOUT).await
                }
                "StorageClass" => {
                    let api: Api<StorageClass> = Api::all(env.client.clone());
                    delete_and_wait(&api, &name, OBJECT_TIMEOUT).await
                }
                other => Err(format!("cleanup does not know kind {other}")),
            };
            if let Err(e) = r {
                errors.push(format!("cleanup of {kind} {name}: {e}"));
            }
        }
        errors
    }
}

fn kind_str(kind: &str) -> &'static str {
    match kind {
        "Pod" => "Pod",
        "PersistentVolumeClaim" => "PersistentVolumeClaim",
        "PersistentVolume" => "PersistentVolume",
        "VolumeSnapshot" => "VolumeSnapshot",
        _ => "Unknown",
    }
}

/// Runs a test body, then its cleanup whatever the body returned; fails with the body's error
/// (and any cleanup error).
pub async fn run_test<F>(env: &Env, body: F)
where
    F: AsyncFnOnce(&Env, &mut Cleanup) -> Res<()>,
{
    let mut cleanup = Cleanup::default();
    let result = body(env, &mut cleanup).await;
    let cleanup_errors = cleanup.run(env).await;
    match (result, cleanup_errors.is_empty()) {
        (Ok(()), true) => {}
        (Ok(()), false) => panic!("test passed but cleanup failed: {cleanup_errors:?}"),
        (Err(e), true) => panic!("{e}"),
        (Err(e), false) => panic!("{e}\n(and cleanup failed: {cleanup_errors:?})"),
    }
}

/// The samples of metric `name` in a Prometheus or OpenMetrics text exposition, as (labels,
/// value). Label values are taken as written (the agent's node and class names need no escapes).
pub fn metric_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue, // another metric whose name starts with `name`
        };
        let Some(Ok(value)) = value.split_whitespace().next().map(str::parse::<f64>) else {
            continue;
        };
        let labels = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            .collect();
        out.push((labels, value));
    }
    out
}

/// The value of `name` for one node and device class, if served.
pub fn class_metric(text: &str, name: &str, node: &str, class: &str) -> Option<f64> {
    metric_samples(text, name)
        .into_iter()
        .find(|(l, _)| {
            l.get("node").map(String::as_str) == Some(node)
                && l.get("device_class").map(String::as_str) == Some(class)
        })
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------------------------
// The agents' metrics endpoint: HTTPS, for callers the API server authorizes.
// ---------------------------------------------------------------------------------------------

/// The name of the vg-manager container port that serves `/metrics` (HTTPS only).
pub const METRICS_PORT_NAME: &str = "https-metrics";
/// The ClusterRole LVMS ships for scrapers (config/prometheus/metrics_reader_cluster_role.yaml):
/// `get` on the non-resource URL `/metrics`.
pub const METRICS_READER_ROLE: &str = "lvms-metrics-reader";
/// The suite's scraper: a ServiceAccount bound (by a ClusterRoleBinding of the same name) to
/// [`METRICS_READER_ROLE`].
pub const SCRAPER_ACCOUNT: &str = "lvms-e2e-scraper";
/// A ServiceAccount of the suite without that binding.
pub const NO_METRICS_ACCOUNT: &str = "lvms-e2e-no-metrics";
/// Lifetime of the suite's ServiceAccount tokens (the API server's minimum).
const TOKEN_SECONDS: i64 = 600;
/// How long one HTTPS GET over a port-forward may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);
/// Field manager of the suite's server-side applies.
const FIELD_MANAGER: &str = "lvms-e2e";

/// A ServiceAccount of the suite.
pub fn service_account(name: &str, namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, namespace),
        ..Default::default()
    }
}

/// A ClusterRoleBinding `name` of ClusterRole `role` to ServiceAccount `account` of `namespace`.
pub fn cluster_role_binding(
    name: &str,
    role: &str,
    account: &str,
    namespace: &str,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(namespace.into()),
            api_group: None,
        }]),
    }
}

/// A TLS client configuration that takes whatever certificate the server shows, for the
/// suite's scrape of the agents: the suite proves who may read the metrics (authentication and
/// authorization), not the certificate chain, which depends on the platform (OpenShift's
/// service-ca signs it; elsewhere the agent signs its own). The handshake signatures are still
/// checked, so the server does hold the key of the certificate it shows.
pub fn any_server_cert_tls() -> Res<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyServerCert(provider.signature_verification_algorithms));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any server certificate; verifies the handshake signatures with ring's algorithms.
#[derive(Debug)]
struct AnyServerCert(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The first `max` characters of `text`, marked when cut (for messages).
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Creates `obj` or brings an existing one (left by an earlier run) to it: server-side apply.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Res<K>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).to_string();
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(|e| format!("applying {kind} {name}: {e}"))
}

impl Env {
    /// GET `path` from the API server as is: the status and body, whatever the status (kube's
    /// `request_text` turns a refusal into an error and hides who refused).
    pub async fn raw_get(&self, path: &str) -> Res<(u16, String)> {
        let request = http::Request::get(path)
            .body(kube::client::Body::from(Vec::new()))
            .map_err(|e| format!("GET {path}: {e}"))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {path}: reading the body after status {status}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A fresh token of ServiceAccount `name` (TokenRequest), for the API server's audience.
    pub async fn service_account_token(&self, name: &str) -> Res<String> {
        let accounts: Api<ServiceAccount> = self.api();
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let answer: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("requesting a token of ServiceAccount {name}: {e}"))?;
        answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("the TokenRequest of ServiceAccount {name} returned no token"))
    }

    /// GET `/metrics` over HTTPS from port `port` of pod `pod`, through a port-forward (the
    /// API server's pod proxy drops the caller's Authorization header), with `token` as the
    /// bearer token; the status and body. The certificate is not checked
    /// ([`any_server_cert_tls`]).
    pub async fn scrape_pod(
        &self,
        pod: &str,
        port: u16,
        token: Option<&str>,
    ) -> Res<(u16, String)> {
        let tls = any_server_cert_tls()?;
        let pods: Api<Pod> = self.api();
        let mut forward = pods
            .portforward(pod, &[port])
            .await
            .map_err(|e| format!("port-forward to {pod}:{port}: {e}"))?;
        let forwarded = forward.take_stream(port);
        let forward_error = forward.take_error(port);
        // The name the agent's certificate carries, as a scraper through the Service would
        // send it (only SNI here: the certificate is not checked).
        let server_name = format!(
            "{}.{}.svc",
            lvms_api::names::VG_MANAGER_METRICS_SERVICE,
            self.namespace
        );
        let result = match forwarded {
            None => Err(format!(
                "the port-forward to {pod} has no stream for port {port}"
            )),
            Some(stream) => {
                let get =
                    http_probe::client::get_with(stream, tls, &server_name, "/metrics", token);
                match tokio::time::timeout(SCRAPE_TIMEOUT, get).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => {
                        // What the kubelet said about the forward (connection refused, ...).
                        let said = match forward_error {
                            Some(f) => tokio::time::timeout(Duration::from_secs(2), f)
                                .await
                                .ok()
                                .flatten(),
                            None => None,
                        };
                        Err(format!(
                            "GET https://{pod}:{port}/metrics over a port-forward: {e}{}",
                            said.map(|m| format!(" (port-forward: {m})"))
                                .unwrap_or_default()
                        ))
                    }
                    Err(_) => Err(format!(
                        "GET https://{pod}:{port}/metrics over a port-forward: no answer within {}s",
                        SCRAPE_TIMEOUT.as_secs()
                    )),
                }
            }
        };
        forward.abort();
        result
    }

    /// The suite's two ServiceAccounts ([`SCRAPER_ACCOUNT`], bound to [`METRICS_READER_ROLE`],
    /// and [`NO_METRICS_ACCOUNT`]), created or brought back to the suite's spec if an earlier
    /// run left them; their tokens (scraper, other). [`Env::remove_metrics_accounts`] deletes
    /// them.
    pub async fn metrics_accounts(&self) -> Res<(String, String)> {
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        if roles
            .get_opt(METRICS_READER_ROLE)
            .await
            .map_err(s)?
            .is_none()
        {
            return Err(format!(
                "ClusterRole {METRICS_READER_ROLE} is missing: LVMS ships it \
                 (config/prometheus/metrics_reader_cluster_role.yaml) for scrapers"
            ));
        }
        let accounts: Api<ServiceAccount> = self.api();
        for name in [SCRAPER_ACCOUNT, NO_METRICS_ACCOUNT] {
            apply(&accounts, &service_account(name, &self.namespace)).await?;
        }
        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        apply(
            &bindings,
            &cluster_role_binding(
                SCRAPER_ACCOUNT,
                METRICS_READER_ROLE,
                SCRAPER_ACCOUNT,
                &self.namespace,
            ),
        )
        .await?;
        Ok((
            self.service_account_token(SCRAPER_ACCOUNT).await?,
            self.service_account_token(NO_METRICS_ACCOUNT).await?,
        ))
    }

    /// Deletes what [`Env::metrics_accounts`] made (absent is fine); the failures.
    pub async fn remove_metrics_accounts(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let bindings: Api<ClusterRoleBinding> = Api::all(self.client.clone());
        if let Err(e) = delete_and_wait(&bindings, SCRAPER_ACCOUNT, OBJECT_TIMEOUT).await {
            errors.push(format!(
                "cleanup of ClusterRoleBinding {SCRAPER_ACCOUNT}: {e}"
            ));
        }
        let accounts: Api<ServiceAccount> = self.api();
        for name in [SCRAPER_ACCOUNT, NO_METRICS_ACCOUNT] {
            if let Err(e) = delete_and_wait(&accounts, name, OBJECT_TIMEOUT).await {
                errors.push(format!("cleanup of ServiceAccount {name}: {e}"));
            }
        }
        errors
    }
}

// ---------------------------------------------------------------------------------------------
// Per-volume I/O limits: a StorageClass of the suite's own, a timed read, the pod's mount
// failures.
// ---------------------------------------------------------------------------------------------

/// A StorageClass `name` of the suite for the CSI driver (label [`E2E_LABEL`], no owner label:
/// the operator neither manages nor removes it): `parameters`, reclaimPolicy Delete,
/// volumeBindingMode WaitForFirstConsumer, allowVolumeExpansion.
pub fn storage_class(name: &str, parameters: &[(&str, &str)]) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        provisioner: lvms_api::names::CSI_DRIVER_NAME.into(),
        parameters: Some(
            parameters
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        allow_volume_expansion: Some(true),
        ..Default::default()
    }
}

/// The first word of the line [`timed_read_script`] prints after its read.
pub const TIMED_READ_MARK: &str = "lvms-e2e-timed-read";

/// A script that reads `mib` MiB of the block volume ([`DEVICE_PATH`]) with O_DIRECT (no page
/// cache: every MiB is a read of the device, which the pod cgroup's `io.max` throttles) and
/// prints `lvms-e2e-timed-read start=<s> end=<s>`: the host's uptime (`/proc/uptime`, 10 ms
/// resolution; busybox `date` gives whole seconds) before and after. dd's summary (`N+0 records
/// in`) goes to stderr, which is in the pod's log too; a failed dd fails the pod (`set -e`).
pub fn timed_read_script(mib: u32) -> String {
    format!(
        "set -e; read t0 rest < /proc/uptime; \
         dd if={DEVICE_PATH} of=/dev/null bs=1M count={mib} iflag=direct; \
         read t1 rest < /proc/uptime; echo \"{TIMED_READ_MARK} start=$t0 end=$t1\""
    )
}

/// The seconds the read of [`timed_read_script`] took, from its log; None without its line.
pub fn timed_read_seconds(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(TIMED_READ_MARK))?;
    let field = |key: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))?
            .parse()
            .ok()
    };
    let (start, end) = (field("start=")?, field("end=")?);
    (end >= start).then_some(end - start)
}

impl Env {
    /// The messages of the FailedMount Events of pod `name` (kubelet's reports of a
    /// NodePublishVolume or NodeStageVolume that failed), oldest first.
    pub async fn mount_failures(&self, name: &str) -> Res<Vec<String>> {
        let events: Api<Event> = self.api();
        let mut list = events
            .list(&ListParams::default().fields(&format!(
                "involvedObject.kind=Pod,involvedObject.name={name}"
            )))
            .await
            .map_err(|e| format!("listing the Events of pod {name}: {e}"))?
            .items;
        list.sort_by_key(|e| {
            let last = e.last_timestamp.as_ref().map(|t| t.0);
            last.or(e.event_time.as_ref().map(|t| t.0))
        });
        Ok(list
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedMount"))
            .filter_map(|e| e.message)
            .collect())
    }

    /// The volume attributes (CreateVolume's volume context) of the PV bound to PVC `claim`.
    pub async fn volume_attributes(&self, claim: &str) -> Res<BTreeMap<String, String>> {
        let (pv_name, pv) = self.bound_pv(claim).await?;
        let csi = pv
            .spec
            .and_then(|s| s.csi)
            .ok_or_else(|| format!("PV {pv_name} of PVC {claim} is not a CSI volume"))?;
        Ok(csi.volume_attributes.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agents_gauges() {
        let text = "# HELP topolvm_volumegroup_size_bytes LVM VG size in bytes.\n\
            # TYPE topolvm_volumegroup_size_bytes gauge\n\
            topolvm_volumegroup_size_bytes{node=\"w1\",device_class=\"vg1\"} 2143289344\n\
            topolvm_volumegroup_size_bytes{node=\"w1\",device_class=\"thick\"} 1073741824\n\
            topolvm_volumegroup_size_bytes_other{node=\"w1\",device_class=\"vg1\"} 1\n\
            topolvm_thinpool_data_percent{node=\"w1\",device_class=\"vg1\"} 12.5\n\
            vg_manager_passes_total 7\n\
            # EOF\n";
        assert_eq!(
            class_metric(text, "topolvm_volumegroup_size_bytes", "w1", "vg1"),
            Some(2143289344.0)
        );
        assert_eq!(
            class_metric(text, "topolvm_volumegroup_size_bytes", "w1", "thick"),
            Some(1073741824.0)
        );
        assert_eq!(
            class_metric(text, "topolvm_thinpool_data_percent", "w1", "vg1"),
            Some(12.5)
        );
        assert_eq!(
            class_metric(text, "topolvm_volumegroup_size_bytes", "w2", "vg1"),
            None
        );
        assert_eq!(
            metric_samples(text, "topolvm_volumegroup_size_bytes").len(),
            2
        );
        let passes = metric_samples(text, "vg_manager_passes_total");
        assert_eq!(passes.len(), 1);
        assert!(passes[0].0.is_empty());
        assert_eq!(passes[0].1, 7.0);
    }

    #[test]
    fn skips_without_flag_or_kubeconfig() {
        assert!(
            skip_reason(None, Some("/etc/hostname"))
                .unwrap()
                .contains("LVMS_E2E")
        );
        assert!(skip_reason(Some("0"), Some("/etc/hostname")).is_some());
        assert!(
            skip_reason(Some("1"), None)
                .unwrap()
                .contains("KUBECONFIG is not set")
        );
        assert!(skip_reason(Some("1"), Some(" ")).unwrap().contains("empty"));
        assert!(
            skip_reason(Some("1"), Some("/nonexistent/kubeconfig"))
                .unwrap()
                .contains("no existing file")
        );
        // Any existing file of a path list is enough.
        let list = format!(
            "/nonexistent/a:{}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
        );
        assert_eq!(skip_reason(Some("1"), Some(&list)), None);
    }

    #[test]
    fn devices_split_on_commas_and_spaces_without_duplicates() {
        assert!(parse_devices(None).is_empty());
        assert!(parse_devices(Some(" , ")).is_empty());
        assert_eq!(
            parse_devices(Some("/dev/vdb, /dev/vdc /dev/vdb,,/dev/disk/by-id/x")),
            ["/dev/vdb", "/dev/vdc", "/dev/disk/by-id/x"]
        );
    }

    #[test]
    fn one_default_thin_class_on_every_disk_without_devices() {
        let c = plan_classes(&[]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, CLASS_THIN_XFS);
        assert!(c[0].default);
        assert!(c[0].device_selector.is_none());
        assert_eq!(
            c[0].thin_pool_config.as_ref().unwrap().name,
            "thin-xfs-pool"
        );
    }

    #[test]
    fn one_class_per_device_each_with_its_own_path() {
        let devs: Vec<String> = (0..6).map(|i| format!("/dev/vd{i}")).collect();
        let c = plan_classes(&devs);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [CLASS_THIN_XFS, CLASS_THIN_EXT4, CLASS_THICK, CLASS_OPTIONS]
        );
        for (i, class) in c.iter().enumerate() {
            let sel = class.device_selector.as_ref().unwrap();
            assert_eq!(sel.paths.as_deref(), Some(&[devs[i].clone()][..]));
        }
        assert_eq!(c.iter().filter(|c| c.default).count(), 1);
        assert_eq!(c[1].fstype, DeviceFilesystemType::Ext4);
        assert!(c[2].thin_pool_config.is_none(), "the third class is thick");
        assert_eq!(
            c[3].storage_class_options.reclaim_policy,
            ReclaimPolicy::Retain
        );
        assert_eq!(
            c[3].storage_class_options.volume_binding_mode,
            VolumeBindingMode::Immediate
        );
        assert_eq!(plan_classes(&devs[..2]).len(), 2);
    }

    #[test]
    fn the_cluster_passes_the_offline_validation() {
        let c = lvmcluster("ns", plan_classes(&["/dev/a".into(), "/dev/b".into()]));
        assert_eq!(c.metadata.name.as_deref(), Some(CLUSTER_NAME));
        assert_eq!(c.metadata.namespace.as_deref(), Some("ns"));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "lvm.topolvm.io/v1alpha1");
        assert_eq!(v["spec"]["storage"]["deviceClasses"][1]["fstype"], "ext4");
        assert_eq!(
            v["spec"]["storage"]["deviceClasses"][0]["deviceSelector"]["paths"][0],
            "/dev/a"
        );
    }

    #[test]
    fn pvc_builder_sets_mode_size_class_and_source() {
        let p = pvc(
            "a",
            "ns",
            "lvms-thin-xfs",
            "1Gi",
            true,
            Some(pvc_source("src")),
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("lvms-thin-xfs"));
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("1Gi".into())
        );
        let src = spec.data_source.unwrap();
        assert_eq!(
            (src.kind.as_str(), src.name.as_str()),
            ("PersistentVolumeClaim", "src")
        );
        assert_eq!(src.api_group, None);
        let fs = pvc("b", "ns", "x", "1Gi", false, None).spec.unwrap();
        assert_eq!(fs.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(
            snapshot_source("s").api_group.as_deref(),
            Some("snapshot.storage.k8s.io")
        );
        assert_eq!(p.metadata.labels.unwrap()[E2E_LABEL.0], E2E_LABEL.1);
    }

    #[test]
    fn pod_builder_mounts_or_attaches_the_claim() {
        let fs = pod("p", "ns", "img", "claim", false, "true").spec.unwrap();
        let c = &fs.containers[0];
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, MOUNT_PATH);
        assert!(c.volume_devices.is_none());
        assert_eq!(fs.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            fs.volumes.as_ref().unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "claim"
        );
        let b = pod("p", "ns", "img", "claim", true, "true").spec.unwrap();
        let c = &b.containers[0];
        assert_eq!(
            c.volume_devices.as_ref().unwrap()[0].device_path,
            DEVICE_PATH
        );
        assert!(c.volume_mounts.is_none());
        assert_eq!(c.command.as_ref().unwrap()[..2], ["sh", "-c"]);
        // Only the block pod joins the disk group; neither may escalate.
        let groups = |p: &PodSpec| p.security_context.as_ref()?.supplemental_groups.clone();
        assert_eq!(groups(&b), Some(vec![DISK_GID]));
        assert_eq!(groups(&fs), None);
        for spec in [&fs, &b] {
            let sc = spec.containers[0].security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
        }
    }

    #[test]
    fn pinned_pod_selects_the_topolvm_node_label() {
        let p = pod_on("p", "ns", "img", "c", false, "true", Some("node-a"));
        let sel = p.spec.unwrap().node_selector.unwrap();
        assert_eq!(sel["topology.topolvm.io/node"], "node-a");
        assert!(
            pod("p", "ns", "img", "c", false, "true")
                .spec
                .unwrap()
                .node_selector
                .is_none()
        );
    }

    #[test]
    fn pv_node_reads_the_topology_term() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [
                    {"key": "other", "operator": "In", "values": ["x"]},
                    {"key": "topology.topolvm.io/node", "operator": "In", "values": ["node-b"]}
                ]}
            ]}}}
        }))
        .unwrap();
        assert_eq!(pv_node(&pv).as_deref(), Some("node-b"));
        assert_eq!(pv_node(&PersistentVolume::default()), None);
    }

    #[test]
    fn scripts_write_and_read_the_same_place() {
        let w = write_script(false, "hello");
        assert!(w.contains("'hello'") && w.contains("/data/data.txt"));
        assert!(read_script(false, 5).contains("/data/data.txt"));
        let w = write_script(true, "hello");
        assert!(w.contains(DEVICE_PATH) && w.contains("conv=fsync"));
        assert_eq!(read_script(true, 5), format!("head -c 5 {DEVICE_PATH}"));
    }

    #[test]
    #[should_panic(expected = "single quote")]
    fn scripts_refuse_quotes() {
        write_script(false, "it's");
    }

    #[test]
    fn df_total_is_read_from_the_last_line() {
        let log = "/dev/topolvm/a 1038336 32992 1005344 4% /data\n\
                   /dev/topolvm/a 2086912 47264 2039648 3% /data\n";
        assert_eq!(df_total_kib(log), Some(2086912));
        assert_eq!(df_total_kib("Filesystem 1024-blocks Used\n"), None);
        assert_eq!(df_total_kib(""), None);
    }

    #[test]
    fn suite_storage_class_is_labelled_and_waits_for_a_consumer() {
        let sc = storage_class(
            "lvms-e2e-io",
            &[
                ("topolvm.io/device-class", "thin-xfs"),
                ("lvms.topolvm.io/read-bps", "4Mi"),
            ],
        );
        let v = serde_json::to_value(&sc).unwrap();
        assert_eq!(v["apiVersion"], "storage.k8s.io/v1");
        assert_eq!(v["kind"], "StorageClass");
        assert_eq!(v["metadata"]["name"], "lvms-e2e-io");
        assert!(v["metadata"].get("namespace").is_none(), "{v}");
        assert_eq!(v["metadata"]["labels"][E2E_LABEL.0], E2E_LABEL.1);
        assert_eq!(v["provisioner"], "topolvm.io");
        assert_eq!(
            v["parameters"],
            json!({"topolvm.io/device-class": "thin-xfs", "lvms.topolvm.io/read-bps": "4Mi"})
        );
        assert_eq!(v["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(v["reclaimPolicy"], "Delete");
        assert_eq!(v["allowVolumeExpansion"], true);
    }

    #[test]
    fn timed_read_reads_the_device_directly_and_its_time_is_parsed() {
        let script = timed_read_script(24);
        assert!(
            script.contains(&format!(
                "dd if={DEVICE_PATH} of=/dev/null bs=1M count=24 iflag=direct"
            )),
            "{script}"
        );
        assert!(script.starts_with("set -e;"), "{script}");
        let log = "24+0 records in\n24+0 records out\n\
                   25165824 bytes (24.0MB) copied, 6.001 seconds, 4.0MB/s\n\
                   lvms-e2e-timed-read start=12345.67 end=12351.70\n";
        let secs = timed_read_seconds(log).unwrap();
        assert!((secs - 6.03).abs() < 1e-6, "{secs}");
        assert_eq!(timed_read_seconds("24+0 records in\n"), None);
        assert_eq!(
            timed_read_seconds("lvms-e2e-timed-read start=5.0 end=x\n"),
            None
        );
        assert_eq!(
            timed_read_seconds("lvms-e2e-timed-read start=5.0 end=4.0\n"),
            None
        );
    }

    #[test]
    fn snapshot_object_names_class_and_source() {
        let o = volume_snapshot("snap", "ns", "lvms-thin-xfs", "src");
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["apiVersion"], "snapshot.storage.k8s.io/v1");
        assert_eq!(v["kind"], "VolumeSnapshot");
        assert_eq!(v["metadata"]["namespace"], "ns");
        assert_eq!(v["spec"]["volumeSnapshotClassName"], "lvms-thin-xfs");
        assert_eq!(v["spec"]["source"]["persistentVolumeClaimName"], "src");
        assert!(!snapshot_ready(&o));
        let mut ready = o.clone();
        ready.data["status"] = json!({"readyToUse": true});
        assert!(snapshot_ready(&ready));
    }

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique("pvc");
        assert!(a.starts_with("pvc-"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(storage_class_name("vg1"), "lvms-vg1");
    }

    #[test]
    fn metrics_accounts_are_labelled_and_bound_to_the_reader_role() {
        let sa = service_account(SCRAPER_ACCOUNT, "ns");
        assert_eq!(sa.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(sa.metadata.labels.unwrap()[E2E_LABEL.0], E2E_LABEL.1);
        let b = cluster_role_binding(SCRAPER_ACCOUNT, METRICS_READER_ROLE, SCRAPER_ACCOUNT, "ns");
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(v["kind"], "ClusterRoleBinding");
        assert_eq!(v["metadata"]["name"], SCRAPER_ACCOUNT);
        assert!(v["metadata"].get("namespace").is_none(), "{v}");
        assert_eq!(v["metadata"]["labels"][E2E_LABEL.0], E2E_LABEL.1);
        assert_eq!(
            v["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                   "name": "lvms-metrics-reader"})
        );
        assert_eq!(
            v["subjects"],
            json!([{"kind": "ServiceAccount", "name": "lvms-e2e-scraper", "namespace": "ns"}])
        );
    }

    /// The names the test relies on are the ones LVMS ships.
    #[test]
    fn the_shipped_manifests_have_the_reader_role_and_the_https_port() {
        let role = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/prometheus/metrics_reader_cluster_role.yaml"
        ));
        assert!(role.contains("kind: ClusterRole\n"), "{role}");
        assert!(
            role.contains(&format!("name: {METRICS_READER_ROLE}\n")),
            "{role}"
        );
        assert!(
            role.contains("- nonResourceURLs:\n  - /metrics\n  verbs:\n  - get\n"),
            "{role}"
        );
        let service = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/prometheus/vg_manager_service.yaml"
        ));
        assert!(
            service.contains(&format!(
                "name: {}\n",
                lvms_api::names::VG_MANAGER_METRICS_SERVICE
            )),
            "{service}"
        );
        assert!(
            service.contains(&format!("targetPort: {METRICS_PORT_NAME}\n")),
            "{service}"
        );
    }

    /// Answers one HTTPS request with `up 1` on `io`, with the agent's self-signed certificate;
    /// returns the request head it read (empty when the handshake failed).
    async fn serve_once(
        certs: Arc<http_probe::tls::Certificates>,
        io: tokio::io::DuplexStream,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut tls) = certs.acceptor().unwrap().accept(io).await else {
            return String::new();
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nup 1\n")
            .await;
        let _ = tls.shutdown().await;
        String::from_utf8_lossy(&head).into_owned()
    }

    #[tokio::test]
    async fn the_scrape_takes_a_self_signed_certificate_and_sends_the_token() {
        let names = http_probe::tls::service_names("vg-manager-metrics", "ns");
        let certs = http_probe::tls::Certificates::new(None, &names).unwrap();
        assert_eq!(certs.source(), http_probe::tls::Source::SelfSigned);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_once(certs.clone(), server));
        let got = http_probe::client::get_with(
            client,
            any_server_cert_tls().unwrap(),
            &names[0],
            "/metrics",
            Some("tok"),
        )
        .await;
        let head = served.await.unwrap();
        assert_eq!(got, Ok((200, "up 1\n".to_string())));
        assert!(head.starts_with("GET /metrics HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("Authorization: Bearer tok\r\n"), "{head}");
        // A client that checks the chain refuses the same certificate: the verifier is what
        // lets the scrape through.
        let (client, server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(serve_once(certs, server));
        let e = http_probe::client::get(client, &names[0], &[], "/metrics", None)
            .await
            .unwrap_err();
        assert!(e.starts_with("TLS"), "{e}");
        assert_eq!(served.await.unwrap(), "");
    }

    #[test]
    fn excerpts_cut_long_text_on_a_char_boundary() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("ééééé", 2), "éé...");
        assert_eq!(excerpt("", 0), "");
    }

    #[tokio::test]
    async fn wait_reports_the_last_observation_on_timeout() {
        let mut n = 0;
        let e = wait::<(), _, _>("nothing", Duration::from_millis(0), || {
            n += 1;
            let seen = format!("attempt {n}");
            async move { Err(seen) }
        })
        .await
        .unwrap_err();
        assert!(
            e.contains("waiting for nothing") && e.contains("attempt 1"),
            "{e}"
        );
        let v = wait("a value", Duration::from_secs(5), || async { Ok(Some(7)) })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
}
