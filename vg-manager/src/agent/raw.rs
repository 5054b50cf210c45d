//! The agent's pass over one raw-device class: offer blank disks as PersistentVolumes, clean and
//! delete released ones, and tear the class down when its LVMVolumeGroup goes. The decisions are
//! [`crate::raw_devices::plan`]'s; this file only carries them out, each step idempotent, so an
//! interrupted pass is finished by the next (a released PV is cleaned again, a PV that exists is
//! not created twice, a disk formatted before a crash is offered without formatting again).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use lvms_api::raw::{CLASS_LABEL, CLEANUP_FINALIZER, NODE_LABEL, node_label_value};
use lvms_api::{LVMVolumeGroup, LVMVolumeGroupNodeStatus, VGStatus, VGStatusType};
use serde_json::json;
use tracing::{info, warn};

use super::{Agent, Error, Snapshot, kube_err, node_cleanup_finalizer, resolve, set_finalizers};
use crate::raw_devices::{self, CLEANUP_FAILED_ANNOTATION, Inputs, PvView};

/// Annotation on this node's LVMVolumeGroupNodeStatus: per class, the stable paths of disks this
/// node formatted for a PV it has not created yet. Written before mkfs, cleared once the PV
/// exists: a crash in between leaves a disk that the next pass knows to be ours and blank of data.
pub const FORMATTED_ANNOTATION: &str = "lvm.topolvm.io/raw-formatted-devices";

/// What a raw class's pass found, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCounts {
    /// PVs offered and not claimed.
    pub available: u64,
    /// Disks this node could not offer or clean (a failed cleanup, mkfs or create).
    pub errors: u64,
}

type Pending = BTreeMap<String, BTreeSet<String>>;

impl Agent {
    fn pvs_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    /// Every raw-device PV of this node, all classes.
    pub(super) async fn node_pvs(&self) -> Result<Vec<PersistentVolume>, Error> {
        let selector = format!("{NODE_LABEL}={}", node_label_value(&self.node));
        Ok(self
            .pvs_api()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_err("listing this node's raw-device PersistentVolumes"))?
            .items)
    }

    async fn class_pvs(&self, class: &str) -> Result<Vec<PersistentVolume>, Error> {
        Ok(self
            .node_pvs()
            .await?
            .into_iter()
            .filter(|p| p.labels().get(CLASS_LABEL).is_some_and(|c| c == class))
            .collect())
    }

    async fn pv_event(&self, pv: &PersistentVolume, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Cleanup".into(),
            secondary: None,
        };
        // The PV's own reference (uid included): `kubectl describe pv` finds events by it.
        if let Err(e) = self.recorder.publish(&ev, &pv.object_ref(&())).await {
            warn!(%e, reason, "could not publish an event");
        }
    }

    /// Cleans the disks of released (or deleted, unclaimed) PVs, then lets each PV go: the
    /// finalizer released, the PV deleted. Returns how many failed and whether a disk was
    /// touched.
    async fn clean_released(
        &self,
        vg: &LVMVolumeGroup,
        cleanups: Vec<raw_devices::Cleanup>,
        node_uid: &str,
    ) -> Result<(u64, bool), Error> {
        let how = vg
            .spec
            .raw_devices
            .as_ref()
            .map(|r| r.cleanup)
            .unwrap_or_default();
        let (mut failed, mut touched) = (0, false);
        for c in cleanups {
            // Read again just before: a PV re-bound (its claimRef cleared by an admin) or
            // replaced since the list is not ours to clean any more.
            let Some(pv) = self
                .pvs_api()
                .get_opt(&c.pv)
                .await
                .map_err(kube_err("reading a PV before its cleanup"))?
            else {
                continue;
            };
            let view = self.view(&pv, node_uid);
            if view.uid != c.uid || !view.wants_cleanup() {
                continue;
            }
            let job = c.clone();
            let result = self
                .blocking(move |_, runner| raw_devices::clean(runner, &job, how))
                .await;
            touched = true;
            match result {
                Ok(done) => {
                    info!(pv = %c.pv, %done, "released disk cleaned");
                    self.pv_event(
                        &pv,
                        EventType::Normal,
                        "Cleaned",
                        &format!("{done}; the PV is deleted and the disk offered again blank"),
                    )
                    .await;
                    self.let_go(&pv).await?;
                }
                Err(why) => {
                    failed += 1;
                    warn!(pv = %c.pv, %why, "cleanup failed; the PV stays");
                    self.pv_event(&pv, EventType::Warning, "CleanupFailed", &why)
                        .await;
                    let patch =
                        json!({"metadata": {"annotations": {CLEANUP_FAILED_ANNOTATION: why}}});
                    self.pvs_api()
                        .patch(&c.pv, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(kube_err("recording a failed cleanup on its PV"))?;
                }
            }
        }
        Ok((failed, touched))
    }

    /// A cleaned PV goes: the cleanup finalizer released (at the version read), then the PV
    /// deleted (this uid only). A crash in between leaves a Released PV, cleaned again next.
    async fn let_go(&self, pv: &PersistentVolume) -> Result<(), Error> {
        let name = pv.name_any();
        if pv.finalizers().iter().any(|f| f == CLEANUP_FINALIZER) {
            let rest: Vec<String> = pv
                .finalizers()
                .iter()
                .filter(|f| *f != CLEANUP_FINALIZER)
                .cloned()
                .collect();
            match set_finalizers(&self.pvs_api(), pv, &rest, "releasing a cleaned PV").await {
                Err(Error::Kube(_, kube::Error::Api(s))) if s.code == 404 => return Ok(()),
                other => other?,
            }
        }
        self.delete_pv(&name, pv.uid()).await
    }

    async fn delete_pv(&self, name: &str, uid: Option<String>) -> Result<(), Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pvs_api().delete(name, &params).await {
            Ok(_) => Ok(()),
            // Gone, or replaced by a PV of another uid: nothing of ours to delete.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::Kube(format!("deleting PV {name}"), e)),
        }
    }

    /// One raw-device class on this node. `None` once a deleted class is gone from the node.
    pub(super) async fn raw_class(
        &self,
        vg: &LVMVolumeGroup,
        node: &Node,
        snap: &mut Snapshot,
        existing: Option<&LVMVolumeGroupNodeStatus>,
        wiped: &mut BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(Option<VGStatus>, RawCounts), Error> {
        let class = vg.name_any();
        let Some(uid) = node.uid() else {
            return Err(Error::Lvm(
                "this Node has no uid: its PersistentVolumes cannot be owned by it".into(),
            ));
        };
        if vg.metadata.deletion_timestamp.is_some() {
            return self.raw_teardown(vg, snap, &uid).await;
        }
        self.ensure_finalizer(&self.vgs_api(), vg).await?;
        let mut pending: Pending = existing
            .and_then(|s| s.annotations().get(FORMATTED_ANNOTATION))
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let mut counts = RawCounts::default();
        let mut all = self.node_pvs().await?;

        // Forced wipe of explicit paths, once per node, never of a disk that has a PV (of any
        // class): its data belongs to a tenant. Refused while a PV's disk cannot be resolved: it
        // might be one of the targets under another name.
        let force_wipe = vg
            .spec
            .device_selector
            .as_ref()
            .is_some_and(|s| s.force_wipe_devices_and_destroy_all_data == Some(true));
        if force_wipe {
            let paths: Vec<String> = all.iter().map(|p| self.view(p, &uid).path).collect();
            let taken: BTreeSet<String> = paths.iter().filter_map(|p| resolve(p)).collect();
            let targets = super::wipe_targets(vg, wiped.get(&class), |d| !taken.contains(d));
            if !targets.is_empty() && taken.len() == paths.len() {
                wiped
                    .entry(class.clone())
                    .or_default()
                    .extend(targets.iter().cloned());
                self.status_annotation(
                    super::WIPED_ANNOTATION,
                    serde_json::to_string(&wiped).expect("serializes"),
                )
                .await?;
                let devices = self.snapshot().await?.devices;
                self.blocking(move |_, runner| super::wipe(runner, &devices, &targets))
                    .await
                    .map_err(Error::Lvm)?;
                *snap = self.snapshot().await?;
            }
        }

        // Twice at most: a cleaned disk is offered again in the same pass.
        let mut plan = self.raw_plan(vg, &class, snap, &all, &pending, &uid);
        if !plan.clean.is_empty() {
            // Act on a fresh view of the disks (mount points, holders), not a cached one.
            *snap = self.snapshot().await?;
            let fresh = self.raw_plan(vg, &class, snap, &all, &pending, &uid);
            let (failed, touched) = self.clean_released(vg, fresh.clean, &uid).await?;
            counts.errors += failed;
            if touched {
                *snap = self.snapshot().await?;
                all = self.node_pvs().await?;
                plan = self.raw_plan(vg, &class, snap, &all, &pending, &uid);
                plan.clean.clear();
            }
        }

        let mut status = plan.status;
        let formatted = plan.create.iter().any(|n| n.format);
        for new in plan.create {
            let fstype = vg.spec.fstype.unwrap_or_default().as_str();
            if new.format {
                // Recorded first: if this node dies during mkfs, the disk is known to be ours.
                pending
                    .entry(class.clone())
                    .or_default()
                    .insert(new.stable_path.clone());
                self.record_pending(&pending).await?;
                let dev = new.device.clone();
                if let Err(why) = self
                    .blocking(move |_, runner| raw_devices::format(runner, &dev, fstype))
                    .await
                {
                    // Not formatted (not blank after all, or mkfs failed): the record must not
                    // make the next pass take what is on the disk for ours.
                    forget(&mut pending, &class, &new.stable_path);
                    self.record_pending(&pending).await?;
                    counts.errors += 1;
                    warn!(device = %new.device, %why, "not offered");
                    status.devices.retain(|d| d != &new.device);
                    status.excluded.push(lvms_api::ExcludedDevice {
                        name: new.device.clone(),
                        reasons: vec![why],
                    });
                    continue;
                }
            }
            let pv = raw_devices::persistent_volume(node, &class, &vg.spec, &new);
            match self.pvs_api().create(&PostParams::default(), &pv).await {
                Ok(_) => info!(pv = %new.name, device = %new.device, "disk offered"),
                // Created by an interrupted pass, or still terminating: the next pass sees it.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    counts.errors += 1;
                    warn!(pv = %new.name, %e, "creating the PersistentVolume");
                    continue;
                }
            }
            counts.available += 1;
            if forget(&mut pending, &class, &new.stable_path) {
                self.record_pending(&pending).await?;
            }
        }
        if formatted {
            *snap = self.snapshot().await?;
        }
        counts.available += all
            .iter()
            .filter(|p| p.labels().get(CLASS_LABEL).is_some_and(|c| *c == class))
            .map(|p| self.view(p, &uid))
            // Unclaimed and not released: Available, or about to be (a PV the PV controller has
            // not got to yet has no phase).
            .filter(|v| {
                !v.deleting && !v.claimed && !matches!(v.phase.as_str(), "Released" | "Failed")
            })
            .count() as u64;
        if counts.errors > 0 && status.status == VGStatusType::Ready {
            status.status = VGStatusType::Degraded;
            status.reason = format!(
                "{} disk(s) could not be offered or cleaned (see the PersistentVolumes' events and excluded)",
                counts.errors
            );
        }
        status.excluded.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((Some(status), counts))
    }

    async fn record_pending(&self, pending: &Pending) -> Result<(), Error> {
        self.status_annotation(
            FORMATTED_ANNOTATION,
            serde_json::to_string(pending).expect("serializes"),
        )
        .await
    }

    /// `pv` as the plan sees it; `node_uid` is this Node's, which the PVs it made are owned by.
    fn view(&self, pv: &PersistentVolume, node_uid: &str) -> PvView {
        PvView::of(pv, &self.node, node_uid)
    }

    /// The plan of `class`, from all of this node's PVs (the other classes' disks are taken).
    fn raw_plan(
        &self,
        vg: &LVMVolumeGroup,
        class: &str,
        snap: &Snapshot,
        all: &[PersistentVolume],
        pending: &Pending,
        node_uid: &str,
    ) -> raw_devices::RawPlan {
        let (mine, others): (Vec<&PersistentVolume>, Vec<&PersistentVolume>) = all
            .iter()
            .partition(|p| p.labels().get(CLASS_LABEL).is_some_and(|c| c == class));
        let views: Vec<PvView> = mine.iter().map(|p| self.view(p, node_uid)).collect();
        let others: BTreeMap<String, String> = others
            .iter()
            .filter_map(|p| {
                let v = self.view(p, node_uid);
                let owner = p.labels().get(CLASS_LABEL).cloned().unwrap_or_default();
                Some((
                    resolve(&v.path)?,
                    format!("PersistentVolume {} of raw-device class {owner}", v.name),
                ))
            })
            .collect();
        let stable = raw_devices::stable_paths();
        let none = BTreeSet::new();
        raw_devices::plan(&Inputs {
            node: &self.node,
            class,
            spec: &vg.spec,
            devices: &snap.devices,
            stable: &stable,
            pvs: &views,
            others: &others,
            pending: pending.get(class).unwrap_or(&none),
            resolve: &resolve,
            loops: &snap.loops,
            container_mounts: snap.container_mounts,
        })
    }

    /// The class is being deleted: unclaimed PVs go (and are cleaned first, behind their
    /// finalizer), released ones are cleaned; a claimed one keeps the class (and this node's
    /// finalizer) until its claim is deleted.
    async fn raw_teardown(
        &self,
        vg: &LVMVolumeGroup,
        snap: &mut Snapshot,
        uid: &str,
    ) -> Result<(Option<VGStatus>, RawCounts), Error> {
        let ours = node_cleanup_finalizer(&self.node);
        if !vg.finalizers().contains(&ours) {
            return Ok((None, RawCounts::default()));
        }
        let class = vg.name_any();
        let all = self.node_pvs().await?;
        let plan = self.raw_plan(vg, &class, snap, &all, &Pending::new(), uid);
        let (failed, _) = self.clean_released(vg, plan.clean, uid).await?;
        let mut claimed = Vec::new();
        let mut remaining = 0;
        for pv in self.class_pvs(&class).await? {
            let view = self.view(&pv, uid);
            remaining += 1;
            if !view.claimed && !view.deleting {
                self.delete_pv(&view.name, Some(view.uid.clone())).await?;
            } else if view.claimed && view.phase != "Released" {
                claimed.push(view.name);
            }
        }
        if remaining > 0 || failed > 0 {
            let reason = if !claimed.is_empty() {
                format!(
                    "PersistentVolumes still claimed ({}); the class is removed once their claims are deleted",
                    claimed.join(", ")
                )
            } else if failed > 0 {
                "a released disk could not be cleaned (see the PersistentVolume's events); the class is removed once it is".to_string()
            } else {
                format!("{remaining} PersistentVolume(s) being cleaned and deleted")
            };
            return Ok((
                Some(VGStatus {
                    name: class,
                    status: VGStatusType::Failed,
                    reason,
                    ..Default::default()
                }),
                RawCounts {
                    available: 0,
                    errors: failed,
                },
            ));
        }
        self.release_finalizer(&self.vgs_api(), vg).await?;
        Ok((None, RawCounts::default()))
    }
}

/// Drops `path` from the class's record; whether it was there.
fn forget(pending: &mut Pending, class: &str, path: &str) -> bool {
    let had = pending.get_mut(class).is_some_and(|s| s.remove(path));
    pending.retain(|_, s| !s.is_empty());
    had
}
