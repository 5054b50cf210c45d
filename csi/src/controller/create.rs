//! CreateVolume and CreateSnapshot: find the object a repeat made or plan and create one, check
//! it answers the request, then wait for the node.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use lvms_api::names::LOGICAL_VOLUME_FINALIZER;
use lvms_api::{LogicalVolume, LogicalVolumeSpec};
use tokio::time::Instant;
use tonic::{Code, Status};
use tracing::{info, warn};

use super::claim::{claim_context, claim_key};
use super::decide::{self, Reuse, Wanted};
use super::layout::{self, Claim};
use super::store::Waited;
use super::{ControllerService, bytes_i64, class_parameter, node_topology};
use crate::fs_options;
use crate::pb::volume_content_source::Type as Source;
use crate::pb::{self, CapacityRange, VolumeContentSource};
use crate::volume::{self, Usage};

/// How long a failed volume's clean-up may hold up the error: the node is normally quick to
/// release it, and a retry that finds it still deleting gets Aborted and tries again.
const CLEANUP_WAIT: Duration = Duration::from_secs(5);

impl ControllerService {
    /// Waits for the node to make `lv` at `size` bytes. A node failure to make it removes the
    /// object, so a retry starts afresh (and may pick another node), and returns the node's code.
    /// A volume the node had made is never removed here: the failure is about a later change
    /// (growth), and the volume may hold data.
    async fn settle(
        &self,
        lv: &LogicalVolume,
        size: u64,
        deadline: Instant,
    ) -> Result<LogicalVolume, Status> {
        match self.store.wait(lv, size, deadline).await? {
            Waited::Ready(lv) => Ok(*lv),
            Waited::Failed { status, made: true } => Err(status),
            Waited::Failed {
                status,
                made: false,
            } => {
                warn!(lv = %lv.name_any(), node = %lv.spec.node_name, code = ?status.code(), message = status.message(), "the node failed the volume; removing it");
                let cleanup = deadline.min(Instant::now() + CLEANUP_WAIT);
                if let Err(e) = self.store.delete(lv, cleanup).await {
                    warn!(lv = %lv.name_any(), "removing the failed volume: {}", e.message());
                }
                Err(status)
            }
        }
    }

    /// Creates `new` unless an object of its name exists; either way returns the object now
    /// under that name, which the caller checks against the request.
    async fn create_or_get(&self, new: LogicalVolume) -> Result<LogicalVolume, Status> {
        let name = new.name_any();
        if let Some(created) = self.store.create(&new).await? {
            info!(lv = %name, volume = %new.spec.name, node = %new.spec.node_name, class = %new.spec.device_class, size = %new.spec.size.0, source = %new.spec.source, "created LogicalVolume");
            return Ok(created);
        }
        self.store.get(&name).await?.ok_or_else(|| {
            Status::aborted(format!(
                "LogicalVolume {name} was created and deleted by another call meanwhile; retry"
            ))
        })
    }

    /// The LogicalVolume a CreateVolume asks for, when none exists yet: placement from the
    /// source for a snapshot restore or clone, else from node capacity as the layout counts it
    /// (a mirror takes twice its size). `pvc` is the claim, when the provisioner named one.
    async fn plan_volume(
        &self,
        req: &pb::CreateVolumeRequest,
        usage: &Usage,
        named_class: Option<&str>,
        source: Option<(&str, &str)>,
        requisite: &[String],
        pvc: Option<&PersistentVolumeClaim>,
    ) -> Result<LogicalVolume, Status> {
        let name = decide::object_name(&req.name);
        let range = req.capacity_range.as_ref();
        let no_annotations = Default::default();
        let claim = pvc.map(|p| Claim {
            namespace: p.metadata.namespace.as_deref().unwrap_or_default(),
            name: p.metadata.name.as_deref().unwrap_or_default(),
            annotations: p.metadata.annotations.as_ref().unwrap_or(&no_annotations),
        });
        let asked = layout::requested(&req.parameters, claim)?;
        if let Some((field, id)) = source {
            let src = self
                .store
                .find(id)
                .await?
                .ok_or_else(|| Status::not_found(format!("{field}: volume {id} not found")))?;
            let vg = self.store.class(&src.spec.device_class).await?;
            if let Some(vg) = &vg {
                layout::for_class(asked.as_ref(), vg)?;
            }
            let p = decide::place_from_source(&src, vg.as_ref(), named_class, requisite, field)?;
            let size = decide::size_from_source(range, usage, p.source_size)?;
            return Ok(new_lv(&name, &req.name, p.node, p.class, size, id, "rw"));
        }
        let class = self.store.resolve_class(named_class).await?;
        let chosen = layout::for_class(asked.as_ref(), &class)?;
        let class = class.name_any();
        let mut size = volume::size_for(range, usage)?;
        if crate::encryption::requested(&req.parameters, "parameters")? {
            size = volume::encrypted_size(size, range, usage)?;
        }
        let free = layout::usable(&self.store.capacities(&class).await?, chosen.as_ref());
        let shown = match &chosen {
            Some(l) => format!("{class} (as a {} volume)", l.layout_type.as_str()),
            None => class.clone(),
        };
        let node =
            decide::choose_node(req.accessibility_requirements.as_ref(), &free, size, &shown)?;
        let mut lv = new_lv(&name, &req.name, node, class, size, "", "");
        lv.spec.layout = chosen;
        Ok(lv)
    }

    /// The claim of a request, if the provisioner named one and it still exists.
    async fn claim_of(
        &self,
        req: &pb::CreateVolumeRequest,
    ) -> Result<Option<PersistentVolumeClaim>, Status> {
        match claim_key(&req.parameters) {
            Some((ns, name)) => self.store.claim(ns, name).await,
            None => Ok(None),
        }
    }

    /// CreateVolume. A refusal of the volume's options (InvalidArgument: its layout, mkfs or
    /// mount options, here or on the node) is also recorded as an Event on the claim.
    pub(super) async fn provision(
        &self,
        req: pb::CreateVolumeRequest,
        deadline: Instant,
    ) -> Result<pb::Volume, Status> {
        let mut pvc = None;
        let result = self.provision_for(&req, deadline, &mut pvc).await;
        if let Err(status) = &result
            && status.code() == Code::InvalidArgument
        {
            let pvc = match pvc {
                Some(p) => p,
                None => self.claim_of(&req).await.ok().flatten(),
            };
            if let Some(p) = pvc {
                self.store.warn_claim(&p, status.message()).await;
            }
        }
        result
    }

    /// CreateVolume's work; `pvc` receives the claim once it has been read.
    async fn provision_for(
        &self,
        req: &pb::CreateVolumeRequest,
        deadline: Instant,
        pvc: &mut Option<Option<PersistentVolumeClaim>>,
    ) -> Result<pb::Volume, Status> {
        if req.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let usage = volume::check_all(&req.volume_capabilities, "volume_capabilities")?;
        // From the request alone, so a repeat gets the same context.
        let mut volume_context =
            fs_options::volume_context(&req.parameters, &req.volume_capabilities, &usage)?;
        volume_context.extend(claim_context(&req.parameters));
        volume_context.extend(crate::encryption::volume_context(&req.parameters)?);
        // The node writes them into the pod's cgroup at publish (crate::io_limits).
        volume_context.extend(
            crate::io_limits::IoLimits::from_map(&req.parameters, "parameters")?.volume_context(),
        );
        let (required, limit) = range_bytes(req.capacity_range.as_ref())?;
        let named_class = class_parameter(&req.parameters);
        let source = content_source(req.volume_content_source.as_ref())?;
        let requisite = req
            .accessibility_requirements
            .as_ref()
            .map(|r| decide::nodes_of(&r.requisite))
            .unwrap_or_default();
        // A repeat finds its object first: its answer must not depend on today's free space,
        // nor on annotations changed since (the layout is the object's, as it was made).
        let lv = match self.store.get(&decide::object_name(&req.name)).await? {
            Some(existing) => existing,
            None => {
                let claim = self.claim_of(req).await?;
                let claim = pvc.insert(claim).as_ref();
                let new = self
                    .plan_volume(req, &usage, named_class, source, &requisite, claim)
                    .await?;
                self.create_or_get(new).await?
            }
        };
        let wanted = Wanted {
            name: &req.name,
            class: named_class,
            source: source.map_or("", |(_, id)| id),
            required,
            limit,
            requisite: &requisite,
        };
        check_reuse(&lv, &wanted)?;
        let ready = self.settle(&lv, decide::spec_size(&lv), deadline).await?;
        Ok(pb::Volume {
            capacity_bytes: bytes_i64(decide::current_size(&ready).unwrap_or(0)),
            volume_id: decide::volume_id(&ready),
            volume_context,
            content_source: req.volume_content_source.clone(),
            accessible_topology: vec![node_topology(&ready.spec.node_name)],
        })
    }

    pub(super) async fn snapshot(
        &self,
        req: pb::CreateSnapshotRequest,
        deadline: Instant,
    ) -> Result<pb::Snapshot, Status> {
        let source = req.source_volume_id.as_str();
        if source.is_empty() {
            return Err(Status::invalid_argument("source_volume_id is required"));
        }
        if req.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let name = decide::object_name(&req.name);
        let lv = match self.store.get(&name).await? {
            Some(existing) => existing,
            None => {
                let src = self.store.find(source).await?.ok_or_else(|| {
                    Status::not_found(format!("source_volume_id: volume {source} not found"))
                })?;
                let vg = self.store.class(&src.spec.device_class).await?;
                let p =
                    decide::place_from_source(&src, vg.as_ref(), None, &[], "source_volume_id")?;
                let new = new_lv(
                    &name,
                    &req.name,
                    p.node,
                    p.class,
                    p.source_size,
                    source,
                    "ro",
                );
                self.create_or_get(new).await?
            }
        };
        check_reuse(
            &lv,
            &Wanted {
                name: &req.name,
                source,
                ..Default::default()
            },
        )?;
        let ready = self.settle(&lv, decide::spec_size(&lv), deadline).await?;
        let created = ready
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| pb::Timestamp {
                seconds: t.0.as_second(),
                nanos: t.0.subsec_nanosecond(),
            });
        Ok(pb::Snapshot {
            size_bytes: bytes_i64(decide::current_size(&ready).unwrap_or(0)),
            snapshot_id: decide::volume_id(&ready),
            source_volume_id: source.to_string(),
            creation_time: created,
            ready_to_use: true,
            group_snapshot_id: String::new(),
        })
    }
}

/// A new LogicalVolume, created with the node's finalizer already in place: between our create
/// and the node's first look, a delete would otherwise remove the object while the node is
/// making the LV, leaving an LV nobody owns.
fn new_lv(
    object_name: &str,
    volume_name: &str,
    node: String,
    class: String,
    size: u64,
    source: &str,
    access_type: &str,
) -> LogicalVolume {
    let mut lv = LogicalVolume::new(
        object_name,
        LogicalVolumeSpec {
            name: volume_name.to_string(),
            node_name: node,
            size: Quantity(size.to_string()),
            device_class: class,
            lvcreate_option_class: String::new(),
            source: source.to_string(),
            access_type: access_type.to_string(),
            layout: None,
        },
    );
    lv.metadata.finalizers = Some(vec![LOGICAL_VOLUME_FINALIZER.to_string()]);
    lv
}

fn check_reuse(lv: &LogicalVolume, wanted: &Wanted) -> Result<(), Status> {
    match decide::reuse(lv, wanted) {
        Reuse::Yes => Ok(()),
        Reuse::Deleting => Err(Status::aborted(format!(
            "LogicalVolume {} of {:?} is being deleted; retry once it is gone",
            lv.name_any(),
            wanted.name
        ))),
        Reuse::Conflict(why) => Err(Status::already_exists(why)),
    }
}

/// The source a CreateVolume names: (request field, volume ID).
fn content_source(s: Option<&VolumeContentSource>) -> Result<Option<(&str, &str)>, Status> {
    let (field, id) = match s.and_then(|s| s.r#type.as_ref()) {
        None => return Ok(None),
        Some(Source::Snapshot(s)) => (
            "volume_content_source.snapshot.snapshot_id",
            s.snapshot_id.as_str(),
        ),
        Some(Source::Volume(v)) => (
            "volume_content_source.volume.volume_id",
            v.volume_id.as_str(),
        ),
    };
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(Some((field, id)))
}

/// (required, limit) of a range, 0 meaning unset.
fn range_bytes(r: Option<&CapacityRange>) -> Result<(u64, u64), Status> {
    let (required, limit) = r.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument(
            "capacity_range: required_bytes and limit_bytes cannot be negative",
        ));
    }
    Ok((required as u64, limit as u64))
}
