//! The LVMCluster reconciler: apply what the builders want, remove what they no longer want,
//! report status, and tear down safely on deletion. Every step is idempotent, so a crash at any
//! point is repaired by the next pass.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use lvms_api::names::{
    CSI_DRIVER_NAME, LVMCLUSTER_FINALIZER, STORAGE_CLASS_PREFIX, VG_MANAGER_NAME,
};
use lvms_api::{
    LVMCluster, LVMClusterStatus, LVMStateType, LVMVolumeGroup, LVMVolumeGroupNodeStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use crate::applied::Applied;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::resources::{
    self, DEVICE_CLASS_LABEL, Desired, Discovery, OWNER_LABEL, owner_label_value, snapshot_class,
};
use crate::status::{self, Resources};

/// Field manager of every server-side apply.
pub const MANAGER: &str = "lvms-operator";

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// What was applied, to skip unchanged writes (crate::applied).
    pub applied: Applied,
    /// When the optional CRDs were last looked up, and (VolumeSnapshot, SCC) found.
    crds: std::sync::Mutex<Option<(Instant, (bool, bool))>>,
    /// The controller's LVMCluster cache (none in tests that call `reconcile` directly).
    pub clusters: Option<kube::runtime::reflector::Store<LVMCluster>>,
}

impl Context {
    pub fn new(client: Client, config: Config, recorder: Recorder, metrics: Arc<Metrics>) -> Self {
        Context {
            client,
            config,
            recorder,
            metrics,
            applied: Applied::default(),
            crds: Default::default(),
            clusters: None,
        }
    }

    /// Reads the LVMClusters from the controller's cache instead of listing them each pass.
    pub fn with_cluster_store(
        mut self,
        store: kube::runtime::reflector::Store<LVMCluster>,
    ) -> Self {
        self.clusters = Some(store);
        self
    }

    /// With `ttl` for skipped writes (zero: every pass writes everything, as tests that change
    /// objects behind the reconciler's back need).
    pub fn with_applied_ttl(mut self, ttl: Duration) -> Self {
        self.applied = Applied::with_ttl(ttl);
        self
    }
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

trait Context_<T> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context_<T> for std::result::Result<T, kube::Error> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            action: action(),
            source,
        })
    }
}

/// Entry point for the controller runtime.
pub async fn reconcile(cluster: Arc<LVMCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = if cluster.metadata.deletion_timestamp.is_some() {
        cleanup(&cluster, &ctx).await
    } else {
        apply_all(&cluster, &ctx).await
    };
    ctx.metrics.observe(
        "lvmcluster",
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

/// Backoff on failure: quick at first, never hammering the API server.
pub fn error_policy(cluster: Arc<LVMCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(lvmcluster = %cluster.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn apply_all(cluster: &LVMCluster, ctx: &Context) -> Result<Action> {
    let ns = &ctx.config.namespace;
    let clusters: Api<LVMCluster> = Api::namespaced(ctx.client.clone(), ns);

    // One LVMCluster per cluster: the one holding our finalizer, else the oldest, is served.
    // The controller's cache has them all, without a round trip; only a context without one
    // (a test, a benchmark) lists.
    let all: Vec<LVMCluster> = match &ctx.clusters {
        Some(store) => store.state().iter().map(|c| (**c).clone()).collect(),
        None => {
            clusters
                .list(&ListParams::default())
                .await
                .ctx(|| "listing LVMClusters".into())?
                .items
        }
    };
    if let Some(active) = active_cluster(&all)
        && active.uid() != cluster.uid()
    {
        let st = status::duplicate(cluster, &active.name_any(), &now());
        publish_status(&clusters, cluster, st).await?;
        event(
            ctx,
            cluster,
            EventType::Warning,
            "DuplicateLVMCluster",
            &format!(
                "only one LVMCluster is supported; {} is active",
                active.name_any()
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    // The object handed to us may be older than the one stored (a watch lagging behind our own
    // last write); a copy of an LVMCluster already gone is a pass with nothing to do.
    let Some(latest) = all.iter().find(|c| c.uid() == cluster.uid()) else {
        return Ok(Action::await_change());
    };

    // Reads that do not depend on one another, and the finalizer, in one round trip. The
    // finalizer must be on before anything cluster-scoped is created (nothing else would delete
    // a StorageClass or the CSIDriver), so the applies wait for it; the reads need not.
    let finalizer = async {
        if has_finalizer(latest) {
            return Ok(true);
        }
        add_finalizer(&clusters, latest).await
    };
    // What removed nodes held: their statuses go before the status below is read.
    let sweep = crate::node_loss::sweep(ctx, cluster).map(Ok);
    let vgs: Api<LVMVolumeGroup> = Api::namespaced(ctx.client.clone(), ns);
    let (finalized, node_loss, existing_vgs, discovered) = futures::future::try_join4(
        finalizer,
        sweep,
        owned_volume_groups(&vgs, cluster),
        discover(ctx, cluster),
    )
    .await?;
    if !finalized {
        // Deleted since it was listed: nothing to build.
        return Ok(Action::await_change());
    }

    // The status's reads run beside the applies: they do not depend on them.
    let resources = match refusal(cluster, &existing_vgs) {
        Some(why) => {
            event(ctx, cluster, EventType::Warning, "InvalidSpec", &why).await;
            Resources::Incomplete(why)
        }
        None => {
            let (discovery, existing_scs) = discovered;
            let desired = resources::desired(cluster, &ctx.config, &discovery);
            let (synced, observed) = futures::future::join(
                sync(ctx, cluster, &desired, &existing_vgs, &existing_scs),
                read_observed(ctx),
            )
            .await;
            match synced {
                Ok(()) => {
                    let st = aggregate(cluster, observed?, &Resources::Synced);
                    return finish(ctx, cluster, &clusters, st, true, node_loss).await;
                }
                Err(e) => {
                    event(
                        ctx,
                        cluster,
                        EventType::Warning,
                        "ResourcesSyncIncomplete",
                        &e.to_string(),
                    )
                    .await;
                    let st = aggregate(cluster, observed?, &Resources::Incomplete(e.to_string()));
                    publish_status(&clusters, cluster, st).await?;
                    return Err(e);
                }
            }
        }
    };
    let st = aggregate(cluster, read_observed(ctx).await?, &resources);
    finish(ctx, cluster, &clusters, st, false, node_loss).await
}

/// Adds our finalizer to `cached`, guarded by its resourceVersion so another finalizer added
/// meanwhile is never dropped. A cache that lags behind answers 409: then once more from a fresh
/// read. Whether the LVMCluster still exists.
async fn add_finalizer(clusters: &Api<LVMCluster>, cached: &LVMCluster) -> Result<bool> {
    let with_ours = |c: &LVMCluster| {
        let mut finalizers = c.finalizers().to_vec();
        finalizers.push(LVMCLUSTER_FINALIZER.into());
        finalizers
    };
    match set_finalizers(clusters, cached, &with_ours(cached), "adding the finalizer").await {
        Err(Error::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 409 => {}
        other => return other,
    }
    let Some(latest) = clusters
        .get_opt(&cached.name_any())
        .await
        .ctx(|| "reading the LVMCluster".into())?
    else {
        return Ok(false);
    };
    if has_finalizer(&latest) {
        return Ok(true);
    }
    set_finalizers(
        clusters,
        &latest,
        &with_ours(&latest),
        "adding the finalizer",
    )
    .await
}

/// The end of a pass that applied (or refused) the spec: an Event when the state turns bad,
/// the status, and when to look again.
async fn finish(
    ctx: &Context,
    cluster: &LVMCluster,
    clusters: &Api<LVMCluster>,
    st: LVMClusterStatus,
    synced: bool,
    node_loss: Option<Duration>,
) -> Result<Action> {
    let ready = st.ready;
    // A volume group failing on a node needs the user (a disk to free, a path to fix): say so
    // once, when the state turns Failed or Degraded, not on every pass.
    let was = cluster.status.as_ref().and_then(|s| s.state);
    if synced
        && st.state != was
        && matches!(
            st.state,
            Some(LVMStateType::Failed | LVMStateType::Degraded)
        )
    {
        let message = st
            .conditions
            .iter()
            .find(|c| c.type_ == status::VOLUME_GROUPS_READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        event(
            ctx,
            cluster,
            EventType::Warning,
            "VolumeGroupsNotReady",
            &message,
        )
        .await;
    }
    publish_status(clusters, cluster, st).await?;
    // Node reports trigger a reconcile through the watch; the timer only catches node changes
    // (and a node-loss cleanup under way).
    let after = Duration::from_secs(if ready { 300 } else { 30 });
    Ok(Action::requeue(node_loss.map_or(after, |n| n.min(after))))
}

/// The LVMCluster this operator serves among `all`.
pub fn active_cluster(all: &[LVMCluster]) -> Option<&LVMCluster> {
    let live = || {
        all.iter().filter(|c| {
            c.metadata.deletion_timestamp.is_none()
                || c.finalizers().iter().any(|f| f == LVMCLUSTER_FINALIZER)
        })
    };
    live()
        .find(|c| c.finalizers().iter().any(|f| f == LVMCLUSTER_FINALIZER))
        .or_else(|| {
            live().min_by(|a, b| {
                (
                    a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    a.name_any(),
                )
                    .cmp(&(
                        b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                        b.name_any(),
                    ))
            })
        })
}

/// Why the spec cannot be acted on, if it cannot: what the schema could not check, and removals
/// of the default or last class (refused here too, in case the CRD in the cluster is older).
pub fn refusal(cluster: &LVMCluster, existing: &[LVMVolumeGroup]) -> Option<String> {
    let errors = lvms_api::validate::validate_spec(&cluster.spec);
    if let Some(e) = errors.first() {
        return Some(e.to_string());
    }
    let classes = &cluster.spec.storage.device_classes;
    if classes.is_empty() {
        return Some("spec.storage.deviceClasses: the last device class cannot be removed".into());
    }
    for vg in existing {
        let name = vg.name_any();
        if vg.spec.default && !classes.iter().any(|c| c.name == name) {
            return Some(format!(
                "spec.storage.deviceClasses: device class {name} is the default and cannot be removed"
            ));
        }
    }
    None
}

async fn owned_volume_groups(
    api: &Api<LVMVolumeGroup>,
    cluster: &LVMCluster,
) -> Result<Vec<LVMVolumeGroup>> {
    let list = api
        .list(&ListParams::default())
        .await
        .ctx(|| "listing LVMVolumeGroups".into())?;
    let uid = cluster.uid();
    Ok(list
        .items
        .into_iter()
        .filter(|vg| {
            vg.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect())
}

/// How long the presence of the optional CRDs (VolumeSnapshot, SCC) is trusted: they are
/// installed once in a cluster's life, so looking them up on every pass costs two round trips for
/// nothing; a VolumeSnapshot API installed after the operator is noticed within this time.
const CRD_TTL: Duration = Duration::from_secs(300);

/// What the builders need to know of the cluster, and every StorageClass (the pass removes those
/// of dropped classes from the same list).
async fn discover(ctx: &Context, cluster: &LVMCluster) -> Result<(Discovery, Vec<StorageClass>)> {
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let cached = *ctx.crds.lock().unwrap_or_else(|e| e.into_inner());
    let lookup = async {
        if let Some((at, found)) = cached
            && at.elapsed() < CRD_TTL
        {
            return Ok(found);
        }
        let (snapshot, scc) = futures::future::join(
            crds.get_opt(snapshot_class::CRD_NAME),
            crds.get_opt(resources::scc::CRD_NAME),
        )
        .await;
        let found = (
            snapshot
                .ctx(|| "looking up the VolumeSnapshot CRDs".into())?
                .is_some(),
            scc.ctx(|| "looking up the SecurityContextConstraints CRD".into())?
                .is_some(),
        );
        *ctx.crds.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), found));
        Ok(found)
    };
    let scs: Api<StorageClass> = Api::all(ctx.client.clone());
    let list = async {
        scs.list(&ListParams::default())
            .await
            .ctx(|| "listing StorageClasses".into())
    };
    let ((snapshot_crds, security_context_constraints), scs) =
        futures::future::try_join(lookup, list).await?;
    let ours = owner_label_value(cluster);
    let foreign_default_storage_class = scs.items.iter().any(|sc| {
        let default = sc
            .annotations()
            .get(resources::storage_class::DEFAULT_CLASS_ANNOTATION)
            .is_some_and(|v| v == "true");
        default && sc.labels().get(OWNER_LABEL) != Some(&ours)
    });
    Ok((
        Discovery {
            snapshot_crds,
            foreign_default_storage_class,
            security_context_constraints,
        },
        scs.items,
    ))
}

/// Server-side applies `obj` unless [`Applied`] says the same content is already there.
async fn apply<K>(ctx: &Context, api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let key = crate::applied::key_of(obj);
    let digest = crate::applied::digest(obj);
    if ctx.applied.unchanged(&key, digest) {
        return Ok(());
    }
    let name = obj.meta().name.clone().unwrap_or_default();
    let stored = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .ctx(|| format!("applying {} {name}", K::kind(&())))?;
    ctx.applied
        .record(key, digest, stored.meta().resource_version.clone());
    Ok(())
}

/// [`apply`] for a kind the operator has no Rust type for (SecurityContextConstraints,
/// VolumeSnapshotClass).
async fn apply_dynamic(
    ctx: &Context,
    api: &Api<DynamicObject>,
    kind: &str,
    name: &str,
    obj: &serde_json::Value,
) -> Result<()> {
    let key = (kind.to_string(), None, name.to_string());
    let digest = crate::applied::digest(obj);
    if ctx.applied.unchanged(&key, digest) {
        return Ok(());
    }
    let stored = api
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .ctx(|| format!("applying {kind} {name}"))?;
    ctx.applied
        .record(key, digest, stored.metadata.resource_version.clone());
    Ok(())
}

type Step<'a> = futures::future::BoxFuture<'a, Result<()>>;

/// One [`apply`] step per object of `objs`, for a wave.
fn applies<'a, K>(
    ctx: &'a Context,
    api: &'a Api<K>,
    objs: &'a [K],
) -> impl Iterator<Item = Step<'a>>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + Send + Sync,
{
    objs.iter().map(move |x| apply(ctx, api, x).boxed())
}

/// Runs `steps` concurrently; the first error, after all have finished (none is cut off half-way,
/// so the next pass starts from a known state).
async fn all(steps: Vec<Step<'_>>) -> Result<()> {
    futures::future::join_all(steps)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(|_| ())
}

/// Applies every desired object and removes those of device classes no longer in the spec.
///
/// Independent objects are applied concurrently, in three waves, because order matters only
/// here: a binding after the role it grants (the API server checks that the operator holds
/// every permission a binding grants, by reading the role); the workloads after their service
/// accounts and bindings (a pod whose account cannot yet read what it needs crash-loops), after
/// the NetworkPolicies (their pods start isolated) and after the SCC (pods are admitted, or
/// refused, when they are created).
async fn sync(
    ctx: &Context,
    cluster: &LVMCluster,
    desired: &Desired,
    existing_vgs: &[LVMVolumeGroup],
    existing_scs: &[StorageClass],
) -> Result<()> {
    let c = &ctx.client;
    let ns = &ctx.config.namespace;
    let r = &desired.rbac;
    let sas = Api::<ServiceAccount>::namespaced(c.clone(), ns);
    let cluster_roles = Api::<ClusterRole>::all(c.clone());
    let cluster_bindings = Api::<ClusterRoleBinding>::all(c.clone());
    let roles = Api::<Role>::namespaced(c.clone(), ns);
    let bindings = Api::<RoleBinding>::namespaced(c.clone(), ns);
    let drivers = Api::<CSIDriver>::all(c.clone());
    let vgs: Api<LVMVolumeGroup> = Api::namespaced(c.clone(), ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(c.clone(), ns);
    let scc_api = Api::<DynamicObject>::all_with(c.clone(), &resources::scc::api_resource());
    let scs: Api<StorageClass> = Api::all(c.clone());
    let vsc_api: Api<DynamicObject> = Api::all_with(c.clone(), &snapshot_class::api_resource());
    let daemon_sets = Api::<DaemonSet>::namespaced(c.clone(), ns);
    let deployments = Api::<Deployment>::namespaced(c.clone(), ns);

    let vscs: Vec<(String, serde_json::Value)> = desired
        .snapshot_classes
        .iter()
        .map(|x| (x.metadata.name.clone().unwrap_or_default(), x.to_json()))
        .collect();
    let mut first: Vec<Step> = Vec::new();
    first.extend(applies(ctx, &sas, &r.service_accounts));
    first.extend(applies(ctx, &cluster_roles, &r.cluster_roles));
    first.extend(applies(ctx, &roles, &r.roles));
    first.push(apply(ctx, &drivers, &desired.csi_driver).boxed());
    first.extend(applies(ctx, &vgs, &desired.volume_groups));
    first.extend(applies(ctx, &policies, &desired.network_policies));
    if let Some(scc) = &desired.scc {
        first.push(
            apply_dynamic(
                ctx,
                &scc_api,
                "SecurityContextConstraints",
                resources::scc::NAME,
                scc,
            )
            .boxed(),
        );
    }
    first.extend(applies(ctx, &scs, &desired.storage_classes));
    first.extend(
        vscs.iter().map(|(name, obj)| {
            apply_dynamic(ctx, &vsc_api, "VolumeSnapshotClass", name, obj).boxed()
        }),
    );
    // Disjoint from what the wave applies: only classes no longer in the spec.
    first.push(remove_dropped(ctx, cluster, desired, existing_vgs, existing_scs).boxed());
    all(first).await?;

    let mut second: Vec<Step> = Vec::new();
    second.extend(applies(ctx, &cluster_bindings, &r.cluster_role_bindings));
    second.extend(applies(ctx, &bindings, &r.role_bindings));
    all(second).await?;

    all(vec![
        apply(ctx, &daemon_sets, &desired.vg_manager).boxed(),
        apply(ctx, &deployments, &desired.csi_controller).boxed(),
    ])
    .await?;

    Ok(())
}

/// Removed device classes: their volume group (vg-manager tears it down on each node), their
/// StorageClass and VolumeSnapshotClass. `existing_scs` is the pass's list of every
/// StorageClass (discovery read it).
async fn remove_dropped(
    ctx: &Context,
    cluster: &LVMCluster,
    desired: &Desired,
    existing_vgs: &[LVMVolumeGroup],
    existing_scs: &[StorageClass],
) -> Result<()> {
    let c = &ctx.client;
    let vgs: Api<LVMVolumeGroup> = Api::namespaced(c.clone(), &ctx.config.namespace);
    let scs: Api<StorageClass> = Api::all(c.clone());
    let vsc_api: Api<DynamicObject> = Api::all_with(c.clone(), &snapshot_class::api_resource());
    let wanted: BTreeSet<String> = cluster
        .spec
        .storage
        .device_classes
        .iter()
        .map(|d| d.name.clone())
        .collect();
    for vg in existing_vgs
        .iter()
        .filter(|vg| !wanted.contains(&vg.name_any()))
    {
        info!(device_class = %vg.name_any(), "device class removed from the spec: deleting its LVMVolumeGroup");
        delete(&vgs, &vg.name_any()).await?;
    }
    let ours = owner_label_value(cluster);
    for sc in existing_scs {
        let labels = sc.labels();
        if labels.get(OWNER_LABEL) == Some(&ours)
            && labels
                .get(DEVICE_CLASS_LABEL)
                .is_some_and(|d| !wanted.contains(d))
        {
            delete(&scs, &sc.name_any()).await?;
            ctx.applied.forget(&crate::applied::key_of(sc));
        }
    }
    // Without the snapshot API the list fails with 404 and there is nothing to remove.
    let keep: BTreeSet<_> = desired
        .snapshot_classes
        .iter()
        .filter_map(|v| v.metadata.name.clone())
        .collect();
    let selector = ListParams::default().labels(&format!("{OWNER_LABEL}={ours}"));
    if let Ok(list) = vsc_api.list(&selector).await {
        for v in list
            .items
            .into_iter()
            .filter(|v| !keep.contains(&v.name_any()))
        {
            delete(&vsc_api, &v.name_any()).await?;
            ctx.applied
                .forget(&("VolumeSnapshotClass".into(), None, v.name_any()));
        }
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).ctx(|| format!("deleting {name}")),
    }
}

/// The Nodes and the node reports the status is computed from, read concurrently.
async fn read_observed(ctx: &Context) -> Result<(Vec<Node>, Vec<LVMVolumeGroupNodeStatus>)> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let reports: Api<LVMVolumeGroupNodeStatus> =
        Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let (nodes, reports) = futures::future::try_join(
        async {
            nodes
                .list(&ListParams::default())
                .await
                .ctx(|| "listing Nodes".into())
        },
        async {
            reports
                .list(&ListParams::default())
                .await
                .ctx(|| "listing LVMVolumeGroupNodeStatuses".into())
        },
    )
    .await?;
    Ok((nodes.items, reports.items))
}

fn aggregate(
    cluster: &LVMCluster,
    (nodes, reports): (Vec<Node>, Vec<LVMVolumeGroupNodeStatus>),
    resources: &Resources,
) -> LVMClusterStatus {
    status::aggregate(cluster, &nodes, &reports, resources, &now())
}

/// Writes the status only when it changed: an unchanged write would wake every watcher.
async fn publish_status(
    api: &Api<LVMCluster>,
    cluster: &LVMCluster,
    st: LVMClusterStatus,
) -> Result<()> {
    if cluster.status.as_ref() == Some(&st) {
        return Ok(());
    }
    let patch = json!({"status": st});
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .ctx(|| "updating the LVMCluster status".into())?;
    Ok(())
}

async fn event(ctx: &Context, cluster: &LVMCluster, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &cluster.object_ref(&())).await {
        warn!(%e, reason, "could not publish an event");
    }
}

/// Deletion: wait for PVCs to go, then for every node to remove its volume groups, then remove
/// everything else and release the LVMCluster.
async fn cleanup(cluster: &LVMCluster, ctx: &Context) -> Result<Action> {
    // What this pass deletes must be applied again if the LVMCluster comes back.
    ctx.applied.clear();
    if !has_finalizer(cluster) {
        return Ok(Action::await_change());
    }
    let c = &ctx.client;
    let ns = &ctx.config.namespace;
    let clusters: Api<LVMCluster> = Api::namespaced(c.clone(), ns);
    // Our copy comes from the controller's cache, which still holds the LVMCluster after the
    // pass that released it: deleting the DaemonSet and Deployment we own triggers another
    // pass before the watch reports the LVMCluster gone. Tear down only for the object the API
    // server holds (gone, or a new one of the same name, means done), and write the finalizer
    // list at its resourceVersion.
    let Some(cluster) = clusters
        .get_opt(&cluster.name_any())
        .await
        .ctx(|| "reading the LVMCluster".into())?
        .filter(|latest| latest.uid() == cluster.uid() && has_finalizer(latest))
    else {
        return Ok(Action::await_change());
    };
    let cluster = &cluster;
    // A removed node never releases its finalizers, and with the opt-in its claims go here, so
    // neither blocks the deletion below. (Every wait below requeues within 30 s.)
    crate::node_loss::sweep(ctx, cluster).await;

    let classes: BTreeSet<String> = cluster
        .spec
        .storage
        .device_classes
        .iter()
        .map(|d| d.storage_class_name())
        .collect();
    let pvcs: Api<PersistentVolumeClaim> = Api::all(c.clone());
    let blocking = blocking_pvcs(
        &pvcs
            .list(&ListParams::default())
            .await
            .ctx(|| "listing PVCs".into())?
            .items,
        &classes,
    );
    if !blocking.is_empty() {
        let why = format!(
            "deletion is blocked by {} PVC(s) using lvms StorageClasses: {}",
            blocking.len(),
            blocking
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        event(ctx, cluster, EventType::Warning, "DeletionBlocked", &why).await;
        let st = status_with_message(cluster, &why);
        publish_status(&clusters, cluster, st).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }

    let vgs: Api<LVMVolumeGroup> = Api::namespaced(c.clone(), ns);
    let remaining = owned_volume_groups(&vgs, cluster).await?;
    if !remaining.is_empty() {
        for vg in remaining
            .iter()
            .filter(|v| v.metadata.deletion_timestamp.is_none())
        {
            delete(&vgs, &vg.name_any()).await?;
        }
        let waiting: Vec<String> = remaining
            .iter()
            .map(|v| format!("{} ({})", v.name_any(), v.finalizers().join(", ")))
            .collect();
        let why = format!(
            "waiting for vg-manager to remove the volume groups: {}",
            waiting.join("; ")
        );
        publish_status(&clusters, cluster, status_with_message(cluster, &why)).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }

    // The volume groups are gone: the agents and everything else can go.
    delete(
        &Api::<DaemonSet>::namespaced(c.clone(), ns),
        VG_MANAGER_NAME,
    )
    .await?;
    delete(
        &Api::<Deployment>::namespaced(c.clone(), ns),
        resources::csi_controller::NAME,
    )
    .await?;
    delete(&Api::<CSIDriver>::all(c.clone()), CSI_DRIVER_NAME).await?;
    let policies: Api<NetworkPolicy> = Api::namespaced(c.clone(), ns);
    for x in resources::network_policy::network_policies(cluster, &ctx.config) {
        delete(&policies, &x.name_any()).await?;
    }
    // Off OpenShift the whole resource is unknown: 404, like an SCC already gone.
    delete(
        &Api::<DynamicObject>::all_with(c.clone(), &resources::scc::api_resource()),
        resources::scc::NAME,
    )
    .await?;
    let selector =
        ListParams::default().labels(&format!("{OWNER_LABEL}={}", owner_label_value(cluster)));
    let scs: Api<StorageClass> = Api::all(c.clone());
    for sc in scs
        .list(&selector)
        .await
        .ctx(|| "listing StorageClasses".into())?
        .items
    {
        delete(&scs, &sc.name_any()).await?;
    }
    let vsc_api: Api<DynamicObject> = Api::all_with(c.clone(), &snapshot_class::api_resource());
    if let Ok(list) = vsc_api.list(&selector).await {
        for v in list.items {
            delete(&vsc_api, &v.name_any()).await?;
        }
    }
    let rbac = resources::rbac::rbac(cluster, &ctx.config);
    for x in &rbac.cluster_role_bindings {
        delete(&Api::<ClusterRoleBinding>::all(c.clone()), &x.name_any()).await?;
    }
    for x in &rbac.cluster_roles {
        delete(&Api::<ClusterRole>::all(c.clone()), &x.name_any()).await?;
    }
    for x in &rbac.role_bindings {
        delete(
            &Api::<RoleBinding>::namespaced(c.clone(), ns),
            &x.name_any(),
        )
        .await?;
    }
    for x in &rbac.roles {
        delete(&Api::<Role>::namespaced(c.clone(), ns), &x.name_any()).await?;
    }
    for x in &rbac.service_accounts {
        delete(
            &Api::<ServiceAccount>::namespaced(c.clone(), ns),
            &x.name_any(),
        )
        .await?;
    }

    let finalizers: Vec<String> = cluster
        .finalizers()
        .iter()
        .filter(|f| *f != LVMCLUSTER_FINALIZER)
        .cloned()
        .collect();
    // Gone already (deleted since we read it) is released all the same.
    set_finalizers(&clusters, cluster, &finalizers, "removing the finalizer").await?;
    info!(lvmcluster = %cluster.name_any(), "all managed objects removed; finalizer released");
    Ok(Action::await_change())
}

fn has_finalizer(cluster: &LVMCluster) -> bool {
    cluster
        .finalizers()
        .iter()
        .any(|f| f == LVMCLUSTER_FINALIZER)
}

/// Writes the finalizer list, guarded by resourceVersion so a concurrent writer's finalizer is
/// never dropped (the API server answers 409 and the next pass retries). Returns whether the
/// object still exists: one that is gone (404) needs no finalizers, which is no error to retry.
async fn set_finalizers(
    api: &Api<LVMCluster>,
    cluster: &LVMCluster,
    finalizers: &[String],
    action: &str,
) -> Result<bool> {
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": cluster.resource_version()}});
    match api
        .patch(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e).ctx(|| action.into()),
    }
}

/// `namespace/name` of the PVCs that use one of `storage_classes`.
pub fn blocking_pvcs(
    pvcs: &[PersistentVolumeClaim],
    storage_classes: &BTreeSet<String>,
) -> Vec<String> {
    pvcs.iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_ref())
                .is_some_and(|sc| {
                    sc.starts_with(STORAGE_CLASS_PREFIX) && storage_classes.contains(sc)
                })
        })
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect()
}

/// The current status with the ResourcesAvailable condition replaced by a deletion message.
fn status_with_message(cluster: &LVMCluster, why: &str) -> LVMClusterStatus {
    let mut st = cluster.status.clone().unwrap_or_default();
    st.conditions
        .retain(|c| c.type_ != status::RESOURCES_AVAILABLE);
    st.conditions.insert(
        0,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: status::RESOURCES_AVAILABLE.into(),
            status: "False".into(),
            reason: "ReconciliationInProgress".into(),
            message: why.into(),
            last_transition_time: now(),
            observed_generation: cluster.metadata.generation,
        },
    );
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;
    use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;

    fn vg(name: &str, default: bool) -> LVMVolumeGroup {
        let mut v = LVMVolumeGroup::new(
            name,
            lvms_api::LVMVolumeGroupSpec {
                default,
                ..Default::default()
            },
        );
        v.metadata.namespace = Some("openshift-storage".into());
        v
    }

    #[test]
    fn removing_the_default_class_is_refused() {
        let mut c = cluster();
        c.spec.storage.device_classes.remove(0);
        let why = refusal(&c, &[vg("fast", true), vg("bulk", false)]).unwrap();
        assert!(why.contains("fast is the default"), "{why}");
        let c = cluster();
        assert_eq!(
            refusal(&c, &[vg("fast", true), vg("bulk", false), vg("old", false)]),
            None,
            "a non-default class may go"
        );
    }

    #[test]
    fn removing_the_last_class_is_refused() {
        let mut c = cluster();
        c.spec.storage.device_classes.clear();
        assert!(refusal(&c, &[]).unwrap().contains("last device class"));
    }

    #[test]
    fn overlapping_paths_are_refused_with_the_field() {
        let mut c = cluster();
        c.spec.storage.device_classes[1]
            .device_selector
            .as_mut()
            .unwrap()
            .optional_paths = Some(vec!["/dev/nvme1n1".into()]);
        let why = refusal(&c, &[]).unwrap();
        assert!(
            why.starts_with("spec.storage.deviceClasses[1].deviceSelector.optionalPaths[0]"),
            "{why}"
        );
    }

    #[test]
    fn only_pvcs_of_our_classes_block() {
        let pvc = |ns: &str, name: &str, sc: Option<&str>| {
            let mut p = PersistentVolumeClaim::default();
            p.metadata.name = Some(name.into());
            p.metadata.namespace = Some(ns.into());
            p.spec = Some(PersistentVolumeClaimSpec {
                storage_class_name: sc.map(Into::into),
                ..Default::default()
            });
            p
        };
        let classes: BTreeSet<String> = ["lvms-fast".to_string(), "lvms-bulk".to_string()].into();
        let pvcs = [
            pvc("a", "db", Some("lvms-fast")),
            pvc("b", "x", Some("gp2")),
            pvc("c", "y", None),
            pvc("d", "z", Some("lvms-other")),
        ];
        assert_eq!(blocking_pvcs(&pvcs, &classes), ["a/db"]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_finalizers_of_a_cluster_that_is_gone_need_no_writing() {
        let api = api_double::ApiDouble::new();
        let clusters: Api<LVMCluster> = Api::namespaced(api.client(), "openshift-storage");
        let gone = cluster();
        let written = set_finalizers(&clusters, &gone, &[], "removing the finalizer")
            .await
            .expect("a 404 is no error");
        assert!(!written);
    }

    #[test]
    fn the_finalizer_holder_stays_active_over_an_older_cluster() {
        let ts = |s| Some(Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap()));
        let mut old = cluster();
        old.metadata.name = Some("old".into());
        old.metadata.uid = Some("u-old".into());
        old.metadata.creation_timestamp = ts(100);
        let mut new = cluster();
        new.metadata.name = Some("new".into());
        new.metadata.uid = Some("u-new".into());
        new.metadata.creation_timestamp = ts(200);
        assert_eq!(
            active_cluster(&[new.clone(), old.clone()])
                .unwrap()
                .name_any(),
            "old"
        );
        new.metadata.finalizers = Some(vec![LVMCLUSTER_FINALIZER.into()]);
        assert_eq!(active_cluster(&[new, old]).unwrap().name_any(), "new");
    }
}
