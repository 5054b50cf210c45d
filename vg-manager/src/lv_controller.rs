//! The node's LogicalVolume controller (kube-runtime, controller-rs style): every LogicalVolume
//! of this node is reconciled when it changes ([`crate::logical_volume::reconcile`]), and the
//! agent's capacity refresh is woken after each LVM change so the Node's capacity annotation,
//! which the scheduler's CSIStorageCapacity is built from, follows within a second instead of a
//! resync period.
//!
//! After each agent pass it checks the health of this node's volumes ([`check_health`]) and
//! records it in their status, where the CSI controller reads it for the health monitor.
//!
//! It also collects garbage: an LV carrying our owner tag whose LogicalVolume is gone (a crash
//! between steps, or a finalizer removed by hand) is reported, and removed once it has stayed
//! orphaned for a grace period (the watch cache may lag a freshly created object).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use lvm::{Mode, Report};
use lvms_api::{LogicalVolume, VolumeHealth};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::logical_volume::{self, Action, OWNER_TAG_PREFIX};
use crate::reports::Reports;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("logical volume {0}: {1}")]
    Reconcile(String, String),
}

pub struct Context {
    pub client: Client,
    pub reports: Arc<Reports>,
    pub node: String,
    pub namespace: String,
    /// Wakes the agent's capacity refresh (annotation, metrics) after an LVM change.
    pub changed: Arc<Notify>,
}

/// How long a volume that converged waits before it is checked again (an LV removed behind
/// our back is then reported on its LogicalVolume).
const RECHECK: Duration = Duration::from_secs(600);

async fn reconcile(lv: Arc<LogicalVolume>, ctx: Arc<Context>) -> Result<controller::Action, Error> {
    let action =
        logical_volume::reconcile(&ctx.client, &ctx.reports, &ctx.node, &ctx.namespace, &lv)
            .await
            .map_err(|e| Error::Reconcile(lv.name_any(), e))?;
    Ok(match action {
        Action::None => controller::Action::await_change(),
        Action::Report { .. } => controller::Action::requeue(RECHECK),
        // The volume group may not be ready yet, or space may be freed: try again.
        Action::Fail { .. } => controller::Action::requeue(Duration::from_secs(30)),
        Action::Create { .. }
        | Action::Snapshot { .. }
        | Action::Extend { .. }
        | Action::Remove { .. } => {
            info!(logicalvolume = %lv.name_any(), ?action, "logical volume changed");
            ctx.changed.notify_one();
            controller::Action::requeue(RECHECK)
        }
    })
}

fn error_policy(lv: Arc<LogicalVolume>, err: &Error, _: Arc<Context>) -> controller::Action {
    warn!(logicalvolume = %lv.name_any(), error = %err, "reconcile failed; retrying");
    controller::Action::requeue(Duration::from_secs(5))
}

/// Starts the controller; returns its cache of LogicalVolumes (for garbage collection).
pub fn start(ctx: Context) -> Store<LogicalVolume> {
    // Every node watches every LogicalVolume and skips other nodes' (TopoLVM does the same):
    // a field selector on spec.nodeName would need selectableFields in the CRD.
    let api: Api<LogicalVolume> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let store = controller.store();
    tokio::spawn(
        controller
            .run(reconcile, error_policy, Arc::new(ctx))
            .for_each(|_| async {}),
    );
    store
}

/// An LV of ours (by tag) in `report` that no LogicalVolume in `objects` accounts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub vg: String,
    pub lv: String,
    /// The LogicalVolume the tag names.
    pub owner: String,
}

/// Our LVs without their LogicalVolume. An LV is named after its object's UID, so an object
/// re-created under the same name does not adopt the old LV.
pub fn orphans(report: &Report, objects: &[Arc<LogicalVolume>]) -> Vec<Orphan> {
    let uids: std::collections::BTreeSet<String> = objects.iter().filter_map(|o| o.uid()).collect();
    report
        .lvs
        .iter()
        // Sub-volumes carry no tags, but say so: only a user volume can be an orphan.
        .filter(|l| !l.is_internal())
        .filter_map(|l| {
            let owner = l
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(OWNER_TAG_PREFIX))?;
            (!uids.contains(&l.name)).then(|| Orphan {
                vg: l.vg_name.clone(),
                lv: l.name.clone(),
                owner: owner.to_string(),
            })
        })
        .collect()
}

/// Remembers when each orphan was first seen; returns those orphaned for at least `grace`.
#[derive(Default)]
pub struct Garbage {
    first_seen: BTreeMap<(String, String), Instant>,
}

impl Garbage {
    pub fn due(&mut self, found: Vec<Orphan>, now: Instant, grace: Duration) -> Vec<Orphan> {
        let keys: std::collections::BTreeSet<_> =
            found.iter().map(|o| (o.vg.clone(), o.lv.clone())).collect();
        self.first_seen.retain(|k, _| keys.contains(k));
        found
            .into_iter()
            .filter(|o| {
                let seen = *self
                    .first_seen
                    .entry((o.vg.clone(), o.lv.clone()))
                    .or_insert(now);
                now.duration_since(seen) >= grace
            })
            .collect()
    }
}

/// One garbage round: finds orphans in the current report (only once the cache of objects has
/// synced, or every LV would look orphaned), warns about new ones and removes those past grace.
pub async fn collect(
    reports: &Reports,
    store: &Store<LogicalVolume>,
    garbage: &mut Garbage,
    grace: Duration,
) -> Result<Vec<Orphan>, String> {
    if store.wait_until_ready().now_or_never().is_none() {
        return Ok(vec![]);
    }
    let report = reports.current().await.map_err(|e| e.to_string())?;
    let found = orphans(&report, &store.state());
    for o in &found {
        warn!(vg = %o.vg, lv = %o.lv, logicalvolume = %o.owner, ?grace,
            "logical volume has no LogicalVolume; it is removed when the grace period ends");
    }
    let due = garbage.due(found, Instant::now(), grace);
    let mut removed = Vec::new();
    for o in due {
        let _changes = reports.changes().await;
        // Re-check under the lock on a fresh report: it may have been adopted meanwhile.
        let report = reports.fresh().await.map_err(|e| e.to_string())?;
        if !orphans(&report, &store.state()).contains(&o) {
            continue;
        }
        let (lvm, vg, lv) = (reports.lvm().clone(), o.vg.clone(), o.lv.clone());
        let result = tokio::task::spawn_blocking(move || lvm.remove(&vg, &lv))
            .await
            .map_err(|e| e.to_string())?;
        reports.invalidate().await;
        match result {
            Ok(()) => {
                warn!(vg = %o.vg, lv = %o.lv, logicalvolume = %o.owner, "removed orphaned logical volume");
                removed.push(o);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(format!("removing orphan {}/{}: {e}", o.vg, o.lv)),
        }
    }
    Ok(removed)
}

/// The merge patch that makes `status.health` say `h`. An empty message is written as null:
/// a merge patch keeps what it does not name, and a volume healthy again must not keep the
/// old fault's words (nor be rewritten on every pass for the difference).
pub fn health_patch(h: &VolumeHealth) -> serde_json::Value {
    let message = if h.message.is_empty() {
        serde_json::Value::Null
    } else {
        h.message.clone().into()
    };
    serde_json::json!({"status": {"health": {"abnormal": h.abnormal, "message": message}}})
}

/// The major:minor of a device node as this process sees it (the agent's /dev is the host's).
fn devno(path: &str) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    m.file_type()
        .is_block_device()
        .then(|| (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())))
}

/// One health round, after an agent pass (whose report is fresh): each made volume of this node
/// is checked ([`logical_volume::health`]) against the report and the mount table of `mode`'s
/// namespace (where kubelet's mounts are), and `status.health` is written where it changed, so
/// an idle node writes nothing. Returns how many objects it wrote; a write that fails is
/// logged and retried by the next round.
pub async fn check_health(
    client: &Client,
    reports: &Reports,
    store: &Store<LogicalVolume>,
    node: &str,
    mode: Mode,
) -> Result<usize, String> {
    // Before the cache has synced, the volumes are not known yet.
    if store.wait_until_ready().now_or_never().is_none() {
        return Ok(0);
    }
    let report = reports.current().await.map_err(|e| e.to_string())?;
    let mounts = match tokio::task::spawn_blocking(move || lvm::mount::read(mode)).await {
        Ok(Ok(m)) => m,
        // Still worth checking the LVs and pools; the read-only check waits for the next round.
        Ok(Err(e)) => {
            warn!(error = %e, "reading the mount table for the volume health check");
            vec![]
        }
        Err(e) => return Err(format!("reading the mount table: {e}")),
    };
    let api: Api<LogicalVolume> = Api::all(client.clone());
    let sys = std::path::Path::new("/sys");
    let mut written = 0;
    for obj in store.state() {
        let Some(health) = logical_volume::health(&obj, node, &report, &mounts, sys, &devno) else {
            continue;
        };
        let before = obj.status.as_ref().and_then(|s| s.health.as_ref());
        if before == Some(&health) {
            continue;
        }
        let name = obj.name_any();
        if health.abnormal {
            warn!(logicalvolume = %name, problem = %health.message, "volume abnormal");
        } else if before.is_some_and(|b| b.abnormal) {
            info!(logicalvolume = %name, "volume healthy again");
        }
        let patch = health_patch(&health);
        // One object that cannot be written (deleted meanwhile) must not hide the others'
        // health: the next round tries it again.
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => written += 1,
            Err(e) => warn!(logicalvolume = %name, error = %e, "writing the volume's health"),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvm::report::LogicalVolume as Lv;
    use lvms_api::LogicalVolumeSpec;

    fn obj(name: &str, uid: &str) -> Arc<LogicalVolume> {
        let mut o = LogicalVolume::new(name, LogicalVolumeSpec::default());
        o.metadata.uid = Some(uid.into());
        Arc::new(o)
    }

    fn lv(name: &str, tags: &[&str]) -> Lv {
        Lv {
            name: name.into(),
            vg_name: "vg1".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_volume_keeps_no_old_message() {
        assert_eq!(
            health_patch(&VolumeHealth {
                abnormal: true,
                message: "thin pool vg1/pool is out of data space".into()
            }),
            serde_json::json!({"status": {"health": {"abnormal": true, "message": "thin pool vg1/pool is out of data space"}}})
        );
        assert_eq!(
            health_patch(&VolumeHealth::default()),
            serde_json::json!({"status": {"health": {"abnormal": false, "message": null}}})
        );
    }

    #[test]
    fn orphans_are_tagged_lvs_without_their_object() {
        let report = Report {
            lvs: vec![
                lv("uid-1", &["lvms.topolvm.io/logicalvolume=pvc-1"]),
                lv("uid-old", &["lvms.topolvm.io/logicalvolume=pvc-2"]),
                lv("foreign", &["other"]),
                lv("pool", &[]),
            ],
            ..Default::default()
        };
        let found = orphans(&report, &[obj("pvc-1", "uid-1"), obj("pvc-2", "uid-new")]);
        assert_eq!(
            found,
            [Orphan {
                vg: "vg1".into(),
                lv: "uid-old".into(),
                owner: "pvc-2".into()
            }],
            "a re-created object does not adopt the old LV; untagged LVs are never ours"
        );
    }

    #[test]
    fn removed_only_after_the_grace_period() {
        let o = Orphan {
            vg: "vg1".into(),
            lv: "x".into(),
            owner: "pvc".into(),
        };
        let mut g = Garbage::default();
        let t0 = Instant::now();
        let grace = Duration::from_secs(300);
        assert!(g.due(vec![o.clone()], t0, grace).is_empty());
        assert!(
            g.due(vec![o.clone()], t0 + Duration::from_secs(299), grace)
                .is_empty()
        );
        assert_eq!(
            g.due(vec![o.clone()], t0 + grace, grace),
            std::slice::from_ref(&o)
        );
        // Adopted (gone from the list) then orphaned again: the clock starts over.
        assert!(g.due(vec![], t0 + grace, grace).is_empty());
        assert!(
            g.due(vec![o], t0 + grace + Duration::from_secs(1), grace)
                .is_empty()
        );
    }
}
