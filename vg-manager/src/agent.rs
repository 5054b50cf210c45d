//! One reconcile pass of the node agent over every LVMVolumeGroup that selects this node: build
//! or extend its volume group and thin pool, tear it down when it is deleted, and report status
//! and capacity. LVM is read once per pass (one lsblk, one report) and again only after a change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lvm::lsblk::BlockDevice;
use lvm::{Exec, Lvm, Report};
use lvms_api::names::{CAPACITY_ANNOTATION_PREFIX, capacity_annotation, node_cleanup_finalizer};
use lvms_api::{
    DeviceDiscoveryPolicyStatus, LVMVolumeGroup, LVMVolumeGroupNodeStatus,
    LVMVolumeGroupNodeStatusSpec, VGStatus, VGStatusType,
};
use serde_json::json;

use crate::capacity::{self, ClassUsage};
use crate::plan::{self, Observed};
use crate::reports::Reports;

mod pools;
mod raw;
pub use pools::{PoolPoll, Watched};
pub use raw::{FORMATTED_ANNOTATION, RawCounts};

/// Whether a listed path resolves to a device that `scanned` (a scan's devices, children too)
/// does not have.
fn unseen<'a>(
    scanned: &[BlockDevice],
    mut listed: impl Iterator<Item = &'a String>,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> bool {
    let known: BTreeSet<&str> = scanned
        .iter()
        .flat_map(|d| d.walk())
        .map(|d| d.name.as_str())
        .collect();
    listed.any(|p| resolve(p).is_some_and(|dev| !known.contains(dev.as_str())))
}

/// Annotation on this node's LVMVolumeGroupNodeStatus recording the devices wiped per class, so
/// a restart never wipes twice. Written before wiping: at most once, even across a crash.
pub const WIPED_ANNOTATION: &str = "lvm.topolvm.io/wiped-devices";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Kube(String, #[source] kube::Error),
    #[error("{0}")]
    Lvm(String),
}

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| Error::Kube(what.to_string(), e)
}

pub struct Agent {
    pub client: Client,
    pub node: String,
    pub namespace: String,
    pub runner: Arc<Exec>,
    pub lvm: Lvm,
    /// Shared with the LogicalVolume reconciler and the CSI node service.
    pub reports: Arc<Reports>,
    /// The devices of the last scan, reused by passes that do not scan.
    devices: std::sync::Mutex<Option<Devices>>,
    /// dm-raid was found once: it is not looked for again.
    raid_ok: std::sync::atomic::AtomicBool,
    /// What this agent last wrote (or found) in its node's status: a watch event that carries
    /// exactly this is our own write and needs no pass.
    published: std::sync::Mutex<Option<LVMVolumeGroupNodeStatusSpec>>,
    /// Events on the PersistentVolumes of raw-device classes.
    recorder: kube::runtime::events::Recorder,
    /// The thin pools with autoExtend and their standing warnings (see [`pools`]).
    pools: std::sync::Mutex<pools::PoolState>,
    /// Woken when the first pool is to be watched: the poller sleeps while there is none.
    pools_watched: tokio::sync::Notify,
}

/// What a device scan found.
#[derive(Clone)]
struct Devices {
    devices: Vec<BlockDevice>,
    container_mounts: bool,
    loops: BTreeMap<String, String>,
}

/// What one pass saw and did, for metrics and tests.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub statuses: Vec<VGStatus>,
    pub usage: BTreeMap<String, ClassUsage>,
    /// LVM or disks were changed in this pass.
    pub changed: bool,
    /// The next periodic pass must scan the disks again: a class discovers devices
    /// (RuntimeDynamic) or is not built yet (a missing disk may appear).
    pub rescan: bool,
    /// Raw-device classes, summed over the classes (`None`: the node has none).
    pub raw: Option<RawCounts>,
}

struct Snapshot {
    devices: Vec<BlockDevice>,
    /// The devices' mount points are this container's, not the host's.
    container_mounts: bool,
    report: Report,
    loops: BTreeMap<String, String>,
}

fn resolve(path: &str) -> Option<String> {
    std::fs::canonicalize(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl Agent {
    pub fn new(client: Client, node: &str, namespace: &str, runner: Arc<Exec>) -> Self {
        let reports = Arc::new(Reports::new(Lvm::new(runner.clone())));
        Self::with_reports(client, node, namespace, runner, reports)
    }

    pub fn with_reports(
        client: Client,
        node: &str,
        namespace: &str,
        runner: Arc<Exec>,
        reports: Arc<Reports>,
    ) -> Self {
        let reporter = kube::runtime::events::Reporter {
            controller: "vg-manager".into(),
            instance: Some(node.into()),
        };
        Self {
            recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
            client,
            node: node.into(),
            namespace: namespace.into(),
            lvm: reports.lvm().clone(),
            runner,
            reports,
            devices: Default::default(),
            raid_ok: Default::default(),
            published: Default::default(),
            pools: Default::default(),
            pools_watched: Default::default(),
        }
    }

    /// Reads the node's disks and LVM (blocking commands, off the async threads). The LVM report
    /// is read anew, and shared with whoever else needs one now.
    async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.snapshot_with(true).await
    }

    /// Like [`Self::snapshot`]; without `scan`, the disks of the last scan are reused (LVM is
    /// always read anew).
    async fn snapshot_with(&self, scan: bool) -> Result<Snapshot, Error> {
        let cached = if scan {
            None
        } else {
            self.devices.lock().unwrap().clone()
        };
        let found = match cached {
            Some(d) => d,
            None => {
                let runner = self.runner.clone();
                let d = tokio::task::spawn_blocking(move || {
                    let (devices, container_mounts) =
                        crate::discover::block_devices(runner.as_ref())
                            .map_err(|e| Error::Lvm(e.to_string()))?;
                    let loops = crate::discover::loop_backing(runner.as_ref());
                    Ok::<_, Error>(Devices {
                        devices,
                        container_mounts,
                        loops,
                    })
                })
                .await
                .map_err(|e| Error::Lvm(format!("LVM task: {e}")))??;
                *self.devices.lock().unwrap() = Some(d.clone());
                d
            }
        };
        let Devices {
            devices,
            container_mounts,
            loops,
        } = found;
        let report = self
            .reports
            .fresh()
            .await
            .map_err(|e| Error::Lvm(e.to_string()))?;
        Ok(Snapshot {
            devices,
            container_mounts,
            report: Report::clone(&report),
            loops,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Lvm, &Exec) -> T + Send + 'static,
    ) -> T {
        let (runner, lvm) = (self.runner.clone(), self.lvm.clone());
        tokio::task::spawn_blocking(move || f(&lvm, &runner))
            .await
            .expect("LVM task panicked")
    }

    fn vgs_api(&self) -> Api<LVMVolumeGroup> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The LVMVolumeGroups this node serves: those that select it, and those that still hold its
    /// cleanup finalizer (being torn down, or no longer selecting it).
    fn mine<'a>(&self, vgs: &'a [LVMVolumeGroup], node: &Node) -> Vec<&'a LVMVolumeGroup> {
        vgs.iter()
            .filter(|vg| {
                vg.spec
                    .node_selector
                    .as_ref()
                    .is_none_or(|s| lvms_api::nodes::matches(s, node))
                    || vg
                        .finalizers()
                        .contains(&node_cleanup_finalizer(&self.node))
            })
            .collect()
    }

    /// Capacity annotations only, from the shared report: no LVM command while the report is
    /// valid (the LogicalVolume reconciler records its changes in it). Runs after each LV change,
    /// so the scheduler sees it at once without the cost of a pass (lsblk, a fresh report).
    pub async fn refresh_capacity(&self) -> Result<BTreeMap<String, ClassUsage>, Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .get(&self.node)
            .await
            .map_err(kube_err("reading this Node"))?;
        let vgs = Api::<LVMVolumeGroup>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await
            .map_err(kube_err("listing LVMVolumeGroups"))?
            .items;
        let report = self
            .reports
            .current()
            .await
            .map_err(|e| Error::Lvm(e.to_string()))?;
        let usage: BTreeMap<String, ClassUsage> = self
            .mine(&vgs, &node)
            .into_iter()
            .filter(|vg| vg.metadata.deletion_timestamp.is_none())
            .filter_map(|vg| {
                let name = vg.name_any();
                capacity::usage(&report, &name, &vg.spec).map(|u| (name, u))
            })
            .collect();
        self.publish_capacity(&nodes, &node, &usage).await?;
        Ok(usage)
    }

    /// A path a class lists now resolves to a device the last scan did not see (a disk plugged
    /// in): checked without a command, so a pass that does not scan still notices it.
    fn listed_path_appeared(&self, mine: &[&LVMVolumeGroup]) -> bool {
        let cached = self.devices.lock().unwrap();
        let Some(found) = cached.as_ref() else {
            return true;
        };
        let listed = mine
            .iter()
            .filter_map(|vg| vg.spec.device_selector.as_ref())
            .flat_map(|s| s.paths.iter().chain(s.optional_paths.iter()).flatten());
        unseen(&found.devices, listed, &resolve)
    }

    /// Why RAID volumes cannot be made here, checked (and dm-raid loaded) until it is found.
    async fn raid_unavailable(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        if self.raid_ok.load(Ordering::Relaxed) {
            return None;
        }
        let why = self
            .blocking(|_, runner| lvm::dm::raid_available(runner).err())
            .await;
        self.raid_ok.store(why.is_none(), Ordering::Relaxed);
        why
    }

    /// One pass with a disk scan. Every step is idempotent, so an interrupted pass is finished
    /// by the next.
    pub async fn pass(&self) -> Result<Outcome, Error> {
        self.pass_with(true).await
    }

    /// One pass; without `scan` the disks of the last scan stand (LVM is read anew, so RAID
    /// health and capacity are current).
    pub async fn pass_with(&self, scan: bool) -> Result<Outcome, Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .get(&self.node)
            .await
            .map_err(kube_err("reading this Node"))?;
        let vgs_api: Api<LVMVolumeGroup> = Api::namespaced(self.client.clone(), &self.namespace);
        let statuses_api: Api<LVMVolumeGroupNodeStatus> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let vgs = vgs_api
            .list(&ListParams::default())
            .await
            .map_err(kube_err("listing LVMVolumeGroups"))?
            .items;
        let mine = self.mine(&vgs, &node);
        let existing = statuses_api
            .get_opt(&self.node)
            .await
            .map_err(kube_err("reading this node's status"))?;
        let mut wiped: BTreeMap<String, BTreeSet<String>> = existing
            .as_ref()
            .and_then(|s| s.annotations().get(WIPED_ANNOTATION))
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();

        let scan = scan || self.listed_path_appeared(&mine);
        let mut snap = self.snapshot_with(scan).await?;
        let mut out = Outcome::default();
        let raid_unavailable = if mine
            .iter()
            .any(|vg| vg.spec.raid_config.is_some() && vg.metadata.deletion_timestamp.is_none())
        {
            self.raid_unavailable().await
        } else {
            None
        };
        let mut reported = Vec::new();
        let mut watched = Vec::new();
        // Raw-device classes first: the PVs they make in this pass must be known to the volume
        // groups after them.
        let (raw, vg_classes): (Vec<_>, Vec<_>) =
            mine.iter().partition(|vg| vg.spec.raw_devices.is_some());
        for vg in raw {
            let (status, counts) = self
                .raw_class(vg, &node, &mut snap, existing.as_ref(), &mut wiped)
                .await?;
            let sum = out.raw.get_or_insert_with(RawCounts::default);
            sum.available += counts.available;
            sum.errors += counts.errors;
            reported.extend(status);
        }
        // The disks of raw-device PVs are no volume group's: a class that names one by another
        // path must neither wipe it nor make it a physical volume.
        let raw_taken: BTreeSet<String> = self
            .node_pvs()
            .await?
            .iter()
            .filter_map(|p| p.spec.as_ref()?.local.as_ref())
            .filter_map(|l| resolve(&l.path))
            .collect();
        for vg in vg_classes {
            let name = vg.name_any();
            if vg.metadata.deletion_timestamp.is_some() {
                if let Some(status) = self.teardown(&vgs_api, vg, &snap.report).await? {
                    reported.push(status);
                }
                out.changed = true;
                snap = self.snapshot().await?;
                continue;
            }
            self.ensure_finalizer(&vgs_api, vg).await?;

            // Wipe only explicit paths, only when asked, only once per node and class.
            if vg
                .spec
                .device_selector
                .as_ref()
                .is_some_and(|s| s.force_wipe_devices_and_destroy_all_data == Some(true))
            {
                let targets = wipe_targets(vg, wiped.get(&name), |d| {
                    snap.report.pv(d).is_none_or(|pv| pv.vg_name != name) && !raw_taken.contains(d)
                });
                if !targets.is_empty() {
                    wiped
                        .entry(name.clone())
                        .or_default()
                        .extend(targets.iter().cloned());
                    self.status_annotation(
                        WIPED_ANNOTATION,
                        serde_json::to_string(&wiped).expect("serializes"),
                    )
                    .await?;
                    // The holders to remove first come from a scan made now, not a cached one.
                    let devices = self.snapshot().await?.devices;
                    self.blocking(move |_, runner| wipe(runner, &devices, &targets))
                        .await
                        .map_err(Error::Lvm)?;
                    snap = self.snapshot().await?;
                    out.changed = true;
                }
            }

            let vg_devices = without(&snap.devices, &raw_taken);
            let observed = Observed {
                devices: &vg_devices,
                report: &snap.report,
                loops: &snap.loops,
                resolve: &resolve,
                container_mounts: snap.container_mounts,
                raid_unavailable: raid_unavailable.as_deref(),
            };
            let p = plan::plan(&name, &vg.spec, &observed);
            let status = if p.steps.is_empty() {
                p.status
            } else {
                let steps = p.steps.clone();
                let vg_name = name.clone();
                let result = self
                    .blocking(move |lvm, _| plan::apply(lvm, &vg_name, &steps))
                    .await;
                snap = self.snapshot().await?;
                out.changed = true;
                match result {
                    Ok(()) => {
                        let vg_devices = without(&snap.devices, &raw_taken);
                        let observed = Observed {
                            devices: &vg_devices,
                            report: &snap.report,
                            loops: &snap.loops,
                            resolve: &resolve,
                            container_mounts: snap.container_mounts,
                            raid_unavailable: raid_unavailable.as_deref(),
                        };
                        plan::plan(&name, &vg.spec, &observed).status
                    }
                    Err(e) => VGStatus {
                        name: name.clone(),
                        status: VGStatusType::Failed,
                        reason: e,
                        ..p.status
                    },
                }
            };
            let mut status = status;
            if vg.spec.raid_config.is_some() && snap.report.vg(&name).is_none() {
                // A RAID VG this node reported is gone whole (every member lost): say so, and
                // keep the health gauge at Failed, rather than look like a class never built.
                let previous = existing
                    .as_ref()
                    .and_then(|e| e.spec.lvm_vg_status.iter().find(|s| s.name == name));
                crate::raid_health::vanished(&name, previous, &mut status);
            }
            if let Some(u) = capacity::usage(&snap.report, &name, &vg.spec) {
                out.usage.insert(name.clone(), u);
            }
            if let Some(tp) = &vg.spec.thin_pool_config
                && let Some(ae) = &tp.auto_extend
                && snap
                    .report
                    .lv(&name, &tp.name)
                    .is_some_and(|l| l.is_thin_pool())
            {
                use kube::Resource;
                watched.push(Watched {
                    vg: name.clone(),
                    pool: tp.name.clone(),
                    policy: ae.into(),
                    regarding: vg.object_ref(&()),
                });
            }
            // A pool that cannot grow any more is still Ready (it serves), with the reason.
            for w in self.pool_warnings(&name) {
                if !status.reason.is_empty() {
                    status.reason.push_str("; ");
                }
                status.reason.push_str(&w);
            }
            reported.push(status);
        }
        self.watch_pools(watched);
        reported.sort_by(|a, b| a.name.cmp(&b.name));
        // Degraded too: a replacement disk may be put in. Raw-device classes offer every disk
        // that appears.
        out.rescan = out.raw.is_some()
            || reported.iter().any(|s| {
                s.device_discovery_policy == Some(DeviceDiscoveryPolicyStatus::RuntimeDynamic)
                    || s.status != VGStatusType::Ready
            });
        self.publish_status(&statuses_api, existing.as_ref(), &reported)
            .await?;
        self.publish_capacity(&nodes, &node, &out.usage).await?;
        out.statuses = reported;
        Ok(out)
    }

    /// Whether `spec` is what this agent last published (its own write coming back by watch).
    pub fn is_own_status(&self, spec: &LVMVolumeGroupNodeStatusSpec) -> bool {
        self.published.lock().unwrap().as_ref() == Some(spec)
    }

    async fn ensure_finalizer(
        &self,
        api: &Api<LVMVolumeGroup>,
        vg: &LVMVolumeGroup,
    ) -> Result<(), Error> {
        let ours = node_cleanup_finalizer(&self.node);
        if vg.finalizers().contains(&ours) {
            return Ok(());
        }
        let mut f = vg.finalizers().to_vec();
        f.push(ours);
        set_finalizers(api, vg, &f, "adding this node's finalizer").await
    }

    /// Removes the thin pool, the VG and the PV labels, then this node's finalizer. Refuses while
    /// user volumes remain (their data would go with the VG). Returns the status to report.
    async fn teardown(
        &self,
        api: &Api<LVMVolumeGroup>,
        vg: &LVMVolumeGroup,
        report: &Report,
    ) -> Result<Option<VGStatus>, Error> {
        let ours = node_cleanup_finalizer(&self.node);
        if !vg.finalizers().contains(&ours) {
            return Ok(None);
        }
        let name = vg.name_any();
        let pool = vg.spec.thin_pool_config.as_ref().map(|t| t.name.clone());
        let remaining: Vec<String> = report
            .lvs_of(&name)
            .filter(|l| !l.is_internal() && Some(&l.name) != pool.as_ref())
            .map(|l| l.name.clone())
            .collect();
        if !remaining.is_empty() {
            let reason = format!(
                "volume group {name} still has logical volumes ({}); it is removed once they are deleted",
                remaining.join(", ")
            );
            return Ok(Some(VGStatus {
                name,
                status: VGStatusType::Failed,
                reason,
                ..Default::default()
            }));
        }
        let pvs: Vec<String> = report
            .pvs_of(&name)
            .map(|p| p.name.clone())
            .filter(|n| !n.starts_with('['))
            .collect();
        let exists = report.vg(&name).is_some();
        let vg_name = name.clone();
        let result = self
            .blocking(move |lvm, _| -> Result<(), lvm::Error> {
                let gone = |r: Result<(), lvm::Error>| match r {
                    Err(e) if e.is_not_found() => Ok(()),
                    other => other,
                };
                if exists {
                    if let Some(pool) = &pool {
                        gone(lvm.remove(&vg_name, pool))?;
                    }
                    gone(lvm.vgremove(&vg_name))?;
                }
                for pv in &pvs {
                    gone(lvm.pvremove(pv))?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            return Ok(Some(VGStatus {
                name,
                status: VGStatusType::Failed,
                reason: format!("removing the volume group: {e}"),
                ..Default::default()
            }));
        }
        self.release_finalizer(api, vg).await?;
        Ok(None)
    }

    /// Removes this node's finalizer from `vg`: the node has nothing of the class left.
    pub(super) async fn release_finalizer(
        &self,
        api: &Api<LVMVolumeGroup>,
        vg: &LVMVolumeGroup,
    ) -> Result<(), Error> {
        let ours = node_cleanup_finalizer(&self.node);
        let f: Vec<String> = vg
            .finalizers()
            .iter()
            .filter(|f| **f != ours)
            .cloned()
            .collect();
        set_finalizers(api, vg, &f, "releasing this node's finalizer").await
    }

    async fn create_status(
        &self,
        api: &Api<LVMVolumeGroupNodeStatus>,
        spec: LVMVolumeGroupNodeStatusSpec,
    ) -> Result<(), Error> {
        let mut s = LVMVolumeGroupNodeStatus::new(&self.node, spec);
        s.metadata.namespace = Some(self.namespace.clone());
        api.create(&PostParams::default(), &s)
            .await
            .map_err(kube_err("creating this node's status"))?;
        Ok(())
    }

    /// Writes one annotation of this node's status object, creating the object if need be.
    pub(crate) async fn status_annotation(&self, key: &str, value: String) -> Result<(), Error> {
        let api: Api<LVMVolumeGroupNodeStatus> =
            Api::namespaced(self.client.clone(), &self.namespace);
        if api
            .get_opt(&self.node)
            .await
            .map_err(kube_err("reading this node's status"))?
            .is_none()
        {
            self.create_status(&api, Default::default()).await?;
        }
        let patch = json!({"metadata": {"annotations": {key: value}}});
        api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(kube_err("recording on this node's status"))?;
        Ok(())
    }

    async fn publish_status(
        &self,
        api: &Api<LVMVolumeGroupNodeStatus>,
        existing: Option<&LVMVolumeGroupNodeStatus>,
        statuses: &[VGStatus],
    ) -> Result<(), Error> {
        let spec = LVMVolumeGroupNodeStatusSpec {
            lvm_vg_status: statuses.to_vec(),
        };
        let current = api
            .get_opt(&self.node)
            .await
            .map_err(kube_err("reading this node's status"))?
            .or_else(|| existing.cloned());
        *self.published.lock().unwrap() = Some(spec.clone());
        match current {
            Some(c) if c.spec == spec => Ok(()),
            Some(_) => {
                let patch = json!({"spec": {"nodeStatus": spec.lvm_vg_status}});
                api.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_err("updating this node's status"))?;
                Ok(())
            }
            None => self.create_status(api, spec).await,
        }
    }

    /// Sets `capacity.topolvm.io/<class>` for every class present and removes stale ones.
    async fn publish_capacity(
        &self,
        nodes: &Api<Node>,
        node: &Node,
        usage: &BTreeMap<String, ClassUsage>,
    ) -> Result<(), Error> {
        let mut patch = serde_json::Map::new();
        let current = node.annotations();
        for (class, u) in usage {
            let key = capacity_annotation(class);
            let value = u.available().to_string();
            if current.get(&key) != Some(&value) {
                patch.insert(key, json!(value));
            }
        }
        for key in current
            .keys()
            .filter(|k| k.starts_with(CAPACITY_ANNOTATION_PREFIX))
        {
            let class = &key[CAPACITY_ANNOTATION_PREFIX.len()..];
            if !usage.contains_key(class) {
                patch.insert(key.clone(), serde_json::Value::Null);
            }
        }
        if patch.is_empty() {
            return Ok(());
        }
        let body = json!({"metadata": {"annotations": patch}});
        nodes
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .map_err(kube_err("updating capacity annotations"))?;
        Ok(())
    }
}

/// The devices that `vg`'s explicit paths resolve to, but those already wiped for it and those
/// `keep` refuses: the targets of a forced wipe.
pub(crate) fn wipe_targets(
    vg: &LVMVolumeGroup,
    wiped: Option<&BTreeSet<String>>,
    keep: impl Fn(&str) -> bool,
) -> Vec<String> {
    vg.spec
        .device_selector
        .iter()
        .flat_map(|s| s.paths.iter().flatten())
        .filter_map(|p| resolve(p))
        .filter(|d| keep(d))
        .filter(|d| !wiped.is_some_and(|w| w.contains(d)))
        .collect()
}

/// `devices` but those in `taken` (the disks of raw-device PVs).
fn without(devices: &[BlockDevice], taken: &BTreeSet<String>) -> Vec<BlockDevice> {
    devices
        .iter()
        .filter(|d| !taken.contains(&d.name))
        .cloned()
        .collect()
}

/// Writes an object's finalizers, guarded by its resourceVersion so a concurrent change (another
/// node's finalizer) is never lost: 409, retried by the next pass.
pub(crate) async fn set_finalizers<K>(
    api: &Api<K>,
    obj: &K,
    finalizers: &[String],
    action: &str,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err(action))?;
    Ok(())
}

/// Removes every signature from `targets`, after removing the device-mapper devices stacked on
/// them (deepest first), so nothing holds the disk.
pub fn wipe(runner: &Exec, devices: &[BlockDevice], targets: &[String]) -> Result<(), String> {
    use lvm::Runner;
    for t in targets {
        if let Some(d) = devices.iter().flat_map(|d| d.walk()).find(|d| &d.name == t) {
            let mut holders: Vec<&BlockDevice> = d
                .walk()
                .into_iter()
                .skip(1)
                .filter(|c| c.kind != "part")
                .collect();
            holders.reverse();
            let mut seen = BTreeSet::new();
            for h in holders {
                if seen.insert(h.name.clone()) {
                    match runner.run(
                        "dmsetup",
                        &["remove".into(), "--retry".into(), h.name.clone()],
                    ) {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(format!("removing {} from {t}: {e}", h.name)),
                    }
                }
            }
        }
        runner
            .run("wipefs", &["--all".into(), "--force".into(), t.clone()])
            .map_err(|e| format!("wiping {t}: {e}"))?;
    }
    // lsblk reads signatures from the udev database: let udev see the wiped disks before the
    // next read, or they would still look like they carry a filesystem. (No udev: no wait.)
    let _ = runner.run("udevadm", &["settle".into(), "--timeout=30".into()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_disk_plugged_in_after_the_scan_is_noticed() {
        let scanned = [BlockDevice {
            name: "/dev/sdb".into(),
            children: vec![BlockDevice {
                name: "/dev/sdb1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let present = ["/dev/sdb", "/dev/sdb1", "/dev/sdc"];
        let resolve = |p: &str| {
            let p = p.replace("/dev/disk/by-id/x", "/dev/sdb");
            present.contains(&p.as_str()).then_some(p)
        };
        let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let seen = paths(&["/dev/disk/by-id/x", "/dev/sdb1", "/dev/nvme9n1"]);
        assert!(!unseen(&scanned, seen.iter(), &resolve), "known, or absent");
        let plugged = paths(&["/dev/sdb", "/dev/sdc"]);
        assert!(
            unseen(&scanned, plugged.iter(), &resolve),
            "sdc exists, the scan did not see it"
        );
    }
}
