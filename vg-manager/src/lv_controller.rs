//! The node's LogicalVolume controller (kube-runtime, controller-rs style): every LogicalVolume
//! of this node is reconciled when it changes ([`crate::logical_volume::reconcile`]), and the
//! agent's capacity refresh is woken after each LVM change so the Node's capacity annotation,
//! which the scheduler's CSIStorageCapacity is built from, follows within a second instead of a
//! resync period.
//!
//! It also collects garbage: an LV carrying our owner tag whose LogicalVolume is gone (a crash
//! between steps, or a finalizer removed by hand) is reported, and removed once it has stayed
//! orphaned for a grace period (the watch cache may lag a freshly created object).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use lvm::Report;
use lvms_api::LogicalVolume;
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
